"""Data files the compiler reads: calibration inputs, training and evaluation sets.

Arrays are matched to the model's inputs **by name** (the model's own input names; see
device/evaluate.py): a model with one input also takes ``x`` or a file's only array.

- calibration (``--calib``): an ``.npz`` with one array per input (``x`` for one input), an
  ``.npy`` (one input), or a folder of images (png/jpg/bmp/gif), each resized to the input and
  scaled to [0, 1] — for a model with several image inputs, one sub-folder per input, named as
  the input;
- training (``--train``): an ``.npz`` with the inputs and ``y`` (class ids);
- evaluation (``--eval``): an ``.npz`` with the inputs and, optionally, ``y`` (without labels the
  compile reports each output's error against the float32 model only).

Every check names the file and the shape or dtype the model expects.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...device.evaluate import Port, match
from ...errors import InputError
from .source import TensorIO

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
Arrays = dict  # input name → [N, ...] array


def _expected(sample_shape: list[int]) -> str:
    return "[N, " + ", ".join(str(d) if d >= 0 else "?" for d in sample_shape) + "]"


def _ports(inputs: list[TensorIO]) -> list[Port]:
    return [Port(t.name, t.name, {"index": i, "shape": [1] + t.shape, "dtype": t.dtype})
            for i, t in enumerate(inputs)]


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz (an .npy: its one array, as ``x``); InputError naming PATH."""
    try:
        if path.suffix == ".npy":
            return {"x": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such file")
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected an .npz file")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, AttributeError) as exc:
        raise InputError(f"{path}: not a readable .npz/.npy file ({exc})") from exc


def check_samples(x: np.ndarray, t: TensorIO, source: str, several: bool = False) -> np.ndarray:
    """X must be samples of input T's shape (float for a float input); returns them in T's
    dtype (float32 for float inputs)."""
    shape = t.shape
    what = f" for input {t.name!r}" if several else ""
    if x.ndim == len(shape) and all(w < 0 or w == g for w, g in zip(shape, x.shape)):
        x = x[None]
    if x.ndim != len(shape) + 1 or not all(w < 0 or w == g for w, g in zip(shape, x.shape[1:])):
        raise InputError(f"{source}: inputs{what} have shape {list(x.shape)}, the model expects "
                         f"{_expected(shape)}")
    float_input = np.dtype(t.dtype).kind == "f"
    if float_input and x.dtype.kind != "f":
        raise InputError(f"{source}: inputs{what} have dtype {x.dtype}, expected float32 "
                         f"samples of shape {_expected(shape)} (as the model sees them in "
                         f"training)")
    if not float_input and x.dtype.kind not in "iub":
        raise InputError(f"{source}: inputs{what} have dtype {x.dtype}, the input takes "
                         f"{t.dtype}")
    if len(x) == 0:
        raise InputError(f"{source}: holds no samples")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise InputError(f"{source}: inputs{what} contain NaN or infinity")
    return x.astype(np.float32 if float_input else t.dtype, copy=False)


def inputs_from(arrays: dict[str, np.ndarray], inputs: list[TensorIO], source: str) -> Arrays:
    """The arrays for each input (matched by name), checked; all with the same sample count."""
    found = match(list(arrays), _ports(inputs), source, single="x", what="input",
                  ignore=("y", "outputs"))
    several = len(inputs) > 1
    out = {t.name: check_samples(arrays[found[t.name]], t, source, several) for t in inputs}
    counts = {k: len(v) for k, v in out.items()}
    if len(set(counts.values())) > 1:
        raise InputError(f"{source}: inputs hold different numbers of samples ({counts})")
    return out


def _is_image(t: TensorIO) -> bool:
    return len(t.shape) == 3 and t.shape[-1] in (1, 3) and np.dtype(t.dtype).kind == "f" \
        and t.shape[0] > 0 and t.shape[1] > 0


def load_images(folder: Path, t: TensorIO) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:  # pillow comes with matplotlib in the host extra
        raise InputError(f"{folder}: reading an image folder needs Pillow") from exc
    if not _is_image(t):
        raise InputError(f"{folder}: an image folder calibrates image inputs only; input "
                         f"{t.name!r} expects {_expected(t.shape)}", hint="give an .npz of inputs")
    h, w, c = t.shape
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


def _image_folders(folder: Path, inputs: list[TensorIO]) -> Arrays:
    if len(inputs) == 1:
        sub = folder / inputs[0].name
        return {inputs[0].name: load_images(sub if sub.is_dir() else folder, inputs[0])}
    missing = [t.name for t in inputs if not (folder / t.name).is_dir()]
    if missing:
        raise InputError(f"{folder}: the model has {len(inputs)} inputs; an image folder needs a "
                         f"sub-folder per input, named as the input (missing: "
                         f"{', '.join(missing)})", hint="or give an .npz keyed by input name")
    out = {t.name: load_images(folder / t.name, t) for t in inputs}
    n = min(len(v) for v in out.values())
    return {k: v[:n] for k, v in out.items()}


def load_calibration(path: str | Path, inputs: list[TensorIO], samples: int | None) -> Arrays:
    path = Path(path)
    if samples is not None and samples < 1:
        raise InputError(f"--calib-samples must be at least 1, got {samples}")
    if path.is_dir():
        xs = _image_folders(path, inputs)
    else:
        xs = inputs_from(read_arrays(path), inputs, str(path))
    if samples is not None:
        xs = {k: v[:samples] for k, v in xs.items()}
    return xs


@dataclass
class Labelled:
    x: Arrays
    y: np.ndarray | None        # class ids, or None (no labels)

    def __len__(self) -> int:
        return len(next(iter(self.x.values())))


def load_labelled(path: str | Path, inputs: list[TensorIO], *, need_y: bool = True) -> Labelled:
    path = Path(path)
    if path.is_dir() or path.suffix != ".npz":
        raise InputError(f"{path}: expected an .npz with the inputs (x for one input) and y "
                         f"(labels)")
    arrays = read_arrays(path)
    xs = inputs_from(arrays, inputs, str(path))
    n = len(next(iter(xs.values())))
    if "y" not in arrays:
        if need_y:
            raise InputError(f"{path}: has arrays {sorted(arrays)}, expected one named 'y' "
                             f"(class ids)")
        return Labelled(xs, None)
    y = np.asarray(arrays["y"])
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=1)  # one-hot labels
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"{path}: labels y have shape {list(y.shape)}, expected [{n}] "
                         f"(one class id per sample)")
    if y.dtype.kind not in "iu":
        raise InputError(f"{path}: labels y have dtype {y.dtype}, expected integer class ids")
    if len(y) and y.min() < 0:
        raise InputError(f"{path}: labels y contain negative class ids")
    return Labelled(xs, y.astype(np.int64))


def summary(xs: Arrays, source: str, sha256: str) -> dict:
    """What the manifest says about calibration data (the first input's figures at the top
    level, every input's under ``inputs``)."""
    per = {k: {"shape": list(v.shape), "dtype": str(v.dtype),
               "min": float(v.min()), "max": float(v.max())} for k, v in xs.items()}
    first = next(iter(per.values()))
    return {"source": source, "sha256": sha256, "samples": int(len(next(iter(xs.values())))),
            **first, "inputs": per}
