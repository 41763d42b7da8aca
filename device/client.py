"""A small client for apps on the board that talk to ``edgedeploy-agent serve`` (NDJSON).

    from edgedeploy.device.client import Client
    with Client(socket="/tmp/edgedeploy.sock") as c:      # or Client(port=8765)
        p = c.predict("digits", x)                        # x: one array, or a list per input
        p.outputs[0].argmax(), p.version

One connection, requests answered in order; not shared between threads (make one per thread).
Errors from the endpoint raise the same EdgeDeployError subclass the agent raised. Apps in
other languages: the same socket (see serve.py), or HTTP with the Open Inference Protocol
(``serve --http-port``, see oip.py).

How tensors travel: on a Unix socket, inputs of ``shm_threshold`` bytes or more (64 KiB) go
through a shared-memory region (a sealed memfd passed once, see shm.py), so a 768 KiB image
costs one memcpy instead of a trip through the socket; outputs that large come back the same
way from the second call on (the first tells their size). Smaller tensors, and everything over
TCP, go as binary frames written with one ``sendmsg`` and read straight into the output
arrays.

Waiting for an answer adapts to the model and the machine (hybrid polling, as Linux does for
fast devices): the client learns each model's invoke time from the answers (the server's own
clock). Answers expected within 1 ms are polled for without sleeping until 0.2 ms past the
expected time, then the client blocks (a thread that sleeps through a ~0.2 ms inference costs
~0.07 ms more to wake); longer ones sleep (select) until shortly before they are due, poll a
short window, then block — so a 5 ms model costs no busy CPU for most of its invoke (on a
2-core board that CPU is the interpreter's). When polls keep missing (a machine busy with other
work, where a polling client only takes the core the server needs: measured +0.7 ms per answer
under a load average of 7 on 2 cores), the client stops polling for that model and only blocks,
trying a poll again every 16th call. ``spin_ms=0`` never polls; ``spin_ms=X`` polls up to X ms
every time.
"""

from __future__ import annotations

import array
import json
import select
import socket as _socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import EdgeDeployError, EnvironmentProblem, InputError, from_message
from . import tensors
from .wire import Closed, Conn, LineTooLong

REPLY_LINE_LIMIT = 64 << 20
SPIN_BELOW_NS = 1_000_000      # answers expected sooner than this: poll the whole wait
TRANSPORT_NS = 50_000         # request + answer through a local socket, small tensors
WINDOW_NS = 300_000            # longer answers: poll this long around the expected time
PROBE_EVERY = 16              # while polling doesn't pay, still try it every 16th call


@dataclass
class Prediction:
    model: str
    version: str
    outputs: list  # float32 numpy arrays, dequantized
    latency_ms: float


