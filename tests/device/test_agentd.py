"""The resident agent (`edgedeploy-agent agentd`), as real detached processes in both board envs:
one per store, its socket private, control commands only, gone when told, when idle, or when
its zipapp changes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import time
from pathlib import Path


def _wait(cond, what: str, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[-1].split()[0] != "Z"


def _talk(sock_path: Path, *commands: list) -> tuple[dict | None, list[dict]]:
    """Connect, read the hello (None if the daemon closed instead), send COMMANDS."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(str(sock_path))
        f = s.makefile("r")
        first = f.readline()
        hello = json.loads(first) if first else None
        answers = []
        for c in commands if hello else []:
            s.sendall((json.dumps(c) + "\n").encode())
            answers.append(json.loads(f.readline()))
        return hello, answers


class _Cleanup:
    def __init__(self) -> None:
        self.pids: list[int] = []

    def __call__(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_serves_control_commands_once_per_store_and_stops(agent):
    cleanup = _Cleanup()
    try:
        r = agent("agentd", "--detach")
        assert r["started"] is False and "does not exist" in r["reason"]  # never makes a store
        agent.store.mkdir()
        r = agent("agentd", "--detach", "--idle", 60, "--tag", "py-a")
        assert r["started"] is True and r["replaced"] is None
        cleanup.pids.append(r["pid"])
        sock = agent.store / "agentd.sock"
        _wait(sock.exists, "the socket")
        mode = sock.stat().st_mode
        assert stat.S_ISSOCK(mode) and mode & 0o077 == 0  # the owner's only
        assert (agent.store / "agentd.lock").read_text().strip() == str(r["pid"])

        hello, (state, bench, nested, junk) = _talk(
            sock, ["state"], ["bench", "digits"], ["agentd", "--detach"], "not a list")
        assert hello == {"agentd": 1, "pid": r["pid"], "tag": "py-a",
                         "content_hash": agent("version")["content_hash"]}
        assert state["ok"] and state["store"] == str(agent.store) and state["exit"] == 0
        assert state["info"]["runtime"] == agent.runtime
        assert (bench["code"], bench["exit"]) == ("not_here", 2)  # timings: own process
        assert nested["code"] == "not_here" and junk["code"] == "bad_input"

        # a new one for the store (say, for another Python) replaces the one there
        second = agent("agentd", "--detach", "--idle", 60, "--tag", "py-b")
        cleanup.pids.append(second["pid"])
        assert second["replaced"] == r["pid"]
        # its lock is free when stop() returns; the process itself ends a moment later
        _wait(lambda: not _alive(r["pid"]), "the replaced daemon to end")
        hello = _wait(lambda: sock.exists() and _talk(sock)[0], "the new daemon")
        assert (hello["pid"], hello["tag"]) == (second["pid"], "py-b")

        stopped = agent("agentd", "--stop")
        assert stopped["stopped"] == second["pid"] and "still_running" not in stopped
        _wait(lambda: not _alive(second["pid"]), "the daemon to stop")
        assert not sock.exists()
        assert agent("agentd", "--stop")["stopped"] is None  # nothing to stop: fine
    finally:
        cleanup()


def test_quits_when_its_zipapp_changes_or_it_is_idle(agent, tmp_path):
    cleanup = _Cleanup()
    pyz = tmp_path / "own" / "edgedeploy-agent.pyz"  # a copy this test may touch
    pyz.parent.mkdir()
    shutil.copy(agent.pyz, pyz)
    own = type(agent)(agent.python, pyz, agent.store, agent.runtime)
    try:
        own.store.mkdir()
        pid = own("agentd", "--detach", "--idle", 60)["pid"]
        cleanup.pids.append(pid)
        sock = own.store / "agentd.sock"
        _wait(sock.exists, "the socket")
        assert _talk(sock, ["list"])[1][0]["ok"]
        st = pyz.stat()
        os.utime(pyz, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "a new agent"
        hello, _ = _talk(sock)
        assert hello is None  # no hello: the client falls back to a fresh process
        _wait(lambda: not _alive(pid), "the stale daemon to quit")
        assert not sock.exists()

        pid = own("agentd", "--detach", "--idle", 0.5)["pid"]
        cleanup.pids.append(pid)
        _wait(lambda: not _alive(pid), "the idle daemon to quit")
        assert not sock.exists()
    finally:
        cleanup()


def test_upload_then_install_over_the_socket(agent, tmp_path, models):
    """A deployer's upload through the resident agent: bytes after the line, then `install`
    checks them; a bad path, an existing file and a short upload are refused cleanly."""
    from tests.device.conftest import bundle_dir

    cleanup = _Cleanup()
    src = bundle_dir(models["int8"], tmp_path / "src")
    files = sorted(p for p in src.iterdir())
    incoming = agent.store / "incoming" / "up1"  # where `state` says uploads go
    try:
        agent.store.mkdir()
        cleanup.pids.append(agent("agentd", "--detach", "--idle", 60)["pid"])
        sock = agent.store / "agentd.sock"
        _wait(sock.exists, "the socket")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))
            f = s.makefile("rb")
            assert json.loads(f.readline())["agentd"] == 1

            def upload(rel: str, data: bytes, size: int | None = None) -> dict:
                n = len(data) if size is None else size
                s.sendall((json.dumps(["upload", str(incoming), rel, n]) + "\n").encode()
                          + data)
                return json.loads(f.readline())

            for p in files:
                r = upload(p.name, p.read_bytes())
                assert r["ok"] and r["bytes"] == p.stat().st_size, r
            again = upload(files[0].name, b"x")  # never overwrites
            assert again["code"] == "store_error" and "exists" in again["message"]
            evil = upload("../../escape", b"x")
            assert evil["code"] == "store_error" and "'..'" in evil["message"]
            assert not (incoming.parent.parent / "escape").exists()
            s.sendall((json.dumps(["install", str(incoming), "--activate"]) + "\n").encode())
            inst = json.loads(f.readline())
            assert inst["ok"] and inst["current"], inst
            # a client that dies mid-upload leaves no part behind
            s.sendall((json.dumps(["upload", str(incoming), "partial", 1000]) + "\n").encode()
                      + b"y" * 10)
            s.shutdown(socket.SHUT_RDWR)  # the client dies (close alone waits for `f` to go)
        _wait(lambda: not (incoming / "partial").exists(), "the partial file to go")
        assert agent("list")["models"][0]["current"] == inst["current"]
    finally:
        cleanup()


