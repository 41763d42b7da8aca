"""Mode planning is pure: a table of cases."""

import pytest

from edgedeploy.errors import InputError
from edgedeploy.host.compiler.modes import MODES, Training, io_for, label, plan_modes

NONE = Training()


@pytest.mark.parametrize("mode,calib,training,io,modes,skipped", [
    ("float16", False, NONE, None, ("float16",), ()),
    ("int8", True, NONE, "uint8", ("int8",), ()),
    ("all", True, NONE, None, MODES, ()),
    ("all", False, NONE, None, ("float32", "float16", "dynamic"),
     ("int8", "int16x8", "edgetpu")),
    ("all", False, Training(qat=True), None, ("int8", "edgetpu"),
     ("float32", "float16", "dynamic", "int16x8")),
    ("int8", False, Training(qat=True), None, ("int8",), ()),
    ("all", True, NONE, "uint8", MODES, ()),
])
def test_plan(mode, calib, training, io, modes, skipped):
    plan = plan_modes(mode, has_calib=calib, training=training, io=io)
    assert plan.modes == modes
    assert tuple(m for m, _ in plan.skipped) == skipped


@pytest.mark.parametrize("mode,calib,training,io,message", [
    ("int4", True, NONE, None, "unknown mode 'int4'"),
    ("int8", False, NONE, None, "needs calibration data"),
    ("edgetpu", False, NONE, None, "needs calibration data"),
    ("float16", True, NONE, "uint8", "--io uint8 does not apply to mode float16"),
    ("edgetpu", True, NONE, "float32", "--io float32 does not apply to mode edgetpu"),
    ("float16", True, Training(qat=True), None, "--qat produces an 8-bit integer model"),
    ("int8", True, Training(qat=True, prune=0.5), None, "cannot be combined"),
    ("dynamic", True, Training(prune=1.5), None, "sparsity between 0 and 1"),
    ("dynamic", True, Training(cluster=1), None, "from 2 to 256"),
    ("dynamic", True, Training(cluster=8, epochs=0), None, "--epochs must be at least 1"),
])
def test_plan_refuses(mode, calib, training, io, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as e:
        plan_modes(mode, has_calib=calib, training=training, io=io)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("mode,training,compiled,expected", [
    ("int8", NONE, True, "int8"),
    ("edgetpu", NONE, True, "edgetpu"),
    ("edgetpu", NONE, False, "edgetpu-int8"),
    ("int8", Training(qat=True), True, "qat-int8"),
    ("float32", Training(prune=0.5), True, "prune50-float32"),
    ("dynamic", Training(cluster=16), True, "cluster16-dynamic"),
])
def test_label(mode, training, compiled, expected):
    assert label(mode, training, compiled) == expected


def test_io_defaults():
    assert io_for("edgetpu", None) == "uint8"
    assert io_for("int8", None) == "float32"
    assert io_for("int8", "int8") == "int8"
    assert io_for("float16", "uint8") == "float32"  # --io with --mode all: modes that take it
