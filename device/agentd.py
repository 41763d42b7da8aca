"""The resident agent: one long-lived agent process per store, so a deployer's session costs the
board no Python start-up (~50 ms of CPU on a Pi-class core, most of a small push's board work).

    edgedeploy-agent agentd [--idle S] [--detach] [--pull-every S]

Files (in the store folder, for the owner only)::

    STORE/agentd.sock   the Unix socket; a deployer reaches it through SSH stream-local
                        forwarding (no process is started on the board for a session)
    STORE/agentd.lock   flock'd for the daemon's life (one per store); holds its PID. The
                        kernel releases it when the process ends (it is never closed before):
                        a free lock means the daemon is gone, which is what stop() waits for

Wire format on a connection (protocol.py states it; SOCKET, HELLO_KEY, CONTROL and UPLOAD
live there, shared with the host): the daemon first writes one hello line
``{"agentd": 1, "pid": N, "tag": T, "content_hash": H}`` (T: what the deployer started it
for — the board's ``python`` setting — so a daemon under another Python is not used); then
the batch protocol of ``agent.batch``: a JSON argv list per line in, one answer per line out
(with ``"exit"``), until the client closes its side; an ``upload`` line is followed by the
file's bytes, which this module's reader takes in itself. Only the store's control commands
are served here (CONTROL); bench, eval and serve answer ``not_here`` — they run in a fresh
process (``batch``), so their timings and peak memory are their own. Connections are served
one command at a time.

Uploads (protocol.py's ``upload`` line) go only into a folder directly in the store's
``incoming/`` (``INCOMING/TOKEN``, made here, owner-only), at a plain relative path inside it;
every folder on the way is opened without following a link (openat, O_NOFOLLOW), so neither
another absolute folder the socket's owner can write nor a symlink planted in incoming/ is
written through. A folder a connection made is removed when that connection ends without
having handed it to ``install`` (an upload cut mid-way leaves nothing).

Lifetime: the daemon ends after IDLE seconds with no client (default 900; 0 = never), on
SIGTERM (after the command under way), when a new one is started for the store, and — checked at every connection, before the hello — when its zipapp or any import
folder changed (a new agent or a new runtime was installed): the client then gets no hello
and falls back to starting an agent process. The store folder must exist; the daemon never
creates it.

Pull mode (``--pull-every S``): the daemon also polls the object store every S seconds with
the settings ``edgedeploy-agent pull … --save`` stored (device/pullloop.py's ``run_loop``, in a
thread: it backs off while the store is down); it then never ends for being idle. A poll cut
short by the daemon's end leaves the store as after a kill -9: whole.

(A little past 400 lines: one daemon's life — lock, socket, hello, uploads, exits — in order.)
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading

from .protocol import CONTROL, HELLO_KEY, HELLO_VERSION, SOCKET, UPLOAD

MAX_LINE = 1 << 20
CHUNK = 1 << 20
LOCK = "agentd.lock"


def _stamp() -> list:
    """What the running code and its packages depend on: the zipapp and every import folder."""
    out: list[tuple[object, ...]] = []
    for p in [sys.argv[0], *sys.path]:
        try:
            st = os.stat(p or ".")
            out.append((p, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((p, None))
    return out


def spawn(store_root: str, argv0: str, prefix: list[str], idle: float, tag: str,
          pull_every: float | None = None) -> dict:
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
    extra = ["--pull-every", str(pull_every)] if pull_every else []
    p = subprocess.Popen([*cmd, *prefix, "agentd", "--idle", str(idle), "--tag", tag, *extra],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    return {"started": True, "pid": p.pid, "replaced": replaced}


def running_pid(store_root: str) -> int | None:
    """The PID of the store's resident agent, if one runs (it holds the lock file's flock:
    a PID read from a lock nobody holds is stale and not returned)."""
    import fcntl

    try:
        fd = os.open(os.path.join(store_root, LOCK), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # free: nobody runs
        except BlockingIOError:
            raw = os.read(fd, 32).decode(errors="replace").strip()
            return int(raw) if raw.isdigit() else None
    finally:
        os.close(fd)


def stop(store_root: str) -> dict:
    """Stop the store's resident agent, if one runs (SIGTERM, then wait, bounded, for its lock
    to be free: the process has then ended, see LOCK). For a board whose Python environment
    changed."""
    import signal
    import time

    pid = running_pid(store_root)
    if pid is None:
        return {"stopped": None}
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while running_pid(store_root) is not None:
        if time.monotonic() > deadline:
            return {"stopped": pid, "still_running": True}
        time.sleep(0.02)
    return {"stopped": pid}


class Daemon:
    def __init__(self, store_root: str, idle: float, serve_lines, tag: str = "",
                 pull=None) -> None:
        self.root = store_root
        self.pull = pull  # (should_stop) -> None: pull mode's loop, run in a thread
        self.stopping = False
        self.idle = 0 if pull else idle
        self.tag = tag  # what the deployer started it for (its `python`), said in the hello
        self.serve_lines = serve_lines  # (lines, write, allowed, lock, gone) -> None: batch
        self.path = os.path.join(store_root, SOCKET)
        self.lock = threading.Lock()     # one command at a time across connections
        self.count_lock = threading.Lock()
        self.active = 0                  # connections being served (under count_lock)
        self.stamp = _stamp()
        self.held_lock: int | None = None  # the lock, kept open to the end (see LOCK)

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
        hello = json.dumps({HELLO_KEY: HELLO_VERSION, "pid": os.getpid(), "tag": self.tag,
                            "content_hash": identity()["content_hash"]}) + "\n"
        ino = os.stat(self.path).st_ino
        puller = None
        if self.pull is not None:
            puller = threading.Thread(target=self.pull, args=(lambda: self.stopping,),
                                      name="pull", daemon=True)
            puller.start()
        try:
            while True:
                srv.settimeout(self.idle or None)
                try:
                    conn, _ = srv.accept()
                except socket.timeout:
                    with self.count_lock:
                        if self.active == 0:
                            return 0
                    continue
                if _stamp() != self.stamp:
                    conn.close()
                    return 0
                with self.count_lock:
                    self.active += 1
                threading.Thread(target=self._serve, args=(conn, hello), daemon=True).start()
        finally:
            self.stopping = True
            srv.close()
            if puller is not None:
                puller.join(10)  # a poll mid-way is cut (its steps are atomic)
            self.lock.acquire(timeout=300)  # a command under way finishes first
            try:
                if os.stat(self.path).st_ino == ino:
                    os.unlink(self.path)
            except OSError:
                pass
            # LOCK stays held: the kernel frees it when this process has ended, so stop()
            # (and a daemon replacing this one) never returns while this process still runs.
            self.held_lock = lock

    def _serve(self, conn: socket.socket, hello: str) -> None:
        try:
            conn.sendall(hello.encode())
            self.serve_lines(self._lines(conn), lambda text: conn.sendall(text.encode()),
                             CONTROL, self.lock, lambda: _hung_up(conn))
        except OSError:
            pass  # the client went away
        finally:
            with self.count_lock:
                self.active -= 1
            conn.close()

    def _lines(self, conn: socket.socket):
        """The connection's command lines; uploads are served here, as they come. The upload
        folders this connection made and left behind go when it ends."""
        from .store import INCOMING

        rfile = conn.makefile("rb")
        incoming = os.path.join(self.root, INCOMING)
        made: set[str] = set()
        try:
            while True:
                raw = rfile.readline(MAX_LINE)
                if not raw:
                    return
                up = _upload_request(raw)
                if up is None:
                    yield raw.decode("utf-8", "replace")
                    continue
                answer = receive(rfile, incoming, *up, made=made)
                conn.sendall((json.dumps(answer) + "\n").encode())
        finally:
            _remove_left(incoming, made)


def _hung_up(conn: socket.socket) -> str | None:
    """Whether the client of CONN has closed it (its SSH channel ended); None while there."""
    import select

    try:
        p = select.poll()
        p.register(conn.fileno(), select.POLLIN)
        events = p.poll(0)
    except (OSError, ValueError):
        return "its connection is closed"
    if any(ev & (select.POLLHUP | select.POLLERR) for _, ev in events):
        return "its client hung up"
    return None


def _upload_request(raw: bytes) -> tuple[str, str, int] | None:
    try:
        msg = json.loads(raw)
    except ValueError:
        return None
    if isinstance(msg, list) and len(msg) == 4 and msg[0] == UPLOAD:
        folder, rel, size = msg[1], msg[2], msg[3]
        if isinstance(folder, str) and isinstance(rel, str) and str(size).isdigit():
            return folder, rel, int(size)
    return None


def receive(rfile, incoming: str, folder: str, rel: str, size: int,
            made: set[str] | None = None) -> dict:
    """Read SIZE bytes from RFILE into FOLDER/REL, a new file (protocol.py: ``upload``):
    FOLDER must be INCOMING/TOKEN (see the module docstring); TOKEN goes into MADE when this
    call made the folder. The bytes are always read, so the connection stays in step when the
    file can't be written; a partial file is removed."""
    from . import protocol
    from .fsio import write_all

    target = os.path.join(folder, rel)
    error = None
    opened: tuple[int, int, str] | None = None
    try:
        opened = _open_upload(incoming, folder, rel, made)
    except OSError as exc:
        error = f"{exc.filename or target}: {exc.strerror or exc}"
    except UploadRefused as exc:
        error = str(exc)
    left = size
    ok = False
    try:
        while left:
            chunk = rfile.read(min(CHUNK, left))
            if not chunk:
                raise ConnectionError("the client went away mid-upload")
            left -= len(chunk)
            if opened is not None and error is None:
                try:
                    write_all(opened[1], chunk)
                except OSError as exc:
                    error = f"{target}: {exc.strerror or exc}"
        ok = error is None
    finally:
        if opened is not None:
            dfd, fd, name = opened
            os.close(fd)
            if not ok:
                try:
                    os.unlink(name, dir_fd=dfd)
                except OSError:
                    pass
            os.close(dfd)
    if error is not None:
        return {**protocol.error("store_error", f"upload: {error}"), "exit": 1}
    return {**protocol.ok(UPLOAD, path=target, bytes=size), "exit": 0}


