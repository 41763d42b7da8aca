"""The serve endpoint over HTTP, speaking the Open Inference Protocol (KServe v2 REST, as Triton
and KServe do) so apps in any language can call it, plus Prometheus metrics. Stdlib http.server.

``edgedeploy-agent serve --http-port 8000`` (127.0.0.1 unless ``--http-host`` says otherwise)::

    GET  /v2                                   {"name": "edgedeploy", "version": "0.1.0",
                                                "extensions": ["binary_tensor_data"]}
    GET  /v2/health/live | /v2/health/ready    200 (ready: at least one model is served), else 400
    GET  /v2/models/NAME[/versions/V]          {"name", "versions": ["3f2a…"], "platform":
                                                "tensorflow_lite", "inputs": [{"name",
                                                "datatype": "FP32", "shape": [1, 32, 32, 1]}],
                                                "outputs": [...]}
    GET  /v2/models/NAME[/versions/V]/ready    200 when served (V: the active version), else 400
    POST /v2/models/NAME[/versions/V]/infer    request / response below
    GET  /metrics                              Prometheus text format 0.0.4 (metrics.py)

Inference (JSON)::

    → {"id": "7", "inputs": [{"name": "input_1", "shape": [1, 32, 32, 1], "datatype": "FP32",
        "data": [0.0, 0.1, …]}],                  # flat row-major, or nested lists
       "outputs": [{"name": "Identity"}]}         # optional: which outputs (default: all)
    ← {"model_name": "digits", "model_version": "3f2a…", "id": "7",
       "outputs": [{"name": "Identity", "shape": [1, 10], "datatype": "FP32", "data": [...]}]}

Binary tensor data extension (Triton's): the body is the JSON header followed by raw tensors;
``Inference-Header-Content-Length`` gives the JSON's length. An input sent that way has
``"parameters": {"binary_data_size": N}`` and no "data"; outputs come back raw when an output
asks ``"parameters": {"binary_data": true}`` or the request asks ``"parameters":
{"binary_data_output": true}``, each with ``"parameters": {"binary_data_size": N}``, in order.
Float inputs for a quantized model are quantized; outputs are dequantized FP32 (as on NDJSON).

Errors: ``{"error": "one line"}`` with 400 (bad input), 404 (no such model/version/path), 413
(body larger than the model's inputs can be: at most 64 KiB of JSON + 32 bytes per input
element, or + 8 bytes per element as binary), 411 (no Content-Length), 503 (busy), 500.
"""

from __future__ import annotations

import json
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from .. import __version__
from ..errors import EdgeDeployError, EnvironmentProblem, InputError, NotFound
from . import tensors
from .wire import Conn, NoDelay

_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?/?$")
HEADER_LIMIT = 64 * 1024
JSON_BYTES_PER_ELEMENT = 32


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _status(exc: EdgeDeployError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, EnvironmentProblem):
        return 503
    return 500


def _tensor_meta(d: dict) -> dict:
    return {"name": d["name"], "datatype": tensors.NP_TO_V2.get(np.dtype(d["dtype"]).name,
                                                                 str(np.dtype(d["dtype"]))),
            "shape": [int(s) for s in d["shape"]]}


