"""The board's versioned model store: install, activate, roll back, remove, verify.

Layout under the store root (one filesystem, so every switch is a rename)::

    ROOT/.lock                     flock'd by every command that changes the store
    ROOT/.staging/NAME.VERSION.*/  an install being written (never visible as a version)
    ROOT/.trash/                   versions on their way out (renamed here, then deleted)
    ROOT/models/NAME/VERSION/      manifest.json + the model file + any files the manifest lists
    ROOT/models/NAME/current.json  {"current": VERSION, "previous": VERSION | null, "updated": …}

Invariants, kept through a kill -9 at any instant:

* a ``VERSION/`` folder is whole and hash-valid: it appears by one rename after every file was
  written, checked against the manifest's sha256 and fsync'd;
* ``current.json`` only ever names such a folder: it is replaced by one rename of a fsync'd
  temporary file, and both ``current`` and ``previous`` change in that one rename;
* the version named ``current`` (and the one named ``previous``) is never removed or pruned.

A bundle (a folder, or a .tar / .tar.gz / .tgz file) holds one manifest (``manifest.json`` or
``*.manifest.json``), the model file it names, and any other files listed in its ``files`` map
(path → sha256). Anything else — an absolute path, ``..``, a link, a device or fifo, a file the
manifest doesn't list, a hash or size that differs — refuses the whole bundle, store unchanged.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from ..errors import Conflict, HashMismatch, InputError, NotFound, StoreError, UnsafeBundle
from .manifest import Manifest, sha256_file

POINTER = "current.json"
MANIFEST = "manifest.json"
MAX_BUNDLE_FILES = 64
DEFAULT_KEEP = 3

# Crash points for the kill -9 tests: EDGEDEPLOY_AGENT_CRASH_AT=<name> makes the process
# SIGKILL itself there. Named after the step just finished.
_CRASH_AT = os.environ.get("EDGEDEPLOY_AGENT_CRASH_AT", "")


def checkpoint(name: str) -> None:
    """Tests' fault injection: EDGEDEPLOY_AGENT_CRASH_AT=POINT kills the agent (SIGKILL) at
    POINT; POINT@FILE does it once (the first process to create FILE)."""
    if not _CRASH_AT:
        return
    point, _, once = _CRASH_AT.partition("@")
    if point != name:
        return
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def check_name(kind: str, value: str) -> str:
    """Model names and versions become folder names: no '/', no NUL, not '.'-led, ≤ 128 bytes.
    Shell metacharacters are allowed here (the host quotes everything it sends)."""
    if (not value or "/" in value or "\0" in value or value.startswith(".")
            or len(value.encode()) > 128 or not value.isprintable()):
        raise InputError(f"{kind} {value!r} cannot be a store entry",
                         hint="use printable characters, no '/', not starting with '.', "
                              "at most 128 bytes")
    return value


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, crash_point: str | None = None) -> None:
    """Write to a temporary file beside PATH, fsync, rename, fsync the folder: PATH is whole
    or absent, whatever instant the process dies at."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if crash_point:
            checkpoint(crash_point)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


@dataclass
class Pointer:
    current: str | None
    previous: str | None
    updated: str = ""


@dataclass
class Installed:
    name: str
    version: str
    path: Path
    files: int
    bytes: int
    already_present: bool


