"""The store's trust checks, through the agent in both board envs: a store with allowed signers
refuses unsigned, badly signed and unknown-signer bundles (store unchanged), and releases lower
than it has run (unless --allow-downgrade); rollback to the previous version stays allowed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edgedeploy.device import trust
from edgedeploy.host.bundle import load_bundle
from edgedeploy.host.signing import sign_bundle

from .conftest import store_state

pytestmark = pytest.mark.board


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True)
    return path


@pytest.fixture
def keys(tmp_path):
    return {"alice": keygen(tmp_path / "alice", "alice@ci"),
            "mallory": keygen(tmp_path / "mallory", "mallory@evil")}


def trusting(agent, key: Path) -> None:
    line = trust.signer_line(key.with_suffix(".pub").read_text())
    assert agent("trust", "--add", line)["signers"] == [line]


def folder(bundle, dest: Path) -> Path:
    return bundle.write_folder(dest)


def test_signers_refuse_unsigned_bad_and_unknown(agent, models, keys, tmp_path):
    agent.store.mkdir(parents=True)
    trusting(agent, keys["alice"])
    before = store_state(agent.store / "models")
    plain = load_bundle(models["int8"])
    good = sign_bundle(plain, keys["alice"], release=100)
    cases = {"unsigned": folder(plain, tmp_path / "u"),
             "unknown": folder(sign_bundle(plain, keys["mallory"], release=100), tmp_path / "m")}
    bad = folder(good, tmp_path / "b")
    mpath = bad / good.manifest_name
    mpath.write_text(mpath.read_text().replace('"release": 100', '"release": 101'))
    cases["tampered"] = bad
    for case, path in cases.items():
        r = agent("install", path, "--activate", ok=False)
        assert r["code"] == "signature_refused" and r["_rc"] == 1, (case, r)
        assert store_state(agent.store / "models") == before, case
    got = agent("install", folder(good, tmp_path / "g"), "--activate")
    assert got["current"] == good.version
    stored = agent.store / "models" / "digits" / good.version
    assert (stored / "manifest.json.sig").read_text() == good.signature


def test_downgrade_refused_previous_and_allow_downgrade_accepted(agent, models, keys, tmp_path):
    agent.store.mkdir(parents=True)
    trusting(agent, keys["alice"])
    v100 = sign_bundle(load_bundle(models["int8"]), keys["alice"], release=100)
    v200 = sign_bundle(load_bundle(models["float32"]), keys["alice"], release=200)
    agent("install", folder(v100, tmp_path / "a"), "--activate")
    agent("install", folder(v200, tmp_path / "b"), "--activate")
    # the kept previous version: a rollback, by activate or rollback
    assert agent("activate", "digits", v100.version)["current"] == v100.version
    assert agent("activate", "digits", v200.version)["current"] == v200.version
    assert agent("rollback", "digits")["current"] == v100.version
    assert agent("activate", "digits", v200.version)["current"] == v200.version
    # a third, older release that is not the previous one: a replay, refused
    v50 = sign_bundle(load_bundle(models["int8"]).with_files({"gate.npz": models["test"]}),
                      keys["alice"], release=50)
    agent("install", folder(v50, tmp_path / "c"))
    r = agent("activate", "digits", v50.version, ok=False)
    assert r["code"] == "downgrade_refused" and "lower than release 200" in r["message"]
    assert agent("list")["models"][0]["current"] == v200.version
    assert agent("activate", "digits", v50.version, "--allow-downgrade")["current"] == v50.version
    ledger = json.loads((agent.store / "trust" / "releases.json").read_text())
    assert ledger["digits"]["highest"] == 200  # a downgrade never lowers it


def test_a_version_pushed_unsigned_then_signed_is_taken(agent, models, keys, tmp_path):
    agent.store.mkdir(parents=True)
    plain = load_bundle(models["int8"])
    agent("install", folder(plain, tmp_path / "p"))  # before the board trusted anyone
    trusting(agent, keys["alice"])
    r = agent("activate", "digits", plain.version, ok=False)
    assert r["code"] == "signature_refused"
    signed = sign_bundle(plain, keys["alice"], release=100)
    got = agent("install", folder(signed, tmp_path / "s"), "--activate")
    assert got["already_present"] and got["current"] == plain.version
