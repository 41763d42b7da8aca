"""`edgedeploy push / bench / eval / status / rollback` against real sshd boards."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest

from edgedeploy.device.manifest import Manifest

from tests.conftest import assert_top1_as_host

from .conftest import ed, ed_json, fleet_down, fleet_up

pytestmark = pytest.mark.board


def _manifest(model) -> Manifest:
    return Manifest.load(model.with_name(model.name[:-len(".tflite")] + ".manifest.json"))


@pytest.mark.parametrize("board", ["b0", "b1"])
def test_push_bench_eval_roundtrip(fleet, models, tmp_path, board):
    db = tmp_path / "results.db"
    m32, m8 = _manifest(models["float32"]), _manifest(models["int8"])
    first = ed_json("push", models["float32"], board, "--fleet", fleet, db=db)
    assert first["current"] == m32.version and first["bytes_sent"] > m32.size
    second = ed_json("push", models["int8"], board, "--fleet", fleet, db=db)
    assert (second["current"], second["previous"]) == (m8.version, m32.version)
    assert second["agent_uploaded"] is False
    again = ed_json("push", models["int8"], board, "--fleet", fleet, db=db)
    assert again["bytes_sent"] == 0  # the board has that content: 0 model bytes

    bench = ed_json("bench", board, "digits", "--runs", 50, "--fleet", fleet, db=db)
    assert bench["model"]["version"] == m8.version and bench["timing"]["runs"] == 50
    assert bench["runtime"]["name"] == ("litert" if board == "b0" else "tflite_runtime")
    ev = ed_json("eval", board, "digits", "--data", models["test"], "--fleet", fleet,
                 db=db)
    runtime = "litert" if board == "b0" else "tflite_runtime"
    assert_top1_as_host(ev, m8.host_figures["accuracy"], runtime)
    ev32 = ed_json("eval", board, f"digits@{m32.version}", "--data", models["test"],
                   "--fleet", fleet, db=db)
    assert_top1_as_host(ev32, m32.host_figures["accuracy"], runtime)

    st = ed_json("status", board, "--fleet", fleet, db=db)
    assert st["agent_current"] and st["health"] == "ok"
    digits = next(m for m in st["models"] if m["name"] == "digits")  # the fleet is shared
    assert (digits["current"], digits["previous"]) == (m8.version, m32.version)
    back = ed_json("rollback", board, "digits", "--fleet", fleet, db=db)
    assert back["current"] == m32.version

    kinds = [r[0] for r in sqlite3.connect(db).execute("SELECT kind FROM results ORDER BY id")]
    assert kinds == ["push", "push", "push", "bench", "eval", "eval", "status"]  # (status too)
    rep = ed_json("report", "--model", "digits", "--html", tmp_path / "r.html", db=db)
    assert any(r["accuracy"] for r in rep["rows"]) and (tmp_path / "r.html").exists()
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") >= 2 and "<img" not in page        # charts inside the file
    assert not list(tmp_path.glob("r.*.png"))
    ed("push", models["int8"], board, "--fleet", fleet, db=db, check=True)


def test_host_keys_unknown_refused_accept_new_changed_refused(fleet, models, tmp_path):
    db = tmp_path / "r.db"
    kh = fleet.parent / "known_hosts"
    saved = kh.read_text()
    fleet_copy = tmp_path / "fleet.toml"
    own_kh = tmp_path / "known_hosts"
    fleet_copy.write_text(fleet.read_text().replace(str(kh), str(own_kh)))
    own_kh.write_text("")
    p = ed("status", "b0", "--fleet", fleet_copy, db=db)
    assert p.returncode == 6 and "unknown host key" in p.stderr and "b0" in p.stderr
    assert own_kh.read_text() == ""
    p = ed("status", "b0", "--fleet", fleet_copy, "--accept-new-host-key", db=db)
    assert p.returncode == 0, p.stderr
    recorded = own_kh.read_text().split()
    assert recorded[1:] == saved.splitlines()[0].split()[1:]  # the board's real key
    # now the board's key "changes": refused, even with --accept-new-host-key
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    other = (tmp_path / "k.pub").read_text().split()[:2]
    own_kh.write_text(f"{recorded[0]} {other[0]} {other[1]}\n")
    p = ed("push", models["int8"], "b0", "--fleet", fleet_copy,
           "--accept-new-host-key", db=db)
    assert p.returncode == 6 and "CHANGED" in p.stderr and "b0" in p.stderr
    assert kh.read_text() == saved


def test_model_name_with_shell_metacharacters(fleet, digits, tmp_path):
    db = tmp_path / "r.db"
    evil = "d;touch PWNED $(touch PWNED2) `id` 'q\" & |x"
    out = tmp_path / "out"
    p = ed("compile", digits / "digits.keras", "--mode", "int8", "--calib",
           digits / "calib.npz", "--name", evil, "--out", out, db=db)
    assert p.returncode == 0, p.stderr
    model = out / f"{evil}.int8.tflite"
    r = ed_json("push", model, "b1", "--fleet", fleet, db=db)
    assert r["name"] == evil
    b = ed_json("bench", "b1", evil, "--runs", 5, "--fleet", fleet, db=db)
    assert b["model"]["name"] == evil
    st = ed_json("status", "b1", "--fleet", fleet, db=db)
    assert evil in [m["name"] for m in st["models"]]
    board_home = fleet.parent / "b1" / "home"
    for where in (board_home, fleet.parent, tmp_path):
        assert not list(where.rglob("PWNED*")), "a name reached a shell unquoted"


def _one_board(fleet, dest, name: str, **fields) -> object:
    """A fleet file with the simulated fleet's defaults and one board NAME (b0's sshd)."""
    text = fleet.read_text()
    head = text.split("[boards.")[0]
    b0 = text.split("[boards.b0]")[1].split("[boards.")[0]
    board = {k.strip(): v.strip() for k, v in
             (ln.split("=", 1) for ln in b0.strip().splitlines() if "=" in ln)}
    board.update({k: json.dumps(v) for k, v in fields.items()})
    dest.write_text(head + f"[boards.{name}]\n" + "".join(f"{k} = {v}\n"
                                                          for k, v in board.items()))
    return dest


def test_unreachable_wrong_key_incompatible_and_crashing_agent(fleet, models, tmp_path):
    import socket
    db = tmp_path / "r.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    p = ed("push", models["int8"], "gone", "--fleet", _one_board(
        fleet, tmp_path / "gone.toml", "gone", host="127.0.0.1", port=free,
        connect_timeout=3), db=db)
    assert p.returncode == 5 and "gone" in p.stderr and "cannot connect" in p.stderr

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "wrong")],
                   check=True)
    p = ed("push", models["int8"], "wrongkey", "--fleet", _one_board(
        fleet, tmp_path / "wk.toml", "wrongkey", key=str(tmp_path / "wrong")), db=db)
    assert p.returncode == 6 and "wrongkey" in p.stderr and "refused our key" in p.stderr

    # a coral-usb profile needs an Edge TPU model: refused before anything changes
    root = tmp_path / "coralroot"
    p = ed("push", models["int8"], "coral", "--fleet", _one_board(
        fleet, tmp_path / "coral.toml", "coral", profile="coral-usb", root=str(root)), db=db)
    assert p.returncode == 1 and "coral" in p.stderr and "Edge TPU model" in p.stderr
    assert not (root / "store").exists()

    # an agent that cannot run (the board's python is broken): one line naming the board
    p = ed("push", models["int8"], "crashy", "--fleet", _one_board(
        fleet, tmp_path / "crash.toml", "crashy", python="/bin/false", root=str(root)), db=db)
    assert p.returncode != 0 and "crashy" in p.stderr and "agent" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_disk_full_keeps_the_old_model(digits, models, tmp_path, tmp_path_factory):
    """A board with a 2 MB filesystem: the preflight refuses what can't fit; an upload that
    fills the disk fails clearly; the active model stays, whole."""
    db = tmp_path / "r.db"
    d = tmp_path_factory.mktemp("smallfleet")
    fleet = fleet_up(d, 1, "--disk-mb", "2")
    try:
        m8 = _manifest(models["int8"])
        ed_json("push", models["int8"], "b0", "--fleet", fleet, db=db)
        p = ed("push", models["float32"], "b0", "--fleet", fleet, db=db)
        assert p.returncode == 1 and "b0" in p.stderr and "bytes free" in p.stderr
        # fill the disk behind the preflight's back, then upload for real
        home = d / "b0" / "home"
        import os
        st = os.statvfs(home)
        filler = home / "filler"
        filler.write_bytes(b"\0" * max(st.f_bavail * st.f_frsize - 600_000, 0))
        from edgedeploy.host.bundle import load_bundle
        from edgedeploy.host.deploy import BoardSession
        from edgedeploy.targets import load_fleet
        from edgedeploy.errors import BoardError
        with BoardSession(load_fleet(fleet).get("b0")) as s:
            with pytest.raises(BoardError) as err:
                s._upload_and_install(s.state(model="digits"), load_bundle(models["float32"]),
                                      None, True)
            assert s.link.resident_path  # the upload went through the resident agent (no SFTP)
        assert "b0" in str(err.value) and "disk full" in str(err.value)
        filler.unlink()
        st_ = ed_json("status", "b0", "--fleet", fleet, db=db)
        assert st_["models"][0]["current"] == m8.version and st_["health"] == "ok"
        assert not list((home / ".edgedeploy" / "store" / "incoming").iterdir())
    finally:
        fleet_down(d)


def test_local_target(models, tmp_path):
    db = tmp_path / "r.db"
    env = {"HOME": str(tmp_path / "home"), "EDGEDEPLOY_FLEET": str(tmp_path / "none.toml")}
    r = ed_json("push", models["int8"], "local", db=db, env=env)
    assert r["board"] == "local" and r["activated"]
    b = ed_json("bench", "local", "digits", "--runs", 10, db=db, env=env)
    assert b["timing"]["runs"] == 10
    assert (tmp_path / "home" / ".edgedeploy" / "store" / "models" / "digits").is_dir()


def test_push_to_many_boards_one_unreachable(fleet, models, tmp_path):
    """`push --all`: every board at once; an unreachable one is reported, the others land."""
    import socket
    from dataclasses import replace

    from edgedeploy.host.bundle import Bundle, load_bundle

    db = tmp_path / "r.db"
    b = load_bundle(models["int8"])
    folder = Bundle(replace(b.manifest, name="digits_many"), b.model_path).write_folder(
        tmp_path / "bundle")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    inv = tmp_path / "many.toml"
    inv.write_text(fleet.read_text() + f'\n[boards.gone]\nhost = "127.0.0.1"\nport = {free}\n'
                                       f'connect_timeout = 3\n')
    p = ed("push", folder, "--all", "--parallel", 3, "--fleet", inv, "--json", db=db)
    assert p.returncode == 1, p.stderr
    r = json.loads(p.stdout)
    assert (r["boards"], r["ok"], r["failed"]) == (3, 2, 1)
    by = {x["board"]: x for x in r["results"]}
    assert by["gone"]["code"] == "unreachable" and "cannot connect" in by["gone"]["error"]
    for name in ("b0", "b1"):
        assert by[name]["activated"] and by[name]["current"] == b.version
    # the same again: every board already has it, 0 model bytes
    again = ed_json("push", folder, "b0", "b1", "--fleet", fleet, db=db)
    assert again["ok"] == 2 and all(x["bytes_sent"] == 0 for x in again["results"])
    # a group selects the boards (scripts/fleet puts b0 in "canary")
    g = ed_json("push", folder, "--group", "canary", "--fleet", fleet, db=db)
    assert [x["board"] for x in g["results"]] == ["b0"]
