"""One connection of the serve endpoint, read and written at memcpy speed with bounded memory.

``Conn`` reads request lines from a stream socket into a buffer that never grows past the
line limit (plus one receive), reads the raw bytes of binary frames straight into the arrays
they fill (``recv_into``, no intermediate bytes objects), writes answers with ``sendmsg`` (the
header line and every output buffer in one call, no join), and on a Unix socket collects file
descriptors passed with SCM_RIGHTS (shared-memory regions, see shm.py). Stdlib only.
"""

from __future__ import annotations

import array
import os
import socket
from typing import Sequence

CHUNK = 1 << 16
MAX_FDS = 4           # descriptors one message may carry; more are closed and refused


class NoDelay:
    """A TCP server mixin: every accepted connection sends small answers at once
    (TCP_NODELAY), not after Nagle's wait for the previous segment's ACK."""

    def get_request(self):
        sock, addr = super().get_request()  # type: ignore[misc]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr


class LineTooLong(Exception):
    """No newline within the limit: the stream cannot be resynchronised."""


class Closed(Exception):
    """The peer went away (EOF or a reset) before a whole line or frame arrived."""


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unix = sock.family == socket.AF_UNIX
        self.buf = bytearray()
        self.fds: list[int] = []        # received, not yet claimed (oldest first)
        self.fds_refused = 0
        self._scan = 0                  # buf[:_scan] holds no newline
        self._chunk: memoryview | None = None      # one receive buffer, made on first read

    # -- reading ---------------------------------------------------------------------------
    def _recv_into(self, view: memoryview) -> int:
        try:
            if not self.unix:
                return self.sock.recv_into(view)
            n, anc, flags, _ = self.sock.recvmsg_into([view], socket.CMSG_SPACE(
                MAX_FDS * array.array("i").itemsize))
        except (ConnectionResetError, BrokenPipeError):
            return 0
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                for fd in fds:
                    if len(self.fds) < MAX_FDS:
                        self.fds.append(fd)
                    else:
                        os.close(fd)
                        self.fds_refused += 1
        if flags & socket.MSG_CTRUNC:
            self.fds_refused += 1
        return n

    def read_line(self, limit: int) -> bytes | None:
        """The next line without its newline; None at a clean EOF between lines. Raises
        LineTooLong once ``limit`` bytes hold no newline (nothing more is read), Closed on EOF
        mid-line."""
        while True:
            end = self.buf.find(b"\n", self._scan)
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                self._scan = 0
                return line
            self._scan = len(self.buf)
            if len(self.buf) >= limit:
                raise LineTooLong(limit)
            if self._chunk is None:
                self._chunk = memoryview(bytearray(CHUNK))
            n = self._recv_into(self._chunk[:min(CHUNK, limit - len(self.buf) + 1)])
            if n == 0:
                if self.buf:
                    raise Closed("the connection closed mid-line")
                return None
            self.buf += self._chunk[:n]

    def read_into(self, view: memoryview) -> None:
        """Fill VIEW (a writable byte view) exactly: buffered bytes first, then from the
        socket straight into it."""
        got = min(len(self.buf), len(view))
        if got:
            view[:got] = self.buf[:got]
            del self.buf[:got]
        while got < len(view):
            n = self._recv_into(view[got:])
            if n == 0:
                raise Closed("the connection closed mid-frame")
            got += n

    def discard(self, n: int) -> None:
        """Read and drop N bytes (a refused frame whose length is known and within limits)."""
        scratch = memoryview(bytearray(min(CHUNK, max(n, 1))))
        while n > 0:
            k = min(n, len(scratch))
            self.read_into(scratch[:k])
            n -= k

    def take_fd(self) -> int | None:
        return self.fds.pop(0) if self.fds else None

    # -- writing ---------------------------------------------------------------------------
    def send(self, parts: Sequence[bytes | memoryview]) -> bool:
        """Write every part in order (sendmsg, partial writes continued). False if the peer
        is gone."""
        views = [v for v in (memoryview(p).cast("B") for p in parts) if v.nbytes]
        try:
            while views:
                n = self.sock.sendmsg(views[:64])
                while n and views:
                    if n >= len(views[0]):
                        n -= len(views[0])
                        views.pop(0)
                    else:
                        views[0] = views[0][n:]
                        n = 0
            return True
        except OSError:
            return False

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()
