"""Shared fixtures: the digits CNN trained once per session on real data (sklearn digits),
and helpers to run the CLI and board envs as subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the host's model cache (what deltas are built against): the test session's own, so tests
# neither read nor fill the user's (and CLI subprocesses share it)
if "EDGEDEPLOY_MODEL_CACHE" not in os.environ:
    import tempfile

    os.environ["EDGEDEPLOY_MODEL_CACHE"] = tempfile.mkdtemp(prefix="edgedeploy-test-models.")


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """OUT/digits.keras, train.npz, calib.npz, test.npz: the shared CNN trained for 4 epochs."""
    from tests.support import digits_cnn

    out = tmp_path_factory.mktemp("digits")
    digits_cnn.make(out, epochs=4)
    return out


@pytest.fixture(scope="session")
def models(digits, tmp_path_factory) -> dict[str, Path]:
    """Shared by the agent and integration tests: digits float32 and int8 (uint8 I/O) .tflite files with manifests and host figures."""
    out = tmp_path_factory.mktemp("models")
    for mode, extra in (("float32", []), ("int8", ["--io", "uint8"])):
        run_cli("compile", digits / "digits.keras", "--mode", mode, "--calib",
                digits / "calib.npz", "--eval", digits / "test.npz", "--latency-runs", "20",
                "--out", out, *extra, check=True)
    return {"float32": out / "digits.float32.tflite", "int8": out / "digits.int8.tflite",
            "test": digits / "test.npz", "dir": out}


@pytest.fixture(scope="session")
def retrained(digits, models, tmp_path_factory) -> Path:
    """The digits CNN with only its last layer retrained (one epoch, on the training split
    with permuted labels: the weights really move), compiled int8 like models["int8"]."""
    import numpy as np

    from edgedeploy.host.compiler.convert import import_tf

    import_tf()
    import tf_keras as keras

    out = tmp_path_factory.mktemp("retrained")
    keras.utils.set_random_seed(7)
    m = keras.models.load_model(digits / "digits.keras")
    for layer in m.layers:
        layer.trainable = layer.name == "probs"
    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    with np.load(digits / "train.npz") as z:
        x, y = z["x"], np.random.default_rng(7).permutation(z["y"])
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    m.save(out / "digits.keras")
    run_cli("compile", out / "digits.keras", "--mode", "int8", "--calib", digits / "calib.npz",
            "--io", "uint8", "--out", out, check=True)
    return out / "digits.int8.tflite"


def run_cli(*args: str, check: bool = False, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """``edgedeploy ARGS`` in a subprocess of this (host) Python."""
    proc = subprocess.run([sys.executable, "-m", "edgedeploy.host.cli", *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgedeploy {' '.join(map(str, args))} failed "
                             f"({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def board_pythons() -> dict[str, str]:
    """The board envs scripts/test made (no TensorFlow in them)."""
    found = {}
    for name, var in (("litert", "EDGEDEPLOY_BOARD_LITERT_PY"),
                      ("tflite_runtime", "EDGEDEPLOY_BOARD_TFLRT_PY")):
        if os.environ.get(var):
            found[name] = os.environ[var]
    return found


def stage_device_package(dest: Path) -> Path:
    """Copy what ships to a board (edgedeploy/__init__, errors, device/) into DEST."""
    pkg = dest / "edgedeploy"
    (pkg).mkdir(parents=True)
    shutil.copy(REPO / "edgedeploy" / "__init__.py", pkg / "__init__.py")
    shutil.copy(REPO / "edgedeploy" / "errors.py", pkg / "errors.py")
    shutil.copytree(REPO / "device", pkg / "device",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _sin(t):
    import tensorflow as tf

    return tf.math.sin(t)


@pytest.fixture(scope="session")
def odd_models(tmp_path_factory) -> Path:
    """Small models with ops that matter to the checks:
    sin_sm/   SavedModel Dense → sin → Dense (SIN has no int8 kernel); calib16.npz
    leaky.keras  Conv → LeakyReLU → Conv → Dense (LEAKY_RELU is int8 but not on the Edge TPU);
    calib8.npz"""
    import numpy as np

    from edgedeploy.host.compiler.convert import import_tf

    import_tf()
    import tf_keras as keras

    out = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    sin = keras.Sequential([keras.layers.Input((16,)), keras.layers.Dense(8),
                            keras.layers.Lambda(_sin), keras.layers.Dense(4)])
    sin.save(out / "sin_sm", save_format="tf")
    np.savez(out / "calib16.npz", x=rng.random((64, 16), dtype=np.float32))
    leaky = keras.Sequential([
        keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.LeakyReLU(0.1), keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.Flatten(), keras.layers.Dense(3)])
    leaky.save(out / "leaky.keras")
    np.savez(out / "calib8.npz", x=rng.random((32, 8, 8, 1), dtype=np.float32))
    return out


def assert_top1_as_host(ev: dict, host_accuracy: float, runtime: str) -> None:
    """A board's eval top-1 against the host's figure for the same model and data. The host
    measures with LiteRT 2.3.0: a litert board must agree exactly. tflite-runtime 2.14's
    kernels (XNNPACK's float ones above all) round differently, which flips the odd near-tie
    sample: allow 2 samples there, no more."""
    tol = 1e-12 if runtime == "litert" else 2.0 / ev["samples"] + 1e-12
    assert abs(ev["top1"] - host_accuracy) <= tol, (runtime, ev["top1"], host_accuracy)


from tests.objectstore import objectstore  # noqa: E402,F401  (session fixture: SeaweedFS)
