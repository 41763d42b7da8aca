"""What a push sends a board for a model it doesn't hold: the whole file, or a delta against
versions of the same model the board already stores (host/delta.py builds it,
device/delta.py applies it on the board).

The board's ``state`` lists its stored versions with each model file's sha256; the bytes of
those this host has sent before are in its model cache (host/model_cache.py). A delta is sent
when the board holds an earlier version this host has, and the delta is smaller than the file
(``plan_transfer``); otherwise the full file. ``choose_bases`` is the pure part; ``Deltas``
builds once per content (a fleet push to boards that hold the same versions builds one delta)
and keeps what was pushed for next time.

Pull mode (boards fetching bundles from an object store) is not in this tree yet; its hook is
``write_delta_tar``: a bundle tar with MODEL.delta in place of MODEL, which the board's install
takes as it takes any tar (tests/device/test_delta_install.py installs one). A publisher would
put it beside the full bundle, named by the target's and the base's model sha256, and list it
in the signed desired state; a board holding that base fetches it first and falls back to the
full bundle on any refusal.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..device import protocol
from ..device.delta_format import SUFFIX as DELTA_SUFFIX
from ..errors import InputError
from .bundle import Bundle
from .delta import Base, Delta, TransferPlan, build_delta, plan_transfer
from .model_cache import ModelCache

MAX_BASES = 3
MEMO = 16  # deltas kept per process (a fleet push reuses them across boards)


def choose_bases(entry: protocol.ModelEntry | None, target_sha256: str
                 ) -> list[protocol.VersionEntry]:
    """Pure: the board's stored versions of the model a delta may be built against, most
    preferred first — current, previous, then the others, newest first — each whole, with
    its sha256 known and other than the target's."""
    if entry is None:
        return []
    usable = [v for v in entry.versions
              if v.error is None and v.sha256 and v.sha256 != target_sha256]
    rank = {entry.current: 0, entry.previous: 1}
    order = {v.version: i for i, v in enumerate(entry.versions)}  # the store lists oldest first
    return sorted(usable, key=lambda v: (rank.get(v.version, 2), -order[v.version]))


@dataclass
class Offer:
    """What to send one board: the plan, and the delta when the plan is ``delta``."""

    plan: TransferPlan
    delta: Delta | None = None


