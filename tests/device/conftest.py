"""Fixtures for the agent: the zipapp built once, models compiled once by the real converter,
and the agent run as a subprocess in each board env (no TensorFlow in them)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import board_pythons

RUNTIMES = ["litert", "tflite_runtime"]


@pytest.fixture(scope="session")
def agent_pyz(tmp_path_factory) -> Path:
    from edgedeploy.device.ship import build_zipapp

    return Path(build_zipapp(tmp_path_factory.mktemp("agent") / "edgedeploy-agent.pyz")["path"])


@dataclass
class Agent:
    python: str
    pyz: Path
    store: Path
    runtime: str

    def raw(self, *args, env: dict | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, str(self.pyz), "--store", str(self.store),
                               *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(self.store.parent),
                                   **(env or {})})

    def __call__(self, *args, ok: bool = True, **kw) -> dict:
        proc = self.raw(*args, **kw)
        try:
            msg = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"agent {args} printed no JSON (rc {proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        assert msg["schema"] == 1
        if ok:
            assert proc.returncode == 0 and msg["ok"], f"agent {args}: {msg}\n{proc.stderr}"
        else:
            assert proc.returncode != 0 and not msg["ok"] and msg["kind"] == "error", msg
        msg["_rc"] = proc.returncode
        return msg


@pytest.fixture(params=RUNTIMES)
def agent(request, agent_pyz, tmp_path) -> Agent:
    pythons = board_pythons()
    if request.param not in pythons:
        pytest.fail(f"board env for {request.param} missing: run the tests through scripts/test")
    (tmp_path / "board").mkdir()
    return Agent(pythons[request.param], agent_pyz, tmp_path / "board" / "store", request.param)


def bundle_dir(model: Path, dest: Path) -> Path:
    from edgedeploy.host.bundle import load_bundle

    return load_bundle(model).write_folder(dest)


def store_state(store: Path) -> dict:
    """Every file under the store (but the lock) with its content hash: 'unchanged' means equal."""
    import hashlib

    state = {}
    for p in sorted(store.rglob("*")):
        rel = p.relative_to(store).as_posix()
        if rel == ".lock":
            continue
        state[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return state
