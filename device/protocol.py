"""The JSON messages the agent and the host speak. Versioned; stdlib only; shared by both sides.

(Past 400 lines on purpose: every message's wire format and its typed form live together.)

Every message is one JSON object with ``"schema": 1`` and ``"ok"``. The agent CLI prints exactly
one message on stdout per command (progress goes to stderr); its exit status is 0 when ``ok`` is
true and the error's exit code otherwise (2 bad input, 3 environment, 4 conflict in the store,
1 anything else). The serve endpoint exchanges the same objects, one per line (NDJSON).

Errors (any command)::

    {"schema": 1, "ok": false, "kind": "error", "code": "bad_input" | "environment" |
     "conflict" | "not_found" | "hash_mismatch" | "unsafe_bundle" | "delegate_missing" |
     "silent_cpu_fallback" | "model_load_failed" | "store_error" | "run_failed" |
     "delta_refused" | "not_here" | "error",
     "message": "one line naming the file/model and what to do"}

Agent commands (``edgedeploy-agent [--store DIR] CMD``) and their answers (``kind`` = CMD)::

    version   {"agent": "0.1.0", "content_hash": "<sha256 of the agent's sources>",
               "python": "3.11.2"}
    info      {"agent": {...version...}, "arch": "aarch64", "os": "Linux 6.1 ...",
               "python": "3.11.2", "numpy": "1.24.2",
               "runtimes": {"litert": "2.3.0" | null, "tflite_runtime": ..., "tensorflow": ...},
               "runtime": "litert",            # the one make_interpreter would pick
               "delegates": {"xnnpack": {"available": true},
                             "edgetpu": {"available": false, "error": "...", "devices": []}},
               "cpu": {"model": "...", "cores": 4, "governor": "ondemand" | null,
                       "temperature_c": 48.3 | null},
               "memory": {"total_bytes": ..., "available_bytes": ...},
               "store": {"path": "...", "free_bytes": ..., "total_bytes": ...}}
    state     {"agent": {...version...}, "info": {...info...}, "store": "/…/store",
               "incoming": "/…/store/incoming",  # uploads go to INCOMING/TOKEN/… (TOKEN: the
               "data": "/…/store/data",          # deployer's); eval data to DATA/SHA256.EXT
               "models": [...list...]}   # (`--model NAME`: that model only) one round trip;
                                         # info's runtime facts are cached in
                                         # STORE/info-cache.json while Python, the agent and
                                         # every sys.path folder are unchanged
    install   {"name": "digits", "version": "3f2a9c1b0d4e", "path": ".../models/digits/3f2a9c1b0d4e",
               "files": 3, "bytes": 133000, "already_present": false,
               "delta": null | {"bytes": 3447, "bases": ["NAME@VERSION", …]}}
              # the bundle may carry MODEL.tflite.delta in place of MODEL.tflite (the file its
              # manifest names): rebuilt from the store's versions in staging, its sha256
              # checked against the manifest before anything else (device/delta.py);
              # refused with delta_refused (store unchanged) if it cannot be
    activate  {"name": ..., "current": "v2", "previous": "v1", "removed": ["v0"]}
    rollback  {"name": ..., "current": "v1", "previous": "v2"}
    list      {"models": [{"name": ..., "current": ..., "previous": ...,
                           "versions": [{"version": ..., "mode": "int8", "size": ...,
                                         "sha256": "<the model file's>",
                                         "created": ..., "installed": ...}]}]}
    remove    {"name": ..., "version": ..., "removed": true}
    verify    {"name": ..., "version": ..., "valid": true, "problems": []}
    bench     {"model": {"name", "version", "mode", "sha256"}, "runtime": {"name", "version"},
               "threads": 1, "delegate": {"requested": "auto", "applied": "xnnpack" | null,
                                          "delegated_ops": 8, "total_ops": 11},
               "load_ms": 3.1, "first_invoke_ms": 0.9,
               "timing": {"runs", "warmup", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms",
                          "max_ms", "std_ms", "samples_ms": [...]},
               "peak_rss_bytes": ..., "inputs": "random" | "FILE.npz",
               "ops": null | [{"index", "op", "delegated"}], "op_timing": null | ..., "note": ...}
    eval      (`--data FILE` | `--bundled-data REL`: a file the model's own bundle carried,
               or, with `--data-version V`, version V's bundle; `--reference FILE` |
               `--bundled-reference REL` likewise)
              {"model": {...}, "runtime": {...}, "data": "test.npz", "samples": 540,
               "top1": 0.979, "top5": 1.0 | null,
               "agreement": null | {"samples", "top1_agreement", "mean_abs_error", "max_abs_error"},
               "seconds": 0.21}
    agentd --detach  {"started": true, "pid": 4242, "replaced": 4100 | null}
                     | {"started": false, "reason": "..."}
    agentd --stop    {"stopped": 4242 | null}     # (without either: runs the resident agent)

``batch`` answers each command on a line with the command's message plus ``"exit"``. The
resident agent (agentd.py) speaks the same over its socket STORE/agentd.sock (SOCKET) after a
hello line ``{"agentd": 1, "pid": N, "tag": T, "content_hash": H}`` (HELLO_KEY); commands other
than the store's control commands (CONTROL) get ``not_here`` (bench, eval and serve run in their
own process). One more line is the resident agent's own (UPLOAD)::

    ["upload", FOLDER, REL, SIZE]  then SIZE raw bytes
              → {"kind": "upload", "path": "FOLDER/REL", "bytes": SIZE}
              FOLDER absolute (INCOMING/TOKEN), REL a plain relative path, the file new

The host reads these answers through the dataclasses below (``State.parse(msg)`` …), once, at
its link to the board (host/agent_link.py): never as loose dicts. A field the host doesn't read
is left in the message (``raw``), which is what gets recorded and printed as JSON.

Serve endpoint (``serve --socket PATH`` or ``--port N`` on 127.0.0.1), one JSON object per line
each way; a connection may carry any number of requests, answered in order::

    → {"op": "predict", "model": "digits", "id": 7,
       "inputs": [{"dtype": "float32", "shape": [1, 32, 32, 1], "data": "<base64 raw bytes>"}]}
       (float inputs for a quantized tensor are quantized with its scale/zero point)
    ← {"schema": 1, "ok": true, "kind": "predict", "id": 7, "model": "digits",
       "version": "3f2a…", "outputs": [{"dtype": "float32", "shape": [1, 10], "data": "…"}],
       "latency_ms": 0.21}         # outputs are dequantized to float32
    Binary frames (what the client uses; saves base64 and a large JSON string): add
    ``"binary": true`` and give each array as {"dtype", "shape", "nbytes"} without "data"; the
    raw bytes of every array follow the request line back to back. The answer then carries its
    outputs the same way: header line, then the raw bytes.
    → {"op": "health"}   ← {"kind": "health", "models": {"digits": {"version": ..., "loaded_at": ...,
                             "last_error": null | "..."}}, "uptime_s": ...}
    → {"op": "metrics"}  ← {"kind": "metrics", "requests": N, "errors": N,
                             "latency_ms": {"p50", "p90", "p99", "count"},
                             "models": {"digits": {"requests", "errors", "swaps"}}}
    → {"op": "reload"}   ← {"kind": "reload", "models": {...as health...}}
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, TypeVar

SCHEMA = 1

# -- shared with the resident agent (agentd.py) and the host's link (host/agent_link.py) ----
CONTROL = frozenset({"version", "info", "state", "install", "activate", "rollback", "list",
                     "remove", "verify"})  # what the resident agent serves
UPLOAD = "upload"          # the resident agent's upload line: raw bytes follow it
SOCKET = "agentd.sock"     # STORE/SOCKET: the resident agent's Unix socket
HELLO_KEY = "agentd"       # the hello line: {HELLO_KEY: 1, "pid", "tag", "content_hash"}
HELLO_VERSION = 1

ERROR_CODES = ("bad_input", "environment", "conflict", "not_found", "hash_mismatch",
               "unsafe_bundle", "delegate_missing", "silent_cpu_fallback", "model_load_failed",
               "store_error", "run_failed", "delta_refused", "error")


def ok(kind: str, **data: Any) -> dict:
    return {"schema": SCHEMA, "ok": True, "kind": kind, **data}


def error(code: str, message: str, **data: Any) -> dict:
    return {"schema": SCHEMA, "ok": False, "kind": "error", "code": code, "message": message,
            **data}


def encode_array(a: Any) -> dict:
    """A numpy array as a JSON-safe dict (raw bytes, base64)."""
    import numpy as np

    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape),
            "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(d: dict) -> Any:
    try:
        raw = base64.b64decode(d["data"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed array ({type(exc).__name__}: {exc})") from exc
    return array_from_raw(d, raw)


def array_header(a: Any) -> tuple[dict, bytes]:
    """(header without data, raw bytes) of a numpy array, for binary frames."""
    import numpy as np

    a = np.ascontiguousarray(a)
    raw = a.tobytes()
    return {"dtype": str(a.dtype), "shape": list(a.shape), "nbytes": len(raw)}, raw


def array_from_raw(header: dict, raw: bytes) -> Any:
    import numpy as np

    try:
        dtype = np.dtype(header["dtype"])
        shape = tuple(int(s) for s in header["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed array header ({type(exc).__name__}: {exc})") from exc
    count = 1
    for s in shape:
        count *= s
    if count * dtype.itemsize != len(raw):
        raise ValueError(f"array data holds {len(raw)} bytes, shape {list(shape)} of {dtype} "
                         f"needs {count * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def frame_sizes(req: Any) -> list[int]:
    """Byte counts of the raw arrays that follow a binary request line (validated)."""
    if not isinstance(req, dict) or not req.get("binary"):
        return []
    sizes = []
    for h in req.get("inputs") or []:
        n = h.get("nbytes") if isinstance(h, dict) else None
        if not isinstance(n, int) or n < 0 or n > 1 << 30:
            raise ValueError("binary frame: every input needs \"nbytes\" (0 … 1 GiB)")
        sizes.append(n)
    return sizes


# -- the answers the host reads, typed ------------------------------------------------------
class Malformed(ValueError):
    """An answer without the shape documented above (the host's link turns it into a
    BoardError naming the board)."""


T = TypeVar("T")


def _field(d: Any, key: str, kind: type[T] | tuple[type, ...], optional: bool = False) -> Any:
    if not isinstance(d, dict):
        raise Malformed(f"expected an object holding {key!r}, got {type(d).__name__}")
    v = d.get(key)
    if v is None:
        if optional:
            return None
        raise Malformed(f"no {key!r}")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
        raise Malformed(f"{key!r} is a {type(v).__name__}")
    return v


@dataclass(frozen=True)
class VersionEntry:
    """One stored version, as ``list`` / ``state`` give it."""
    version: str
    mode: str | None = None
    size: int | None = None
    error: str | None = None      # the stored version is unreadable (its manifest)
    sha256: str | None = None     # its model file's (what a delta can be built against)

    @classmethod
    def parse(cls, d: Any) -> "VersionEntry":
        return cls(_field(d, "version", str), _field(d, "mode", str, True),
                   _field(d, "size", int, True), _field(d, "error", str, True),
                   _field(d, "sha256", str, True))


@dataclass(frozen=True)
class ModelEntry:
    """A model in the store: its current and previous version, the versions kept."""
    name: str
    current: str | None
    previous: str | None
    versions: tuple[VersionEntry, ...] = ()
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def has(self, version: str) -> bool:
        """VERSION is stored whole (a readable manifest)."""
        return any(v.version == version and v.error is None for v in self.versions)

    @classmethod
    def parse(cls, d: Any) -> "ModelEntry":
        vs = _field(d, "versions", list, True) or []
        return cls(_field(d, "name", str), _field(d, "current", str, True),
                   _field(d, "previous", str, True),
                   tuple(VersionEntry.parse(v) for v in vs), d)


def _models(msg: Any) -> tuple[ModelEntry, ...]:
    return tuple(ModelEntry.parse(e) for e in _field(msg, "models", list))


def _find(models: tuple[ModelEntry, ...], name: str) -> ModelEntry | None:
    return next((e for e in models if e.name == name), None)


@dataclass(frozen=True)
class Listing:
    """``list``: every model in the store."""
    models: tuple[ModelEntry, ...]

    def model(self, name: str) -> ModelEntry | None:
        return _find(self.models, name)

    @classmethod
    def parse(cls, msg: Any) -> "Listing":
        return cls(_models(msg))


@dataclass(frozen=True)
class AgentId:
    """``version`` (and the ``agent`` part of ``state``): which agent answers."""
    version: str
    content_hash: str

    @classmethod
    def parse(cls, d: Any) -> "AgentId":
        return cls(_field(d, "agent", str), _field(d, "content_hash", str))


@dataclass(frozen=True)
class BoardInfo:
    """The parts of ``info`` a deployer decides on; ``raw`` is the whole message."""
    arch: str | None
    python: str | None
    numpy: str | None
    runtime: str | None            # the runtime make_interpreter would pick, if any
    runtime_error: str | None
    free_bytes: int | None         # in the store's filesystem
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def runtimes(self) -> dict:
        r = self.raw.get("runtimes")
        return r if isinstance(r, dict) else {}

    @classmethod
    def parse(cls, d: Any) -> "BoardInfo":
        store = _field(d, "store", dict, True) or {}
        return cls(_field(d, "arch", str, True), _field(d, "python", str, True),
                   _field(d, "numpy", str, True), _field(d, "runtime", str, True),
                   _field(d, "runtime_error", str, True),
                   _field(store, "free_bytes", int, True), d)


@dataclass(frozen=True)
class State:
    """``state``: everything a push plan needs, in one answer."""
    agent: AgentId
    info: BoardInfo
    store: str                        # the store's absolute path
    incoming: str | None              # uploads go to INCOMING/TOKEN/ (None: an older agent)
    data: str | None                  # eval data goes to DATA/SHA256.EXT (None: likewise)
    models: tuple[ModelEntry, ...]
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    def model(self, name: str) -> ModelEntry | None:
        return _find(self.models, name)

    @classmethod
    def parse(cls, msg: Any) -> "State":
        return cls(AgentId.parse(_field(msg, "agent", dict)),
                   BoardInfo.parse(_field(msg, "info", dict)), _field(msg, "store", str),
                   _field(msg, "incoming", str, True), _field(msg, "data", str, True),
                   _models(msg), msg)


@dataclass(frozen=True)
class Switched:
    """``activate``, ``rollback`` (and ``install --activate``): the model's pointer now."""
    name: str
    current: str | None
    previous: str | None
    removed: tuple[str, ...] = ()     # versions pruned by the activation

    @classmethod
    def parse(cls, msg: Any) -> "Switched":
        return cls(_field(msg, "name", str), _field(msg, "current", str, True),
                   _field(msg, "previous", str, True),
                   tuple(_field(msg, "removed", list, True) or ()))


