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
     "expired" | "delta_refused" | "signature_refused" | "downgrade_refused" | "not_here" |
     "error",
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
                       "freq_khz": 1800000 | null, "temperature_c": 48.3 | null},
               "board_model": "Raspberry Pi 4 Model B Rev 1.4" | null,  # device tree
               "throttled": null | {"raw": "0x50005", "now": ["under_voltage", ...],
                                    "since_boot": [...]},   # vcgencmd get_throttled
               "emulated": true | false | null,   # cpuinfo's CPU family is not uname -m's
               "emulation": {"emulated", "host_cpu": "AMD EPYC …" | null, "why": "..."},
               "memory": {"total_bytes": ..., "available_bytes": ...},
               "store": {"path": "...", "free_bytes": ..., "total_bytes": ...}}
    state     {"agent": {...version...}, "info": {...info...}, "store": "/…/store",
               "incoming": "/…/store/incoming",  # uploads go to INCOMING/TOKEN/… (TOKEN: the
               "data": "/…/store/data",          # deployer's); eval data to DATA/SHA256.EXT
               "models": [...list...]}   # (`--model NAME`: that model only) one round trip;
                                         # info's runtime facts are cached in
                                         # STORE/info-cache.json while Python, the agent and
                                         # every sys.path folder are unchanged;
                                         # `--settled`: read under the store lock, after
                                         # any change under way (a lost answer's check)
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
                           "versions": [{"version": ..., "mode": "int8",
                                         "label": "qat-int8", "size": ...,
                                         "sha256": "<the model file's>",
                                         "created": ..., "installed": ...}]}]}
    remove    {"name": ..., "version": ... | null, "versions": [...], "removed": true}
              # (no VERSION: the whole model, the active version too)
    verify    {"name": ..., "version": ..., "valid": true, "problems": []}
    bench     {"model": {"name", "version", "mode", "sha256"}, "runtime": {"name", "version"},
               "threads": 1, "delegate": {"requested": "auto", "applied": "xnnpack" | null,
                                          "delegated_ops": 8, "total_ops": 11},
               "load_ms": 3.1, "first_invoke_ms": 0.9,
               "timing": {"runs", "warmup", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms",
                          "max_ms", "std_ms", "samples_ms": [...]},
               "peak_rss_bytes": ..., "inputs": "random" | "FILE.npz",
               "ops": null | [{"index", "op", "delegated"}], "op_timing": null | ..., "note": ...,
               "placement": {"requested", "applied", "compiled_for_edgetpu": false,
                             "edgetpu_ops": 0 | null, "xnnpack_ops": 8 | null,
                             "cpu_ops": 3 | null, "total_ops": 11 | null,
                             "cpu_only_on_edgetpu": false,
                             "line": "CPU: 8 of 11 ops in XNNPACK, ..."},  # said first
               "conditions": {"before": SNAPSHOT, "after": SNAPSHOT},  # around the runs;
                   # SNAPSHOT = {"temperature_c", "freq_khz", "governor", "throttled"}
               "warnings": ["the board throttled during the run (...)", ...],
               "emulated": true | false | null, "emulation": {...as info...}}
              (bench --allow-cpu: time it even when the Edge TPU took no op; without it that
               is the error silent_cpu_fallback, as is a model compiled for the Edge TPU
               benched without its delegate)
    eval      (`--data FILE` | `--bundled-data REL`: a file the model's own bundle carried,
               or, with `--data-version V`, version V's bundle; `--reference FILE` |
               `--bundled-reference REL` likewise; `--output NAME`: the output labels refer
               to; `--data-name`/`--reference-name`: the user's file names, for messages)
              {"model": {...}, "runtime": {...}, "data": "test.npz",   # the user's file name
               "reference": "host.npz" | null, "samples": 540,
               "outputs": ["probs", …],            # every output's key
               "output": "probs" | null,           # the one top-1 figures are about
               "top1": 0.979 | null, "top5": 1.0 | null,         # null: no labels y
               "agreement": null | {"samples", "top1_agreement", "mean_abs_error",
                                    "max_abs_error"},              # the top-1 output
               "errors": null | [{"output", "max_abs_error", "mean_abs_error", "cosine"}],
               "seconds": 0.21, "outputs_sha256": "…"}
    probe     {"model": {...} | {"path": FILE}, "loads": false,
               "reason": null | "invalid_model" | "missing_custom_op" | "op_version" |
                         "crashed" | "timeout" | "load_failed" | "invoke_failed",
               "message": "the runtime crashed loading it: signal 11 (SIGSEGV)",
               "sha256": …, "runtime": "tflite_runtime", "runtime_version": "2.14.0",
               "stage": "read" | "load" | "allocate" | "invoke" | "done", "seconds": 1.2,
               "cached": false, "details": {"op", "version", "custom_op", "signal", …}}
               # (device/probe.py: the model is loaded in a child process; cached in
               # STORE/probe-cache/ by sha256 and the runtime packages installed)
    agentd --detach  {"started": true, "pid": 4242, "replaced": 4100 | null}
                     | {"started": false, "reason": "..."}
    agentd --stop    {"stopped": 4242 | null}     # (without either: runs the resident agent)

``batch`` answers each command on a line with the command's message plus ``"exit"``. A store
change (CHANGING) comes with the deployer's deadline as a leading ``--within S``: if it cannot
start within S seconds of its receipt (the store lock busy), or its client has hung up, it is
dropped after the locks are taken and before anything changes (``expired``; nobody may be left
to read that answer). The store lock is taken with that deadline: past it, ``conflict`` with
"store … is locked by PID N". The
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

Serve endpoint (``serve``): NDJSON on a socket (predict with base64, binary frames or shared
memory; health, metrics, reload, shm_register) — serve.py and shm.py state that wire format —
and HTTP with the Open Inference Protocol (KServe v2 REST) — oip.py. Tensor headers are parsed
strictly by tensors.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

SCHEMA = 1

# -- shared with the resident agent (agentd.py) and the host's link (host/agent_link.py) ----
CONTROL = frozenset({"version", "info", "state", "install", "activate", "rollback", "list",
                     "remove", "verify", "probe"})  # what the resident agent serves (probe
                                                    # loads the model in a child process)
UPLOAD = "upload"          # the resident agent's upload line: raw bytes follow it
CHANGING = frozenset({"install", "activate", "rollback", "remove"})  # sent with --within S
SOCKET = "agentd.sock"     # STORE/SOCKET: the resident agent's Unix socket
HELLO_KEY = "agentd"       # the hello line: {HELLO_KEY: 1, "pid", "tag", "content_hash"}
HELLO_VERSION = 1

ERROR_CODES = ("bad_input", "environment", "conflict", "not_found", "hash_mismatch",
               "unsafe_bundle", "delegate_missing", "silent_cpu_fallback", "model_load_failed",
               "store_error", "run_failed", "expired", "delta_refused", "signature_refused",
               "downgrade_refused", "error")


def ok(kind: str, **data: Any) -> dict:
    return {"schema": SCHEMA, "ok": True, "kind": kind, **data}


def error(code: str, message: str, **data: Any) -> dict:
    return {"schema": SCHEMA, "ok": False, "kind": "error", "code": code, "message": message,
            **data}


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
    label: str | None = None      # e.g. qat-int8 for mode int8 (older agents: absent)
    sha256: str | None = None     # its model file's (what a delta can be built against)

    @classmethod
    def parse(cls, d: Any) -> "VersionEntry":
        return cls(_field(d, "version", str), _field(d, "mode", str, True),
                   _field(d, "size", int, True), _field(d, "error", str, True),
                   _field(d, "label", str, True), _field(d, "sha256", str, True))

    def describe(self) -> str:
        """"int8", or "int8 (qat-int8)" when the label says more than the mode."""
        if self.mode is None:
            return "?"
        return self.mode if not self.label or self.label == self.mode else \
            f"{self.mode} ({self.label})"


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
    emulated: bool | None = None   # its cpuinfo's CPU is not its uname -m's (qemu-user)

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
                   _field(store, "free_bytes", int, True), d, _field(d, "emulated", bool, True))


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
class Probe:
    """``probe``: can the board's runtime load and run the model (in a child process)?"""
    loads: bool
    reason: str | None             # None when it loads; see device/probe.py's REASONS
    message: str
    runtime: str | None
    runtime_version: str | None
    cached: bool
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, msg: Any) -> "Probe":
        return cls(_field(msg, "loads", bool), _field(msg, "reason", str, True),
                   _field(msg, "message", str), _field(msg, "runtime", str, True),
                   _field(msg, "runtime_version", str, True),
                   bool(_field(msg, "cached", bool, True)), msg)


