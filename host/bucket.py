"""The controller's side of pull mode: what it writes to, and reads from, the object store.
It never connects to a board: boards read ``desired/`` and ``bundles/`` and write ``status/``
(layout and document formats: device/desired.py).

* :meth:`Bucket.publish_bundle` uploads a bundle as one reproducible tar named by its sha256
  (``bundles/SHA.tar``): nothing is sent when that object is already there.
* :meth:`Bucket.put_desired` signs a cohort's desired state (namespace ``edgedeploy-desired``)
  and writes it; :func:`desired_after` (pure) computes the next one: a model's target for some
  boards (a rollout wave, an abort putting boards back) or for the whole cohort (``"*"``).
* :meth:`Bucket.statuses` reads every board's status: one LIST, then a GET only for the objects
  whose ETag changed since the last read.

The S3 client is device/s3.py (standard library, SigV4), the one the boards use; the host's
credentials come from AWS's usual variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_REGION) unless given. No boto3: a dependency of ~80 MB for a dozen
request kinds that the board needs to speak anyway.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..device import desired as dz
from ..device.s3 import Credentials, Location, S3Client, parse_location
from ..device.trust import NS_DESIRED
from ..errors import InputError, ObjectMissing
from .bundle import Bundle
from .signing import sign

if TYPE_CHECKING:
    from ..targets import Fleet


DIRECT_READS = 400  # statuses(only=…) of at most this many boards: a GET each, no LIST
READERS = 8         # … that many at a time


@dataclass(frozen=True)
class Via:
    """Where pull mode's objects go: the prefix, the controller's credentials, the key that
    signs bundles and desired states."""
    location: Location
    signing_key: str | None
    creds: Credentials | None = None

    @classmethod
    def resolve(cls, url: str | None, endpoint: str | None, fleet: "Fleet", *,
                need_key: bool = True) -> "Via":
        """URL / ENDPOINT, else the fleet file's [pull] store / endpoint; its signing_key
        (NEED_KEY: an InputError without one); the credentials in AWS's usual variables."""
        store = url or fleet.pull.store
        if not store:
            raise InputError(f"{fleet.path}: no object store named",
                             hint="pass --via/--store s3://BUCKET/PREFIX, or set [pull] store "
                                  "in the fleet file")
        if need_key and not fleet.signing_key:
            raise InputError(f"{fleet.path}: pull mode needs signing_key (boards take only "
                             f"signed bundles and desired states)",
                             hint='signing_key = "~/.ssh/id_ed25519" at the top of the file')
        return cls(parse_location(store, endpoint or fleet.pull.endpoint), fleet.signing_key,
                   Credentials.from_env())

    def bucket(self) -> "Bucket":
        return Bucket(self.location, self.creds, signing_key=self.signing_key)


@dataclass(frozen=True)
class Published:
    key: str        # relative to the prefix: bundles/SHA.tar
    sha256: str
    size: int
    uploaded: int   # bytes sent now (0: it was there already)


def next_serial(old: int | None, now: float) -> int:
    """Pure: a serial above OLD, in microseconds since the epoch when the clock allows."""
    return max(int(now * 1_000_000), (old or 0) + 1)


def desired_after(doc: dz.Desired | None, cohort: str, target: dz.Target,
                  boards: list[str] | None, *, now: float) -> dz.Desired:
    """Pure: DOC with TARGET for BOARDS (None: the whole cohort, "*"). The model's other
    targets lose those boards (one that names no board any more goes; a "*" one stays the
    default for the rest)."""
    old = list(doc.targets) if doc else []
    out: list[dz.Target] = []
    if boards is None:
        out = [t for t in old if t.model != target.model]
        out.append(replace(target, boards=("*",)))
    else:
        moved = set(boards)
        same = None
        for t in old:
            if t.model != target.model:
                out.append(t)
                continue
            if replace(t, boards=()) == replace(target, boards=()) and "*" not in t.boards:
                same = t
                continue
            rest = tuple(b for b in t.boards if b not in moved)
            if rest:
                out.append(replace(t, boards=rest))
        names = sorted(moved | (set(same.boards) if same else set()))
        if names:
            out.append(replace(target, boards=tuple(names)))
    return dz.Desired(cohort, next_serial(doc.serial if doc else None, now), tuple(out),
                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))


def desired_without(doc: dz.Desired | None, cohort: str, model: str, version: str,
                    boards: list[str], *, now: float) -> dz.Desired:
    """Pure: DOC with BOARDS taken off MODEL@VERSION's explicit targets (they fall back to the
    cohort's "*" target, if any; a target that names no board any more goes)."""
    gone = set(boards)
    out = []
    for t in (doc.targets if doc else ()):
        if t.model == model and t.version == version and "*" not in t.boards:
            rest = tuple(b for b in t.boards if b not in gone)
            if rest:
                out.append(replace(t, boards=rest))
        else:
            out.append(t)
    return dz.Desired(cohort, next_serial(doc.serial if doc else None, now), tuple(out),
                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))


def stale(status: dz.Status, now: float, polls: int = 3, default_every: float = 60.0
          ) -> tuple[float, bool]:
    """Pure: (age in seconds, whether the board has been silent for more than POLLS polls)."""
    age = max(0.0, now - float(status.ts))
    every = status.poll_every or default_every
    return age, age > polls * every