@dataclass(frozen=True)
class Installed:
    """``install``; ``switched`` when it also activated (``--activate``)."""
    name: str
    version: str
    path: str
    bytes: int
    already_present: bool
    switched: Switched | None = None
    delta_bases: tuple[str, ...] = ()  # NAME@VERSION the model was rebuilt from (a delta)

    @classmethod
    def parse(cls, msg: Any) -> "Installed":
        delta = _field(msg, "delta", dict, True) or {}
        return cls(_field(msg, "name", str), _field(msg, "version", str),
                   _field(msg, "path", str), _field(msg, "bytes", int),
                   _field(msg, "already_present", bool),
                   Switched.parse(msg) if "current" in msg else None,
                   tuple(str(b) for b in delta.get("bases") or ()))


@dataclass(frozen=True)
class Uploaded:
    """The resident agent's ``upload``."""
    path: str
    bytes: int

    @classmethod
    def parse(cls, msg: Any) -> "Uploaded":
        return cls(_field(msg, "path", str), _field(msg, "bytes", int))


@dataclass(frozen=True)
class Verified:
    """``verify``."""
    name: str
    version: str
    valid: bool
    problems: tuple[str, ...]

    @classmethod
    def parse(cls, msg: Any) -> "Verified":
        return cls(_field(msg, "name", str), _field(msg, "version", str),
                   _field(msg, "valid", bool), tuple(_field(msg, "problems", list, True) or ()))


