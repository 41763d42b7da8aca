"""The host's copies of model files it has sent to boards, by content: what a delta is built
against (host/delta.py). A board's ``state`` names the versions it stores with each model
file's sha256; the ones this host has sent are here.

    CACHE/models/SHA256.tflite    a hard link to the file pushed (a copy across filesystems),
                                  written atomically; its mtime is its last use
                                  (the folder: EDGEDEPLOY_MODEL_CACHE, else CACHE/models with
                                  CACHE = EDGEDEPLOY_CACHE or ~/.cache/edgedeploy)

Kept: the ``max_files`` most recently used, at most ``max_bytes`` together (64 files, 2 GiB;
``EDGEDEPLOY_MODEL_CACHE_FILES`` / ``EDGEDEPLOY_MODEL_CACHE_BYTES``). Only a speed-up: a file
missing here means a full push to boards that hold only that version. A file whose content no
longer matches its name is dropped when read.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_FILES = 64
DEFAULT_BYTES = 2 << 30


def default_root() -> Path:
    """``EDGEDEPLOY_MODEL_CACHE``, else CACHE/models (CACHE: ``EDGEDEPLOY_CACHE`` or
    ~/.cache/edgedeploy)."""
    if os.environ.get("EDGEDEPLOY_MODEL_CACHE"):
        return Path(os.environ["EDGEDEPLOY_MODEL_CACHE"]).expanduser()
    return Path(os.environ.get("EDGEDEPLOY_CACHE", "~/.cache/edgedeploy")).expanduser() / "models"


class ModelCache:
    def __init__(self, root: Path | None = None, *, max_files: int | None = None,
                 max_bytes: int | None = None) -> None:
        self.root = root or default_root()
        self.max_files = max_files if max_files is not None else \
            int(os.environ.get("EDGEDEPLOY_MODEL_CACHE_FILES", DEFAULT_FILES))
        self.max_bytes = max_bytes if max_bytes is not None else \
            int(os.environ.get("EDGEDEPLOY_MODEL_CACHE_BYTES", DEFAULT_BYTES))

    def _path(self, sha256: str) -> Path | None:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            return None
        return self.root / f"{sha256}.tflite"

    def get(self, sha256: str) -> bytes | None:
        """The bytes of the model file with this sha256, if this host has them."""
        p = self._path(sha256)
        if p is None:
            return None
        try:
            data = p.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            p.unlink(missing_ok=True)
            return None
        try:
            os.utime(p)
        except OSError:
            pass
        return data

    def put(self, path: Path, sha256: str) -> None:
        """Keep PATH (whose content has this sha256) for later deltas; errors are ignored."""
        dest = self._path(sha256)
        if dest is None:
            return
        try:
            if dest.exists():
                os.utime(dest)
                return
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".put.", dir=self.root)) / "f"
            try:
                try:
                    os.link(path, tmp)
                except OSError:
                    shutil.copyfile(path, tmp)
                os.replace(tmp, dest)
            finally:
                shutil.rmtree(tmp.parent, ignore_errors=True)
            self.prune()
        except OSError:
            pass  # only a speed-up

    def prune(self) -> list[Path]:
        """Drop the least recently used files beyond the limits; what was dropped."""
        try:
            files = sorted((p for p in self.root.glob("*.tflite") if p.is_file()),
                           key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return []
        kept_bytes, dropped = 0, []
        for i, p in enumerate(files):
            size = p.stat().st_size
            if i >= self.max_files or kept_bytes + size > self.max_bytes:
                p.unlink(missing_ok=True)
                dropped.append(p)
            else:
                kept_bytes += size
        return dropped
