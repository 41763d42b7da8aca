"""Edge TPU preflight: predict which ops the Edge TPU compiler maps, without the compiler.

Coral's documented model requirements (coral.ai/docs/edgetpu/models-intro), applied per op in
execution order:

1. the op is on the Edge TPU's supported-op list (``EDGETPU_OPS``);
2. its activation tensors are 8-bit quantized (int8/uint8; int32 only for constant biases/shapes);
3. its tensor shapes are static (no -1 in the shape signature);
4. its tensors have at most 3 meaningful dimensions (only the 3 innermost may exceed 1);
5. it lives in the first subgraph (the compiler handles one).

The first op that fails a rule ends the Edge TPU segment: it and every op after it run on the
CPU, even ops that would map. A QUANTIZE of a float graph input and a DEQUANTIZE to a float graph
output run on the CPU without ending the segment (the compiler leaves the float I/O boundary to
the CPU). Parameter bytes of the mapped ops are compared with the ~8 MiB on-chip cache; what does
not fit is streamed from off-chip memory each inference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .tflite_reader import ModelInfo, OpInfo

EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU",
    "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT",
    "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "HARD_SWISH",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "GATHER", "DEQUANTIZE",
})
ON_CHIP_CACHE_BYTES = 8 * 1024 * 1024
EIGHT_BIT = ("int8", "uint8")


@dataclass
class OpVerdict:
    index: int
    type: str
    version: int
    signature: str
    edgetpu: bool
    reason: str


@dataclass
class Preflight:
    ops: list[OpVerdict]
    n_edgetpu: int
    n_cpu: int
    first_cpu_op: int | None      # index of the op that ended the Edge TPU segment
    verdict: str                  # "all" | "partial" | "none"
    param_bytes: int              # constant data used by the mapped ops
    on_chip_bytes: int
    off_chip_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def op_rule_failure(op: OpInfo) -> str | None:
    """Why this op cannot run on the Edge TPU by itself, or None if it can."""
    if op.subgraph != 0:
        return "more than one subgraph is not supported"
    if op.type not in EDGETPU_OPS:
        return f"{op.type} is not supported by the Edge TPU"
    for t in op.inputs + op.outputs:
        if t.const:
            if t.dtype not in EIGHT_BIT + ("int32",):
                return f"constant tensor {t.name!r} is {t.dtype}, not quantized"
            continue
        if t.dtype not in EIGHT_BIT:
            if t.dtype == "int32" and op.type in ("RESHAPE", "GATHER", "STRIDED_SLICE", "SLICE",
                                                  "PAD", "EXPAND_DIMS"):
                continue  # shape / index operands
            return f"tensor {t.name!r} is {t.dtype}, not 8-bit quantized"
        if not t.quantized:
            return f"tensor {t.name!r} is {t.dtype} without quantization parameters"
        if t.dynamic:
            return f"tensor {t.name!r} has a dynamic shape {t.shape_signature}"
        if any(d > 1 for d in t.shape[:-3]):
            return f"tensor {t.name!r} has shape {t.shape}: more than 3 dimensions exceed 1"
    return None


def _is_float_boundary(op: OpInfo, graph_in: set[int], graph_out: set[int]) -> bool:
    if op.type == "QUANTIZE":
        return all(t.index in graph_in and t.dtype.startswith("float") for t in op.inputs)
    if op.type == "DEQUANTIZE":
        return all(t.index in graph_out and t.dtype.startswith("float") for t in op.outputs)
    return False


def edgetpu_preflight(info: ModelInfo) -> Preflight:
    graph_in = {t.index for t in info.inputs}
    graph_out = {t.index for t in info.outputs}
    verdicts: list[OpVerdict] = []
    first_cpu: int | None = None
    mapped_buffers: dict[int, int] = {}
    for op in info.ops:
        if first_cpu is not None:
            ok, reason = False, f"after op {first_cpu}, where the Edge TPU segment ended"
        elif _is_float_boundary(op, graph_in, graph_out):
            ok, reason = False, "float I/O boundary: runs on the CPU (segment continues)"
        else:
            failure = op_rule_failure(op)
            ok, reason = failure is None, failure or "mapped to Edge TPU"
            if not ok:
                first_cpu = op.index
        if ok:
            for t in op.inputs:
                if t.const:
                    mapped_buffers[t.index] = t.nbytes
        verdicts.append(OpVerdict(op.index, op.type, op.version, op.signature, ok, reason))
    n_tpu = sum(v.edgetpu for v in verdicts)
    n_cpu = len(verdicts) - n_tpu
    param = sum(mapped_buffers.values())
    verdict = "none" if n_tpu == 0 else ("all" if first_cpu is None else "partial")
    on_chip = min(param, ON_CHIP_CACHE_BYTES)
    return Preflight(verdicts, n_tpu, n_cpu, first_cpu, verdict, param, on_chip, param - on_chip)