class Client:
    def __init__(self, socket: str | None = None, port: int | None = None,
                 timeout: float = 30.0, spin_ms: float | None = None,
                 shm: bool | str = "auto", shm_threshold: int = 64 * 1024) -> None:
        if (socket is None) == (port is None):
            raise InputError("give socket=PATH or port=N")
        try:
            if socket is not None:
                sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(socket)
            else:
                sock = _socket.create_connection(("127.0.0.1", port), timeout=timeout)
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise EnvironmentProblem(f"no edgedeploy endpoint at {socket or port} ({exc})",
                                     hint="start it with `edgedeploy-agent serve`") from exc
        # blocking socket with kernel-side timeouts: one syscall per read (a Python-level
        # timeout would poll() before every recv)
        sock.settimeout(None)
        tv = struct.pack("ll", int(timeout), int((timeout % 1) * 1e6))
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO, tv)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, tv)
        self._sock = sock
        self._conn = Conn(sock)
        self._timeout = timeout
        self._spin_ns = None if spin_ms is None else int(spin_ms * 1e6)
        self._shm = (shm is True or shm == "auto") and socket is not None
        self._shm_threshold = 0 if shm is True else shm_threshold
        self._region: Any = None        # shm.ClientRegion
        self._regions_made = 0
        self._expect_ns: dict[str, float] = {}     # per model: invoke time + transport
        self._hits: dict[str, float] = {}          # per model: share of polls that caught it
        self._calls: dict[str, int] = {}
        self._out_bytes: dict[str, int] = {}
        self._next_id = 0

    # -- requests ----------------------------------------------------------------------------
    def call(self, request: dict, blobs: list | None = None, *, fds: list[int] | None = None,
             key: str = "") -> dict:
        """Send one request (and its raw frames); the answer's header line, parsed."""
        line = json.dumps(request).encode() + b"\n"
        try:
            if fds:
                self._sock.sendmsg([line], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                             array.array("i", fds))])
            else:
                self._conn_send([line, *(blobs or [])])
            self._await(key)
            raw = self._conn.read_line(REPLY_LINE_LIMIT)
        except (OSError, Closed, LineTooLong) as exc:
            raise EnvironmentProblem(f"edgedeploy endpoint connection failed ({exc})") from exc
        if raw is None:
            raise EnvironmentProblem("edgedeploy endpoint closed the connection")
        reply = json.loads(raw)
        if key and isinstance(reply.get("latency_ms"), (int, float)):
            # what the answer takes is the model's invoke (the server's own clock) plus the
            # transport; learn the invoke, so a loaded CPU doesn't make the client spin longer
            seen = reply["latency_ms"] * 1e6 + TRANSPORT_NS
            old = self._expect_ns.get(key)
            self._expect_ns[key] = seen if old is None else 0.8 * old + 0.2 * seen
        if not reply.get("ok"):
            raise from_message(reply.get("code", "error"), reply.get("message", "failed"))
        return reply

    def _conn_send(self, parts: list) -> None:
        if not self._conn.send(parts):
            raise OSError("the endpoint closed the connection")

    def predict(self, model: str, inputs: Any) -> Prediction:
        """Run MODEL on INPUTS (one array, or a list with one per input)."""
        arrays = [np.ascontiguousarray(a) for a in
                  (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
        self._next_id += 1
        req: dict = {"op": "predict", "model": model, "id": self._next_id, "binary": True}
        blobs: list = []
        in_bytes = sum(a.nbytes for a in arrays)
        out_bytes = self._out_bytes.get(model, 0)
        use_in = self._shm and in_bytes >= self._shm_threshold
        use_out = self._shm and out_bytes >= max(self._shm_threshold, 1)
        if use_in or use_out:
            region = self._region_for(_aligned(in_bytes, arrays) if use_in else 0,
                                      out_bytes if use_out else 0)
        heads, at = [], 0
        for a in arrays:
            if use_in:
                at = -(-at // 64) * 64
                heads.append(region.write(at, a))
                at += a.nbytes
            else:
                h, raw = tensors.header(a)
                heads.append(h)
                blobs.append(raw)
        req["inputs"] = heads
        if use_out:
            start = -(-at // 64) * 64
            req["output_shm"] = {"region": region.name, "offset": start,
                                 "nbytes": region.size - start}
        reply = self.call(req, blobs, key=model)
        outs = []
        try:
            for o in reply["outputs"]:
                if "shm" in o:
                    outs.append(self._region.read(o))
                else:
                    a = np.empty(o["shape"], np.dtype(o["dtype"]))
                    if a.nbytes:
                        self._conn.read_into(a.data.cast("B"))
                    outs.append(a)
        except (OSError, Closed) as exc:
            raise EnvironmentProblem(f"edgedeploy endpoint connection failed ({exc})") from exc
        self._out_bytes[model] = sum(o.nbytes for o in outs) + 64 * len(outs)
        return Prediction(reply["model"], reply["version"], outs, reply["latency_ms"])

    def _region_for(self, in_bytes: int, out_bytes: int):
        from .shm import ClientRegion

        need = in_bytes + out_bytes + 64
        if self._region is not None and self._region.size >= need:
            return self._region
        if self._region is not None:
            self.call({"op": "shm_unregister", "region": self._region.name})
            self._region.close()
            self._region = None
        self._regions_made += 1
        region = ClientRegion(f"r{self._regions_made}", -(-need // (1 << 20)) * (1 << 20))
        try:
            self.call({"op": "shm_register", "region": region.name, "size": region.size},
                      fds=[region.fd])
        except EdgeDeployError:
            region.close()
            raise
        self._region = region
        return region

    # -- waiting -----------------------------------------------------------------------------
    def _ready(self) -> bool:
        try:
            self._sock.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT)
            return True      # bytes, or EOF: either way a read won't block
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _spin(self, until_ns: int) -> bool:
        """Poll until UNTIL_NS (no sched_yield: on a busy machine a yield hands the core to
        another task for a whole time slice, measured at +2 ms per answer)."""
        while time.perf_counter_ns() < until_ns:
            if self._ready():
                return True
        return False

    def _await(self, key: str) -> None:
        """Return once the answer's first bytes are here (or the socket would not block)."""
        if self._conn.buf:
            return
        start = time.perf_counter_ns()
        if self._spin_ns is not None:
            if self._spin_ns:
                self._spin(start + self._spin_ns)
            return
        expect = self._expect_ns.get(key)
        self._calls[key] = n = self._calls.get(key, 0) + 1
        if self._hits.get(key, 1.0) < 0.5 and n % PROBE_EVERY:
            return                               # polling hasn't paid lately: just block
        if expect is None:
            hit = self._spin(start + 300_000)    # learn: a short poll, then block
        elif expect <= SPIN_BELOW_NS:
            hit = self._spin(start + int(expect + 200_000))
        else:
            window = min(WINDOW_NS, 0.1 * expect)
            hit = bool(select.select([self._sock], [], [], (expect - window) / 1e9)[0]) \
                or self._spin(time.perf_counter_ns() + int(2 * window))
        self._hits[key] = 0.8 * self._hits.get(key, 1.0) + 0.2 * hit

    # -- the rest of the protocol -------------------------------------------------------------
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
        if self._region is not None:
            self._region.close()
            self._region = None
        self._conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _aligned(total: int, arrays: list) -> int:
    return total + 64 * len(arrays)


__all__ = ["Client", "Prediction", "EdgeDeployError"]
