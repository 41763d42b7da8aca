"""What ships to a board: the agent's sources as one zipapp, and the hash that names them.

``edgedeploy-agent.pyz`` holds ``__main__.py``, ``edgedeploy/__init__.py``,
``edgedeploy/errors.py``, ``edgedeploy/device/*.py`` and ``edgedeploy/device/_build.json``
(version + content hash), and beside each module its bytecode for the building Python
(unchecked hash-based .pyc): a board on the same Python minor version skips compiling at every
start (~25 ms of an ~100 ms agent call); any other Python sees the magic number differ and
compiles the source as before. The content hash is the sha256 over every shipped source's path and
sha256, so the host can tell whether a board's agent is the one it would send. The archive is
deterministic: same sources, same bytes. Stdlib only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pkgutil
from pathlib import Path

BUILD_INFO = "_build.json"
MAIN = "from edgedeploy.device.agent import main\nraise SystemExit(main())\n"


def _package_dir() -> Path:
    return Path(__file__).resolve().parent


def source_files() -> dict[str, bytes]:
    """arcname → bytes of every source the zipapp holds (from the installed package)."""
    dev = _package_dir()
    top = dev.parent if (dev.parent / "errors.py").is_file() else None
    if top is None:  # editable install: device/ sits beside edgedeploy/
        top = dev.parent / "edgedeploy"
    files = {"edgedeploy/__init__.py": (top / "__init__.py").read_bytes(),
             "edgedeploy/errors.py": (top / "errors.py").read_bytes()}
    for p in sorted(dev.glob("*.py")):
        files[f"edgedeploy/device/{p.name}"] = p.read_bytes()
    files["__main__.py"] = MAIN.encode()
    return files


def content_hash(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        if name.endswith(BUILD_INFO):
            continue
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).hexdigest().encode() + b"\n")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _identity() -> tuple[str, str, bool]:
    from .. import __version__

    try:
        raw = pkgutil.get_data("edgedeploy.device", BUILD_INFO)
    except (OSError, ValueError):
        raw = None
    if raw:
        info = json.loads(raw)
        return info["agent"], info["content_hash"], True
    return __version__, content_hash(source_files()), False


def identity() -> dict:
    """{"agent": version, "content_hash": …} of the running agent (zipapp or source tree).
    Worked out once per process: it names the code this process loaded (from a source tree,
    hashing every source costs ~10 ms a call)."""
    agent, h, zipapp = _identity()
    return {"agent": agent, "content_hash": h, "zipapp": zipapp}


def _bytecode(files: dict[str, bytes]) -> dict[str, bytes]:
    """NAME.pyc for every module NAME.py (not __main__, which runs as a script)."""
    import importlib.util
    from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]

    out = {}
    for name, src in files.items():
        if name.endswith(".py") and name != "__main__.py":
            code = compile(src, name, "exec", dont_inherit=True, optimize=0)
            out[name + "c"] = bytes(_code_to_hash_pyc(code, importlib.util.source_hash(src),
                                                      checked=False))
    return out


def build_zipapp(out: str | Path) -> dict:
    """Write the agent zipapp to OUT (atomically); return its identity and size."""
    import os
    import tempfile

    from .. import __version__

    files = source_files()
    info = {"agent": __version__, "content_hash": content_hash(files)}
    files[f"edgedeploy/device/{BUILD_INFO}"] = json.dumps(info, sort_keys=True).encode()
    files.update(_bytecode(files))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"#!/usr/bin/env python3\n")
            import zipfile

            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
                for name in sorted(files):
                    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    zi.compress_type = zipfile.ZIP_DEFLATED
                    zi.external_attr = 0o644 << 16
                    z.writestr(zi, files[name])
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {**info, "path": str(out), "size": out.stat().st_size}
