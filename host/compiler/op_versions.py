"""Can a board's runtime load this model? The host-side answer, from the flatbuffer alone.

A .tflite names each op with a version; a runtime has kernels up to some version of each op.
"Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'" is what a board says when the
converter (TF 2.21 writes FULLY_CONNECTED v12 into dynamic-range models) is newer than the
board's runtime (tflite-runtime 2.14, Raspberry Pi OS's). Pure functions of data:

- ``op_table.INTRODUCED`` — LiteRT's own map (op, version) → the first TensorFlow release whose
  runtime has that kernel (``runtime_version.cc``, the table the converter uses to write
  ``min_runtime_version`` into every model; regenerate with scripts/gen_op_versions.py);
- ``tf_equivalent(runtime, version)`` — the TensorFlow release a runtime's kernels match.
  tflite-runtime and tensorflow are numbered as TensorFlow. ai-edge-litert numbers its releases
  apart (``LITERT_TF``): the newest entry of that op table at each LiteRT release tag
  (google-ai-edge/LiteRT, ``git show vX:…/runtime_version.cc``). Measured here on every
  (op, version) pair of the table, with a model per pair naming only that op code:
  tflite-runtime 2.14.0 resolves exactly the pairs introduced up to 2.14.0, ai-edge-litert 2.3.0
  every pair up to 2.23.0 but STABLEHLO_CBRT (no kernel in its builtin resolver);
  tests/device/test_op_versions.py repeats that measurement in both board envs.
- custom ops: ``BUILTIN_CUSTOM`` are registered by both pip runtimes (measured); any other
  custom op needs a delegate or a custom runtime build (``edgetpu-custom-op``: the Edge TPU
  delegate; ``Flex*``: the TensorFlow Select ops delegate, in neither pip runtime).

``check(ops, runtime, version, edgetpu=False)`` lists what the runtime lacks; an empty list is a
prediction, not a proof: the board's probe (device/probe.py) loads the model for real.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

from .op_table import INTRODUCED

# ai-edge-litert release (major.minor) → the TensorFlow release its kernels match: the newest
# version in LiteRT's runtime_version.cc at the release tag (v1.0.x pinned TensorFlow master
# of 2024-09-03, before 2.18.0 shipped: taken as 2.18.0, the optimistic side: the probe on the
# board has the last word).
LITERT_TF = {
    (1, 0): "2.18.0", (1, 1): "2.19.0", (1, 2): "2.19.0", (1, 3): "2.20.0", (1, 4): "2.20.0",
    (2, 0): "2.21.0", (2, 1): "2.22.0", (2, 2): "2.23.0", (2, 3): "2.23.0",
}
# Kernels that a runtime's table entry promises but its builtin resolver lacks (measured).
MISSING = {("litert", "STABLEHLO_CBRT", 1)}
# Custom ops the default resolver of both pip runtimes registers (measured: both resolve them).
BUILTIN_CUSTOM = frozenset({"TFLite_Detection_PostProcess", "Mfcc", "AudioSpectrogram"})
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"


def parse_version(text: str) -> tuple[int, ...] | None:
    parts = []
    for p in text.strip().split("."):
        digits = "".join(ch for ch in p if ch.isdigit()) if p[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def tf_equivalent(runtime: str, version: str | None) -> str | None:
    """The TensorFlow release whose kernels RUNTIME VERSION has; None when unknown."""
    v = parse_version(version or "")
    if v is None:
        return None
    if runtime in ("tflite_runtime", "tensorflow"):
        return _fmt((v + (0, 0))[:3])
    if runtime == "litert":
        key = (v + (0,))[:2]
        if key in LITERT_TF:
            return LITERT_TF[key]
        known = sorted(LITERT_TF)
        if key > known[-1]:  # newer than this table: at least what the newest one had
            return LITERT_TF[known[-1]]
        return None
    return None


def introduced(op: str, version: int) -> str | None:
    """The TensorFlow release that introduced VERSION of builtin OP (None: not in the table)."""
    return INTRODUCED.get(op, {}).get(version)


def min_runtime(ops: Iterable[tuple[str, int]]) -> str | None:
    """The TensorFlow-numbered runtime a model with these (op, version) pairs needs at least
    (what the converter writes as ``min_runtime_version``)."""
    best: tuple[int, ...] | None = None
    for op, ver in ops:
        rv = introduced(op, ver)
        pv = parse_version(rv) if rv else None
        if pv is not None and (best is None or pv > best):
            best = pv
    return _fmt(best) if best else None


@dataclass(frozen=True)
class Problem:
    kind: str          # "custom_op" | "op_version"
    op: str
    version: int
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def check(ops: Iterable[tuple[str, int, bool]], runtime: str, version: str | None, *,
          edgetpu: bool = False) -> list[Problem]:
    """What RUNTIME VERSION lacks to load a model with OPS: (type, version, is_custom) per op code
    (custom ops by their custom code). EDGETPU: the board has a working Edge TPU delegate."""
    tf = tf_equivalent(runtime, version)
    tfv = parse_version(tf) if tf else None
    seen: set[tuple[str, int]] = set()
    out: list[Problem] = []
    label = f"{runtime} {version}" + (f" (≈ TensorFlow {tf})" if tf and runtime == "litert" else "")
    for op, ver, custom in ops:
        if (op, ver) in seen:
            continue
        seen.add((op, ver))
        if custom:
            if op in BUILTIN_CUSTOM or (op == EDGETPU_CUSTOM_OP and edgetpu):
                continue
            if op == EDGETPU_CUSTOM_OP:
                why = "an Edge TPU-compiled model runs only through the Edge TPU delegate, and " \
                      "this board has none working"
            elif op.startswith("Flex"):
                why = "a TensorFlow Select op: it needs the Flex delegate, which neither " \
                      "tflite-runtime nor ai-edge-litert includes"
            else:
                why = "the runtime has no such custom op (it needs a custom build or delegate)"
            out.append(Problem("custom_op", op, ver, f"custom op {op!r}: {why}"))
            continue
        if (runtime, op, ver) in MISSING:
            out.append(Problem("op_version", op, ver,
                               f"{op} version {ver}: {label} has no kernel for it (measured)"))
            continue
        rv = introduced(op, ver)
        if tfv is None or rv is None:
            continue  # unknown runtime, or an op version this table doesn't know: the probe decides
        if parse_version(rv) > tfv:  # type: ignore[operator]
            out.append(Problem("op_version", op, ver,
                               f"{op} version {ver} needs a TFLite runtime of TensorFlow {rv} or "
                               f"newer; {label} has older kernels"))
    return out


def ops_of(requires: dict) -> list[tuple[str, int, bool]]:
    """A manifest's ``requires`` as the (op, version, custom) list ``check`` takes."""
    return [(op, int(v), False) for op, v in (requires.get("ops") or {}).items()] + \
        [(op, 1, True) for op in requires.get("custom_ops") or []]


def board_check(requires: dict | None, info: dict) -> list[Problem]:
    """What a board lacks for a model: REQUIRES from its manifest, INFO the agent's ``info``
    answer (``runtime``, ``runtimes``, ``delegates``). Nothing to say without ``requires``."""
    if not requires:
        return []
    runtime = info.get("runtime")
    version = (info.get("runtimes") or {}).get(runtime) if runtime else None
    edgetpu = bool(((info.get("delegates") or {}).get("edgetpu") or {}).get("available"))
    return check(ops_of(requires), runtime or "", version, edgetpu=edgetpu)