class Store:
    def __init__(self, root: str | os.PathLike, keep: int = DEFAULT_KEEP) -> None:
        self.root = Path(root)
        self.keep = keep
        self.models = self.root / "models"

    # -- locking and housekeeping ---------------------------------------------------------
    def _prepare(self) -> None:
        try:
            for d in (self.root, self.models, self.root / ".staging", self.root / ".trash"):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"store {self.root}: cannot create it ({exc.strerror})",
                             hint="pass --store DIR on a writable filesystem") from exc

    def locked(self) -> "_Lock":
        self._prepare()
        return _Lock(self.root / ".lock", self)

    def _sweep(self) -> None:
        """Under the lock: whatever a killed process left in staging or trash is garbage."""
        for d in (self.root / ".staging", self.root / ".trash"):
            for p in d.iterdir():
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() \
                    else p.unlink(missing_ok=True)
        # (an interrupted pointer write's temporary file: see _sweep_pointer, called for the
        # one model an operation touches — sweeping every model here costs O(models))

    def _sweep_pointer(self, name: str) -> None:
        """Under the lock: the temporary files an interrupted pointer write left for NAME."""
        try:
            with os.scandir(self.models / check_name("model name", name)) as it:
                for e in it:
                    if e.name.startswith(f".{POINTER}."):
                        os.unlink(e.path)
        except FileNotFoundError:
            pass

    # -- reading --------------------------------------------------------------------------
    def version_dir(self, name: str, version: str) -> Path:
        return self.models / check_name("model name", name) / check_name("version", version)

    def pointer(self, name: str) -> Pointer:
        path = self.models / check_name("model name", name) / POINTER
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return Pointer(None, None)
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable pointer ({exc})") from exc
        return Pointer(data.get("current"), data.get("previous"), data.get("updated", ""))

    def manifest(self, name: str, version: str) -> Manifest:
        d = self.version_dir(name, version)
        if not d.is_dir():
            raise NotFound(f"model {name} version {version} is not in the store {self.root}",
                           hint="see `edgedeploy-agent list`")
        return Manifest.load(d / MANIFEST)

    def versions(self, name: str) -> list[str]:
        d = self.models / check_name("model name", name)
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda v: (d / v).stat().st_mtime)

    def names(self) -> list[str]:
        if not self.models.is_dir():
            return []
        return sorted(p.name for p in self.models.iterdir() if p.is_dir())

    def resolve(self, spec: str) -> tuple[str, str, Manifest, Path]:
        """NAME or NAME@VERSION → (name, version, manifest, model path); NAME means current."""
        name, _, version = spec.partition("@")
        if not version:
            version = self.pointer(name).current or ""
            if not version:
                raise NotFound(f"model {name} has no active version in {self.root}",
                               hint=f"install and activate one, or name it as {name}@VERSION")
        m = self.manifest(name, version)
        return name, version, m, self.version_dir(name, version) / m.file

    def verify(self, name: str, version: str) -> list[str]:
        """Problems with a stored version (empty: whole and hash-valid)."""
        d = self.version_dir(name, version)
        try:
            m = Manifest.load(d / MANIFEST)
        except InputError as exc:
            return [str(exc)]
        problems = []
        for rel, want in _expected_files(m).items():
            p = d / rel
            if not p.is_file() or p.is_symlink():
                problems.append(f"{rel}: missing")
            elif sha256_file(p) != want:
                problems.append(f"{rel}: sha256 differs from the manifest")
        return problems

    def listing(self, only: str | None = None) -> list[dict]:
        out = []
        if only is not None:
            check_name("model name", only)
        for name in self.names() if only is None else \
                [only] if (self.models / only).is_dir() else []:
            ptr = self.pointer(name)
            versions = []
            for v in self.versions(name):
                try:
                    m = self.manifest(name, v)
                    versions.append({"version": v, "mode": m.label, "size": m.size,
                                     "created": m.created,
                                     "installed": _iso((self.version_dir(name, v)).stat().st_mtime)})
                except InputError as exc:
                    versions.append({"version": v, "error": str(exc)})
            out.append({"name": name, "current": ptr.current, "previous": ptr.previous,
                        "versions": versions})
        return out

    # -- changing (call inside `with store.locked():`) ------------------------------------
    def install(self, bundle: str | os.PathLike, progress: Callable[[str], None] | None = None,
                *, move: bool = False) -> Installed:
        """MOVE: the bundle folder is discarded afterwards (an upload), so its files may be
        moved into staging rather than copied (same filesystem, not hard-linked)."""
        bundle = Path(bundle)
        staging = Path(tempfile.mkdtemp(prefix="install.", dir=self.root / ".staging"))
        try:
            if bundle.is_dir() and not bundle.is_symlink():
                files = _copy_folder(bundle, staging, move)
            elif bundle.is_file():
                files = _extract_tar(bundle, staging)
            else:
                raise InputError(f"bundle {bundle}: no such folder or tar file")
            checkpoint("install:copied")
            m, manifest_rel = _check_bundle(bundle, staging, files)
            name = check_name("model name", m.name)
            version = check_name("version", m.version)
            if manifest_rel != MANIFEST:
                os.replace(staging / manifest_rel, staging / MANIFEST)
            total = sum((staging / r).stat().st_size for r in _expected_files(m))
            dest = self.version_dir(name, version)
            if dest.exists():
                same = not self.verify(name, version) and \
                    self.manifest(name, version).sha256 == m.sha256 and \
                    _expected_files(self.manifest(name, version)) == _expected_files(m)
                if not same:
                    raise Conflict(f"model {name} version {version} is already in the store "
                                   f"with other content",
                                   hint="a version names one content; compile a new version")
                return Installed(name, version, dest, len(_expected_files(m)) + 1, total, True)
            dirs = {staging}
            for p in staging.rglob("*"):  # every file, then every folder once
                if p.is_file():
                    with open(p, "rb+") as f:
                        os.fsync(f.fileno())
                else:
                    dirs.add(p)
            for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
                _fsync_dir(d)
            checkpoint("install:verified")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, dest)
            _fsync_dir(dest.parent)
            checkpoint("install:renamed")
            return Installed(name, version, dest, len(_expected_files(m)) + 1, total, False)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def activate(self, name: str, version: str) -> tuple[Pointer, list[str]]:
        self._sweep_pointer(name)
        problems = self.verify(name, version) if self.version_dir(name, version).is_dir() \
            else None
        if problems is None:
            raise NotFound(f"model {name} version {version} is not in the store {self.root}",
                           hint="install it first")
        if problems:
            raise HashMismatch(f"model {name} version {version} is damaged: {problems[0]}",
                               hint="remove it and install it again")
        old = self.pointer(name)
        if old.current == version:
            return old, []
        new = Pointer(version, old.current or old.previous)
        self._write_pointer(name, new)
        checkpoint("activate:switched")
        return new, self._prune(name, new)

    def rollback(self, name: str) -> Pointer:
        self._sweep_pointer(name)
        old = self.pointer(name)
        if not old.previous:
            raise NotFound(f"model {name} has no previous version to roll back to",
                           hint="see `edgedeploy-agent list`")
        problems = self.verify(name, old.previous)
        if problems:
            raise HashMismatch(f"model {name} previous version {old.previous} is damaged: "
                               f"{problems[0]}; staying on {old.current}")
        new = Pointer(old.previous, old.current)
        self._write_pointer(name, new)
        checkpoint("rollback:switched")
        return new

    def remove(self, name: str, version: str) -> None:
        self._sweep_pointer(name)
        ptr = self.pointer(name)
        if version == ptr.current:
            raise Conflict(f"model {name} version {version} is active and cannot be removed",
                           hint="activate another version first")
        d = self.version_dir(name, version)
        if not d.is_dir():
            raise NotFound(f"model {name} version {version} is not in the store {self.root}")
        if version == ptr.previous:
            self._write_pointer(name, Pointer(ptr.current, None))
        self._discard(d)

    def _write_pointer(self, name: str, ptr: Pointer) -> None:
        ptr.updated = _iso(time.time())
        data = json.dumps({"current": ptr.current, "previous": ptr.previous,
                           "updated": ptr.updated}).encode()
        write_atomic(self.models / name / POINTER, data, crash_point="pointer:written")

    def _prune(self, name: str, ptr: Pointer) -> list[str]:
        """Keep the newest ``keep`` versions, and always current and previous."""
        versions = self.versions(name)
        removable = [v for v in versions if v not in (ptr.current, ptr.previous)]
        budget = max(self.keep - len({ptr.current, ptr.previous} - {None}), 0)
        doomed = removable[:max(len(removable) - budget, 0)]
        for v in doomed:
            self._discard(self.version_dir(name, v))
        return doomed

    def _discard(self, d: Path) -> None:
        trash = Path(tempfile.mkdtemp(prefix="rm.", dir=self.root / ".trash"))
        os.rename(d, trash / "v")
        _fsync_dir(d.parent)
        shutil.rmtree(trash, ignore_errors=True)


