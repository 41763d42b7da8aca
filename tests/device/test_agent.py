"""The agent as a subprocess in both board envs (ai-edge-litert + numpy 2, tflite-runtime 2.14 +
numpy 1), on models compiled by the real converter in these tests."""

from __future__ import annotations

import json
import os
import shutil
import tarfile

import numpy as np
import pytest

from edgedeploy.device.manifest import Manifest

from tests.conftest import assert_top1_as_host

from .conftest import bundle_dir, store_state

pytestmark = pytest.mark.board


def test_version_and_info(agent):
    v = agent("version")
    assert v["zipapp"] is True and len(v["content_hash"]) == 64
    from edgedeploy.device.ship import content_hash, source_files
    assert v["content_hash"] == content_hash(source_files())  # the host can tell it's current
    info = agent("info")
    assert info["runtime"] == agent.runtime
    assert info["runtimes"][agent.runtime] and info["runtimes"]["tensorflow"] is None
    assert info["numpy"].startswith("2." if agent.runtime == "litert" else "1.")
    assert info["arch"] and info["cpu"]["cores"] >= 1 and info["memory"]["total_bytes"] > 0
    assert info["store"]["free_bytes"] > 0
    assert info["delegates"]["edgetpu"]["available"] is False  # no Coral here, said plainly
    assert "libedgetpu" in info["delegates"]["edgetpu"]["error"]


def test_install_activate_bench_eval_rollback(agent, models, tmp_path):
    b32 = bundle_dir(models["float32"], tmp_path / "b32")
    b8 = bundle_dir(models["int8"], tmp_path / "b8")
    m32, m8 = Manifest.load(next(b32.glob("*.manifest.json"))), \
        Manifest.load(next(b8.glob("*.manifest.json")))
    got = agent("install", b32)
    assert (got["name"], got["version"], got["already_present"]) == ("digits", m32.version, False)
    assert agent("install", b32)["already_present"] is True
    a = agent("activate", "digits", m32.version)
    assert (a["current"], a["previous"]) == (m32.version, None)
    agent("install", b8, "--activate")
    listing = agent("list")["models"][0]
    assert (listing["current"], listing["previous"]) == (m8.version, m32.version)
    assert {v["version"] for v in listing["versions"]} == {m8.version, m32.version}

    bench = agent("bench", "digits", "--runs", 200, "--warmup", 5)
    t = bench["timing"]
    assert bench["model"]["version"] == m8.version and bench["runtime"]["name"] == agent.runtime
    assert t["runs"] == 200 and len(t["samples_ms"]) == 200
    assert 0 < t["min_ms"] <= t["p50_ms"] <= t["p90_ms"] <= t["p99_ms"] <= t["max_ms"]
    assert bench["load_ms"] > 0 and bench["first_invoke_ms"] > 0 and bench["peak_rss_bytes"] > 0
    d = bench["delegate"]
    assert d["total_ops"] >= 9 and 0 <= d["delegated_ops"] <= d["total_ops"]
    assert (d["applied"] == "xnnpack") == (d["delegated_ops"] > 0)
    none = agent("bench", f"digits@{m32.version}", "--runs", 20, "--delegate", "none",
                 "--op-profile")
    assert none["delegate"]["delegated_ops"] == 0 and none["delegate"]["applied"] is None
    assert [o["op"] for o in none["ops"]][:2] == ["CONV_2D", "MAX_POOL_2D"]
    auto32 = agent("bench", f"digits@{m32.version}", "--runs", 20)
    assert auto32["delegate"]["applied"] == "xnnpack"  # float models: XNNPACK by default

    # eval on the board equals the host's figure for the same model and data
    for m in (m32, m8):
        ev = agent("eval", f"digits@{m.version}", "--data", models["test"])
        assert ev["samples"] == m.host_figures["samples"]
        assert_top1_as_host(ev, m.host_figures["accuracy"], agent.runtime)

    back = agent("rollback", "digits")
    assert (back["current"], back["previous"]) == (m32.version, m8.version)
    err = agent("remove", "digits", m32.version, ok=False)
    assert err["code"] == "conflict" and "active" in err["message"] and err["_rc"] == 4
    agent("remove", "digits", m8.version)
    assert agent("list")["models"][0]["previous"] is None


