"""Tensors on the wire: strict parsing of what a client sends, for the serve endpoint (NDJSON and
HTTP). Stdlib + numpy; every malformed header becomes an InputError that names what is wrong,
never a ValueError/OverflowError escaping into a connection's thread.

A tensor header is ``{"dtype": "float32", "shape": [1, 32, 32, 1]}`` plus, depending on how
its bytes travel, ``"data"`` (base64), ``"nbytes"`` (raw bytes after the line) or
``"shm"``/``"offset"``/``"nbytes"`` (a registered shared-memory region). Rules:

- dtype: one of ``DTYPES`` (numeric and bool; no object, string or void dtypes);
- shape: a list of at most ``MAX_RANK`` plain integers (not bools, not floats, not NaN or
  Infinity), each ``0 <= d < 2**31``;
- nbytes: a plain integer equal to the shape's element count times the dtype's size.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from ..errors import InputError

DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32",
          "uint32", "int64", "uint64", "bool")
MAX_RANK = 8
MAX_DIM = (1 << 31) - 1

# KServe v2 / Triton datatype names ↔ numpy
V2_DTYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
             "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32",
             "INT64": "int64", "FP16": "float16", "FP32": "float32", "FP64": "float64"}
NP_TO_V2 = {v: k for k, v in V2_DTYPES.items()}


def _reject_constant(name: str) -> Any:
    raise InputError(f"{name} is not allowed in a request (JSON has no NaN or Infinity)")


def loads(text: bytes | str) -> Any:
    """json.loads that refuses NaN/Infinity and turns every failure (bad UTF-8, bad JSON,
    nesting deep enough to exhaust the recursion limit) into an InputError."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except InputError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InputError(f"not a JSON object ({type(exc).__name__}: {str(exc)[:120]})") from None


_DTYPE = {name: np.dtype(name) for name in DTYPES}


def parse_dtype(value: Any, where: str = "tensor") -> np.dtype:
    dtype = _DTYPE.get(value) if isinstance(value, str) else None
    if dtype is None:
        raise InputError(f"{where}: dtype {str(value)[:40]!r} is not one of {', '.join(DTYPES)}")
    return dtype


def parse_shape(value: Any, where: str = "tensor") -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_RANK:
        raise InputError(f"{where}: shape must be a list of at most {MAX_RANK} integers")
    for d in value:
        if type(d) is not int or not 0 <= d <= MAX_DIM:
            raise InputError(f"{where}: shape {str(value)[:80]} has {str(d)[:40]!r}; every "
                             f"dimension is an integer 0 … {MAX_DIM}")
    return tuple(value)


def count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def parse_nbytes(value: Any, where: str = "tensor") -> int:
    if type(value) is not int or value < 0:
        raise InputError(f"{where}: \"nbytes\" must be a non-negative integer")
    return value


def header(a: np.ndarray) -> tuple[dict, memoryview]:
    """(header with nbytes, the raw bytes as a memoryview, no copy) of an array."""
    a = np.ascontiguousarray(a)
    return ({"dtype": str(a.dtype), "shape": list(a.shape), "nbytes": a.nbytes},
            a.data.cast("B") if a.nbytes else memoryview(b""))


def parse_header(h: Any, where: str = "tensor") -> tuple[np.dtype, tuple[int, ...]]:
    if not isinstance(h, dict):
        raise InputError(f"{where}: a tensor is a JSON object with dtype and shape")
    return parse_dtype(h.get("dtype"), where), parse_shape(h.get("shape"), where)


def encode_b64(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape),
            "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_b64(h: Any, where: str = "tensor") -> np.ndarray:
    dtype, shape = parse_header(h, where)
    data = h.get("data")
    if not isinstance(data, str):
        raise InputError(f"{where}: \"data\" must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise InputError(f"{where}: \"data\" is not base64 ({exc})") from None
    return from_bytes(dtype, shape, raw, where)


def from_bytes(dtype: np.dtype, shape: tuple[int, ...], raw: Any, where: str = "tensor"
               ) -> np.ndarray:
    need = count(shape) * dtype.itemsize
    if len(raw) != need:
        raise InputError(f"{where}: {len(raw)} bytes of data; shape {list(shape)} of {dtype} "
                         f"needs {need}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def from_list(data: Any, dtype: np.dtype, shape: tuple[int, ...], where: str = "tensor"
              ) -> np.ndarray:
    """KServe v2 JSON "data": flat (row-major) or nested lists of numbers/bools."""
    if not isinstance(data, list):
        raise InputError(f"{where}: \"data\" must be a list")
    try:
        a = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"{where}: \"data\" does not hold {dtype} values ({exc})") from None
    if a.size != count(shape):
        raise InputError(f"{where}: \"data\" has {a.size} values, shape {list(shape)} needs "
                         f"{count(shape)}")
    return a.reshape(shape)
