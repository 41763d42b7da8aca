"""Deltas built on the host from real converter output, applied in both board envs (no
TensorFlow there): the rebuilt file is the new model bit for bit and loads and runs in the
board's runtime; a damaged delta, a delta against a version the board lacks, and one whose
result's sha256 differs are refused, leaving no output."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from edgedeploy.host.delta import Base, build_delta, plan_transfer
from tests.conftest import board_pythons, stage_device_package

pytestmark = pytest.mark.board
RUNTIMES = ["litert", "tflite_runtime"]

APPLY = r"""
import json, sys
sys.modules["tensorflow"] = None
from edgedeploy.device import delta
from edgedeploy.errors import EdgeDeployError
patch, out, expected, *bases = sys.argv[1:]
by_version = dict(b.split("=", 1) for b in bases)
try:
    got = delta.apply(patch, lambda ref: by_version.get(ref.version), out, expected or None)
except EdgeDeployError as exc:
    print(json.dumps({"ok": False, "code": exc.code, "message": str(exc)}))
    raise SystemExit(0)
from edgedeploy.device.runtime import make_interpreter
import numpy as np
interp = make_interpreter(out)
inp = interp.get_input_details()[0]
interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
interp.invoke()
assert "tensorflow" not in [k for k, v in sys.modules.items() if v is not None]
print(json.dumps({"ok": True, "sha256": got.sha256, "size": got.size}))
"""


@pytest.fixture(params=RUNTIMES)
def board_py(request, tmp_path_factory) -> tuple[str, Path]:
    pythons = board_pythons()
    if request.param not in pythons:
        pytest.fail(f"board env for {request.param} missing: run the tests through scripts/test")
    return pythons[request.param], stage_device_package(tmp_path_factory.mktemp("pkg"))


def apply_on_board(board_py, patch: Path, out: Path, bases: dict[str, Path],
                   expected: str = "") -> dict:
    python, pkg = board_py
    proc = subprocess.run([python, "-c", APPLY, str(patch), str(out), expected,
                           *(f"{v}={p}" for v, p in bases.items())],
                          capture_output=True, text=True, timeout=300,
                          cwd=pkg, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pkg)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_patch(new: Path, bases: dict[str, Path], dest: Path):
    d = build_delta(new.read_bytes(), [Base("digits", v, p.read_bytes())
                                       for v, p in bases.items()])
    dest.write_bytes(d.data)
    return d


def test_head_retrained_int8_rebuilds_bit_exact(board_py, models, retrained, tmp_path):
    new = retrained.read_bytes()
    d = make_patch(retrained, {"v1": models["int8"]}, tmp_path / "p.delta")
    # the tensor-level part: every buffer but the retrained layer's is a copy
    assert d.stats.copied_regions >= 6 and d.stats.changed_region_bytes <= 1000
    assert plan_transfer(len(new), d).kind == "delta"
    assert d.size < len(new) * 0.05, d.stats
    got = apply_on_board(board_py, tmp_path / "p.delta", tmp_path / "out.tflite",
                         {"v1": models["int8"]}, hashlib.sha256(new).hexdigest())
    assert got["ok"], got
    assert (tmp_path / "out.tflite").read_bytes() == new


def test_unrelated_base_and_two_bases_rebuild_bit_exact(board_py, models, retrained, tmp_path):
    """int8 from the float32 model (nothing shared but tables: literals) and from both."""
    new = retrained.read_bytes()
    for label, bases in (("f32", {"v0": models["float32"]}),
                         ("both", {"v0": models["float32"], "v1": models["int8"]})):
        patch = tmp_path / f"{label}.delta"
        make_patch(retrained, bases, patch)
        got = apply_on_board(board_py, patch, tmp_path / f"{label}.tflite", bases)
        assert got["ok"], got
        assert (tmp_path / f"{label}.tflite").read_bytes() == new


def test_float32_from_int8_rebuilds_bit_exact(board_py, models, tmp_path):
    new = models["float32"].read_bytes()
    make_patch(models["float32"], {"v1": models["int8"]}, tmp_path / "p.delta")
    got = apply_on_board(board_py, tmp_path / "p.delta", tmp_path / "out.tflite",
                         {"v1": models["int8"]})
    assert got["ok"], got
    assert (tmp_path / "out.tflite").read_bytes() == new


@pytest.fixture(scope="module")
def imported(digits, retrained, tmp_path_factory) -> dict[str, Path]:
    """The digits CNN and its head-retrained version converted by a bare TFLiteConverter
    (float32, its defaults: no edgedeploy compile, no manifest, a dynamic batch): the kind of
    .tflite a user brings from elsewhere. (Dynamic-range quantization would use op versions
    tflite-runtime 2.14 cannot run.)"""
    from edgedeploy.host.compiler.convert import import_tf

    tf = import_tf()
    import tf_keras as keras

    out = tmp_path_factory.mktemp("imported")
    files = {}
    for label, src in (("old", digits / "digits.keras"),
                       ("new", retrained.parent / "digits.keras")):
        conv = tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(src))
        files[label] = out / f"{label}.tflite"
        files[label].write_bytes(conv.convert())
    return files


def test_imported_tflite_rebuilds_bit_exact(board_py, imported, tmp_path):
    """No assumption that edgedeploy compiled either version."""
    new = imported["new"].read_bytes()
    assert new != imported["old"].read_bytes()
    d = make_patch(imported["new"], {"v1": imported["old"]}, tmp_path / "p.delta")
    assert d.stats.copied_regions >= 4, d.stats
    assert plan_transfer(len(new), d).kind == "delta"
    assert d.size < len(new) * 0.1, d.stats
    got = apply_on_board(board_py, tmp_path / "p.delta", tmp_path / "out.tflite",
                         {"v1": imported["old"]}, hashlib.sha256(new).hexdigest())
    assert got["ok"], got
    assert (tmp_path / "out.tflite").read_bytes() == new


def test_refusals_leave_no_output(board_py, models, retrained, tmp_path):
    make_patch(retrained, {"v1": models["int8"]}, tmp_path / "p.delta")
    good = (tmp_path / "p.delta").read_bytes()
    out = tmp_path / "out.tflite"

    bad = bytearray(good)
    bad[-10] ^= 0xFF
    (tmp_path / "corrupt.delta").write_bytes(bytes(bad))
    got = apply_on_board(board_py, tmp_path / "corrupt.delta", out, {"v1": models["int8"]})
    assert not got["ok"] and got["code"] == "delta_refused" and "damaged" in got["message"]
    assert not out.exists()

    got = apply_on_board(board_py, tmp_path / "p.delta", out, {"v9": models["int8"]})
    assert not got["ok"] and got["code"] == "delta_refused" and "does not hold" in got["message"]
    assert not out.exists()

    # the board's copy of the base differs (same size): the result's sha256 differs
    damaged = bytearray(models["int8"].read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    (tmp_path / "damaged-base.tflite").write_bytes(bytes(damaged))
    got = apply_on_board(board_py, tmp_path / "p.delta", out,
                         {"v1": tmp_path / "damaged-base.tflite"})
    assert not got["ok"] and got["code"] == "delta_refused" and "sha256" in got["message"]
    assert not out.exists()


def test_device_delta_imports_without_numpy_for_plain_ops(board_py, tmp_path):
    """COPY/LIT/ADD need only the standard library: a cold agent pays no numpy import."""
    python, pkg = board_py
    code = ("import sys\nsys.modules['numpy'] = None\nfrom edgedeploy.device import delta\n"
            "from edgedeploy.device import delta_format as f\n"
            "assert f.add_bytes(b'\\x01\\xff', b'\\x01\\x01') == b'\\x02\\x00'\n"
            "assert f.unshuffle(f.shuffle(b'abcdefgh', 4), 4) == b'abcdefgh'\n"
            "print('ok')")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True,
                          cwd=pkg, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pkg)})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
