"""Accuracy of a model on labelled data, and its error against reference outputs, for models with
any number of inputs and outputs.

Data is matched to the model **by name**, never by position (the converter reorders a model's
inputs and outputs): each input and output has a key — the name the manifest gives it (the
model's own input/output name, its signature name for an imported .tflite), else the signature
name the runtime reports, else the tensor name without ``serving_default_`` / ``:0``. A data
file holds one array per input keyed by that name (``x`` for a model with one input), and ``y``
(class ids, optional). A reference file holds one array per output keyed by its name
(``outputs`` for a model with one output), e.g. what ``edgedeploy compile --eval`` measured on
the host.

Inputs are float arrays; a quantized input tensor gets them quantized here with the tensor's own
scale and zero point. Outputs are always dequantized to float32 before any metric, so an int8
model and its float32 twin are compared on the same scale. Against a reference, every output
gets its max and mean absolute error and cosine similarity (mean over samples); top-1 agreement
is reported only for the output the labels (or ``--output NAME``) pick, where it means
something.
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
    if not scale or x.dtype == dtype:  # not quantized, or already in the tensor's own values
        return x.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    """An output as float32 (Y itself when it already is: get_tensor's arrays are copies)."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return y.astype(np.float32, copy=False)
    return (y.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


# -- names ----------------------------------------------------------------------------------------

@dataclass
class Port:
    """One model input or output as data files see it."""

    key: str            # the user-facing name data is keyed by
    name: str           # the tensor name
    detail: dict        # the interpreter's detail (index, shape, dtype, quantization)

    @property
    def index(self) -> int:
        return int(self.detail["index"])


def short_name(tensor_name: str) -> str:
    name = tensor_name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def _signature_keys(interp) -> tuple[dict[int, str], dict[int, str]]:
    try:
        sigs = interp._get_full_signature_list()
    except Exception:
        return {}, {}
    if not sigs:
        return {}, {}
    sig = sigs.get("serving_default") or next(iter(sigs.values()))
    return ({int(i): k for k, i in sig.get("inputs", {}).items()},
            {int(i): k for k, i in sig.get("outputs", {}).items()})


def ports(interp, manifest=None) -> tuple[list[Port], list[Port]]:
    """The model's inputs and outputs with their keys (from MANIFEST when given)."""
    by_index: dict[int, str] = {}
    if manifest is not None:
        for spec in list(manifest.inputs) + list(manifest.outputs):
            if getattr(spec, "key", None):
                by_index[int(spec.index)] = spec.key
    sig_in, sig_out = _signature_keys(interp)

    def make(details, sig, is_input: bool) -> list[Port]:
        out = []
        for d in details:
            i = int(d["index"])
            key = by_index.get(i) or sig.get(i) or (short_name(d["name"]) if is_input
                                                   else d["name"])
            out.append(Port(key, d["name"], d))
        return out
    return (make(interp.get_input_details(), sig_in, True),
            make(interp.get_output_details(), sig_out, False))


def match(keys: list[str], ports_: list[Port], source: str, *, single: str,
          what: str, ignore: tuple[str, ...] = ("y",)) -> dict[str, str]:
    """port key → the key of its array in a data file with KEYS. A model with one port also
    takes SINGLE ("x", "outputs") or the file's only array. Pure; InputError naming SOURCE."""
    usable = [k for k in keys if k not in ignore]
    found: dict[str, str] = {}
    for p in ports_:
        for cand in (p.key, p.name, short_name(p.name)):
            if cand in keys:
                found[p.key] = cand
                break
    if len(ports_) == 1 and ports_[0].key not in found:
        if single in keys:
            found[ports_[0].key] = single
        elif len(usable) == 1:
            found[ports_[0].key] = usable[0]
    missing = [p.key for p in ports_ if p.key not in found]
    if missing:
        names = ", ".join(p.key for p in ports_)
        raise InputError(f"{source}: no array for {what} {', '.join(map(repr, missing))} (it "
                         f"has {', '.join(keys) or 'none'}; the model's {what}s are {names})",
                         hint=f"key the arrays by {what} name, e.g. np.savez(file, "
                              + ", ".join(f"{p.key}=..." for p in ports_[:3]) + ")"
                              + (f", or name the only one {single!r}" if len(ports_) == 1
                                 else ""))
    return found


def check_inputs(x: np.ndarray, detail: dict, source: str, key: str | None = None) -> None:
    """Raise InputError unless x is a batch of samples that fit the input's shape."""
    sig = list(detail.get("shape_signature", detail["shape"]))[1:] or list(detail["shape"][1:])
    want = [int(d) for d in sig]
    ok = x.ndim == len(want) + 1 and all(w < 0 or w == g for w, g in zip(want, x.shape[1:]))
    what = f" for input {key!r}" if key else ""
    if not ok:
        raise InputError(f"{source}: inputs{what} have shape {list(x.shape)}, the model expects "
                         f"[N, {', '.join(str(d) if d >= 0 else '?' for d in want)}]")
    if x.dtype.kind not in "fiub":
        raise InputError(f"{source}: inputs{what} have dtype {x.dtype}, expected numbers")


def run_outputs(interp, inputs: list[Port], outputs: list[Port], xs: dict[str, np.ndarray],
                source: str = "data",
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Dequantized float32 outputs, key → [N, ...], for every sample of XS (key → [N, ...])."""
    n = None
    for p in inputs:
        x = xs[p.key]
        check_inputs(x, p.detail, source, p.key if len(inputs) > 1 else None)
        if n is not None and len(x) != n:
            raise InputError(f"{source}: input {p.key!r} has {len(x)} samples, another has {n}")
        n = len(x)
    n = n or 0
    xq = {p.key: quantize(xs[p.key], p.detail) for p in inputs}
    results = {p.key: np.empty((n,) + tuple(p.detail["shape"][1:]), dtype=np.float32)
               for p in outputs}
    for i in range(n):
        for p in inputs:
            interp.set_tensor(p.index, xq[p.key][i:i + 1])
        interp.invoke()
        for p in outputs:
            results[p.key][i] = dequantize(interp.get_tensor(p.index), p.detail)[0]
        if progress is not None:
            progress(i + 1, n)
    return results


def run_dataset(interp, x: np.ndarray, source: str = "data",
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Single-input models: dequantized float32 outputs of the first output for every sample."""
    ins, outs = ports(interp)
    if len(ins) != 1:
        raise InputError(f"{source}: the model has {len(ins)} inputs; key the data by input "
                         f"name ({', '.join(p.key for p in ins)})")
    return run_outputs(interp, ins, outs[:1], {ins[0].key: x}, source, progress)[outs[0].key]


def pick_output(outputs: list[Port], name: str | None, *, labels: bool, source: str
                ) -> Port | None:
    """The output top-1 figures are about: NAME, else the only one; None when there are several
    and no labels ask for one. InputError for an unknown NAME or labels with no NAME to go by."""
    if name is not None:
        for p in outputs:
            if name in (p.key, p.name, short_name(p.name)):
                return p
        raise InputError(f"--output {name!r}: the model's outputs are "
                         f"{', '.join(p.key for p in outputs)}")
    if len(outputs) == 1:
        return outputs[0]
    if labels:
        raise InputError(f"{source}: labels y, but the model has {len(outputs)} outputs ("
                         f"{', '.join(p.key for p in outputs)})",
                         hint="name the one the labels refer to with --output NAME")
    return None


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


@dataclass
class OutputError:
    output: str
    max_abs_error: float
    mean_abs_error: float
    cosine: float          # mean over samples of the cosine similarity of the flattened outputs


def accuracy(outputs: np.ndarray, labels: np.ndarray, source: str = "data") -> Accuracy:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1 and len(labels) == len(outputs):
        labels = np.argmax(labels, axis=1)  # one-hot
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


def _check_ref(outputs: np.ndarray, reference: np.ndarray, source: str, key: str | None) -> None:
    if reference.shape != outputs.shape:
        what = f" for output {key!r}" if key else ""
        raise InputError(f"{source}: reference outputs{what} have shape "
                         f"{list(reference.shape)}, expected {list(outputs.shape)}")


def agreement(outputs: np.ndarray, reference: np.ndarray, source: str = "reference") -> Agreement:
    reference = np.asarray(reference, dtype=np.float32)
    _check_ref(outputs, reference, source, None)
    a = outputs.reshape(len(outputs), -1)
    b = reference.reshape(len(reference), -1)
    err = np.abs(a - b)
    return Agreement(len(a), float(np.mean(np.argmax(a, 1) == np.argmax(b, 1))),
                     float(err.mean()), float(err.max()))


def error_stats(key: str, outputs: np.ndarray, reference: np.ndarray,
                source: str = "reference") -> OutputError:
    """Max and mean absolute error and mean cosine similarity of OUTPUTS against REFERENCE."""
    reference = np.asarray(reference, dtype=np.float32)
    _check_ref(outputs, reference, source, key)
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    err = np.abs(a - b)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.sum(a * b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, dot / np.maximum(na * nb, 1e-300))
    return OutputError(key, float(err.max()) if err.size else 0.0,
                       float(err.mean()) if err.size else 0.0,
                       float(np.mean(cos)) if len(cos) else 1.0)


def as_dict(obj) -> dict:
    return asdict(obj)
