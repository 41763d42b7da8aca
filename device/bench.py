"""Timing of a loaded interpreter: warmup, then timed invokes, with percentiles and raw samples."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


def random_inputs(interp, seed: int = 0) -> list[np.ndarray]:
    """One random array per input, in the input's dtype and range."""
    rng = np.random.default_rng(seed)
    arrays = []
    for d in interp.get_input_details():
        dtype = np.dtype(d["dtype"])
        shape = tuple(d["shape"])
        if dtype.kind == "f":
            arrays.append(rng.random(shape, dtype=np.float32).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, shape).astype(bool))
        else:
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype))
    return arrays


@dataclass
class Timing:
    runs: int
    warmup: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    samples_ms: list[float] = field(repr=False)


def summarize(samples_ms: list[float], warmup: int = 0) -> Timing:
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return Timing(len(a), warmup, float(a.min()), float(a.mean()), float(p50), float(p90),
                  float(p99), float(a.max()), float(a.std()), [round(float(s), 4) for s in a])


def time_invokes(interp, runs: int, warmup: int = 10, inputs: list[np.ndarray] | None = None,
                 max_seconds: float | None = None) -> Timing:
    """Set the inputs once, invoke ``warmup`` times untimed, then time ``runs`` invokes."""
    details = interp.get_input_details()
    for d, arr in zip(details, inputs or random_inputs(interp)):
        interp.set_tensor(d["index"], arr)
    invoke = interp.invoke
    for _ in range(warmup):
        invoke()
    clock = time.perf_counter_ns
    deadline = None if max_seconds is None else time.perf_counter() + max_seconds
    samples = []
    for _ in range(runs):
        t0 = clock()
        invoke()
        samples.append((clock() - t0) / 1e6)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return summarize(samples, warmup)
