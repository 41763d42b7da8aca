"""Edge TPU preflight: predict which ops the Edge TPU compiler maps, without the compiler.

Coral's documented model requirements (coral.ai/docs/edgetpu/models-intro), applied per op in
execution order:

1. the op is on the Edge TPU's supported-op list (``EDGETPU_OP_TABLE``: Coral's published
   table, with the Edge TPU runtime version each op needs);
2. its activation tensors are 8-bit quantized (int8/uint8; int32 only for constant biases/shapes);
3. its tensor shapes are static (no -1 in the shape signature);
4. its tensors have at most 3 meaningful dimensions (only the 3 innermost may exceed 1);
5. it lives in the first subgraph (the compiler handles one).

The first op that fails a rule ends the Edge TPU segment: it and every op after it run on the
CPU, even ops that would map. A QUANTIZE of a float graph input and a DEQUANTIZE to a float graph
output run on the CPU without ending the segment (the compiler leaves the float I/O boundary to
the CPU). Parameter bytes: every op's constant data is counted (``param_bytes``); those of the
mapped ops (``mapped_param_bytes``) are compared with the ~8 MiB on-chip cache, and what does
not fit is streamed from off-chip memory each inference.

``summary`` is the one line said first: a float model (no 8-bit quantized activation — a
dynamic-range model too) gets "float model: quantize it (edgedeploy compile --mode edgetpu)";
a model edgetpu_compiler already made (its ``edgetpu-custom-op``) is said to be one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .tflite_reader import ModelInfo, OpInfo

# Coral's "Supported operations" table (https://coral.ai/docs/edgetpu/models-intro/
# #supported-operations, "All operations supported by the Edge TPU and any known limitations"),
# as TFLite op → the Edge TPU runtime version it needs (0: "All"). Its per-op limitations
# (no fused activation on pooling/concatenation, reductions and padding not in the batch
# dimension, 1-D softmax ≤ 16,000 elements, strides of 1 in STRIDED_SLICE, …) are left to the
# compiler. Checked against that table: DEQUANTIZE, GATHER and HARD_SWISH are not in it (the
# list here had them), so they end the segment; a DEQUANTIZE to a float graph output still
# runs on the CPU without ending it (the boundary rule below). The table's "LSTM
# (unidirectional only)" is TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM as well as LSTM.
EDGETPU_OP_TABLE: dict[str, int] = {
    "ADD": 0, "AVERAGE_POOL_2D": 0, "CONCATENATION": 0, "CONV_2D": 0, "DEPTHWISE_CONV_2D": 0,
    "EXPAND_DIMS": 13, "FULLY_CONNECTED": 0, "L2_NORMALIZATION": 0, "LOGISTIC": 0, "LSTM": 14,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 14, "MAXIMUM": 0, "MAX_POOL_2D": 0, "MEAN": 0,
    "MINIMUM": 0, "MUL": 0, "PACK": 13, "PAD": 0, "PRELU": 13, "QUANTIZE": 13,
    "REDUCE_MAX": 14, "REDUCE_MIN": 14, "RELU": 0, "RELU6": 0, "RELU_N1_TO_1": 0,
    "RESHAPE": 0, "RESIZE_BILINEAR": 0, "RESIZE_NEAREST_NEIGHBOR": 0, "RSQRT": 14, "SLICE": 0,
    "SOFTMAX": 0, "SPACE_TO_DEPTH": 0, "SPLIT": 0, "SQUARED_DIFFERENCE": 14, "SQUEEZE": 0,
    "STRIDED_SLICE": 0, "SUB": 0, "SUM": 13, "TANH": 0, "TRANSPOSE": 14, "TRANSPOSE_CONV": 13,
}
EDGETPU_OPS = frozenset(EDGETPU_OP_TABLE)
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
FLOAT_MODEL_LINE = "float model: quantize it (edgedeploy compile --mode edgetpu)"
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
    param_bytes: int              # constant data of every op
    on_chip_bytes: int            # of the mapped ops' constant data: what the cache holds
    off_chip_bytes: int           # ... and what is streamed each inference
    mapped_param_bytes: int = 0   # constant data of the mapped ops
    float_model: bool = False     # no 8-bit quantized activation anywhere
    compiled: bool = False        # edgetpu_compiler made it (edgetpu-custom-op)
    summary: str = ""             # the first line to say

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
    all_buffers: dict[int, int] = {}
    for op in info.ops:
        for t in op.inputs:
            if t.const:
                all_buffers[t.index] = t.nbytes
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
    mapped = sum(mapped_buffers.values())
    verdict = "none" if n_tpu == 0 else ("all" if first_cpu is None else "partial")
    on_chip = min(mapped, ON_CHIP_CACHE_BYTES)
    pf = Preflight(verdicts, n_tpu, n_cpu, first_cpu, verdict, sum(all_buffers.values()),
                   on_chip, mapped - on_chip, mapped_param_bytes=mapped,
                   float_model=is_float_model(info),
                   compiled=EDGETPU_CUSTOM_OP in info.op_types())
    pf.summary = summary_line(pf)
    return pf


def is_float_model(info: ModelInfo) -> bool:
    """No op has an 8-bit quantized activation: float32/float16 and dynamic-range models."""
    return not any(t.dtype in EIGHT_BIT and t.quantized and not t.const
                   for op in info.ops for t in op.inputs + op.outputs)


def summary_line(pf: Preflight) -> str:
    """Pure: the first line `inspect --target coral` says."""
    if pf.compiled:
        return (f"compiled for the Edge TPU already ({EDGETPU_CUSTOM_OP}): inspect the int8 "
                f"model it was compiled from for the op-by-op preflight")
    if pf.float_model:
        return FLOAT_MODEL_LINE
    total = len(pf.ops)
    if pf.verdict == "all":
        return f"all {total} ops map to the Edge TPU"
    first = next(v for v in pf.ops if v.index == pf.first_cpu_op)
    if pf.verdict == "none":
        return f"no op maps to the Edge TPU: op {first.index} {first.type}: {first.reason}"
    return (f"{pf.n_edgetpu} of {total} ops map to the Edge TPU; the segment ends at op "
            f"{first.index} {first.type}: {first.reason}")
