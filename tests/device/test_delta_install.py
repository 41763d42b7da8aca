"""The agent installs a bundle that carries MODEL.delta in place of MODEL, in both board envs:
the model is rebuilt from the store's version, bit for bit; a damaged delta, one built against a
version the store doesn't hold, and one whose result's sha256 differs are refused with the store
unchanged; kill -9 while the delta is applied, or just after, leaves the old version active and
the store whole."""

from __future__ import annotations

import shutil

import pytest

from edgedeploy.device.delta_format import SUFFIX
from edgedeploy.device.manifest import Manifest, sha256_file
from edgedeploy.host.delta import Base, build_delta

from .conftest import bundle_dir, store_state
from .test_store_crash import assert_whole

pytestmark = pytest.mark.board


def delta_bundle(new_model, dest, bases: list[Base], damage=None):
    """A bundle folder for NEW_MODEL with its model file replaced by a delta against BASES."""
    folder = bundle_dir(new_model, dest)
    m = Manifest.load(next(folder.glob("*.manifest.json")))
    d = build_delta((folder / m.file).read_bytes(), bases)
    data = d.data if damage is None else damage(d.data)
    (folder / m.file).unlink()
    (folder / (m.file + SUFFIX)).write_bytes(data)
    return folder, m


def installed_old(agent, models, tmp_path) -> tuple[str, Base]:
    old = agent("install", bundle_dir(models["int8"], tmp_path / "old"), "--activate")
    return old["version"], Base("digits", old["version"], models["int8"].read_bytes())


def test_delta_bundle_installs_the_exact_model(agent, models, retrained, tmp_path):
    old, base = installed_old(agent, models, tmp_path)
    folder, m = delta_bundle(retrained, tmp_path / "new", [base])
    got = agent("install", folder, "--activate")
    assert got["delta"]["bases"] == [f"digits@{old}"]
    assert got["delta"]["bytes"] < 0.05 * m.size
    assert got["current"] == m.version and got["previous"] == old
    stored = agent.store / "models" / "digits" / m.version / m.file
    assert stored.read_bytes() == retrained.read_bytes()
    assert not list(stored.parent.glob(f"*{SUFFIX}"))
    assert agent("verify", "digits")["valid"] is True
    assert agent("bench", "digits", "--runs", "3", "--warmup", "1")["model"]["version"] == m.version
    listed = agent("list")["models"][0]["versions"]
    assert {v["version"]: v["sha256"] for v in listed}[old] == sha256_file(models["int8"])


@pytest.mark.parametrize("case", ["corrupt", "unknown-base", "result-differs"])
def test_refused_delta_leaves_the_store_unchanged(agent, models, retrained, tmp_path, case):
    old, base = installed_old(agent, models, tmp_path)
    if case == "corrupt":
        folder, _ = delta_bundle(retrained, tmp_path / "new", [base],
                                 damage=lambda d: d[:-7] + bytes([d[-7] ^ 0x10]) + d[-6:])
    elif case == "unknown-base":
        folder, _ = delta_bundle(retrained, tmp_path / "new",
                                 [Base("digits", "0123456789ab", base.data)])
    else:  # built against other bytes than the board's version of the same name and size
        other = bytearray(base.data)
        other[len(other) // 3] ^= 0x01
        folder, _ = delta_bundle(retrained, tmp_path / "new",
                                 [Base("digits", old, bytes(other))])
        # the board's base is found (same name, version, size) only if its sha256 matches:
        # make the header name the board's real sha256, so the applier really rebuilds
        # from the board's bytes and the result must fail its sha256
        _name_real_base(folder, base)
    before = store_state(agent.store)
    err = agent("install", folder, "--activate", ok=False)
    assert err["code"] == "delta_refused", err
    assert {"corrupt": "damaged", "unknown-base": "does not hold",
            "result-differs": "rebuilt file's sha256"}[case] in err["message"], err
    after = store_state(agent.store)
    assert after == before, "the store changed"
    assert agent("list")["models"][0]["current"] == old


def _name_real_base(folder, base: Base) -> None:
    """Rewrite the delta's header so its base names BASE's sha256 (the header is not covered
    by the body hash; the result's sha256 still proves every byte)."""
    import json
    import struct
    import zlib

    p = next(folder.glob(f"*{SUFFIX}"))
    data = p.read_bytes()
    (hlen,) = struct.unpack_from("<I", data, 8)
    header = json.loads(zlib.decompress(data[12:12 + hlen]))
    header["bases"][0]["sha256"] = base.sha256
    hb = zlib.compress(json.dumps(header).encode())
    p.write_bytes(data[:8] + struct.pack("<I", len(hb)) + hb + data[12 + hlen:])


@pytest.mark.parametrize("point", ["delta:applying", "install:delta-applied"])
def test_kill9_while_a_delta_is_applied_leaves_the_old_version(agent, models, retrained,
                                                                tmp_path, point):
    old, base = installed_old(agent, models, tmp_path)
    folder, m = delta_bundle(retrained, tmp_path / "new", [base])
    copy = tmp_path / "again"
    shutil.copytree(folder, copy)
    proc = agent.raw("install", folder, "--activate", env={"EDGEDEPLOY_AGENT_CRASH_AT": point})
    assert proc.returncode == -9, (point, proc.stdout, proc.stderr)
    assert assert_whole(agent.store) == old
    assert not (agent.store / "models" / "digits" / m.version).exists()
    # the next command sweeps what the killed one left; the same delta then installs
    got = agent("install", copy, "--activate")
    assert got["current"] == m.version and got["delta"]
    assert not any((agent.store / ".staging").iterdir())


def test_a_delta_bundle_tar_installs_too(agent, models, retrained, tmp_path):
    """What pull mode would publish for boards holding a base (host/transfer.write_delta_tar):
    a tar with MODEL.delta in place of MODEL; the install takes it as any tar."""
    from edgedeploy.host.bundle import load_bundle
    from edgedeploy.host.transfer import write_delta_tar

    old, base = installed_old(agent, models, tmp_path)
    new = load_bundle(retrained)
    tar = write_delta_tar(new, build_delta(retrained.read_bytes(), [base]), tmp_path / "d.tar")
    assert tar.stat().st_size < 0.1 * new.size
    got = agent("install", tar, "--activate")
    assert got["delta"]["bases"] == [f"digits@{old}"] and got["current"] == new.version
    stored = agent.store / "models" / "digits" / new.version / new.manifest.file
    assert stored.read_bytes() == retrained.read_bytes()
