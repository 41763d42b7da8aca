"""A .tflite with two inputs, two outputs and float16 weights, made by the real converter from a
Keras 3 model built here, taken as a bare file (imported: manifest from the flatbuffer),
installed, benched and eval'd in both board envs against the host's outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

from .conftest import bundle_dir

pytestmark = pytest.mark.board


@pytest.fixture(scope="module")
def several(tmp_path_factory) -> dict:
    import keras as K

    from edgedeploy.device.evaluate import ports, run_outputs
    from edgedeploy.device.runtime import make_interpreter

    out = tmp_path_factory.mktemp("several")
    K.utils.set_random_seed(3)
    img, meta = K.Input((16, 16, 3), name="image"), K.Input((6,), name="meta")
    x = K.layers.GlobalAveragePooling2D()(K.layers.Conv2D(16, 3, activation="relu")(img))
    h = K.layers.Concatenate()([x, K.layers.Dense(16, activation="relu")(meta)])
    m = K.Model([img, meta], [K.layers.Dense(7, activation="softmax", name="cls")(h),
                              K.layers.Dense(10, name="landmarks")(h)])
    m.save(out / "two.keras")
    run_cli("compile", out / "two.keras", "--mode", "float16", "--out", out / "c", check=True)
    bare = out / "landmarker.tflite"      # as a user gets it: no manifest beside it
    shutil.copy(out / "c" / "two.float16.tflite", bare)
    rng = np.random.default_rng(1)
    xi, xm = rng.random((40, 16, 16, 3), np.float32), rng.random((40, 6), np.float32)
    np.savez(out / "data.npz", meta=xm, image=xi)
    np.savez(out / "labelled.npz", meta=xm, image=xi, y=rng.integers(0, 7, 40))
    interp = make_interpreter(bare.read_bytes())     # the host's reference outputs
    ins, outs = ports(interp)
    ref = run_outputs(interp, ins, outs, {"image": xi, "meta": xm})
    np.savez(out / "host_outputs.npz", **ref)
    return {"bare": bare, "data": out / "data.npz", "labelled": out / "labelled.npz",
            "reference": out / "host_outputs.npz", "dir": out}


def test_imported_several_outputs_on_the_board(agent, several, tmp_path):
    from edgedeploy.host.bundle import load_bundle

    b = load_bundle(several["bare"])
    assert b.manifest.mode == "float16" and b.manifest.source["imported"] is True
    assert sorted(s.key for s in b.manifest.inputs) == ["image", "meta"]
    assert sorted(s.key for s in b.manifest.outputs) == ["cls", "landmarks"]
    got = agent("install", bundle_dir(several["bare"], tmp_path / "b"), "--activate")
    assert got["name"] == "landmarker"

    bench = agent("bench", "landmarker", "--runs", 30, "--no-samples")
    assert bench["timing"]["runs"] == 30 and bench["inputs"] == "random"
    from_file = agent("bench", "landmarker", "--runs", 5, "--inputs", several["data"])
    assert from_file["timing"]["runs"] == 5

    ev = agent("eval", "landmarker", "--data", several["data"], "--reference",
               several["reference"], "--data-name", "frames.npz", "--reference-name",
               "host.npz")
    assert ev["samples"] == 40 and ev["top1"] is None and ev["output"] is None
    assert ev["data"] == "frames.npz" and ev["reference"] == "host.npz"
    errs = {e["output"]: e for e in ev["errors"]}
    assert set(errs) == {"cls", "landmarks"}
    for e in errs.values():
        tol = 0.0 if agent.runtime == "litert" else 1e-3   # the host measures with LiteRT 2.3.0
        assert e["max_abs_error"] <= tol and e["cosine"] > 0.9999, (agent.runtime, e)

    labelled = agent("eval", "landmarker", "--data", several["labelled"], "--output", "cls")
    assert labelled["output"] == "cls" and 0 <= labelled["top1"] <= 1


def test_eval_with_labels_needs_the_output_named(agent, several, tmp_path):
    agent("install", bundle_dir(several["bare"], tmp_path / "b"), "--activate")
    err = agent("eval", "landmarker", "--data", several["labelled"], "--data-name", "mine.npz",
                ok=False)
    assert err["_rc"] == 2 and "mine.npz" in err["message"] and "--output NAME" in err["message"]
    err = agent("eval", "landmarker", "--data", several["data"], ok=False)
    assert "no labels y and no --reference" in err["message"]
    bad = Path(tmp_path / "bad.npz")
    np.savez(bad, x=np.zeros((2, 16, 16, 3), np.float32))
    err = agent("eval", "landmarker", "--data", bad, "--reference", several["reference"],
                "--data-name", "bad-user-file.npz", ok=False)
    assert "bad-user-file.npz" in err["message"] and "no array for input" in err["message"]
