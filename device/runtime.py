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

from ..errors import EnvironmentProblem, InputError

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
            module = importlib.import_module(_MODULES[name])
        except Exception as exc:  # ImportError, or numpy ABI errors raised as others
            failures.append(f"{name}: {type(exc).__name__}: {exc}".splitlines()[0])
            continue
        if name == "tensorflow":
            module = _TfLiteShim(module)
        return Runtime(name, _version(name), module)
    raise EnvironmentProblem(
        "no TFLite runtime imports here (" + "; ".join(failures) + ")",
        hint="install ai-edge-litert (numpy 2) or tflite-runtime 2.14 with numpy<2")


class _TfLiteShim:
    """tf.lite exposes Interpreter and experimental.load_delegate; give it the runtime shape."""

    def __init__(self, lite: Any) -> None:
        self.Interpreter = lite.Interpreter
        self.load_delegate = lite.experimental.load_delegate


def make_interpreter(model: str | bytes | os.PathLike, *, num_threads: int | None = 1,
                     runtime: Runtime | None = None, delegates: list | None = None):
    """An allocated interpreter for a model file or its bytes; errors name the model."""
    rt = runtime or load_runtime()
    kwargs: dict[str, Any] = {"num_threads": num_threads}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    label = "<bytes>" if isinstance(model, (bytes, bytearray)) else str(model)
    try:
        with CapturedNativeOutput():  # keep the runtime's INFO lines off stdout/stderr
            if isinstance(model, (bytes, bytearray)):
                interp = rt.module.Interpreter(model_content=bytes(model), **kwargs)
            else:
                interp = rt.module.Interpreter(model_path=os.fspath(model), **kwargs)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"{label}: the {rt.name} runtime cannot load this model: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                         hint="is it a whole .tflite file, built for ops this runtime has?") from exc
    return interp


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
