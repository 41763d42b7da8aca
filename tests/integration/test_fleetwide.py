"""bench, eval, status, rollback and targets check on many real sshd boards at once (b0:
LiteRT + numpy 2, b1: tflite-runtime 2.14 + numpy 1, and `gone`, a board nobody answers for):
past a failing board, one table at the end, exit 1 if any board failed; `bench BOARD` benches
every active model past one that fails; status shows each version's mode and label; the
rollback hint names the host's command."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from edgedeploy.host.bundle import Bundle, load_bundle

from .conftest import ed, ed_json

pytestmark = pytest.mark.board


def _bundle(models, key: str, name: str, tmp_path: Path) -> tuple[Path, str]:
    b = load_bundle(models[key])
    folder = Bundle(replace(b.manifest, name=name), b.model_path).write_folder(
        tmp_path / f"{name}-{key}")
    return folder, b.version


def _broken(models, name: str, tmp_path: Path) -> Path:
    """A bundle whose hashes match but whose model no runtime can load."""
    b = load_bundle(models["int8"])
    data = b"\0" * 4096
    sha = hashlib.sha256(data).hexdigest()
    d = tmp_path / f"{name}-broken"
    d.mkdir()
    (d / f"{name}.int8.tflite").write_bytes(data)
    m = replace(b.manifest, name=name, file=f"{name}.int8.tflite", sha256=sha, size=len(data),
                version=sha[:12], gzip_size=None)
    (d / f"{name}.int8.manifest.json").write_text(m.to_json())
    return d


@pytest.fixture
def inventory(fleet, tmp_path) -> Path:
    """The test fleet plus `gone`: a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    inv = tmp_path / "fleet-with-gone.toml"
    inv.write_text(fleet.read_text() + f'\n[boards.gone]\nhost = "127.0.0.1"\nport = {free}\n'
                                       f'connect_timeout = 3\ngroups = ["canary"]\n')
    return inv


def test_bench_every_board_at_once_past_an_unreachable_one(fleet, inventory, models, tmp_path):
    db = tmp_path / "r.db"
    folder, version = _bundle(models, "int8", "fwbench", tmp_path)
    assert ed_json("push", folder, "b0", "b1", "--fleet", fleet, db=db)["ok"] == 2

    p = ed("bench", "--all", "fwbench", "--runs", 20, "--parallel", 3, "--fleet", inventory,
           "--json", db=db)
    assert p.returncode == 1, p.stderr
    r = json.loads(p.stdout)
    assert (r["boards"], r["ok"], r["failed"], r["failed_boards"]) == (3, 2, 1, ["gone"])
    by = {x["board"] if "board" in x else x["model"]["name"]: x for x in r["results"]}
    runtimes = sorted(x["runtime"]["name"] for x in r["results"] if "timing" in x)
    assert runtimes == ["litert", "tflite_runtime"]
    assert by["gone"]["code"] == "unreachable"

    # text: one table, the failure named in it, units, the summary line
    p = ed("bench", "b0", "gone", "b1", "fwbench", "--runs", 20, "--fleet", inventory, db=db)
    assert p.returncode == 1
    out = p.stdout
    assert "bench on 3 board(s)" in out and "FAILED" in out and "gone" in out
    assert "2 of 3 boards ok; failed: gone" in out
    assert version in out and ("µs" in out or " ms" in out) and "MiB" in out
    assert "gone: FAILED" in p.stderr            # progress as each board finishes
    kinds = sqlite3.connect(db).execute(
        "SELECT board, kind FROM results WHERE kind = 'bench' ORDER BY id").fetchall()
    assert sorted(b for b, _ in kinds) == ["b0", "b0", "b1", "b1"]

    # host --op-profile: the op list from the board, and a plain word on per-op times
    p = ed("bench", "b1", "fwbench", "--runs", 5, "--op-profile", "--fleet", fleet, db=db)
    assert p.returncode == 0, p.stderr
    assert "CONV_2D" in p.stdout and "per-op times are not measured" in p.stdout
    raw = ed_json("bench", "b0", "fwbench", "--runs", 5, "--op-profile", "--fleet", fleet,
                  db=db)
    assert raw["ops"] and {"index", "op", "delegated"} <= set(raw["ops"][0])


def test_bench_a_board_benches_every_active_model_past_one_that_fails(fleet, models, tmp_path):
    db = tmp_path / "r.db"
    good, version = _bundle(models, "int8", "fwgood", tmp_path)
    ed("push", good, "b1", "--fleet", fleet, db=db, check=True)
    bad = _broken(models, "fwbad", tmp_path)
    p = ed("push", bad, "b1", "--fleet", fleet, db=db)   # the board refuses what can't load
    assert p.returncode == 2 and "cannot run on this board" in p.stderr
    # one that got there anyway (an older agent took it, or it was put there behind the
    # agent's back) must not stop a bench of every active model
    from edgedeploy.device.store import Store

    store = Store(fleet.parent / "b1" / "home" / ".edgedeploy" / "store")
    with store.locked():
        store.activate("fwbad", store.install(bad).version)
    try:
        p = ed("bench", "b1", "--runs", 10, "--fleet", fleet, "--json", db=db)
        assert p.returncode == 1, p.stderr
        rows = json.loads(p.stdout)
        ok = {x["model"]["name"] for x in rows if "timing" in x}
        failed = {x["model"]: x for x in rows if "error" in x}
        assert "fwgood" in ok and set(failed) == {"fwbad"}       # went on past the broken one
        assert failed["fwbad"]["code"] == "model_load_failed"
        # the failure is in the history: the report marks it failed
        rep = ed_json("report", "--model", "fwbad", db=db)
        (line,) = rep["rows"]
        assert line["board"] == "b1" and "cannot load" in line["bench_error"]
        # one board, one model that fails: its own error and exit code, as always
        p = ed("bench", "b1", "fwbad", "--runs", 10, "--fleet", fleet, db=db)
        assert p.returncode == 2 and "cannot load" in p.stderr
    finally:  # the fleet is shared: no other test may find b1 with a model it can't load
        ed("remove", "b1", "fwbad", "--fleet", fleet, db=db, check=True)


