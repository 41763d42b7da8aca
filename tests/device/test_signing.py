"""Signed bundles with real OpenSSH: the host signs with `ssh-keygen -Y sign` (host/signing.py),
the board checks with `ssh-keygen -Y verify` against its allowed signers (device/trust.py), in
both board envs (no TensorFlow, no crypto package)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgedeploy.device import trust
from edgedeploy.errors import InputError, SignatureRefused
from edgedeploy.host.signing import sign, sign_bundle

from tests.conftest import board_pythons, stage_device_package

from .conftest import RUNTIMES


def keygen(path: Path, comment: str, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment,
                    "-f", str(path)], check=True)
    return path


@pytest.fixture
def keys(tmp_path):
    return {"alice": keygen(tmp_path / "alice", "alice@ci"),
            "mallory": keygen(tmp_path / "mallory", "mallory@evil")}


@pytest.fixture
def board(tmp_path, keys):
    """A store that trusts alice."""
    store = tmp_path / "store"
    trust.write_signers(store, [trust.signer_line((keys["alice"].with_suffix(".pub"))
                                                  .read_text())])
    return store


def test_good_signature_verifies(board, keys):
    data = b'{"name": "digits"}\n'
    v = trust.verify(data, sign(data, keys["alice"], trust.NS_BUNDLE), board, trust.NS_BUNDLE,
                     "bundle x")
    assert v.signer == "alice@ci" and "ED25519" in v.key


@pytest.mark.parametrize("case", ["tampered", "unknown signer", "unsigned", "other namespace",
                                  "garbage"])
def test_refusals(board, keys, case):
    data = b'{"name": "digits", "release": 5}\n'
    sig = {"tampered": lambda: sign(data, keys["alice"], trust.NS_BUNDLE),
           "unknown signer": lambda: sign(data, keys["mallory"], trust.NS_BUNDLE),
           "unsigned": lambda: None,
           "other namespace": lambda: sign(data, keys["alice"], trust.NS_DESIRED),
           "garbage": lambda: "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
           }[case]()
    checked = data.replace(b"5", b"9") if case == "tampered" else data
    with pytest.raises(SignatureRefused, match="bundle x"):
        trust.verify(checked, sig, board, trust.NS_BUNDLE, "bundle x")


def test_a_board_without_signers_takes_anything(tmp_path, keys):
    assert trust.verify(b"x", None, tmp_path / "empty", trust.NS_BUNDLE, "b") is None
    assert not trust.requires_signature(tmp_path / "empty")


def test_passphrase_key_not_in_agent_fails_at_once(tmp_path):
    key = keygen(tmp_path / "locked", "locked@ci", passphrase="secret words")
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    t0 = time.monotonic()
    code = ("import os, sys; from edgedeploy.host.signing import sign\n"
            "from edgedeploy.errors import InputError\n"
            f"try: sign(b'x', {str(key)!r}, 'edgedeploy-bundle')\n"
            "except InputError as e: print(e); sys.exit(2)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "cannot sign" in p.stdout and "ssh-agent" in p.stdout
    assert time.monotonic() - t0 < 30


def test_sign_with_public_key_through_ssh_agent(tmp_path, board, keys):
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(keys["alice"])], env=env, check=True,
                       capture_output=True)
        os.environ["SSH_AUTH_SOCK"] = str(sock)
        try:
            sig = sign(b"data", keys["alice"].with_suffix(".pub"), trust.NS_BUNDLE)
        finally:
            os.environ.pop("SSH_AUTH_SOCK")
        assert trust.verify(b"data", sig, board, trust.NS_BUNDLE, "b").signer == "alice@ci"
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)


def test_missing_key_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        sign(b"x", tmp_path / "nope", trust.NS_BUNDLE)


def test_signed_bundle_tar_is_reproducible_and_kept_by_the_store(models, keys, tmp_path):
    from edgedeploy.device.store import Store
    from edgedeploy.host.bundle import load_bundle

    b = sign_bundle(load_bundle(models["int8"]), keys["alice"])
    assert b.manifest.release and b.signature
    again = sign_bundle(load_bundle(models["int8"]), keys["alice"])
    assert again.manifest.release == b.manifest.release  # from `created`: same every time
    t1, t2 = b.write_tar(tmp_path / "1.tar"), again.write_tar(tmp_path / "2.tar")
    assert t1.read_bytes() == t2.read_bytes()  # Ed25519: same bytes, same object name
    store = Store(tmp_path / "store")
    with store.locked():
        got = store.install(t1)
    d = got.path
    assert (d / "manifest.json.sig").read_text() == b.signature
    assert (d / "manifest.json").read_bytes() == b.manifest_bytes()
    trust.write_signers(store.root, [trust.signer_line(keys["alice"].with_suffix(".pub")
                                                       .read_text())])
    assert trust.verify((d / "manifest.json").read_bytes(), (d / "manifest.json.sig").read_text(),
                        store.root, trust.NS_BUNDLE, "stored").signer == "alice@ci"


def test_release_ledger_only_rises(tmp_path):
    trust.record_activation(tmp_path, "digits", "v2", 200)
    trust.record_activation(tmp_path, "digits", "v1", 100)
    assert trust.highest_release(tmp_path, "digits") == 200
    assert trust.highest_release(tmp_path, "other") is None


@pytest.mark.board
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_verify_in_board_env(runtime, board, keys, tmp_path):
    pythons = board_pythons()
    if runtime not in pythons:
        pytest.fail(f"board env for {runtime} missing: run the tests through scripts/test")
    staged = stage_device_package(tmp_path / "pkg")
    data = b'{"name": "digits"}\n'
    (tmp_path / "m.json").write_bytes(data)
    (tmp_path / "m.sig").write_text(sign(data, keys["alice"], trust.NS_BUNDLE))
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["tensorflow"] = None
        from edgedeploy.device import trust
        from edgedeploy.errors import SignatureRefused
        data = open({str(tmp_path / 'm.json')!r}, "rb").read()
        sig = open({str(tmp_path / 'm.sig')!r}).read()
        good = trust.verify(data, sig, {str(board)!r}, trust.NS_BUNDLE, "b").signer
        try:
            trust.verify(data + b" ", sig, {str(board)!r}, trust.NS_BUNDLE, "b")
            bad = "accepted"
        except SignatureRefused as e:
            bad = str(e)
        print(json.dumps({{"good": good, "bad": bad}}))
    """)
    p = subprocess.run([pythons[runtime], "-c", code], capture_output=True, text=True,
                       env={"PYTHONPATH": str(staged), "PATH": "/usr/bin:/bin"}, timeout=60,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["good"] == "alice@ci" and "does not verify" in out["bad"]
