"""A .tflite made elsewhere, described from its flatbuffer: Edge TPU detection, requirements,
names, and a bare .tflite pushed without a manifest (load_bundle). The converter-made files of
every mode are in tests/compiler/test_models_in.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgedeploy.errors import InputError
from edgedeploy.host.bundle import load_bundle
from edgedeploy.host.compiler.importer import detect_mode, import_manifest, import_name
from edgedeploy.host.compiler.tflite_reader import read_model
from tests.tflite_fixtures import custom_op, edgetpu_compiled


def test_edgetpu_compiled_file_is_detected_by_its_custom_op(tmp_path):
    data = edgetpu_compiled()
    det = detect_mode(read_model(data))
    assert (det.mode, det.io, det.edgetpu) == ("edgetpu", "uint8", True)
    p = tmp_path / "mobilenet_edgetpu.tflite"
    p.write_bytes(data)
    m = import_manifest(p)
    assert m.mode == m.label == "edgetpu" and m.edgetpu == {"compiled": True, "imported": True}
    assert m.requires["custom_ops"] == ["edgetpu-custom-op"]
    assert m.source["imported"] is True and m.source["format"] == "tflite"
    assert m.inputs[0].dtype == "uint8" and m.inputs[0].key == "x"
    assert m.sha256 == hashlib.sha256(data).hexdigest() and m.version == m.sha256[:12]


def test_bare_tflite_push_makes_the_manifest_on_the_fly(tmp_path):
    p = tmp_path / "vendor.model.tflite"
    p.write_bytes(custom_op("MyOp"))
    b = load_bundle(p)
    assert b.manifest.source["imported"] is True and b.name == "vendor.model"
    assert b.manifest.file == p.name and b.model_path == p
    assert b.manifest.requires["custom_ops"] == ["MyOp"]
    folder = b.write_folder(tmp_path / "bundle")
    assert load_bundle(folder).manifest.sha256 == b.manifest.sha256


def test_bare_tflite_that_is_not_a_model_is_refused_naming_it(tmp_path):
    p = tmp_path / "junk.tflite"
    p.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(200))
    with pytest.raises(InputError) as e:
        load_bundle(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("file,want", [
    ("digits.tflite", "digits"), ("my model (v2).tflite", "my_model__v2_"),
    (".hidden.tflite", "hidden"), ("a@b.tflite", "a_b"),
])
def test_import_name(file, want):
    assert import_name(Path(file)) == want


def test_mode_suffix_is_dropped_from_the_name(tmp_path):
    p = tmp_path / "detector.edgetpu.tflite"
    p.write_bytes(edgetpu_compiled())
    assert import_manifest(p).name == "detector"


def test_a_truncated_model_is_named_as_damaged():
    """read_model on half a converter-made model: an InputError naming it damaged (the
    flatbuffer accessors raise struct.error there, which used to escape)."""
    data = (Path(__file__).parent.parent / "fixtures" / "crash-base.tflite").read_bytes()
    for cut in (len(data) // 2, 1000):
        with pytest.raises(InputError) as e:
            read_model(data[:cut])
        assert "damaged TFLite model" in str(e.value) and "truncated" in str(e.value)
