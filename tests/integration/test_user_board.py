"""A board reached as an unprivileged user, with the default root `~/.edgedeploy` (the board's
shell expands it; SFTP and the resident agent's socket need the absolute path the agent says),
on both board envs: everything a push needs works without root, and nothing is written as root
or outside that user's home."""

from __future__ import annotations

import pytest

from edgedeploy.device.manifest import Manifest

from tests.conftest import assert_top1_as_host

from .conftest import ed_json

pytestmark = pytest.mark.board


def _manifest(model) -> Manifest:
    return Manifest.load(model.with_name(model.name[:-len(".tflite")] + ".manifest.json"))


@pytest.mark.slow
@pytest.mark.parametrize("board", ["b0", "b1"])
def test_unprivileged_user_with_the_default_root(user_fleet, models, tmp_path, board):
    assert "root =" not in user_fleet.read_text() and 'user = "edgeuser"' in user_fleet.read_text()
    db = tmp_path / "r.db"
    m32, m8 = _manifest(models["float32"]), _manifest(models["int8"])
    ed_json("push", models["float32"], board, "--fleet", user_fleet, db=db)
    r = ed_json("push", models["int8"], board, "--fleet", user_fleet, db=db)
    assert (r["current"], r["previous"]) == (m8.version, m32.version)
    again = ed_json("push", models["int8"], board, "--fleet", user_fleet, db=db)
    assert again["bytes_sent"] == 0 and again["resident_agent"]  # its socket found by path
    bench = ed_json("bench", board, "digits", "--runs", 20, "--fleet", user_fleet, db=db)
    assert bench["timing"]["runs"] == 20
    runtime = "litert" if board == "b0" else "tflite_runtime"
    ev = ed_json("eval", board, "digits", "--data", models["test"], "--fleet", user_fleet,
                 db=db)
    assert_top1_as_host(ev, m8.host_figures["accuracy"], runtime)
    st = ed_json("status", board, "--fleet", user_fleet, db=db)
    assert st["health"] == "ok" and st["models"][0]["current"] == m8.version
    assert ed_json("rollback", board, "digits", "--fleet", user_fleet, db=db)["current"] == \
        m32.version

    home = user_fleet.parent / board / "home"
    store = home / ".edgedeploy" / "store"
    assert (store / "models" / "digits" / m8.version).is_dir()
    uid = home.stat().st_uid
    assert uid != 0
    wrong = [p for p in home.rglob("*") if p.lstat().st_uid != uid]
    assert not wrong, f"written as another user: {wrong[:3]}"
    assert not list((user_fleet.parent / board).glob(".edgedeploy*"))
