"""``edgedeploy inspect MODEL.tflite [--target coral]``: every op of a model, and the Edge TPU
preflight, without TensorFlow (printed by cli/render.py's inspect_table)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .compiler.preflight import edgetpu_preflight
from .compiler.tflite_reader import read_model


def inspect_payload(path: Path, target: str | None) -> dict:
    info = read_model(path)
    payload = {"file": str(path), "size": info.size, "schema_version": info.version,
               "subgraphs": info.subgraphs, "param_bytes": info.param_bytes,
               "inputs": [_tensor(t) for t in info.inputs],
               "outputs": [_tensor(t) for t in info.outputs],
               "ops": [{"index": op.index, "type": op.type, "version": op.version,
                        "subgraph": op.subgraph, "signature": op.signature,
                        "inputs": [_tensor(t) for t in op.inputs if not t.const],
                        "outputs": [_tensor(t) for t in op.outputs]} for op in info.ops]}
    if target == "coral":
        payload["edgetpu"] = edgetpu_preflight(info).to_dict()
    return payload


def _tensor(t) -> dict:
    d = asdict(t)
    d.pop("index", None)
    return d

