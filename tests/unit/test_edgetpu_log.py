"""The edgetpu_compiler log parser (pure). The compiler itself is not installable here; these
logs follow the format it prints (version 16 and the older "Input:" form)."""

from edgedeploy.host.compiler.edgetpu import parse_log

LOG_16 = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 612 ms.

Input model: digits.int8.tflite
Input size: 322.19KiB
Output model: digits.int8_edgetpu.tflite
Output size: 401.33KiB
On-chip memory used for caching model parameters: 313.50KiB
On-chip memory remaining for caching model parameters: 7.70MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 11
Operation log: digits.int8_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 9
Number of operations that will run on CPU: 2

Operator                       Count      Status

CONV_2D                        3          Mapped to Edge TPU
MAX_POOL_2D                    2          Mapped to Edge TPU
FULLY_CONNECTED                2          Mapped to Edge TPU
LEAKY_RELU                     1          Operation not supported
SOFTMAX                        1          Mapped to Edge TPU
QUANTIZE                       1          Mapped to Edge TPU
RESHAPE                        1          More than one subgraph is not supported
"""

LOG_OLD_ALL_MAPPED = """Edge TPU Compiler version 15.0.340273435
Input: mnist7.tflite
Output: mnist7_edgetpu.tflite

Operator                       Count      Status

SOFTMAX                        1          Mapped to Edge TPU
FULLY_CONNECTED                2          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
CONV_2D                        2          Mapped to Edge TPU
MAX_POOL_2D                    2          Mapped to Edge TPU
"""


def test_parse_v16_log():
    log = parse_log(LOG_16)
    assert log.version == "16.0.384591198"
    assert log.on_chip_bytes == round(313.50 * 1024)
    assert log.on_chip_remaining_bytes == round(7.70 * 1024 * 1024)
    assert log.off_chip_bytes == 0
    assert (log.subgraphs, log.total_ops, log.edgetpu_ops, log.cpu_ops) == (1, 11, 9, 2)
    assert [(o.op, o.count, o.on_edgetpu) for o in log.operators][3] == ("LEAKY_RELU", 1, False)
    assert sum(o.count for o in log.operators) == 11


def test_parse_old_log_derives_counts():
    log = parse_log(LOG_OLD_ALL_MAPPED)
    assert log.version == "15.0.340273435"
    assert (log.edgetpu_ops, log.cpu_ops) == (8, 0)
    assert log.on_chip_bytes is None