def test_eval_reference_agreement(agent, models, tmp_path):
    """int8 against the float32 model's outputs computed on the board: the agreement fields."""
    b32 = bundle_dir(models["float32"], tmp_path / "b32")
    agent("install", b32, "--activate")
    ref_run = agent.raw("eval", "digits", "--data", models["test"])
    assert ref_run.returncode == 0
    # reference outputs: from the host's own interpreter on the float32 model
    from edgedeploy.device.evaluate import run_dataset
    from edgedeploy.device.runtime import make_interpreter
    x = np.load(models["test"])["x"]
    ref = run_dataset(make_interpreter(str(models["float32"])), x)
    np.savez(tmp_path / "ref.npz", outputs=ref)
    ev = agent("eval", str(models["int8"]), "--data", models["test"],
               "--reference", tmp_path / "ref.npz")
    ag = ev["agreement"]
    assert ag["samples"] == len(x) and ag["top1_agreement"] > 0.95
    assert 0 < ag["mean_abs_error"] <= ag["max_abs_error"] < 0.5


def test_keep_prunes_old_versions_but_never_current_or_previous(agent, models, tmp_path):
    from edgedeploy.host.bundle import load_bundle

    base = load_bundle(models["int8"])
    versions = []
    for i in range(5):
        extra = tmp_path / f"note{i}.txt"
        extra.write_text(f"variant {i}")
        b = base.with_files({"note.txt": extra})
        b.write_folder(tmp_path / f"v{i}")
        got = agent("install", tmp_path / f"v{i}", "--activate", "--keep", 3)
        versions.append(got["version"])
    kept = {v["version"] for v in agent("list")["models"][0]["versions"]}
    assert kept == set(versions[-3:])
    listing = agent("list")["models"][0]
    assert (listing["current"], listing["previous"]) == (versions[-1], versions[-2])


def test_tar_bundle(agent, models, tmp_path):
    from edgedeploy.host.bundle import load_bundle

    tar = load_bundle(models["int8"]).write_tar(tmp_path / "b.tar.gz")
    got = agent("install", tar, "--activate")
    assert agent("verify", "digits")["valid"] is True
    assert got["version"] == load_bundle(models["int8"]).version


# -- bad input: a JSON error, exit status ≠ 0, the store unchanged ------------------------

def _installed(agent, models, tmp_path) -> dict:
    agent("install", bundle_dir(models["int8"], tmp_path / "good"), "--activate")
    return store_state(agent.store)


def _tamper(src, dest, fn) -> object:
    shutil.copytree(src, dest)
    fn(dest)
    return dest


def _manifest_path(d):
    return next(d.glob("*.manifest.json"))


def _flip_byte(d):
    p = next(d.glob("*.tflite"))
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def _symlink(d):
    os.symlink("/etc/passwd", d / "passwd")


def _fifo(d):
    os.mkfifo(d / "pipe")


def _unlisted(d):
    (d / "extra.sh").write_text("rm -rf /")


def _two_manifests(d):
    shutil.copy(_manifest_path(d), d / "other.manifest.json")


def _model_symlink(d):
    p = next(d.glob("*.tflite"))
    real = d.parent / "real.tflite"
    shutil.move(p, real)
    os.symlink(real, p)


BAD_BUNDLES = {
    "hash_mismatch": (_flip_byte, "hash_mismatch", "sha256"),
    "symlink": (_symlink, "unsafe_bundle", "symbolic link"),
    "model_is_symlink": (_model_symlink, "unsafe_bundle", "symbolic link"),
    "fifo": (_fifo, "unsafe_bundle", "special file"),
    "unlisted_file": (_unlisted, "unsafe_bundle", "not listed"),
    "two_manifests": (_two_manifests, "bad_input", "exactly one"),
}


