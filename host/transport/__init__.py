"""How the host reaches a board: run a command, start one to talk to in lines, reach a Unix
socket on it, put a file (or bytes), close.

Two implementations: ``ssh`` (paramiko; known_hosts enforced) and ``local`` (this machine).
Commands are argv lists; they reach the remote shell only through ``shlex.quote`` (see
:func:`shell_join`). A leading ``~/`` in an argument is the board's home, expanded by the shell
as ``"$HOME"/…`` with the rest quoted. Errors are BoardError subclasses naming the board.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ...errors import RemoteFailure

Progress = Callable[[int, int], None]  # (bytes sent, total)


@dataclass
class RunResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str


def quote_arg(arg: str) -> str:
    """shlex.quote, except that a leading ``~/`` stays the board's home."""
    arg = str(arg)
    if arg == "~":
        return '"$HOME"'
    if arg.startswith("~/"):
        return '"$HOME"/' + shlex.quote(arg[2:])
    return shlex.quote(arg)


def shell_join(argv: Sequence[str]) -> str:
    return " ".join(quote_arg(a) for a in argv)


class Stream(ABC):
    """A long-running remote command spoken to in lines: stdin in, stdout out."""

    @abstractmethod
    def send_bytes(self, data: bytes) -> None: ...

    def send_line(self, text: str) -> None:
        self.send_bytes((text + "\n").encode())

    @abstractmethod
    def read_line(self, timeout: float) -> str:
        """The next stdout line ('' when the command has ended)."""

    @abstractmethod
    def close(self) -> int | None:
        """Close stdin, wait (bounded) for the exit status."""

    @abstractmethod
    def stderr(self) -> str:
        """The last of what the command wrote on stderr."""


class Transport(ABC):
    board: str
    forwards_unix = False  # connect_unix can reach a board's Unix socket

    @abstractmethod
    def run(self, argv: Sequence[str] | str, *, timeout: float | None = None,
            input: bytes | None = None) -> RunResult:
        """Run a command (an argv list, or a shell string built with shell_join)."""

    @abstractmethod
    def start(self, command: str) -> Stream:
        """Start a shell command (built with shell_join) to exchange lines with."""

    def connect_unix(self, path: str) -> Stream | None:
        """A line stream to a Unix socket on the board, if this transport can reach one
        without starting a process there (ssh: stream-local forwarding); else None."""
        return None

    @abstractmethod
    def put(self, data: Path | bytes, remote: str, progress: Progress | None = None) -> int:
        """Write a local file's content (or DATA itself, bytes) to a remote path (``~/``
        allowed); returns bytes sent."""

    @abstractmethod
    def close(self) -> None: ...

    def size(self, path: str) -> int | None:
        """The size of a remote file, None if there is none."""
        r = self.run(["stat", "-c", "%s", path])
        return int(r.stdout.strip()) if r.exit_code == 0 and r.stdout.strip().isdigit() \
            else None

    def mkdir(self, path: str) -> None:
        """mkdir -p PATH (absolute, or ``~/``)."""
        self.check(["mkdir", "-p", path])

    def check(self, argv: Sequence[str] | str, *, timeout: float | None = None,
              input: bytes | None = None) -> RunResult:
        r = self.run(argv, timeout=timeout, input=input)
        if r.exit_code != 0:
            raise RemoteFailure(self.board, r.command, r.exit_code, r.stderr)
        return r

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_transport(board, *, accept_new_host_key: bool = False) -> Transport:
    """The transport a board's inventory entry asks for."""
    if board.transport == "local":
        from .local import LocalTransport

        return LocalTransport(board.name)
    from .ssh import SshTransport

    return SshTransport(board, accept_new_host_key=accept_new_host_key)
