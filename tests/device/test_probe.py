"""device/probe.py through the real agent in both board envs (ai-edge-litert 2.3.0 + numpy 2,
tflite-runtime 2.14 + numpy 1, no TensorFlow): every model is loaded in a child process, so a
model that crashes the runtime leaves the agent standing and says why."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import board_pythons, run_cli
from tests.tflite_fixtures import custom_op, edgetpu_compiled, op_version_cases, opcode_only

from .conftest import RUNTIMES, bundle_dir

pytestmark = pytest.mark.board

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="module")
def dynamic_model(digits, tmp_path_factory) -> Path:
    """The digits CNN in dynamic range, as TF 2.21 writes it: FULLY_CONNECTED version 12."""
    out = tmp_path_factory.mktemp("dyn")
    run_cli("compile", digits / "digits.keras", "--mode", "dynamic", "--out", out, check=True)
    return out / "digits.dynamic.tflite"


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_a_model_that_runs(agent, models, tmp_path):
    agent("install", bundle_dir(models["int8"], tmp_path / "b"), "--activate")
    r = agent("probe", "digits")   # install probed it: the answer is the cached one
    assert r["loads"] is True and r["reason"] is None and r["stage"] == "done"
    assert r["runtime"] == agent.runtime and r["cached"] is True
    assert r["details"] == {"inputs": 1, "outputs": 1}
    assert list((agent.store / "probe-cache").glob("*.json"))
    fresh = agent("probe", "digits", "--no-cache")
    assert fresh["cached"] is False and fresh["loads"] is True and fresh["seconds"] > 0


def test_custom_op(agent, tmp_path):
    r = agent("probe", _write(tmp_path, "custom.tflite", custom_op("MyOp")))
    assert (r["loads"], r["reason"], r["details"]["custom_op"]) == (False, "missing_custom_op",
                                                                  "MyOp")
    assert "lacks the custom op 'MyOp'" in r["message"] and agent.runtime in r["message"]


def test_edgetpu_model_without_the_delegate(agent, tmp_path):
    r = agent("probe", _write(tmp_path, "m_edgetpu.tflite", edgetpu_compiled()))
    assert r["reason"] == "missing_custom_op" and "Edge TPU" in r["message"]


def test_truncated_model(agent, models, tmp_path):
    data = Path(models["float32"]).read_bytes()
    r = agent("probe", _write(tmp_path, "cut.tflite", data[:len(data) // 3]))
    assert (r["reason"], r["stage"]) == ("invalid_model", "read")
    assert r["message"].startswith("not a valid model")


def test_random_bytes(agent, tmp_path):
    r = agent("probe", _write(tmp_path, "noise.tflite", os.urandom(4096)))
    assert r["reason"] == "invalid_model"


def test_fc_v12_on_each_runtime(agent, dynamic_model):
    """The converter-newer-than-the-board trap: TF 2.21's dynamic-range model uses
    FULLY_CONNECTED v12 (TF 2.17), which tflite-runtime 2.14 lacks and LiteRT 2.3.0 has."""
    r = agent("probe", dynamic_model)
    if agent.runtime == "tflite_runtime":
        assert (r["loads"], r["reason"]) == (False, "op_version")
        assert r["details"] == {"op": "FULLY_CONNECTED", "version": 12}
        assert "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'" in r["message"]
    else:
        assert r["loads"] is True


def test_model_that_crashes_the_runtime(agent):
    """tests/fixtures/crash-on-load.tflite passes the bounds check and kills both runtimes
    (SIGSEGV while allocating): the agent answers, the child died."""
    r = agent("probe", FIXTURES / "crash-on-load.tflite")
    assert (r["loads"], r["reason"], r["details"]["signal"]) == (False, "crashed", 11)
    assert r["message"] == "the runtime crashed loading it: signal 11 (SIGSEGV)"


def test_the_crasher_passes_the_bounds_check():
    from edgedeploy.device.flatbuffer_check import check_tflite

    check_tflite((FIXTURES / "crash-on-load.tflite").read_bytes())  # no error: a semantic crash


# -- the op-version table against the real runtimes ---------------------------------------------

_RESOLVE = r"""
import json, os, sys
mod = __import__(sys.argv[1], fromlist=["Interpreter"])
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
out = {}
for name in sorted(os.listdir(sys.argv[2])):
    try:
        mod.Interpreter(model_path=os.path.join(sys.argv[2], name)).allocate_tensors()
        out[name] = True
    except Exception as exc:
        out[name] = str(exc).splitlines()[0]
print(json.dumps(out))
"""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_op_version_table_matches_the_runtime(runtime, tmp_path):
    """For every (op, version) of LiteRT's table: a model naming only that op code loads on the
    runtime exactly when op_versions.check predicts it (tflite-runtime 2.14 ≈ TF 2.14.0,
    ai-edge-litert 2.3.0 ≈ TF 2.23.0 but STABLEHLO_CBRT)."""
    from edgedeploy.host.compiler.op_versions import check

    python = board_pythons().get(runtime)
    if python is None:
        pytest.fail(f"board env for {runtime} missing: run the tests through scripts/test")
    cases = op_version_cases()
    assert len(cases) > 400
    for op, ver, _ in cases:
        (tmp_path / f"{op}-{ver}.tflite").write_bytes(opcode_only(op, ver))
    module = {"litert": "ai_edge_litert.interpreter",
              "tflite_runtime": "tflite_runtime.interpreter"}[runtime]
    proc = subprocess.run([python, "-c", _RESOLVE, module, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    version = subprocess.run([python, "-c", "from importlib.metadata import version; print("
                              f"version({'ai-edge-litert' if runtime == 'litert' else 'tflite-runtime'!r}))"],
                             capture_output=True, text=True).stdout.strip()
    wrong = []
    for op, ver, rv in cases:
        predicted = not check([(op, ver, False)], runtime, version)
        if predicted != (loaded[f"{op}-{ver}.tflite"] is True):
            wrong.append((op, ver, rv, loaded[f"{op}-{ver}.tflite"]))
    assert not wrong, wrong[:10]
    assert sum(v is True for v in loaded.values()) > 250
