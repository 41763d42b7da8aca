"""The ``local`` transport: the same operations on this machine (``--target local``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from ...errors import Unreachable
from . import Progress, RunResult, Stream, Transport, shell_join


def _expand(path: str) -> Path:
    return Path(os.path.expanduser(path))


class _LocalStream(Stream):
    def __init__(self, board: str, command: str) -> None:
        import tempfile

        self.board, self.command = board, command
        self._err = tempfile.TemporaryFile()
        self.p = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self._err)

    def send_bytes(self, data: bytes) -> None:
        try:
            assert self.p.stdin is not None
            self.p.stdin.write(data)
            self.p.stdin.flush()
        except BrokenPipeError:
            pass  # the command has ended; read_line says so with ''

    def read_line(self, timeout: float) -> str:
        import select

        assert self.p.stdout is not None
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not ready:
            raise Unreachable(self.board, f"`{self.command}` gave no answer for {timeout} s")
        return self.p.stdout.readline().decode("utf-8", "replace")

    def close(self) -> int | None:
        try:
            if self.p.stdin:
                self.p.stdin.close()
        except BrokenPipeError:
            pass
        try:
            return self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()[-65536:].decode("utf-8", "replace")


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

    def start(self, command: str) -> Stream:
        return _LocalStream(self.board, command)

    def put(self, data: Path | bytes, remote: str, progress: Progress | None = None) -> int:
        dest = _expand(remote)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            dest.write_bytes(data)
        else:
            shutil.copyfile(data, dest)
        size = dest.stat().st_size
        if progress:
            progress(size, size)
        return size

    def size(self, path: str) -> int | None:
        p = _expand(path)
        return p.stat().st_size if p.is_file() else None

    def mkdir(self, path: str) -> None:
        _expand(path).mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        pass
