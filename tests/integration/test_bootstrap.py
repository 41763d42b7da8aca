"""`edgedeploy bootstrap` on a real sshd board: an offline board gets a venv with the runtime
from a wheelhouse, the agent, and then takes pushes with no `python` in the inventory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ed, ed_json

SSHD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """ai-edge-litert, numpy and pip wheels for the python3 a board's shell finds (fetched
    from the package index once, then cached)."""
    p = subprocess.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                       capture_output=True, text=True, env={"PATH": SSHD_PATH})
    if p.returncode != 0:
        pytest.fail("no python3 on the boards' PATH: scripts/test installs it")
    ver = p.stdout.strip()
    d = Path(os.path.expanduser("~/.cache/edgedeploy/wheelhouse")) / f"litert-py{ver}"
    if not any(d.glob("ai_edge_litert-*.whl")):
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                            "--disable-pip-version-check", "--only-binary=:all:",
                            "--python-version", ver, "-d", str(d), "ai-edge-litert==2.3.0",
                            "numpy>=2", "pip"], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"pip download failed:\n{r.stderr[-2000:]}"
    return d


def _board_without_python(fleet: Path, dest: Path, root: Path) -> Path:
    """The session fleet's b0 sshd, as a board whose inventory names no python."""
    text = fleet.read_text()
    head = text.split("[boards.")[0]
    b0 = text.split("[boards.b0]")[1].split("[boards.")[0]
    lines = [ln for ln in b0.strip().splitlines()
             if ln.split("=")[0].strip() not in ("python", "root", "groups", "tags")]
    dest.write_text(head + "[boards.fresh]\n" + "\n".join(lines) + f'\nroot = "{root}"\n')
    return dest


def test_bootstrap_offline_board_then_push(fleet, models, wheelhouse, tmp_path):
    db = tmp_path / "r.db"
    root = tmp_path / "fresh-root"
    inv = _board_without_python(fleet, tmp_path / "fresh.toml", root)
    # before: python3 on the board has no runtime, so a push is refused and changes nothing
    p = ed("push", models["int8"], "fresh", "--fleet", inv, db=db)
    assert p.returncode != 0 and "fresh" in p.stderr and "runtime" in p.stderr
    assert not (root / "store" / "models").exists()

    r = ed_json("bootstrap", "fresh", "--fleet", inv, "--wheelhouse", wheelhouse, db=db)
    assert r["runtime"] == "litert" and r["numpy"].startswith("2.")
    from edgedeploy.host.deploy import local_agent
    assert r["venv"] == f"{root}/venv" and r["agent"] == local_agent()["content_hash"]
    sent = sum(f.stat().st_size for f in wheelhouse.glob("*.whl")
               if f.name in r["wheels"])
    assert r["bytes_sent"] == sent > 10_000_000
    assert (root / "venv" / "bin" / "python").exists()
    # the venv has only what the wheelhouse gave (pip --no-index), and no TensorFlow
    chk = subprocess.run([str(root / "venv" / "bin" / "python"), "-c",
                          "import importlib.util as u; print(u.find_spec('tensorflow'))"],
                         capture_output=True, text=True)
    assert chk.stdout.strip() == "None"

    again = ed_json("bootstrap", "fresh", "--fleet", inv, "--wheelhouse", wheelhouse, db=db)
    assert again["bytes_sent"] == 0 and again["agent_uploaded"] is False

    push = ed_json("push", models["int8"], "fresh", "--fleet", inv, db=db)
    assert push["activated"] and push["bytes_sent"] > 0
    bench = ed_json("bench", "fresh", "digits", "--runs", 20, "--fleet", inv, db=db)
    assert bench["runtime"]["name"] == "litert" and bench["timing"]["runs"] == 20


def test_bootstrap_bad_input_changes_nothing(fleet, tmp_path):
    db = tmp_path / "r.db"
    root = tmp_path / "fresh-root"
    inv = _board_without_python(fleet, tmp_path / "fresh.toml", root)
    empty = tmp_path / "wheels"
    empty.mkdir()
    (empty / "numpy-2.0.0-cp27-cp27m-win32.whl").write_bytes(b"x")
    p = ed("bootstrap", "fresh", "--fleet", inv, "--wheelhouse", empty, db=db)
    assert p.returncode == 2 and "no runtime for Python" in p.stderr
    assert "edgedeploy wheelhouse --for BOARD" in p.stderr
    p = ed("bootstrap", "fresh", "--fleet", inv, "--wheelhouse", tmp_path / "nope", db=db)
    assert p.returncode == 2 and "nope" in p.stderr
    assert not root.exists()