@dataclass(frozen=True)
class ModelRef:
    """The ``model`` part of bench and eval answers."""
    name: str | None
    version: str | None
    mode: str | None

    @classmethod
    def parse(cls, d: Any) -> "ModelRef":
        return cls(_field(d, "name", str, True), _field(d, "version", str, True),
                   _field(d, "mode", str, True))


@dataclass(frozen=True)
class Bench:
    """``bench``: the figures a gate or a summary line reads; ``raw`` keeps the rest (raw
    samples, op profile …) for the results history."""
    model: ModelRef
    runtime: str
    runtime_version: str | None
    threads: int
    delegate: str | None           # the delegate applied, None: the plain CPU kernels
    load_ms: float
    peak_rss_bytes: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, msg: Any) -> "Bench":
        rt = _field(msg, "runtime", dict)
        t = _field(msg, "timing", dict)
        delegate = _field(msg, "delegate", dict, True) or {}
        return cls(ModelRef.parse(_field(msg, "model", dict)), _field(rt, "name", str),
                   _field(rt, "version", str, True), _field(msg, "threads", int),
                   _field(delegate, "applied", str, True), _field(msg, "load_ms", float),
                   _field(msg, "peak_rss_bytes", int), _field(t, "p50_ms", float),
                   _field(t, "p90_ms", float), _field(t, "p99_ms", float), msg)


@dataclass(frozen=True)
class Eval:
    """``eval``: top-1 (and top-1 agreement with reference outputs, when given)."""
    model: ModelRef
    samples: int
    top1: float
    agreement: float | None        # top1_agreement
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, msg: Any) -> "Eval":
        ag = _field(msg, "agreement", dict, True)
        return cls(ModelRef.parse(_field(msg, "model", dict)), _field(msg, "samples", int),
                   _field(msg, "top1", float),
                   _field(ag, "top1_agreement", float) if ag is not None else None, msg)


@dataclass(frozen=True)
class Hello:
    """The resident agent's first line on a connection."""
    pid: int
    tag: str
    content_hash: str

    @classmethod
    def parse(cls, msg: Any) -> "Hello":
        if _field(msg, HELLO_KEY, int) != HELLO_VERSION:
            raise Malformed(f"hello version {msg.get(HELLO_KEY)!r}")
        return cls(_field(msg, "pid", int), _field(msg, "tag", str, True) or "",
                   _field(msg, "content_hash", str, True) or "")
