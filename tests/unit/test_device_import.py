"""device/ must import without TensorFlow: with TF blocked on the host, and in both board envs
(which have no TensorFlow installed at all)."""

import subprocess
import sys

import pytest

from tests.conftest import REPO, board_pythons, stage_device_package

DEVICE_MODULES = ["edgedeploy.device"] + [f"edgedeploy.device.{p.stem}"
                                          for p in sorted((REPO / "device").glob("*.py"))
                                          if p.stem != "__init__"]
BLOCKED = ("import sys; sys.modules['tensorflow'] = None\n"
           + "".join(f"import {m}\n" for m in DEVICE_MODULES)
           + "assert 'tensorflow' not in [k for k, v in sys.modules.items() if v is not None]\n"
           + "print('ok')")


def test_device_imports_with_tensorflow_blocked():
    proc = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_tensorflow_really_is_blocked_by_that_line():
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['tensorflow'] = None\n"
                           "import tensorflow"], capture_output=True, text=True)
    assert proc.returncode != 0 and "import of tensorflow halted" in proc.stderr


@pytest.mark.parametrize("runtime", ["litert", "tflite_runtime"])
def test_device_imports_and_runs_in_board_env(runtime, tmp_path, models):
    """The full-int8 digits model (uint8 I/O, the session's shared compile) runs there."""
    pythons = board_pythons()
    if runtime not in pythons:
        pytest.fail(f"board env for {runtime} missing: run the tests through scripts/test")
    staged = stage_device_package(tmp_path)
    model = models["int8"]
    code = BLOCKED.replace("print('ok')", "") + (
        "from edgedeploy.device.runtime import load_runtime, make_interpreter\n"
        "import numpy as np\n"
        "rt = load_runtime()\n"
        f"it = make_interpreter({str(model)!r}, runtime=rt)\n"
        "d = it.get_input_details()[0]\n"
        "it.set_tensor(d['index'], np.zeros(d['shape'], d['dtype'])); it.invoke()\n"
        "print(rt.name, np.__version__)\n")
    proc = subprocess.run([pythons[runtime], "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(staged), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    name, numpy_version = proc.stdout.split()
    assert name == runtime
    assert numpy_version.startswith("2." if runtime == "litert" else "1.")
    no_tf = subprocess.run([pythons[runtime], "-c", "import tensorflow"], capture_output=True)
    assert no_tf.returncode != 0, "board envs must not have TensorFlow"