def test_status_of_many_boards_is_one_table_with_mode_and_label(fleet, inventory, models,
                                                                tmp_path):
    db = tmp_path / "r.db"
    f32, v32 = _bundle(models, "float32", "fwstatus", tmp_path)
    i8, v8 = _bundle(models, "int8", "fwstatus", tmp_path)
    for folder in (f32, i8):
        ed("push", folder, "b0", "b1", "--fleet", fleet, db=db, check=True)

    one = ed("status", "b0", "--fleet", fleet, db=db)
    assert one.returncode == 0, one.stderr
    assert f"fwstatus {v8} int8 active (previous {v32} float32)" in one.stdout

    p = ed("status", "--all", "--fleet", inventory, db=db)
    assert p.returncode == 1
    assert "status of 3 board(s)" in p.stdout and "FAILED" in p.stdout
    assert f"{v8} int8" in p.stdout and f"{v32} float32" in p.stdout
    assert "2 of 3 boards ok; failed: gone" in p.stdout
    p = ed("status", "--group", "canary", "--fleet", inventory, "--json", db=db)
    rows = json.loads(p.stdout)
    assert [r["board"] for r in rows] == ["b0", "gone"] and rows[1]["code"] == "unreachable"
    assert p.returncode == 1
    # status rows land in the history: the report's fleet section reads them
    n = sqlite3.connect(db).execute("SELECT count(*) FROM results WHERE kind = 'status'")
    assert n.fetchone()[0] >= 3


def test_rollback_many_boards_and_the_hint_names_the_host_command(fleet, models, tmp_path):
    db = tmp_path / "r.db"
    f32, v32 = _bundle(models, "float32", "fwroll", tmp_path)
    i8, v8 = _bundle(models, "int8", "fwroll", tmp_path)
    for folder in (f32, i8):
        ed("push", folder, "b0", "b1", "--fleet", fleet, db=db, check=True)
    r = ed_json("rollback", "b0", "b1", "fwroll", "--fleet", fleet, db=db)
    assert r["ok"] == 2 and {x["current"] for x in r["results"]} == {v32}

    lone, _ = _bundle(models, "int8", "fwlone", tmp_path)
    ed("push", lone, "b0", "--fleet", fleet, db=db, check=True)
    p = ed("rollback", "b0", "fwlone", "--fleet", fleet, db=db)
    assert p.returncode == 2
    assert "no previous version" in p.stderr and "`edgedeploy status b0`" in p.stderr
    assert "edgedeploy-agent" not in p.stderr


def test_remove_a_version_from_many_boards_past_an_unreachable_one(fleet, inventory, models,
                                                                  tmp_path):
    db = tmp_path / "r.db"
    f32, v32 = _bundle(models, "float32", "fwrm", tmp_path)
    i8, v8 = _bundle(models, "int8", "fwrm", tmp_path)
    for folder in (f32, i8):
        ed("push", folder, "b0", "b1", "--fleet", fleet, db=db, check=True)
    p = ed("remove", "b0", "b1", "gone", f"fwrm@{v32}", "--fleet", inventory, "--json", db=db)
    assert p.returncode == 1, p.stderr
    r = json.loads(p.stdout)
    assert (r["boards"], r["ok"], r["failed_boards"]) == (3, 2, ["gone"])
    assert {x["board"]: x["versions"] for x in r["results"] if "versions" in x} == \
        {"b0": [v32], "b1": [v32]}
    for board in ("b0", "b1"):   # gone from the board; the active version stays
        m = next(m for m in ed_json("status", board, "--fleet", fleet, db=db)["models"]
                 if m["name"] == "fwrm")
        assert m["current"] == v8 and v32 not in [v["version"] for v in m["versions"]]
    p = ed("remove", "b0", "b1", f"fwrm@{v8}", "--fleet", fleet, db=db)  # the active one
    assert p.returncode == 1 and "0 of 2 boards ok" in p.stdout and "active" in p.stdout
    r = ed_json("remove", "--all", "fwrm", "--fleet", fleet, db=db)      # the whole model
    assert r["ok"] == 2 and all(x["versions"] == [v8] for x in r["results"])


def test_eval_and_targets_check_fan_out(fleet, inventory, models, tmp_path):
    db = tmp_path / "r.db"
    folder, version = _bundle(models, "int8", "fweval", tmp_path)
    ed("push", folder, "b0", "b1", "--fleet", fleet, db=db, check=True)
    p = ed("eval", "--all", "fweval", "--data", models["test"], "--fleet", inventory, "--json",
           db=db)
    assert p.returncode == 1
    r = json.loads(p.stdout)
    assert (r["ok"], r["failed_boards"]) == (2, ["gone"])
    assert all(x["top1"] > 0.8 for x in r["results"] if "top1" in x)

    ok = ed("targets", "check", "--all", "--fleet", fleet, db=db)   # refused before
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 of 2 boards match their profile" in ok.stdout
    p = ed("targets", "check", "--all", "--parallel", 3, "--fleet", inventory, "--json", db=db)
    assert p.returncode == 1
    rows = {x["board"]: x for x in json.loads(p.stdout)}
    assert rows["b0"]["ok"] and rows["b1"]["ok"] and not rows["gone"]["ok"]
