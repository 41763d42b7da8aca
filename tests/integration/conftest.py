"""Simulated boards for integration tests: real OpenSSH servers from scripts/fleet, each in its
own network namespace (loopback ports where namespaces are not allowed), each running the agent
with a board env that has no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli


def pytest_collection_modifyitems(session, config, items):
    """The emulated ARM boards' tests run last: on a fresh machine scripts/test builds their
    roots (scripts/armroot, minutes of qemu CPU) in the background while everything else runs,
    and test_arm.py's fleet waits for them; run first, that wait would be idle time."""
    arm = [i for i in items if i.path.name == "test_arm.py"]
    if arm:
        items[:] = [i for i in items if i.path.name != "test_arm.py"] + arm


def fleet_up(d: Path, n: int, *extra: str, timeout: float = 900) -> Path:
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "fleet"), "up", str(n), "--dir",
                        str(d), *extra], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return d / "fleet.toml"


def fleet_down(d: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "fleet"), "down", "--dir", str(d)],
                   capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    """Two boards: b0 ai-edge-litert + numpy 2, b1 tflite-runtime 2.14 + numpy 1."""
    d = tmp_path_factory.mktemp("fleet")
    path = fleet_up(d, 2, "--rate", "200mbit")
    yield path
    fleet_down(d)


def ed(*args, db: Path, check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, check=check, env={"EDGEDEPLOY_RESULTS": str(db), **(env or {})})


def ed_json(*args, db: Path, env: dict | None = None) -> dict:
    p = ed(*args, "--json", db=db, env=env)
    assert p.returncode == 0, f"edgedeploy {args}: {p.stdout}\n{p.stderr}"
    return json.loads(p.stdout)


@pytest.fixture(scope="session")
def user_fleet(tmp_path_factory):
    """Two boards (b0 litert, b1 tflite-runtime) where an unprivileged user `edgeuser` logs in,
    the store in its home, and fleet.toml names no root: the default `~/.edgedeploy`."""
    d = tmp_path_factory.mktemp("userfleet")
    path = fleet_up(d, 2, "--rate", "200mbit", "--user", "edgeuser", "--default-root")
    yield path
    fleet_down(d)
