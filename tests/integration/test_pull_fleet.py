"""Pull mode on the netns fleet (real sshd boards, both board envs, each polling a real SeaweedFS
through its own link every second) and the faults the issue names: the controller never
connects to a board; a gate failure and an abort put boards back; a board offline catches up;
a cut download resumes; tampered objects are refused by every board; the store down leaves
every board on its version while it backs off; a controller killed mid-rollout resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgedeploy.device import desired as dz
from edgedeploy.device.s3 import Credentials, Location
from edgedeploy.host.bucket import Bucket, desired_after
from edgedeploy.host.bundle import load_bundle
from edgedeploy.host.signing import sign_bundle

from tests.integration.conftest import ed, fleet_down, fleet_up
from tests.integration.test_rollout import board_state
from tests.objectstore import objectstore_down, objectstore_signal, objectstore_up

N = 4
EVERY = 1.0
BOARDS = [f"b{i}" for i in range(N)]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60)


def fleet_state(d: Path) -> dict:
    return {b["name"]: b for b in json.loads((d / "fleet-state.json").read_text())["boards"]}


def host_ip(addr: str) -> str:
    a, b, c, last = addr.split(".")
    return f"{a}.{b}.{c}.{int(last) - 1}"


@pytest.fixture(scope="module")
def pf(tmp_path_factory):
    """4 boards (4 mbit links) pulling from SeaweedFS; the fleet file names the signing key
    and the store; the controller's credentials in the environment."""
    from edgedeploy.host.deploy import BoardSession
    from edgedeploy.host.pullsetup import PullSetup, setup_pull
    from edgedeploy.targets import load_fleet

    d = tmp_path_factory.mktemp("pullfleet")
    fleet_up(d, N, "--rate", "4mbit")
    os_dir = d / "os"
    try:
        info = objectstore_up(os_dir, BOARDS, prefix="fleet", bind="0.0.0.0")
        key = d / "release_key"
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release@ci", "-f", str(key))
        toml = (d / "fleet.toml").read_text()
        (d / "fleet.toml").write_text(
            f'signing_key = "{key}"\n[pull]\nstore = "s3://{info["bucket"]}/fleet"\n'
            f'endpoint = "{info["endpoint"]}"\npoll_every = {EVERY}\n\n' + toml)
        state = fleet_state(d)
        fleet = load_fleet(d / "fleet.toml")
        for name in BOARDS:
            source = f"http://{host_ip(state[name]['addr'])}:{info['port']}/{info['bucket']}/fleet"
            with BoardSession(fleet.boards[name]) as s:
                setup_pull(s, PullSetup(source, every=EVERY, timeout=3),
                           [key.with_suffix(".pub").read_text()], info["boards"][name])
        env = {"AWS_ACCESS_KEY_ID": info["controller"]["access_key"],
               "AWS_SECRET_ACCESS_KEY": info["controller"]["secret_key"]}
        b = Bucket(Location(info["endpoint"], info["bucket"], "fleet"),
                   Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]))
        wait_for(lambda: set(b.statuses()) >= set(BOARDS), "every board's first report", 60)
        b.close()
        yield {"dir": d, "fleet": d / "fleet.toml", "os": os_dir, "info": info, "env": env,
               "key": key, "state": state}
    finally:
        objectstore_down(os_dir)
        fleet_down(d)


def cli(pf, *args, check=True, db=None):
    fleet = () if args[:2] == ("rollout", "resume") else ("--fleet", pf["fleet"])
    p = ed(*args, *fleet, db=db or pf["dir"] / "results.db",
           env={**pf["env"], "EDGEDEPLOY_ROLLOUTS": str(pf["dir"] / "rollouts.db")})
    if check:
        assert p.returncode == 0, f"edgedeploy {args}: {p.stdout}\n{p.stderr}"
    return p


def cli_json(pf, *args, ok=True):
    p = cli(pf, *args, "--json", check=ok)
    return json.loads(p.stdout), p.returncode


