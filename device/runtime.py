"""Make a TFLite interpreter from whichever runtime the board has.

Preference: ``ai_edge_litert`` (LiteRT, works with numpy 2) → ``tflite_runtime`` (2.14, needs
numpy 1.x) → ``tensorflow.lite`` (a workstation). ``EDGEDEPLOY_RUNTIME`` or the ``runtime``
argument names one of ``litert``, ``tflite_runtime``, ``tensorflow`` to force it.
This is the only module of edgedeploy.device that imports a runtime, and only on first use.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from ..errors import DelegateMissing, EnvironmentProblem, InputError, ModelLoadFailed

RUNTIMES = ("litert", "tflite_runtime", "tensorflow")
_MODULES = {
    "litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    module: Any  # has Interpreter and load_delegate


def _version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version({"litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
                        "tensorflow": "tensorflow"}[name])
    except Exception:
        return "unknown"


def load_runtime(prefer: str | None = None) -> Runtime:
    """The first runtime that imports, in preference order (or exactly ``prefer``)."""
    prefer = prefer or os.environ.get("EDGEDEPLOY_RUNTIME") or None
    if prefer is not None and prefer not in RUNTIMES:
        raise InputError(f"unknown runtime {prefer!r}", hint=f"choose one of {', '.join(RUNTIMES)}")
    order = [prefer] if prefer else list(RUNTIMES)
    failures = []
    for name in order:
        try:
            module: Any = importlib.import_module(_MODULES[name])
        except Exception as exc:  # ImportError, or numpy ABI errors raised as others
            failures.append(f"{name}: {type(exc).__name__}: {exc}".splitlines()[0])
            continue
        if name == "tensorflow":
            module = _TfLiteShim(module)
        return Runtime(name, _version(name), module)
    raise EnvironmentProblem(
        "no TFLite runtime imports here (" + "; ".join(failures) + ")",
        hint="install ai-edge-litert (numpy 2) or tflite-runtime 2.14 with numpy<2")


def runtime_versions() -> dict[str, str | None]:
    """Which runtimes are installed (by package metadata; nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name, dist in (("litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"),
                       ("tensorflow", "tensorflow")):
        try:
            found[name] = version(dist)
        except PackageNotFoundError:
            found[name] = None
    return found


class _TfLiteShim:
    """tf.lite exposes Interpreter and experimental.load_delegate; give it the runtime shape."""

    def __init__(self, lite: Any) -> None:
        self.Interpreter = lite.Interpreter
        self.load_delegate = lite.experimental.load_delegate
        self.OpResolverType = lite.experimental.OpResolverType


EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib",
                   "Windows": "edgetpu.dll"}
DELEGATE_CHOICES = ("auto", "xnnpack", "none", "edgetpu")


def load_edgetpu(rt: Runtime, device: str | None = None):
    """The Edge TPU delegate (``load_delegate("libedgetpu.so.1")``), or DelegateMissing."""
    import platform

    lib = EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")
    try:
        import ctypes

        ctypes.CDLL(lib)  # cheap probe first: a failed load_delegate leaves noise at exit
        with CapturedNativeOutput():
            return rt.module.load_delegate(lib, {"device": device} if device else {})
    except (OSError, ValueError, RuntimeError) as exc:
        raise DelegateMissing(
            f"the Edge TPU delegate does not load ({lib}: {str(exc).splitlines()[0]})",
            hint="install libedgetpu1-std from Coral's apt repository and plug in the "
                 "accelerator, or bench with --delegate none") from exc


def make_interpreter(model: str | bytes | os.PathLike, *, num_threads: int | None = 1,
                     runtime: Runtime | None = None, delegates: list | None = None,
                     default_delegates: bool = True):
    """An allocated interpreter for a model file or its bytes; errors name the model.

    ``default_delegates=False`` turns off the runtime's built-in XNNPACK delegate."""
    rt = runtime or load_runtime()
    kwargs: dict[str, Any] = {"num_threads": num_threads}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    if not default_delegates:
        kwargs["experimental_op_resolver_type"] = \
            rt.module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    label = "<bytes>" if isinstance(model, (bytes, bytearray)) else str(model)
    _check_flatbuffer(model, label, rt.name)
    try:
        with CapturedNativeOutput():  # keep the runtime's INFO lines off stdout/stderr
            if isinstance(model, (bytes, bytearray)):
                interp = rt.module.Interpreter(model_content=bytes(model), **kwargs)
            else:
                interp = rt.module.Interpreter(model_path=os.fspath(model), **kwargs)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadFailed(f"{label}: the {rt.name} runtime cannot load this model: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                         hint="is it a whole .tflite file, built for ops this runtime has?") from exc
    return interp


def _check_flatbuffer(model, label: str, runtime: str) -> None:
    """Refuse a truncated or foreign file before the runtime sees it (tflite-runtime 2.14
    crashes on those instead of raising)."""
    from .flatbuffer_check import FlatbufferError, check_tflite

    try:
        data = bytes(model) if isinstance(model, (bytes, bytearray)) else \
            open(os.fspath(model), "rb").read()
    except FileNotFoundError:
        raise InputError(f"{label}: no such model file") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read the model ({exc.strerror})") from exc
    try:
        check_tflite(data)
    except FlatbufferError as exc:
        raise ModelLoadFailed(f"{label}: the {runtime} runtime cannot load this model: {exc}",
                              hint="copy the whole .tflite file again") from exc


def delegation(interp) -> dict:
    """Which ops a delegate took: every DELEGATE node's partition, found by walking back from
    its outputs through the original ops to its inputs. Returns
    {"delegate_nodes", "delegated_ops", "total_ops", "ops": [{"index", "op", "delegated"}]}."""
    try:
        details = interp._get_ops_details()
    except Exception:  # a runtime without the private API: say we cannot tell
        return {"delegate_nodes": None, "delegated_ops": None, "total_ops": None, "ops": []}
    originals = [d for d in details if d["op_name"] != "DELEGATE"]
    nodes = [d for d in details if d["op_name"] == "DELEGATE"]
    producer = {}
    for d in originals:
        for t in d["outputs"]:
            producer[int(t)] = d["index"]
    by_index = {d["index"]: d for d in originals}
    taken: set[int] = set()
    for node in nodes:
        boundary = {int(t) for t in node["inputs"]}
        stack = [int(t) for t in node["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in boundary or t not in producer:
                continue
            seen.add(t)
            op = producer[t]
            if op not in taken:
                taken.add(op)
                stack.extend(int(i) for i in by_index[op]["inputs"])
    return {"delegate_nodes": len(nodes), "delegated_ops": len(taken),
            "total_ops": len(originals),
            "ops": [{"index": d["index"], "op": d["op_name"], "delegated": d["index"] in taken}
                    for d in originals]}


class CapturedNativeOutput:
    """Context manager: send what native code (TF, the runtime's C++ logging) writes to the
    process's fd 1 and 2 into a temporary file, so stdout stays clean for JSON and the user sees
    one clear line. ``text`` holds what was written, for error messages."""

    def __init__(self) -> None:
        self.text = ""

    def __enter__(self) -> "CapturedNativeOutput":
        import sys
        import tempfile

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        self._file = tempfile.TemporaryFile(mode="w+b")
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        import sys

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()
