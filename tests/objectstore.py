"""A real S3 object store for the tests: SeaweedFS through scripts/objectstore (started and
stopped here, bounded waits). The session's store gives board identities b0…b7 that may write
only `*/status/bI/*` — any test prefix, their own status folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "objectstore"


def objectstore_up(d: Path, boards: list[str], *, prefix: str = "fleet",
                   bind: str = "127.0.0.1") -> dict:
    p = subprocess.run([sys.executable, str(SCRIPT), "up", "--dir", str(d), "--prefix", prefix,
                        "--boards", ",".join(boards), "--bind", bind],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, f"scripts/objectstore up: {p.stdout}\n{p.stderr}"
    return json.loads((d / "objectstore.json").read_text())


def objectstore_down(d: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "down", "--dir", str(d)], capture_output=True,
                   text=True, timeout=120)


def objectstore_signal(d: Path, what: str) -> None:
    p = subprocess.run([sys.executable, str(SCRIPT), what, "--dir", str(d)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


@pytest.fixture(scope="session")
def objectstore(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("objectstore")
    info = objectstore_up(d, [f"b{i}" for i in range(8)], prefix="*")
    yield info
    objectstore_down(d)
