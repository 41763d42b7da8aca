"""The store's lock, and the guard every changing command runs under. Stdlib only.

``STORE/.lock`` is flock'd (exclusively) by every command that changes the store:

* it is created owner-only (0600) and opened without following a link, so no other local
  user can hold it (any user who could open a 0644 lock could block every push with a shared
  flock); an older agent's 0644 lock is tightened;
* it is taken with a deadline (the command's own, else LOCK_WAIT seconds): past it, a Conflict
  (exit 4) names the process holding it — "store … is locked by PID N (comm)", from
  /proc/locks, else the PID its holder wrote in the file;
* the command's Guard is checked while waiting and once the lock is held, before anything
  changes: a command whose deadline passed or whose client hung up is dropped (Expired,
  "nothing was done"). This is what keeps a command the host gave up on from acting later.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import Conflict, Expired, StoreError

LOCK_WAIT = 30.0  # seconds a command without a deadline waits for the store lock


@dataclass
class Guard:
    """Whether the command under way may still act: before DEADLINE (time.monotonic()) and
    while its client is there (GONE says why not, or None). Checked while waiting for the
    store lock and once it is taken, before anything changes."""
    deadline: float | None = None
    gone: Callable[[], str | None] | None = None

    def why_not(self) -> str | None:
        why = self.gone() if self.gone is not None else None
        if why:
            return why
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "its deadline passed"
        return None


class StoreLock:
    """``with StoreLock(...)``: the flock on PATH (the lock of the store at ROOT) under GUARD;
    ON_TAKEN runs once it is held (the store's sweep). The holder's PID is written in it."""

    def __init__(self, path: Path, root: Path, guard: Guard,
                 on_taken: Callable[[], None] | None = None) -> None:
        self.path, self.root, self.guard, self.on_taken = path, root, guard, on_taken
        self.fd = -1

    def __enter__(self) -> "StoreLock":
        guard = self.guard
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the store lock ({exc.strerror})",
                             hint="it must be a file of the store's owner, not a link") from exc
        try:
            if os.fstat(fd).st_mode & 0o077:  # made 0644 by an older agent: owner-only now
                try:
                    os.fchmod(fd, 0o600)
                except PermissionError:
                    pass
            until = guard.deadline if guard.deadline is not None else \
                time.monotonic() + LOCK_WAIT
            pause = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                why = guard.gone() if guard.gone is not None else None
                if why:
                    raise Expired(f"command dropped: {why} while it waited for the store lock "
                                  f"of {self.root}; nothing was done")
                if time.monotonic() >= until:
                    raise Conflict(f"store {self.root} is locked by {holders(fd)}",
                                   hint="nothing was done; wait for that process to end, or "
                                        "stop it")
                time.sleep(pause)
                pause = min(2 * pause, 0.2)
            why = guard.why_not()
            if why:
                raise Expired(f"command dropped: {why} before the store lock of {self.root} "
                              f"was free; nothing was done")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            if self.on_taken is not None:
                self.on_taken()
        except BaseException:
            os.close(fd)  # releases the flock, if it was taken
            raise
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def holders(fd: int) -> str:
    """Who holds the flock on FD's file: "PID N (comm)" from /proc/locks (Linux), else the PID
    its holder wrote in it, else "another process"."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    try:
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == key \
                        and parts[4].isdigit() and int(parts[4]) != os.getpid():
                    pids.append(int(parts[4]))
    except OSError:
        pass
    if not pids:
        raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
        pids = [int(raw)] if raw.isdigit() else []
    if not pids:
        return "another process"
    out = []
    for pid in sorted(set(pids)):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            out.append(f"PID {pid} ({comm})")
        except OSError:
            out.append(f"PID {pid}")
    return ", ".join(out)
