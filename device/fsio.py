"""File-system helpers the board side shares: whole-or-absent writes, folder fsyncs, and the
fault checkpoints the kill -9 tests use. Stdlib only (it ships to boards in the agent).

Crash points: ``EDGEDEPLOY_AGENT_CRASH_AT=POINT`` makes the process SIGKILL itself when it
reaches :func:`checkpoint` ``(POINT)``; ``POINT@FILE`` does it once (the first process to
create FILE). ``EDGEDEPLOY_AGENT_PAUSE_AT=POINT:SECONDS`` makes it sleep there instead (a slow
board, or a link cut while the answer is on its way: the lost-answer tests). Points are named
after the step just finished (``install:copied``, ``pointer:written``, ``activate:switched``,
…: see store.py and intake.py; ``bench:measured`` in agent.py, a slow gate).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CRASH_AT = os.environ.get("EDGEDEPLOY_AGENT_CRASH_AT", "")
_PAUSE_AT = os.environ.get("EDGEDEPLOY_AGENT_PAUSE_AT", "")


def checkpoint(name: str) -> None:
    """Tests' fault injection: EDGEDEPLOY_AGENT_CRASH_AT=POINT kills the agent (SIGKILL) at
    POINT; POINT@FILE does it once (the first process to create FILE);
    EDGEDEPLOY_AGENT_PAUSE_AT=POINT:SECONDS sleeps there."""
    if _PAUSE_AT:
        point, _, seconds = _PAUSE_AT.rpartition(":")
        if point == name:
            import time

            time.sleep(float(seconds or 0))
    if not _CRASH_AT:
        return
    point, _, once = _CRASH_AT.partition("@")
    if point != name:
        return
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: Path) -> None:
    """fsync a folder, so the renames and creations in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, crash_point: str | None = None) -> None:
    """Write to a temporary file beside PATH, fsync, rename, fsync the folder: PATH is whole
    or absent, whatever instant the process dies at."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if crash_point:
            checkpoint(crash_point)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte of DATA is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
