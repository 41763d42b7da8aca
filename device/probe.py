"""Can this board's runtime run a model? Load it in a child process and find out.

``probe(path)`` starts a child Python (the same interpreter, the same edgedeploy package — a
zipapp works too) that loads the model with the board's TFLite runtime, allocates its tensors
and invokes it once on zeros. The child can crash (tflite-runtime 2.14 dies with SIGSEGV on some
damaged models that pass every bounds check) without taking the agent, ``serve`` or the store
down with it. The answer names the reason a model is refused:

=================  =====================================================================
reason             what happened
=================  =====================================================================
invalid_model      not a valid model: no TFL3 flatbuffer, truncated, offsets out of range
missing_custom_op  "Encountered unresolved custom op: X" (an Edge TPU model without the
                   delegate, a Select TF op without Flex, any other custom op)
op_version         "Didn't find op for builtin opcode 'X' version 'N'", or an op code the
                   runtime doesn't know at all: the converter is newer than the runtime
crashed            the child died of a signal: "the runtime crashed loading it: signal 11"
no_delegate        an Edge TPU-compiled model, and the Edge TPU delegate does not load here
timeout            loading did not finish in time
load_failed        any other refusal of the runtime while loading or allocating
invoke_failed      it loaded but its first invoke on zeros failed
=================  =====================================================================

Results are cached under CACHE_DIR/<sha256>.json by the model's sha256 and the runtime packages
installed (name=version of each), so ``status`` can say "the current model loads" without a
child process each time. The child speaks JSON lines on its stdout::

    {"stage": "load" | "allocate" | "invoke"}           # before each stage
    {"ok": true, "runtime": "litert", "runtime_version": "2.3.0", "inputs": 1, "outputs": 2}
    {"ok": false, "stage": "load", "error": "<the runtime's message>", "runtime": …}

Stdlib + numpy + the runtime (in the child only, through device/runtime.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REASONS = ("invalid_model", "missing_custom_op", "op_version", "crashed", "no_delegate",
           "timeout", "load_failed", "invoke_failed")
NOT_CACHED = ("timeout", "no_delegate")   # a slow moment, an unplugged accelerator: no verdict
CACHE_SCHEMA = 1


@dataclass
class ProbeResult:
    ok: bool
    reason: str | None            # None when ok; else one of REASONS
    message: str                  # the one line a user reads
    sha256: str
    runtime: str | None = None    # the runtime the child loaded ("litert", "tflite_runtime", …)
    runtime_version: str | None = None
    stage: str | None = None      # where it stopped: read | load | allocate | invoke
    seconds: float = 0.0
    cached: bool = False
    details: dict = field(default_factory=dict)   # op, version, custom_op, signal, stderr tail

    def to_dict(self) -> dict:
        return asdict(self)


# -- pure: what the runtime said → a reason -------------------------------------------------------

_OP_VERSION = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")
_OP_RANGE = re.compile(r"Op builtin_code out of range: (\d+)")
_CUSTOM = re.compile(r"Encountered unresolved custom op: ([^\s.]+(?:\.[^\s.]+)*)\.?")
_INVALID = ("not a valid Flatbuffer", "model identifier", "Could not open", "Model provided has",
            "Invalid flatbuffer", "The model is not a valid", "not a TFLite")


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def classify(stage: str, error: str, *, returncode: int | None = None, runtime: str = "the",
             runtime_version: str = "") -> tuple[str, str, dict]:
    """(reason, message, details) for a child that stopped at STAGE saying ERROR, or died with
    RETURNCODE (negative: the signal). Pure: tested as a table."""
    rt = f"{runtime} {runtime_version}".strip()
    if returncode is not None and returncode < 0:
        sig = -returncode
        where = "loading it" if stage in ("read", "load", "allocate") else "at its first invoke"
        return "crashed", (f"the runtime crashed {where}: signal {sig} ({_signal_name(sig)})"), \
            {"signal": sig}
    text = " ".join(error.split())
    m = _OP_VERSION.search(text)
    if m:
        op, ver = m.group(1), int(m.group(2))
        return "op_version", (f"{rt} lacks {op} version {ver} (\"Didn't find op for builtin "
                              f"opcode '{op}' version '{ver}'\"): the model was converted by a "
                              f"newer TensorFlow than this runtime"), {"op": op, "version": ver}
    m = _OP_RANGE.search(text)
    if m:
        return "op_version", (f"{rt} does not know builtin op code {m.group(1)}: the model was "
                              f"converted by a newer TensorFlow than this runtime"), \
            {"op_code": int(m.group(1))}
    if "Select TensorFlow op" in text:
        return "missing_custom_op", (f"the model uses TensorFlow Select (Flex) ops, which {rt} "
                                     f"does not include"), {"custom_op": "Flex"}
    m = _CUSTOM.search(text)
    if m:
        op = m.group(1)
        hint = " (an Edge TPU model runs through the Edge TPU delegate)" \
            if op == "edgetpu-custom-op" else ""
        return "missing_custom_op", f"{rt} lacks the custom op {op!r}{hint}", {"custom_op": op}
    if stage == "read" or any(s in text for s in _INVALID):
        return "invalid_model", f"not a valid model: {text[:300]}", {}
    if stage == "invoke":
        return "invoke_failed", f"it loaded but its first invoke on zeros failed: {text[:300]}", {}
    return "load_failed", f"{rt} cannot load it: {text[:300]}", {}


# -- the child ------------------------------------------------------------------------------------

def _emit(fd: int, msg: dict) -> None:
    os.write(fd, (json.dumps(msg) + "\n").encode())


def _child(model_path: str, runtime: str | None, edgetpu: bool = False) -> int:
    """In the child: load (with the Edge TPU delegate for an Edge TPU model), allocate, invoke
    on zeros; JSON lines on the real stdout."""
    import numpy as np

    from ..errors import DelegateMissing
    from .flatbuffer_check import FlatbufferError, check_tflite
    from .runtime import CapturedNativeOutput, load_edgetpu, load_runtime

    out = os.dup(1)
    info: dict = {}
    stage = "read"
    try:
        _emit(out, {"stage": stage})
        with open(model_path, "rb") as f:
            data = f.read()
        check_tflite(data)
        rt = load_runtime(runtime)
        info = {"runtime": rt.name, "runtime_version": rt.version}
        stage = "load"
        _emit(out, {"stage": stage, **info})
        kwargs: dict = {"num_threads": 1}
        if edgetpu:
            try:
                kwargs["experimental_delegates"] = [load_edgetpu(rt)]
            except DelegateMissing as exc:
                _emit(out, {"ok": False, "stage": stage, "reason": "no_delegate",
                            "error": str(exc), **info})
                return 0
        cap = CapturedNativeOutput()
        try:
            with cap:
                interp = rt.module.Interpreter(model_path=model_path, **kwargs)
                stage = "allocate"
                _emit(out, {"stage": stage})
                interp.allocate_tensors()
                stage = "invoke"
                _emit(out, {"stage": stage})
                for d in interp.get_input_details():
                    interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
                interp.invoke()
        except Exception as exc:
            text = str(exc).strip() or type(exc).__name__
            if cap.text.strip() and cap.text.strip() not in text:
                text = f"{text} {cap.text.strip()[-500:]}"
            _emit(out, {"ok": False, "stage": stage, "error": text, **info})
            return 0
        _emit(out, {"ok": True, "inputs": len(interp.get_input_details()),
                    "outputs": len(interp.get_output_details()), **info})
        return 0
    except FlatbufferError as exc:
        _emit(out, {"ok": False, "stage": "read", "error": str(exc), **info})
        return 0
    except Exception as exc:  # the runtime does not import, the file is unreadable, …
        _emit(out, {"ok": False, "stage": stage, "error": f"{type(exc).__name__}: {exc}",
                    **info})
        return 0


_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); "
          "from edgedeploy.device.probe import _child; "
          "sys.exit(_child(sys.argv[2], sys.argv[3] or None, sys.argv[4] == '1'))")


def _package_root() -> str:
    """The sys.path entry that holds the edgedeploy package (a folder, or the agent zipapp)."""
    import edgedeploy

    return str(Path(edgedeploy.__file__).parent.parent)


# -- the cache ------------------------------------------------------------------------------------

def runtime_key(runtime: str | None, edgetpu: bool = False) -> str:
    """Names what would load a model: the runtime asked for and every runtime package installed
    (metadata only: nothing is imported), and whether the Edge TPU delegate is used."""
    from .runtime import runtime_versions

    got = runtime_versions()
    return f"{runtime or 'auto'}:" + ",".join(f"{k}={got[k]}" for k in sorted(got)) + \
        (":edgetpu" if edgetpu else "")


def _cache_path(cache_dir: str | os.PathLike, sha: str) -> Path:
    return Path(cache_dir) / f"{sha}.json"


def cached(cache_dir: str | os.PathLike | None, sha: str, key: str) -> ProbeResult | None:
    if cache_dir is None:
        return None
    try:
        data = json.loads(_cache_path(cache_dir, sha).read_text())
        entry = data["results"][key]
        if data.get("schema") != CACHE_SCHEMA:
            return None
        return ProbeResult(**{**entry, "cached": True})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remember(cache_dir: str | os.PathLike | None, sha: str, key: str, r: ProbeResult) -> None:
    if cache_dir is None or r.reason in NOT_CACHED:
        return
    path = _cache_path(cache_dir, sha)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text())
            if data.get("schema") != CACHE_SCHEMA:
                raise ValueError
        except (OSError, ValueError):
            data = {"schema": CACHE_SCHEMA, "results": {}}
        data["results"][key] = {**r.to_dict(), "cached": False}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that can't be written costs a child process next time, nothing else


# -- the parent -----------------------------------------------------------------------------------

def _sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def probe(model_path: str | os.PathLike, *, runtime: str | None = None, timeout: float = 120,
          cache_dir: str | os.PathLike | None = None, sha256: str | None = None,
          edgetpu: bool = False, cache_refusals: bool = True) -> ProbeResult:
    """Load MODEL_PATH in a child process with RUNTIME (default: the one make_interpreter would
    pick; EDGETPU: with the Edge TPU delegate), allocate, invoke once on zeros. Never raises for
    a bad model: the result says why. InputError only when MODEL_PATH can't be read at all.
    CACHE_REFUSALS=False writes only a success to CACHE_DIR (an install that refuses a model
    leaves the store exactly as it was)."""
    from ..errors import InputError

    path = os.fspath(model_path)
    try:
        sha = sha256 or _sha256(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the model ({exc.strerror})") from exc
    key = runtime_key(runtime, edgetpu)
    hit = cached(cache_dir, sha, key)
    if hit is not None:
        return hit
    t0 = time.monotonic()
    result = _run_child(path, sha, runtime, timeout, edgetpu)
    result.seconds = round(time.monotonic() - t0, 3)
    if result.ok or cache_refusals:
        _remember(cache_dir, sha, key, result)
    return result


def gate(model_path: str | os.PathLike, manifest, *, runtime: str | None,
         cache_dir: str | os.PathLike | None, what: str, timeout: float = 120) -> ProbeResult:
    """For install, activate and serve: the probe's result if MODEL_PATH runs here, else
    ModelLoadFailed naming WHAT (e.g. "model digits version 3f2a…") and the reason. Only a
    success is cached."""
    from ..errors import ModelLoadFailed

    etpu = bool(manifest is not None and manifest.edgetpu and manifest.edgetpu.get("compiled"))
    r = probe(model_path, runtime=runtime, timeout=timeout, cache_dir=cache_dir,
              sha256=getattr(manifest, "sha256", None), edgetpu=etpu, cache_refusals=False)
    if not r.ok:
        raise ModelLoadFailed(f"{what} cannot run on this board: {r.message}",
                              hint="the store is unchanged; the board keeps its active model")
    return r


def _run_child(path: str, sha: str, runtime: str | None, timeout: float,
               edgetpu: bool = False) -> ProbeResult:
    from .flatbuffer_check import FlatbufferError, check_tflite

    try:  # the cheap check first, in this process: a broken file needs no child
        with open(path, "rb") as f:
            check_tflite(f.read())
    except FlatbufferError as exc:
        reason, message, details = classify("read", str(exc))
        return ProbeResult(False, reason, message, sha, stage="read", details=details)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, _package_root(), path, runtime or "",
                               "1" if edgetpu else "0"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return ProbeResult(False, "timeout", f"loading it did not finish in {timeout:g} s", sha)
    lines = []
    for raw in proc.stdout.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(raw)
            if isinstance(msg, dict):
                lines.append(msg)
        except ValueError:
            continue
    facts: dict = {}
    stage = "read"
    final = None
    for msg in lines:
        if "stage" in msg:
            stage = msg["stage"]
        if "runtime" in msg:
            facts = {"runtime": msg["runtime"], "runtime_version": msg.get("runtime_version")}
        if "ok" in msg:
            final = msg
    tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
    rt, rv = facts.get("runtime") or (runtime or "the"), facts.get("runtime_version") or ""
    if final is None:
        rc = proc.returncode if proc.returncode < 0 else None
        reason, message, details = classify(stage, " ".join(tail) or "no answer",
                                            returncode=rc, runtime=rt, runtime_version=rv)
        if rc is None:
            message = f"the probe process exited {proc.returncode} without an answer: " \
                      f"{' '.join(tail)[-300:] or 'no output'}"
        return ProbeResult(False, reason, message, sha, facts.get("runtime"),
                           facts.get("runtime_version"), stage,
                           details={**details, "stderr": tail})
    if final.get("ok"):
        return ProbeResult(True, None, "loads, allocates and runs on zeros", sha,
                           facts.get("runtime"), facts.get("runtime_version"), "done",
                           details={"inputs": final.get("inputs"),
                                    "outputs": final.get("outputs")})
    if final.get("reason") == "no_delegate":
        return ProbeResult(False, "no_delegate", "an Edge TPU model, and the Edge TPU delegate "
                           f"does not load here: {final.get('error', '')}", sha,
                           facts.get("runtime"), facts.get("runtime_version"), "load")
    reason, message, details = classify(final.get("stage", stage), final.get("error", ""),
                                        runtime=rt, runtime_version=rv)
    return ProbeResult(False, reason, message, sha, facts.get("runtime"),
                       facts.get("runtime_version"), final.get("stage", stage), details=details)
