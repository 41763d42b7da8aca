"""Read a .tflite flatbuffer without TensorFlow: ops, tensors, quantization, parameter bytes.

Uses the ``tflite`` package (generated flatbuffer accessors). Everything returned is plain
dataclasses so the preflight and the float-op check are pure functions of it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import EnvironmentProblem, InputError


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: list[int]
    shape_signature: list[int]
    dtype: str
    scale: list[float]
    zero_point: list[int]
    const: bool          # has data in the file (weights, biases, constant shapes)
    nbytes: int          # bytes of constant data (0 for activations)

    @property
    def quantized(self) -> bool:
        return bool(self.scale)

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)


@dataclass
class OpInfo:
    index: int
    subgraph: int
    type: str            # BuiltinOperator name, or the custom code for CUSTOM ops
    version: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    custom: bool = False

    @property
    def signature(self) -> str:
        ins = ",".join(t.dtype for t in self.inputs if not t.const) or "-"
        outs = ",".join(t.dtype for t in self.outputs) or "-"
        return f"{ins} -> {outs}"


@dataclass(frozen=True)
class OpCode:
    type: str            # BuiltinOperator name, or the custom code for CUSTOM ops
    version: int
    custom: bool


@dataclass
class Signature:
    key: str                     # e.g. "serving_default"
    inputs: dict[str, int]       # signature name → tensor index (subgraph 0)
    outputs: dict[str, int]


@dataclass
class ModelInfo:
    size: int
    version: int
    description: str
    ops: list[OpInfo]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    subgraphs: int
    param_bytes: int
    tensors: dict[int, TensorInfo] = field(repr=False, default_factory=dict)
    opcodes: list[OpCode] = field(default_factory=list)      # every code, used or not
    metadata: dict[str, bytes] = field(repr=False, default_factory=dict)
    signatures: list[Signature] = field(default_factory=list)

    def op_types(self) -> list[str]:
        return [op.type for op in self.ops]

    @property
    def min_runtime_version(self) -> str | None:
        """What the converter wrote into the ``min_runtime_version`` metadata, if anything."""
        raw = self.metadata.get("min_runtime_version")
        text = raw.split(b"\0", 1)[0].decode("ascii", "replace").strip() if raw else ""
        return text or None

    def signature_names(self) -> tuple[dict[int, str], dict[int, str]]:
        """Tensor index → the name the first signature gives it, for inputs and outputs."""
        if not self.signatures:
            return {}, {}
        sig = self.signatures[0]
        return ({i: n for n, i in sig.inputs.items()}, {i: n for n, i in sig.outputs.items()})


def _type_names() -> dict[int, str]:
    import tflite
    return {v: k.lower() for k, v in vars(tflite.TensorType).items()
            if not k.startswith("_") and isinstance(v, int)}


def read_model(source: bytes | str | Path) -> ModelInfo:
    """Parse a .tflite file (path or bytes). A file that is not a TFLite model → InputError."""
    label = "<bytes>"
    if not isinstance(source, (bytes, bytearray)):
        label = str(source)
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise InputError(f"{label}: no such file", hint="give the path of a .tflite model")
        except IsADirectoryError:
            raise InputError(f"{label}: is a folder, expected a .tflite file")
    else:
        data = bytes(source)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InputError(f"{label}: not a TFLite model (no TFL3 flatbuffer identifier; "
                         f"{len(data)} bytes)", hint="is the file truncated or of another format?")
    try:
        import tflite
    except ImportError as exc:
        raise EnvironmentProblem("the 'tflite' package is needed to read .tflite files",
                                 hint="pip install tflite") from exc
    from ...device.flatbuffer_check import FlatbufferError, check_tflite

    try:
        check_tflite(data)   # offsets and lengths first: a truncated file is named as such
    except FlatbufferError as exc:
        raise InputError(f"{label}: damaged TFLite model ({exc})",
                         hint="re-create or re-copy the file") from exc
    try:
        return _parse(tflite, data)
    except (IndexError, ValueError, TypeError, AttributeError, UnicodeDecodeError,
            struct.error) as exc:
        # flatbuffers raises these on offsets that run past the end of a damaged file
        raise InputError(f"{label}: damaged TFLite model ({type(exc).__name__}: {exc})",
                         hint="re-create or re-copy the file") from exc


def _op_names() -> dict[int, str]:
    from tflite.utils import BUILTIN_OPCODE2NAME

    from .op_table import CODES

    # ops newer than the tflite package are named from LiteRT's schema
    return {**{code: name for name, code in CODES.items()}, **BUILTIN_OPCODE2NAME}


def _parse(tflite, data: bytes) -> ModelInfo:
    model = tflite.Model.GetRootAsModel(data, 0)
    types = _type_names()
    names = _op_names()
    opcodes: list[OpCode] = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = names.get(code, f"BUILTIN_{code}")
        custom = name == "CUSTOM"
        if custom and oc.CustomCode():
            name = oc.CustomCode().decode("utf-8", "replace")
        opcodes.append(OpCode(name, oc.Version(), custom))

    def buffer_bytes(buffer_index: int) -> int:
        if buffer_index <= 0 or buffer_index >= model.BuffersLength():
            return 0
        buf = model.Buffers(buffer_index)
        size = buf.DataLength()
        if not size and hasattr(buf, "Size"):
            size = int(buf.Size() or 0)  # models > 2 GB keep data outside the flatbuffer
        return int(size)

    ops: list[OpInfo] = []
    all_tensors: dict[int, TensorInfo] = {}
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    seen_buffers: set[int] = set()
    param_bytes = 0
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        tensors = []
        for t in range(sg.TensorsLength()):
            tt = sg.Tensors(t)
            q = tt.Quantization()
            scale = [float(v) for v in q.ScaleAsNumpy()] if q is not None and q.ScaleLength() else []
            zp = [int(v) for v in q.ZeroPointAsNumpy()] if q is not None and q.ZeroPointLength() else []
            shape = [int(v) for v in tt.ShapeAsNumpy()] if tt.ShapeLength() else []
            sig = [int(v) for v in tt.ShapeSignatureAsNumpy()] if tt.ShapeSignatureLength() else shape
            nbytes = buffer_bytes(tt.Buffer())
            if nbytes and tt.Buffer() not in seen_buffers:
                seen_buffers.add(tt.Buffer())
                param_bytes += nbytes
            info = TensorInfo(t, (tt.Name() or b"").decode("utf-8", "replace"), shape, sig,
                              types.get(tt.Type(), f"type{tt.Type()}"), scale, zp, nbytes > 0, nbytes)
            tensors.append(info)
            if s == 0:
                all_tensors[t] = info
        if s == 0:
            inputs = [tensors[i] for i in sg.InputsAsNumpy()] if sg.InputsLength() else []
            outputs = [tensors[i] for i in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            oc = opcodes[op.OpcodeIndex()]
            ins = [tensors[i] for i in (op.InputsAsNumpy() if op.InputsLength() else []) if i >= 0]
            outs = [tensors[i] for i in (op.OutputsAsNumpy() if op.OutputsLength() else []) if i >= 0]
            ops.append(OpInfo(o, s, oc.type, oc.version, ins, outs, oc.custom))
    description = (model.Description() or b"").decode("utf-8", "replace")
    metadata = {}
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        b = md.Buffer()
        if 0 < b < model.BuffersLength() and model.Buffers(b).DataLength() <= 4096:
            metadata[(md.Name() or b"").decode("utf-8", "replace")] = \
                model.Buffers(b).DataAsNumpy().tobytes()
    signatures = []
    for i in range(model.SignatureDefsLength()):
        sd = model.SignatureDefs(i)
        if sd.SubgraphIndex() != 0:
            continue
        def tmap(n, get):
            return {(get(k).Name() or b"").decode("utf-8", "replace"): int(get(k).TensorIndex())
                    for k in range(n)}
        signatures.append(Signature((sd.SignatureKey() or b"").decode("utf-8", "replace"),
                                    tmap(sd.InputsLength(), sd.Inputs),
                                    tmap(sd.OutputsLength(), sd.Outputs)))
    return ModelInfo(len(data), model.Version(), description, ops, inputs, outputs,
                     model.SubgraphsLength(), param_bytes, all_tensors, opcodes, metadata,
                     signatures)


def float_ops(info: ModelInfo) -> list[OpInfo]:
    """Ops that compute in float: any float32/float16 activation in or out.

    A QUANTIZE that takes a float graph input and a DEQUANTIZE that produces a float graph
    output are the float I/O boundary of an integer model, not float compute: left out.
    """
    graph_in = {t.index for t in info.inputs}
    graph_out = {t.index for t in info.outputs}
    found = []
    for op in info.ops:
        if op.type == "QUANTIZE" and all(t.index in graph_in for t in op.inputs):
            continue
        if op.type == "DEQUANTIZE" and all(t.index in graph_out for t in op.outputs):
            continue
        acts = [t for t in op.inputs if not t.const] + op.outputs
        if any(t.dtype in ("float32", "float16") for t in acts):
            found.append(op)
    return found
