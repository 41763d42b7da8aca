"""Bundle intake: from a bundle (a folder, or a .tar / .tar.gz / .tgz file) to a checked copy
in a staging folder, ready for the store to rename into place. Stdlib only.

A bundle holds one manifest (``manifest.json`` or ``*.manifest.json``), the model file it
names, any other files listed in its ``files`` map (path → sha256), and the manifest's SSH
signature ``<manifest>.sig`` when signed (kept as ``manifest.json.sig``; device/trust.py
checks it). In place of the model file it may hold ``MODEL.delta`` (device/delta_format.py):
the model is then rebuilt from the store's versions into staging and its sha256 checked
against the manifest before anything else (DeltaRefused if it cannot be: a damaged delta, a
base the store lacks, a result that differs). Anything else — an
absolute path, ``..``, a link, a device or fifo, a file the manifest doesn't list, more than
MAX_BUNDLE_FILES files, a hash or size that differs — refuses the whole bundle (UnsafeBundle,
HashMismatch, InputError); the caller discards the staging folder and the store is unchanged.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterator

from ..errors import DeltaRefused, HashMismatch, InputError, UnsafeBundle
from .delta_format import SUFFIX as DELTA_SUFFIX
from .delta_format import BaseRef
from .fsio import checkpoint, fsync_dir
from .manifest import Manifest, sha256_file

if TYPE_CHECKING:
    from .delta import Applied

MANIFEST = "manifest.json"
SIG = ".sig"  # the manifest's SSH signature travels and is kept beside it (device/trust.py)
MAX_BUNDLE_FILES = 64


def expected_files(m: Manifest) -> dict[str, str]:
    """Every file a version holds besides manifest.json, with its sha256."""
    files = {m.file: m.sha256}
    files.update(m.files or {})
    return files


def safe_rel(bundle: Path, rel: str) -> str:
    """REL as a plain relative POSIX path inside BUNDLE, or UnsafeBundle."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or rel.startswith("\\") or not p.parts:
        raise UnsafeBundle(f"bundle {bundle}: member {rel!r} has an absolute or '..' path",
                           hint="a bundle holds plain relative paths only")
    return p.as_posix()


Resolve = Callable[[BaseRef], "Path | None"]


@dataclass(frozen=True)
class Staged:
    manifest: Manifest
    delta: "Applied | None" = None   # the model was rebuilt from this delta


def stage(bundle: Path, staging: Path, *, move: bool = False,
          resolve: Resolve | None = None) -> Staged:
    """Copy (MOVE: rename where possible; the bundle folder is discarded afterwards) or
    extract BUNDLE into the empty folder STAGING and check it against its manifest, which
    ends up as STAGING/manifest.json. A delta in place of the model file is applied with the
    bases RESOLVE finds (the store's versions). The manifest, or the error that refuses the
    bundle."""
    if bundle.is_dir() and not bundle.is_symlink():
        files = _copy_folder(bundle, staging, move)
    elif bundle.is_file():
        files = _extract_tar(bundle, staging)
    else:
        raise InputError(f"bundle {bundle}: no such folder or tar file")
    checkpoint("install:copied")
    files, applied, checked = _rebuild(bundle, staging, files, resolve)
    m, manifest_rel = _check_bundle(bundle, staging, files, checked)
    if manifest_rel != MANIFEST:
        os.replace(staging / manifest_rel, staging / MANIFEST)
        if (staging / (manifest_rel + SIG)).is_file():
            os.replace(staging / (manifest_rel + SIG), staging / (MANIFEST + SIG))
    return Staged(m, applied)


def _rebuild(bundle: Path, staging: Path, files: list[str], resolve: Resolve | None
             ) -> tuple[list[str], "Applied | None", dict[str, str]]:
    """If the bundle carries MODEL.delta and not MODEL (the file its manifest names): MODEL
    rebuilt in staging from the delta (checked against the manifest's sha256 as it was
    written), the delta dropped. FILES as they then are, what was applied, and the file
    already hashed."""
    manifests = [f for f in files if f == MANIFEST or f.endswith(".manifest.json")]
    if len(manifests) != 1:
        return files, None, {}  # _check_bundle says what is wrong
    m = Manifest.load(staging / manifests[0])
    patch = m.file + DELTA_SUFFIX
    if patch not in files or m.file in files:
        return files, None, {}
    safe_rel(bundle, m.file)
    if resolve is None:
        raise DeltaRefused(f"bundle {bundle}: carries a delta, and no store to apply it against",
                           hint="send the full file")
    from .delta import apply

    applied = apply(staging / patch, resolve, staging / m.file, m.sha256)
    (staging / patch).unlink()
    checkpoint("install:delta-applied")
    return [f for f in files if f != patch] + [m.file], applied, {m.file: applied.sha256}


