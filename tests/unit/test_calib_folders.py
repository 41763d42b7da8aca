"""--calib FOLDER for models with several inputs: one sub-folder of images per image input,
named as the input; each image resized to its input and scaled to [0, 1]; a folder that can't
calibrate every input is refused naming the file, the inputs missing and what to give instead."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgedeploy.errors import InputError
from edgedeploy.host.compiler.data import load_calibration
from edgedeploy.host.compiler.source import TensorIO

RGB = TensorIO("image", [24, 24, 3], "float32")
GRAY = TensorIO("depth", [16, 16, 1], "float32")
META = TensorIO("meta", [5], "float32")


def _images(folder, n: int, size: tuple[int, int], mode: str, value: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new(mode, size, value if mode == "L" else (value,) * 3).save(folder / f"{i:02d}.png")


def test_one_sub_folder_per_image_input_by_name(tmp_path):
    _images(tmp_path / "image", 4, (40, 30), "RGB", 255)
    _images(tmp_path / "depth", 3, (8, 8), "L", 51)
    xs = load_calibration(tmp_path, [RGB, GRAY], None)
    assert set(xs) == {"image", "depth"}
    assert xs["image"].shape == (3, 24, 24, 3) and xs["depth"].shape == (3, 16, 16, 1)
    assert xs["image"].dtype == np.float32 and np.allclose(xs["image"], 1.0)
    assert np.allclose(xs["depth"], 0.2)
    assert len(load_calibration(tmp_path, [RGB, GRAY], 2)["image"]) == 2


def test_one_input_takes_the_folder_itself_or_its_named_sub_folder(tmp_path):
    _images(tmp_path / "flat", 2, (24, 24), "RGB", 0)
    _images(tmp_path / "named" / "image", 5, (24, 24), "RGB", 0)
    assert load_calibration(tmp_path / "flat", [RGB], None)["image"].shape == (2, 24, 24, 3)
    assert load_calibration(tmp_path / "named", [RGB], None)["image"].shape == (5, 24, 24, 3)


@pytest.mark.parametrize("inputs,made,needle", [
    ([RGB, GRAY], ["image"], "needs a sub-folder per input, named as the input (missing: depth)"),
    ([RGB, META], ["image", "meta"], "calibrates image inputs only; input 'meta'"),
])
def test_a_folder_that_cannot_calibrate_every_input_is_refused(tmp_path, inputs, made, needle):
    for name in made:
        _images(tmp_path / name, 2, (24, 24), "RGB", 0)
    with pytest.raises(InputError) as err:
        load_calibration(tmp_path, inputs, None)
    assert needle in str(err.value) and str(tmp_path) in str(err.value)
