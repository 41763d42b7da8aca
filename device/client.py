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

Zero copy: ``x = c.shared_like(frame)`` gives an array that lives in shared memory; fill it in
place each time (``x[...] = frame``, or decode straight into it) and ``c.predict(model, x)``
sends only a header line — the server's set_tensor reads the bytes where the app put them.

Each model's request line is laid out once (a "plan": headers, offsets, the region) and reused
while the inputs keep their shapes and dtypes, so a call writes its id and its bytes only.

Waiting for an answer adapts to the model and the machine (hybrid polling, as Linux does for
fast devices): the client learns, per model, when answers arrive after the request went out
(its own clock). Answers expected within 1 ms are polled for without sleeping until a little
past the expected time, then the client blocks (a thread that sleeps through a ~0.2 ms
inference costs ~0.07 ms more to wake, ~0.1 ms on a VM); longer ones sleep (select) until
shortly before they are due, poll a short window, then block — so a 5 ms model costs no busy
CPU for most of its invoke (on a 2-core board that CPU is the interpreter's). When polls keep
missing (a machine busy with other work, where a polling client only takes the core the server
needs: measured +0.7 ms per answer under a load average of 7 on 2 cores), the client stops
polling for that model and only blocks, trying a poll again every 16th call. ``spin_ms=0``
never polls; ``spin_ms=X`` polls up to X ms every time.
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
SLACK_NS = 200_000             # poll this long past the expected arrival (at least)
WINDOW_NS = 300_000            # longer answers: poll this long around the expected time
PROBE_EVERY = 16              # while polling doesn't pay, still try it every 16th call
MAX_SHARED = 15               # shared_like arrays per client: the server's 16 regions, less one


@dataclass
class _Plan:
    """One model's request layout, kept while its inputs keep their shapes and dtypes (and the
    same shared arrays): the request line up to its id, and where each input's bytes go."""
    sig: list            # per input: (shape, dtype), or the shared array itself
    head: bytes          # b'{"op": "predict", ..., "id": '
    where: list          # per input: FRAME, SHARED, or an offset in the region (a copy)
    region: Any          # the region copies and outputs use, or None
    out_bytes: int       # what the plan expected the outputs to take

    def fits(self, arrays, shared: dict) -> bool:
        if len(arrays) != len(self.sig):
            return False
        for a, s in zip(arrays, self.sig):
            if type(s) is tuple:
                if (type(a) is not np.ndarray or a.shape != s[0] or a.dtype != s[1]
                        or not a.flags.c_contiguous or (shared and id(a) in shared)):
                    return False
            elif a is not s:
                return False
        return True


FRAME, SHARED = -1, -2


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
        self._expect_ns: dict[str, float] = {}     # per model: when answers arrive (ns)
        self._hits: dict[str, float] = {}          # per model: share of polls that caught it
        self._calls: dict[str, int] = {}
        self._out_bytes: dict[str, int] = {}
        self._shared: dict[int, tuple] = {}        # id(array) → (array, its input header)
        self._shared_regions: list = []
        self._plans: dict[str, _Plan] = {}
        self._copy_region_refused = False
        self._next_id = 0

    # -- requests ----------------------------------------------------------------------------
    def call(self, request: dict, blobs: list | None = None, *,
             fds: list[int] | None = None) -> dict:
        """Send one request (and its raw frames); the answer's header line, parsed."""
        line = json.dumps(request).encode() + b"\n"
        if fds:
            try:
                self._sock.sendmsg([line], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                             array.array("i", fds))])
            except OSError as exc:
                raise EnvironmentProblem(f"edgedeploy endpoint connection failed ({exc})") \
                    from exc
            return self._answer("", 0)
        return self._roundtrip([line, *(blobs or [])], "")

    def _roundtrip(self, parts: list, key: str, rid: int | None = None) -> dict:
        try:
            self._conn_send(parts)
        except OSError as exc:
            raise EnvironmentProblem(f"edgedeploy endpoint connection failed ({exc})") from exc
        return self._answer(key, time.perf_counter_ns(), rid)

    def _answer(self, key: str, sent: int, rid: int | None = None) -> dict:
        """Wait for and parse the answer's header line; learn when answers for KEY come."""
        try:
            caught = self._await(key, sent) if key else 0
            raw = self._conn.read_line(REPLY_LINE_LIMIT)
        except (OSError, Closed, LineTooLong) as exc:
            raise EnvironmentProblem(f"edgedeploy endpoint connection failed ({exc})") from exc
        if raw is None:
            raise EnvironmentProblem("edgedeploy endpoint closed the connection")
        if key:
            # when this answer was there: seen by a poll, or (blocked) at the latest now --
            # an overestimate by one wake-up, which the next polls correct
            seen = (caught or time.perf_counter_ns()) - sent
            old = self._expect_ns.get(key)
            self._expect_ns[key] = seen if old is None else 0.8 * old + 0.2 * seen
        reply = json.loads(raw)
        if rid is not None and reply.get("id") != rid:
            # an earlier call was cut off between its request and its answer (a signal, a
            # timeout): what comes now answers something else, and so would everything after
            self.close()
            raise EnvironmentProblem(f"the endpoint answered request {reply.get('id')} where "
                                     f"{rid} was expected (an earlier call was interrupted): "
                                     f"connection closed", hint="make a new Client")
        if not reply.get("ok"):
            raise from_message(reply.get("code", "error"), reply.get("message", "failed"))
        return reply

    def _conn_send(self, parts: list) -> None:
        if not self._conn.send(parts):
            raise OSError("the endpoint closed the connection")

    def predict(self, model: str, inputs: Any) -> Prediction:
        """Run MODEL on INPUTS (one array, or a list with one per input)."""
        arrays = inputs if isinstance(inputs, (list, tuple)) else (inputs,)
        plan = self._plans.get(model)
        if plan is None or not plan.fits(arrays, self._shared):
            arrays = [a if self._shared_head(a) is not None else np.ascontiguousarray(a)
                      for a in arrays]
            plan = self._plan(model, arrays)
        self._next_id += 1
        parts: list = [plan.head + str(self._next_id).encode() + b"}\n"]
        for a, at in zip(arrays, plan.where):
            if at == FRAME:
                if a.nbytes:
                    parts.append(a.data.cast("B"))
            elif at >= 0 and a.nbytes:
                plan.region.mm[at:at + a.nbytes] = a.data.cast("B")
        reply = self._roundtrip(parts, model, self._next_id)
        outs = []
        try:
            for o in reply["outputs"]:
                if "shm" in o:
                    outs.append(self._region.read(o))
                else:
                    a = np.empty(o["shape"], o["dtype"])
                    if a.nbytes:
                        self._conn.read_into(a.data.cast("B"))
                    outs.append(a)
        except (OSError, Closed) as exc:
            raise EnvironmentProblem(f"edgedeploy endpoint connection failed ({exc})") from exc
        out_bytes = sum(o.nbytes for o in outs) + 64 * len(outs)
        if out_bytes != plan.out_bytes:
            self._out_bytes[model] = out_bytes
            self._plans.pop(model, None)    # lay the next request out for these outputs
        return Prediction(reply["model"], reply["version"], outs, reply["latency_ms"])

    def _plan(self, model: str, arrays: list) -> _Plan:
        """Lay out MODEL's requests for ARRAYS (contiguous, or shared_like's arrays)."""
        sig: list = []
        heads: list = []
        where: list = []
        copies = 0
        for a in arrays:
            h = self._shared_head(a)
            if h is not None:
                sig.append(a)
                heads.append(h)
                where.append(SHARED)
            else:
                sig.append((a.shape, a.dtype))
                heads.append({"dtype": str(a.dtype), "shape": list(a.shape)})
                where.append(FRAME)
                copies += a.nbytes
        out_bytes = self._out_bytes.get(model, 0)
        use_in = self._shm and copies >= self._shm_threshold and copies > 0
        use_out = self._shm and out_bytes >= max(self._shm_threshold, 1)
        region = None
        req: dict = {"op": "predict", "model": model, "binary": True, "inputs": heads}
        if (use_in or use_out) and not self._copy_region_refused:
            try:
                region = self._region_for(copies + 64 * len(arrays) if use_in else 0,
                                          out_bytes if use_out else 0)
            except InputError:
                # the server takes no more regions (an older one takes 4): frames instead
                self._copy_region_refused = True
                use_in = use_out = False
        else:
            use_in = use_out = False
        if region is not None:
            at = 0
            for i, a in enumerate(arrays):
                if where[i] == FRAME and use_in:
                    at = -(-at // 64) * 64
                    where[i] = at
                    heads[i].update(shm=region.name, offset=at, nbytes=a.nbytes)
                    at += a.nbytes
            if use_out:
                start = -(-at // 64) * 64
                req["output_shm"] = {"region": region.name, "offset": start,
                                     "nbytes": region.size - start}
        for i, a in enumerate(arrays):
            if where[i] == FRAME:
                heads[i]["nbytes"] = a.nbytes
        head = json.dumps(req)[:-1].encode() + b', "id": '
        plan = _Plan(sig, head, where, region, out_bytes)
        self._plans[model] = plan
        return plan

    def shared_like(self, a: Any) -> np.ndarray:
        """An array in shared memory with A's shape, dtype and values (Unix socket only).
        Fill it in place (``x[...] = frame``, or decode straight into it) and pass it to
        ``predict``: its bytes then reach the server without being copied on this side. Each
        call makes one region: at most ``MAX_SHARED`` per client (the server takes
        ``shm.MAX_REGIONS`` per connection and one is kept for copies and outputs);
        ``release(array)`` gives one back. The array stays valid until then or ``close``."""
        if not self._shm:
            raise InputError("shared_like needs a Unix socket endpoint (Client(socket=...)) "
                             "with shm enabled")
        a = np.asarray(a)
        if str(a.dtype) not in tensors.DTYPES:
            raise InputError(f"shared_like: dtype {a.dtype} can't travel; one of "
                             f"{', '.join(tensors.DTYPES)}")
        if len(self._shared_regions) >= MAX_SHARED:
            raise InputError(f"shared_like: at most {MAX_SHARED} shared arrays per client",
                             hint="release(array) one you no longer use")
        region = self._register("s", max(-(-a.nbytes // 4096) * 4096, 4096))
        self._shared_regions.append(region)
        view = np.frombuffer(region.mm, dtype=a.dtype, count=a.size).reshape(a.shape)
        view[...] = a
        self._shared[id(view)] = (view, {"dtype": str(a.dtype), "shape": list(a.shape),
                                         "shm": region.name, "offset": 0, "nbytes": a.nbytes})
        return view

    def _shared_head(self, a: Any) -> dict | None:
        """The input header of an array shared_like made (None: any other object)."""
        entry = self._shared.get(id(a))
        return entry[1] if entry is not None and entry[0] is a else None

    def release(self, array: np.ndarray) -> None:
        """Give back the region of an array shared_like made (the array must not be used
        afterwards)."""
        h = self._shared_head(array)
        if h is None:
            raise InputError("release: not an array this client's shared_like made")
        name = h["shm"]
        del self._shared[id(array)]
        self._plans.clear()
        self._copy_region_refused = False
        self.call({"op": "shm_unregister", "region": name})
        for r in [r for r in self._shared_regions if r.name == name]:
            self._shared_regions.remove(r)
            r.close()

    def _region_for(self, in_bytes: int, out_bytes: int):
        need = in_bytes + out_bytes + 64
        if self._region is not None and self._region.size >= need:
            return self._region
        if self._region is not None:
            self._plans.clear()
            self.call({"op": "shm_unregister", "region": self._region.name})
            self._region.close()
            self._region = None
        self._region = self._register("r", -(-need // (1 << 20)) * (1 << 20))
        return self._region

    def _register(self, prefix: str, size: int):
        """A new region of SIZE bytes, registered with the server (closed if refused)."""
        from .shm import ClientRegion

        self._regions_made += 1
        region = ClientRegion(f"{prefix}{self._regions_made}", size)
        try:
            self.call({"op": "shm_register", "region": region.name, "size": region.size},
                      fds=[region.fd])
        except EdgeDeployError:
            region.close()
            raise
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

    def _spin(self, until_ns: int) -> int:
        """Poll until UNTIL_NS (no sched_yield: on a busy machine a yield hands the core to
        another task for a whole time slice, measured at +2 ms per answer). The time the answer
        was seen, or 0."""
        clock, ready = time.perf_counter_ns, self._ready
        while (now := clock()) < until_ns:
            if ready():
                return now
        return 0

    def _await(self, key: str, start: int) -> int:
        """Return once the answer's first bytes are here or polling gave up (the read that
        follows blocks). The time a poll saw the answer, or 0."""
        if self._conn.buf:
            return start
        if self._spin_ns is not None:
            return self._spin(start + self._spin_ns) if self._spin_ns else 0
        expect = self._expect_ns.get(key)
        self._calls[key] = n = self._calls.get(key, 0) + 1
        if self._hits.get(key, 1.0) < 0.5 and n % PROBE_EVERY:
            return 0                             # polling hasn't paid lately: just block
        if expect is None:
            seen = self._spin(start + 300_000)   # learn: a short poll, then block
        elif expect <= SPIN_BELOW_NS:
            seen = self._spin(start + int(expect + max(SLACK_NS, expect / 2)))
        else:
            window = min(WINDOW_NS, 0.1 * expect)
            if select.select([self._sock], [], [], (expect - window) / 1e9)[0]:
                seen = time.perf_counter_ns()
            else:
                seen = self._spin(time.perf_counter_ns() + int(2 * window))
        self._hits[key] = 0.8 * self._hits.get(key, 1.0) + 0.2 * bool(seen)
        return seen

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
        self._shared.clear()
        for r in self._shared_regions:
            r.close()
        self._shared_regions.clear()
        self._conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Client", "Prediction", "EdgeDeployError"]
