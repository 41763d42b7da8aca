"""Rollouts on real sshd boards (scripts/fleet, both board envs): a good update everywhere, a
bad one stopped at the canary, bad input refused before anything moves, and faults injected
mid-rollout (agent killed during activation, sshd killed, host process killed then --resume).
After every trial each board is checked against the journal: whole, hash-valid, on the old
or the new version exactly as the journal says."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.conftest import ed, ed_json, fleet_down, fleet_up

N = 4


@pytest.fixture(scope="module")
def rfleet(tmp_path_factory):
    d = tmp_path_factory.mktemp("rfleet")
    fleet_up(d, N, "--rate", "200mbit")
    yield d
    fleet_down(d)


@pytest.fixture(scope="module")
def bad_model(tmp_path_factory, digits):
    """digits trained on shuffled labels: a valid model whose accuracy is near chance."""
    from tests.support import digits_cnn

    out = tmp_path_factory.mktemp("bad")
    digits_cnn.make(out, epochs=2, shuffle_labels=True)
    run_cli("compile", out / "digits.keras", "--mode", "int8", "--io", "uint8", "--calib",
            digits / "calib.npz", "--out", out / "m", check=True)
    return out / "m" / "digits.int8.tflite"


def manifest_version(model: Path) -> str:
    return json.loads(model.with_name(model.name[:-7] + ".manifest.json").read_text())["version"]


def board_state(d: Path, name: str) -> dict:
    """What the board really has: current/previous of `digits`, and every version verified."""
    fleet = (d / "fleet.toml").read_text()
    py = fleet.split(f"[boards.{name}]")[1].split("python = ")[1].split("\n")[0].strip('"')
    store = d / name / "home" / ".edgedeploy" / "store"
    pyz = d / name / "home" / ".edgedeploy" / "agent" / "edgedeploy-agent.pyz"
    for _ in range(10):  # a pull-mode board may switch between the two reads: read again
        out = subprocess.run([py, str(pyz), "--store", str(store), "list"], capture_output=True,
                             text=True, check=True)
        e = next((m for m in json.loads(out.stdout)["models"] if m["name"] == "digits"), None)
        if e is None:
            return {"current": None}
        v = subprocess.run([py, str(pyz), "--store", str(store), "verify",
                            f"digits@{e['current']}"], capture_output=True, text=True)
        answer = json.loads(v.stdout)
        if answer.get("ok"):
            break
        time.sleep(0.5)
    assert answer.get("valid"), v.stdout
    return {"current": e["current"], "previous": e["previous"],
            "versions": [x["version"] for x in e["versions"]]}


def forget(d: Path, version: str) -> None:
    """Remove digits@VERSION from every board that has it (not active), so that a rollout of
    it really uploads."""
    fleet = (d / "fleet.toml").read_text()
    for i in range(N):
        py = fleet.split(f"[boards.b{i}]")[1].split("python = ")[1].split("\n")[0].strip('"')
        root = d / f"b{i}" / "home" / ".edgedeploy"
        subprocess.run([py, str(root / "agent" / "edgedeploy-agent.pyz"), "--store",
                        str(root / "store"), "remove", "digits", version], capture_output=True)
        assert not (root / "store" / "models" / "digits" / version).exists()


def journal_agrees(d: Path, report: dict, before: str) -> None:
    """Every board where the journal says: committed → new; else → the version it had
    (the journal's `old` where the board was reached, else BEFORE)."""
    for b in report["boards"]:
        st = board_state(d, b["board"])
        if b["state"] == "committed":
            assert st["current"] == b["new"], (b, st)
        elif b["state"] in ("rolled_back", "failed", "pending", "skipped"):
            assert st["current"] == (b["old"] or before), (b, st)
        else:
            raise AssertionError(f"board {b['board']} left mid-step: {b}")


def ro(*args, db: Path, journal: Path, check_json: bool = True, **kw):
    p = ed("rollout", *args, "--journal", journal, *(["--json"] if check_json else []),
           db=db, **kw)
    return p, (json.loads(p.stdout) if check_json and p.stdout.strip().startswith("{") else None)


def baseline(d: Path, model: Path, tmp_path: Path) -> str:
    """Every board on MODEL (the version a rollout replaces)."""
    r = ed_json("push", model, "--all", "--fleet", d / "fleet.toml", db=tmp_path / "p.db")
    assert r["ok"] == N
    return manifest_version(model)


GATES = ["--gate", "accuracy>=0.9", "--gate", "p99_ms<=1000", "--max-accuracy-drop", "3"]


def test_good_update_reaches_every_board_bad_one_stops_at_the_canary(rfleet, models,
                                                                      bad_model, tmp_path):
    d, db, jn = rfleet, tmp_path / "r.db", tmp_path / "j.db"
    old = baseline(d, models["float32"], tmp_path)
    common = ["--fleet", d / "fleet.toml", "--gate-data", models["test"], "--canary", "1",
              "--waves", "50%,100%", *GATES]
    # dry run: the plan, nothing moves
    p, plan = ro("start", models["int8"], *common, "--dry-run", db=db, journal=jn)
    assert p.returncode == 0 and plan["waves"] == [["b0"], ["b1"], ["b2", "b3"]]
    assert all(board_state(d, f"b{i}")["current"] == old for i in range(N))

    p, r = ro("start", models["int8"], *common, db=db, journal=jn)
    assert p.returncode == 0, p.stderr
    assert r["state"] == "succeeded" and r["counts"] == {"committed": N}
    new = r["version"]
    for b in r["boards"]:
        assert b["old"] == old and b["figures"]["accuracy"] >= 0.9
        assert abs(b["figures"]["accuracy"] - b["old_figures"]["accuracy"]) < 0.03
    journal_agrees(d, r, old)
    st = ro("status", r["id"], db=db, journal=jn)[1]
    assert st["state"] == "succeeded" and st["counts"] == {"committed": N}

    # the bad update: the canary fails its gate, goes back; no other board is touched
    p, r = ro("start", bad_model, *common, db=db, journal=jn)
    assert p.returncode == 1 and r["state"] == "aborted" and "canary b0" in r["message"]
    by = {b["board"]: b for b in r["boards"]}
    assert by["b0"]["state"] == "rolled_back" and "accuracy" in by["b0"]["error"]
    assert by["b0"]["figures"]["accuracy"] < 0.5
    assert all(by[f"b{i}"]["state"] == "pending" for i in range(1, N))
    bad = r["version"]
    for i in range(N):
        s = board_state(d, f"b{i}")
        assert s["current"] == new
        if i:
            assert bad not in s["versions"]        # not even uploaded
    assert r["boards"][0]["old"] == new
    journal_agrees(d, r, new)


def test_bad_input_is_refused_before_anything_moves(rfleet, models, tmp_path):
    d, db, jn = rfleet, tmp_path / "r.db", tmp_path / "j.db"
    before = [board_state(d, f"b{i}") for i in range(N)]
    f = ["--fleet", d / "fleet.toml"]
    p, _ = ro("start", models["int8"], *f, "--gate", "speed>=3", db=db, journal=jn, check_json=False)
    assert p.returncode == 2 and "unknown metric 'speed'" in p.stderr
    p, _ = ro("start", models["int8"], *f, "--gate", "accuracy>=0.9", db=db, journal=jn,
              check_json=False)
    assert p.returncode == 2 and "--gate-data" in p.stderr
    bad_fleet = tmp_path / "dup.toml"
    text = (d / "fleet.toml").read_text()
    bad_fleet.write_text(text + "\n[boards.twin]\n" + text.split("[boards.b0]")[1]
                         .split("[boards.")[0])
    p, _ = ro("start", models["int8"], "--fleet", bad_fleet, db=db, journal=jn, check_json=False)
    assert p.returncode == 2 and "twin" in p.stderr
    coral = tmp_path / "coral.toml"
    coral.write_text(text.replace('[boards.b3]\n', '[boards.b3]\nprofile = "coral-usb"\n'))
    p, _ = ro("start", models["int8"], "--fleet", coral, db=db, journal=jn, check_json=False)
    assert p.returncode == 2 and "b3" in p.stderr and "Edge TPU" in p.stderr
    assert [board_state(d, f"b{i}") for i in range(N)] == before
    # with --skip-incompatible the Coral is listed as skipped and the rest go ahead
    p, plan = ro("start", models["int8"], "--fleet", coral, "--skip-incompatible", "--dry-run", db=db,
                 journal=jn)
    assert "b3" in plan["skipped"] and ["b3"] not in plan["waves"]


def test_a_second_rollout_on_the_same_boards_is_refused(rfleet, models, tmp_path):
    from edgedeploy.host.bundle import load_bundle
    from edgedeploy.host.fleet import Journal, Options

    d, db, jn = rfleet, tmp_path / "r.db", tmp_path / "j.db"
    j = Journal(jn)
    j.create("held", load_bundle(models["int8"]), str(models["int8"]), str(d / "fleet.toml"),
             Options(), [["b1"]], {})  # "running", by this (live) process
    p, _ = ro("start", models["float32"], "--fleet", d / "fleet.toml", db=db, journal=jn,
              check_json=False)
    assert p.returncode == 4 and "rollout held is running on b1" in p.stderr
    p, r = ro("cancel", "held", db=db, journal=jn)
    assert p.returncode == 0 and r["state"] == "cancelling"


def _sshd_pid(d: Path, name: str) -> int:
    st = json.loads((d / "fleet-state.json").read_text())
    return next(b["pid"] for b in st["boards"] if b["name"] == name)


def _resident_pid(d: Path, name: str) -> int | None:
    """Board NAME's resident agent, if it is running."""
    from edgedeploy.device.agentd import running_pid

    return running_pid(str(d / name / "home" / ".edgedeploy" / "store"))


def _restart_sshd(d: Path, name: str, env: str | None = None) -> None:
    """Start board NAME's sshd again (killed by a trial), with extra SetEnv if ENV."""
    cfg = d / name / "sshd_config"
    lines = [ln for ln in cfg.read_text().splitlines()]
    lines = [(f"SetEnv HOME={d / name / 'home'}" + (f" {env}" if env else ""))
             if ln.startswith("SetEnv ") else ln for ln in lines]
    cfg.write_text("\n".join(lines) + "\n")
    st = json.loads((d / "fleet-state.json").read_text())
    entry = next(b for b in st["boards"] if b["name"] == name)
    # the board's resident agent goes too: it was started under the old environment
    pids = [entry["pid"], *filter(None, [_resident_pid(d, name)])]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30   # gone, not just told: an old resident agent still
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids[1:]):
        time.sleep(0.05)               # serving would take the next session's commands
    time.sleep(0.3)
    prefix = ["ip", "netns", "exec", entry["netns"]] if entry.get("netns") else []
    with open(d / name / "sshd.log", "ab") as log:
        proc = subprocess.Popen([*prefix, "/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)],
                                stdout=log, stderr=log, start_new_session=True)
    entry["pid"] = proc.pid
    (d / "fleet-state.json").write_text(json.dumps(st))
    for _ in range(100):
        try:
            socket.create_connection((entry["addr"], entry["port"]), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{name}: sshd did not come back")


TRIALS = 3
# the first trial of each fault runs in CI (`scripts/test --ci`); all of them in `scripts/test`
TRIAL_PARAMS = [pytest.param(i, marks=[pytest.mark.slow] if i else []) for i in range(TRIALS)]


@pytest.mark.parametrize("trial", TRIAL_PARAMS)
def test_agent_killed_during_activation_rolls_that_board_back(rfleet, models, tmp_path, trial):
    d, db, jn = rfleet, tmp_path / "r.db", tmp_path / "j.db"
    old = baseline(d, models["float32"], tmp_path)
    marker = tmp_path / "crashed"
    _restart_sshd(d, "b2", f"EDGEDEPLOY_AGENT_CRASH_AT=activate:switched@{marker}")
    try:
        p, r = ro("start", models["int8"], "--fleet", d / "fleet.toml", "--waves", "100%",
                  "--max-failures", "50%", "--min-sample", "4", db=db, journal=jn)
    finally:
        _restart_sshd(d, "b2")
    assert marker.exists()                       # the agent really died mid-activation
    by = {b["board"]: b for b in r["boards"]}
    assert by["b2"]["state"] == "rolled_back" and "activation" in by["b2"]["error"]
    assert r["state"] == "partial" and r["counts"] == {"committed": 3, "rolled_back": 1}
    assert board_state(d, "b2")["current"] == old
    journal_agrees(d, r, old)


def all_back_on(d: Path, r: dict, old: str, cut: str, db: Path, jn: Path) -> None:
    """After an aborted rollout: if board CUT was activated before it was cut off (stranded),
    --resume finishes its rollback now that it is back; then every board is on OLD and the
    journal agrees."""
    if {b["board"]: b for b in r["boards"]}[cut]["state"] == "stranded":
        p, r = ro("resume", r["id"], db=db, journal=jn)
        assert r["counts"].get("stranded") is None, r
    for i in range(N):
        assert board_state(d, f"b{i}")["current"] == old
    journal_agrees(d, r, old)


def _run_in_background(d: Path, db: Path, jn: Path, model: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "EDGEDEPLOY_RESULTS": str(db)}
    return subprocess.Popen([sys.executable, "-m", "edgedeploy.host.cli", "rollout", "start",
                             str(model),
                             "--fleet", str(d / "fleet.toml"), "--journal", str(jn), "--json",
                             *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _wait_for(jn: Path, pred, seconds: float = 120) -> list[dict]:
    """Wait until PRED({board: {"state": …, …}}) holds for the latest rollout's journal rows."""
    from edgedeploy.host.fleet import Journal
    j = Journal(jn)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            rows = [{"board": b.board, "state": b.state.value} for b in
                    j.boards(j.rollout().id)]
        except Exception:
            rows = []
        if rows and pred({b["board"]: b for b in rows}):
            return rows
        time.sleep(0.01)
    raise AssertionError("the rollout never got there")


@pytest.mark.parametrize("trial", TRIAL_PARAMS)
def test_sshd_killed_mid_rollout_counts_toward_the_abort(rfleet, models, tmp_path, trial):
    """Once the canary is committed, b1's sshd and its sessions are killed (-9) — mid-upload
    or mid-activation, wherever b1 is. b1 fails; with --max-failures 0 the rollout aborts and
    every board it activated goes back; a board stranded by the cut is put back by --resume
    once its sshd is up again."""
    d, db, jn = rfleet, tmp_path / "r.db", tmp_path / "j.db"
    old = baseline(d, models["float32"], tmp_path)
    proc = _run_in_background(d, db, jn, models["int8"], "--waves", "100%", "--max-failures",
                              "0", "--min-sample", "1", "--timeout", "5", "--retries", "0",
                              "--gate-data", models["test"], "--gate", "accuracy>=0.9")
    try:
        _wait_for(jn, lambda rows: rows["b0"]["state"] == "committed" or
                  (trial == 1 and rows["b1"]["state"] in ("staged", "activating")))
        os.killpg(_sshd_pid(d, "b1"), signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        _restart_sshd(d, "b1")
    r = json.loads(out)
    assert proc.returncode == 1 and r["state"] == "aborted", (r, err)
    by = {b["board"]: b for b in r["boards"]}
    assert by["b1"]["state"] in ("failed", "stranded") and "b1" in by["b1"]["error"]
    assert by["b0"]["state"] == "rolled_back" and "aborted" in by["b0"]["error"]
    all_back_on(d, r, old, "b1", db, jn)


@pytest.mark.parametrize("trial", TRIAL_PARAMS)
def test_host_killed_mid_rollout_then_resume(rfleet, models, tmp_path, trial):
    d, db, jn = rfleet, tmp_path / "r.db", tmp_path / "j.db"
    old = baseline(d, models["float32"], tmp_path)
    proc = _run_in_background(d, db, jn, models["int8"], "--waves", "1,1,1", "--gate-data",
                              models["test"], "--gate", "accuracy>=0.9")
    # kill -9 the host process once the canary is done (trial 1: one wave later)
    _wait_for(jn, lambda rows: sum(b["state"] == "committed" for b in rows.values())
              >= 1 + trial)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from edgedeploy.host.fleet import Journal
    j = Journal(jn)
    rid = j.rollout().id
    assert j.rollout(rid).state == "running"
    done_before = {b.board for b in j.boards(rid) if b.state == "committed"}
    assert done_before
    p, r = ro("resume", rid, db=db, journal=jn)
    assert p.returncode == 0, p.stderr
    assert r["state"] == "succeeded" and r["counts"] == {"committed": N}
    # finished boards were not redone: their journal rows kept their first figures
    committed = [e.board for e in j.events(rid) if e.state == "committed"]
    assert committed and len(committed) == len(set(committed))
    journal_agrees(d, r, old)
    assert old != r["version"]


@pytest.mark.parametrize("trial", TRIAL_PARAMS)
def test_link_cut_mid_rollout(rfleet, models, tmp_path, trial):
    """b2's link goes down (its veth, like a pulled cable) once the canary is committed and
    comes back after the rollout: b2 fails after --timeout, the rollout aborts, every board
    ends on the old version (a board stranded by the cut is put back by --resume)."""
    d, db, jn = rfleet, tmp_path / "r.db", tmp_path / "j.db"
    old = baseline(d, models["float32"], tmp_path)
    st = json.loads((d / "fleet-state.json").read_text())
    veth = next(b["veth"] for b in st["boards"] if b["name"] == "b2")
    proc = _run_in_background(d, db, jn, models["int8"], "--waves", "100%", "--max-failures",
                              "0", "--min-sample", "1", "--timeout", "4", "--retries", "0")
    try:
        _wait_for(jn, lambda rows: rows["b0"]["state"] == "committed" or
                  (trial == 1 and rows["b2"]["state"] == "staging"))
        subprocess.run(["ip", "link", "set", veth, "down"], check=True)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    r = json.loads(out)
    assert proc.returncode == 1 and r["state"] == "aborted", (r, err)
    by = {b["board"]: b for b in r["boards"]}
    assert by["b2"]["state"] in ("failed", "stranded") and "b2" in by["b2"]["error"]
    all_back_on(d, r, old, "b2", db, jn)


@pytest.mark.parametrize("trial", TRIAL_PARAMS)
def test_corrupted_upload_is_refused_and_counts(rfleet, models, tmp_path, trial):
    """The model file changes on the host after the rollout began (the canary got the good
    bytes): later boards receive bytes whose sha256 is not the manifest's; their agents refuse
    them, nothing is installed, the failures abort the rollout and the canary goes back."""
    import shutil as sh

    d, db, jn = rfleet, tmp_path / "r.db", tmp_path / "j.db"
    old = baseline(d, models["float32"], tmp_path)
    src = tmp_path / "m"
    src.mkdir()
    for f in models["int8"].parent.glob("digits.int8.*"):
        sh.copy(f, src / f.name)
    model = src / "digits.int8.tflite"
    forget(d, manifest_version(model))
    proc = _run_in_background(d, db, jn, model, "--waves", "100%", "--max-failures", "0",
                              "--min-sample", "1")
    try:
        _wait_for(jn, lambda rows: rows["b0"]["state"] in ("staged", "activating",
                                                           "activated", "committed"))
        data = bytearray(model.read_bytes())
        data[len(data) // 2 + trial] ^= 0xFF
        model.write_bytes(bytes(data))
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    r = json.loads(out)
    assert proc.returncode == 1 and r["state"] == "aborted", (r, err)
    by = {b["board"]: b for b in r["boards"]}
    assert by["b0"]["state"] == "rolled_back"
    failed = [b for b in r["boards"] if b["state"] == "failed"]
    assert failed and all("sha256" in b["error"] for b in failed), failed
    for i in range(N):
        s = board_state(d, f"b{i}")
        assert s["current"] == old
        if f"b{i}" in {b["board"] for b in failed}:
            assert r["version"] not in s["versions"]
    journal_agrees(d, r, old)


@pytest.mark.parametrize("trial", TRIAL_PARAMS)
def test_board_disk_full_mid_rollout(models, tmp_path_factory, tmp_path, trial):
    """Two boards on 4 MB filesystems; b1's fills up after the preflight passed (once the
    canary is committed). b1's staging fails with a clear error, nothing half-written stays,
    the rollout aborts and both boards end on the old version. (An upload that runs out of
    space mid-file is tested in test_push.py::test_disk_full_keeps_the_old_model.)"""
    d = tmp_path_factory.mktemp("diskfleet")
    fleet_up(d, 2, "--disk-mb", "4")
    db, jn = tmp_path / "r.db", tmp_path / "j.db"
    try:
        r0 = ed_json("push", models["int8"], "--all", "--fleet", d / "fleet.toml", db=db)
        assert r0["ok"] == 2
        old = manifest_version(models["int8"])
        proc = _run_in_background(d, db, jn, models["float32"], "--waves", "100%",
                                  "--max-failures", "0", "--min-sample", "1")
        home = d / "b1" / "home"
        try:
            _wait_for(jn, lambda rows: rows["b0"]["state"] == "committed")
            stv = os.statvfs(home)
            (home / "filler").write_bytes(b"\0" * max(stv.f_bavail * stv.f_frsize - 200_000, 0))
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
            (home / "filler").unlink(missing_ok=True)
        r = json.loads(out)
        assert proc.returncode == 1 and r["state"] == "aborted", (r, err)
        by = {b["board"]: b for b in r["boards"]}
        # caught by the staging's own free-space check, or by the upload itself
        err1 = by["b1"]["error"]
        assert by["b1"]["state"] == "failed" and "b1" in err1 and \
            ("bytes free" in err1 or "disk full" in err1), by["b1"]
        assert by["b0"]["state"] == "rolled_back"
        for name in ("b0", "b1"):
            assert board_state(d, name)["current"] == old
        assert not list((home / ".edgedeploy" / "store" / "incoming").iterdir())
        journal_agrees(d, r, old)
    finally:
        fleet_down(d)


def test_the_endpoint_keeps_answering_through_a_rollout(rfleet, models, tmp_path):
    """`edgedeploy-agent serve` runs on b0 and b1 (both runtimes) with clients predicting
    non-stop while a rollout switches them: no request fails, and the answers move to the new
    version."""
    import threading

    import numpy as np

    from edgedeploy.device.client import Client

    d, db, jn = rfleet, tmp_path / "r.db", tmp_path / "j.db"
    old = baseline(d, models["float32"], tmp_path)
    x = np.load(models["test"])["x"][:1].astype(np.float32)
    fleet = (d / "fleet.toml").read_text()
    servers, stats, stop = [], {}, threading.Event()
    try:
        for name in ("b0", "b1"):
            py = fleet.split(f"[boards.{name}]")[1].split("python = ")[1].split("\n")[0]
            root = d / name / "home" / ".edgedeploy"
            p = subprocess.Popen([py.strip('"'), str(root / "agent" / "edgedeploy-agent.pyz"),
                                  "--store", str(root / "store"), "serve", "--socket",
                                  str(tmp_path / f"{name}.sock"), "--poll", "0.05"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            servers.append(p)
            assert json.loads(p.stdout.readline())["kind"] == "serving"

        def load(name: str) -> None:
            st = stats[name] = {"ok": 0, "failed": [], "versions": set()}
            with Client(socket=str(tmp_path / f"{name}.sock")) as c:
                while not stop.is_set():
                    try:
                        st["versions"].add(c.predict("digits", x).version)
                        st["ok"] += 1
                    except Exception as exc:  # noqa: BLE001 — every failure counts
                        st["failed"].append(repr(exc))
        threads = [threading.Thread(target=load, args=(n,)) for n in ("b0", "b1")]
        for t in threads:
            t.start()
        time.sleep(0.3)
        p, r = ro("start", models["int8"], "--fleet", d / "fleet.toml", "--waves", "100%", db=db,
                  journal=jn)
        assert r["state"] == "succeeded", r
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                r["version"] in stats[n]["versions"] for n in ("b0", "b1")):
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        for p in servers:
            p.terminate()
            p.wait(timeout=30)
    for n in ("b0", "b1"):
        assert stats[n]["failed"] == [] and stats[n]["ok"] > 50, stats[n]
        assert stats[n]["versions"] == {old, r["version"]}
