"""The board's versioned model store: install, activate, roll back, remove, verify.

Layout under the store root (one filesystem, so every switch is a rename)::

    ROOT/.lock                     flock'd by every command that changes the store; owner-only
                                   (0600: no other local user can hold it), taken with a
                                   deadline (lock.py's LOCK_WAIT, or the command's own): past
                                   it, a Conflict names the PID holding it (/proc/locks)
    ROOT/.staging/NAME.VERSION.*/  an install being written (never visible as a version)
    ROOT/.trash/                   versions on their way out (renamed here, then deleted)
    ROOT/models/NAME/VERSION/      manifest.json + the model file + any files the manifest lists
    ROOT/models/NAME/current.json  {"current": VERSION, "previous": VERSION | null, "updated": …}
    ROOT/incoming/TOKEN/           an upload on its way in (the deployer picks TOKEN; `install
                                   ROOT/incoming/TOKEN --remove-bundle` takes it in); anything
                                   here untouched for STALE_INCOMING seconds (a cut upload, a
                                   host that died mid-staging) is swept under the lock
    ROOT/data/SHA256.EXT           data files a deployer sent for `eval`, one per content
    ROOT/probe-cache/SHA256.json   what device/probe.py found when it loaded a model (by
                                   sha256 and runtime packages): a success saves the next child

Invariants, kept through a kill -9 at any instant:

* a ``VERSION/`` folder is whole and hash-valid: it appears by one rename after every file was
  written, checked against the manifest's sha256 and fsync'd;
* ``current.json`` only ever names such a folder: it is replaced by one rename of a fsync'd
  temporary file, and both ``current`` and ``previous`` change in that one rename;
* the version named ``current`` (and the one named ``previous``) is never removed or pruned;
* with a ``runs`` check (the agent passes device/probe.py's gate: the model loaded, allocated
  and invoked once on zeros in a child process with this board's runtime), a version that
  can't run here is refused at install — before its folder appears — and at activation, and
  the store is left exactly as it was.

Every changing command runs under the lock and a Guard: the deployer gives each command a
deadline (``--within``) and the agent knows whether its client is still there; a command whose
deadline passed, or whose client hung up, while it waited is dropped (Expired) after the lock is
taken and before anything changes — so a command the host gave up on never acts later.

What a bundle may hold, and how it is checked, is intake.py's; file-system helpers (atomic
writes, fsyncs, the kill -9 checkpoints) are fsio.py's. The agent reports INCOMING and DATA in
its ``state`` answer: the deployer never builds these paths itself.

Trust (device/trust.py: ROOT/trust/allowed_signers, ROOT/trust/releases.json): a store with
allowed signers installs only a bundle whose manifest a listed key signed, and activates only a
version whose stored manifest still verifies — the version kept as ``previous`` excepted (it
ran here). Activation refuses a release lower than the highest the model has been activated at
(``allow_downgrade`` lets it, the ``previous`` version is let anyway); the highest release is
recorded before the switch. ``rollback`` asks nothing: it goes back to what ran before.

(Past 400 lines on purpose: the invariants above hold only if install, activate, rollback,
remove and the sweeps are read together; bundle intake (intake.py), file-system helpers
(fsio.py), the lock (lock.py) and trust (trust.py) are already apart.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import Conflict, Expired, HashMismatch, InputError, NotFound, StoreError
from .fsio import checkpoint, fsync_dir, write_atomic
from . import trust
from .intake import MANIFEST, SIG, expected_files, fsync_tree
from .delta import Applied
from .delta_format import BaseRef
from .intake import stage as stage_bundle
from .lock import Guard, StoreLock
from .manifest import Manifest, sha256_file

# (model file, its manifest, "model NAME version V") → None if it runs here, else raise
RunsCheck = Callable[[Path, Manifest, str], object]

POINTER = "current.json"
INCOMING, DATA, PROBES = "incoming", "data", "probe-cache"
DEFAULT_KEEP = 3
STALE_INCOMING = 900.0   # an incoming/ entry untouched this long is swept (a cut upload)


def check_name(kind: str, value: str) -> str:
    """Model names and versions become folder names: no '/', no NUL, not '.'-led, ≤ 128 bytes.
    Shell metacharacters are allowed here (the host quotes everything it sends)."""
    if (not value or "/" in value or "\0" in value or value.startswith(".")
            or len(value.encode()) > 128 or not value.isprintable()):
        raise InputError(f"{kind} {value!r} cannot be a store entry",
                         hint="use printable characters, no '/', not starting with '.', "
                              "at most 128 bytes")
    return value


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
    delta: Applied | None = None   # the model was rebuilt from a delta (device/delta.py)


class Store:
    def __init__(self, root: str | os.PathLike, keep: int = DEFAULT_KEEP,
                 runs: RunsCheck | None = None) -> None:
        self.root = Path(root)
        self.keep = keep
        self.runs = runs
        self.models = self.root / "models"
        self.incoming = self.root / INCOMING   # uploads on their way in (see the docstring)
        self.data = self.root / DATA           # eval data sent by a deployer
        self.probe_cache = self.root / PROBES  # probe results (device/probe.py)
        self.guard = Guard()                   # the command under way's (set by the agent)

    # -- locking and housekeeping ---------------------------------------------------------
    def _prepare(self) -> None:
        try:
            for d in (self.root, self.models, self.root / ".staging", self.root / ".trash"):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"store {self.root}: cannot create it ({exc.strerror})",
                             hint="pass --store DIR on a writable filesystem") from exc

    def locked(self) -> StoreLock:
        """``with store.locked():`` the store's lock (lock.py), taken under the command's
        guard; the leftovers of killed processes are swept once it is held."""
        self._prepare()
        return StoreLock(self.root / ".lock", self.root, self.guard, self._sweep)

    def _sweep(self) -> None:
        """Under the lock: whatever a killed process left in staging or trash is garbage."""
        for d in (self.root / ".staging", self.root / ".trash"):
            for p in d.iterdir():
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() \
                    else p.unlink(missing_ok=True)
        # (an interrupted pointer write's temporary file: see _sweep_pointer, called for the
        # one model an operation touches — sweeping every model here costs O(models))
        self._sweep_incoming(time.time() - STALE_INCOMING)

    def _sweep_incoming(self, before: float) -> list[str]:
        """Under the lock: every incoming/ entry nothing touched since BEFORE (its newest
        mtime, links not followed): an upload cut mid-file, a host that died mid-staging, the
        nested folders a version with '/' once made. An upload under way is newer."""
        swept: list[str] = []
        try:
            entries = list(os.scandir(self.incoming))
        except (FileNotFoundError, NotADirectoryError):
            return swept
        for e in entries:
            try:
                if _newest_mtime(e) >= before:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path)
                else:
                    os.unlink(e.path)
                swept.append(e.name)
            except OSError:
                continue  # gone meanwhile, or not ours to remove: left for the owner
        return swept

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
        for rel, want in expected_files(m).items():
            p = d / rel
            if not p.is_file() or p.is_symlink():
                problems.append(f"{rel}: missing")
            elif sha256_file(p) != want:
                problems.append(f"{rel}: sha256 differs from the manifest")
        return problems

    def base_file(self, ref: BaseRef) -> Path | None:
        """The model file of stored version REF (a delta's base), if the store holds it with
        that content (its manifest's sha256; the delta's result proves every byte)."""
        try:
            m = self.manifest(ref.name, ref.version)
        except (InputError, NotFound):
            return None
        p = self.version_dir(ref.name, ref.version) / m.file
        if m.sha256 != ref.sha256 or p.is_symlink() or not p.is_file():
            return None
        return p

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
                    versions.append({"version": v, "mode": m.mode, "label": m.label,
                                     "size": m.size, "sha256": m.sha256,
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
            staged = stage_bundle(bundle, staging, move=move, resolve=self.base_file)
            m = staged.manifest
            name = check_name("model name", m.name)
            version = check_name("version", m.version)
            signed = self._check_signature(staging, f"bundle {bundle} ({name} {version})")
            expected = expected_files(m)
            total = sum((staging / r).stat().st_size for r in expected)
            dest = self.version_dir(name, version)
            if dest.exists():
                same = not self.verify(name, version) and \
                    self.manifest(name, version).sha256 == m.sha256 and \
                    expected_files(self.manifest(name, version)) == expected
                if not same:
                    raise Conflict(f"model {name} version {version} is already in the store "
                                   f"with other content",
                                   hint="a version names one content; compile a new version")
                if signed:
                    self._take_signed_manifest(staging, dest)
                return Installed(name, version, dest, len(expected) + 1, total, True,
                                 staged.delta)
            self._runs(staging / m.file, m, f"model {name} version {version}")
            fsync_tree(staging)
            checkpoint("install:verified")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, dest)
            fsync_dir(dest.parent)
            checkpoint("install:renamed")
            return Installed(name, version, dest, len(expected) + 1, total, False, staged.delta)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _check_signature(self, folder: Path, what: str) -> bool:
        """FOLDER's manifest.json against its signature, when this store has signers
        (SignatureRefused otherwise); whether it was checked."""
        if not trust.requires_signature(self.root):
            return False
        sig = folder / (MANIFEST + SIG)
        trust.verify((folder / MANIFEST).read_bytes(),
                     sig.read_bytes() if sig.is_file() else None, self.root, trust.NS_BUNDLE,
                     what)
        return True

    def _take_signed_manifest(self, staging: Path, dest: Path) -> None:
        """A version already here, now sent signed (the same files; its manifest may have
        gained a release number): keep the signed manifest. Signature first: a crash between
        the two writes leaves a pair that doesn't verify — refused, never trusted — until the
        bundle is sent again."""
        new_m, new_s = (staging / MANIFEST).read_bytes(), (staging / (MANIFEST + SIG)).read_bytes()
        old_s = dest / (MANIFEST + SIG)
        if (dest / MANIFEST).read_bytes() == new_m and old_s.is_file() and \
                old_s.read_bytes() == new_s:
            return
        write_atomic(old_s, new_s)
        write_atomic(dest / MANIFEST, new_m)

    def activate(self, name: str, version: str, *, allow_downgrade: bool = False
                 ) -> tuple[Pointer, list[str]]:
        """VERSION becomes current (see the module docstring for what trust asks first)."""
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
        if version != old.previous:
            self._check_signature(self.version_dir(name, version), f"model {name} version "
                                                                   f"{version} (stored)")
        m = self.manifest(name, version)
        trust.check_release(self.root, name, version, m.release, previous=old.previous,
                            allow_downgrade=allow_downgrade)
        self._runs(self.version_dir(name, version) / m.file, m, f"model {name} version {version}")
        trust.record_activation(self.root, name, version, m.release)
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
        m = self.manifest(name, old.previous)
        self._runs(self.version_dir(name, old.previous) / m.file, m,
                   f"model {name} previous version {old.previous}")
        new = Pointer(old.previous, old.current)
        self._write_pointer(name, new)
        checkpoint("rollback:switched")
        return new

    def _runs(self, model: Path, m: Manifest, what: str) -> None:
        """The ``runs`` check (a child process: it may take seconds), then the guard again: a
        command whose deadline passed or whose client hung up meanwhile changes nothing."""
        if self.runs is None:
            return
        self.runs(model, m, what)
        why = self.guard.why_not()
        if why:
            raise Expired(f"command dropped: {why} while {what} was being probed; nothing "
                          f"was done")

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

    def remove_model(self, name: str) -> list[str]:
        """Every version of NAME, the active one too, and its pointer: one rename of its folder
        into the trash (nothing of it stays visible if the process dies). The versions gone."""
        d = self.models / check_name("model name", name)
        if not d.is_dir():
            raise NotFound(f"model {name} is not in the store {self.root}",
                           hint="see `edgedeploy-agent list`")
        versions = self.versions(name)
        self._discard(d)
        return versions

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
        fsync_dir(d.parent)
        shutil.rmtree(trash, ignore_errors=True)


def _newest_mtime(e: os.DirEntry) -> float:
    """The latest mtime of E and everything under it, links not followed."""
    newest = e.stat(follow_symlinks=False).st_mtime
    if e.is_dir(follow_symlinks=False):
        for dirpath, dirnames, filenames in os.walk(e.path, followlinks=False):
            for n in dirnames + filenames:
                try:
                    newest = max(newest, os.lstat(os.path.join(dirpath, n)).st_mtime)
                except OSError:
                    pass
    return newest


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
