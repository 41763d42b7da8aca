"""The manifest that travels beside every model: what the file is, where it came from, and what
was measured on the host. Written by the host compiler, checked by the agent before install.

JSON (schema 1)::

    {"schema": 1, "name": "digits", "version": "3f2a9c1b0d4e", "mode": "int8",
     "label": "int8", "file": "digits.int8.tflite", "sha256": "…", "size": 132328,
     "gzip_size": 101234,
     "inputs":  [{"name": "serving_default_image:0", "index": 0, "shape": [1, 32, 32, 1],
                  "dtype": "uint8", "scale": 0.0039, "zero_point": 0, "key": "image"}],
     "outputs": [...same fields...],   # key: the name users give the tensor (the model's
                                       # input/output name; data files are keyed by it)
     "quantization": {"io": "uint8", "float_fallback": false, "float_ops": [],
                      "calibration": {"source": "calib.npz", "sha256": "…", "samples": 179,
                                      "shape": [179, 32, 32, 1], "dtype": "float32",
                                      "min": 0.0, "max": 1.0}},
     "training": {"qat": false, "prune": null, "cluster": null, "epochs": null, "data": null},
     "source": {"path": "digits.keras", "sha256": "…", "format": "keras" | "h5" | "saved_model"
                | "tflite", "keras": "3.15.1" | "2.21.0" | null,
                "imported": false},   # imported: a .tflite taken as it is (no conversion)
     "converter": {"tensorflow": "2.21.0", "tf_keras": "2.21.0", "edgedeploy": "0.1.0", …},
     "edgetpu": null | {"compiled": false, "message": "…", "preflight": {…}, "log": {…}},
     "host_figures": null | {"accuracy": 0.98, "top1_agreement": 1.0, "max_abs_error": 0.01,
                             "latency_ms": {"p50": 0.21, …}, "eval_data": "test.npz"},
     "files": {"gate.npz": "<sha256>"},   # other files that travel in the bundle (optional)
     "requires": null | {"min_runtime": "2.17.0",     # TensorFlow-numbered runtime it needs
                         "ops": {"FULLY_CONNECTED": 12, …},   # highest version per builtin op
                         "custom_ops": ["edgetpu-custom-op"]},
     "sizes": {"gate.npz": 20480},        # their sizes in bytes (optional; a board takes no
                                          # more of a file in than its size says)
     "created": "2026-11-24T08:00:00Z",
     "release": null | 1764000000}        # per-model release number, set when it is signed:
                                          # boards refuse a lower one than they have run
                                          # (device/trust.py); agents before it ignore it

Stdlib only: the agent reads it on the board.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError

SCHEMA = 1


@dataclass
class TensorSpec:
    name: str
    index: int
    shape: list[int]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0
    key: str | None = None   # the user-facing name (Keras input/output name, signature name)

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Manifest:
    name: str
    version: str
    mode: str
    label: str
    file: str
    sha256: str
    size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    gzip_size: int | None = None
    quantization: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    converter: dict[str, Any] = field(default_factory=dict)
    edgetpu: dict[str, Any] | None = None
    host_figures: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)  # extra bundle files: path → sha256
    requires: dict[str, Any] | None = None
    sizes: dict[str, int] = field(default_factory=dict)  # … and their sizes: path → bytes
    created: str = ""
    release: int | None = None  # set at signing (host/signing.py); anti-downgrade on boards
    schema: int = SCHEMA

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict, source: str = "manifest") -> "Manifest":
        if not isinstance(data, dict):
            raise InputError(f"{source}: a manifest is a JSON object")
        if data.get("schema") != SCHEMA:
            raise InputError(f"{source}: manifest schema {data.get('schema')!r}, this edgedeploy "
                             f"reads schema {SCHEMA}")
        names = {f.name for f in fields(cls)}
        missing = [n for n in ("name", "version", "mode", "file", "sha256", "size",
                               "inputs", "outputs") if n not in data]
        if missing:
            raise InputError(f"{source}: manifest lacks {', '.join(missing)}")
        kw = {k: v for k, v in data.items() if k in names}
        try:
            kw["inputs"] = [TensorSpec.from_dict(t) for t in data["inputs"]]
            kw["outputs"] = [TensorSpec.from_dict(t) for t in data["outputs"]]
            kw.setdefault("label", data["mode"])
            if kw.get("release") is not None and (not isinstance(kw["release"], int)
                                                  or isinstance(kw["release"], bool)
                                                  or kw["release"] < 0):
                raise InputError(f"{source}: release {kw['release']!r} is not a whole number "
                                 f"≥ 0")
            return cls(**kw)
        except (TypeError, AttributeError) as exc:
            raise InputError(f"{source}: malformed manifest ({exc})") from exc

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()), str(path))
        except FileNotFoundError:
            raise InputError(f"{path}: no such manifest file")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a JSON manifest ({exc})") from exc


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Hash of a folder: every regular file's relative path and content, in sorted order."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(p).encode() + b"\n")
    return h.hexdigest()
