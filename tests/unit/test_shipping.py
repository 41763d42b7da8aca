"""What ships to boards: Python 3.9 grammar, a deterministic zipapp, quoting for remote shells."""

from __future__ import annotations

import ast
import shlex
import subprocess
from pathlib import Path

from edgedeploy.device.ship import build_zipapp, source_files
from edgedeploy.host.transport import quote_arg, shell_join


def test_device_sources_parse_as_python_3_9():
    for name, data in source_files().items():
        ast.parse(data.decode(), filename=name, feature_version=(3, 9))


def test_zipapp_is_deterministic(tmp_path):
    a = build_zipapp(tmp_path / "a.pyz")
    b = build_zipapp(tmp_path / "b.pyz")
    assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()
    assert a["content_hash"] == b["content_hash"]


def test_shell_join_quotes_everything_but_home():
    evil = "d;touch X $(id) `id` 'q\" & |x"
    cmd = shell_join(["echo", evil, "~/a b;c", "~"])
    out = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True,
                         env={"HOME": "/h", "PATH": "/usr/bin:/bin"}).stdout
    assert out == f"{evil} /h/a b;c /h\n"
    assert quote_arg("plain") == "plain" and quote_arg("a b") == shlex.quote("a b")
