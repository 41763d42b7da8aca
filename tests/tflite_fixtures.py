"""Tiny .tflite files built op by op with LiteRT's own schema (ai_edge_litert ships
``schema_py_generated`` with the flatbuffers object API; the host env has it). For what the
converter can't be asked to write: a model naming one op code at a chosen version, a custom op,
an Edge TPU-compiled graph. Each is a real, self-consistent flatbuffer (it passes
``check_tflite``); what a runtime makes of it is what the tests measure."""

from __future__ import annotations


def _schema():
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    return flatbuffers, s


def _tensor(s, name: bytes, dtype: int, shape: list[int], scale: float | None = None,
            zero_point: int = 0):
    t = s.TensorT()
    t.name, t.type, t.shape, t.buffer = name, dtype, shape, 0
    if scale is not None:
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint = [scale], [zero_point]
        t.quantization = q
    return t


def _pack(fb, s, model) -> bytes:
    b = fb.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _code(s, op: str, version: int = 1, custom: str | None = None):
    oc = s.OperatorCodeT()
    code = s.BuiltinOperator.CUSTOM if custom else getattr(s.BuiltinOperator, op)
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
    if custom:
        oc.customCode = custom.encode()
    return oc


def opcode_only(op: str, version: int) -> bytes:
    """A model whose only operator code is OP at VERSION (no operator uses it): loading it asks
    the runtime's op resolver for exactly that kernel and nothing else."""
    fb, s = _schema()
    m = s.ModelT()
    m.version, m.operatorCodes = 3, [_code(s, op, version)]
    sg = s.SubGraphT()
    sg.tensors = [_tensor(s, b"x", s.TensorType.FLOAT32, [1])]
    sg.inputs, sg.outputs, sg.operators = [0], [0], []
    m.subgraphs, m.buffers = [sg], [s.BufferT()]
    return _pack(fb, s, m)


def custom_op(code: str, *, uint8: bool = False) -> bytes:
    """x → custom op CODE → y (float32, or uint8 with quantization as an Edge TPU model has)."""
    fb, s = _schema()
    m = s.ModelT()
    m.version, m.operatorCodes = 3, [_code(s, "CUSTOM", 1, custom=code)]
    dtype = s.TensorType.UINT8 if uint8 else s.TensorType.FLOAT32
    scale = 1 / 255 if uint8 else None
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    sg = s.SubGraphT()
    sg.tensors = [_tensor(s, b"serving_default_x:0", dtype, [1, 8], scale),
                  _tensor(s, b"Identity", dtype, [1, 4], scale)]
    sg.inputs, sg.outputs, sg.operators = [0], [1], [op]
    m.subgraphs, m.buffers = [sg], [s.BufferT()]
    m.description = b"edgedeploy test model"
    return _pack(fb, s, m)


def edgetpu_compiled() -> bytes:
    """What edgetpu_compiler writes for a fully mapped model: uint8 in → edgetpu-custom-op →
    uint8 out."""
    return custom_op("edgetpu-custom-op", uint8=True)


def op_version_cases() -> list[tuple[str, int, str]]:
    """Every (op, version, first TensorFlow release) of LiteRT's table that this schema names."""
    _, s = _schema()
    from edgedeploy.host.compiler.op_table import INTRODUCED

    return [(op, v, rv) for op, vers in sorted(INTRODUCED.items()) for v, rv in sorted(vers.items())
            if hasattr(s.BuiltinOperator, op)]
