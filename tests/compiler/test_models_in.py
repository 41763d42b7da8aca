"""Models as users bring them, through the real converter: Keras 3 (TF 2.21's default) and
tf_keras files in every save format → every mode, with sizes side by side; a .tflite imported
as it is; several inputs and outputs matched by name; training-time optimization of a Keras 3
model (moved to tf_keras) and its accuracy check against the source model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgedeploy.device.manifest import Manifest
from edgedeploy.device.runtime import make_interpreter
from edgedeploy.host.compiler import CompileOptions, Training, compile_model
from edgedeploy.host.compiler.source import detect_format
from tests.conftest import run_cli

MODES = ("float32", "float16", "dynamic", "int8", "int16x8", "edgetpu")


def _cnn(K, seed: int):
    """The digits CNN of scripts/digits_cnn.py, in whichever Keras K is."""
    K.utils.set_random_seed(seed)
    return K.Sequential([
        K.layers.Input((32, 32, 1), name="image"),
        K.layers.Conv2D(32, 3, activation="relu", padding="same"), K.layers.MaxPooling2D(),
        K.layers.Conv2D(64, 3, activation="relu", padding="same"), K.layers.MaxPooling2D(),
        K.layers.Conv2D(64, 3, activation="relu", padding="same"), K.layers.Flatten(),
        K.layers.Dense(64, activation="relu"),
        K.layers.Dense(10, activation="softmax", name="probs")])


@pytest.fixture(scope="module")
def saved(digits, tmp_path_factory):
    """The same architecture trained 2 epochs in Keras 3 and in tf_keras, saved every way."""
    import keras
    import tf_keras

    from edgedeploy.host.compiler.convert import import_tf

    tf = import_tf()
    out = tmp_path_factory.mktemp("saved")
    d = np.load(digits / "train.npz")
    paths = {}
    for tag, K in (("k3", keras), ("k2", tf_keras)):
        m = _cnn(K, 1234)
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m.fit(d["x"], d["y"], epochs=2, batch_size=32, verbose=0)
        paths[f"{tag}.keras"] = out / f"{tag}.keras"
        m.save(paths[f"{tag}.keras"])
        paths[f"{tag}.h5"] = out / f"{tag}.h5"
        m.save(paths[f"{tag}.h5"])
        if tag == "k3":
            paths["k3.export"] = out / "k3_export"
            m.export(str(paths["k3.export"]), verbose=False)
        else:
            paths["k2.savedmodel"] = out / "k2_savedmodel"
            m.save(paths["k2.savedmodel"], save_format="tf")
            paths["k2.tf_saved_model"] = out / "k2_tf_saved_model"
            tf.saved_model.save(m, str(paths["k2.tf_saved_model"]))
    return paths


def test_formats_are_told_apart_from_the_file(saved):
    got = {k: detect_format(p) for k, p in saved.items()}
    assert got["k3.keras"].keras3 and got["k3.keras"].container == "keras"
    assert got["k3.h5"].keras3 and got["k3.h5"].container == "h5"
    assert not got["k2.keras"].keras3 and got["k2.keras"].keras.startswith("2.")
    assert not got["k2.h5"].keras3
    assert got["k3.export"].container == got["k2.savedmodel"].container == "saved_model"


@pytest.fixture(scope="module")
def every_mode(saved, digits, tmp_path_factory):
    """Every save format → every mode (compile --mode all), in this process: 7 formats × 7
    conversions (the modes and the float32 reference), about 10 minutes on 2 busy cores."""
    out = {}
    for key, path in saved.items():
        report = compile_model(CompileOptions(
            path, "all", tmp_path_factory.mktemp(key.replace(".", "_")),
            calib=digits / "calib.npz", eval_data=digits / "test.npz", latency_runs=0,
            name="digits"))
        assert report.ok, [(r.label, r.error) for r in report.results]
        out[key] = {r.mode: (r.manifest, r.model_path) for r in report.results}
    return out


@pytest.mark.slow
@pytest.mark.parametrize("key", ["k3.keras", "k3.h5", "k3.export", "k2.keras", "k2.h5",
                                 "k2.savedmodel", "k2.tf_saved_model"])
def test_every_format_converts_in_every_mode(every_mode, key):
    got = every_mode[key]
    assert set(got) == set(MODES)
    for mode, (m, path) in got.items():
        assert m.host_figures["accuracy"] > 0.85, (key, mode)
        assert m.inputs[0].key == "image" and len(m.outputs) == 1
        interp = make_interpreter(path)
        assert list(interp.get_input_details()[0]["shape"]) == [1, 32, 32, 1]
        assert "VAR_HANDLE" not in m.requires["ops"]  # the weights are constants
        assert m.mode == mode
    src = got["float32"][0].source
    if key in ("k3.keras", "k3.h5"):
        assert src["keras"].startswith("3.")
    elif key in ("k2.keras", "k2.h5"):
        assert src["keras"].startswith("2.")


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_keras3_sizes_match_tf_keras_within_5_percent(every_mode, mode):
    """The seed-004 table holds for a Keras 3 model as for tf_keras: the same architecture
    converts to the same sizes (within 5 %) whatever Keras and save format it came from."""
    base = every_mode["k2.keras"][mode][0].size
    for key, got in every_mode.items():
        size = got[mode][0].size
        assert abs(size - base) <= 0.05 * base, (key, mode, size, base)


# -- a .tflite imported as it is -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_import_reads_the_mode_from_the_file(every_mode, tmp_path, mode):
    m, path = every_mode["k3.keras"][mode]
    report = compile_model(CompileOptions(path, None, tmp_path))
    got = report.results[0].manifest
    want = "int8" if mode == "edgetpu" else mode   # not Edge TPU-compiled here: an int8 file
    assert (got.mode, got.label) == (want, want)
    assert got.sha256 == m.sha256 and got.source["imported"] is True
    assert (tmp_path / got.file).read_bytes() == path.read_bytes()   # no conversion
    assert [(s.key, s.index, s.dtype) for s in got.inputs] == \
        [(s.key, s.index, s.dtype) for s in m.inputs]
    assert got.requires == m.requires


@pytest.mark.slow
def test_import_with_eval_measures_the_file(every_mode, digits, tmp_path):
    m, path = every_mode["k3.keras"]["int8"]
    proc = run_cli("compile", path, "--eval", digits / "test.npz", "--latency-runs", "5",
                   "--out", tmp_path, "--json", check=True)
    row = json.loads(proc.stdout)["rows"][0]
    assert row["accuracy"] == pytest.approx(m.host_figures["accuracy"])
    assert row["latency_p50_ms"] > 0


@pytest.mark.slow
def test_import_refuses_conversion_options(every_mode, digits, tmp_path):
    _, path = every_mode["k3.keras"]["float32"]
    proc = run_cli("compile", path, "--mode", "int8", "--calib", digits / "calib.npz",
                   "--out", tmp_path / "o")
    assert proc.returncode == 2 and "imported as it is" in proc.stderr
    proc = run_cli("compile", path, "--mode", "int8", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "a float32 model" in proc.stderr
    assert not (tmp_path / "o").exists()


# -- several inputs and outputs ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """A Keras 3 functional model: inputs image [16,16,1] and meta [4]; outputs cls (5-way
    softmax) and box [4]; data keyed by name."""
    import keras as K

    out = tmp_path_factory.mktemp("two")
    K.utils.set_random_seed(0)
    img, meta = K.Input((16, 16, 1), name="image"), K.Input((4,), name="meta")
    x = K.layers.GlobalAveragePooling2D()(K.layers.Conv2D(8, 3, activation="relu")(img))
    h = K.layers.Concatenate()([x, K.layers.Dense(8, activation="relu")(meta)])
    m = K.Model([img, meta], [K.layers.Dense(5, activation="softmax", name="cls")(h),
                              K.layers.Dense(4, name="box")(h)])
    rng = np.random.default_rng(0)
    xi, xm = rng.random((48, 16, 16, 1), np.float32), rng.random((48, 4), np.float32)
    y = rng.integers(0, 5, 48)
    m.save(out / "two.keras")
    np.savez(out / "calib.npz", meta=xm[:24], image=xi[:24])
    np.savez(out / "test.npz", image=xi, meta=xm, y=y)
    np.savez(out / "nolabels.npz", image=xi, meta=xm)
    np.savez(out / "wrong.npz", x=xi, meta=xm)
    keras_out = m.predict([xi, xm], verbose=0)
    np.savez(out / "keras_outputs.npz", cls=keras_out[0], box=keras_out[1])
    return out


def test_several_inputs_and_outputs_by_name(two_by_two, tmp_path):
    d = two_by_two
    report = compile_model(CompileOptions(d / "two.keras", "int8", tmp_path, calib=d / "calib.npz",
                                          eval_data=d / "test.npz", output="cls",
                                          latency_runs=5))
    m = report.results[0].manifest
    assert sorted(s.key for s in m.inputs) == ["image", "meta"]
    assert sorted(s.key for s in m.outputs) == ["box", "cls"]
    f = m.host_figures
    assert f["output"] == "cls" and 0 <= f["accuracy"] <= 1
    assert set(f["outputs"]) == {"cls", "box"}
    for e in f["outputs"].values():
        assert 0 < e["max_abs_error"] < 0.2 and e["cosine"] > 0.99
    cal = m.quantization["calibration"]
    assert set(cal["inputs"]) == {"image", "meta"} and cal["samples"] == 24
    assert report.baseline is not None   # no float32 row here: the source is the baseline row


def test_float32_outputs_match_keras_by_name(two_by_two, tmp_path):
    """The converter reorders inputs and outputs; by name they still line up with Keras."""
    from edgedeploy.host.compiler.data import Labelled
    from edgedeploy.host.compiler.measure import outputs_for

    d = two_by_two
    r = compile_model(CompileOptions(d / "two.keras", "float32", tmp_path)).results[0]
    z = np.load(d / "test.npz")
    got = outputs_for(r.model_path.read_bytes(), {"image": z["image"], "meta": z["meta"]}, "t")
    ref = np.load(d / "keras_outputs.npz")
    for k in ("cls", "box"):
        assert np.abs(got[k] - ref[k]).max() < 1e-4, k
    assert Labelled  # imported for the type the measure module takes


def test_several_outputs_without_labels_report_errors_only(two_by_two, tmp_path):
    d = two_by_two
    proc = run_cli("compile", d / "two.keras", "--mode", "float16", "--eval", d / "nolabels.npz",
                   "--latency-runs", "0", "--out", tmp_path, "--json", check=True)
    rows = {r["label"]: r for r in json.loads(proc.stdout)["rows"]}
    assert rows["float16"]["accuracy"] is None and rows["float16"]["max_abs_error"] < 0.01
    m = Manifest.load(tmp_path / "two.float16.manifest.json")
    assert m.host_figures["output"] is None and "top1_agreement" not in m.host_figures
    assert set(m.host_figures["outputs"]) == {"cls", "box"}


@pytest.mark.parametrize("args,needle", [
    (["--eval", "test.npz"], "name the one the labels refer to with --output NAME"),
    (["--eval", "test.npz", "--output", "nope"], "--output 'nope'"),
    (["--eval", "wrong.npz"], "no array for input 'image'"),
    (["--calib", "wrong.npz", "--mode", "int8"], "no array for input 'image'"),
])
def test_several_inputs_bad_data_is_refused_before_anything_is_written(two_by_two, tmp_path,
                                                                        args, needle):
    d = two_by_two
    args = [str(d / a) if a.endswith(".npz") else a for a in args]
    if "--mode" not in args:
        args = ["--mode", "float32", *args]
    proc = run_cli("compile", d / "two.keras", *args, "--out", tmp_path / "o")
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


# -- training-time optimization of a Keras 3 model ------------------------------------------------

@pytest.mark.slow
def test_keras3_model_moves_to_tf_keras_for_qat(saved, digits, tmp_path):
    report = compile_model(CompileOptions(
        saved["k3.keras"], "int8", tmp_path, training=Training(qat=True, epochs=1),
        train_data=digits / "train.npz", eval_data=digits / "test.npz", latency_runs=0))
    m = report.results[0].manifest
    assert m.label == "qat-int8" and m.host_figures["accuracy"] > 0.85
    assert report.baseline["host_figures"]["accuracy"] > 0.85
    assert m.source["keras"].startswith("3.")


def test_a_keras3_layer_that_cannot_move_is_named(digits, tmp_path):
    import keras as K

    i = K.Input((32, 32, 1), name="image")
    x = K.layers.Flatten()(i)
    o = K.layers.Dense(10, activation="softmax", lora_rank=2, name="adapter")(x)
    K.Model(i, o).save(tmp_path / "lora.keras")
    proc = run_cli("compile", tmp_path / "lora.keras", "--mode", "dynamic", "--prune", "0.5",
                   "--train", digits / "train.npz", "--out", tmp_path / "o")
    assert proc.returncode == 2
    assert "layer 'adapter'" in proc.stderr and "lora_rank=2" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_ruinous_prune_warns_and_shows_the_baseline(digits, tmp_path):
    """--prune 0.95 for 1 epoch wrecks the digits CNN: the single-mode table has the source
    model as its baseline row, says how many epochs were used and warns."""
    proc = run_cli("compile", digits / "digits.keras", "--mode", "float32", "--prune", "0.95",
                   "--epochs", "1", "--train", digits / "train.npz", "--eval",
                   digits / "test.npz", "--latency-runs", "5", "--out", tmp_path, "--json",
                   check=True)
    p = json.loads(proc.stdout)
    rows = {r["label"]: r for r in p["rows"]}
    assert list(rows) == ["source-float32", "prune95-float32"]
    base, pruned = rows["source-float32"], rows["prune95-float32"]
    assert base["accuracy"] > 0.9 and pruned["accuracy_delta_pts"] < -2
    assert p["training"]["epochs"] == 1 and p["training"]["tag"] == "prune95"
    (w,) = p["warnings"]
    assert "prune95-float32: accuracy fell" in w and "after 1 epoch(s)" in w
    text = run_cli("compile", digits / "digits.keras", "--mode", "float32", "--prune", "0.95",
                   "--epochs", "1", "--train", digits / "train.npz", "--out", tmp_path / "t",
                   check=True).stdout
    assert "fine-tuned for 1 epoch(s)" in text and "warning: prune95: accuracy fell" in text
    assert "training data" in text