def make_server(service, host: str, port: int, max_connections: int = 64) -> ThreadingHTTPServer:
    registry, metrics = service.registry, service.metrics

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"edgedeploy/{__version__}"
        timeout = 300

        def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr
            pass

        def handle(self) -> None:
            metrics.connection("http", +1)
            try:
                with metrics.lock:
                    busy = metrics.connections["http"] > max_connections
                if busy:
                    self.close_connection = True
                    self.raw_requestline = self.rfile.readline(65537)
                    if self.parse_request():
                        self._json(503, {"error": f"busy: {max_connections} clients are "
                                                  f"connected; try again"})
                    return
                super().handle()
            finally:
                metrics.connection("http", -1)

        # -- plumbing ---------------------------------------------------------------------
        def _send(self, status: int, body: list, ctype: str, extra: dict | None = None) -> None:
            """Status line, headers and body in one sendmsg (no Nagle/delayed-ACK stall)."""
            lines = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}",
                     f"Server: {self.version_string()}", f"Date: {self.date_time_string()}",
                     f"Content-Type: {ctype}",
                     f"Content-Length: {sum(memoryview(b).nbytes for b in body)}",
                     *(f"{k}: {v}" for k, v in (extra or {}).items())]
            if self.close_connection:
                lines.append("Connection: close")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            if not Conn(self.connection).send([head, *body]):
                self.close_connection = True

        def _json(self, status: int, payload: dict | None) -> None:
            body = [] if payload is None else [json.dumps(payload).encode()]
            self._send(status, body, "application/json")

        def _body(self, cap: int) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                raise _HttpError(411, "send a Content-Length (chunked bodies are not taken)")
            raw = self.headers.get("Content-Length")
            if raw is None or not raw.isdigit():
                self.close_connection = True
                raise _HttpError(411, "a Content-Length header is required")
            n = int(raw)
            if n > cap:
                self.close_connection = True  # the body stays unread: hang up after answering
                raise _HttpError(413, f"the body has {n} bytes; this model's inputs need at "
                                      f"most {cap}")
            body = self.rfile.read(n)
            if len(body) != n:
                self.close_connection = True
                raise _HttpError(400, "the body ended before Content-Length bytes")
            return body

        def _route(self, method: str) -> None:
            t0 = time.perf_counter_ns()
            model, invoke_ms = None, None
            path = self.path.split("?", 1)[0]
            try:
                if method == "GET" and path in ("/v2", "/v2/"):
                    self._json(200, {"name": "edgedeploy", "version": __version__,
                                     "extensions": ["binary_tensor_data"]})
                elif method == "GET" and path == "/v2/health/live":
                    self._json(200, None)
                elif method == "GET" and path == "/v2/health/ready":
                    self._json(200 if registry.slots else 400, None)
                elif method == "GET" and path == "/metrics":
                    text = metrics.prometheus(registry.health(), registry.swaps,
                                              registry.failures)
                    self._send(200, [text.encode()], "text/plain; version=0.0.4; charset=utf-8")
                    return
                elif (m := _MODEL.match(path)) is None:
                    raise _HttpError(404, f"no such path {path[:200]}")
                else:
                    model, version, tail = m.group(1), m.group(2), m.group(3)
                    slot = registry.slot(model)
                    if version and version != slot.version:
                        raise NotFound(f"model {model}: version {version[:64]} is not the one "
                                       f"served ({slot.version})")
                    if method == "GET" and tail is None:
                        self._json(200, {"name": model, "versions": [slot.version],
                                         "platform": "tensorflow_lite",
                                         "inputs": [_tensor_meta(d) for d in slot.inputs],
                                         "outputs": [_tensor_meta(d) for d in slot.outputs]})
                    elif method == "GET" and tail == "/ready":
                        self._json(200, None)
                    elif method == "POST" and tail == "/infer":
                        invoke_ms = self._infer(slot)
                    else:
                        raise _HttpError(405, f"{method} is not allowed on {path[:200]}")
            except _HttpError as exc:
                metrics.record(model, False, (time.perf_counter_ns() - t0) / 1e6, "http")
                self._json(exc.status, {"error": str(exc)})
                return
            except EdgeDeployError as exc:
                metrics.record(model, False, (time.perf_counter_ns() - t0) / 1e6, "http")
                self._json(_status(exc), {"error": str(exc)})
                return
            if invoke_ms is not None:
                metrics.record(model, True, (time.perf_counter_ns() - t0) / 1e6, "http",
                               invoke_ms=invoke_ms)

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        # -- inference --------------------------------------------------------------------
        def _infer(self, slot) -> float:
            elements = sum(tensors.count(s) for s in slot.shapes)
            hlen_raw = self.headers.get("Inference-Header-Content-Length")
            cap = HEADER_LIMIT + (sum(slot.caps) if hlen_raw is not None
                                  else JSON_BYTES_PER_ELEMENT * elements)
            body = self._body(cap)
            if hlen_raw is not None:
                if not hlen_raw.isdigit() or int(hlen_raw) > min(len(body), HEADER_LIMIT):
                    raise InputError(f"Inference-Header-Content-Length {hlen_raw[:20]!r} must "
                                     f"be a length within the body and ≤ {HEADER_LIMIT}")
                hlen = int(hlen_raw)
            else:
                hlen = len(body)
            req = tensors.loads(body[:hlen])
            if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
                raise InputError("an inference request is a JSON object with \"inputs\"")
            arrays = self._inputs(slot, req["inputs"], memoryview(body)[hlen:])
            version, outs, ms = registry.predict(slot.name, arrays)
            wanted = req.get("outputs")
            params: dict = req["parameters"] if isinstance(req.get("parameters"), dict) else {}
            all_binary = params.get("binary_data_output") is True
            names = [d["name"] for d in slot.outputs]
            chosen: list[tuple[int, bool]] = []
            if wanted is None:
                chosen = [(i, all_binary) for i in range(len(names))]
            else:
                if not isinstance(wanted, list):
                    raise InputError("\"outputs\" must be a list of {\"name\": …}")
                for w in wanted:
                    name = w.get("name") if isinstance(w, dict) else None
                    if name not in names:
                        raise InputError(f"model {slot.name} has no output {str(name)[:100]!r}",
                                         hint=f"outputs: {', '.join(names)}")
                    wp: dict = w["parameters"] if isinstance(w.get("parameters"), dict) else {}
                    chosen.append((names.index(name), wp.get("binary_data", all_binary) is True))
            out_json, blobs = [], []
            for i, binary in chosen:
                o = np.ascontiguousarray(outs[i])
                e: dict = {"name": names[i], "datatype": tensors.NP_TO_V2[o.dtype.name],
                           "shape": list(o.shape)}
                if binary:
                    e["parameters"] = {"binary_data_size": o.nbytes}
                    blobs.append(o.data.cast("B"))
                else:
                    e["data"] = o.ravel().tolist()
                out_json.append(e)
            resp: dict = {"model_name": slot.name, "model_version": version, "outputs": out_json}
            if "id" in req:
                resp["id"] = req["id"]
            head = json.dumps(resp).encode()
            if blobs:
                self._send(200, [head, *blobs], "application/octet-stream",
                           {"Inference-Header-Content-Length": str(len(head))})
            else:
                self._send(200, [head], "application/json")
            return ms

        def _inputs(self, slot, heads: list, raw: memoryview) -> list:
            by_name = {d["name"]: i for i, d in enumerate(slot.inputs)}
            arrays: list = [None] * len(slot.inputs)
            at = 0
            for k, h in enumerate(heads):
                if not isinstance(h, dict):
                    raise InputError(f"input {k}: a tensor is {{\"name\", \"shape\", "
                                     f"\"datatype\", \"data\"}}")
                name = h.get("name")
                where = f"model {slot.name}: input {str(name)[:100]!r}"
                if name not in by_name:
                    raise InputError(f"{where}: no such input",
                                     hint=f"inputs: {', '.join(by_name)}")
                dt = h.get("datatype")
                if dt not in tensors.V2_DTYPES:
                    raise InputError(f"{where}: datatype {str(dt)[:20]!r} is not one of "
                                     f"{', '.join(tensors.V2_DTYPES)}")
                dtype = np.dtype(tensors.V2_DTYPES[dt])
                shape = tensors.parse_shape(h.get("shape"), where)
                p: dict = h["parameters"] if isinstance(h.get("parameters"), dict) else {}
                if "binary_data_size" in p:
                    n = tensors.parse_nbytes(p["binary_data_size"], where)
                    if at + n > len(raw):
                        raise InputError(f"{where}: binary_data_size {n} runs past the body")
                    a = tensors.from_bytes(dtype, shape, raw[at:at + n], where)
                    at += n
                else:
                    a = tensors.from_list(h.get("data"), dtype, shape, where)
                arrays[by_name[name]] = a
            if at != len(raw):
                raise InputError(f"the body holds {len(raw) - at} bytes of binary data no input "
                                 f"claims")
            missing = [d["name"] for d, a in zip(slot.inputs, arrays) if a is None]
            if missing:
                raise InputError(f"model {slot.name}: missing input(s) {', '.join(missing)}")
            return arrays

    class Server(NoDelay, ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    return Server((host, port), Handler)