def fsync_tree(root: Path) -> None:
    """fsync every file under ROOT, then every folder once (deepest first)."""
    dirs = {root}
    for p in root.rglob("*"):
        if p.is_file():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
        else:
            dirs.add(p)
    for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        fsync_dir(d)


def _walk(bundle: Path) -> Iterator[tuple[str, os.stat_result]]:
    for dirpath, dirnames, filenames in os.walk(bundle, followlinks=False):
        for n in dirnames + filenames:
            full = Path(dirpath) / n
            yield full.relative_to(bundle).as_posix(), os.lstat(full)


def _copy_folder(bundle: Path, staging: Path, move: bool = False) -> list[str]:
    files = []
    for rel, st in _walk(bundle):
        if stat.S_ISDIR(st.st_mode):
            continue
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a special file"
            raise UnsafeBundle(f"bundle {bundle}: {rel} is {kind}",
                               hint="a bundle holds regular files only")
        files.append(rel)
        if len(files) > MAX_BUNDLE_FILES:
            raise UnsafeBundle(f"bundle {bundle}: more than {MAX_BUNDLE_FILES} files")
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        if move and st.st_nlink == 1 and _moved(bundle / rel, staging / rel, st):
            checkpoint("install:one-file")
            continue
        fd = os.open(bundle / rel, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as src, open(staging / rel, "xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        checkpoint("install:one-file")
    return files


def _moved(src: Path, dest: Path, st: os.stat_result) -> bool:
    """Rename SRC (the regular file lstat'd as ST) to DEST; False to copy instead (another
    filesystem). A file swapped for something else in between is refused."""
    try:
        os.rename(src, dest)
    except OSError:
        return False
    after = os.lstat(dest)
    if not stat.S_ISREG(after.st_mode) or (after.st_ino, after.st_dev) != (st.st_ino, st.st_dev):
        raise UnsafeBundle(f"bundle file {src} changed while it was installed",
                           hint="nothing was installed; push again")
    return True


def _extract_tar(bundle: Path, staging: Path) -> list[str]:
    """BUNDLE (a tar, maybe compressed) into STAGING, never more of a member than the manifest
    says it is (a gzip bomb: 600 KB of tar holding a 300 MB member). Two passes: the headers
    and the manifest first (a member whose header is already too big stops it at once, before
    its bytes are read); then the members, each copied up to its limit and refused past it."""
    import tarfile

    import gzip
    import zlib

    free = shutil.disk_usage(staging).free
    try:
        with tarfile.open(bundle, "r:*") as tf:
            m, manifest_rel = _scan_tar(tf, bundle, free)
        limits = _member_limits(m, bundle, free, manifest_rel)
        files = []
        with tarfile.open(bundle, "r:*") as tf:
            for member in tf:
                rel = safe_rel(bundle, member.name)
                if member.isdir():
                    continue
                _check_member(bundle, member, rel, limits)
                files.append(rel)
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None
                with src, open(target, "xb") as dst:
                    _copy_at_most(src, dst, limits[rel], bundle, rel)
        return files
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"bundle {bundle}: not a folder or a readable tar file ({exc})") \
            from exc


MAX_MANIFEST = 1 << 20  # a manifest is a few KB of JSON
MAX_SIG = 1 << 16       # an SSH signature (armored) is under 1 KB
DELTA_SLACK = 1 << 20   # a delta is sent only when smaller than the model: this is a margin


def _scan_tar(tf, bundle: Path, free: int) -> tuple[Manifest, str]:
    """Pass 1 over TF: every header checked (plain paths, regular files, count, sizes within
    FREE bytes of staging space, within the manifest's once it is read); the manifest and
    its member's name."""
    import json

    manifest: Manifest | None = None
    manifest_rel = ""
    seen: list = []
    total = 0
    for member in tf:
        rel = safe_rel(bundle, member.name)
        if member.isdir():
            continue
        _check_member(bundle, member, rel, None)
        seen.append((member, rel))
        if len(seen) > MAX_BUNDLE_FILES:
            raise UnsafeBundle(f"bundle {bundle}: more than {MAX_BUNDLE_FILES} files")
        total += member.size
        if total > free:
            raise UnsafeBundle(f"bundle {bundle}: its members ({total} bytes so far, {rel} "
                               f"{member.size}) exceed the {free} bytes free for staging",
                               hint="nothing was written")
        if rel == MANIFEST or rel.endswith(".manifest.json"):
            if manifest is not None:
                raise InputError(f"bundle {bundle}: holds more than one manifest",
                                 hint="a bundle is NAME.MODE.tflite + NAME.MODE.manifest.json")
            if member.size > MAX_MANIFEST:
                raise UnsafeBundle(f"bundle {bundle}: manifest {rel} is {member.size} bytes "
                                   f"(at most {MAX_MANIFEST})")
            src = tf.extractfile(member)
            assert src is not None
            try:
                manifest = Manifest.from_dict(json.loads(src.read(MAX_MANIFEST + 1)),
                                              f"bundle {bundle}: {rel}")
            except (ValueError, UnicodeDecodeError) as exc:
                raise InputError(f"bundle {bundle}: {rel} is not a JSON manifest ({exc})") \
                    from None
            manifest_rel = rel
            limits = _member_limits(manifest, bundle, free, rel)
            for before, before_rel in seen[:-1]:  # the members ahead of it, checked now
                _check_member(bundle, before, before_rel, limits)
        elif manifest is not None:
            _check_member(bundle, member, rel,
                          _member_limits(manifest, bundle, free, manifest_rel))
    if manifest is None:
        raise InputError(f"bundle {bundle}: holds no manifest",
                         hint="a bundle is NAME.MODE.tflite + NAME.MODE.manifest.json")
    return manifest, manifest_rel


def _member_limits(m: Manifest, bundle: Path, free: int, manifest_rel: str) -> dict[str, int]:
    """The most bytes each member may have: the model its manifest ``size``, an extra file
    its declared size (``sizes``; without one, the free staging space), the manifest
    (MANIFEST_REL) MAX_MANIFEST, its signature (MANIFEST_REL + SIG) MAX_SIG, a delta in place
    of the model (MODEL.delta) the model's size + DELTA_SLACK. A member not named here is not
    the bundle's."""
    sizes = m.sizes or {}
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and v >= 0
                                              for v in sizes.values()):
        raise InputError(f"bundle {bundle}: the manifest's \"sizes\" is not a map of path → "
                         f"bytes")
    limits = {rel: sizes.get(rel, free) for rel in (m.files or {})}
    limits[m.file] = m.size
    limits[manifest_rel] = MAX_MANIFEST
    limits[manifest_rel + SIG] = MAX_SIG
    limits[m.file + DELTA_SUFFIX] = m.size + DELTA_SLACK  # a delta in place of the model
    return limits


