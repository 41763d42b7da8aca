"""Getting a pull-mode bundle onto the board: the download (resumed with a Range GET after a
cut), its sha256 against the desired state, and a first look at its manifest. Standard library.

The one place a bundle's bytes come from, so another way to get them (a delta against a version
the board keeps, issue 17) plugs in here: :func:`fetch_bundle` returns a local tar whose sha256
is the target's, or raises.

Files: ``DOWNLOADS/SHA256.part`` — the bytes so far; left behind by a cut (or a kill -9) and
continued by the next poll; anything else in DOWNLOADS is an older target's and is removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path
from typing import BinaryIO, Callable

from ..errors import HashMismatch, StoreError, UnsafeBundle
from . import desired as dz
from .fsio import checkpoint
from .intake import MANIFEST, SIG
from .s3 import Location, S3Client

MAX_MANIFEST = 1 << 20


def fetch_bundle(client: S3Client, loc: Location, t: dz.Target, downloads: Path,
                 store_root: Path, counted: Callable[[int], None] = lambda n: None) -> Path:
    """Target T's bundle as DOWNLOADS/SHA256.part, whole and hash-checked (module docstring).
    COUNTED is told each chunk's size as it arrives (the status reports the bytes)."""
    downloads.mkdir(parents=True, exist_ok=True)
    for p in downloads.iterdir():  # an older target's leftovers
        if not p.name.startswith(t.sha256):
            p.unlink(missing_ok=True)
    part = downloads / f"{t.sha256}.part"
    have = part.stat().st_size if part.exists() else 0
    if have > t.size:
        part.unlink()
        have = 0
    free = shutil.disk_usage(store_root).free
    if free < 2 * (t.size - have) + (1 << 20):
        raise StoreError(f"bundle {t.bundle}: {free} bytes free under {store_root}, it needs "
                         f"2 x {t.size}", hint="free some space on the board")
    if have < t.size:
        with open(part, "ab") as f:
            pos = f.tell()

            def sink(chunk: bytes) -> None:
                f.write(chunk)
                counted(len(chunk))
                checkpoint("pull:chunk")

            client.request("GET", loc.bucket, loc.key(t.bundle),
                           headers={"range": f"bytes={have}-"} if have else {},
                           sink=sink, on_start=lambda status: _restart(f, status, pos))
            f.flush()
            os.fsync(f.fileno())
    h = hashlib.sha256()
    with open(part, "rb") as rf:
        for block in iter(lambda: rf.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != t.sha256:
        part.unlink(missing_ok=True)
        raise HashMismatch(f"bundle {t.bundle}: its sha256 is {h.hexdigest()[:12]}…, the "
                           f"desired state says {t.sha256[:12]}…",
                           hint="the object in the bucket is not what was published")
    return part


def _restart(f: BinaryIO, status: int, pos: int) -> None:
    if pos and status == 200:  # the server ignored the range: the whole object comes
        f.seek(0)
        f.truncate()


def bundle_manifest(tar_path: Path) -> tuple[bytes, bytes | None]:
    """(manifest bytes, signature bytes or None) read from a bundle tar, trusting nothing:
    both must be regular members, the manifest one only."""
    try:
        tf = tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise UnsafeBundle(f"bundle {tar_path.name}: not a tar ({exc})") from exc
    with tf:
        members = {m.name: m for m in tf.getmembers()}
        names = [n for n in members if n == MANIFEST or n.endswith(".manifest.json")]
        if len(names) != 1:
            raise UnsafeBundle(f"bundle {tar_path.name}: {len(names)} manifests, expected one")

        def read(name: str) -> bytes | None:
            m = members.get(name)
            if m is None:
                return None
            if not m.isreg() or m.size > MAX_MANIFEST:
                raise UnsafeBundle(f"bundle {tar_path.name}: {name} is not a small regular file")
            f = tf.extractfile(m)
            assert f is not None
            return f.read()
        data = read(names[0])
        assert data is not None
        return data, read(names[0] + SIG)
