"""The demo's first step (training the digits CNN) prints its one JSON line and nothing else:
no TensorFlow/CUDA start-up lines (issue 15: ~10 lines of log noise opened the demo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_training_prints_no_tensorflow_log_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "digits_cnn.py"), str(tmp_path),
                        "--epochs", "1"], capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stderr == "", p.stderr[-2000:]
    (line,) = p.stdout.splitlines()
    assert json.loads(line)["epochs"] == 1
    assert (tmp_path / "digits.keras").is_file()
