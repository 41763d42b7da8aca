"""The board never activates what it can't run (both board envs): install loads the model in a
child process before its version may exist; a refusal names the reason, exits non-zero and
leaves the store byte for byte as it was, the old version active. Activation and rollback ask
the same question; `remove NAME` takes a whole model away."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgedeploy.device.manifest import Manifest
from tests.conftest import run_cli
from tests.tflite_fixtures import custom_op

from .conftest import bundle_dir, store_state
from .test_agent import _bundle_for_bytes

pytestmark = pytest.mark.board

CRASHER = Path(__file__).resolve().parent.parent / "fixtures" / "crash-on-load.tflite"


@pytest.fixture(scope="module")
def dynamic_model(digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dyn")
    run_cli("compile", digits / "digits.keras", "--mode", "dynamic", "--out", out, check=True)
    return out / "digits.dynamic.tflite"


def _good(agent, models, tmp_path) -> tuple[str, dict]:
    got = agent("install", bundle_dir(models["int8"], tmp_path / "good"), "--activate")
    return got["version"], store_state(agent.store)


def _like(models) -> Manifest:
    return Manifest.load(models["int8"].with_name("digits.int8.manifest.json"))


def _cases(models):
    good = models["float32"].read_bytes()
    return {
        "custom_op": (custom_op("MyOp"), "lacks the custom op 'MyOp'"),
        "truncated": (good[: len(good) // 2], "not a valid model"),
        "random": (os.urandom(60_000), "not a valid model"),
        "crasher": (CRASHER.read_bytes(), "the runtime crashed loading it: signal 11 (SIGSEGV)"),
    }


@pytest.mark.parametrize("case", ["custom_op", "truncated", "random", "crasher"])
def test_refused_at_install_store_unchanged(agent, models, tmp_path, case):
    v_good, before = _good(agent, models, tmp_path)
    data, reason = _cases(models)[case]
    d, m = _bundle_for_bytes(tmp_path, "bad", data, _like(models))   # every hash matches
    err = agent("install", d, "--activate", ok=False)
    assert err["code"] == "model_load_failed" and err["_rc"] == 2
    assert f"model digits version {m.version} cannot run on this board" in err["message"]
    assert reason in err["message"]
    if case == "custom_op":
        assert agent.runtime in err["message"]   # "litert 2.3.0 lacks the custom op 'MyOp'"
    assert "the store is unchanged" in err["message"]
    assert store_state(agent.store) == before
    listing = agent("list")["models"][0]
    assert listing["current"] == v_good and [v["version"] for v in listing["versions"]] == \
        [v_good]
    assert agent("probe", "digits")["loads"] is True   # the old version still runs


def test_fc_v12_refused_by_tflite_runtime_214_only(agent, models, dynamic_model, tmp_path):
    _, before = _good(agent, models, tmp_path)
    d = bundle_dir(dynamic_model, tmp_path / "dyn")
    if agent.runtime == "tflite_runtime":
        err = agent("install", d, "--activate", ok=False)
        assert "lacks FULLY_CONNECTED version 12" in err["message"]
        assert "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'" in \
            err["message"]
        assert store_state(agent.store) == before
    else:
        got = agent("install", d, "--activate")
        assert got["current"] == got["version"]


def test_activate_and_rollback_ask_too(agent, models, tmp_path):
    """A version put in the store behind the agent's back (no probe) can't be activated or
    rolled back to through the agent."""
    from edgedeploy.device.store import Store

    v_good, _ = _good(agent, models, tmp_path)
    d, m = _bundle_for_bytes(tmp_path, "crash", CRASHER.read_bytes(), _like(models))
    st = Store(agent.store)
    with st.locked():
        st.install(d)
    before = store_state(agent.store)
    err = agent("activate", "digits", m.version, ok=False)
    assert err["code"] == "model_load_failed" and "crashed" in err["message"]
    assert store_state(agent.store) == before
    st = Store(agent.store)
    with st.locked():   # crash as current, good as previous
        st.activate("digits", m.version)
        st.rollback("digits")                  # back to good, crash now previous
    err = agent("rollback", "digits", ok=False)
    assert err["code"] == "model_load_failed" and f"previous version {m.version}" in \
        err["message"]
    assert agent("list")["models"][0]["current"] == v_good


def test_remove_a_version_or_the_whole_model(agent, models, tmp_path):
    agent("install", bundle_dir(models["float32"], tmp_path / "b32"), "--activate")
    v8 = agent("install", bundle_dir(models["int8"], tmp_path / "b8"), "--activate")["version"]
    listing = agent("list")["models"][0]
    v32 = listing["previous"]
    r = agent("remove", "digits", v32)
    assert (r["version"], r["versions"]) == (v32, [v32])
    err = agent("remove", "digits", v8, ok=False)
    assert err["code"] == "conflict" and "active" in err["message"]
    r = agent("remove", "digits")
    assert r["version"] is None and r["versions"] == [v8]
    assert agent("list")["models"] == []
    err = agent("remove", "digits", ok=False)
    assert err["code"] == "not_found"
