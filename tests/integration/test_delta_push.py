"""Deltas over real SSH to real sshd boards (b0: ai-edge-litert + numpy 2, b1: tflite-runtime
2.14 + numpy 1): a board that holds an earlier version of the model gets a delta and ends up with
the exact file, and push's result, its text line and the report say so; a board whose stored
copy of that version is damaged refuses the delta and gets the full file, once; --no-delta
sends the file; a rollout stages with deltas."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edgedeploy.host.bundle import Bundle, load_bundle
from edgedeploy.host.deploy import BoardSession
from edgedeploy.targets import load_fleet

from .conftest import ed, ed_json

pytestmark = pytest.mark.board


def named(model: Path, name: str, dest: Path) -> Path:
    """MODEL's bundle as model NAME (its own versions on the board), written to DEST."""
    b = load_bundle(model)
    return Bundle(replace(b.manifest, name=name), b.model_path).write_folder(dest)


def version_of(folder: Path) -> str:
    return load_bundle(folder).version


@pytest.mark.parametrize("board", ["b0", "b1"])
def test_second_version_goes_as_a_delta(fleet, models, retrained, tmp_path, board):
    db = tmp_path / "r.db"
    name = f"delta_{board}"
    old, new = named(models["int8"], name, tmp_path / "old"), named(retrained, name,
                                                                    tmp_path / "new")
    first = ed_json("push", old, board, "--fleet", fleet, db=db)
    assert first["transfer"] == "full", first
    r = ed_json("push", new, board, "--fleet", fleet, db=db)
    assert r["transfer"] == "delta", r
    assert r["bytes_sent"] < 0.05 * r["full_bytes"], r
    assert (r["current"], r["previous"]) == (version_of(new), version_of(old))
    st = ed_json("status", board, "--fleet", fleet, db=db)  # re-hashes the active version
    assert st["health"] == "ok", st
    bench = ed_json("bench", board, name, "--runs", 5, "--fleet", fleet, db=db)
    assert bench["model"]["version"] == version_of(new)
    rows = ed_json("report", "--model", name, db=db)["rows"]
    sent = {row["version"]: row["sent"] for row in rows}
    assert sent[version_of(new)].startswith("delta ") and sent[version_of(old)].startswith("full")
    # back and forth: the old version is on the board, nothing is sent
    again = ed_json("push", old, board, "--fleet", fleet, db=db)
    assert again["transfer"] == "none" and again["bytes_sent"] == 0


def test_refused_delta_falls_back_to_the_full_file(fleet, models, retrained, tmp_path):
    db = tmp_path / "r.db"
    name = "delta_refused"
    old, new = named(models["int8"], name, tmp_path / "old"), named(retrained, name,
                                                                    tmp_path / "new")
    ed_json("push", old, "b1", "--fleet", fleet, db=db)
    # the board's stored copy of the old version goes bad (same size, one byte flipped)
    board = load_fleet(fleet).get("b1")
    with BoardSession(board) as s:
        st = s.state(model=name)
        m = load_bundle(old).manifest
        path = f"{st.store}/models/{name}/{m.version}/{m.file}"
        flip = ("import sys; p = sys.argv[1]; f = open(p, 'r+b'); f.seek(1000); b = f.read(1); "
                "f.seek(1000); f.write(bytes([b[0] ^ 1])); f.close()")
        s.link.transport.check(["python3", "-c", flip, path])
    p = ed("push", new, "b1", "--fleet", fleet, db=db)
    assert p.returncode == 0, p.stderr
    assert "whole" in p.stdout and "refused the delta" in p.stdout, p.stdout
    r = ed_json("push", new, "b1", "--fleet", fleet, db=db)  # now the board has it
    assert r["transfer"] == "none" and r["current"] == version_of(new)
    assert ed_json("status", "b1", "--fleet", fleet, db=db)["health"] == "ok"


def test_no_delta_sends_the_whole_file(fleet, models, retrained, tmp_path):
    db = tmp_path / "r.db"
    name = "delta_off"
    old, new = named(models["int8"], name, tmp_path / "old"), named(retrained, name,
                                                                    tmp_path / "new")
    ed_json("push", old, "b0", "--fleet", fleet, db=db)
    r = ed_json("push", new, "b0", "--no-delta", "--fleet", fleet, db=db)
    assert r["transfer"] == "full" and r["bytes_sent"] == r["full_bytes"], r


def test_rollout_stages_with_deltas(fleet, models, retrained, tmp_path):
    db, jn = tmp_path / "r.db", tmp_path / "j.db"
    name = "delta_rollout"
    old, new = named(models["int8"], name, tmp_path / "old"), named(retrained, name,
                                                                    tmp_path / "new")
    assert ed_json("push", old, "b0", "b1", "--fleet", fleet, db=db)["ok"] == 2
    p = ed("rollout", "start", new, "--fleet", fleet, "--canary", "1", "--waves", "100%",
           "--journal", jn, db=db)
    assert p.returncode == 0, p.stderr
    r = ed_json("rollout", "status", "--journal", jn, db=db)
    assert [b["state"] for b in r["boards"]] == ["committed", "committed"], r
    staged = [ln for ln in p.stderr.splitlines() if ": staged" in ln]
    assert len(staged) == 2 and all("as a delta" in ln for ln in staged), p.stderr
