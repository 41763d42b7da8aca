"""The real TF converter on the digits CNN trained on sklearn digits: every mode, manifests,
float-op checks, preflight verdicts, training-time optimizations, comparison outputs."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest

from edgedeploy.device.manifest import Manifest
from edgedeploy.device.runtime import make_interpreter
from edgedeploy.errors import QuantizationError
from edgedeploy.host.compiler import CompileOptions, Training, compile_model
from edgedeploy.host.compiler.preflight import edgetpu_preflight
from edgedeploy.host.compiler.tflite_reader import float_ops, read_model
from tests.conftest import run_cli

# mode -> (--io, expected input dtype, expected output dtype)
CASES = {
    "float32": (None, "float32", "float32"),
    "float16": (None, "float32", "float32"),
    "dynamic": (None, "float32", "float32"),
    "int8": ("uint8", "uint8", "uint8"),
    "int16x8": (None, "float32", "float32"),
    "edgetpu": (None, "uint8", "uint8"),
}


@pytest.fixture(scope="module")
def compiled_all(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("all")
    proc = run_cli("compile", digits / "digits.keras", "--mode", "all", "--io", "uint8",
                   "--calib", digits / "calib.npz", "--eval", digits / "test.npz",
                   "--latency-runs", "50", "--out", out, "--json", check=True)
    return out, json.loads(proc.stdout)


def _load(out, label):
    m = Manifest.load(out / f"digits.{label}.manifest.json")
    return m, (out / m.file).read_bytes()


@pytest.mark.parametrize("mode", list(CASES))
def test_each_mode_loads_with_matching_io_dtypes(compiled_all, mode):
    out, _ = compiled_all
    label = "edgetpu-int8" if mode == "edgetpu" else mode  # no edgetpu_compiler on this machine
    manifest, model = _load(out, label)
    interp = make_interpreter(model)
    _, want_in, want_out = CASES[mode]
    assert np.dtype(interp.get_input_details()[0]["dtype"]).name == want_in
    assert np.dtype(interp.get_output_details()[0]["dtype"]).name == want_out
    assert manifest.mode == mode
    # the batch is fixed to 1: static shapes everywhere (the Edge TPU needs them)
    assert list(interp.get_input_details()[0]["shape_signature"]) == [1, 32, 32, 1]


@pytest.mark.parametrize("mode", list(CASES))
def test_manifest_matches_the_file(compiled_all, mode):
    out, _ = compiled_all
    label = "edgetpu-int8" if mode == "edgetpu" else mode
    m, model = _load(out, label)
    assert m.file == f"digits.{label}.tflite"
    assert m.sha256 == hashlib.sha256(model).hexdigest()
    assert m.version == m.sha256[:12]
    assert m.size == len(model)
    assert m.gzip_size == len(gzip.compress(model, 6))
    interp = make_interpreter(model)
    for spec, d in zip(m.inputs + m.outputs,
                       interp.get_input_details() + interp.get_output_details()):
        assert spec.name == d["name"] and spec.index == d["index"]
        assert spec.shape == list(d["shape"])
        assert spec.dtype == np.dtype(d["dtype"]).name
        assert spec.scale == pytest.approx(d["quantization"][0])
        assert spec.zero_point == d["quantization"][1]
    assert m.converter["tensorflow"].startswith("2.21")
    assert m.source["format"] == "keras" and len(m.source["sha256"]) == 64
    assert m.host_figures["samples"] == 540
    if mode in ("int8", "int16x8", "edgetpu"):
        cal = m.quantization["calibration"]
        assert cal["samples"] == 179 and cal["shape"] == [179, 32, 32, 1]
        assert m.quantization["float_ops"] == []


def test_int8_has_no_float_op(compiled_all):
    out, _ = compiled_all
    for label in ("int8", "edgetpu-int8"):
        info = read_model((out / f"digits.{label}.tflite").read_bytes())
        assert float_ops(info) == []
        assert all(t.dtype in ("int8", "uint8", "int32") for op in info.ops
                   for t in op.inputs + op.outputs)


def test_float_model_does_have_float_ops(compiled_all):
    out, _ = compiled_all
    assert len(float_ops(read_model((out / "digits.float32.tflite").read_bytes()))) > 5


def test_comparison_table_json_and_plot(compiled_all):
    out, payload = compiled_all
    rows = {r["label"]: r for r in payload["rows"]}
    assert set(rows) == {"float32", "float16", "dynamic", "int8", "int16x8", "edgetpu-int8"}
    assert rows["float32"]["size_ratio"] == 1.0
    assert rows["int8"]["size_ratio"] < 0.3
    assert rows["float16"]["size_ratio"] == pytest.approx(0.5, abs=0.02)
    for r in rows.values():
        assert 0.9 < r["accuracy"] <= 1.0
        assert r["latency_p50_ms"] > 0
        assert r["top1_agreement"] > 0.95
    assert json.loads((out / "digits.compare.json").read_text())["rows"] == payload["rows"]
    png = (out / "digits.compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert any("edgetpu_compiler is not on PATH" in n for n in payload["notes"]["edgetpu-int8"])


def test_accuracy_matches_keras_within_a_point(compiled_all, digits):
    _, payload = compiled_all
    keras_acc = json.loads((digits / "digits.json").read_text())["keras_test_accuracy"]
    for r in payload["rows"]:
        assert abs(r["accuracy"] - keras_acc) <= 0.01, r["label"]


def test_preflight_full_int8_maps_every_op(compiled_all):
    out, _ = compiled_all
    pf = edgetpu_preflight(read_model(out / "digits.edgetpu-int8.tflite"))
    assert pf.verdict == "all" and pf.n_cpu == 0 and pf.first_cpu_op is None
    assert pf.param_bytes > 250_000 and pf.off_chip_bytes == 0


def test_preflight_float_model_maps_nothing(compiled_all):
    out, _ = compiled_all
    pf = edgetpu_preflight(read_model(out / "digits.float32.tflite"))
    assert pf.verdict == "none" and pf.n_edgetpu == 0 and pf.first_cpu_op == 0
    assert "float32, not 8-bit quantized" in pf.ops[0].reason


def test_preflight_int8_with_float_io_keeps_boundary_on_cpu(digits, tmp_path):
    run_cli("compile", digits / "digits.keras", "--mode", "int8", "--io", "float32", "--calib",
            digits / "calib.npz", "--out", tmp_path, check=True)
    pf = edgetpu_preflight(read_model(tmp_path / "digits.int8.tflite"))
    types = [(v.type, v.edgetpu) for v in pf.ops]
    assert types[0] == ("QUANTIZE", False) and types[-1] == ("DEQUANTIZE", False)
    assert all(ok for _, ok in types[1:-1]) and pf.first_cpu_op is None


def test_preflight_splits_at_unsupported_op_in_the_middle(odd_models, tmp_path):
    run_cli("compile", odd_models / "leaky.keras", "--mode", "edgetpu", "--calib",
            odd_models / "calib8.npz", "--out", tmp_path, check=True)
    proc = run_cli("inspect", tmp_path / "leaky.edgetpu-int8.tflite", "--target", "coral",
                   "--json", check=True)
    pf = json.loads(proc.stdout)["edgetpu"]
    ops = [(o["type"], o["edgetpu"]) for o in pf["ops"]]
    split = [t for t, _ in ops].index("LEAKY_RELU")
    assert pf["verdict"] == "partial" and pf["first_cpu_op"] == split
    assert all(ok for _, ok in ops[:split]) and not any(ok for _, ok in ops[split:])
    assert "not supported by the Edge TPU" in pf["ops"][split]["reason"]
    assert "CONV_2D" in [t for t, _ in ops[split + 1:]]  # a mappable op after the split: CPU


def test_int8_names_the_op_that_cannot_be_integer(odd_models, tmp_path):
    proc = run_cli("compile", odd_models / "sin_sm", "--mode", "int8", "--calib",
                   odd_models / "calib16.npz", "--out", tmp_path / "o")
    assert proc.returncode == 1
    assert "SIN (op" in proc.stderr and "--allow-float-fallback" in proc.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    with pytest.raises(QuantizationError) as e:
        compile_model(CompileOptions(odd_models / "sin_sm", "edgetpu", tmp_path / "o2",
                                     calib=odd_models / "calib16.npz"))
    assert e.value.ops == ["SIN"]


def test_float_fallback_allowed_and_recorded(odd_models, tmp_path):
    run_cli("compile", odd_models / "sin_sm", "--mode", "int8", "--calib",
            odd_models / "calib16.npz", "--allow-float-fallback", "--out", tmp_path, check=True)
    m = Manifest.load(tmp_path / "sin_sm.int8.manifest.json")
    assert m.source["format"] == "saved_model"
    assert m.quantization["float_fallback"] is True
    assert any(op.startswith("SIN#") for op in m.quantization["float_ops"])
    assert make_interpreter(tmp_path / m.file) is not None


def test_image_folder_calibration(digits, tmp_path):
    from PIL import Image

    x = np.load(digits / "calib.npz")["x"][:20]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(x):
        Image.fromarray((img[..., 0] * 255).astype(np.uint8)).resize((64, 64)).save(
            folder / f"{i:03d}.png")
    m = compile_model(CompileOptions(digits / "digits.keras", "int8", tmp_path / "o",
                                     calib=folder, calib_samples=12)).results[0].manifest
    assert m.quantization["calibration"]["samples"] == 12
    assert m.quantization["calibration"]["shape"] == [12, 32, 32, 1]


@pytest.mark.slow
@pytest.mark.parametrize("training,mode", [
    (Training(qat=True, epochs=1), "int8"),
    (Training(prune=0.6, epochs=1), "dynamic"),
    (Training(cluster=16, epochs=1), "dynamic"),
])
def test_training_time_optimizations(digits, tmp_path, training, mode):
    report = compile_model(CompileOptions(
        digits / "digits.keras", mode, tmp_path, calib=digits / "calib.npz", training=training,
        train_data=digits / "train.npz", eval_data=digits / "test.npz", latency_runs=20))
    r = report.results[0]
    m = r.manifest
    assert r.label == f"{training.tag}-{mode}" and m.file == f"digits.{training.tag}-{mode}.tflite"
    assert m.training["epochs"] == 1 and m.training["data"].endswith("train.npz")
    assert m.host_figures["accuracy"] > 0.9
    interp = make_interpreter(tmp_path / m.file)
    if training.qat:
        assert np.dtype(interp.get_input_details()[0]["dtype"]).name == "float32"
        info = read_model(tmp_path / m.file)
        assert float_ops(info) == []  # QAT int8: integer compute inside float I/O
    else:
        plain = compile_model(CompileOptions(digits / "digits.keras", mode, tmp_path / "plain"))
        # zeros (pruning) and few distinct values (clustering) compress: the gzip size shows it
        assert m.gzip_size < 0.8 * plain.results[0].manifest.gzip_size
