"""What travels to a board: a model file and its manifest (plus any extra files the manifest
lists under ``files``, e.g. a gate dataset, and the manifest's SSH signature when signed:
``NAME.MODE.manifest.json.sig``, see host/signing.py). A bundle is a folder or a tar of those
files; the agent checks every sha256 against the manifest before anything becomes visible on
the board. Tars are written reproducibly (sorted, no times or owners), so the same bundle gives
the same bytes — pull mode names bundle objects by their sha256.

The host checks a bundle before it connects to any board (nothing is read from outside the
bundle, nothing is sent, when a check fails):

* the model name and version follow the board's rule for store entries
  (``device.store.check_name``: no '/', not '.'-led, printable, ≤ 128 bytes);
* every name the manifest gives a file is a plain relative path (:func:`check_relpath`: no
  '..', '.', empty part, leading '/', backslash or control character) that resolves, links
  followed, to a regular file inside the bundle's folder (no symlink out of it);
* every file's sha256 (and size, where the manifest gives it) is the manifest's.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..device.manifest import Manifest, sha256_file
from ..device.store import check_name
from ..errors import InputError, UnsafeBundle


def check_relpath(rel: object, where: str) -> str:
    """Pure: REL (a name the manifest gives a file) as a plain relative POSIX path, or
    UnsafeBundle naming WHERE and REL."""
    ok = isinstance(rel, str) and 0 < len(rel.encode()) <= 1024 and rel.isprintable() \
        and "\\" not in rel and not rel.startswith("/") \
        and all(part not in ("", ".", "..") for part in rel.split("/"))
    if not ok:
        raise UnsafeBundle(f"{where}: the manifest names a file {rel!r}, which is not a plain "
                           f"relative path inside the bundle",
                           hint="names in a manifest have no '..', no leading '/', no empty "
                                "or '.' parts")
    return rel  # type: ignore[return-value]


def _inside(base: Path, rel: str, where: str) -> Path:
    """BASE/REL with every link followed, if it stays inside BASE and is a regular file."""
    path = base / rel
    try:
        real = Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        raise InputError(f"{where}: {rel} named by the manifest is missing") from None
    except OSError as exc:
        raise UnsafeBundle(f"{where}: {rel} cannot be resolved ({exc.strerror})") from None
    root = Path(os.path.realpath(base))
    if real != root and root not in real.parents:
        raise UnsafeBundle(f"{where}: {rel} is a symbolic link out of the bundle (to {real})",
                           hint="copy the file into the bundle folder instead")
    if not stat.S_ISREG(real.stat().st_mode):
        raise UnsafeBundle(f"{where}: {rel} is not a regular file",
                           hint="a bundle holds regular files only")
    return path


@dataclass
class Bundle:
    manifest: Manifest
    model_path: Path
    extra: dict[str, Path] = field(default_factory=dict)  # relpath in bundle → local file
    signature: str | None = None  # SSH signature of manifest_bytes() (host/signing.py)

    def __post_init__(self) -> None:
        """The checks that need no file (see the module docstring): names, relative paths."""
        where = f"bundle {self.manifest.name!r}"
        check_name("model name", self.manifest.name)
        check_name("version", self.manifest.version)
        names = [self.manifest.file, *(self.manifest.files or {}), *self.extra]
        for rel in names:
            check_relpath(rel, where)
            if rel == self.manifest_name:
                raise UnsafeBundle(f"{where}: {rel} is the manifest's own name")

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def files(self) -> dict[str, Path]:
        """relpath → local path of every file but the manifest."""
        return {self.manifest.file: self.model_path, **self.extra}

    @property
    def manifest_name(self) -> str:
        return Path(self.manifest.file).stem + ".manifest.json"

    def manifest_bytes(self) -> bytes:
        return self.manifest.to_json().encode()

    @property
    def signature_name(self) -> str:
        return self.manifest_name + ".sig"

    def meta_files(self) -> dict[str, bytes]:
        """relpath → bytes of the files made here: the manifest, and its signature if any."""
        out = {self.manifest_name: self.manifest_bytes()}
        if self.signature:
            out[self.signature_name] = self.signature.encode()
        return out

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files().values()) + \
            sum(len(b) for b in self.meta_files().values())

    def requires(self) -> dict | None:
        """The ops (highest version of each), custom ops and TensorFlow-numbered runtime the
        model needs (its manifest's; load_bundle reads them from the file for an older one)."""
        return self.manifest.requires

    def with_files(self, extra: dict[str, Path]) -> "Bundle":
        """The same model with extra files; the version then names model + files together."""
        for rel in extra:
            check_relpath(rel, f"bundle {self.name!r}")
            if rel == self.manifest.file:
                raise InputError(f"extra bundle file name {rel!r} is the model's name")
        files = {**(self.manifest.files or {}),
                 **{rel: sha256_file(p) for rel, p in extra.items()}}
        sizes = {**(self.manifest.sizes or {}),
                 **{rel: p.stat().st_size for rel, p in extra.items()}}
        h = hashlib.sha256(self.manifest.sha256.encode())
        for rel in sorted(files):
            h.update(f"\0{rel}\0{files[rel]}".encode())
        m = replace(self.manifest, files=files, sizes=sizes, version=h.hexdigest()[:12])
        return Bundle(m, self.model_path, {**self.extra, **extra})  # a new manifest: unsigned

    def write_folder(self, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for rel, src in self.files().items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / rel)
        for rel, data in self.meta_files().items():
            (dest / rel).write_bytes(data)
        return dest

    def write_tar(self, dest: Path) -> Path:
        """A reproducible tar (gzip'd if DEST ends in gz): the manifest (and its signature)
        first — a board then knows every member's size before it reads the member's bytes —
        then the files sorted; regular files only, mode 0644, no owner, time 0."""
        entries: list[tuple[str, Path | bytes]] = [
            *self.meta_files().items(), *sorted(self.files().items(), key=lambda e: e[0])]
        with open(dest, "wb") as raw:
            gz = None
            if dest.name.endswith("gz"):
                import gzip

                gz = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
            with tarfile.open(fileobj=gz or raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for rel, src in entries:
                    ti = tarfile.TarInfo(rel)
                    ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = \
                        0o644, 0, 0, 0, "", ""
                    if isinstance(src, bytes):
                        ti.size = len(src)
                        tf.addfile(ti, io.BytesIO(src))
                    else:
                        ti.size = src.stat().st_size
                        with open(src, "rb") as f:
                            tf.addfile(ti, f)
            if gz is not None:
                gz.close()
        return dest


def load_bundle(path: str | Path) -> Bundle:
    """A .tflite with NAME.LABEL.manifest.json beside it, a bare .tflite (made elsewhere: its
    manifest is made here from the flatbuffer, marked ``source.imported``), or a bundle folder."""
    path = Path(path)
    if path.is_dir():
        manifests = sorted(path.glob("*.manifest.json")) + sorted(path.glob("manifest.json"))
        if len(manifests) != 1:
            raise InputError(f"{path}: a bundle folder holds exactly one manifest, found "
                             f"{len(manifests)}")
        m = Manifest.load(manifests[0])
        _names(m, manifests[0])
        extra = {rel: path / rel for rel in (m.files or {})}
        return _checked(Bundle(m, path / m.file, extra, _signature(manifests[0], m)), path,
                        path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file or bundle folder")
    if path.suffix != ".tflite":
        raise InputError(f"{path}: expected a .tflite file (with its manifest) or a bundle folder")
    mpath = path.with_name(path.name[:-len(".tflite")] + ".manifest.json")
    if not mpath.is_file():
        from .compiler.importer import import_manifest

        return _checked(Bundle(import_manifest(path), path), path, path.parent)
    m = Manifest.load(mpath)
    _names(m, mpath)
    if m.file != path.name:
        m = replace(m, file=path.name)
    return _checked(Bundle(m, path, {rel: path.parent / rel for rel in (m.files or {})},
                           _signature(mpath, m)), path, path.parent)


def _signature(manifest_path: Path, m: Manifest) -> str | None:
    """The signature beside a manifest, kept only if the bytes the host sends (the manifest
    as M re-serializes it) are the bytes on disk it signed."""
    sig = manifest_path.with_name(manifest_path.name + ".sig")
    try:
        if not sig.is_file() or manifest_path.read_bytes() != m.to_json().encode():
            return None
        return sig.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _with_requirements(b: Bundle) -> Bundle:
    """A manifest written before ``requires`` existed gets it from the model file (the push
    preflight checks it against the board's runtime)."""
    if b.manifest.requires is not None or b.signature:
        return b  # (a signed manifest stays as it was signed)
    from .compiler.importer import requirements
    from .compiler.tflite_reader import read_model

    try:
        req = requirements(read_model(b.model_path))
    except InputError:
        return b  # not readable as a model here: the board's install probe will say why
    return Bundle(replace(b.manifest, requires=req), b.model_path, b.extra)


def _names(m: Manifest, where: Path) -> None:
    """The manifest's names, checked before any file they name is opened."""
    for what, value in (("model name", m.name), ("version", m.version)):
        if not isinstance(value, str):
            raise InputError(f"{where}: the {what} is not a string")
        try:
            check_name(what, value)
        except InputError as exc:
            raise InputError(f"{where}: {exc.message}", hint=exc.hint) from None
    if not isinstance(m.files or {}, dict):
        raise InputError(f"{where}: \"files\" is not a map of path → sha256")
    for rel in [m.file, *(m.files or {})]:
        check_relpath(rel, str(where))


def _checked(b: Bundle, where: Path, base: Path) -> Bundle:
    """Every file the manifest names resolves inside BASE and has the manifest's sha256."""
    if where.is_dir():  # a folder: the manifest names the model too (else the user did)
        _inside(base, b.manifest.file, str(where))
    for rel in b.extra:
        _inside(base, rel, str(where))
    if not b.model_path.is_file():
        raise InputError(f"{where}: {b.manifest.file} named by the manifest is missing")
    if sha256_file(b.model_path) != b.manifest.sha256:
        raise InputError(f"{b.model_path}: sha256 differs from its manifest",
                         hint="the file changed after its manifest was written: compile it "
                              "again, or remove the stale manifest to push the file as it is "
                              "(imported)")
    for rel, p in sorted(b.extra.items()):
        size = (b.manifest.sizes or {}).get(rel)
        if size is not None and p.stat().st_size != size:
            raise InputError(f"{where}: {rel} is {p.stat().st_size} bytes, its manifest says "
                             f"{size}", hint="the file changed after the bundle was made")
        if sha256_file(p) != (b.manifest.files or {}).get(rel):
            raise InputError(f"{where}: {rel}: sha256 differs from its manifest",
                             hint="the file changed after the bundle was made; make it again")
    return _with_requirements(b)
