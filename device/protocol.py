"""The JSON messages the agent and the host speak. Versioned; stdlib only; shared by both sides.

Every message is one JSON object with ``"schema": 1`` and ``"ok"``. The agent CLI prints exactly
one message on stdout per command (progress goes to stderr); its exit status is 0 when ``ok`` is
true and the error's exit code otherwise (2 bad input, 3 environment, 4 conflict in the store,
1 anything else). The serve endpoint exchanges the same objects, one per line (NDJSON).

Errors (any command)::

    {"schema": 1, "ok": false, "kind": "error", "code": "bad_input" | "environment" |
     "conflict" | "not_found" | "hash_mismatch" | "unsafe_bundle" | "delegate_missing" |
     "silent_cpu_fallback" | "model_load_failed" | "store_error" | "run_failed" |
     "not_here" | "error",
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
               "models": [...list...]}   # (`--model NAME`: that model only) one round trip; info's runtime facts are cached in
                                         # STORE/info-cache.json while Python, the agent and
                                         # every sys.path folder are unchanged
    install   {"name": "digits", "version": "3f2a9c1b0d4e", "path": ".../models/digits/3f2a9c1b0d4e",
               "files": 3, "bytes": 133000, "already_present": false}
    activate  {"name": ..., "current": "v2", "previous": "v1", "removed": ["v0"]}
    rollback  {"name": ..., "current": "v1", "previous": "v2"}
    list      {"models": [{"name": ..., "current": ..., "previous": ...,
                           "versions": [{"version": ..., "mode": "int8", "size": ...,
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
               "ops": null | [{"index", "op", "delegated"}], "op_timing": null | ..., "note": ...,
               "placement": {"requested", "applied", "compiled_for_edgetpu": false,
                             "edgetpu_ops": 0 | null, "xnnpack_ops": 8 | null,
                             "cpu_ops": 3 | null, "total_ops": 11 | null,
                             "cpu_only_on_edgetpu": false,
                             "line": "CPU: 8 of 11 ops in XNNPACK, ..."},  # said first
               "board": {"before": SNAPSHOT, "after": SNAPSHOT},  # around the timed runs;
                   # SNAPSHOT = {"temperature_c", "freq_khz", "governor", "throttled"}
               "warnings": ["the board throttled during the run (...)", ...],
               "emulated": true | false | null, "emulation": {...as info...}}
              (bench --allow-cpu: time it even when the Edge TPU took no op; without it that
               is the error silent_cpu_fallback, as is a model compiled for the Edge TPU
               benched without its delegate)
    eval      {"model": {...}, "runtime": {...}, "data": "test.npz", "samples": 540,
               "top1": 0.979, "top5": 1.0 | null,
               "agreement": null | {"samples", "top1_agreement", "mean_abs_error", "max_abs_error"},
               "seconds": 0.21}
    agentd --detach  {"started": true, "pid": 4242, "replaced": 4100 | null}
                     | {"started": false, "reason": "..."}
    agentd --stop    {"stopped": 4242 | null}     # (without either: runs the resident agent)

``batch`` answers each command on a line with the command's message plus ``"exit"``. The
resident agent (agentd.py) speaks the same over its socket after a hello line
``{"agentd": 1, "pid": N, "tag": T, "content_hash": H}``; commands other than the store's control
commands get ``not_here`` (bench, eval and serve run in their own process).

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
from typing import Any

SCHEMA = 1

ERROR_CODES = ("bad_input", "environment", "conflict", "not_found", "hash_mismatch",
               "unsafe_bundle", "delegate_missing", "silent_cpu_fallback", "model_load_failed",
               "store_error", "run_failed", "error")


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
