"""The ``local`` transport: the same operations on this machine (``--target local``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from ...errors import Unreachable
from . import Progress, RunResult, Transport, shell_join


def _expand(path: str) -> Path:
    return Path(os.path.expanduser(path))


class LocalTransport(Transport):
    def __init__(self, board: str = "local") -> None:
        self.board = board

    def run(self, argv: Sequence[str] | str, *, timeout: float | None = None,
            input: bytes | None = None) -> RunResult:
        cmd = argv if isinstance(argv, str) else shell_join(argv)
        try:
            p = subprocess.run(["/bin/sh", "-c", cmd], input=input, capture_output=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise Unreachable(self.board, f"`{cmd}` did not finish in {timeout} s") from exc
        return RunResult(cmd, p.returncode, p.stdout.decode("utf-8", "replace"),
                         p.stderr.decode("utf-8", "replace"))

    def put(self, local: Path, remote: str, progress: Progress | None = None) -> int:
        dest = _expand(remote)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        size = dest.stat().st_size
        if progress:
            progress(size, size)
        return size

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(_expand(remote), local)

    def close(self) -> None:
        pass
