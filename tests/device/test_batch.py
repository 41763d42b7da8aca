"""`state` (one call for a deployer, with cached runtime facts) and `batch` (a session's
commands through one agent process), run as the zipapp in both board envs."""

from __future__ import annotations

import json
import os
import subprocess
import time

from tests.device.conftest import bundle_dir


def batch(agent, lines: list, env: dict | None = None) -> tuple[int, list[dict], str]:
    text = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines)
    p = subprocess.run([agent.python, str(agent.pyz), "--store", str(agent.store), "batch"],
                       input=text, capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(agent.store.parent),
                            **(env or {})})
    return p.returncode, [json.loads(ln) for ln in p.stdout.splitlines()], p.stderr


def test_state_is_version_info_and_list_in_one(agent, models, tmp_path):
    st = agent("state")
    assert st["agent"] == {k: v for k, v in agent("version").items()
                           if k in ("agent", "content_hash", "zipapp")}
    info = agent("info")
    for k in ("arch", "python", "numpy", "runtimes", "runtime", "os"):
        assert st["info"][k] == info[k], k
    assert st["models"] == [] and st["store"] == str(agent.store)
    # no store yet: `state` creates nothing (a refused push must leave the board as it was)
    assert not agent.store.exists()
    agent("install", bundle_dir(models["int8"], tmp_path / "b"), "--activate")
    st = agent("state")
    assert [m["name"] for m in st["models"]] == ["digits"] and st["models"][0]["current"]
    assert (agent.store / "info-cache.json").is_file()


def test_runtime_facts_cache_follows_the_python_env(agent, models, tmp_path):
    agent("install", bundle_dir(models["int8"], tmp_path / "b"), "--activate")
    extra = tmp_path / "site"
    extra.mkdir()
    env = {"PYTHONPATH": str(extra)}
    first = agent("state", env=env)
    cache = agent.store / "info-cache.json"
    key1 = json.loads(cache.read_text())["key"]
    agent("state", env=env)
    assert json.loads(cache.read_text())["key"] == key1           # a hit: not rewritten
    # a package appearing in an import folder changes the folder's mtime: facts are redone
    time.sleep(0.01)
    (extra / "newpkg.py").write_text("")
    os.utime(extra)
    again = agent("state", env=env)
    assert json.loads(cache.read_text())["key"] != key1
    assert again["info"]["runtime"] == first["info"]["runtime"] == agent.runtime
    # a stale or broken cache is never trusted
    cache.write_text("{not json")
    assert agent("state", env=env)["info"]["runtime"] == agent.runtime


def test_batch_answers_each_line_in_order(agent, models, tmp_path):
    b = bundle_dir(models["int8"], tmp_path / "incoming" / "x")
    rc, out, err = batch(agent, [["state"], ["install", str(b), "--activate", "--remove-bundle"],
                                 "not json", ["bogus"], ["batch"],
                                 ["activate", "digits", "nope"], ["list"]])
    assert rc == 0
    assert [m["kind"] for m in out] == ["state", "install", "error", "error", "error", "error",
                                        "list"]
    assert out[1]["ok"] and out[1]["current"] == out[1]["version"] and out[1]["exit"] == 0
    assert not b.exists()                           # --remove-bundle: the upload is gone
    assert out[2]["code"] == out[3]["code"] == "bad_input" and out[2]["exit"] == 2
    assert out[5]["code"] == "not_found" and out[5]["exit"] == 2 and "nope" in out[5]["message"]
    assert out[6]["models"][0]["current"] == out[1]["version"]
    # the install in the batch wrote the runtime facts the `state` before it learnt
    assert (agent.store / "info-cache.json").is_file()


def test_remove_bundle_also_after_a_refused_install(agent, models, tmp_path):
    b = bundle_dir(models["int8"], tmp_path / "incoming" / "y")
    (b / "digits.int8.tflite").write_bytes(b"corrupt")
    rc, out, _ = batch(agent, [["install", str(b), "--remove-bundle"]])
    assert out[0]["code"] == "hash_mismatch" and not b.exists()
    assert agent("list")["models"] == []


def test_remove_bundle_moves_files_but_copies_hard_links(agent, models, tmp_path):
    """An upload that is discarded anyway is moved into the store (no copy); a file that has
    another name elsewhere (a hard link) is copied, so that name can't change the model."""
    b = bundle_dir(models["int8"], tmp_path / "incoming" / "z")
    model = b / "digits.int8.tflite"
    manifest = next(b.glob("*.manifest.json"))
    outside = tmp_path / "outside.json"
    os.link(manifest, outside)
    ino = model.stat().st_ino
    rc, out, _ = batch(agent, [["install", str(b), "--activate", "--remove-bundle"]])
    assert out[0]["ok"] and not b.exists()
    stored = agent.store / "models" / "digits" / out[0]["version"]
    assert (stored / "digits.int8.tflite").stat().st_ino == ino      # moved
    assert (stored / "manifest.json").stat().st_ino != outside.stat().st_ino  # copied
    assert agent("verify", "digits")["valid"]


def test_agent_killed_mid_batch_is_seen_by_the_deployer(agent, models, tmp_path):
    """The host's session (the real BoardSession over the local transport) gets a clear
    RemoteFailure when the agent dies during an install; the store keeps what it had."""
    import pytest

    from edgedeploy.errors import RemoteFailure
    from edgedeploy.host.bundle import load_bundle
    from edgedeploy.host.deploy import BoardSession
    from edgedeploy.host.transport.local import LocalTransport
    from edgedeploy.targets import local_board
    from dataclasses import replace

    root = agent.store.parent
    (root / "agent").mkdir(parents=True)
    (root / "agent" / "edgedeploy-agent.pyz").write_bytes(agent.pyz.read_bytes())
    board = replace(local_board(), python=agent.python, root=str(root))
    with BoardSession(board, LocalTransport("local")) as s:
        first = s.push(load_bundle(models["int8"]))
    os.environ["EDGEDEPLOY_AGENT_CRASH_AT"] = "install:verified"
    try:
        with BoardSession(board, LocalTransport("local")) as s:
            with pytest.raises(RemoteFailure) as err:
                s.push(load_bundle(models["float32"]))
    finally:
        del os.environ["EDGEDEPLOY_AGENT_CRASH_AT"]
    assert str(err.value).startswith("local:") and "install" in str(err.value)
    assert "crashed" in (err.value.hint or "")
    with BoardSession(board, LocalTransport("local")) as s:
        st = s.state()
    assert st.models[0].current == first.version
    assert not list((root / "store" / "incoming").iterdir())


def test_state_of_one_model(agent, models, tmp_path):
    from dataclasses import replace

    from edgedeploy.host.bundle import Bundle, load_bundle

    b = load_bundle(models["int8"])
    for name in ("digits", "other"):
        agent("install", Bundle(replace(b.manifest, name=name), b.model_path).write_folder(
            tmp_path / name), "--activate")
    assert [m["name"] for m in agent("state")["models"]] == ["digits", "other"]
    assert [m["name"] for m in agent("state", "--model", "other")["models"]] == ["other"]
    assert agent("state", "--model", "absent")["models"] == []
    assert agent("state", "--model", "../x", ok=False)["code"] == "bad_input"
