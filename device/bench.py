"""Timing of a loaded interpreter: warmup, then timed invokes, with percentiles and raw samples."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


def random_array(dtype, shape, *, quantized: bool, rng) -> np.ndarray:
    """Random data for one input of DTYPE and SHAPE: floats in [0, 1); a quantized integer input
    over its whole range; an integer input that is not quantized (ids, indices, lengths) in
    {0, 1}, so a gather or an embedding lookup stays in bounds; bools; empty strings."""
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        if quantized:
            info = np.iinfo(dtype)
            return rng.integers(int(info.min), int(info.max), shape, dtype=dtype,
                                endpoint=True)
        return rng.integers(0, 2, shape).astype(dtype)
    if dtype.kind in "SUO":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=dtype)


def random_inputs(interp, seed: int = 0) -> list[np.ndarray]:
    """One random array per input, in the input's dtype, shape and range."""
    rng = np.random.default_rng(seed)
    return [random_array(d["dtype"], d["shape"], rng=rng,
                         quantized=bool((d.get("quantization") or (0.0, 0))[0]))
            for d in interp.get_input_details()]


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


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory. Linux: VmHWM of /proc/self/status, which starts
    afresh at exec — getrusage's ru_maxrss does not (it keeps the parent's peak from before the
    fork, so an agent started by a 800 MiB test runner reported 830 MiB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)
    except Exception:
        return None


def load_inputs(path: str, interp, manifest=None) -> list[np.ndarray]:
    """Inputs from an .npz/.npy: one array per model input, keyed by input name (``x`` or the
    only array for a model with one input); a batch is cut to its first sample; float data for
    a quantized input is quantized."""
    from ..errors import InputError
    from .evaluate import check_inputs, match, ports, quantize

    ins, _ = ports(interp, manifest)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npz/.npy ({exc})") from exc
    arrays = {"x": data} if isinstance(data, np.ndarray) else {k: data[k] for k in data.keys()}
    found = match(list(arrays), ins, path, single="x", what="input")
    out = []
    for p in ins:
        a = arrays[found[p.key]]
        d = p.detail
        want = list(d["shape"])
        if list(a.shape) == want:
            a = a.reshape([1] + want[1:]) if want and want[0] == 1 else a
        else:
            check_inputs(a, d, path, p.key if len(ins) > 1 else None)
            a = a[:1]
        out.append(quantize(a, d) if a.dtype != np.dtype(d["dtype"]) else a)
    return out


def bench_model(model_path: str, *, runs: int = 100, warmup: int = 10, threads: int = 1,
                delegate: str = "auto", max_seconds: float | None = None,
                inputs_path: str | None = None, op_profile: bool = False,
                edgetpu_model: bool = False, runtime=None, manifest=None,
                allow_cpu: bool = False) -> dict:
    """Cold load, first invoke, warm runs; the delegate actually applied and how many ops it
    took (``placement``); the board's temperature, clock and throttling before and after the
    timed runs. A run that would not be on the Edge TPU although the model or the request
    says Edge TPU raises SilentCpuFallback unless ALLOW_CPU (see ``edgetpu_placement``)."""
    from ..errors import InputError
    from .runtime import DELEGATE_CHOICES, delegation, load_edgetpu, load_runtime, \
        make_interpreter

    if delegate not in DELEGATE_CHOICES:
        raise InputError(f"unknown delegate {delegate!r}",
                         hint=f"choose one of {', '.join(DELEGATE_CHOICES)}")
    if runs < 1 or warmup < 0 or threads < 1:
        raise InputError("--runs and --threads must be ≥ 1 and --warmup ≥ 0")
    rt = runtime or load_runtime()
    compiled = edgetpu_model or has_edgetpu_custom_op(model_path)
    refuse_uncompiled_run(model_path, compiled, delegate, allow_cpu)
    delegates = [load_edgetpu(rt)] if delegate == "edgetpu" else None
    t0 = time.perf_counter_ns()
    # with the Edge TPU delegate, XNNPACK stays off: every delegated op is the Edge TPU's
    interp = load_for_bench(model_path, compiled, num_threads=threads, runtime=rt,
                            delegates=delegates,
                            default_delegates=delegate not in ("none", "edgetpu"),
                            make=make_interpreter)
    load_ms = (time.perf_counter_ns() - t0) / 1e6
    placed = delegation(interp)
    place = edgetpu_placement(delegate, placed["delegate_nodes"], placed["delegated_ops"],
                              placed["total_ops"], compiled)
    check_placement(model_path, place, allow_cpu)
    applied = place["applied"]
    arrays = load_inputs(inputs_path, interp, manifest) if inputs_path else random_inputs(interp)
    for d, a in zip(interp.get_input_details(), arrays):
        interp.set_tensor(d["index"], a)
    t0 = time.perf_counter_ns()
    interp.invoke()
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    before = board_snapshot()
    timing = time_invokes(interp, runs, warmup, arrays, max_seconds)
    after = board_snapshot()
    result = {
        "threads": threads,
        "delegate": {"requested": delegate, "applied": applied,
                     "delegated_ops": placed["delegated_ops"], "total_ops": placed["total_ops"]},
        "load_ms": round(load_ms, 4), "first_invoke_ms": round(first_ms, 4),
        "timing": timing.__dict__, "peak_rss_bytes": peak_rss_bytes(),
        "inputs": inputs_path or "random",
        "ops": placed["ops"] if op_profile else None,
        "op_timing": None,
        "placement": place,
        **board_conditions(before, after),
    }
    if op_profile:
        result["note"] = OP_TIMING_NOTE
    return result


