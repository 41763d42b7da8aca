"""A store change whose ``runs`` check (the probe, a child process that may take seconds)
outlasts the command's deadline changes nothing: the guard is checked again after the probe,
not only when the lock was taken (issue 12's "a command the host gave up on never acts later",
with issue 11's probe gate in the way)."""

from __future__ import annotations

import json
import time

import pytest

from edgedeploy.device.lock import Guard
from edgedeploy.device.manifest import Manifest, TensorSpec, sha256_file
from edgedeploy.device.store import Store
from edgedeploy.errors import Expired


def _bundle(tmp_path, version: str, data: bytes):
    d = tmp_path / f"b-{version}"
    d.mkdir(exist_ok=True)
    (d / "m.tflite").write_bytes(data)
    spec = TensorSpec(name="x", index=0, shape=[1, 2], dtype="float32")
    m = Manifest(name="m", version=version, mode="float32", label="float32", file="m.tflite",
                 sha256=sha256_file(d / "m.tflite"), size=len(data), inputs=[spec],
                 outputs=[spec])
    (d / "manifest.json").write_text(m.to_json())
    return d


def _slow_runs(model, m, what):
    time.sleep(0.3)


@pytest.mark.parametrize("step", ["install", "activate", "rollback"])
def test_a_deadline_that_passes_during_the_probe_changes_nothing(tmp_path, step):
    store = Store(tmp_path / "store")
    store.root.mkdir()
    for v, data in (("1", b"one"), ("2", b"two")):
        with store.locked():
            store.install(_bundle(tmp_path, v, data))
    with store.locked():
        store.activate("m", "1")
    if step == "rollback":
        with store.locked():
            store.activate("m", "2")
    def change() -> None:
        with store.locked():
            if step == "install":
                store.install(_bundle(tmp_path, "3", b"three"))
            elif step == "activate":
                store.activate("m", "2")
            else:
                store.rollback("m")

    before = json.loads((store.models / "m" / "current.json").read_text())
    store.runs = _slow_runs
    store.guard = Guard(deadline=time.monotonic() + 0.1)
    with pytest.raises(Expired, match="while model m .*probed; nothing was done"):
        change()
    assert json.loads((store.models / "m" / "current.json").read_text()) == before
    assert sorted(store.versions("m")) == ["1", "2"]
    store.guard = Guard()  # no deadline: the same change goes through
    change()