@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
def test_bad_bundle_refused_store_unchanged(agent, models, tmp_path, case):
    before = _installed(agent, models, tmp_path)
    fn, code, words = BAD_BUNDLES[case]
    src = bundle_dir(models["float32"], tmp_path / "src")
    bad = _tamper(src, tmp_path / "bad", fn)
    err = agent("install", bad, ok=False)
    assert err["code"] == code and words in err["message"] and str(bad) in err["message"]
    assert store_state(agent.store) == before


def _tar_with(path, members):
    import io
    with tarfile.open(path, "w") as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return path


@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink", "hardlink", "device"])
def test_unsafe_tar_refused(agent, models, tmp_path, case):
    before = _installed(agent, models, tmp_path)
    src = bundle_dir(models["float32"], tmp_path / "src")
    members = []
    for p in sorted(src.iterdir()):
        ti = tarfile.TarInfo(p.name)
        ti.size = p.stat().st_size
        members.append((ti, p.read_bytes()))
    evil = tarfile.TarInfo({"absolute": "/tmp/evil", "dotdot": "../../evil"}.get(case, "evil"))
    if case in ("absolute", "dotdot"):
        evil.size = 4
        members.append((evil, b"evil"))
    elif case == "symlink":
        evil.type, evil.linkname = tarfile.SYMTYPE, "/etc/passwd"
        members.append((evil, None))
    elif case == "hardlink":
        evil.type, evil.linkname = tarfile.LNKTYPE, "/etc/passwd"
        members.append((evil, None))
    else:
        evil.type, evil.devmajor, evil.devminor = tarfile.CHRTYPE, 1, 3
        members.append((evil, None))
    err = agent("install", _tar_with(tmp_path / "evil.tar", members), ok=False)
    assert err["code"] == "unsafe_bundle" and "evil.tar" in err["message"]
    assert store_state(agent.store) == before
    assert not (tmp_path / "evil").exists() and not (agent.store.parent / "evil").exists()


def test_version_with_other_content_is_a_conflict(agent, models, tmp_path):
    before = _installed(agent, models, tmp_path)
    src = bundle_dir(models["int8"], tmp_path / "src")
    model = next(src.glob("*.tflite"))
    model.write_bytes(model.read_bytes() + b"\0")  # same version, other (self-consistent) content
    mp = _manifest_path(src)
    m = json.loads(mp.read_text())
    from edgedeploy.device.manifest import sha256_file
    m["sha256"], m["size"] = sha256_file(model), model.stat().st_size
    mp.write_text(json.dumps(m))
    err = agent("install", src, ok=False)
    assert err["code"] == "conflict" and err["_rc"] == 4
    assert store_state(agent.store) == before


def _bundle_for_bytes(tmp_path, name: str, data: bytes, like: Manifest):
    """A self-consistent bundle (hashes match) whose model is DATA: passes every hash check,
    cannot load (the install probe refuses it)."""
    from dataclasses import replace
    import hashlib
    d = tmp_path / name
    d.mkdir()
    sha = hashlib.sha256(data).hexdigest()
    (d / f"{name}.tflite").write_bytes(data)
    m = replace(like, file=f"{name}.tflite", sha256=sha, size=len(data), version=sha[:12])
    (d / f"{name}.manifest.json").write_text(m.to_json())
    return d, m


