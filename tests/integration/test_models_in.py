"""Models as users bring them, on real sshd boards in both board envs (b0: ai-edge-litert 2.3.0,
b1: tflite-runtime 2.14): a model the board can't run is refused — before the upload when the
host can tell from the flatbuffer, else by the board's install probe — the store unchanged and
the old version still serving; a bare several-output float16 .tflite pushed, benched and
eval'd against the host's outputs; status health; remove."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgedeploy.device.manifest import Manifest
from tests.conftest import run_cli
from tests.tflite_fixtures import custom_op

from .conftest import ed, ed_json

pytestmark = pytest.mark.board

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NAME = "guarded"          # this module's model name: the session fleet's digits stay untouched
RUNTIME = {"b0": "litert", "b1": "tflite_runtime"}


def _board(fleet: Path, name: str) -> tuple[str, Path, Path]:
    """(board python, agent zipapp, store) of a simulated board, as a local app there sees it."""
    text = fleet.read_text()
    py = text.split(f"[boards.{name}]")[1].split("python = ")[1].split("\n")[0].strip('"')
    root = fleet.parent / name / "home" / ".edgedeploy"
    return py, root / "agent" / "edgedeploy-agent.pyz", root / "store"


def _tree(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest()
                                          if p.is_file() else "dir")
            for p in sorted(d.rglob("*"))} if d.exists() else {}


def _named(model: Path, dest: Path) -> Path:
    """MODEL's bundle under the name NAME (a folder with its manifest)."""
    from edgedeploy.host.bundle import Bundle, load_bundle

    b = load_bundle(model)
    return Bundle(replace(b.manifest, name=NAME), b.model_path, b.extra).write_folder(dest)


def _self_consistent(data: bytes, dest: Path, like: Manifest) -> Path:
    """A bundle folder whose manifest matches DATA's bytes (every hash checks out)."""
    dest.mkdir(parents=True)
    sha = hashlib.sha256(data).hexdigest()
    (dest / "bad.tflite").write_bytes(data)
    m = replace(like, name=NAME, file="bad.tflite", sha256=sha, size=len(data), version=sha[:12],
                requires=None)
    (dest / "bad.manifest.json").write_text(m.to_json())
    return dest