# Checked on ai-edge-litert 2.3.0 and tflite-runtime 2.14 (what the boards run): the Python
# Interpreter of both has no profiler hook (no method or constructor option hands out op events;
# `experimental_force_delegate_node_profiling` only changes what an attached C++ profiler
# records). libLiteRt.so exports a CompiledModel profiler (LiteRtCompiledModelGetProfiler,
# LiteRtGetProfilerEvents), but it only records when the model was compiled with the "runtime"
# options' enable_profiling, which ai_edge_litert.Options does not expose; setting it through
# ctypes would tie the agent to one library build's private layout.
OP_TIMING_NOTE = ("per-op times are not measured: the TFLite Python interpreters on this board "
                  "(LiteRT, tflite-runtime) expose no op profiler, and LiteRT's C profiler "
                  "cannot be switched on from Python; TFLite's C++ benchmark_model "
                  "--enable_op_profiling=true gives them. The op list shows what each op is "
                  "and whether the delegate took it.")


# -- where the ops ran (Edge TPU honesty) ---------------------------------------------------
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"


def has_edgetpu_custom_op(model_path: str) -> bool:
    """Whether edgetpu_compiler made this model (its segments are ``edgetpu-custom-op``)."""
    from .flatbuffer_check import FlatbufferError, custom_op_names

    try:
        with open(model_path, "rb") as f:
            return EDGETPU_CUSTOM_OP in custom_op_names(f.read())
    except (OSError, FlatbufferError):
        return False  # make_interpreter says what is wrong with the file


def refuse_uncompiled_run(model_path: str, compiled: bool, delegate: str,
                          allow_cpu: bool) -> None:
    """An Edge TPU model benched without the Edge TPU delegate: not an Edge TPU timing."""
    from ..errors import SilentCpuFallback

    if compiled and delegate != "edgetpu" and not allow_cpu:
        raise SilentCpuFallback(
            f"{model_path}: compiled for the Edge TPU ({EDGETPU_CUSTOM_OP}), but benched with "
            f"--delegate {delegate}: the Edge TPU delegate took no op, so nothing would run on "
            f"the Edge TPU", hint="bench it with --delegate edgetpu on a board with an Edge "
                                  "TPU (--allow-cpu to try the CPU anyway)")


def load_for_bench(model_path: str, compiled: bool, *, make, **kw):
    """make_interpreter, saying plainly why a compiled model does not load without the
    Edge TPU delegate (its custom op has no CPU kernel)."""
    from ..errors import ModelLoadFailed

    try:
        return make(model_path, **kw)
    except ModelLoadFailed as exc:
        if compiled and not kw.get("delegates") and "custom" in str(exc).lower():
            raise ModelLoadFailed(
                f"{model_path}: compiled for the Edge TPU ({EDGETPU_CUSTOM_OP}): it cannot run "
                f"without the Edge TPU delegate (CPU only: {exc.message.split(': ', 1)[-1]})",
                hint="bench it with --delegate edgetpu on a board with an Edge TPU, or bench "
                     "the uncompiled int8 model on the CPU") from exc
        raise