@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_broken_model_is_a_clear_error(agent, models, tmp_path, kind):
    """Hashes match, the model can't load: refused at install (store unchanged, the old version
    active), and bench/eval of the file itself say why."""
    good = models["int8"].read_bytes()
    data = good[: len(good) // 3] if kind == "truncated" else \
        np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    like = Manifest.load(models["int8"].with_name("digits.int8.manifest.json"))
    before = _installed(agent, models, tmp_path)
    d, m = _bundle_for_bytes(tmp_path, "broken", data, like)
    err = agent("install", d, "--activate", ok=False)
    assert err["code"] == "model_load_failed" and err["_rc"] == 2
    assert f"model digits version {m.version} cannot run on this board: not a valid model" \
        in err["message"]
    assert store_state(agent.store) == before
    for cmd in (["bench", d / m.file, "--runs", 5], ["eval", d / m.file, "--data",
                                                     models["test"]]):
        err = agent(*cmd, ok=False)
        assert err["code"] == "model_load_failed" and err["_rc"] == 2
        assert m.file in err["message"] and "cannot load" in err["message"]


def test_missing_op_is_a_clear_error(agent, tmp_path):
    """A model with a TF op the runtime lacks (BesselI0e as a custom op)."""
    from edgedeploy.host.compiler.convert import import_tf
    tf = import_tf()

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def f(x):
        return tf.math.bessel_i0e(x)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.allow_custom_ops = True
    path = tmp_path / "bessel.tflite"
    path.write_bytes(conv.convert())
    err = agent("bench", path, "--runs", 3, ok=False)
    assert err["code"] == "model_load_failed" and "BesselI0e" in err["message"]
    assert str(path) in err["message"]


def test_wrong_inputs_are_clear_errors(agent, models, tmp_path):
    agent("install", bundle_dir(models["int8"], tmp_path / "b"), "--activate")
    np.savez(tmp_path / "shape.npz", x=np.zeros((4, 28, 28, 1), np.float32), y=np.zeros(4, int))
    np.savez(tmp_path / "dtype.npz", x=np.array([["a"] * 4]), y=np.zeros(1, int))
    np.savez(tmp_path / "labels.npz", x=np.zeros((4, 32, 32, 1), np.float32),
             y=np.zeros(3, int))
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    cases = [
        (["bench", "digits", "--inputs", tmp_path / "shape.npz"], "[N, 32, 32, 1]"),
        (["eval", "digits", "--data", tmp_path / "shape.npz"], "[N, 32, 32, 1]"),
        (["eval", "digits", "--data", tmp_path / "dtype.npz"], "dtype"),
        (["eval", "digits", "--data", tmp_path / "labels.npz"], "labels"),
        (["eval", "digits", "--data", tmp_path / "junk.npz"], "not a readable"),
        (["eval", "digits", "--data", tmp_path / "missing.npz"], "no such file"),
        (["bench", "nosuchmodel"], "nosuchmodel"),
    ]
    for args, words in cases:
        err = agent(*args, ok=False)
        assert words in err["message"], (args, err)
        assert err["_rc"] == 2, (args, err)


def test_missing_delegate_and_silent_cpu_fallback(agent, models, tmp_path):
    agent("install", bundle_dir(models["int8"], tmp_path / "b"), "--activate")
    err = agent("bench", "digits", "--delegate", "edgetpu", ok=False)
    assert err["code"] == "delegate_missing" and err["_rc"] == 3
    assert "libedgetpu" in err["message"]
    # An Edge TPU model (per its manifest) that runs with no op on the Edge TPU: an error,
    # never a timing. (The model is the plain int8 one; edgetpu_compiler is absent here.)
    src = bundle_dir(models["int8"], tmp_path / "etpu")
    mp = _manifest_path(src)
    m = json.loads(mp.read_text())
    m["edgetpu"] = {"compiled": True}
    mp.write_text(json.dumps(m))
    path = tmp_path / "etpu" / "digits.int8.tflite"
    err = agent("bench", path, "--delegate", "none", ok=False)
    assert err["code"] == "silent_cpu_fallback" and "took no op" in err["message"]
    assert "timing" not in err


def test_bad_names_and_arguments(agent):
    err = agent("activate", "../etc", "v1", ok=False)
    assert err["code"] == "bad_input" and "cannot be a store entry" in err["message"]
    assert agent("rollback", "digits", ok=False)["code"] == "not_found"
    proc = agent.raw("bench")  # argparse: usage on stderr, exit 2
    assert proc.returncode == 2 and "usage" in proc.stderr
