"""On-device inference endpoint for local apps (``edgedeploy-agent serve``): NDJSON on a Unix
socket or TCP 127.0.0.1 (the wire format below), and optionally HTTP speaking the Open Inference
Protocol (KServe v2, see oip.py) with Prometheus metrics, both from one process and one set of
interpreters.

Hot swap: a watcher thread reads each model's ``current.json`` every ``poll`` seconds. When it
names a new version, it is first probed in a child process (device/probe.py: a model that
crashes the runtime kills the child, not serve), then the new interpreter is loaded (its sha256
checked first) *beside* the old one and put in place with one reference assignment; a request already holding the old slot
finishes on it. If the new version fails to load, the old one keeps serving and ``health``
reports why. One interpreter per model, one lock per interpreter (they are not thread-safe).

NDJSON wire format, one JSON object per line each way; a connection carries any number of
requests, answered in order::

    → {"op": "predict", "model": "digits", "id": 7,
       "inputs": [{"dtype": "float32", "shape": [1, 32, 32, 1], "data": "<base64 raw bytes>"}]}
       (float inputs for a quantized tensor are quantized with its scale/zero point)
    ← {"schema": 1, "ok": true, "kind": "predict", "id": 7, "model": "digits",
       "version": "3f2a…", "outputs": [{"dtype": "float32", "shape": [1, 10], "data": "…"}],
       "latency_ms": 0.21}         # outputs are dequantized to float32; latency: the invoke
    Binary frames: add ``"binary": true`` and give each array as {"dtype", "shape", "nbytes"}
    without "data"; the raw bytes of every array follow the request line back to back. The
    answer carries its outputs the same way: header line, then the raw bytes.
    Shared memory (Unix socket): ``shm_register`` a sealed memfd, then name slices of it as
    inputs and for outputs (see shm.py) — large tensors then never cross the socket.
    → {"op": "health"}   ← {"kind": "health", "models": {"digits": {"version": ..., "loaded_at": ...,
                             "last_error": null | "..."}}, "uptime_s": ...}
    → {"op": "metrics"}  ← {"kind": "metrics", "requests": N, "errors": N,
                             "latency_ms": {"p50", "p90", "p99", "count"},
                             "models": {"digits": {"requests", "errors", "swaps"}}}
    → {"op": "reload"}   ← {"kind": "reload", "models": {...as health...}}

Prepared requests: a predict whose inputs are in shared memory or binary frames, and whose line
ends with its integer id (``…, "id": 7}``, as Client writes it), is remembered per connection
once it ran; the same line with another id then runs without being parsed and validated again:
its frames are read with the sizes checked the first time, as long as the model's slot is the
same (a hot swap means parsing and checking again), and the regions it names are the same
objects (any shm_register/shm_unregister forgets every prepared request). At most ``PREPARED_MAX`` per connection,
of lines up to ``PREPARED_LINE`` bytes.

Limits (hardening): a request line is at most ``BASE_LINE`` (64 KiB) plus the base64 size of
the largest model's inputs at 8 bytes per element; the raw bytes a binary request declares are
at most what the named model's inputs can hold (8 bytes per element). Every malformed request
gets an error answer. The connection stays open when the stream is still in step (a bad JSON
line, a bad shape, a refused frame whose declared length was read and dropped) and is closed
right after the answer when it isn't (a line past the limit, a frame length that is missing or
past the cap). At most ``max_connections`` clients at once; the next one gets a "busy" answer.

(Past 400 lines: the NDJSON endpoint and the hot swap, which share the model slots; framing is
wire.py's, shared memory shm.py's, tensors tensors.py's, HTTP oip.py's, metrics metrics.py's.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import EdgeDeployError, HashMismatch, InputError, NotFound
from . import protocol, tensors
from .evaluate import dequantize, quantize
from .metrics import Metrics
from .shm import Regions
from .wire import Closed, Conn, LineTooLong, NoDelay

BASE_LINE = 64 * 1024
MAX_INPUTS = 64
ID_MARK = b', "id": '   # how Client ends a request line: ..., "id": 7}
PREPARED_MAX = 8        # prepared requests per connection
PREPARED_LINE = 16384   # longest line kept as prepared (Client's: a few hundred bytes/input)
_ABSENT = object()      # a request without "output_shm"


@dataclass
class Prepared:
    """A validated predict, kept per connection (see Service._prepare)."""
    model: str
    arrays: list        # per input: a view into the connection's regions, or None (a frame)
    frames: list        # per input: (dtype, shape, nbytes) of its frame, or None (shared)
    slot: Any           # the Slot its frame sizes were checked against
    out_spec: Any
    binary: bool


@dataclass
class Slot:
    name: str
    version: str
    interp: Any
    inputs: list
    outputs: list
    loaded_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    shapes: list = field(default_factory=list)    # per input, as numpy reports a.shape
    dtypes: list = field(default_factory=list)
    caps: list = field(default_factory=list)      # per input: most bytes a request may carry

    def __post_init__(self) -> None:
        self.shapes = [tuple(int(s) for s in d["shape"]) for d in self.inputs]
        self.dtypes = [np.dtype(d["dtype"]) for d in self.inputs]
        self.caps = [tensors.count(s) * 8 for s in self.shapes]


class Registry:
    def __init__(self, store, runtime=None, threads: int = 1, only: list[str] | None = None):
        from .runtime import load_runtime

        self.store = store
        self.rt = load_runtime(runtime)
        self.threads = threads
        self.only = set(only) if only else None
        self.slots: dict[str, Slot] = {}
        self.last_error: dict[str, str | None] = {}
        self.failed: dict[str, str] = {}  # name → version that failed to load (not retried)
        self.failures: dict[str, int] = {}
        self.swaps: dict[str, int] = {}
        self.largest = 0  # bytes of the largest request any served model takes (see refresh)
        self._refresh_lock = threading.Lock()

    def _load(self, name: str, version: str) -> Slot:
        from .manifest import sha256_file
        from .runtime import make_interpreter

        m = self.store.manifest(name, version)
        path = self.store.version_dir(name, version) / m.file
        if sha256_file(path) != m.sha256:
            raise HashMismatch(f"model {name} version {version}: {m.file} differs from its "
                               f"manifest's sha256")
        from .probe import gate

        gate(path, m, runtime=self.rt.name, cache_dir=self.store.probe_cache,
             what=f"model {name} version {version}")
        interp = make_interpreter(str(path), num_threads=self.threads, runtime=self.rt)
        return Slot(name, version, interp, interp.get_input_details(),
                    interp.get_output_details(), time.time())

    def refresh(self) -> None:
        """Load whatever version became current; keep the old one if the new one fails."""
        with self._refresh_lock:
            for name in self.store.names():
                if self.only is not None and name not in self.only:
                    continue
                try:
                    want = self.store.pointer(name).current
                except EdgeDeployError as exc:
                    self.last_error[name] = str(exc)
                    continue
                have = self.slots.get(name)
                if not want or (have and have.version == want) or self.failed.get(name) == want:
                    continue
                try:
                    slot = self._load(name, want)
                except EdgeDeployError as exc:
                    self.failed[name] = want
                    self.failures[name] = self.failures.get(name, 0) + 1
                    self.last_error[name] = (f"version {want} failed to load, still serving "
                                             f"{have.version if have else 'nothing'}: {exc}")
                    continue
                self.slots[name] = slot  # the switch: one reference assignment
                self.largest = self.largest_request()
                self.failed.pop(name, None)
                self.last_error[name] = None
                self.swaps[name] = self.swaps.get(name, 0) + (1 if have else 0)

    def health(self) -> dict:
        names = set(self.slots) | set(self.last_error)
        return {n: {"version": self.slots[n].version if n in self.slots else None,
                    "loaded_at": self.slots[n].loaded_at if n in self.slots else None,
                    "last_error": self.last_error.get(n)} for n in sorted(names)}

    def slot(self, name: Any) -> Slot:
        slot = self.slots.get(name) if isinstance(name, str) else None
        if slot is None:
            raise NotFound(f"model {str(name)[:100]} is not being served",
                           hint=f"serving: {', '.join(sorted(self.slots)) or 'nothing'}")
        return slot

    def largest_request(self) -> int:
        """Bytes of the largest request any served model can take (8 bytes per element)."""
        return max((sum(s.caps) for s in list(self.slots.values())), default=0)

    def predict(self, name: str, arrays: list) -> tuple[str, list, float]:
        slot = self.slot(name)
        if len(arrays) != len(slot.inputs):
            raise InputError(f"model {name} takes {len(slot.inputs)} inputs, got {len(arrays)}")
        ready = []
        for d, shape, dtype, a in zip(slot.inputs, slot.shapes, slot.dtypes, arrays):
            if a.shape != shape:
                raise InputError(f"model {name}: input {d['name']} has shape {list(shape)}, "
                                 f"got {list(a.shape)}")
            if a.dtype != dtype:
                if a.dtype.kind != "f":
                    raise InputError(f"model {name}: input {d['name']} is {dtype}, got "
                                     f"{a.dtype} (send {dtype}, or float32 to be quantized)")
                a = quantize(a, d)
            ready.append(a)
        with slot.lock:
            t0 = time.perf_counter_ns()
            for d, a in zip(slot.inputs, ready):
                slot.interp.set_tensor(d["index"], a)
            slot.interp.invoke()
            outs = [dequantize(slot.interp.get_tensor(d["index"]), d) for d in slot.outputs]
            ms = (time.perf_counter_ns() - t0) / 1e6
        return slot.version, outs, ms


class _OutOfStep(InputError):
    """A refused request whose bytes can't be skipped: answer, then close the connection."""


