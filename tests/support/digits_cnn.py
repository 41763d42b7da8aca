"""The small CNN on real data that the tests, the benchmarks and the demo share.

Data: ``sklearn.datasets.load_digits`` (1,797 labelled 8x8 handwritten digits that ship inside
scikit-learn; nothing is downloaded). Each image is scaled to [0, 1] and enlarged to SIZE x SIZE
(default 32, nearest neighbour) so the network does enough work per inference to be measured.

Split (seeded, stratified): train 60 % / calib 10 % / test 30 %. The calibration split is the
representative dataset for full-integer quantization; the test split is held out for accuracy.

Model (Keras 2 / tf_keras, so tensorflow-model-optimization can wrap it):
conv32-pool-conv64-pool-conv64-dense64-dense10, softmax output.

    python -m tests.support.digits_cnn OUT_DIR [--epochs 8] [--size 32] [--shuffle-labels]
    python scripts/digits_cnn.py OUT_DIR …        (the same, for the demo)

writes OUT_DIR/digits.keras, OUT_DIR/train.npz (x, y), OUT_DIR/calib.npz (x), OUT_DIR/test.npz
(x, y) and OUT_DIR/digits.json (accuracy of the Keras model on the test split).
``--shuffle-labels`` trains on permuted labels: a deliberately bad model for gate tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

SEED = 1234


def load_split(size: int = 32, seed: int = SEED) -> dict[str, np.ndarray]:
    """Digits as float32 NHWC images in [0, 1], split into train / calib / test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]  # (n, 8, 8, 1)
    factor = size // 8
    if factor * 8 != size:
        raise ValueError(f"size must be a multiple of 8, got {size}")
    x = np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)
    y = digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, random_state=seed, stratify=y)
    x_calib, x_test, y_calib, y_test = train_test_split(
        x_rest, y_rest, test_size=0.75, random_state=seed, stratify=y_rest)
    return {"x_train": x_train, "y_train": y_train, "x_calib": x_calib,
            "y_calib": y_calib, "x_test": x_test, "y_test": y_test}


def build_model(size: int = 32):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras as keras

    keras.utils.set_random_seed(SEED)
    return keras.Sequential([
        keras.layers.Input((size, size, 1), name="image"),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu", padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax", name="probs"),
    ], name="digits_cnn")


def train(model, x, y, epochs: int):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model


def make(out_dir: Path, epochs: int = 8, size: int = 32, shuffle_labels: bool = False) -> dict:
    """Train and save the model and its data; return the summary written to digits.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    d = load_split(size)
    y_train = d["y_train"]
    if shuffle_labels:
        y_train = np.random.default_rng(SEED).permutation(y_train)
    model = train(build_model(size), d["x_train"], y_train, epochs)
    acc = float(np.mean(np.argmax(model.predict(d["x_test"], verbose=0), axis=1) == d["y_test"]))
    model.save(out_dir / "digits.keras")
    np.savez(out_dir / "train.npz", x=d["x_train"], y=y_train)
    np.savez(out_dir / "calib.npz", x=d["x_calib"])
    np.savez(out_dir / "test.npz", x=d["x_test"], y=d["y_test"])
    summary = {"keras_test_accuracy": acc, "epochs": epochs, "size": size,
               "shuffle_labels": shuffle_labels, "n_train": int(len(y_train)),
               "n_calib": int(len(d["x_calib"])), "n_test": int(len(d["y_test"]))}
    (out_dir / "digits.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--shuffle-labels", action="store_true")
    a = p.parse_args(argv)
    summary = make(a.out_dir, a.epochs, a.size, a.shuffle_labels)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