def edgetpu_placement(requested: str, delegate_nodes: int | None, delegated_ops: int | None,
                      total_ops: int | None, compiled: bool) -> dict:
    """Pure: where the ops of a loaded model run, and the one line that says so first.

    Only ops taken by the Edge TPU delegate count as Edge TPU ops (it is the only delegate
    loaded when it is asked for); ops XNNPACK takes are CPU ops. ``cpu_only_on_edgetpu``:
    the Edge TPU was asked for and took nothing (an int8 model edgetpu_compiler never saw)."""
    known = delegated_ops is not None and total_ops is not None
    taken = delegated_ops or 0
    total = total_ops or 0
    applied = None
    if delegate_nodes:
        applied = "edgetpu" if requested == "edgetpu" else "xnnpack"
    tpu = taken if applied == "edgetpu" else 0
    xnn = taken if applied == "xnnpack" else 0
    out = {"requested": requested, "applied": applied, "compiled_for_edgetpu": compiled,
           "edgetpu_ops": tpu if known else None, "xnnpack_ops": xnn if known else None,
           "cpu_ops": (total - taken) if known else None, "total_ops": total_ops,
           "cpu_only_on_edgetpu": False}
    if requested == "edgetpu":
        if known and tpu == 0:
            out["cpu_only_on_edgetpu"] = True
            what = ("compiled for the Edge TPU, yet the delegate took no op" if compiled else
                    "a model edgetpu_compiler never compiled")
            out["line"] = (f"CPU ONLY: the Edge TPU delegate took none of the {total} ops "
                           f"({what}): this is not an Edge TPU timing")
        elif known:
            out["line"] = (f"Edge TPU: {tpu} op(s) on the Edge TPU "
                           f"({'the compiled segments' if compiled else 'delegated'}), "
                           f"{total - tpu} on the CPU")
        else:
            out["line"] = "Edge TPU delegate loaded; this runtime does not say which ops it took"
    elif compiled:
        out["line"] = (f"CPU ONLY: a model compiled for the Edge TPU run without the Edge TPU "
                       f"delegate (--delegate {requested})")
    elif not known:
        out["line"] = "CPU: this runtime does not say which ops a delegate took"
    elif applied == "xnnpack":
        out["line"] = f"CPU: {xnn} of {total} ops in XNNPACK, {total - xnn} on the builtin kernels"
    elif requested == "none":
        out["line"] = f"CPU: {total} ops on the builtin kernels (no delegate asked for)"
    else:
        out["line"] = f"CPU: {total} ops on the builtin kernels (XNNPACK took none)"
    return out


def check_placement(model_path: str, place: dict, allow_cpu: bool) -> None:
    from ..errors import SilentCpuFallback

    if place["cpu_only_on_edgetpu"] and not allow_cpu:
        raise SilentCpuFallback(
            f"{model_path}: {place['line']}",
            hint="compile it with `edgedeploy compile --mode edgetpu` (edgetpu_compiler), or "
                 "pass --allow-cpu to time it on the CPU knowingly")


# -- the board's conditions around the timed runs --------------------------------------------
def board_snapshot() -> dict:
    from .sysinfo import snapshot

    return snapshot()


def board_conditions(before: dict, after: dict) -> dict:
    """``conditions`` (temperature, clock, governor, throttling before and after the timed runs),
    ``warnings`` (throttled during the run, hot, clock fell, emulated) and ``emulated``."""
    from .sysinfo import emulation_facts, throttle_warnings

    emu = emulation_facts()
    warnings = throttle_warnings(before, after)
    if emu["emulated"]:
        warnings.insert(0, f"emulated board: {emu['emulation']['why']}")
    return {"conditions": {"before": before, "after": after}, "warnings": warnings,
            "emulated": emu["emulated"], "emulation": emu["emulation"]}