@dataclass(frozen=True)
class Removed:
    """``remove``: a version, or (version None) the whole model."""
    name: str
    version: str | None
    versions: tuple[str, ...]
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, msg: Any) -> "Removed":
        version = _field(msg, "version", str, True)
        return cls(_field(msg, "name", str), version,
                   tuple(_field(msg, "versions", list, True) or ([version] if version else [])),
                   msg)


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
    placement: str | None = None   # where the ops ran, the line said first (older agents: None)
    warnings: tuple[str, ...] = ()  # emulated board, throttled during the run, …
    emulated: bool | None = None

    @classmethod
    def parse(cls, msg: Any) -> "Bench":
        rt = _field(msg, "runtime", dict)
        t = _field(msg, "timing", dict)
        delegate = _field(msg, "delegate", dict, True) or {}
        place = _field(msg, "placement", dict, True) or {}
        warnings = _field(msg, "warnings", list, True) or []
        return cls(ModelRef.parse(_field(msg, "model", dict)), _field(rt, "name", str),
                   _field(rt, "version", str, True), _field(msg, "threads", int),
                   _field(delegate, "applied", str, True), _field(msg, "load_ms", float),
                   _field(msg, "peak_rss_bytes", int), _field(t, "p50_ms", float),
                   _field(t, "p90_ms", float), _field(t, "p99_ms", float), msg,
                   _field(place, "line", str, True), tuple(str(w) for w in warnings),
                   _field(msg, "emulated", bool, True))


@dataclass(frozen=True)
class Eval:
    """``eval``: top-1 on the labels (None without labels), top-1 agreement with reference
    outputs, and each output's error against them, when given."""
    model: ModelRef
    samples: int
    top1: float | None
    agreement: float | None        # top1_agreement
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, msg: Any) -> "Eval":
        ag = _field(msg, "agreement", dict, True)
        return cls(ModelRef.parse(_field(msg, "model", dict)), _field(msg, "samples", int),
                   _field(msg, "top1", float, True),
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
