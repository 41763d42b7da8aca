"""What travels to a board: a model file and its manifest (plus any extra files the manifest
lists under ``files``, e.g. a gate dataset, and the manifest's SSH signature when signed:
``NAME.MODE.manifest.json.sig``, see host/signing.py). A bundle is a folder or a tar of those
files; the agent checks every sha256 against the manifest before anything becomes visible on
the board. Tars are written reproducibly (sorted, no times or owners), so the same bundle gives
the same bytes — pull mode names bundle objects by their sha256.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..device.manifest import Manifest, sha256_file
from ..errors import InputError


@dataclass
class Bundle:
    manifest: Manifest
    model_path: Path
    extra: dict[str, Path] = field(default_factory=dict)  # relpath in bundle → local file
    signature: str | None = None  # SSH signature of manifest_bytes() (host/signing.py)

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

    def with_files(self, extra: dict[str, Path]) -> "Bundle":
        """The same model with extra files; the version then names model + files together."""
        for rel in extra:
            if rel.startswith("/") or ".." in Path(rel).parts or rel == self.manifest.file:
                raise InputError(f"extra bundle file name {rel!r} is not a plain relative path")
        files = {**(self.manifest.files or {}),
                 **{rel: sha256_file(p) for rel, p in extra.items()}}
        h = hashlib.sha256(self.manifest.sha256.encode())
        for rel in sorted(files):
            h.update(f"\0{rel}\0{files[rel]}".encode())
        m = replace(self.manifest, files=files, version=h.hexdigest()[:12])
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
        """A reproducible tar (gzip'd if DEST ends in gz): members sorted, regular files only,
        mode 0644, no owner, time 0."""
        entries: list[tuple[str, Path | bytes]] = sorted(
            [*self.files().items(), *self.meta_files().items()], key=lambda e: e[0])
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
    """A .tflite with NAME.LABEL.manifest.json beside it, or a bundle folder."""
    path = Path(path)
    if path.is_dir():
        manifests = sorted(path.glob("*.manifest.json")) + sorted(path.glob("manifest.json"))
        if len(manifests) != 1:
            raise InputError(f"{path}: a bundle folder holds exactly one manifest, found "
                             f"{len(manifests)}")
        m = Manifest.load(manifests[0])
        extra = {rel: path / rel for rel in (m.files or {})}
        return _checked(Bundle(m, path / m.file, extra, _signature(manifests[0], m)), path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file or bundle folder")
    if path.suffix != ".tflite":
        raise InputError(f"{path}: expected a .tflite file (with its manifest) or a bundle folder")
    mpath = path.with_name(path.name[:-len(".tflite")] + ".manifest.json")
    if not mpath.is_file():
        raise InputError(f"{path}: no manifest {mpath.name} beside it",
                         hint="models made by `edgedeploy compile` come with one")
    m = Manifest.load(mpath)
    if m.file != path.name:
        m = replace(m, file=path.name)
    return _checked(Bundle(m, path, {rel: path.parent / rel for rel in (m.files or {})},
                           _signature(mpath, m)), path)


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


def _checked(b: Bundle, where: Path) -> Bundle:
    for rel, p in b.files().items():
        if not p.is_file():
            raise InputError(f"{where}: {rel} named by the manifest is missing")
    if sha256_file(b.model_path) != b.manifest.sha256:
        raise InputError(f"{b.model_path}: sha256 differs from its manifest",
                         hint="the file changed after it was compiled; compile it again")
    return b
