"""Accuracy of a model on labelled data, and agreement with reference outputs.

Inputs are float arrays; a quantized input tensor gets them quantized here with the tensor's
own scale and zero point. Outputs are always dequantized to float32 before any metric, so an
int8 model and its float32 twin are compared on the same scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..errors import InputError


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float data → the dtype of an input tensor (using its scale and zero point when quantized)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype, copy=False)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return y.astype(np.float32)
    return (y.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def check_inputs(x: np.ndarray, detail: dict, source: str) -> None:
    """Raise InputError unless x is a batch of samples that fit the model's first input."""
    want = list(detail["shape"][1:])
    if x.ndim != len(want) + 1 or list(x.shape[1:]) != want:
        raise InputError(f"{source}: inputs have shape {list(x.shape)}, the model expects "
                         f"[N, {', '.join(str(d) for d in want)}]")
    if x.dtype.kind not in "fiu":
        raise InputError(f"{source}: inputs have dtype {x.dtype}, expected numbers (float32)")


def run_dataset(interp, x: np.ndarray, source: str = "data",
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Dequantized float32 outputs of the model's first output for every sample of x."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    check_inputs(x, inp, source)
    xq = quantize(x, inp)
    results = np.empty((len(x),) + tuple(out["shape"][1:]), dtype=np.float32)
    for i in range(len(x)):
        interp.set_tensor(inp["index"], xq[i:i + 1])
        interp.invoke()
        results[i] = dequantize(interp.get_tensor(out["index"]), out)[0]
        if progress is not None:
            progress(i + 1, len(x))
    return results


@dataclass
class Accuracy:
    samples: int
    top1: float
    top5: float | None


@dataclass
class Agreement:
    samples: int
    top1_agreement: float
    mean_abs_error: float
    max_abs_error: float


def accuracy(outputs: np.ndarray, labels: np.ndarray, source: str = "data") -> Accuracy:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(outputs):
        raise InputError(f"{source}: labels y have shape {list(labels.shape)}, expected "
                         f"[{len(outputs)}] (one class index per input)")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise InputError(f"{source}: labels y have dtype {labels.dtype}, expected integers")
    n_classes = outputs.reshape(len(outputs), -1).shape[1]
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise InputError(f"{source}: labels y range over [{labels.min()}, {labels.max()}], "
                         f"the model has {n_classes} classes [0, {n_classes - 1}]")
    flat = outputs.reshape(len(outputs), -1)
    top1 = float(np.mean(np.argmax(flat, axis=1) == labels)) if len(labels) else 0.0
    top5 = None
    if n_classes > 5 and len(labels):
        best5 = np.argsort(-flat, axis=1)[:, :5]
        top5 = float(np.mean(np.any(best5 == labels[:, None], axis=1)))
    return Accuracy(len(labels), top1, top5)


def agreement(outputs: np.ndarray, reference: np.ndarray, source: str = "reference") -> Agreement:
    reference = np.asarray(reference, dtype=np.float32)
    if reference.shape != outputs.shape:
        raise InputError(f"{source}: reference outputs have shape {list(reference.shape)}, "
                         f"expected {list(outputs.shape)}")
    a = outputs.reshape(len(outputs), -1)
    b = reference.reshape(len(reference), -1)
    err = np.abs(a - b)
    return Agreement(len(a), float(np.mean(np.argmax(a, 1) == np.argmax(b, 1))),
                     float(err.mean()), float(err.max()))


def as_dict(obj) -> dict:
    return asdict(obj)
