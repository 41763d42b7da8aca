"""A small client for apps on the board that talk to ``edgedeploy-agent serve``.

    from edgedeploy.device.client import Client
    with Client(socket="/tmp/edgedeploy.sock") as c:      # or Client(port=8765)
        p = c.predict("digits", x)                        # x: one array, or a list per input
        p.outputs[0].argmax(), p.version

One connection, requests answered in order; not shared between threads (make one per thread).
Errors from the endpoint raise the same EdgeDeployError subclass the agent raised.

Waiting for an answer, the client first polls the socket without sleeping for up to
``spin_ms`` (default 2 ms), then blocks: a thread that sleeps through a ~0.2 ms inference
costs ~0.07 ms more to wake (measured on a 2-core host: round trip over a 167 µs server 0.28
ms blocking, 0.21 ms polling). ``spin_ms=0`` never polls (less CPU while waiting).
"""

from __future__ import annotations

import json
import socket as _socket
import time
from dataclasses import dataclass
from typing import Any

from ..errors import EdgeDeployError, EnvironmentProblem, from_message
from . import protocol


@dataclass
class Prediction:
    model: str
    version: str
    outputs: list  # float32 numpy arrays, dequantized
    latency_ms: float


class Client:
    def __init__(self, socket: str | None = None, port: int | None = None,
                 timeout: float = 30.0, spin_ms: float = 2.0) -> None:
        if (socket is None) == (port is None):
            raise ValueError("give socket=PATH or port=N")
        try:
            if socket is not None:
                self._sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                self._sock.settimeout(timeout)
                self._sock.connect(socket)
            else:
                self._sock = _socket.create_connection(("127.0.0.1", port), timeout=timeout)
                self._sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise EnvironmentProblem(f"no edgedeploy endpoint at {socket or port} ({exc})",
                                     hint="start it with `edgedeploy-agent serve`") from exc
        self._timeout = timeout
        self._spin_ns = int(spin_ms * 1e6)
        self._buf = bytearray()
        self._next_id = 0

    def call(self, request: dict, blobs: list | None = None) -> dict:
        try:
            self._sock.sendall(b"".join([json.dumps(request).encode(), b"\n", *(blobs or [])]))
            while (end := self._buf.find(b"\n")) < 0:
                self._fill()
        except OSError as exc:
            raise EnvironmentProblem(f"edgedeploy endpoint connection failed ({exc})") from exc
        line = bytes(self._buf[:end])
        del self._buf[:end + 1]
        reply = json.loads(line)
        if not reply.get("ok"):
            raise from_message(reply.get("code", "error"), reply.get("message", "failed"))
        return reply

    def predict(self, model: str, inputs: Any) -> Prediction:
        """Run MODEL on INPUTS (one array, or a list with one per input) — binary frames."""
        arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        self._next_id += 1
        heads, blobs = [], []
        for a in arrays:
            h, b = protocol.array_header(a)
            heads.append(h)
            blobs.append(b)
        req = {"op": "predict", "model": model, "id": self._next_id, "binary": True,
               "inputs": heads}
        reply = self.call(req, blobs)
        raws = [self._read_exact(o["nbytes"]) for o in reply["outputs"]]
        return Prediction(reply["model"], reply["version"],
                          [protocol.array_from_raw(o, r) for o, r in zip(reply["outputs"], raws)],
                          reply["latency_ms"])

    def _fill(self) -> None:
        """More bytes into the buffer: poll without sleeping for up to spin_ms, then block."""
        data = None
        if self._spin_ns:
            deadline = time.perf_counter_ns() + self._spin_ns
            self._sock.settimeout(0.0)
            try:
                while data is None and time.perf_counter_ns() < deadline:
                    try:
                        data = self._sock.recv(1 << 16)
                    except BlockingIOError:
                        pass
            finally:
                self._sock.settimeout(self._timeout)
        if data is None:
            data = self._sock.recv(1 << 16)
        if not data:
            raise EnvironmentProblem("edgedeploy endpoint closed the connection")
        self._buf += data

    def _read_exact(self, n: int) -> bytes:
        try:
            while len(self._buf) < n:
                self._fill()
        except OSError as exc:
            raise EnvironmentProblem(f"edgedeploy endpoint connection failed ({exc})") from exc
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def health(self) -> dict:
        return self.call({"op": "health"})

    def metrics(self) -> dict:
        return self.call({"op": "metrics"})

    def reload(self) -> dict:
        return self.call({"op": "reload"})

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Client", "Prediction", "EdgeDeployError"]
