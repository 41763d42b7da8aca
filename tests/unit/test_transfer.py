"""Full file or delta (host/transfer.py): which stored versions a delta may use, as a table;
then pushes to fake boards (the real agent and store, in-process): a board holding an earlier
version this host sent gets a delta and ends up with the exact file; one whose copy of that
version is damaged refuses the delta and gets the full file, once; no earlier version, a
version this host never had, or --no-delta: the full file."""

from __future__ import annotations

import hashlib
import os

import pytest

from edgedeploy.device import protocol
from edgedeploy.device.manifest import sha256_file
from edgedeploy.device.store import Store
from edgedeploy.host.bundle import load_bundle
from edgedeploy.host.model_cache import ModelCache
from edgedeploy.host.transfer import Deltas, choose_bases
from tests.support.fakeboard import FakeFleet, tiny_model

V = protocol.VersionEntry


def entry(current, previous, *versions):
    return protocol.ModelEntry("m", current, previous, tuple(versions))


@pytest.mark.parametrize("e,target,want", [
    (None, "t", []),
    # current first, then previous, then the others newest first (the store lists oldest first)
    (entry("v3", "v2", V("v1", sha256="a"), V("v2", sha256="b"), V("v3", sha256="c"),
           V("v4", sha256="d")), "t", ["v3", "v2", "v4", "v1"]),
    # the target itself, an unreadable version and one without a sha256 (an older agent): out
    (entry("v1", None, V("v1", sha256="t"), V("v2", error="bad manifest"), V("v3")), "t", []),
    (entry(None, None, V("v1", sha256="a")), "t", ["v1"]),
])
def test_choose_bases(e, target, want):
    assert [v.version for v in choose_bases(e, target)] == want


@pytest.fixture
def rig(tmp_path):
    fleet = FakeFleet(tmp_path / "boards", ["b0"])
    deltas = Deltas(ModelCache(tmp_path / "host-cache"))
    good = load_bundle(tiny_model(tmp_path / "good", "good"))
    bad = load_bundle(tiny_model(tmp_path / "bad", "bad"))

    def push(bundle, d=deltas):
        s = fleet.session("b0")
        s.deltas = d
        with s:
            return s.push(bundle)
    return fleet, deltas, good, bad, push


def stored_file(fleet, bundle):
    store = Store(fleet["b0"].store)
    return store.version_dir(bundle.name, bundle.version) / bundle.manifest.file


def test_second_version_goes_as_a_delta_and_lands_exact(rig):
    fleet, _, good, bad, push = rig
    first = push(good)
    assert first.transfer == "full" and "no earlier version" in first.transfer_note
    r = push(bad)
    assert r.transfer == "delta", r
    assert r.bytes_sent < r.full_bytes and r.full_bytes == bad.size
    assert fleet["b0"].current("tiny") == bad.version
    assert sha256_file(stored_file(fleet, bad)) == bad.manifest.sha256
    install = [c for c in fleet["b0"].calls if c[0] == "install"]
    assert len(install) == 2  # no fallback


def test_a_refused_delta_falls_back_to_the_full_file_once(rig):
    fleet, _, good, bad, push = rig
    push(good)
    old = stored_file(fleet, good)
    data = bytearray(old.read_bytes())
    data[-20] ^= 0xFF  # the board's copy of the base: same size, other bytes
    os.chmod(old, 0o644)
    old.write_bytes(bytes(data))
    r = push(bad)
    assert r.transfer == "full" and "refused the delta" in r.transfer_note, r
    assert r.bytes_sent > bad.size  # the delta, then the whole bundle
    assert fleet["b0"].current("tiny") == bad.version
    assert hashlib.sha256(stored_file(fleet, bad).read_bytes()).hexdigest() == \
        bad.manifest.sha256
    assert len([c for c in fleet["b0"].calls if c[0] == "install"]) == 3  # good, delta, full


def test_full_when_this_host_never_had_the_boards_version(rig, tmp_path):
    fleet, _, good, bad, push = rig
    fleet.install_all(good)  # put there by another host: not in this host's cache
    r = push(bad)
    assert r.transfer == "full" and "none of the versions" in r.transfer_note


def test_no_delta_sends_the_full_file(rig, tmp_path):
    fleet, deltas, good, bad, push = rig
    push(good)
    r = push(bad, Deltas(deltas.cache, enabled=False))
    assert r.transfer == "full" and "--no-delta" in r.transfer_note
    assert r.bytes_sent == bad.size


def test_repush_sends_nothing(rig):
    fleet, _, good, _, push = rig
    push(good)
    r = push(good)
    assert r.transfer == "none" and r.bytes_sent == 0
