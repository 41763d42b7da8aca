"""Board facts and Edge TPU honesty through the real agent, in both board envs (no TensorFlow):

- a Pi's throttling: the agent runs the board's ``vcgencmd get_throttled`` before and after the
  timed runs and warns when it changed. No Raspberry Pi here: a stand-in ``vcgencmd`` script on
  the agent's PATH answers as a Pi's firmware does (it reports under-voltage only once the
  timed runs have started). This proves the agent's path, not a Pi.
- Edge TPU: a model with an ``edgetpu-custom-op`` (made here by rewriting one op of the real
  int8 model into that custom op, as edgetpu_compiler's output has; no compiler here) benched
  without the Edge TPU delegate is refused as ``silent_cpu_fallback``; with --allow-cpu it
  still cannot run on the CPU, and says why. The Edge TPU delegate itself is not loadable here
  (no libedgetpu, no Coral): that is checked to be said plainly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import bundle_dir

pytestmark = pytest.mark.board

VCGENCMD = """#!/bin/sh
# stand-in for a Pi's vcgencmd: throttling bits set once the timed runs began
if [ -e "{flag}" ]; then echo "throttled=0x50005"; else echo "throttled=0x0"; touch "{flag}"; fi
"""


def edgetpu_like(src: Path, dst: Path) -> Path:
    """SRC's first op turned into the Edge TPU's custom op (what edgetpu_compiler emits for a
    mapped segment), with the real TF flatbuffer tools."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils as fu

    m = fu.read_model(str(src))
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.CUSTOM
    code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "edgetpu-custom-op"
    code.version = 1
    m.operatorCodes.append(code)
    op = m.subgraphs[0].operators[0]
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.builtinOptionsType = 0
    op.builtinOptions = None
    op.customOptions = [0]
    fu.write_model(m, str(dst))
    return dst


def test_throttling_during_the_run_is_warned(agent, models, tmp_path):
    agent("install", bundle_dir(models["int8"], tmp_path / "b"), "--activate")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "vcgencmd"
    tool.write_text(VCGENCMD.format(flag=tmp_path / "started"))
    os.chmod(tool, 0o755)
    r = agent("bench", "digits", "--runs", 20, "--warmup", 2,
              env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    before, after = r["conditions"]["before"]["throttled"], r["conditions"]["after"]["throttled"]
    assert before["raw"] == "0x0" and after["now"] == ["under_voltage", "throttled"]
    assert any("throttled during the run" in w and "under_voltage" in w for w in r["warnings"])
    assert r["timing"]["runs"] == 20  # measured and reported, with the warning beside it
    info = agent("info", env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert info["throttled"]["since_boot"] == ["under_voltage", "throttled"]
    # no vcgencmd (this host, most boards): nothing invented
    r = agent("bench", "digits", "--runs", 5)
    assert r["conditions"]["after"]["throttled"] is None
    assert not any("throttl" in w for w in r["warnings"])
    assert r["emulated"] is False and r["placement"]["line"].startswith("CPU")


def test_edgetpu_model_without_its_delegate_is_never_a_timing(agent, models, tmp_path):
    etpu = edgetpu_like(models["int8"], tmp_path / "digits.edgetpu.tflite")
    err = agent("bench", etpu, ok=False)  # default delegate: auto
    assert err["code"] == "silent_cpu_fallback" and err["_rc"] == 1
    assert "edgetpu-custom-op" in err["message"] and "--delegate auto" in err["message"]
    err = agent("bench", etpu, "--allow-cpu", ok=False)
    assert err["code"] == "model_load_failed"
    assert "cannot run without the Edge TPU delegate" in err["message"]
    err = agent("bench", etpu, "--delegate", "edgetpu", ok=False)
    assert err["code"] == "delegate_missing" and "libedgetpu" in err["message"]
    # the plain int8 model with --allow-cpu and no Edge TPU asked: an honest CPU timing
    r = agent("bench", models["int8"], "--runs", 3, "--delegate", "none", "--allow-cpu")
    assert r["placement"]["line"].startswith("CPU: ") and r["placement"]["edgetpu_ops"] == 0


def test_inspect_says_compiled_and_float_first(models, tmp_path):
    from tests.conftest import run_cli

    etpu = edgetpu_like(models["int8"], tmp_path / "digits.edgetpu.tflite")
    out = run_cli("inspect", etpu, "--target", "coral", check=True).stdout.splitlines()
    assert out[0].startswith("compiled for the Edge TPU already (edgetpu-custom-op)")
    out = run_cli("inspect", models["float32"], "--target", "coral", check=True).stdout
    assert out.splitlines()[0] == "float model: quantize it (edgedeploy compile --mode edgetpu)"
    pf = json.loads(run_cli("inspect", models["float32"], "--target", "coral", "--json",
                            check=True).stdout)["edgetpu"]
    # every op's parameters are counted; none are the Edge TPU's
    assert pf["param_bytes"] > 400_000 and pf["mapped_param_bytes"] == 0
    assert pf["float_model"] and pf["on_chip_bytes"] == 0
    pf = json.loads(run_cli("inspect", models["int8"], "--target", "coral", "--json",
                            check=True).stdout)["edgetpu"]
    assert pf["summary"] == f"all {len(pf['ops'])} ops map to the Edge TPU"
    assert pf["param_bytes"] == pf["mapped_param_bytes"] > 100_000
