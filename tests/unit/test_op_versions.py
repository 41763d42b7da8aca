"""The host-side answer to "can this board's runtime load the model?": pure tables."""

from __future__ import annotations

import pytest

from edgedeploy.host.compiler.op_versions import check, introduced, min_runtime, tf_equivalent


@pytest.mark.parametrize("runtime,version,want", [
    ("tflite_runtime", "2.14.0", "2.14.0"),
    ("tflite_runtime", "2.13", "2.13.0"),
    ("tensorflow", "2.21.0", "2.21.0"),
    ("litert", "2.3.0", "2.23.0"),
    ("litert", "1.0.1", "2.18.0"),
    ("litert", "1.4.1", "2.20.0"),
    ("litert", "9.0.0", "2.23.0"),      # newer than the table: at least what the newest had
    ("litert", "0.9", None),
    ("litert", None, None),
    ("somethingelse", "1.0", None),
])
def test_tf_equivalent(runtime, version, want):
    assert tf_equivalent(runtime, version) == want


def test_table_facts():
    # the trap of DESIGN.md: TF 2.21's dynamic-range models use FULLY_CONNECTED v12 (TF 2.17)
    assert introduced("FULLY_CONNECTED", 12) == "2.17.0"
    assert introduced("FULLY_CONNECTED", 9) == "2.3.0"
    assert introduced("FULLY_CONNECTED", 99) is None
    assert min_runtime([("CONV_2D", 3), ("FULLY_CONNECTED", 12), ("SOFTMAX", 1)]) == "2.17.0"
    assert min_runtime([("CONV_2D", 1)]) == "1.5.0"
    assert min_runtime([]) is None


FC12 = [("CONV_2D", 3, False), ("FULLY_CONNECTED", 12, False)]


@pytest.mark.parametrize("ops,runtime,version,edgetpu,want", [
    (FC12, "tflite_runtime", "2.14.0", False, [("op_version", "FULLY_CONNECTED", 12)]),
    (FC12, "tflite_runtime", "2.17.1", False, []),
    (FC12, "litert", "2.3.0", False, []),
    (FC12, "unknown-runtime", "1.0", False, []),          # can't tell: the probe decides
    ([("MyOp", 1, True)], "litert", "2.3.0", False, [("custom_op", "MyOp", 1)]),
    ([("edgetpu-custom-op", 1, True)], "litert", "2.3.0", False,
     [("custom_op", "edgetpu-custom-op", 1)]),
    ([("edgetpu-custom-op", 1, True)], "litert", "2.3.0", True, []),
    ([("FlexAddV2", 1, True)], "tflite_runtime", "2.14.0", False,
     [("custom_op", "FlexAddV2", 1)]),
    ([("TFLite_Detection_PostProcess", 1, True)], "tflite_runtime", "2.14.0", False, []),
    ([("STABLEHLO_CBRT", 1, False)], "litert", "2.3.0", False,
     [("op_version", "STABLEHLO_CBRT", 1)]),
    ([("TRANSPOSE", 7, False)], "tflite_runtime", "2.14.0", False,
     [("op_version", "TRANSPOSE", 7)]),                 # 2.14.4 > 2.14.0
    ([("ADD", 1, False), ("ADD", 1, False)], "tflite_runtime", "2.14.0", False, []),
])
def test_check(ops, runtime, version, edgetpu, want):
    got = check(ops, runtime, version, edgetpu=edgetpu)
    assert [(p.kind, p.op, p.version) for p in got] == want
    for p in got:
        assert p.op in p.message


def test_check_message_names_runtime_and_release():
    (p,) = check(FC12, "tflite_runtime", "2.14.0")
    assert "FULLY_CONNECTED version 12" in p.message and "2.17.0" in p.message
    assert "tflite_runtime 2.14.0" in p.message


def test_board_check_reads_the_manifest_and_the_board_info():
    from edgedeploy.host.compiler.op_versions import board_check

    requires = {"min_runtime": "2.17.0", "ops": {"CONV_2D": 3, "FULLY_CONNECTED": 12},
                "custom_ops": ["edgetpu-custom-op"]}
    pi = {"runtime": "tflite_runtime", "runtimes": {"tflite_runtime": "2.14.0"},
          "delegates": {"edgetpu": {"available": False}}}
    got = board_check(requires, pi)
    assert [(p.kind, p.op) for p in got] == [("op_version", "FULLY_CONNECTED"),
                                             ("custom_op", "edgetpu-custom-op")]
    coral = {"runtime": "litert", "runtimes": {"litert": "2.3.0"},
             "delegates": {"edgetpu": {"available": True}}}
    assert board_check(requires, coral) == []
    assert board_check(None, pi) == [] and board_check({}, pi) == []