@pytest.fixture(scope="module")
def variants(pf, models, tmp_path_factory):
    """Distinct versions of the digits model (int8 / float32, with extra files), as bundle
    folders the CLI takes."""
    out = tmp_path_factory.mktemp("variants")
    made = []
    for i in range(8):  # one compile: one release number (no downgrade between them)
        base = load_bundle(models["int8"])
        note = out / f"note{i}.txt"
        note.write_text(f"variant {i}\n")
        b = base.with_files({"note.txt": note})
        made.append(b.write_folder(out / f"v{i}"))
    return made


def version_of(folder: Path) -> str:
    return load_bundle(folder).version


def bucket(pf) -> Bucket:
    i = pf["info"]
    return Bucket(Location(i["endpoint"], i["bucket"], "fleet"),
                  Credentials(i["controller"]["access_key"], i["controller"]["secret_key"]),
                  signing_key=pf["key"])


def wait_for(cond, what: str, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def currents(pf) -> dict[str, str | None]:
    return {n: board_state(pf["dir"], n)["current"] for n in BOARDS}


def agentd_pid(pf, name: str) -> int:
    lock = pf["dir"] / name / "home" / ".edgedeploy" / "store" / "agentd.lock"
    return int(lock.read_text().strip())


def rollout(pf, folder: Path, *extra: str, ok: bool = True) -> dict:
    r, rc = cli_json(pf, "rollout", "start", str(folder), "--via", "-", "--canary", "1",
                     "--waves", "50%,100%", "--timeout", "30", *extra, ok=ok)
    return r


def test_1_rollout_through_the_store_never_touches_ssh(pf, variants):
    first = rollout(pf, variants[0])  # from nothing: every board gets the model
    assert first["state"] == "succeeded", first
    sshd = [b["pid"] for b in pf["state"].values()]
    for pid in sshd:
        os.kill(pid, signal.SIGSTOP)  # an SSH connection now hangs: the rollout must not try
    try:
        t0 = time.monotonic()
        r = rollout(pf, variants[1])
        took = time.monotonic() - t0
    finally:
        for pid in sshd:
            os.kill(pid, signal.SIGCONT)
    assert r["state"] == "succeeded" and r["counts"] == {"committed": N}, r
    assert set(currents(pf).values()) == {version_of(variants[1])}
    assert took < 120
    for b in r["boards"]:
        assert b["old"] == version_of(variants[0]) and b["new"] == version_of(variants[1])


@pytest.mark.slow
def test_2_gate_failed_on_the_canary_aborts_and_keeps_every_board(pf, variants):
    before = currents(pf)
    r = rollout(pf, variants[2], "--gate", "p50_ms<=0.000001", ok=False)
    assert r["state"] == "aborted" and "canary" in r["message"], r
    canary = next(b for b in r["boards"] if b["wave"] == 0)
    assert canary["state"] == "rolled_back" and "gate failed" in canary["error"]
    assert canary["figures"]["p50_ms"] > 0  # measured on the board
    assert all(b["state"] == "pending" for b in r["boards"] if b["wave"] > 0)
    time.sleep(3 * EVERY)
    assert currents(pf) == before


@pytest.mark.slow
def test_3_abort_puts_committed_boards_back(pf, variants):
    before = currents(pf)
    old = before["b0"]
    silent = agentd_pid(pf, "b3")
    os.kill(silent, signal.SIGSTOP)  # b3 stops polling: it will be "silent"
    try:
        r = rollout(pf, variants[3], "--max-failures", "0", "--min-sample", "1",
                    "--timeout", "8", ok=False)
    finally:
        os.kill(silent, signal.SIGCONT)
    assert r["state"] == "aborted", r
    by = {b["board"]: b for b in r["boards"]}
    assert by["b3"]["state"] == "failed" and "silent" in by["b3"]["error"]
    assert {by[n]["state"] for n in ("b0", "b1", "b2")} == {"rolled_back"}, by
    assert currents(pf) == {n: old for n in BOARDS}
    time.sleep(4 * EVERY)  # b3, back, follows the desired state: its old version
    assert board_state(pf["dir"], "b3")["current"] == old


@pytest.mark.slow
def test_4_board_offline_during_the_rollout_catches_up(pf, variants):
    veth = pf["state"]["b2"]["veth"]
    sh("ip", "link", "set", veth, "down")
    try:
        r = rollout(pf, variants[4], "--max-failures", "1", "--timeout", "8", ok=False)
    finally:
        sh("ip", "link", "set", veth, "up")
    assert r["state"] == "partial", r
    by = {b["board"]: b for b in r["boards"]}
    assert by["b2"]["state"] == "failed" and by["b0"]["state"] == "committed"
    new = version_of(variants[4])
    wait_for(lambda: board_state(pf["dir"], "b2")["current"] == new, "b2 to catch up", 90)
    rows, rc = cli_json(pf, "status", "--via", "-", ok=False)
    b2 = next(x for x in rows if x["board"] == "b2")
    assert b2["models"]["digits"]["current"] == new and not b2["stale"]


@pytest.mark.slow
def test_5_tampered_bundle_or_desired_state_refused_by_every_board(pf, variants):
    before = currents(pf)
    b = bucket(pf)
    signed = sign_bundle(load_bundle(variants[5]), pf["key"])
    pub = b.publish_bundle(signed)
    raw = bytearray(b.client.get(b.loc.bucket, b.loc.key(pub.key)).body)
    raw[len(raw) // 3] ^= 0x01
    b.client.put(b.loc.bucket, b.loc.key(pub.key), bytes(raw))  # someone with bucket access
    t = dz.Target("digits", signed.version, pub.sha256, pub.size, pub.key,
                  signed.manifest.release)
    doc = desired_after(b.desired("all"), "all", t, None, now=time.time())
    b.put_desired(doc)

    def refused_everywhere():
        st = b.statuses()
        return all(st[n].results.get("digits", {}).get("version") == signed.version
                   and st[n].results["digits"]["outcome"] == "refused" for n in BOARDS) and st
    st = wait_for(refused_everywhere, "every board to refuse the bundle", 60)
    assert all("sha256" in st[n].results["digits"]["error"] for n in BOARDS)
    assert currents(pf) == before
    # the desired state changed after it was signed
    env = json.loads(b.client.get(b.loc.bucket, b.loc.key(dz.desired_key("all"))).body)
    env["document"] = env["document"].replace(signed.version, before["b0"])
    b.client.put(b.loc.bucket, b.loc.key(dz.desired_key("all")), json.dumps(env).encode())
    wait_for(lambda: all((s.error or "").startswith("desired state refused")
                         for s in b.statuses().values() if s.board in BOARDS),
             "every board to refuse the desired state", 60)
    assert currents(pf) == before
    b.close()


@pytest.mark.slow
def test_6_store_down_every_board_keeps_its_version_and_backs_off(pf, variants):
    r = rollout(pf, variants[6])  # a clean desired state again
    assert r["state"] == "succeeded", r
    before = currents(pf)
    logs = {n: pf["dir"] / n / "home" / ".edgedeploy" / "store" / "pull" / "loop.log"
            for n in BOARDS}
    mark = {n: len(p.read_text().splitlines()) for n, p in logs.items()}
    objectstore_signal(pf["os"], "pause")
    try:
        time.sleep(20)
    finally:
        objectstore_signal(pf["os"], "resume")
    resumed = time.time()
    assert currents(pf) == before
    for n, p in logs.items():
        lines = [json.loads(x.split(" ", 1)[1]) for x in p.read_text().splitlines()[mark[n]:]
                 if x.split(" ", 1)[1].startswith("{")]
        waits = [x["next_in"] for x in lines if "error" in x]
        assert len(waits) >= 2 and waits == sorted(waits) and waits[-1] > waits[0], (n, waits)
    b = bucket(pf)
    wait_for(lambda: all(s.ts > resumed for n, s in b.statuses().items() if n in BOARDS),
             "every board to report again", 120)
    b.close()


@pytest.mark.slow
def test_7_cut_download_resumes_with_range(pf, variants, tmp_path):
    veth = pf["state"]["b1"]["veth"]
    new = version_of(variants[7])
    sh("tc", "qdisc", "change", "dev", veth, "root", "tbf", "rate", "100kbit", "burst",
       "32kbit", "latency", "400ms")
    part_dir = pf["dir"] / "b1" / "home" / ".edgedeploy" / "store" / "pull" / "downloads"
    try:
        b = bucket(pf)
        signed = sign_bundle(load_bundle(variants[7]), pf["key"])
        pub = b.publish_bundle(signed)
        t = dz.Target("digits", signed.version, pub.sha256, pub.size, pub.key,
                      signed.manifest.release)
        b.put_desired(desired_after(b.desired("all"), "all", t, ["b1"], now=time.time()))
        part = part_dir / f"{pub.sha256}.part"
        wait_for(lambda: part.exists() and part.stat().st_size > 64 * 1024, "a partial download")
        sh("ip", "link", "set", veth, "down")  # cut mid-file
        time.sleep(6)
        had = part.stat().st_size
        assert 0 < had < pub.size
        sh("ip", "link", "set", veth, "up")
    finally:
        sh("ip", "link", "set", veth, "up", check=False)
        sh("tc", "qdisc", "change", "dev", veth, "root", "tbf", "rate", "4mbit", "burst",
           "32kbit", "latency", "400ms", check=False)
    wait_for(lambda: board_state(pf["dir"], "b1")["current"] == new, "b1 to finish", 120)
    log = (pf["dir"] / "b1" / "home" / ".edgedeploy" / "store" / "pull" / "loop.log")
    done = [json.loads(x.split(" ", 1)[1]) for x in log.read_text().splitlines()
            if '"activated"' in x]
    assert done and done[-1]["body_in"] < pub.size - had + 4096  # only the rest came
    b.close()


@pytest.mark.slow
def test_8_controller_killed_mid_rollout_resumes(pf, variants):
    import sqlite3

    journal = pf["dir"] / "rollouts.db"
    target = variants[0]  # back to the first variant (a new rollout: release is the same)
    cmd = [sys.executable, "-m", "edgedeploy.host.cli", "rollout", "start", str(target),
           "--via", "-", "--canary", "1", "--waves", "50%,100%", "--timeout", "30",
           "--fleet", str(pf["fleet"]), "--json"]
    env = {**os.environ, **pf["env"], "EDGEDEPLOY_ROLLOUTS": str(journal),
           "EDGEDEPLOY_RESULTS": str(pf["dir"] / "results.db")}
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        def canary_done():
            if not journal.exists():
                return None
            with sqlite3.connect(journal) as c:
                if not c.execute("SELECT name FROM sqlite_master WHERE name = 'rollouts'"
                                 ).fetchone():
                    return None
                row = c.execute("SELECT id FROM rollouts WHERE state = 'running' ORDER BY "
                                "created DESC LIMIT 1").fetchone()
                if not row:
                    return None
                n = c.execute("SELECT count(*) FROM boards WHERE rollout = ? AND state = "
                              "'committed'", (row[0],)).fetchone()[0]
                return row[0] if n >= 1 else None
        rid = wait_for(canary_done, "the canary to commit", 60)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait(30)
    r, _ = cli_json(pf, "rollout", "resume", rid)
    assert r["state"] == "succeeded" and r["counts"] == {"committed": N}, r
    assert set(currents(pf).values()) == {version_of(target)}


def test_9_status_via_says_who_is_stale(pf):
    rows, rc = cli_json(pf, "status", "--via", "-")
    assert rc == 0 and {r["board"] for r in rows} >= set(BOARDS)
    assert all(r["age_s"] < 10 and not r["stale"] for r in rows if r["board"] in BOARDS)
    pid = agentd_pid(pf, "b1")
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(4 * EVERY + 1)
        rows, rc = cli_json(pf, "status", "--via", "-", "--stale-polls", "3", ok=False)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert rc == 1
    assert [r["board"] for r in rows if r["stale"]] == ["b1"]