class _Lock:
    def __init__(self, path: Path, store: Store) -> None:
        self.path = path
        self.store = store

    def __enter__(self) -> Store:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.store._sweep()
        return self.store

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _expected_files(m: Manifest) -> dict[str, str]:
    """Every file a version holds besides manifest.json, with its sha256."""
    files = {m.file: m.sha256}
    files.update(m.files or {})
    return files


def _safe_rel(bundle: Path, rel: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or rel.startswith("\\") or not p.parts:
        raise UnsafeBundle(f"bundle {bundle}: member {rel!r} has an absolute or '..' path",
                           hint="a bundle holds plain relative paths only")
    return p.as_posix()


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
    import tarfile

    try:
        tf = tarfile.open(bundle, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"bundle {bundle}: not a folder or a tar file ({exc})") from exc
    files = []
    with tf:
        for member in tf:
            rel = _safe_rel(bundle, member.name)
            if member.isdir():
                continue
            if not member.isreg():
                kind = "a link" if (member.issym() or member.islnk()) else "a special file"
                raise UnsafeBundle(f"bundle {bundle}: member {rel} is {kind}",
                                   hint="a bundle holds regular files only")
            files.append(rel)
            if len(files) > MAX_BUNDLE_FILES:
                raise UnsafeBundle(f"bundle {bundle}: more than {MAX_BUNDLE_FILES} files")
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            assert src is not None
            with src, open(target, "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    return files


def _check_bundle(bundle: Path, staging: Path, files: list[str]) -> tuple[Manifest, str]:
    manifests = [f for f in files if f == MANIFEST or f.endswith(".manifest.json")]
    if len(manifests) != 1:
        raise InputError(f"bundle {bundle}: holds {len(manifests)} manifests "
                         f"({', '.join(manifests) or 'none'}), expected exactly one",
                         hint="a bundle is NAME.MODE.tflite + NAME.MODE.manifest.json")
    m = Manifest.load(staging / manifests[0])
    expected = _expected_files(m)
    for rel in expected:
        _safe_rel(bundle, rel)
    extra = sorted(set(files) - set(expected) - {manifests[0]})
    if extra:
        raise UnsafeBundle(f"bundle {bundle}: {extra[0]} is not listed in the manifest",
                           hint="list extra files under \"files\" with their sha256")
    for rel, want in expected.items():
        p = staging / rel
        if not p.is_file():
            raise InputError(f"bundle {bundle}: {rel} named by the manifest is missing")
        got = sha256_file(p)
        if got != want:
            raise HashMismatch(f"bundle {bundle}: {rel} has sha256 {got[:12]}…, the manifest "
                               f"says {want[:12]}…", hint="the upload is damaged; send it again")
    if (staging / m.file).stat().st_size != m.size:
        raise HashMismatch(f"bundle {bundle}: {m.file} has size "
                           f"{(staging / m.file).stat().st_size}, the manifest says {m.size}")
    return m, manifests[0]
