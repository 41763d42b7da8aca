"""kill -9 between every pair of steps of install / activate / rollback: ``current`` always
names a whole, hash-valid version, and no half-written version is ever visible. The agent
SIGKILLs itself at a named point (EDGEDEPLOY_AGENT_CRASH_AT) — a real kill of a real process —
and, separately, is killed from outside at random instants."""

from __future__ import annotations

import json
import random
import subprocess
import time

import pytest

from edgedeploy.device.manifest import Manifest, sha256_file

from .conftest import bundle_dir

pytestmark = pytest.mark.board


def assert_whole(store) -> str | None:
    """Every visible version verifies; current (and previous) name one. Returns current."""
    name_dir = store / "models" / "digits"
    versions = [p for p in name_dir.iterdir() if p.is_dir()] if name_dir.is_dir() else []
    for v in versions:
        m = Manifest.load(v / "manifest.json")
        assert m.version == v.name
        assert sha256_file(v / m.file) == m.sha256, f"{v} visible but not whole"
    ptr = name_dir / "current.json"
    if not ptr.exists():
        return None
    data = json.loads(ptr.read_text())
    for key in ("current", "previous"):
        if data[key]:
            assert (name_dir / data[key]).is_dir(), f"{key} names a missing version {data}"
    return data["current"]


STEPS = [
    # (command builder, crash point, current after the crash: "old" or "new")
    ("install", "install:one-file", "old"),
    ("install", "install:copied", "old"),
    ("install", "install:verified", "old"),
    ("install", "install:renamed", "old"),
    ("activate", "pointer:written", "old"),
    ("activate", "activate:switched", "new"),
    ("rollback", "pointer:written", "new"),
    ("rollback", "rollback:switched", "old"),
]


def test_kill9_between_every_pair_of_steps(agent, models, tmp_path):
    b_old = bundle_dir(models["float32"], tmp_path / "old")
    b_new = bundle_dir(models["int8"], tmp_path / "new")
    old = agent("install", b_old, "--activate")["version"]
    new = Manifest.load(next(b_new.glob("*.manifest.json"))).version
    for cmd, point, expect in STEPS:
        args = {"install": ["install", b_new], "activate": ["activate", "digits", new],
                "rollback": ["rollback", "digits"]}[cmd]
        if cmd == "rollback":  # from new back to old
            agent("activate", "digits", new)
        proc = agent.raw(*args, env={"EDGEDEPLOY_AGENT_CRASH_AT": point})
        assert proc.returncode == -9, (point, proc.stdout, proc.stderr)
        current = assert_whole(agent.store)
        assert current == {"old": old, "new": new}[expect], (cmd, point)
        # the next command sweeps what the killed one left, and works
        assert agent("verify", "digits")["valid"] is True
        agent("activate", "digits", old)
        assert not any((agent.store / ".staging").iterdir())
        assert not list((agent.store / "models" / "digits").glob(".current.json.*"))
        if cmd == "install" and point != "install:renamed":
            assert not (agent.store / "models" / "digits" / new).exists()
    # and finally the full sequence works after all those crashes
    agent("install", b_new, "--activate")
    assert agent("rollback", "digits")["current"] == old


def test_kill9_at_random_instants(agent, models, tmp_path):
    b_old = bundle_dir(models["float32"], tmp_path / "old")
    b_new = bundle_dir(models["int8"], tmp_path / "new")
    old = agent("install", b_old, "--activate")["version"]
    new = Manifest.load(next(b_new.glob("*.manifest.json"))).version
    rng = random.Random(7)
    trials = 12
    for trial in range(trials):
        args = [["install", b_new, "--activate"], ["rollback", "digits"],
                ["activate", "digits", old]][trial % 3]
        proc = subprocess.Popen([agent.python, str(agent.pyz), "--store", str(agent.store),
                                 *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait(timeout=30)
        current = assert_whole(agent.store)
        assert current in (old, new)
        agent("verify", "digits")
