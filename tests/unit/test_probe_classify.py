"""device/probe.py: what a runtime said, or how its process died → the reason a user reads."""

from __future__ import annotations

import pytest

from edgedeploy.device.probe import classify

FC = ("Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version of "
      "this builtin might be supported. Are you using an old TFLite binary with a newer model?"
      "\nRegistration failed.")


@pytest.mark.parametrize("stage,error,rc,reason,needle", [
    ("load", "", -11, "crashed", "the runtime crashed loading it: signal 11 (SIGSEGV)"),
    ("allocate", "", -11, "crashed", "crashed loading it: signal 11"),
    ("invoke", "", -8, "crashed", "crashed at its first invoke: signal 8 (SIGFPE)"),
    ("load", "", -7, "crashed", "signal 7 (SIGBUS)"),
    ("allocate", FC, None, "op_version", "lacks FULLY_CONNECTED version 12"),
    ("load", "Op builtin_code out of range: 203. Are you using old TFLite binary with newer "
             "model?Registration failed.", None, "op_version", "builtin op code 203"),
    ("allocate", "Encountered unresolved custom op: edgetpu-custom-op.\nSee instructions: "
                 "https://www.tensorflow.org/lite/guide/ops_custom Node number 0 "
                 "(edgetpu-custom-op) failed to prepare.", None, "missing_custom_op",
     "lacks the custom op 'edgetpu-custom-op' (an Edge TPU model"),
    ("allocate", "Encountered unresolved custom op: MyOp.\nSee instructions", None,
     "missing_custom_op", "lacks the custom op 'MyOp'"),
    ("allocate", "Select TensorFlow op(s), included in the given model, is(are) not supported "
                 "by this interpreter.", None, "missing_custom_op", "Select (Flex) ops"),
    ("read", "Model.operator_codes at byte 3828 runs past the end of the file (1000 bytes): "
             "truncated or not a TFLite model", None, "invalid_model", "not a valid model"),
    ("load", "The model is not a valid Flatbuffer buffer", None, "invalid_model",
     "not a valid model"),
    ("invoke", "tensor 3 is too small", None, "invoke_failed", "first invoke on zeros failed"),
    ("allocate", "conv.cc:365 input_channel > 0 was not true.", None, "load_failed",
     "cannot load it"),
])
def test_classify(stage, error, rc, reason, needle):
    got, message, _ = classify(stage, error, returncode=rc, runtime="tflite_runtime",
                               runtime_version="2.14.0")
    assert got == reason
    assert needle in message


def test_classify_details():
    _, _, d = classify("allocate", FC)
    assert d == {"op": "FULLY_CONNECTED", "version": 12}
    assert classify("load", "", returncode=-11)[2] == {"signal": 11}
