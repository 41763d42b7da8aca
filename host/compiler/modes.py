"""Compile modes and the decisions about them: pure functions, no TensorFlow.

=========  ============================================  ===================  =============
mode       what the converter does                       I/O tensors          needs
=========  ============================================  ===================  =============
float32    plain conversion                              float32              -
float16    weights stored as float16                     float32              -
dynamic    int8 weights, float activations (dyn. range)  float32              -
int8       full integer, calibrated                      float32|int8|uint8   --calib
int16x8    int16 activations, int8 weights, calibrated   float32|int16        --calib
edgetpu    full integer (uint8 I/O), then                int8|uint8           --calib
           edgetpu_compiler when on PATH
=========  ============================================  ===================  =============

``all`` is every mode that applies: the integer ones only with calibration data (or with --qat,
whose training learned the ranges).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import InputError

MODES = ("float32", "float16", "dynamic", "int8", "int16x8", "edgetpu")
INTEGER_MODES = frozenset({"int8", "int16x8", "edgetpu"})
IO_TYPES = {
    "float32": ("float32",), "float16": ("float32",), "dynamic": ("float32",),
    "int8": ("float32", "int8", "uint8"), "int16x8": ("float32", "int16"),
    "edgetpu": ("uint8", "int8"),
}


def default_io(mode: str) -> str:
    return "uint8" if mode == "edgetpu" else "float32"


@dataclass(frozen=True)
class Training:
    """A training-time optimization applied before conversion (at most one per compile)."""

    qat: bool = False
    prune: float | None = None
    cluster: int | None = None
    epochs: int = 2

    @property
    def active(self) -> bool:
        return self.qat or self.prune is not None or self.cluster is not None

    @property
    def tag(self) -> str:
        if self.qat:
            return "qat"
        if self.prune is not None:
            return f"prune{round(self.prune * 100)}"
        if self.cluster is not None:
            return f"cluster{self.cluster}"
        return ""


@dataclass(frozen=True)
class Plan:
    modes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]   # (mode, why)


def check_training(t: Training) -> None:
    chosen = [n for n, on in (("--qat", t.qat), ("--prune", t.prune is not None),
                              ("--cluster", t.cluster is not None)) if on]
    if len(chosen) > 1:
        raise InputError(f"{' and '.join(chosen)} cannot be combined in one compile",
                         hint="compile once per optimization")
    if t.prune is not None and not 0.0 < t.prune < 1.0:
        raise InputError(f"--prune takes a sparsity between 0 and 1 (e.g. 0.5), got {t.prune}")
    if t.cluster is not None and not 2 <= t.cluster <= 256:
        raise InputError(f"--cluster takes a number of clusters from 2 to 256, got {t.cluster}")
    if t.epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {t.epochs}")


def plan_modes(mode: str, *, has_calib: bool, training: Training, io: str | None) -> Plan:
    """Which modes to build for ``--mode MODE`` (MODE may be ``all``); errors for bad combos."""
    if mode != "all" and mode not in MODES:
        raise InputError(f"unknown mode {mode!r}", hint=f"choose one of {', '.join(MODES)}, all")
    check_training(training)
    wanted = MODES if mode == "all" else (mode,)
    chosen: list[str] = []
    skipped: list[tuple[str, str]] = []
    for m in wanted:
        if training.qat and m not in INTEGER_MODES - {"int16x8"}:
            if mode == "all":
                skipped.append((m, "--qat trains for 8-bit integer inference"))
                continue
            raise InputError(f"--qat produces an 8-bit integer model; mode {m} does not apply",
                             hint="use --mode int8 or --mode edgetpu with --qat")
        if m in INTEGER_MODES and not has_calib and not training.qat:
            if mode == "all":
                skipped.append((m, "no calibration data (--calib)"))
                continue
            raise InputError(f"mode {m} needs calibration data", hint="pass --calib DATA "
                             "(an .npz/.npy of inputs or a folder of images)")
        if io is not None and io not in IO_TYPES[m]:
            if mode == "all":
                chosen.append(m)  # --io applies to the modes that take it; others keep default
                continue
            raise InputError(f"--io {io} does not apply to mode {m}",
                             hint=f"mode {m} takes --io {'|'.join(IO_TYPES[m])}")
        chosen.append(m)
    return Plan(tuple(chosen), tuple(skipped))


def io_for(mode: str, io: str | None) -> str:
    if io is not None and io in IO_TYPES[mode]:
        return io
    return default_io(mode)


def label(mode: str, training: Training, compiled_for_edgetpu: bool = True) -> str:
    """The MODE part of NAME.MODE.tflite: e.g. int8, qat-int8, prune50-float32, edgetpu."""
    base = mode if (mode != "edgetpu" or compiled_for_edgetpu) else "edgetpu-int8"
    return f"{training.tag}-{base}" if training.active else base