class Bucket:
    """A pull-mode prefix, as the controller sees it (one thread; open one per thread)."""

    def __init__(self, loc: Location, creds: Credentials | None = None, *,
                 signing_key: str | os.PathLike | None = None, timeout: float = 30.0) -> None:
        self.loc = loc
        self.creds = creds if creds is not None else Credentials.from_env()
        self.signing_key = signing_key
        self.client = S3Client(loc.endpoint, self.creds, timeout=timeout)
        self._status_cache: dict[str, tuple[str, dz.Status]] = {}
        self.warnings: list[str] = []

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Bucket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def publish_bundle(self, bundle: Bundle) -> Published:
        with tempfile.TemporaryDirectory(prefix="edgedeploy-publish-") as tmp:
            tar = bundle.write_tar(Path(tmp) / "bundle.tar")
            h = hashlib.sha256()
            with open(tar, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            sha, size = h.hexdigest(), tar.stat().st_size
            key = dz.bundle_key(sha)
            there = self.client.head(self.loc.bucket, self.loc.key(key))
            if there is not None and int(there.headers.get("content-length", -1)) == size:
                return Published(key, sha, size, 0)
            with open(tar, "rb") as f:
                self.client.put(self.loc.bucket, self.loc.key(key), f,
                                content_type="application/x-tar", payload_sha256=sha)
            return Published(key, sha, size, size)

    def desired(self, cohort: str) -> dz.Desired | None:
        """The cohort's desired state, to build the next one on — when its signature is the
        signing key's (or the key's public half isn't at hand to tell). One that doesn't
        verify (changed in the bucket: every board refuses it too) or doesn't parse is not
        built on: None, and a line in ``warnings``."""
        from .signing import signed_by

        where = f"{self.loc}/{dz.desired_key(cohort)}"
        try:
            r = self.client.get(self.loc.bucket, self.loc.key(dz.desired_key(cohort)))
        except ObjectMissing:
            return None
        try:
            doc, sig = dz.open_envelope(r.body, where)
            if self.signing_key and signed_by(doc, sig, self.signing_key, NS_DESIRED) is False:
                raise InputError(f"{where}: not signed by {self.signing_key} (changed in the "
                                 f"bucket?)")
            return dz.Desired.from_json(doc, where)
        except InputError as exc:
            self.warnings.append(f"{exc}; writing a new one from scratch")
            return None

    def put_desired(self, doc: dz.Desired) -> str | None:
        """Sign DOC and write it; its ETag."""
        if self.signing_key is None:
            raise InputError("pull mode needs a signing key: boards take only signed desired "
                             "states", hint="set signing_key in the fleet file")
        text = doc.to_json()
        env = dz.envelope(text, sign(text.encode(), self.signing_key, NS_DESIRED))
        r = self.client.put(self.loc.bucket, self.loc.key(dz.desired_key(doc.cohort)), env,
                            content_type="application/json")
        return r.etag

    def statuses(self, only: set[str] | None = None) -> dict[str, dz.Status]:
        """board → its last status. With ONLY (a rollout reads its wave's) of at most
        DIRECT_READS boards: a conditional GET each, READERS at a time (304 while unchanged;
        a LIST would page through every board of the prefix); else one LIST per 1000 boards
        and a GET only for the objects whose ETag changed."""
        if only is not None and len(only) <= DIRECT_READS:
            return self._read_each(sorted(only))
        prefix = self.loc.key("status") + "/"
        out: dict[str, dz.Status] = {}
        for obj in self.client.list(self.loc.bucket, prefix):
            rest = obj.key[len(prefix):]
            board, _, leaf = rest.partition("/")
            if leaf != "status.json" or not board or (only is not None and board not in only):
                continue
            cached = self._status_cache.get(obj.key)
            if cached and cached[0] == obj.etag:
                out[board] = cached[1]
                continue
            st = self._status_of(board)
            if st is not None:
                out[board] = st
        return out

    def _read_each(self, boards: list[str]) -> dict[str, dz.Status]:
        """A conditional GET per board, READERS at a time (a kept-alive client each)."""
        if len(boards) <= 1:
            return {b: st for b in boards if (st := self._status_of(b)) is not None}
        import threading
        from concurrent.futures import ThreadPoolExecutor

        local = threading.local()
        made: list[S3Client] = []

        def one(board: str) -> tuple[str, dz.Status | None]:
            c = getattr(local, "c", None)
            if c is None:
                c = local.c = S3Client(self.loc.endpoint, self.creds,
                                       timeout=self.client.timeout)
                made.append(c)
            return board, self._status_of(board, c)
        try:
            with ThreadPoolExecutor(max_workers=min(READERS, len(boards))) as pool:
                return {b: st for b, st in pool.map(one, boards) if st is not None}
        finally:
            for c in made:
                c.close()

    def _status_of(self, board: str, client: S3Client | None = None) -> dz.Status | None:
        key = self.loc.key(dz.status_key(board))
        cached = self._status_cache.get(key)
        try:
            r = (client or self.client).get(self.loc.bucket, key,
                                            if_none_match=cached[0] if cached else None)
            if r.status == 304 and cached:
                return cached[1]
            st = dz.Status.from_json(r.body, f"{self.loc.bucket}/{key}")
        except (ObjectMissing, InputError):
            return None  # none yet, gone, or garbage: no status for that board
        if st.board != board:
            return None  # a board writes only its own prefix; a mismatch is not its report
        self._status_cache[key] = (r.etag or "", st)
        return st
