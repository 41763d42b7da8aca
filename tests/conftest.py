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
sys.path.insert(0, str(REPO / "scripts"))

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """OUT/digits.keras, train.npz, calib.npz, test.npz: the shared CNN trained for 4 epochs."""
    import digits_cnn

    out = tmp_path_factory.mktemp("digits")
    digits_cnn.make(out, epochs=4)
    return out


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