class Deltas:
    """Deltas for pushes, built against this host's model cache; thread-safe (push_many)."""

    def __init__(self, cache: ModelCache | None = None, *, enabled: bool = True) -> None:
        self.cache = cache or ModelCache()
        self.enabled = enabled
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, tuple[str, ...]], Delta | InputError] = {}
        self._file: tuple[tuple, bytes | None] | None = None  # the last model file read
        self._bases: dict[str, bytes] = {}  # recent base versions' bytes, by sha256

    def offer(self, bundle: Bundle, entry: protocol.ModelEntry | None) -> Offer:
        """Full file or delta, for a board whose store holds ENTRY of this model."""
        full = bundle.manifest.size
        if not self.enabled:
            return Offer(plan_transfer(full, None, "deltas are off (--no-delta)"))
        candidates = choose_bases(entry, bundle.manifest.sha256)
        if not candidates:
            return Offer(plan_transfer(full, None, "the board holds no earlier version of "
                                                   "the model"))
        bases = []
        for v in candidates:
            data = self._base_bytes(v.sha256 or "")
            if data is not None:
                bases.append(Base(bundle.name, v.version, data))
            if len(bases) == MAX_BASES:
                break
        if not bases:
            return Offer(plan_transfer(full, None, "this host has none of the versions the "
                                                   "board holds (pushed from elsewhere)"))
        key = (bundle.manifest.sha256, tuple(f"{b.version}:{b.sha256}" for b in bases))
        with self._lock:
            new = self._model_bytes(bundle)
            if new is None:
                return Offer(plan_transfer(full, None, f"{bundle.model_path} changed since it "
                                                       f"was loaded (the board's check will "
                                                       f"say so)"))
            got = self._memo.get(key)
            if got is None:
                try:
                    got = build_delta(new, bases)
                except InputError as exc:  # not a TFLite flatbuffer (e.g. a damaged base)
                    got = exc
                self._memo[key] = got
                while len(self._memo) > MEMO:
                    self._memo.pop(next(iter(self._memo)))
        if isinstance(got, InputError):
            return Offer(plan_transfer(full, None, f"no delta: {got}"))
        plan = plan_transfer(full, got)
        return Offer(plan, got if plan.kind == "delta" else None)

    def _base_bytes(self, sha256: str) -> bytes | None:
        """A stored version's bytes from the cache, read and checked once per process while
        pushes keep asking for it (a fleet's boards mostly hold the same versions)."""
        with self._lock:
            if sha256 in self._bases:
                self._bases[sha256] = self._bases.pop(sha256)  # most recent last
                return self._bases[sha256]
        data = self.cache.get(sha256)
        if data is not None:  # (a miss is cheap: no file)
            with self._lock:
                self._bases[sha256] = data
                while len(self._bases) > 2 * MAX_BASES:
                    self._bases.pop(next(iter(self._bases)))
        return data

    def _model_bytes(self, bundle: Bundle) -> bytes | None:
        """The model file's bytes if they are still the manifest's (read and hashed once per
        file state, not once per board); None when the file changed."""
        st = bundle.model_path.stat()
        state = (str(bundle.model_path), st.st_mtime_ns, st.st_size, bundle.manifest.sha256)
        if self._file is not None and self._file[0] == state:
            return self._file[1]
        data = bundle.model_path.read_bytes()
        ok = hashlib.sha256(data).hexdigest() == bundle.manifest.sha256
        self._file = (state, data if ok else None)
        return self._file[1]

    def clear(self) -> None:
        """Forget the deltas built and the files read (the next offer builds afresh)."""
        with self._lock:
            self._memo.clear()
            self._bases.clear()
            self._file = None

    def remember(self, bundle: Bundle) -> None:
        """The model file a board now holds, for later deltas."""
        if self.enabled:
            self.cache.put(bundle.model_path, bundle.manifest.sha256)


def delta_files(bundle: Bundle, delta: Delta | None) -> list[tuple[str, Path | bytes]]:
    """What travels for BUNDLE (relative path, file or bytes): the manifest (and its signature,
    when signed), then every file, the model file replaced by MODEL.delta when DELTA is given
    (the agent's install rebuilds the model from it; device/intake.py)."""
    files: list[tuple[str, Path | bytes]] = list(bundle.meta_files().items())
    for rel, path in bundle.files().items():
        if delta is not None and rel == bundle.manifest.file:
            files.append((rel + DELTA_SUFFIX, delta.data))
        else:
            files.append((rel, path))
    return files


def write_delta_tar(bundle: Bundle, delta: Delta, dest: Path) -> Path:
    """BUNDLE as a tar carrying DELTA in place of its model file: what pull mode can publish
    beside the full bundle for boards that hold a base (``edgedeploy-agent install`` takes a
    tar like a folder). Deterministic: same inputs, same bytes."""
    import io
    import tarfile

    with tarfile.open(dest, "w") as tf:
        for rel, data in sorted(delta_files(bundle, delta), key=lambda f: f[0]):
            raw = data if isinstance(data, bytes) else data.read_bytes()
            ti = tarfile.TarInfo(rel)
            ti.size, ti.mode, ti.mtime = len(raw), 0o644, 0
            tf.addfile(ti, io.BytesIO(raw))
    return dest


_shared: Deltas | None = None
_shared_lock = threading.Lock()


def shared() -> Deltas:
    """The process's Deltas (one cache and memo for every push it makes); off when
    ``EDGEDEPLOY_NO_DELTA`` is set or after ``configure(enabled=False)`` (``--no-delta``)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Deltas(enabled=not os.environ.get("EDGEDEPLOY_NO_DELTA"))
        return _shared


def configure(*, enabled: bool) -> None:
    """Deltas on or off for every push this process makes from now on."""
    shared().enabled = enabled
