"""Benchmark of the compiler on the digits CNN (run through scripts/bench_compile).

1. Train the digits CNN (sklearn digits, 8 epochs), compile every mode with --eval on the
   held-out test split: the mode table (size, accuracy, agreement).
2. Latency, side by side in one run: every mode's interpreter is loaded once; rounds of
   ``--block`` single-thread invokes go round-robin over the modes until each has ``--invokes``
   samples; medians and ratios vs float32.
3. Compile time: ``compile_model`` (edgedeploy compile without --eval) against a bare
   TFLiteConverter call (load the .keras, from_keras_model, same settings, convert, write the
   file), alternating, ``--compile-repeats`` times each; medians and ratios.
4. Keras 3 (TF 2.21's default ``tf.keras``): the same CNN trained the same way in Keras 3 and
   saved as ``.keras``, compiled in every mode: size and accuracy per mode against the tf_keras
   model's, and compile time against a bare converter on the Keras 3 model
   (``keras.models.load_model`` + ``from_keras_model``), alternating, medians.

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


def train_keras3(d: dict, epochs: int, out: Path) -> float:
    """The digits CNN of digits_cnn.build_model, in Keras 3, trained as digits_cnn.train does;
    saved to OUT; its test accuracy."""
    import keras as K

    K.utils.set_random_seed(digits_cnn_seed())
    m = K.Sequential([
        K.layers.Input((32, 32, 1), name="image"),
        K.layers.Conv2D(32, 3, activation="relu", padding="same"), K.layers.MaxPooling2D(),
        K.layers.Conv2D(64, 3, activation="relu", padding="same"), K.layers.MaxPooling2D(),
        K.layers.Conv2D(64, 3, activation="relu", padding="same"), K.layers.Flatten(),
        K.layers.Dense(64, activation="relu"),
        K.layers.Dense(10, activation="softmax", name="probs")], name="digits_cnn")
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(d["x_train"], d["y_train"], epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    m.save(out)
    return float(np.mean(np.argmax(m.predict(d["x_test"], verbose=0), axis=1) == d["y_test"]))


def digits_cnn_seed() -> int:
    from tests.support import digits_cnn

    return digits_cnn.SEED


def digits_split() -> dict:
    from tests.support import digits_cnn

    return digits_cnn.load_split(32)


def bare_convert(tf, keras_path: Path, mode: str, calib: np.ndarray, out: Path,
                 keras3: bool = False) -> None:
    """What a user writes by hand with the TFLite docs: the baseline."""
    if keras3:
        import keras as loader
    else:
        import tf_keras as loader

    model = loader.models.load_model(str(keras_path))
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


def compile_side_by_side(tf, calib: np.ndarray, work: Path, model: str, prefix: str,
                         modes: tuple, repeats: int, keras3: bool = False) -> dict:
    """Per mode, `edgedeploy compile` and a bare converter call on work/data/MODEL, alternating
    which goes first; round -1 is an untimed warm-up of both. {mode: {"edgedeploy_s": [...],
    "bare_converter_s": [...]}}."""
    from edgedeploy.device.runtime import CapturedNativeOutput
    from edgedeploy.host.compiler import CompileOptions, compile_model

    times: dict[str, dict[str, list[float]]] = {}
    for mode in modes:
        ours: list[float] = []
        bare: list[float] = []
        for i in range(-1, repeats):
            order = [("ours", ours), ("bare", bare)] if i % 2 == 0 else \
                [("bare", bare), ("ours", ours)]
            for who, bucket in order:
                gc.collect()
                t0 = time.perf_counter()
                if who == "ours":
                    compile_model(CompileOptions(
                        work / "data" / model, mode, work / f"{prefix}ct-{mode}",
                        calib=work / "data" / "calib.npz" if mode == "int8" else None,
                        io="uint8" if mode == "int8" else None))
                else:
                    with CapturedNativeOutput():
                        bare_convert(tf, work / "data" / model, mode, calib,
                                     work / f"{prefix}bare-{mode}.tflite", keras3=keras3)
                if i >= 0:
                    bucket.append(time.perf_counter() - t0)
        times[mode] = {"edgedeploy_s": ours, "bare_converter_s": bare}
    return times


def cpu_facts() -> dict:
    """The CPU model and the SIMD extensions int8 kernels lean on (VNNI makes XNNPACK's int8
    several times faster than float32; with AVX2 alone int8 can be slower)."""
    model, flags = None, set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": model, "simd": sorted(f for f in flags
                                         if f.startswith(("avx", "fma", "sse4")) or "vnni" in f)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--invokes", type=int, default=2000, help="timed invokes per mode (2000)")
    p.add_argument("--block", type=int, default=100, help="invokes per round-robin block")
    p.add_argument("--compile-repeats", type=int, default=9)
    p.add_argument("--keras3-repeats", type=int, default=5,
                   help="compile-time repeats for the Keras 3 model (5)")
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
    compile_times = compile_side_by_side(tf, calib, work, "digits.keras", "",
                                         ("float32", "float16", "int8"), a.compile_repeats)
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

    # 4. Keras 3: the same CNN, every mode, and compile time against a bare converter
    with CapturedNativeOutput():
        k3_acc = train_keras3(digits_split(), a.epochs, work / "data" / "k3.keras")
    k3_report = compile_model(CompileOptions(
        work / "data" / "k3.keras", "all", work / "models-k3", io="uint8", name="digits",
        calib=work / "data" / "calib.npz", eval_data=work / "data" / "test.npz",
        latency_runs=0))
    k3_rows = rep.rows(k3_report)
    by2 = {r.label: r for r in rows}
    kt = Table(title=f"Keras 3 .keras (Keras test accuracy {k3_acc:.4f}) vs the tf_keras model")
    for col in ("mode", "size KB", "vs tf_keras", "accuracy", "tf_keras accuracy"):
        kt.add_column(col, justify="right")
    k3_size_ratio = {}
    for r in k3_rows:
        other = by2.get(r.label)
        if r.ok and other is not None and other.size:
            k3_size_ratio[r.label] = r.size / other.size
            kt.add_row(r.label, f"{r.size / 1000:.1f}", f"{r.size / other.size:.4f}x",
                       f"{100 * r.accuracy:.2f}%", f"{100 * other.accuracy:.2f}%")
    console.print(kt)
    k3_times = compile_side_by_side(tf, calib, work, "k3.keras", "k3",
                                    ("float32", "int8"), a.keras3_repeats, keras3=True)
    k3_ratios = {m: statistics.median(t["edgedeploy_s"]) / statistics.median(t["bare_converter_s"])
                 for m, t in k3_times.items()}
    for m, t in k3_times.items():
        console.print(f"Keras 3 compile {m}: edgedeploy {statistics.median(t['edgedeploy_s']):.3f}"
                      f" s, bare converter {statistics.median(t['bare_converter_s']):.3f} s "
                      f"({k3_ratios[m]:.3f}x, median of {a.keras3_repeats})")

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
        "keras3_size_within_5pct": (max(abs(v - 1) for v in k3_size_ratio.values()),
                                    all(abs(v - 1) <= 0.05 for v in k3_size_ratio.values())),
    }
    for k, (v, ok) in checks.items():
        console.print(f"{'[green]met[/green]' if ok else '[red]MISSED[/red]'}  {k} = {v:.3f}")
    payload = {
        "benchmark": "compile", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "machine": platform.machine(), "runtime": f"{rt.name} {rt.version}",
                    **cpu_facts()},
        "model": "digits CNN 32x32x1 conv32-pool-conv64-pool-conv64-dense64-dense10",
        "data": summary, "goals": GOALS,
        "modes": [r.__dict__ for r in rows],
        "latency": {k: {"p50_ms": v.p50_ms, "p90_ms": v.p90_ms, "p99_ms": v.p99_ms,
                        "mean_ms": v.mean_ms, "runs": v.runs} for k, v in lat.items()},
        "latency_method": f"round-robin blocks of {a.block} invokes over all modes, 1 thread, "
                          f"{a.invokes}+ invokes each, one process",
        "compile_time": compile_times, "compile_time_ratio": ratios,
        "keras3": {"source": "the same CNN trained in Keras 3 (keras "
                             f"{__import__('keras').__version__}), saved as .keras",
                   "keras_test_accuracy": k3_acc, "modes": [r.__dict__ for r in k3_rows],
                   "size_vs_tf_keras": k3_size_ratio, "compile_time": k3_times,
                   "compile_time_ratio": k3_ratios,
                   "compile_time_baseline": "keras.models.load_model + "
                                            "TFLiteConverter.from_keras_model"},
        "checks": {k: {"value": v, "met": ok} for k, (v, ok) in checks.items()},
    }
    write_result(a.out, payload, console.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