def _check_member(bundle: Path, member, rel: str, limits: dict[str, int] | None) -> None:
    """A tar member: a regular file (no link, device, fifo); within LIMITS (when known)."""
    if not member.isreg():
        kind = "a link" if (member.issym() or member.islnk()) else "a special file"
        raise UnsafeBundle(f"bundle {bundle}: member {rel} is {kind}",
                           hint="a bundle holds regular files only")
    if limits is None:
        return
    if rel not in limits:
        raise UnsafeBundle(f"bundle {bundle}: {rel} is not listed in the manifest",
                           hint="list extra files under \"files\" with their sha256")
    limit = limits[rel]
    if member.size > limit:
        raise UnsafeBundle(f"bundle {bundle}: member {rel} is {member.size} bytes, more than "
                           f"the {limit} its manifest says", hint="nothing of it was written")


def _copy_at_most(src, dst, limit: int, bundle: Path, rel: str) -> None:
    """Copy SRC to DST; past LIMIT bytes (the member lied, or the file changed under us),
    stop and refuse."""
    done = 0
    while chunk := src.read(1 << 20):
        done += len(chunk)
        if done > limit:
            raise UnsafeBundle(f"bundle {bundle}: member {rel} is more than the {limit} bytes "
                               f"its manifest says; stopped there")
        dst.write(chunk)


def _check_bundle(bundle: Path, staging: Path, files: list[str],
                  checked: dict[str, str] | None = None) -> tuple[Manifest, str]:
    """CHECKED: files already hashed as they were written here (a delta's result), with
    their sha256: not read again."""
    manifests = [f for f in files if f == MANIFEST or f.endswith(".manifest.json")]
    if len(manifests) != 1:
        raise InputError(f"bundle {bundle}: holds {len(manifests)} manifests "
                         f"({', '.join(manifests) or 'none'}), expected exactly one",
                         hint="a bundle is NAME.MODE.tflite + NAME.MODE.manifest.json")
    m = Manifest.load(staging / manifests[0])
    expected = expected_files(m)
    for rel in expected:
        safe_rel(bundle, rel)
    extra = sorted(set(files) - set(expected) - {manifests[0], manifests[0] + SIG})
    if extra:
        raise UnsafeBundle(f"bundle {bundle}: {extra[0]} is not listed in the manifest",
                           hint="list extra files under \"files\" with their sha256")
    for rel, want in expected.items():
        p = staging / rel
        if not p.is_file():
            raise InputError(f"bundle {bundle}: {rel} named by the manifest is missing")
        got = (checked or {}).get(rel) or sha256_file(p)
        if got != want:
            raise HashMismatch(f"bundle {bundle}: {rel} has sha256 {got[:12]}…, the manifest "
                               f"says {want[:12]}…", hint="the upload is damaged; send it again")
    if (staging / m.file).stat().st_size != m.size:
        raise HashMismatch(f"bundle {bundle}: {m.file} has size "
                           f"{(staging / m.file).stat().st_size}, the manifest says {m.size}")
    return m, manifests[0]
