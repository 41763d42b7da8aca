"""What travels to a board: a model file and its manifest (plus any extra files the manifest
lists under ``files``, e.g. a gate dataset). A bundle is a folder or a tar of those files; the
agent checks every sha256 against the manifest before anything becomes visible on the board.
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
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files().values()) + len(self.manifest_bytes())

    def requires(self) -> dict | None:
        """The ops (highest version of each), custom ops and TensorFlow-numbered runtime the
        model needs (its manifest's; load_bundle reads them from the file for an older one)."""
        return self.manifest.requires

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
        return Bundle(m, self.model_path, {**self.extra, **extra})

    def write_folder(self, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for rel, src in self.files().items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / rel)
        (dest / self.manifest_name).write_bytes(self.manifest_bytes())
        return dest

    def write_tar(self, dest: Path) -> Path:
        with tarfile.open(dest, "w:gz" if dest.name.endswith("gz") else "w") as tf:
            for rel, src in sorted(self.files().items()):
                tf.add(str(src), arcname=rel, recursive=False)
            data = self.manifest_bytes()
            ti = tarfile.TarInfo(self.manifest_name)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
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
        extra = {rel: path / rel for rel in (m.files or {})}
        return _checked(Bundle(m, path / m.file, extra), path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file or bundle folder")
    if path.suffix != ".tflite":
        raise InputError(f"{path}: expected a .tflite file (with its manifest) or a bundle folder")
    mpath = path.with_name(path.name[:-len(".tflite")] + ".manifest.json")
    if not mpath.is_file():
        from .compiler.importer import import_manifest

        return _checked(Bundle(import_manifest(path), path), path)
    m = Manifest.load(mpath)
    if m.file != path.name:
        m = replace(m, file=path.name)
    return _checked(Bundle(m, path, {rel: path.parent / rel for rel in (m.files or {})}), path)


def _with_requirements(b: Bundle) -> Bundle:
    """A manifest written before ``requires`` existed gets it from the model file (the push
    preflight checks it against the board's runtime)."""
    if b.manifest.requires is not None:
        return b
    from .compiler.importer import requirements
    from .compiler.tflite_reader import read_model

    try:
        req = requirements(read_model(b.model_path))
    except InputError:
        return b  # not readable as a model here: the board's install probe will say why
    return Bundle(replace(b.manifest, requires=req), b.model_path, b.extra)


def _checked(b: Bundle, where: Path) -> Bundle:
    for rel, p in b.files().items():
        if not p.is_file():
            raise InputError(f"{where}: {rel} named by the manifest is missing")
    if sha256_file(b.model_path) != b.manifest.sha256:
        raise InputError(f"{b.model_path}: sha256 differs from its manifest",
                         hint="the file changed after its manifest was written: compile it "
                              "again, or remove the stale manifest to push the file as it is "
                              "(imported)")
    return _with_requirements(b)
