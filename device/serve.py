"""On-device inference endpoint for local apps (``edgedeploy-agent serve``). Wire format: NDJSON,
see protocol.py. Unix socket, or TCP bound to 127.0.0.1 only.

Hot swap: a watcher thread reads each model's ``current.json`` every ``poll`` seconds. When it
names a new version, the new interpreter is loaded (its sha256 checked first) *beside* the old
one and then put in place with one reference assignment; a request already holding the old slot
finishes on it. If the new version fails to load, the old one keeps serving and ``health``
reports why. One interpreter per model, one lock per interpreter (they are not thread-safe).
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
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..errors import EdgeDeployError, HashMismatch, InputError, NotFound
from . import protocol


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

    def __post_init__(self) -> None:
        import numpy as np

        self.shapes = [tuple(int(s) for s in d["shape"]) for d in self.inputs]
        self.dtypes = [np.dtype(d["dtype"]) for d in self.inputs]


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
        self.swaps: dict[str, int] = {}
        self._refresh_lock = threading.Lock()

    def _load(self, name: str, version: str) -> Slot:
        from .manifest import sha256_file
        from .runtime import make_interpreter

        m = self.store.manifest(name, version)
        path = self.store.version_dir(name, version) / m.file
        if sha256_file(path) != m.sha256:
            raise HashMismatch(f"model {name} version {version}: {m.file} differs from its "
                               f"manifest's sha256")
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
                    self.last_error[name] = (f"version {want} failed to load, still serving "
                                             f"{have.version if have else 'nothing'}: {exc}")
                    continue
                self.slots[name] = slot  # the switch: one reference assignment
                self.failed.pop(name, None)
                self.last_error[name] = None
                self.swaps[name] = self.swaps.get(name, 0) + (1 if have else 0)

    def health(self) -> dict:
        names = set(self.slots) | set(self.last_error)
        return {n: {"version": self.slots[n].version if n in self.slots else None,
                    "loaded_at": self.slots[n].loaded_at if n in self.slots else None,
                    "last_error": self.last_error.get(n)} for n in sorted(names)}

    def predict(self, name: str, arrays: list) -> tuple[str, list, float]:
        from .evaluate import dequantize, quantize

        slot = self.slots.get(name)
        if slot is None:
            raise NotFound(f"model {name} is not being served",
                           hint=f"serving: {', '.join(sorted(self.slots)) or 'nothing'}")
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


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.latencies: deque = deque(maxlen=10000)
        self.per_model: dict[str, dict[str, int]] = {}

    def record(self, model: str | None, ok: bool, ms: float) -> None:
        with self.lock:
            self.requests += 1
            self.errors += 0 if ok else 1
            self.latencies.append(ms)
            if model:
                m = self.per_model.setdefault(model, {"requests": 0, "errors": 0})
                m["requests"] += 1
                m["errors"] += 0 if ok else 1

    def snapshot(self, swaps: dict[str, int]) -> dict:
        with self.lock:
            lat = sorted(self.latencies)
            pct = {}
            for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
                pct[key] = round(lat[min(int(q * len(lat)), len(lat) - 1)], 4) if lat else None
            pct["count"] = len(lat)
            models = {n: {**v, "swaps": swaps.get(n, 0)} for n, v in self.per_model.items()}
            return {"requests": self.requests, "errors": self.errors, "latency_ms": pct,
                    "models": models}


class Service:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.metrics = Metrics()
        self.started = time.time()

    def handle(self, req: Any, raw: list | None = None) -> tuple[dict, list]:
        """One request → (answer, raw output bytes for a binary frame)."""
        t0 = time.perf_counter_ns()
        blobs: list = []
        model = None
        try:
            if not isinstance(req, dict):
                raise InputError("a request is a JSON object with an \"op\"")
            op = req.get("op")
            if op == "predict":
                model = req.get("model")
                if not isinstance(model, str):
                    raise InputError("predict needs \"model\": a model name")
                try:
                    if raw is not None:
                        arrays = [protocol.array_from_raw(h, b)
                                  for h, b in zip(req.get("inputs") or [], raw)]
                    else:
                        arrays = [protocol.decode_array(d) for d in req.get("inputs") or []]
                except ValueError as exc:
                    raise InputError(f"model {model}: {exc}") from exc
                version, outs, ms = self.registry.predict(model, arrays)
                if raw is not None:
                    heads = []
                    for o in outs:
                        h, b = protocol.array_header(o)
                        heads.append(h)
                        blobs.append(b)
                else:
                    heads = [protocol.encode_array(o) for o in outs]
                msg = protocol.ok("predict", id=req.get("id"), model=model, version=version,
                                  outputs=heads, latency_ms=round(ms, 4),
                                  **({"binary": True} if raw is not None else {}))
            elif op == "health":
                msg = protocol.ok("health", models=self.registry.health(),
                                  uptime_s=round(time.time() - self.started, 3), pid=os.getpid())
            elif op == "metrics":
                return protocol.ok("metrics", **self.metrics.snapshot(self.registry.swaps)), []
            elif op == "reload":
                self.registry.refresh()
                msg = protocol.ok("reload", models=self.registry.health())
            else:
                raise InputError(f"unknown op {op!r}", hint="predict, health, metrics or reload")
        except EdgeDeployError as exc:
            self.metrics.record(model, False, (time.perf_counter_ns() - t0) / 1e6)
            return protocol.error(exc.code, str(exc), id=req.get("id") if isinstance(req, dict)
                                  else None), []
        self.metrics.record(model, True, (time.perf_counter_ns() - t0) / 1e6)
        return msg, blobs


def _handler(service: Service):
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                blobs: list = []
                try:
                    req = json.loads(line)
                    sizes = protocol.frame_sizes(req)
                except ValueError as exc:
                    # the stream can't be trusted past a bad frame: answer, then hang up
                    reply = protocol.error("bad_input", f"a request is one JSON object per line "
                                                        f"({exc})")
                    self._send(reply, [])
                    return
                raw = None
                if sizes or (isinstance(req, dict) and req.get("binary")):
                    raw = [self.rfile.read(n) for n in sizes]
                    if any(len(b) != n for b, n in zip(raw, sizes)):
                        return  # the client went away mid-frame
                reply, blobs = service.handle(req, raw)
                if not self._send(reply, blobs):
                    return

        def _send(self, reply: dict, blobs: list) -> bool:
            try:
                self.wfile.write(b"".join([json.dumps(reply).encode(), b"\n", *blobs]))
                self.wfile.flush()
                return True
            except OSError:
                return False
    return Handler


class _Unix(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Tcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


def serve(store, *, socket_path: str | None = None, port: int | None = None, threads: int = 1,
          poll: float = 0.1, models: list[str] | None = None, runtime: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT. Prints one "serving" JSON line on stdout once ready."""
    registry = Registry(store, runtime, threads, models)
    registry.refresh()
    service = Service(registry)
    if socket_path:
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        server: socketserver.BaseServer = _Unix(socket_path, _handler(service))
        where: dict[str, object] = {"socket": socket_path}
    else:
        server = _Tcp(("127.0.0.1", port or 0), _handler(service))
        where = {"host": "127.0.0.1", "port": server.server_address[1]}
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(poll):
            try:
                registry.refresh()
            except Exception as exc:  # keep serving; health shows it
                registry.last_error["*"] = f"{type(exc).__name__}: {exc}"

    watcher = threading.Thread(target=watch, name="edgedeploy-watch", daemon=True)
    watcher.start()

    def _stop(signum, frame) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.stdout.write(json.dumps(protocol.ok("serving", pid=os.getpid(),
                                            models=registry.health(), **where)) + "\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        stop.set()
        server.server_close()
        if socket_path:
            try:
                os.unlink(socket_path)
            except FileNotFoundError:
                pass
