"""A bounds check of a .tflite flatbuffer before any runtime sees it. Stdlib only.

tflite-runtime 2.14 does not verify a model file: a truncated one crashes the process (SIGSEGV,
measured here). This walks the parts of the schema the interpreter touches first — the Model
table, its operator codes, subgraphs (tensors with their names and quantization, operators with
their options, inputs, outputs), buffers, metadata and signature defs — and checks every offset,
vector length, string and index against the file, so a truncated, padded or random file is
refused with a message instead of a crash. It is not a full flatbuffers verifier (a union's
table is checked for bounds, not field by field), and a model it passes can still crash a
runtime (tests/fixtures/README.md has one): device/probe.py loads models in a child process.

``layout`` gives, from the same walk, where each buffer's bytes lie in the file and which
tensors name them: what a tensor-level delta (host/delta.py) is built on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


class FlatbufferError(ValueError):
    pass


class _Buf:
    def __init__(self, data: bytes) -> None:
        self.d = data
        self.n = len(data)

    def need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or pos + size > self.n:
            raise FlatbufferError(f"{what} at byte {pos} runs past the end of the file "
                                  f"({self.n} bytes): truncated or not a TFLite model")

    def u32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return int(struct.unpack_from("<I", self.d, pos)[0])

    def i32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return int(struct.unpack_from("<i", self.d, pos)[0])

    def u16(self, pos: int, what: str) -> int:
        self.need(pos, 2, what)
        return int(struct.unpack_from("<H", self.d, pos)[0])

    def u64(self, pos: int, what: str) -> int:
        self.need(pos, 8, what)
        return int(struct.unpack_from("<Q", self.d, pos)[0])

    def table(self, pos: int, what: str) -> "_Table":
        vt = pos - self.i32(pos, what)
        vsize = self.u16(vt, f"{what} vtable")
        tsize = self.u16(vt + 2, f"{what} vtable")
        if vsize < 4 or vsize % 2:
            raise FlatbufferError(f"{what}: malformed vtable at byte {vt}")
        self.need(vt, vsize, f"{what} vtable")
        self.need(pos, tsize, what)
        return _Table(self, pos, vt, vsize, what)


class _Table:
    def __init__(self, buf: _Buf, pos: int, vt: int, vsize: int, what: str) -> None:
        self.b, self.pos, self.vt, self.vsize, self.what = buf, pos, vt, vsize, what

    def field(self, i: int) -> int | None:
        if 4 + 2 * i >= self.vsize:
            return None
        off = self.b.u16(self.vt + 4 + 2 * i, self.what)
        return self.pos + off if off else None

    def ref(self, i: int, name: str) -> int | None:
        p = self.field(i)
        return None if p is None else p + self.b.u32(p, f"{self.what}.{name}")

    def vector(self, i: int, name: str, elem: int) -> tuple[int, int]:
        """(position of the first element, length); (0, 0) when absent."""
        p = self.ref(i, name)
        if p is None:
            return 0, 0
        n = self.b.u32(p, f"{self.what}.{name}")
        self.b.need(p + 4, n * elem, f"{self.what}.{name} ({n} elements)")
        return p + 4, n

    def tables(self, i: int, name: str) -> list[_Table]:
        start, n = self.vector(i, name, 4)
        return [self.b.table(start + 4 * k + self.b.u32(start + 4 * k, name),
                             f"{self.what}.{name}[{k}]") for k in range(n)]

    def sub(self, i: int, name: str) -> "_Table | None":
        p = self.ref(i, name)
        return None if p is None else self.b.table(p, f"{self.what}.{name}")

    def ints(self, i: int, name: str) -> list[int]:
        start, n = self.vector(i, name, 4)
        return [self.b.i32(start + 4 * k, name) for k in range(n)]

    def u32(self, i: int, name: str, default: int = 0) -> int:
        p = self.field(i)
        return default if p is None else self.b.u32(p, f"{self.what}.{name}")

    def u8(self, i: int, name: str, default: int = 0) -> int:
        p = self.field(i)
        if p is None:
            return default
        self.b.need(p, 1, f"{self.what}.{name}")
        return self.b.d[p]

    def floats(self, i: int, name: str) -> list[float]:
        start, n = self.vector(i, name, 4)
        return list(struct.unpack_from(f"<{n}f", self.b.d, start)) if n else []

    def string(self, i: int, name: str) -> str:
        start, n = self.vector(i, name, 1)
        return self.b.d[start:start + n].decode("utf-8", "replace") if n else ""


def check_tflite(data: bytes) -> None:
    """Raise FlatbufferError (a ValueError) unless DATA is a structurally sound .tflite."""
    b = _Buf(data)
    if b.n < 8 or data[4:8] != b"TFL3":
        raise FlatbufferError("not a TFLite flatbuffer (no TFL3 identifier at byte 4)")
    model = b.table(b.u32(0, "root offset"), "Model")
    codes = model.tables(1, "operator_codes")
    for oc in codes:
        oc.string(1, "custom_code")
    n_codes = len(codes)
    model.string(3, "description")
    buffers = model.tables(4, "buffers")
    for k, buf in enumerate(buffers):
        buf.vector(0, "data", 1)
        offset, size = buf.field(1), buf.field(2)
        if offset is not None and size is not None:
            o, s = b.u64(offset, f"buffers[{k}].offset"), b.u64(size, f"buffers[{k}].size")
            if o > 1:
                b.need(o, s, f"buffers[{k}] (external data)")
    model.ints(5, "metadata_buffer")
    for k, md in enumerate(model.tables(6, "metadata")):
        md.string(0, "name")
        if md.u32(1, "buffer") >= max(len(buffers), 1):
            raise FlatbufferError(f"metadata[{k}] names buffer {md.u32(1, 'buffer')} of "
                                  f"{len(buffers)}")
    subgraphs = model.tables(2, "subgraphs")
    if not subgraphs:
        raise FlatbufferError("the model has no subgraph")
    for k, sd in enumerate(model.tables(7, "signature_defs")):
        sd.string(2, "signature_key")
        g = sd.u32(4, "subgraph_index")
        if g >= len(subgraphs):
            raise FlatbufferError(f"signature_defs[{k}] names subgraph {g} of {len(subgraphs)}")
        nt = subgraphs[g].vector(0, "tensors", 4)[1]
        for idx, name in ((0, "inputs"), (1, "outputs")):
            for tm in sd.tables(idx, name):
                tm.string(0, "name")
                if tm.u32(1, "tensor_index") >= nt:
                    raise FlatbufferError(f"signature_defs[{k}].{name} names tensor "
                                          f"{tm.u32(1, 'tensor_index')} of {nt}")
    for g, sg in enumerate(subgraphs):
        sg.string(4, "name")
        tensors = sg.tables(0, "tensors")
        nt = len(tensors)
        for t, tensor in enumerate(tensors):
            tensor.ints(0, "shape")
            tensor.string(3, "name")
            tensor.ints(7, "shape_signature")
            q = tensor.sub(4, "quantization")
            if q is not None:
                for qi, qn, size in ((0, "min", 4), (1, "max", 4), (2, "scale", 4),
                                     (3, "zero_point", 8)):
                    q.vector(qi, qn, size)
            if tensor.u32(2, "buffer") >= max(len(buffers), 1):
                raise FlatbufferError(f"subgraph {g} tensor {t} names buffer "
                                      f"{tensor.u32(2, 'buffer')} of {len(buffers)}")
        for name, idx in (("inputs", 1), ("outputs", 2)):
            for i in sg.ints(idx, name):
                if not 0 <= i < nt:
                    raise FlatbufferError(f"subgraph {g} {name} names tensor {i} of {nt}")
        for o, op in enumerate(sg.tables(3, "operators")):
            if op.u32(0, "opcode_index") >= n_codes:
                raise FlatbufferError(f"subgraph {g} operator {o} names opcode "
                                      f"{op.u32(0, 'opcode_index')} of {n_codes}")
            op.sub(4, "builtin_options")
            op.vector(5, "custom_options", 1)
            for name, idx in (("inputs", 1), ("outputs", 2), ("intermediates", 8)):
                for i in op.ints(idx, name):
                    if not -1 <= i < nt:
                        raise FlatbufferError(f"subgraph {g} operator {o} {name} names tensor "
                                              f"{i} of {nt}")


def custom_op_names(data: bytes) -> list[str]:
    """The custom op names a model's operator codes declare (``edgetpu-custom-op`` in a model
    edgetpu_compiler made), bounds-checked like ``check_tflite``."""
    b = _Buf(data)
    if b.n < 8 or data[4:8] != b"TFL3":
        raise FlatbufferError("not a TFLite flatbuffer (no TFL3 identifier at byte 4)")
    model = b.table(b.u32(0, "root offset"), "Model")
    names = []
    for code in model.tables(1, "operator_codes"):
        start, n = code.vector(1, "custom_code", 1)  # OperatorCode.custom_code: string
        if n:
            names.append(data[start:start + n].decode("utf-8", "replace"))
    return names


TYPE_SIZES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8, 12: 8, 15: 4, 16: 2}
"""TensorType → bytes per element (FLOAT32, FLOAT16, INT32, UINT8, INT64, BOOL, INT16, INT8,
FLOAT64, UINT64, UINT32, UINT16)."""


@dataclass(frozen=True)
class TensorRef:
    """A tensor that names a buffer: what a delta needs to pair it with its old self."""

    subgraph: int
    name: str
    buffer: int
    type: int                    # TensorType
    shape: tuple[int, ...]
    scales: tuple[float, ...]    # quantization scales (one per channel, or one, or none)
    quantized_dimension: int
    scale_span: tuple[int, int] = (0, 0)   # where the scales' float32 bytes lie in the file


@dataclass(frozen=True)
class Layout:
    """Where a model's constant data lies. ``buffers[k]`` is (start, length) of buffer k's bytes
    in the file ((0, 0) when it holds none): the flatbuffer's ``data`` vector, or for a model
    that keeps its data after the flatbuffer (> 2 GB), the ``offset``/``size`` it names.
    ``tensors``: every tensor with a buffer > 0."""

    size: int
    buffers: list[tuple[int, int]]
    tensors: list[TensorRef]


def layout(data: bytes) -> Layout:
    """The Layout of a .tflite (FlatbufferError, a ValueError, if it is not a sound one)."""
    check_tflite(data)
    b = _Buf(data)
    model = b.table(b.u32(0, "root offset"), "Model")
    spans: list[tuple[int, int]] = []
    for k, buf in enumerate(model.tables(4, "buffers")):
        start, n = buf.vector(0, "data", 1)
        offset, size = buf.field(1), buf.field(2)
        if not n and offset is not None and size is not None:
            o, s = b.u64(offset, f"buffers[{k}].offset"), b.u64(size, f"buffers[{k}].size")
            start, n = (o, s) if o > 1 else (0, 0)
        spans.append((start, n) if n else (0, 0))
    tensors = []
    for g, sg in enumerate(model.tables(2, "subgraphs")):
        for tensor in sg.tables(0, "tensors"):
            k = tensor.u32(2, "buffer")
            if k <= 0:
                continue
            q = tensor.sub(4, "quantization")
            start, n = q.vector(2, "scale", 4) if q is not None else (0, 0)
            tensors.append(TensorRef(
                g, tensor.string(3, "name"), k, tensor.u8(1, "type"),
                tuple(tensor.ints(0, "shape")),
                tuple(q.floats(2, "scale")) if q is not None else (),
                q.u32(6, "quantized_dimension") if q is not None else 0,
                (start, 4 * n) if n else (0, 0)))
    return Layout(b.n, spans, tensors)