class Serving:
    """`edgedeploy-agent serve` for NAME on the board (its python, its store), and a client
    predicting non-stop."""

    def __init__(self, fleet: Path, board: str, sock: Path, x: np.ndarray) -> None:
        from edgedeploy.device.client import Client

        py, pyz, store = _board(fleet, board)
        self.proc = subprocess.Popen([py, str(pyz), "--store", str(store), "serve", "--socket",
                                      str(sock), "--poll", "0.05", "--models", NAME],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert json.loads(self.proc.stdout.readline())["kind"] == "serving"
        self.ok, self.failed, self.versions = 0, [], set()
        self.stop = threading.Event()

        def loop() -> None:
            with Client(socket=str(sock)) as c:
                while not self.stop.is_set():
                    try:
                        self.versions.add(c.predict(NAME, x).version)
                        self.ok += 1
                    except Exception as exc:  # noqa: BLE001 — every failure counts
                        self.failed.append(repr(exc))
        self.thread = threading.Thread(target=loop)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.mark.parametrize("board", ["b0", "b1"])
def test_unrunnable_models_are_refused_and_serve_keeps_answering(fleet, models, tmp_path,
                                                                 board):
    db = tmp_path / "r.db"
    good = ed_json("push", _named(models["int8"], tmp_path / "good"), board, "--fleet", fleet,
                   db=db)
    _, _, store = _board(fleet, board)
    x = np.load(models["test"])["x"][:1].astype(np.float32)
    srv = Serving(fleet, board, tmp_path / "s.sock", x)
    try:
        before = _tree(store / "models" / NAME)
        like = Manifest.load(models["int8"].with_name("digits.int8.manifest.json"))
        data = models["float32"].read_bytes()
        cases = {
            # hashes match, the bytes aren't a model: the board's install probe refuses
            "truncated": (_self_consistent(data[: len(data) // 2], tmp_path / "t", like),
                          "not a valid model"),
            "random bytes": (_self_consistent(os.urandom(50_000), tmp_path / "r", like),
                             "not a valid model"),
            # a legal flatbuffer that kills both runtimes: the probe's child dies, not the agent
            "crasher": (FIXTURES / "crash-on-load.tflite",
                        "the runtime crashed loading it: signal 11 (SIGSEGV)"),
        }
        for case, (bundle, reason) in cases.items():
            if bundle.suffix == ".tflite":   # a bare file: imported as NAME
                bundle = _named(bundle, tmp_path / f"bare-{case}")
            p = ed("push", bundle, board, "--fleet", fleet, db=db)
            assert p.returncode == 2, (case, p.stdout, p.stderr)
            assert board in p.stderr and "cannot run on this board" in p.stderr, p.stderr
            assert reason in p.stderr, (case, p.stderr)
            assert _tree(store / "models" / NAME) == before, case
        # a custom op: the host's preflight refuses before any byte moves …
        cop = tmp_path / "cop.tflite"
        cop.write_bytes(custom_op("MyOp"))
        p = ed("push", _named(cop, tmp_path / "cop"), board, "--fleet", fleet, db=db)
        assert p.returncode == 1 and "lacks the custom op 'MyOp'" in p.stderr, p.stderr
        assert RUNTIME[board] in p.stderr
        # … and the board refuses it too when the preflight is bypassed
        from edgedeploy.errors import ModelLoadFailed
        from edgedeploy.host.bundle import load_bundle
        from edgedeploy.host.deploy import BoardSession
        from edgedeploy.targets import load_fleet

        with BoardSession(load_fleet(fleet).get(board)) as s:
            with pytest.raises(ModelLoadFailed) as err:
                s._upload_and_install(s.state(model=NAME), load_bundle(tmp_path / "cop"), None,
                                      True)
        assert "lacks the custom op 'MyOp'" in str(err.value) and board in str(err.value)
        assert _tree(store / "models" / NAME) == before
        assert not list((store / "incoming").iterdir())
        n = srv.ok
        deadline = time.monotonic() + 10
        while srv.ok < n + 50 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        srv.close()
    assert srv.failed == [] and srv.ok > 100
    assert srv.versions == {good["version"]}
    st = ed_json("status", board, "--fleet", fleet, db=db)
    assert st["health"] == "ok"
    assert next(m for m in st["models"] if m["name"] == NAME)["current"] == good["version"]
    r = ed_json("remove", board, NAME, "--fleet", fleet, db=db)
    assert r["versions"] == [good["version"]]
    assert NAME not in [m["name"] for m in ed_json("status", board, "--fleet", fleet,
                                                   db=db)["models"]]


def test_converter_newer_than_the_board_is_flagged_before_upload(fleet, digits, tmp_path):
    """TF 2.21's dynamic-range model needs FULLY_CONNECTED v12 (TF 2.17): b1's tflite-runtime
    2.14 lacks it — push says so and sends nothing; b0's LiteRT 2.3.0 takes it."""
    db = tmp_path / "r.db"
    run_cli("compile", digits / "digits.keras", "--mode", "dynamic", "--out", tmp_path,
            check=True)
    model = _named(tmp_path / "digits.dynamic.tflite", tmp_path / "dyn")
    _, _, store = _board(fleet, "b1")
    before = _tree(store / "models" / NAME)
    p = ed("push", model, "b1", "--fleet", fleet, db=db)
    assert p.returncode == 1, p.stderr
    assert "FULLY_CONNECTED version 12 needs a TFLite runtime of TensorFlow 2.17.0" in p.stderr
    assert "tflite_runtime 2.14.0" in p.stderr and "nothing was changed" in p.stderr
    assert _tree(store / "models" / NAME) == before
    # a rollout's preflight asks the same: it stops before anything moves …
    jn = tmp_path / "j.db"
    p = ed("rollout", "start", model, "--fleet", fleet, "--journal", jn, db=db)
    assert p.returncode != 0 and "b1" in p.stderr + p.stdout
    assert "FULLY_CONNECTED version 12" in p.stderr + p.stdout
    assert _tree(store / "models" / NAME) == before
    # … or, told to, leaves b1 out and lists it as skipped
    dry = ed_json("rollout", "start", model, "--fleet", fleet, "--journal", jn, "--dry-run",
                  "--skip-incompatible", db=db)
    assert "b1" in dry["skipped"] and "FULLY_CONNECTED version 12" in dry["skipped"]["b1"]
    ok = ed_json("push", model, "b0", "--fleet", fleet, db=db)
    assert ok["activated"] and ok["bytes_sent"] > 0
    ed_json("remove", "b0", NAME, "--fleet", fleet, db=db)


@pytest.fixture(scope="module")
def landmarker(tmp_path_factory) -> dict:
    """A bare .tflite with two inputs, two outputs and float16 weights, made by the converter
    from a Keras 3 model built here, and the host's outputs on a data file keyed by name."""
    import keras as K

    from edgedeploy.device.evaluate import ports, run_outputs
    from edgedeploy.device.runtime import make_interpreter

    out = tmp_path_factory.mktemp("lm")
    K.utils.set_random_seed(7)
    img, meta = K.Input((24, 24, 3), name="image"), K.Input((5,), name="meta")
    x = K.layers.GlobalAveragePooling2D()(K.layers.Conv2D(16, 3, activation="relu")(img))
    h = K.layers.Concatenate()([x, K.layers.Dense(16, activation="relu")(meta)])
    m = K.Model([img, meta], [K.layers.Dense(6, activation="softmax", name="cls")(h),
                              K.layers.Dense(10, name="landmarks")(h)])
    m.save(out / "lm.keras")
    run_cli("compile", out / "lm.keras", "--mode", "float16", "--out", out / "c", check=True)
    bare = out / "landmarker.tflite"
    bare.write_bytes((out / "c" / "lm.float16.tflite").read_bytes())   # no manifest beside it
    rng = np.random.default_rng(2)
    xi, xm = rng.random((30, 24, 24, 3), np.float32), rng.random((30, 5), np.float32)
    np.savez(out / "frames.npz", image=xi, meta=xm, y=rng.integers(0, 6, 30))
    interp = make_interpreter(bare.read_bytes())
    ins, outs = ports(interp)
    np.savez(out / "host_outputs.npz", **run_outputs(interp, ins, outs, {"image": xi,
                                                                         "meta": xm}))
    return {"bare": bare, "data": out / "frames.npz", "reference": out / "host_outputs.npz"}


@pytest.mark.slow
@pytest.mark.parametrize("board", ["b0", "b1"])
def test_bare_several_output_float16_pushed_benched_evald(fleet, landmarker, tmp_path, board):
    db = tmp_path / "r.db"
    r = ed_json("push", landmarker["bare"], board, "--fleet", fleet, db=db)
    assert r["name"] == "landmarker" and r["label"] == "float16" and r["activated"]
    b = ed_json("bench", board, "landmarker", "--runs", 20, "--fleet", fleet, db=db)
    assert b["timing"]["runs"] == 20 and b["runtime"]["name"] == RUNTIME[board]
    ev = ed_json("eval", board, "landmarker", "--data", landmarker["data"], "--reference",
                 landmarker["reference"], "--output", "cls", "--fleet", fleet, db=db)
    assert ev["data"] == str(landmarker["data"])           # the user's file, not the board's copy
    assert ev["reference"] == str(landmarker["reference"])
    assert ev["output"] == "cls" and 0 <= ev["top1"] <= 1 and ev["samples"] == 30
    errs = {e["output"]: e for e in ev["errors"]}
    assert set(errs) == {"cls", "landmarks"}
    for e in errs.values():   # the host measured with LiteRT 2.3.0: the same on b0
        assert e["max_abs_error"] <= (0.0 if board == "b0" else 1e-3), (board, e)
        assert e["cosine"] > 0.9999
    text = ed("eval", board, "landmarker", "--data", landmarker["data"], "--reference",
              landmarker["reference"], "--output", "cls", "--fleet", fleet, db=db,
              check=True).stdout
    assert f"of {landmarker['data']} vs {landmarker['reference']}" in text
    assert "landmarks: max err" in text and "cosine" in text and "top-1 (cls)" in text
    st = ed_json("status", board, "--fleet", fleet, db=db)
    assert st["health"] == "ok"
    ed_json("remove", board, "landmarker", "--fleet", fleet, db=db)


def test_status_says_when_the_current_model_does_not_load(fleet, models, tmp_path):
    """A version made current behind the agent's back (no probe): status health names it."""
    from edgedeploy.device.store import Store

    db = tmp_path / "r.db"
    ed_json("push", _named(models["int8"], tmp_path / "good"), "b1", "--fleet", fleet, db=db)
    _, _, store = _board(fleet, "b1")
    crash = _named(FIXTURES / "crash-on-load.tflite", tmp_path / "crash")
    st = Store(store)
    with st.locked():
        got = st.install(crash)
        st.activate(NAME, got.version)
    try:
        s = ed_json("status", "b1", "--fleet", fleet, db=db)
        assert f"{NAME}@{got.version} does not load" in s["health"]
        assert "crashed loading it: signal 11" in s["health"]
    finally:
        ed_json("remove", "b1", NAME, "--fleet", fleet, db=db)
