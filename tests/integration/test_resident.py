"""The resident agent on real sshd boards: the first session leaves one behind, later sessions
reach it through SSH stream-local forwarding (no process start on the board), and every way it
can go away — killed, a new agent uploaded, turned off in fleet.toml — falls back to a fresh
agent process without the user seeing a difference."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from edgedeploy.device.agentd import running_pid
from edgedeploy.host.bundle import Bundle, load_bundle
from edgedeploy.host.deploy import BoardSession
from edgedeploy.targets import load_fleet

from .test_push import _one_board

pytestmark = pytest.mark.board


def _resident_pid(store: Path) -> int | None:
    return running_pid(str(store))


def _wait_pid(store: Path, other_than: int | None = None) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid = _resident_pid(store)
        if pid and pid != other_than:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"no resident agent for {store}")


def _push(board, bundle, name: str):
    with BoardSession(board) as s:
        return s.push(Bundle(replace(bundle.manifest, name=name), bundle.model_path))


@pytest.mark.parametrize("name", ["b0", "b1"])
def test_later_sessions_use_the_resident_agent(fleet, models, name):
    board = load_fleet(fleet).get(name)
    store = Path(board.root) / "store"
    b = load_bundle(models["int8"])
    _push(board, b, "res_a")  # any earlier session leaves a resident agent behind
    pid = _wait_pid(store)

    r = _push(board, b, "res_b")
    assert r.resident_agent and r.current == b.version and r.bytes_sent > 0
    assert _resident_pid(store) == pid  # the same one served it
    with BoardSession(board) as s:  # bench is not a control command: its own process
        assert s.bench("res_b", runs=5).raw["timing"]["runs"] == 5
        entry = s.state(model="res_b").model("res_b")
        assert entry is not None and entry.current == b.version

    os.kill(pid, signal.SIGKILL)  # gone: the next push still works, and leaves a new one
    r = _push(board, b, "res_c")
    assert not r.resident_agent and r.current == b.version
    pid2 = _wait_pid(store, other_than=pid)

    pyz = Path(board.root) / "agent" / "edgedeploy-agent.pyz"
    st = pyz.stat()  # the agent file changes (as an upgrade does): the old one steps down
    os.utime(pyz, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = _push(board, b, "res_d")
    assert not r.resident_agent and r.current == b.version
    _wait_pid(store, other_than=pid2)
    assert _push(board, b, "res_e").resident_agent


def test_a_resident_agent_for_another_python_is_replaced(fleet, models, tmp_path):
    """fleet.toml now names another Python for the board: the resident agent started for the
    old one is not used (its runtime facts would be the old Python's) but replaced."""
    board = load_fleet(fleet).get("b0")
    store = Path(board.root) / "store"
    b = load_bundle(models["int8"])
    _push(board, b, "py_a")
    old = _wait_pid(store)
    py3 = board.python + "3"  # the same env's python3: another `python` setting
    assert Path(py3).exists()
    other = replace(board, python=py3)
    r = _push(other, b, "py_b")
    assert not r.resident_agent and r.current == b.version
    new = _wait_pid(store, other_than=old)
    again = _push(other, b, "py_c")
    assert again.resident_agent and _resident_pid(store) == new
    assert not _push(board, b, "py_d").resident_agent  # and back
    _wait_pid(store, other_than=new)


def test_resident_agent_off_in_fleet_toml(fleet, models, tmp_path):
    inv = _one_board(fleet, tmp_path / "off.toml", "off", resident_agent=False,
                     root=str(tmp_path / "offroot"))
    board = load_fleet(inv).get("off")
    b = load_bundle(models["int8"])
    for n in ("off_a", "off_b"):
        r = _push(board, b, n)
        assert not r.resident_agent and r.current == b.version
    time.sleep(0.5)
    assert _resident_pid(tmp_path / "offroot" / "store") is None
    assert not (tmp_path / "offroot" / "store" / "agentd.sock").exists()