class Service:
    """The NDJSON requests of one process; each connection brings its own Conn and Regions."""

    def __init__(self, registry: Registry, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.metrics = metrics or Metrics()
        self.started = time.time()

    def line_limit(self) -> int:
        return BASE_LINE + (4 * self.registry.largest + 2) // 3

    def handle(self, line: bytes, conn: Conn, regions: Regions) -> tuple[dict, list, bool]:
        """One request line (and the frames it announces) → (answer, raw output buffers,
        keep the connection)."""
        t0 = time.perf_counter_ns()
        model, invoke_ms, keep, rid = None, None, True, None
        blobs: list = []
        prepared = self._prepared(line, regions) if regions.prepared else None
        try:
            if prepared is not None:
                e, rid = prepared
                model = e.model
                msg, blobs, invoke_ms = self._run_prepared(e, rid, conn, regions)
            else:
                req = tensors.loads(line)
                if not isinstance(req, dict):
                    raise InputError("a request is a JSON object with an \"op\"")
                rid = req.get("id")
                if req.get("op") == "predict":
                    model = req.get("model") if isinstance(req.get("model"), str) else None
                    msg, blobs, invoke_ms = self._predict(req, conn, regions, line)
                elif req.get("op") == "metrics":
                    return protocol.ok("metrics", **self.metrics.snapshot(
                        self.registry.swaps)), [], True
                else:
                    msg = self._other(req, conn, regions)
        except EdgeDeployError as exc:
            keep = not isinstance(exc, _OutOfStep)
            self.metrics.record(model, False, (time.perf_counter_ns() - t0) / 1e6)
            return protocol.error(exc.code, str(exc), **({"id": rid} if rid is not None
                                                          else {})), [], keep
        self.metrics.record(model, True, (time.perf_counter_ns() - t0) / 1e6,
                            invoke_ms=invoke_ms)
        return msg, blobs, keep

    def _other(self, req: dict, conn: Conn, regions: Regions) -> dict:
        """The answer to a request that is neither predict nor metrics."""
        op = req.get("op")
        if op == "health":
            return protocol.ok("health", models=self.registry.health(),
                               uptime_s=round(time.time() - self.started, 3), pid=os.getpid())
        if op == "reload":
            self.registry.refresh()
            return protocol.ok("reload", models=self.registry.health())
        if op == "shm_register":
            r = regions.register(req.get("region"), req.get("size"), conn.take_fd())
            return protocol.ok("shm_register", region=r.name, size=r.size)
        if op == "shm_unregister":
            regions.unregister(req.get("region"))
            return protocol.ok("shm_unregister", region=req.get("region"))
        raise InputError(f"unknown op {str(op)[:40]!r}",
                         hint="predict, health, metrics, reload, shm_register or "
                              "shm_unregister")

    def _prepared(self, line: bytes, regions: Regions) -> tuple[Prepared, int] | None:
        """The prepared request LINE is, but for its id, and that id: a predict seen and
        validated on this connection against the same regions and model slot (see
        ``_prepare``). None: not such a line (parse and check it)."""
        i = line.rfind(ID_MARK)
        tail = line[i + len(ID_MARK):-1]
        if i < 0 or line[-1:] != b"}" or not 0 < len(tail) <= 18 or not tail.isdigit() \
                or (tail[:1] == b"0" and tail != b"0"):     # JSON has no leading zeros
            return None
        e = regions.prepared.get(line[:i])
        if not isinstance(e, Prepared) or self.registry.slots.get(e.model) is not e.slot:
            return None     # unknown, or the model was swapped since: parse and check again
        return e, int(tail)

    def _run_prepared(self, e: Prepared, rid: int, conn: Conn,
                      regions: Regions) -> tuple[dict, list, float]:
        """Read a prepared request's frames, if any, and run it."""
        arrays = e.arrays
        if any(f is not None for f in e.frames):
            arrays = []
            for a, f in zip(e.arrays, e.frames):
                if f is not None:
                    a = np.empty(f[1], f[0])
                    if f[2]:
                        conn.read_into(a.data.cast("B"))
                arrays.append(a)
        return self._run(rid, e.model, arrays, e.out_spec, e.binary, regions)

    def _predict(self, req: dict, conn: Conn, regions: Regions,
                 line: bytes = b"") -> tuple[dict, list, float]:
        model = req.get("model")
        heads = req.get("inputs")
        binary = req.get("binary") is True
        if not isinstance(heads, list) or len(heads) > MAX_INPUTS:
            if binary:
                raise _OutOfStep("predict: \"inputs\" must be a list of tensor headers; the "
                                 "frames that follow can't be told apart: closing")
            raise InputError("predict: \"inputs\" must be a list of tensors")
        arrays = self._read_inputs(model, heads, binary, conn, regions)
        if not isinstance(model, str):
            raise InputError("predict needs \"model\": a model name")
        out_spec = req["output_shm"] if "output_shm" in req else _ABSENT
        answer = self._run(req.get("id"), model, arrays, out_spec, binary, regions)
        self._prepare(line, req, model, arrays, out_spec, binary, regions)
        return answer

    def _prepare(self, line: bytes, req: dict, model: str, arrays: list, out_spec: Any,
                 binary: bool, regions: Regions) -> None:
        """Remember a predict that ran, when each input is in shared memory or a binary frame
        and its line ends with its integer id: the same line with another id then skips parsing
        and validation. It can only mean the same thing while the regions are the same (any
        register or unregister forgets them all) and, for frame sizes checked against the
        model's, while the model's slot is the same (checked on each use)."""
        i = line.rfind(ID_MARK)
        if not 0 < i <= PREPARED_LINE or type(req.get("id")) is not int or line[i:] != \
                ID_MARK + str(req["id"]).encode() + b"}":
            return
        frames: list = []
        for h, a in zip(req["inputs"], arrays):
            if isinstance(h, dict) and "shm" in h:
                frames.append(None)
            elif binary:                    # it ran: the header is valid, nbytes matches
                frames.append((a.dtype, a.shape, a.nbytes))
            else:
                return                      # base64 in the line: nothing to gain
        arrays = [None if f is not None else a for a, f in zip(arrays, frames)]
        if isinstance(out_spec, dict):  # it ran, so it is valid: keep only what it says
            out_spec = {"region": out_spec.get("region"), "offset": out_spec.get("offset", 0),
                        "nbytes": out_spec.get("nbytes")}
        if len(regions.prepared) >= PREPARED_MAX:
            regions.prepared.clear()
        regions.prepared[line[:i]] = Prepared(model, arrays, frames,
                                              self.registry.slots.get(model), out_spec, binary)

    def _run(self, rid: Any, model: str, arrays: list, out_spec: Any, binary: bool,
             regions: Regions) -> tuple[dict, list, float]:
        """Invoke MODEL on ARRAYS and lay out the answer (outputs into the region OUT_SPEC
        names while they fit, else frames or base64)."""
        version, outs, ms = self.registry.predict(model, arrays)
        placed: list = [None] * len(outs)
        if out_spec is not _ABSENT:
            placed = regions.place_outputs(out_spec, outs)
        out_heads, blobs = [], []
        for o, p in zip(outs, placed):     # outputs are float32 arrays get_tensor made
            if p is not None:
                out_heads.append(p)
            elif binary:
                out_heads.append({"dtype": "float32", "shape": list(o.shape),
                                  "nbytes": o.nbytes})
                blobs.append(o.data.cast("B") if o.nbytes else b"")
            else:
                out_heads.append(tensors.encode_b64(o))
        msg = protocol.ok("predict", id=rid, model=model, version=version,
                          outputs=out_heads, latency_ms=round(ms, 4),
                          **({"binary": True} if binary else {}))
        return msg, blobs, ms

    def _read_inputs(self, model: Any, heads: list, binary: bool, conn: Conn,
                     regions: Regions) -> list:
        """Every input as an array. Binary frames are read straight into their arrays, after
        their declared sizes were checked against the model's; a refused frame is drained (its
        length is known and capped) so the connection stays in step."""
        sizes: list[int | None] = []
        for i, h in enumerate(heads):
            inline = binary and not (isinstance(h, dict) and "shm" in h)
            if not inline:
                sizes.append(None)
                continue
            n = h.get("nbytes") if isinstance(h, dict) else None
            if type(n) is not int or n < 0:
                raise _OutOfStep(f"predict: input {i} needs \"nbytes\" (a non-negative integer) "
                                 f"in a binary request; the stream can't be followed: closing")
            sizes.append(n)
        declared = sum(n for n in sizes if n)
        slot = self.registry.slots.get(model) if isinstance(model, str) else None
        cap = sum(slot.caps) if slot is not None else self.registry.largest
        if declared > cap:
            raise _OutOfStep(f"predict: the request declares {declared} bytes of input, more "
                             f"than {'model ' + model if slot else 'any served model'} takes "
                             f"({cap} at most): closing")
        arrays: list = []
        first_error: EdgeDeployError | None = None
        for i, (h, n) in enumerate(zip(heads, sizes)):
            where = f"model {str(model)[:100]}: input {i}"
            try:
                if n is None and isinstance(h, dict) and "shm" in h:
                    arrays.append(regions.input_array(h, where))
                elif n is None:
                    arrays.append(tensors.decode_b64(h, where))
                else:
                    dtype, shape = tensors.parse_header(h, where)
                    if tensors.count(shape) * dtype.itemsize != n:
                        raise InputError(f"{where}: nbytes {n}; shape {list(shape)} of {dtype} "
                                         f"needs {tensors.count(shape) * dtype.itemsize}")
                    a = np.empty(shape, dtype)
                    if n:
                        conn.read_into(a.data.cast("B"))
                    n = 0
                    arrays.append(a)
            except InputError as exc:
                first_error = first_error or exc
                if n:
                    conn.discard(n)
        if first_error is not None:
            raise first_error
        return arrays


def serve_connection(service: Service, sock: socket.socket, max_connections: int) -> None:
    conn, regions = Conn(sock), Regions()
    service.metrics.connection("ndjson", +1)
    try:
        with service.metrics.lock:
            busy = service.metrics.connections["ndjson"] > max_connections
        if busy:
            conn.send([json.dumps(protocol.error(
                "environment", f"busy: {max_connections} clients are connected; try again")
            ).encode(), b"\n"])
            return
        while True:
            limit = service.line_limit()
            try:
                line = conn.read_line(limit)
            except LineTooLong:
                conn.send([json.dumps(protocol.error(
                    "bad_input", f"a request line is at most {limit} bytes here (the largest "
                                 f"served model's inputs as base64 + 64 KiB); use binary frames "
                                 f"or shared memory for large tensors: closing")).encode(), b"\n"])
                return
            except Closed:
                return
            if line is None:
                return
            if not line.strip():
                continue
            try:
                reply, blobs, keep = service.handle(line, conn, regions)
            except Closed:
                return  # the client went away mid-frame
            if not conn.send([json.dumps(reply).encode(), b"\n", *blobs]) or not keep:
                return
    finally:
        service.metrics.connection("ndjson", -1)
        regions.close()
        conn.close()


def _handler(service: Service, max_connections: int):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            serve_connection(service, self.request, max_connections)
    return Handler


class _Unix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Tcp(NoDelay, socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(store, *, socket_path: str | None = None, port: int | None = None, threads: int = 1,
          poll: float = 0.1, models: list[str] | None = None, runtime: str | None = None,
          http_port: int | None = None, http_host: str = "127.0.0.1",
          max_connections: int = 64) -> None:
    """Serve until SIGTERM/SIGINT. Prints one "serving" JSON line on stdout once ready."""
    registry = Registry(store, runtime, threads, models)
    registry.refresh()
    service = Service(registry)
    servers: list[socketserver.BaseServer] = []
    where: dict[str, object] = {}
    if socket_path:
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        servers.append(_Unix(socket_path, _handler(service, max_connections)))
        where["socket"] = socket_path
    elif port is not None or http_port is None:
        tcp = _Tcp(("127.0.0.1", port or 0), _handler(service, max_connections))
        servers.append(tcp)
        where.update(host="127.0.0.1", port=tcp.server_address[1])
    if http_port is not None:
        from .oip import make_server

        http = make_server(service, http_host, http_port, max_connections)
        servers.append(http)
        where["http"] = f"http://{http_host}:{http.server_address[1]}"
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(poll):
            try:
                registry.refresh()
            except Exception as exc:  # keep serving; health shows it
                registry.last_error["*"] = f"{type(exc).__name__}: {exc}"

    threading.Thread(target=watch, name="edgedeploy-watch", daemon=True).start()
    for extra in servers[1:]:
        threading.Thread(target=extra.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()

    def _stop(signum, frame) -> None:
        stop.set()
        for s in servers:
            threading.Thread(target=s.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.stdout.write(json.dumps(protocol.ok("serving", pid=os.getpid(),
                                            models=registry.health(), **where)) + "\n")
    sys.stdout.flush()
    try:
        servers[0].serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        for s in servers:
            s.server_close()
        if socket_path:
            try:
                os.unlink(socket_path)
            except FileNotFoundError:
                pass