def test_stop_returns_only_once_the_daemon_process_is_gone(agent, tmp_path):
    """`agentd --stop` (and a new daemon replacing an old one) must not return while the old
    process still runs. The lock it waits for used to be released before the interpreter
    ended, so under load the old process was still alive: an atexit handler that takes its
    time (a site hook, as slow teardown under load) makes that window wide."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import atexit, time, sys\n"
        "if 'agentd' in sys.argv:\n"
        "    atexit.register(time.sleep, 1.5)\n")
    env = {"PYTHONPATH": str(hook)}
    cleanup = _Cleanup()
    try:
        agent.store.mkdir()
        first = agent("agentd", "--detach", "--idle", 60, env=env)
        cleanup.pids.append(first["pid"])
        sock = agent.store / "agentd.sock"
        _wait(lambda: sock.exists() and _talk(sock)[0], "the first daemon")
        second = agent("agentd", "--detach", "--idle", 60, env=env)  # replaces the first
        cleanup.pids.append(second["pid"])
        assert second["replaced"] == first["pid"] and not _alive(first["pid"])
        _wait(lambda: sock.exists() and (_talk(sock)[0] or {}).get("pid") == second["pid"],
              "the second daemon")
        stopped = agent("agentd", "--stop")
        assert stopped["stopped"] == second["pid"] and "still_running" not in stopped
        assert not _alive(second["pid"])
        assert not sock.exists() and agent("agentd", "--stop")["stopped"] is None
    finally:
        cleanup()
