"""Keras / SavedModel → TFLite bytes in one mode, with the real TFLiteConverter.

This module and ``training.py`` are the only places that import TensorFlow, and only when called.
Keras models are loaded with Keras 2 (``tf_keras``, ``TF_USE_LEGACY_KERAS=1``) because
tensorflow-model-optimization needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ...device.manifest import sha256_file, sha256_tree
from ...errors import CompileError, EnvironmentProblem, InputError, QuantizationError
from ...device.runtime import CapturedNativeOutput
from .modes import default_io
from .tflite_reader import float_ops, read_model


def import_tf():
    """TensorFlow with Keras 2 as tf.keras; quiet logs. EnvironmentProblem if absent."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with CapturedNativeOutput():  # TF's start-up lines (oneDNN, CUDA probes) go nowhere
            import tensorflow as tf
    except ImportError as exc:
        raise EnvironmentProblem("TensorFlow is not installed in this Python",
                                 hint="pip install 'edgedeploy[host]'") from exc
    try:
        import absl.logging
        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    tf.get_logger().setLevel("ERROR")
    return tf


@dataclass
class SourceModel:
    path: Path
    format: str                      # keras | h5 | saved_model
    sha256: str
    sample_shape: list[int]          # input shape without the batch dimension
    keras_model: Any = None          # tf_keras model (None for a SavedModel not loaded as Keras)

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "format": self.format,
                "input_shape": self.sample_shape}

    def keras(self):
        """The model as tf_keras (needed for QAT / pruning / clustering)."""
        if self.keras_model is None:
            import_tf()
            import tf_keras
            try:
                self.keras_model = tf_keras.models.load_model(str(self.path))
            except Exception as exc:
                raise InputError(f"{self.path}: this SavedModel cannot be loaded as a Keras model, "
                                 f"which training-time optimization needs ({_first_line(exc)})",
                                 hint="give the .keras file the model was saved as") from exc
        return self.keras_model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def load_source(path: str | Path) -> SourceModel:
    """Open MODEL (.keras / .h5 / SavedModel folder); InputError naming the file when it can't."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder",
                         hint="give a .keras or .h5 file, or a SavedModel folder")
    tf = import_tf()
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise InputError(f"{path}: a folder but not a SavedModel (no saved_model.pb in it)")
        try:
            with CapturedNativeOutput():
                loaded = tf.saved_model.load(str(path))
            sig = loaded.signatures["serving_default"]
            spec = list(sig.structured_input_signature[1].values())[0]
            shape = [int(d) if d is not None else -1 for d in spec.shape[1:]]
        except Exception as exc:
            raise InputError(f"{path}: cannot be read as a SavedModel with a serving_default "
                             f"signature ({_first_line(exc)})") from exc
        return SourceModel(path, "saved_model", sha256_tree(path), shape)
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise InputError(f"{path}: unknown model format {path.suffix!r}",
                         hint="give a .keras or .h5 file, or a SavedModel folder")
    import tf_keras
    try:
        with CapturedNativeOutput():
            model = tf_keras.models.load_model(str(path))
    except Exception as exc:
        raise InputError(f"{path}: cannot be loaded as a Keras model ({_first_line(exc)})",
                         hint="is the file whole, and saved by Keras 2 / tf_keras?") from exc
    if len(model.inputs) != 1:
        raise InputError(f"{path}: the model has {len(model.inputs)} inputs; edgedeploy compiles "
                         f"single-input models")
    shape = [int(d) if d is not None else -1 for d in model.inputs[0].shape[1:]]
    fmt = "keras" if path.suffix == ".keras" else "h5"
    return SourceModel(path, fmt, sha256_file(path), shape, model)


def _representative(x: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    def gen():
        for i in range(len(x)):
            yield [x[i:i + 1]]
    return gen


def _fixed_batch_converter(tf, src: SourceModel, keras_model=None):
    """A converter for the model with its batch dimension fixed to 1.

    Boards run one sample at a time, and the Edge TPU (and other delegates) accept only
    static shapes: a Keras or SavedModel input of shape [None, ...] would leave a dynamic
    batch (-1 in the shape signature) that the Edge TPU compiler refuses.
    """
    model = keras_model if keras_model is not None else src.keras_model
    shape = [1] + list(src.sample_shape)
    if model is not None:
        inp = model.inputs[0]
        name = inp.name.split(":")[0].split("/")[0] or "input"
        fn = tf.function(lambda x: model(x, training=False))
        concrete = fn.get_concrete_function(tf.TensorSpec(shape, inp.dtype, name=name))
        # The converter saves what it is given as a SavedModel first: hand it just the
        # variables the function captures, not the Keras model's whole object graph (a
        # third of the conversion time went to walking it).
        holder = tf.Module()
        holder.variables_ = list(model.variables)
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    loaded = tf.saved_model.load(str(src.path))
    sig = loaded.signatures["serving_default"]
    arg_name, spec = list(sig.structured_input_signature[1].items())[0]
    fn = tf.function(lambda x: sig(**{arg_name: x}))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, spec.dtype, name=arg_name))
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], loaded)


def make_converter(tf, src: SourceModel, mode: str, *, keras_model=None, calib=None,
                   io: str | None = None, allow_float_fallback: bool = False,
                   qat: bool = False):
    """A TFLiteConverter set up for MODE (pure configuration: nothing is converted yet)."""
    conv = _fixed_batch_converter(tf, src, keras_model)
    io = io or default_io(mode)
    types = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16}
    if mode == "float32":
        return conv
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        pass
    elif mode in ("int8", "edgetpu"):
        if calib is not None:
            conv.representative_dataset = _representative(calib)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if allow_float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        conv.target_spec.supported_ops = ops
        if io != "float32":
            conv.inference_input_type = types[io]
            conv.inference_output_type = types[io]
    elif mode == "int16x8":
        conv.representative_dataset = _representative(calib)
        ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if allow_float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        conv.target_spec.supported_ops = ops
        if io != "float32":
            conv.inference_input_type = types[io]
            conv.inference_output_type = types[io]
    else:
        raise InputError(f"unknown mode {mode!r}")
    return conv


def convert(src: SourceModel, mode: str, *, keras_model=None, calib=None, io: str | None = None,
            allow_float_fallback: bool = False, qat: bool = False) -> bytes:
    """TFLite bytes for MODE. For the integer modes, a float op left in the model is an error
    (QuantizationError naming the ops) unless ``allow_float_fallback``."""
    tf = import_tf()
    integer = mode in ("int8", "int16x8", "edgetpu")
    if integer and calib is None and not qat:
        raise InputError(f"mode {mode} needs calibration data", hint="pass --calib DATA")

    def run(fallback: bool) -> bytes:
        conv = make_converter(tf, src, mode, keras_model=keras_model, calib=calib, io=io,
                              allow_float_fallback=fallback, qat=qat)
        with CapturedNativeOutput():
            return conv.convert()

    try:
        model = run(allow_float_fallback)
    except Exception as exc:
        if not integer or allow_float_fallback:
            raise CompileError(f"{src.path}: the TFLite converter failed in mode {mode}: "
                               f"{_first_line(exc)}") from exc
        # Find out which ops could not be made integer-only, to name them.
        try:
            fallback_model = run(True)
        except Exception:
            raise CompileError(f"{src.path}: the TFLite converter failed in mode {mode}: "
                               f"{_first_line(exc)}") from exc
        model = fallback_model
        _raise_if_float(src, mode, model, reason=_first_line(exc))
        raise CompileError(f"{src.path}: the TFLite converter failed in mode {mode}: "
                           f"{_first_line(exc)}") from exc
    if integer and not allow_float_fallback:
        _raise_if_float(src, mode, model)
    return model


def _raise_if_float(src: SourceModel, mode: str, model: bytes, reason: str | None = None) -> None:
    ops = float_ops(read_model(model))
    if not ops:
        return
    # Name the float compute ops; the (DE)QUANTIZE ops around them are their consequence.
    compute = [op for op in ops if op.type not in ("QUANTIZE", "DEQUANTIZE")] or ops
    names = [f"{op.type} (op {op.index}, {op.signature})" for op in compute]
    extra = len(ops) - len(compute)
    raise QuantizationError(
        f"{src.path}: {len(compute)} op(s) cannot be made integer-only in mode {mode}: "
        + "; ".join(names[:8]) + (" …" if len(names) > 8 else "")
        + (f" (+{extra} QUANTIZE/DEQUANTIZE around them)" if extra else ""),
        [op.type for op in compute],
        hint="pass --allow-float-fallback to keep them in float, or replace them in the model")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("tensorflow", "tf-keras", "tensorflow-model-optimization"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out