class UploadRefused(Exception):
    """An upload to somewhere else than a plain path in a folder directly in incoming/."""


def _plain(part: str) -> bool:
    return bool(part) and part not in (".", "..") and "/" not in part and "\0" not in part \
        and part.isprintable() and len(part.encode()) <= 255


def _open_upload(incoming: str, folder: str, rel: str, made: set[str] | None
                 ) -> tuple[int, int, str]:
    """(folder fd, file fd, file name) for a new FOLDER/REL: FOLDER is INCOMING/TOKEN (made,
    owner-only, if new), REL plain; every folder on the way opened with O_NOFOLLOW through
    the one before (openat), so no link is followed anywhere under INCOMING."""
    token = os.path.basename(folder.rstrip("/"))
    if os.path.normpath(os.path.dirname(folder.rstrip("/"))) != os.path.normpath(incoming) \
            or not _plain(token):
        raise UploadRefused(f"{folder} is not a folder directly in {incoming} (uploads go "
                            f"only there)")
    parts = rel.split("/")
    if not all(_plain(part) for part in parts):
        raise UploadRefused(f"{rel!r} is not a plain relative path (no '..', '.', empty parts "
                            f"or leading '/')")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.mkdir(incoming, 0o700)
    except FileExistsError:
        pass
    dfd = os.open(incoming, flags)
    try:
        for i, part in enumerate([token, *parts[:-1]]):
            try:
                os.mkdir(part, 0o700, dir_fd=dfd)
                if i == 0 and made is not None:
                    made.add(token)
            except FileExistsError:
                pass
            try:
                nfd = os.open(part, flags, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = os.path.join(folder, *parts[:i])
                    raise UploadRefused(f"{where}: a link or a file where a folder should be; "
                                        f"not followed") from None
                raise
            os.close(dfd)
            dfd = nfd
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                     os.O_CLOEXEC, 0o600, dir_fd=dfd)
    except BaseException:
        os.close(dfd)
        raise
    return dfd, fd, parts[-1]


def _remove_left(incoming: str, made: set[str]) -> None:
    """The folders in INCOMING a connection made (MADE) that are still there: nobody will
    install them (``install --remove-bundle`` removes what it takes in)."""
    import shutil
    import stat

    for token in made:
        path = os.path.join(incoming, token)
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
