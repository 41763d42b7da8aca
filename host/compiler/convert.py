"""Keras / SavedModel → TFLite bytes in one mode, with the real TFLiteConverter.

This module, ``source.py`` and ``training.py`` are the only places that import TensorFlow, and
only when called. A Keras 3 or tf_keras model is converted through a ``tf.function`` of the
model with the batch fixed to 1, its inputs named as the model names them and its outputs
returned as a dict keyed by the model's output names: the .tflite's signature then maps those
names to tensors (the converter reorders inputs and outputs, so data is matched by name, never
by position). A SavedModel is converted through its serving signature the same way.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np

from ...device.runtime import CapturedNativeOutput
from ...errors import CompileError, EnvironmentProblem, InputError, QuantizationError
from .modes import default_io
from .source import SourceModel, _first_line, load_source, saved_model_signature
from .tflite_reader import float_ops, read_model

__all__ = ["SourceModel", "load_source", "convert", "make_converter", "import_tf", "versions",
           "_first_line"]


def import_tf():
    """TensorFlow, quiet. Keras 3 (``keras``) and Keras 2 (``tf_keras``) are both imported by
    name where needed, so ``TF_USE_LEGACY_KERAS`` doesn't matter here. EnvironmentProblem if
    TensorFlow is absent."""
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


Calib = dict  # input name → float32 samples [N, ...]


def _representative(calib: Calib) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """One dict per sample, keyed by the signature's input names (the converter matches them by
    name: it reorders inputs)."""
    n = min(len(v) for v in calib.values())

    def gen():
        for i in range(n):
            yield {k: v[i:i + 1] for k, v in calib.items()}
    return gen


def _tf_variables(model) -> list:
    # Keras 3 wraps each tf.Variable (``.value``); the converter must see the tf.Variable itself
    # or it keeps the weights as resource variables (VAR_HANDLE ops) instead of constants.
    return [v.value if type(v).__module__.startswith("keras.") and hasattr(v, "value") else v
            for v in model.variables]


def _fixed_batch_converter(tf, src: SourceModel, keras_model=None):
    """A converter for the model with its batch dimension fixed to 1.

    Boards run one sample at a time, and the Edge TPU (and other delegates) accept only
    static shapes: a Keras or SavedModel input of shape [None, ...] would leave a dynamic
    batch (-1 in the shape signature) that the Edge TPU compiler refuses.
    """
    model = keras_model if keras_model is not None else src.keras_model
    specs = [tf.TensorSpec([1] + [d if d > 0 else 1 for d in t.shape], t.dtype, name=t.name)
             for t in src.inputs]
    if model is not None:
        names = [t.name for t in src.outputs]
        multi = len(src.inputs) > 1

        def call(*xs):
            out = model(list(xs) if multi else xs[0], training=False)
            if isinstance(out, dict):
                return {k: out[k] for k in out}
            out = list(out) if isinstance(out, (list, tuple)) else [out]
            return dict(zip(names, out))
        concrete = tf.function(call).get_concrete_function(*specs)
        # The converter saves what it is given as a SavedModel first: hand it just the
        # variables the function captures, not the Keras model's whole object graph (a
        # third of the conversion time went to walking it).
        holder = tf.Module()
        holder.variables_ = _tf_variables(model)
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    loaded, sig, args, _ = saved_model_signature(tf, src.path)
    arg_names = [n for n, _ in args]

    def call_sig(*xs):
        return sig(**dict(zip(arg_names, xs)))
    concrete = tf.function(call_sig).get_concrete_function(*specs)
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], loaded)


def make_converter(tf, src: SourceModel, mode: str, *, keras_model=None,
                   calib: Calib | None = None,
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
        if calib is not None:
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


def convert(src: SourceModel, mode: str, *, keras_model=None, calib: Calib | None = None,
            io: str | None = None,
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
