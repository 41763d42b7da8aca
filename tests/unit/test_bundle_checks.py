"""A bundle is checked on the host before any board is reached: names by the board's own rule,
every manifest path plain and inside the bundle, every file's sha256. Tables of cases, on real
files in a temp folder (the real boards' side of these threats: tests/integration/test_threats.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgedeploy.device.manifest import sha256_file
from edgedeploy.errors import InputError, UnsafeBundle
from edgedeploy.host.bundle import check_relpath, load_bundle


@pytest.mark.parametrize("rel, ok", [
    ("gate.npz", True), ("data/gate.npz", True), (".hidden", True), ("a b;$(x)", True),
    ("../loot.key", False), ("../../../../loot.key", False), ("a/../../b", False),
    ("/etc/passwd", False), ("", False), ("a//b", False), ("./a", False), ("a/", False),
    ("a\\..\\b", False), ("a\0b", False), ("a\nb", False), ("..", False), (".", False),
    (7, False), (None, False), ("x" * 1025, False),
])
def test_check_relpath(rel, ok):
    if ok:
        assert check_relpath(rel, "b") == rel
    else:
        with pytest.raises(UnsafeBundle, match="not a plain relative path"):
            check_relpath(rel, "b")


def _folder(tmp_path: Path, contents: dict[str, bytes] | None = None, **fields) -> Path:
    """A bundle folder: m.tflite + m.manifest.json (+ CONTENTS), manifest FIELDS overridden."""
    d = tmp_path / "bundle"
    d.mkdir(parents=True)
    (d / "m.tflite").write_bytes(b"model")
    listed = {}
    for rel, data in (contents or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
        listed[rel] = sha256_file(d / rel)
    m = {"schema": 1, "name": "digits", "version": "v1", "mode": "int8", "label": "int8",
         "file": "m.tflite", "sha256": sha256_file(d / "m.tflite"), "size": 5,
         "inputs": [], "outputs": [], "files": listed, **fields}
    (d / "m.manifest.json").write_text(json.dumps(m))
    return d


@pytest.mark.parametrize("fields, error, match", [
    ({"version": "1/../../x"}, InputError, "version '1/../../x' cannot be a store entry"),
    ({"version": ".."}, InputError, "cannot be a store entry"),
    ({"name": "a/b"}, InputError, "model name 'a/b' cannot be a store entry"),
    ({"name": "x\ny"}, InputError, "cannot be a store entry"),
    ({"name": 3}, InputError, "model name is not a string"),
    ({"file": "../m.tflite"}, UnsafeBundle, "not a plain relative path"),
    ({"files": {"../../../../loot.key": "0" * 64}}, UnsafeBundle, "'../../../../loot.key'"),
    ({"files": {"/etc/shadow": "0" * 64}}, UnsafeBundle, "'/etc/shadow'"),
    ({"files": ["gate.npz"]}, InputError, "not a map"),
])
def test_a_bad_manifest_is_refused_naming_it(tmp_path, fields, error, match):
    d = _folder(tmp_path, **fields)
    with pytest.raises(error, match=match) as err:
        load_bundle(d)
    assert str(d) in str(err.value)


def test_a_file_that_escapes_through_a_symlink_is_refused(tmp_path):
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"private")
    d = _folder(tmp_path, contents={"gate.npz": b"private"})
    (d / "gate.npz").unlink()
    (d / "gate.npz").symlink_to(secret)  # same content, same sha: only the link is wrong
    with pytest.raises(UnsafeBundle, match="symbolic link out of the bundle"):
        load_bundle(d)
    (d / "sub").mkdir()
    (d / "gate.npz").unlink()
    os.symlink("sub/../../secret.key", d / "gate.npz")
    with pytest.raises(UnsafeBundle, match="symbolic link out of the bundle"):
        load_bundle(d)


def test_a_link_inside_the_bundle_and_a_folder_are_fine(tmp_path):
    d = _folder(tmp_path, contents={"data/gate.npz": b"g"})
    b = load_bundle(d)
    assert b.extra == {"data/gate.npz": d / "data" / "gate.npz"}
    (d / "data" / "gate.npz").rename(d / "real.npz")
    (d / "data" / "gate.npz").symlink_to("../real.npz")
    assert load_bundle(d).extra["data/gate.npz"].read_bytes() == b"g"


def test_a_fifo_is_refused_not_read(tmp_path):
    d = _folder(tmp_path, contents={"gate.npz": b"g"})
    (d / "gate.npz").unlink()
    os.mkfifo(d / "gate.npz")  # reading it would hang the push
    with pytest.raises(UnsafeBundle, match="not a regular file"):
        load_bundle(d)


def test_every_extra_file_is_hash_checked(tmp_path):
    d = _folder(tmp_path, contents={"gate.npz": b"good"})
    assert load_bundle(d).version == "v1"
    (d / "gate.npz").write_bytes(b"swapped after the manifest was made")
    with pytest.raises(InputError, match="gate.npz: sha256 differs from its manifest"):
        load_bundle(d)


def test_a_model_beside_its_manifest_gets_the_same_checks(tmp_path):
    d = _folder(tmp_path, contents={"gate.npz": b"g"})
    (d / "gate.npz").write_bytes(b"other")
    with pytest.raises(InputError, match="gate.npz: sha256 differs"):
        load_bundle(d / "m.tflite")
    m = json.loads((d / "m.manifest.json").read_text())
    m["files"] = {"../loot.key": "0" * 64}
    (d / "m.manifest.json").write_text(json.dumps(m))
    with pytest.raises(UnsafeBundle, match="'../loot.key'"):
        load_bundle(d / "m.tflite")
