"""The model pairs scripts/bench_delta measures deltas on (run in the host env: TensorFlow).

    python scripts/delta_models.py WORK

Data: sklearn digits (nothing is downloaded), 8x8 enlarged to 96x96 (x12, nearest) on 3
channels. Model: ``tf_keras.applications.MobileNetV2(alpha=0.5, input_shape=(96, 96, 3),
weights=None, classes=10)``, random init (seed 0), trained one epoch on 600 images.

Updates of it, each compiled by ``edgedeploy compile`` (the real converter) like the base:

    head      only the classifier (``predictions``) retrained, one epoch on 600 other images
    blocks    the last 2 inverted-residual blocks (block_15, block_16), Conv_1 and the
              classifier fine-tuned, one epoch on the same new images
    full      a full retrain: every layer, from another random init (seed 1), one epoch
    requant   the base's weights, int8 calibrated on other images

Pairs (old → new): int8 (uint8 I/O) for head, blocks, full and requant; float32 and float16 for
head. Writes WORK/pairs.json ({case: {"old": path, "new": path}}) last, so a folder with it is
complete; a second run with the same BUILD tag reuses it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

BUILD = "mnv2-a0.5-96-v1"
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    x = np.repeat(np.repeat(x, 12, 1), 12, 2)[..., None].repeat(3, -1)
    return x, d.target.astype(np.int64)


NAME = "mnv2"  # every variant is a version of one model (as on a board)


def _compile(keras_path: Path, mode: str, calib: Path, out: Path) -> Path:
    args = [sys.executable, "-m", "edgedeploy.host.cli", "compile", str(keras_path),
            "--mode", mode, "--out", str(out), "--name", NAME, "--latency-runs", "0"]
    if mode == "int8":
        args += ["--calib", str(calib), "--io", "uint8"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"compile {keras_path} {mode} failed:\n{proc.stdout}\n{proc.stderr}")
    return out / f"{NAME}.{mode}.tflite"


def build(work: Path) -> dict[str, dict[str, str]]:
    pairs_file = work / "pairs.json"
    if pairs_file.exists():
        got = json.loads(pairs_file.read_text())
        if got.get("build") == BUILD:
            return got["pairs"]
    work.mkdir(parents=True, exist_ok=True)
    import tf_keras as keras

    x, y = data()
    np.savez(work / "calib.npz", x=x[1200:1400])
    np.savez(work / "calib2.npz", x=x[1400:1600])

    def fresh(seed: int):
        keras.utils.set_random_seed(seed)
        m = keras.applications.MobileNetV2(alpha=0.5, input_shape=(96, 96, 3), weights=None,
                                           classes=10)
        return m

    def fit(m, xs, ys, trainable) -> None:
        for layer in m.layers:
            layer.trainable = trainable(layer.name)
        m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        m.fit(xs, ys, batch_size=32, epochs=1, verbose=0, shuffle=False)

    base = fresh(0)
    fit(base, x[:600], y[:600], lambda n: True)
    base.save(work / "base.keras")
    tail = ("block_15_", "block_16_", "Conv_1", "out_relu", "global_average", "predictions")
    for name, trainable in (("head", lambda n: n == "predictions"),
                            ("blocks", lambda n: n.startswith(tail))):
        m = keras.models.load_model(work / "base.keras")
        fit(m, x[600:1200], y[600:1200], trainable)
        m.save(work / f"{name}.keras")
    full = fresh(1)
    fit(full, x[600:1200], y[600:1200], lambda n: True)
    full.save(work / "full.keras")

    calib, calib2 = work / "calib.npz", work / "calib2.npz"
    c = {}
    for name in ("base", "head", "blocks", "full"):
        c[(name, "int8")] = _compile(work / f"{name}.keras", "int8", calib, work / name)
    for name in ("base", "head"):
        for mode in ("float32", "float16"):
            c[(name, mode)] = _compile(work / f"{name}.keras", mode, calib, work / name)
    c[("requant", "int8")] = _compile(work / "base.keras", "int8", calib2, work / "requant")
    pairs = {
        "int8-head": (c[("base", "int8")], c[("head", "int8")]),
        "int8-blocks": (c[("base", "int8")], c[("blocks", "int8")]),
        "int8-full": (c[("base", "int8")], c[("full", "int8")]),
        "float32-head": (c[("base", "float32")], c[("head", "float32")]),
        "float16-head": (c[("base", "float16")], c[("head", "float16")]),
        "int8-requant": (c[("base", "int8")], c[("requant", "int8")]),
    }
    out = {k: {"old": str(o), "new": str(n)} for k, (o, n) in pairs.items()}
    pairs_file.write_text(json.dumps({"build": BUILD, "pairs": out}, indent=2) + "\n")
    return out


if __name__ == "__main__":
    print(json.dumps(build(Path(sys.argv[1]))))
