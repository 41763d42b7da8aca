"""Any .tflite in: what a model made elsewhere is, read from its flatbuffer (no TensorFlow).

``edgedeploy compile X.tflite`` and a push of a bare ``.tflite`` (no manifest beside it) take the
file as it is — no conversion — and describe it with a manifest built here, marked
``source.imported``. Pure functions of the parsed model (``tflite_reader.ModelInfo``):

- ``detect_mode``: which of the compile modes the file looks like (a table of rules, first match):

  =========  ====================================================================
  edgetpu    an ``edgetpu-custom-op`` (compiled by edgetpu_compiler)
  int16x8    int16 quantized activations
  int8       int8/uint8 quantized activations in compute ops (float ops listed)
  float16    float16 constants (weights), float activations
  dynamic    int8 constant weights feeding float compute ops (dynamic range)
  float32    anything else
  =========  ====================================================================

- ``tensor_specs``: the manifest's inputs/outputs with their user-facing ``key`` (the name the
  model's signature gives the tensor, else the tensor name without ``serving_default_``/``:0``);
- ``requirements``: the highest version of each builtin op, the custom ops, and the
  TensorFlow-numbered runtime the model needs (op_versions.min_runtime).
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ... import __version__
from ...device.manifest import Manifest, TensorSpec
from ...errors import InputError
from .op_versions import min_runtime
from .tflite_reader import ModelInfo, TensorInfo, float_ops, read_model

EDGETPU_OP = "edgetpu-custom-op"
_BOUNDARY = ("QUANTIZE", "DEQUANTIZE")


@dataclass
class Detected:
    mode: str
    io: str                                      # dtype of the first input
    float_ops: list[str] = field(default_factory=list)   # "TYPE#index" left in float (int8 …)
    edgetpu: bool = False


def _acts(info: ModelInfo) -> list[TensorInfo]:
    return [t for op in info.ops if op.type not in _BOUNDARY
            for t in [x for x in op.inputs if not x.const] + op.outputs]


def detect_mode(info: ModelInfo) -> Detected:
    io = info.inputs[0].dtype if info.inputs else "float32"
    if any(oc.custom and oc.type == EDGETPU_OP for oc in info.opcodes):
        return Detected("edgetpu", io, edgetpu=True)
    acts = _acts(info)
    if any(t.dtype == "int16" and t.quantized for t in acts):
        return Detected("int16x8", io, [f"{op.type}#{op.index}" for op in float_ops(info)])
    if any(t.dtype in ("int8", "uint8") and t.quantized for t in acts):
        return Detected("int8", io, [f"{op.type}#{op.index}" for op in float_ops(info)])
    consts = [t for op in info.ops for t in op.inputs if t.const]
    if any(t.dtype == "float16" for t in consts):
        return Detected("float16", io)
    if any(t.dtype == "int8" and t.const and op.type not in _BOUNDARY
           and any(x.dtype == "float32" for x in op.inputs if not x.const)
           for op in info.ops for t in op.inputs):
        return Detected("dynamic", io)
    return Detected("float32", io)


def _short(name: str) -> str:
    name = name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def tensor_specs(info: ModelInfo) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Manifest specs from the flatbuffer (the same names, indices and quantization the
    interpreter reports), each with its user-facing key."""
    in_names, out_names = info.signature_names()

    def spec(t: TensorInfo, names: dict[int, str], is_input: bool) -> TensorSpec:
        key = names.get(t.index) or (_short(t.name) if is_input else t.name)
        return TensorSpec(t.name, t.index, list(t.shape), t.dtype,
                          float(t.scale[0]) if t.scale else 0.0,
                          int(t.zero_point[0]) if t.zero_point else 0, key)
    return ([spec(t, in_names, True) for t in info.inputs],
            [spec(t, out_names, False) for t in info.outputs])


def requirements(info: ModelInfo) -> dict:
    ops: dict[str, int] = {}
    custom: list[str] = []
    for oc in info.opcodes:
        if oc.custom:
            if oc.type not in custom:
                custom.append(oc.type)
        else:
            ops[oc.type] = max(ops.get(oc.type, 0), oc.version)
    return {"min_runtime": min_runtime((o, v) for o, v in ops.items()),
            "ops": dict(sorted(ops.items())), "custom_ops": custom}


def import_name(path: Path) -> str:
    """A store-safe model name from a file name: digits.int8.tflite → digits.int8."""
    stem = path.name[:-len(".tflite")] if path.name.endswith(".tflite") else path.stem
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", stem).lstrip(".") or "model"
    return name[:100]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def import_manifest(path: Path, data: bytes | None = None, *, name: str | None = None,
                    file: str | None = None, info: ModelInfo | None = None) -> Manifest:
    """The manifest of a .tflite taken as it is. InputError naming PATH if it isn't a model."""
    path = Path(path)
    if data is None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{path}: no such file")
        except IsADirectoryError:
            raise InputError(f"{path}: is a folder, expected a .tflite file")
    from ...device.flatbuffer_check import FlatbufferError, check_tflite

    try:
        check_tflite(data)
    except FlatbufferError as exc:
        raise InputError(f"{path}: not a usable TFLite model: {exc}",
                         hint="is the file whole? copy it again") from exc
    info = info or read_model(data)
    det = detect_mode(info)
    sha = hashlib.sha256(data).hexdigest()
    inputs, outputs = tensor_specs(info)
    integer = det.mode in ("int8", "int16x8", "edgetpu")
    label = det.mode
    if name is None:
        name = import_name(path)
        if name.endswith(f".{label}") and len(name) > len(label) + 1:
            name = name[:-len(label) - 1]   # digits.int8.tflite → digits
    return Manifest(
        name=name, version=sha[:12], mode=det.mode, label=label,
        file=file or path.name, sha256=sha, size=len(data),
        gzip_size=len(gzip.compress(data, 6)), inputs=inputs, outputs=outputs,
        quantization={"io": det.io, "float_fallback": bool(det.float_ops) if integer else None,
                      "float_ops": det.float_ops, "calibration": None},
        training={},
        source={"path": str(path), "sha256": sha, "format": "tflite", "imported": True,
                "description": info.description,
                "min_runtime_version": info.min_runtime_version},
        converter={"edgedeploy": __version__},
        edgetpu={"compiled": True, "imported": True} if det.edgetpu else None,
        requires=requirements(info), created=_now())
