"""The model a user brings: which format it is, read from the file, and loading it.

=============================  ===========================  ======================================
file                           how it is told apart         loaded with
=============================  ===========================  ======================================
``.keras`` from Keras 3        zip, metadata.json           ``keras`` (3.x: TF 2.21's ``tf.keras``)
                               ``keras_version`` 3.x
``.keras`` from tf_keras       ``keras_version`` 2.x        ``tf_keras``
``.h5`` / ``.hdf5``            HDF5 root attribute          ``keras`` or ``tf_keras`` by the same
                               ``keras_version``            rule
SavedModel folder              ``saved_model.pb``           its ``serving_default`` signature
(``model.export()``,           (``keras_metadata.pb``:      (converted from the signature; loaded
``tf.saved_model.save``,       saved by tf_keras)           as tf_keras only for training-time
tf_keras ``save_format="tf"``)                              optimization)
=============================  ===========================  ======================================

No ``TF_USE_LEGACY_KERAS`` is needed: both Keras packages are imported side by side and each
file goes to the one that wrote it. Training-time optimization (TF-MOT) needs tf_keras: a Keras
3 model is moved across by keras_bridge (config + weights) when it's asked for.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...device.manifest import sha256_file, sha256_tree
from ...device.runtime import CapturedNativeOutput
from ...errors import InputError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
HINT = "give a .keras or .h5 file, a SavedModel folder, or a .tflite to import as it is"


@dataclass(frozen=True)
class Format:
    container: str               # keras | h5 | saved_model
    keras: str | None            # the Keras version that wrote it ("3.15.1", "2.21.0"), if known

    @property
    def keras3(self) -> bool:
        return bool(self.keras) and self.keras.split(".")[0] == "3"  # type: ignore[union-attr]


@dataclass
class TensorIO:
    name: str                    # the key data files use (the model's own input/output name)
    shape: list[int]             # without the batch dimension; -1 where unknown
    dtype: str                   # numpy dtype name


@dataclass
class SourceModel:
    path: Path
    format: str                  # keras | h5 | saved_model
    sha256: str
    inputs: list[TensorIO]
    outputs: list[TensorIO]
    keras_version: str | None = None
    keras_model: Any = None      # the loaded Keras model (Keras 3 or tf_keras); None: SavedModel
    _tf_keras: Any = field(default=None, repr=False)

    @property
    def keras3(self) -> bool:
        return Format(self.format, self.keras_version).keras3

    @property
    def sample_shape(self) -> list[int]:
        """The first input's shape without the batch dimension (single-input helpers)."""
        return self.inputs[0].shape

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "format": self.format,
                "keras": self.keras_version, "imported": False,
                "input_shape": self.sample_shape,
                "inputs": [{"name": t.name, "shape": t.shape, "dtype": t.dtype}
                           for t in self.inputs],
                "outputs": [t.name for t in self.outputs]}

    def tf_keras(self):
        """The model as tf_keras (what TF-MOT wraps): itself, moved across from Keras 3, or a
        tf_keras SavedModel loaded as Keras."""
        if self._tf_keras is not None:
            return self._tf_keras
        if self.keras_model is not None and not self.keras3:
            self._tf_keras = self.keras_model
        elif self.keras_model is not None:
            from .keras_bridge import to_tf_keras

            self._tf_keras = to_tf_keras(self.keras_model, path=str(self.path))
        else:
            import tf_keras

            try:
                with CapturedNativeOutput():
                    self._tf_keras = tf_keras.models.load_model(str(self.path))
            except Exception as exc:
                raise InputError(f"{self.path}: this SavedModel cannot be loaded as a Keras "
                                 f"model, which training-time optimization needs "
                                 f"({_first_line(exc)})",
                                 hint="give the .keras file the model was saved as") from exc
        return self._tf_keras

    # kept for callers of the old name
    keras = tf_keras


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def detect_format(path: Path) -> Format:
    """Which format PATH is, from the file itself (no Keras import). InputError naming PATH."""
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise InputError(f"{path}: a folder but not a SavedModel (no saved_model.pb in it)",
                             hint=HINT)
        return Format("saved_model", "2" if (path / "keras_metadata.pb").is_file() else None)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
                if "config.json" not in names:
                    raise InputError(f"{path}: a zip without config.json: not a Keras model file")
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"{path}: not a readable .keras file ({exc})",
                             hint="is the file whole?") from exc
        except ValueError as exc:
            raise InputError(f"{path}: its metadata.json is not JSON ({exc})") from exc
        return Format("keras", str(meta.get("keras_version") or "") or None)
    if suffix in (".h5", ".hdf5"):
        try:
            import h5py

            with h5py.File(path, "r") as f:
                ver = f.attrs.get("keras_version")
                has_config = "model_config" in f.attrs
        except OSError as exc:
            raise InputError(f"{path}: not a readable HDF5 file ({exc})",
                             hint="is the file whole?") from exc
        if not has_config:
            raise InputError(f"{path}: holds weights only (no model_config)",
                             hint="save the whole model (model.save), not save_weights")
        if isinstance(ver, bytes):
            ver = ver.decode()
        return Format("h5", str(ver) if ver else None)
    raise InputError(f"{path}: unknown model format {path.suffix!r}", hint=HINT)


