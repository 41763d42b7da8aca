"""Data files the compiler reads: calibration inputs, training and evaluation sets.

- calibration (``--calib``): an ``.npz`` (array ``x``, or its only array), an ``.npy``, or a folder
  of images (png/jpg/bmp/gif), each resized to the model's input and scaled to [0, 1];
- labelled sets (``--train``, ``--eval``): an ``.npz`` with ``x`` (inputs) and ``y`` (class ids).

Every check names the file and the shape or dtype the model expects.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ...errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def _expected(sample_shape: list[int]) -> str:
    return "[N, " + ", ".join(str(d) for d in sample_shape) + "]"


def _load_npz_or_npy(path: Path, key: str, required: bool) -> np.ndarray | None:
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False) if key == "x" else None
        with np.load(path, allow_pickle=False) as z:
            if key in z.files:
                return z[key]
            if key == "x" and len(z.files) == 1:
                return z[z.files[0]]
            if required:
                raise InputError(f"{path}: has arrays {z.files}, expected one named {key!r}")
            return None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz/.npy file ({exc})") from exc


def check_samples(x: np.ndarray, sample_shape: list[int], source: str) -> np.ndarray:
    """x must be float samples of the model's input shape; returns them as float32."""
    if x.ndim == len(sample_shape) and list(x.shape) == list(sample_shape):
        x = x[None]
    if x.ndim != len(sample_shape) + 1 or list(x.shape[1:]) != list(sample_shape):
        raise InputError(f"{source}: inputs have shape {list(x.shape)}, the model expects "
                         f"{_expected(sample_shape)}")
    if x.dtype.kind != "f":
        raise InputError(f"{source}: inputs have dtype {x.dtype}, expected float32 samples of "
                         f"shape {_expected(sample_shape)} (as the model sees them in training)")
    if len(x) == 0:
        raise InputError(f"{source}: holds no samples")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{source}: inputs contain NaN or infinity")
    return x.astype(np.float32, copy=False)


def load_images(folder: Path, sample_shape: list[int]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:  # pillow comes with matplotlib in the host extra
        raise InputError(f"{folder}: reading an image folder needs Pillow") from exc
    if len(sample_shape) != 3 or sample_shape[-1] not in (1, 3):
        raise InputError(f"{folder}: an image folder calibrates image models only; the model "
                         f"expects {_expected(sample_shape)}", hint="give an .npz of inputs")
    h, w, c = sample_shape
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    out = np.empty((len(files), h, w, c), dtype=np.float32)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                small = im.convert("L" if c == 1 else "RGB").resize(
                    (w, h), Image.Resampling.BILINEAR)
                arr = np.asarray(small, dtype=np.float32) / 255.0
        except OSError as exc:
            raise InputError(f"{f}: not a readable image ({exc})") from exc
        out[i] = arr.reshape(h, w, c)
    return out


def load_calibration(path: str | Path, sample_shape: list[int], samples: int | None) -> np.ndarray:
    path = Path(path)
    x: np.ndarray
    if path.is_dir():
        x = load_images(path, sample_shape)
    else:
        loaded = _load_npz_or_npy(path, "x", required=True)
        assert loaded is not None
        x = check_samples(loaded, sample_shape, str(path))
    if samples is not None:
        if samples < 1:
            raise InputError(f"--calib-samples must be at least 1, got {samples}")
        x = x[:samples]
    return x


def load_labelled(path: str | Path, sample_shape: list[int]) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if path.is_dir() or path.suffix != ".npz":
        raise InputError(f"{path}: expected an .npz with arrays x (inputs) and y (labels)")
    x = _load_npz_or_npy(path, "x", required=True)
    y = _load_npz_or_npy(path, "y", required=True)
    assert x is not None and y is not None
    x = check_samples(x, sample_shape, str(path))
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=1)  # one-hot labels
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"{path}: labels y have shape {list(y.shape)}, expected [{len(x)}] "
                         f"(one class id per input in x)")
    if y.dtype.kind not in "iu":
        raise InputError(f"{path}: labels y have dtype {y.dtype}, expected integer class ids")
    if y.min() < 0:
        raise InputError(f"{path}: labels y contain negative class ids")
    return x, y.astype(np.int64)


def summary(x: np.ndarray, source: str, sha256: str) -> dict:
    return {"source": source, "sha256": sha256, "samples": int(len(x)),
            "shape": list(x.shape), "dtype": str(x.dtype),
            "min": float(x.min()), "max": float(x.max())}
