"""Benchmark of the compiler on the digits CNN (run through scripts/bench_compile).

1. Train the digits CNN (sklearn digits, 8 epochs), compile every mode with --eval on the
   held-out test split: the mode table (size, accuracy, agreement).
2. Latency, side by side in one run: every mode's interpreter is loaded once; rounds of
   ``--block`` single-thread invokes go round-robin over the modes until each has ``--invokes``
   samples; medians and ratios vs float32.
3. Compile time: ``compile_model`` (edgedeploy compile without --eval) against a bare
   TFLiteConverter call (load the .keras, from_keras_model, same settings, convert, write the
   file), alternating, ``--compile-repeats`` times each; medians and ratios.

Writes benchmarks/compile.json and prints the tables.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchrig import REPO, digits, write_result

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

GOALS = {"int8_size_ratio_max": 0.27, "accuracy_drop_pts_max": 1.0,
         "int8_latency_ratio_max": 0.7, "compile_time_ratio_max": 1.1}


def bare_convert(tf, keras_path: Path, mode: str, calib: np.ndarray, out: Path) -> None:
    """What a user writes by hand with the TFLite docs: the baseline."""
    import tf_keras

    model = tf_keras.models.load_model(str(keras_path))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        def rep():
            for i in range(len(calib)):
                yield [calib[i:i + 1]]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    out.write_bytes(conv.convert())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--invokes", type=int, default=2000, help="timed invokes per mode (2000)")
    p.add_argument("--block", type=int, default=100, help="invokes per round-robin block")
    p.add_argument("--compile-repeats", type=int, default=9)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "compile.json")
    a = p.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from edgedeploy.device.bench import summarize
    from edgedeploy.device.evaluate import quantize
    from edgedeploy.device.runtime import CapturedNativeOutput, load_runtime, make_interpreter
    from edgedeploy.host.compiler import CompileOptions, compile_model
    from edgedeploy.host.compiler import report as rep
    from edgedeploy.host.compiler.convert import import_tf

    console = Console(width=130)
    work = Path(tempfile.mkdtemp(prefix="edgedeploy-bench-"))
    with CapturedNativeOutput():
        summary = digits(work / "data", epochs=a.epochs)
    console.print(f"digits CNN: Keras test accuracy {summary['keras_test_accuracy']:.4f} "
                  f"({summary['n_train']} train / {summary['n_calib']} calib / "
                  f"{summary['n_test']} held-out test)")

    # 1. every mode, measured on the held-out split
    report = compile_model(CompileOptions(
        work / "data" / "digits.keras", "all", work / "models", io="uint8",
        calib=work / "data" / "calib.npz", eval_data=work / "data" / "test.npz",
        latency_runs=0))
    rows = rep.rows(report)

    # 2. latency side by side: round-robin blocks over all modes in one process
    rt = load_runtime()
    x0 = np.load(work / "data" / "test.npz")["x"][:1]
    interps = {}
    for r in report.results:
        if r.ok and r.model_path is not None:
            it = make_interpreter(r.model_path, num_threads=1, runtime=rt)
            d = it.get_input_details()[0]
            it.set_tensor(d["index"], quantize(x0, d))
            for _ in range(50):
                it.invoke()
            interps[r.label] = it
    samples: dict[str, list[float]] = {k: [] for k in interps}
    clock = time.perf_counter_ns
    while min(len(v) for v in samples.values()) < a.invokes:
        for label, it in interps.items():
            invoke = it.invoke
            s = samples[label]
            for _ in range(a.block):
                t0 = clock()
                invoke()
                s.append((clock() - t0) / 1e6)
    lat = {k: summarize(v) for k, v in samples.items()}
    for row in rows:
        if row.label in lat:
            row.latency_p50_ms = lat[row.label].p50_ms
    base = lat["float32"].p50_ms
    for row in rows:
        if row.latency_p50_ms:
            row.latency_ratio = row.latency_p50_ms / base
    rep.render(rows, console)

    # 3. compile time: edgedeploy vs a bare converter call, alternating
    tf = import_tf()
    calib = np.load(work / "data" / "calib.npz")["x"]
    compile_times: dict[str, dict[str, list[float]]] = {}
    for mode in ("float32", "float16", "int8"):
        ours, bare = [], []
        for i in range(-1, a.compile_repeats):  # round -1: untimed warm-up of both paths
            order = [("ours", ours), ("bare", bare)] if i % 2 == 0 else [("bare", bare), ("ours", ours)]
            for who, bucket in order:
                gc.collect()
                t0 = time.perf_counter()
                if who == "ours":
                    compile_model(CompileOptions(
                        work / "data" / "digits.keras", mode, work / f"ct-{mode}",
                        calib=work / "data" / "calib.npz" if mode == "int8" else None,
                        io="uint8" if mode == "int8" else None))
                else:
                    with CapturedNativeOutput():
                        bare_convert(tf, work / "data" / "digits.keras", mode, calib,
                                     work / f"bare-{mode}.tflite")
                if i >= 0:
                    bucket.append(time.perf_counter() - t0)
        compile_times[mode] = {"edgedeploy_s": ours, "bare_converter_s": bare}
    ct = Table(title="compile time: edgedeploy compile vs a bare TFLiteConverter call "
                     f"(median of {a.compile_repeats} after a warm-up, alternating)")
    for col in ("mode", "edgedeploy s", "bare s", "ratio"):
        ct.add_column(col, justify="right")
    ratios = {}
    for mode, t in compile_times.items():
        o, b = statistics.median(t["edgedeploy_s"]), statistics.median(t["bare_converter_s"])
        ratios[mode] = o / b
        ct.add_row(mode, f"{o:.3f}", f"{b:.3f}", f"{o / b:.3f}x")
    console.print(ct)

    by = {r.label: r for r in rows}
    i8 = by["int8"]
    checks = {
        "int8_size_ratio": (i8.size_ratio, i8.size_ratio <= GOALS["int8_size_ratio_max"]),
        "int8_accuracy_drop_pts": (-(i8.accuracy_delta_pts or 0.0),
                                   -(i8.accuracy_delta_pts or 0.0) <= GOALS["accuracy_drop_pts_max"]),
        "int8_latency_ratio": (i8.latency_ratio, i8.latency_ratio <= GOALS["int8_latency_ratio_max"]),
        "compile_time_ratio_int8": (ratios["int8"], ratios["int8"] <= GOALS["compile_time_ratio_max"]),
        "compile_time_ratio_float32": (ratios["float32"],
                                       ratios["float32"] <= GOALS["compile_time_ratio_max"]),
        "compile_time_ratio_float16": (ratios["float16"],
                                       ratios["float16"] <= GOALS["compile_time_ratio_max"]),
    }
    for k, (v, ok) in checks.items():
        console.print(f"{'[green]met[/green]' if ok else '[red]MISSED[/red]'}  {k} = {v:.3f}")
    payload = {
        "benchmark": "compile", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "machine": platform.machine(), "runtime": f"{rt.name} {rt.version}"},
        "model": "digits CNN 32x32x1 conv32-pool-conv64-pool-conv64-dense64-dense10",
        "data": summary, "goals": GOALS,
        "modes": [r.__dict__ for r in rows],
        "latency": {k: {"p50_ms": v.p50_ms, "p90_ms": v.p90_ms, "p99_ms": v.p99_ms,
                        "mean_ms": v.mean_ms, "runs": v.runs} for k, v in lat.items()},
        "latency_method": f"round-robin blocks of {a.block} invokes over all modes, 1 thread, "
                          f"{a.invokes}+ invokes each, one process",
        "compile_time": compile_times, "compile_time_ratio": ratios,
        "checks": {k: {"value": v, "met": ok} for k, (v, ok) in checks.items()},
    }
    write_result(a.out, payload, console.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