def _dtype(d) -> str:
    import numpy as np

    name = getattr(d, "name", None) or str(d)
    return np.dtype(name.replace("tf.", "")).name


def _shape(s) -> list[int]:
    return [int(d) if d is not None else -1 for d in list(s)[1:]]


def _keras_io(model) -> tuple[list[TensorIO], list[TensorIO]]:
    ins = [TensorIO(_input_name(t, i), _shape(t.shape), _dtype(t.dtype))
           for i, t in enumerate(model.inputs)]
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(model.outputs):
        names = [f"output_{i}" for i in range(len(model.outputs))]
    outs = [TensorIO(n, _shape(t.shape), _dtype(t.dtype)) for n, t in zip(names, model.outputs)]
    return ins, _unique(outs)


def _input_name(t, i: int) -> str:
    name = getattr(t, "name", "") or ""
    name = name.split(":")[0].split("/")[0]
    return name or f"input_{i}"


def _unique(items: list[TensorIO]) -> list[TensorIO]:
    seen: dict[str, int] = {}
    for t in items:
        if t.name in seen:
            seen[t.name] += 1
            t.name = f"{t.name}_{seen[t.name]}"
        else:
            seen[t.name] = 0
    return items


def saved_model_signature(tf, path: Path):
    """(loaded object, serving signature, [(arg name, TensorSpec)], {output name: spec})."""
    with CapturedNativeOutput():
        loaded = tf.saved_model.load(str(path))
    sigs = loaded.signatures
    key = "serving_default" if "serving_default" in sigs else (next(iter(sigs), None))
    if key is None:
        raise InputError(f"{path}: the SavedModel has no signature to convert",
                         hint="export it with model.export(dir) or a serving signature")
    sig = sigs[key]
    args = sorted(sig.structured_input_signature[1].items())
    outs = sig.structured_outputs
    return loaded, sig, args, outs


def load_source(path: str | Path) -> SourceModel:
    """Open MODEL (.keras / .h5 from Keras 3 or tf_keras, or a SavedModel folder); InputError
    naming the file when it can't."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder", hint=HINT)
    fmt = detect_format(path)
    from .convert import import_tf

    tf = import_tf()
    if fmt.container == "saved_model":
        try:
            _, _, args, outs = saved_model_signature(tf, path)
            ins = [TensorIO(n, _shape(s.shape), _dtype(s.dtype)) for n, s in args]
            outputs = [TensorIO(n, _shape(s.shape), _dtype(s.dtype))
                       for n, s in sorted(outs.items())] if isinstance(outs, dict) else []
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{path}: cannot be read as a SavedModel with a serving signature "
                             f"({_first_line(exc)})") from exc
        return SourceModel(path, "saved_model", sha256_tree(path), ins, outputs, fmt.keras)
    if fmt.keras3:
        import keras as K
    else:
        import tf_keras as K
    try:
        with CapturedNativeOutput():
            model = K.models.load_model(str(path))
    except Exception as exc:
        which = f"Keras {fmt.keras}" if fmt.keras else "Keras"
        raise InputError(f"{path}: cannot be loaded as a {which} model ({_first_line(exc)})",
                         hint="is the file whole? A model with custom layers needs them "
                              "registered (keras.saving.register_keras_serializable)") from exc
    ins, outs = _keras_io(model)
    return SourceModel(path, fmt.container, sha256_file(path), ins, outs, fmt.keras, model)
