"""The resident agent: one long-lived agent process per store, so a deployer's session costs the
board no Python start-up (~50 ms of CPU on a Pi-class core, most of a small push's board work).

    edgedeploy-agent agentd [--idle S] [--detach]

Files (in the store folder, for the owner only)::

    STORE/agentd.sock   the Unix socket; a deployer reaches it through SSH stream-local
                        forwarding (no process is started on the board for a session)
    STORE/agentd.lock   flock'd for the daemon's life (one per store); holds its PID

Wire format on a connection: the daemon first writes one hello line
``{"agentd": 1, "pid": N, "tag": T, "content_hash": H}`` (T: what the deployer started it
for — the board's ``python`` setting — so a daemon under another Python is not used); then the batch protocol of ``agent.batch``:
a JSON argv list per line in, one answer per line out (with ``"exit"``), until the client
closes its side. Only the store's control commands are served here (CONTROL); bench, eval and
serve answer ``not_here`` — they run in a fresh process (``batch``), so their timings and peak
memory are their own. Connections are served one command at a time.

Lifetime: the daemon ends after IDLE seconds with no client (default 900; 0 = never), on
SIGTERM (after the command under way), when a new one is started for the store, and — checked at every connection, before the hello — when its zipapp or any import
folder changed (a new agent or a new runtime was installed): the client then gets no hello
and falls back to starting an agent process. The store folder must exist; the daemon never
creates it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading

CONTROL = frozenset({"version", "info", "state", "install", "activate", "rollback", "list",
                     "remove", "verify"})
SOCKET, LOCK = "agentd.sock", "agentd.lock"
HELLO_KEY = "agentd"


def _stamp() -> list:
    """What the running code and its packages depend on: the zipapp and every import folder."""
    out = []
    for p in [sys.argv[0], *sys.path]:
        try:
            st = os.stat(p or ".")
            out.append((p, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((p, None))
    return out


def spawn(store_root: str, argv0: str, prefix: list[str], idle: float, tag: str) -> dict:
    """Start a detached daemon (its own session, no inherited descriptors); don't wait. One
    already running is stopped first: a deployer asks for a new one only when the old one
    didn't serve it (gone, stale, or started for another Python — TAG)."""
    import subprocess

    if not os.path.isdir(store_root):
        return {"started": False, "reason": f"{store_root} does not exist yet"}
    replaced = stop(store_root)["stopped"]
    argv0 = os.path.abspath(argv0)
    if argv0.endswith(".pyz") or os.path.isdir(argv0):
        cmd = [sys.executable, argv0]
    else:
        cmd = [sys.executable, "-m", "edgedeploy.device.agent"]
    p = subprocess.Popen([*cmd, *prefix, "agentd", "--idle", str(idle), "--tag", tag],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    return {"started": True, "pid": p.pid, "replaced": replaced}


def stop(store_root: str) -> dict:
    """Stop the store's resident agent, if one runs (SIGTERM to the PID its lock holds, then
    wait, bounded, for the lock to be free). For a board whose Python environment changed."""
    import fcntl
    import signal
    import time

    try:
        fd = os.open(os.path.join(store_root, LOCK), os.O_RDWR)
    except OSError:
        return {"stopped": None}
    try:
        deadline = time.monotonic() + 5
        sent = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return {"stopped": sent}
            except BlockingIOError:
                pass
            if sent is None:
                os.lseek(fd, 0, os.SEEK_SET)
                raw = os.read(fd, 32).decode(errors="replace").strip()
                if not raw.isdigit():
                    return {"stopped": None}
                sent = int(raw)
                try:
                    os.kill(sent, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                return {"stopped": sent, "still_running": True}
            time.sleep(0.02)
    finally:
        os.close(fd)


class Daemon:
    def __init__(self, store_root: str, idle: float, serve_lines, tag: str = "") -> None:
        self.root = store_root
        self.idle = idle
        self.tag = tag  # what the deployer started it for (its `python`), said in the hello
        self.serve_lines = serve_lines  # (lines, write, allowed) -> None
        self.path = os.path.join(store_root, SOCKET)
        self.lock = threading.Lock()     # one command at a time across connections
        self.count_lock = threading.Lock()
        self.stamp = _stamp()

    def _take_lock(self) -> int | None:
        import fcntl
        import time

        fd = os.open(os.path.join(self.root, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + 3  # an old daemon may be on its way out
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def run(self) -> int:
        from .ship import identity

        if not os.path.isdir(self.root):
            return 1
        lock = self._take_lock()
        if lock is None:
            return 0  # another daemon serves this store
        import signal

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # ends cleanly: see finally
        old = os.umask(0o077)
        try:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(self.path)  # OSError for a path over ~107 bytes: no daemon then
            srv.listen(64)
        finally:
            os.umask(old)
        hello = json.dumps({HELLO_KEY: 1, "pid": os.getpid(), "tag": self.tag,
                            "content_hash": identity()["content_hash"]}) + "\n"
        ino = os.stat(self.path).st_ino
        active = [0]
        try:
            while True:
                srv.settimeout(self.idle or None)
                try:
                    conn, _ = srv.accept()
                except socket.timeout:
                    with self.count_lock:
                        if active[0] == 0:
                            return 0
                    continue
                if _stamp() != self.stamp:
                    conn.close()
                    return 0
                with self.count_lock:
                    active[0] += 1
                threading.Thread(target=self._serve, args=(conn, hello, active),
                                 daemon=True).start()
        finally:
            srv.close()
            self.lock.acquire(timeout=300)  # a command under way finishes first
            try:
                if os.stat(self.path).st_ino == ino:
                    os.unlink(self.path)
            except OSError:
                pass
            os.close(lock)

    def _serve(self, conn: socket.socket, hello: str, active: list) -> None:
        try:
            conn.sendall(hello.encode())
            lines = conn.makefile("r", encoding="utf-8", newline="\n")
            self.serve_lines(lines, lambda text: conn.sendall(text.encode()), CONTROL,
                             self.lock)
        except OSError:
            pass  # the client went away
        finally:
            with self.count_lock:
                active[0] -= 1
            conn.close()
