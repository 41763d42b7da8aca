"""Signed bundles over SSH on real sshd boards (both board envs): `edgedeploy trust` installs the
allowed signer; then a push without the fleet file's signing_key is refused, a signed push is
taken, a lower release is refused unless --allow-downgrade, rollback stays allowed, and an SSH
rollout signs too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import ed, fleet_down, fleet_up
from tests.integration.test_rollout import board_state


@pytest.fixture(scope="module")
def sf(tmp_path_factory):
    d = tmp_path_factory.mktemp("signedfleet")
    fleet_up(d, 2, "--rate", "200mbit")
    key = d / "release_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release@ci", "-f",
                    str(key)], check=True)
    plain = (d / "fleet.toml").read_text()
    (d / "signed.toml").write_text(f'signing_key = "{key}"\n' + plain)
    yield {"dir": d, "key": key, "plain": d / "fleet.toml", "signed": d / "signed.toml"}
    fleet_down(d)


def run(sf, *args, fleet="signed"):
    p = ed(*args, "--fleet", sf[fleet], "--json", db=sf["dir"] / "results.db",
           env={"EDGEDEPLOY_ROLLOUTS": str(sf["dir"] / "rollouts.db")})
    try:
        out = json.loads(p.stdout)
    except ValueError:
        raise AssertionError(f"edgedeploy {args}: no JSON (rc {p.returncode}):\n{p.stdout}\n"
                             f"{p.stderr}")
    return p.returncode, out


def version(model: Path) -> str:
    return json.loads(model.with_name(model.name[:-7] + ".manifest.json").read_text())["version"]


def test_trust_then_only_signed_pushes_and_releases_only_rise(sf, models):
    rc, out = run(sf, "trust", "b0", "b1", "--signer", str(sf["key"]) + ".pub")
    assert rc == 0 and [len(r["signers"]) for r in out] == [1, 1]
    assert 'release@ci namespaces="edgedeploy-bundle,edgedeploy-desired"' in out[0]["signers"][0]

    rc, out = run(sf, "push", str(models["int8"]), "b0", fleet="plain")
    assert rc == 1 and out["error"]["code"] == "signature_refused", out
    assert "unsigned" in out["error"]["message"] and "b0" in out["error"]["message"]
    assert board_state(sf["dir"], "b0")["current"] is None  # nothing stored, nothing active

    rc, out = run(sf, "push", str(models["int8"]), "b0", "--release", "200")
    assert rc == 0 and out["current"] == version(models["int8"]), out
    store = sf["dir"] / "b0" / "home" / ".edgedeploy" / "store"
    assert (store / "models" / "digits" / version(models["int8"]) / "manifest.json.sig").exists()

    rc, out = run(sf, "push", str(models["float32"]), "b0", "--release", "100")
    assert rc == 1 and out["error"]["code"] == "downgrade_refused", out
    assert "lower than release 200" in out["error"]["message"]
    assert board_state(sf["dir"], "b0")["current"] == version(models["int8"])

    rc, out = run(sf, "push", str(models["float32"]), "b0", "--release", "100",
                  "--allow-downgrade")
    assert rc == 0 and out["current"] == version(models["float32"]), out
    rc, out = run(sf, "rollback", "b0", "digits")  # back to the kept previous: allowed
    assert rc == 0 and out["current"] == version(models["int8"]), out


def test_ssh_rollout_signs_with_the_fleet_key(sf, models):
    rc, out = run(sf, "rollout", "start", str(models["float32"]), "--canary", "1",
                  "--waves", "100%", "--parallel", "2")
    # float32 was signed above at release 100, but the rollout signs at its own release
    # (the manifest's creation time, far above 200): taken everywhere
    assert rc == 0 and out["state"] == "succeeded", out
    for b in ("b0", "b1"):
        assert board_state(sf["dir"], b)["current"] == version(models["float32"])
