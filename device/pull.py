"""Pull mode on the board: one poll of the object store (``edgedeploy-agent pull``; run it from
cron, a systemd timer, or ``agentd --pull-every S``). Standard library + the store's public API.

One poll:

1. GET ``desired/COHORT.json`` with If-None-Match (one small GET, answered 304, when nothing
   changed). A new document is opened (device/desired.py), its SSH signature checked against
   the board's allowed signers (device/trust.py), its cohort and serial checked (a serial lower
   than one taken before is a replay: refused). A refused document is remembered by its ETag
   and the board goes on with the last one it took.
2. For each model the document gives this board (pure: ``desired.plan_model``): download the
   bundle into ``STORE/pull/downloads/SHA.part`` (device/fetch.py: a cut download resumes with
   a Range GET) and check its sha256 against the document; check its manifest against the
   target and its release number (anti-downgrade); install it into the store (which checks
   the signature; hash-checked, not active); run the target's gates on the board
   (device/measure.py: ``eval`` on the bundle's gate data and ``bench``, each in an agent
   process of its own); then activate it (the store checks signature and release again) — or
   keep the old version when a gate fails.
3. PUT ``status/BOARD/status.json`` (device/desired.py: Status) when anything changed, and at
   least every REPORT_EVERY polls, so the controller can tell a silent board.

A poll never leaves the board without a working model: the store's switch is atomic, nothing is
activated before it verified and passed its gates, and an error in one model's step is recorded
in that model's result (``failed``: tried again next poll; ``refused`` / ``gate_failed``: not
retried for the same target). When the object store can't be reached the poll raises
ObjectStoreUnreachable after saving what it learnt; device/pullloop.py then waits longer
each time (doubling up to 32 polls' time, 10 min at most, with jitter), and the board keeps
running what it runs.

A board pulls only with allowed signers (STORE/trust/allowed_signers): what it reads from the
bucket needs no trust beyond the signatures.

Files (STORE/pull/)::

    state.json          {"etag", "serial", "document", "refused": {"etag", "error"} | null,
                         "results": {MODEL: {...as in status...}}, "reported": DIGEST,
                         "last_report": TS, "polls": N, "since_report": N}
    downloads/SHA.part  a bundle being downloaded
    .lock               flock'd by a poll: one at a time per store
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import (Conflict, DowngradeRefused, EdgeDeployError, HashMismatch, InputError,
                      ObjectMissing, ObjectStoreUnreachable, SignatureRefused, StoreError,
                      UnsafeBundle)
from . import desired as dz
from . import trust
from .fetch import bundle_manifest, fetch_bundle
from .fsio import write_atomic
from .gates import GATE_FILE, check_gates, parse_gate
from .measure import Measure, agent_measure
from .s3 import Credentials, Location, S3Client
from .store import Store

PULL_DIR = "pull"
STATE = "state.json"


@dataclass
class PullConfig:
    source: Location
    board: str
    cohort: str = "all"
    creds: Credentials | None = None
    timeout: float = 15.0
    poll_every: float | None = None   # said in the status, for the controller's staleness
    report_every: int = 1             # polls between reports when nothing changed
    allow_downgrade: bool = False
    runtime: str | None = None


@dataclass
class PollResult:
    status: dz.Status
    reported: bool
    actions: dict[str, str] = field(default_factory=dict)   # model → what was done
    not_modified: bool = False                              # the desired state was a 304


@dataclass
class PullState:
    etag: str | None = None
    serial: int | None = None
    document: str | None = None
    refused: dict | None = None
    results: dict[str, dict] = field(default_factory=dict)
    reported: str | None = None
    last_report: float | None = None
    polls: int = 0
    since_report: int = 0

    @classmethod
    def load(cls, path: Path) -> "PullState":
        try:
            d = json.loads(path.read_text())
            return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError):
            return cls()  # unreadable: start afresh (the desired state is fetched again)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.__dict__, sort_keys=True).encode())


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# -- acting ---------------------------------------------------------------------------------
class _PollLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> "_PollLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise Conflict(f"another pull is running on the store {self.path.parent.parent}",
                           hint="one poll at a time; this one was skipped")
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class Poll:
    """One poll (see the module docstring); :func:`poll` runs it."""

    def __init__(self, cfg: PullConfig, store: Store, client: S3Client,
                 measure: Measure, now: Callable[[], float]) -> None:
        self.cfg, self.store, self.client, self.measure, self.now = \
            cfg, store, client, measure, now
        self.dir = store.root / PULL_DIR
        self.state = PullState.load(self.dir / STATE)
        self.downloaded = 0
        self.doc_error: str | None = None

    # 1. the desired state
    def desired(self) -> tuple[dz.Desired | None, bool]:
        st, loc = self.state, self.cfg.source
        key = loc.key(dz.desired_key(self.cfg.cohort))
        what = f"desired state s3://{loc.bucket}/{key}"
        known = (st.refused or {}).get("etag") or st.etag
        try:
            r = self.client.get(loc.bucket, key, if_none_match=known)
        except ObjectMissing:
            return None, False
        if r.status == 304:
            if st.refused and st.refused.get("etag") == known:
                self.doc_error = st.refused.get("error")
            return self._cached(), True
        try:
            doc_bytes, sig = dz.open_envelope(r.body, what)
            trust.verify(doc_bytes, sig, self.store.root, trust.NS_DESIRED, what)
            doc = dz.Desired.from_json(doc_bytes, what)
            if doc.cohort != self.cfg.cohort:
                raise SignatureRefused(f"{what}: signed for cohort {doc.cohort}, this board "
                                       f"is in {self.cfg.cohort}")
            if st.serial is not None and doc.serial < st.serial:
                raise SignatureRefused(f"{what}: serial {doc.serial} is older than {st.serial}, "
                                       f"taken before (a replayed document)")
        except (InputError, StoreError) as exc:
            self.doc_error = f"desired state refused: {exc}"
            st.refused = {"etag": r.etag, "error": self.doc_error}
            return self._cached(), False
        st.etag, st.serial, st.document, st.refused = r.etag, doc.serial, doc_bytes.decode(), None
        return doc, False

    def _cached(self) -> dz.Desired | None:
        if not self.state.document:
            return None
        try:
            return dz.Desired.from_json(self.state.document, "the last desired state")
        except InputError:
            return None

    # 2. one model
    def apply(self, t: dz.Target, serial: int) -> str:
        model = t.model
        ptr = self.store.pointer(model)
        installed = set(self.store.versions(model))
        last = self.state.results.get(model)
        step = dz.plan_model(t, ptr.current, ptr.previous, installed, last)
        base = {"version": t.version, "release": t.release, "sha256": t.sha256,
                "target": t.digest(), "serial": serial, "rollout": t.rollout,
                "figures": None, "old_figures": None, "error": None, "downgrade": False}
        if step.action == "skip":
            if t.rollback and (not last or last.get("target") != base["target"]):
                self._result(model, {**base, "error": step.reason}, "refused")
            return f"skip: {step.reason}"
        if step.action == "none":
            if not last or last.get("target") != base["target"] \
                    or last.get("outcome") != "committed":
                self._result(model, base, "committed")
            return "none"
        downgrade = t.allow_downgrade or self.cfg.allow_downgrade
        try:
            if step.action == "rollback":  # to a version it ran before, as the document says
                with self.store.locked():
                    self.store.activate(model, t.version, allow_downgrade=True)
                self._result(model, {**base, "downgrade": True}, "committed")
                return "rolled back"
            if step.action == "install":
                self._install(t, ptr.previous, downgrade)
            else:  # installed before (perhaps by a push): its release, before any measuring
                m = self.store.manifest(model, t.version)
                trust.check_release(self.store.root, model, t.version, m.release,
                                    previous=ptr.previous, allow_downgrade=downgrade)
            figures = old = None
            if t.measures:
                figures, old, failed = self._gates(t, ptr.current)
                if failed:
                    self._result(model, {**base, "figures": figures, "old_figures": old,
                                         "error": "gate failed: " + "; ".join(failed)},
                                 "gate_failed")
                    return "gate failed"
            with self.store.locked():  # the store checks the signature and release again
                self.store.activate(model, t.version, allow_downgrade=downgrade)
            self._result(model, {**base, "figures": figures, "old_figures": old}, "committed")
            return "activated"
        except (SignatureRefused, DowngradeRefused, HashMismatch, UnsafeBundle,
                InputError) as exc:
            self._result(model, {**base, "error": str(exc)}, "refused")
            return "refused"
        except EdgeDeployError as exc:
            self._result(model, {**base, "error": str(exc)}, "failed")
            if isinstance(exc, ObjectStoreUnreachable):
                raise
            return "failed"
        except OSError as exc:
            self._result(model, {**base, "error": f"{exc.filename or self.store.root}: "
                                                   f"{exc.strerror or exc}"}, "failed")
            return "failed"

    def _result(self, model: str, data: dict, outcome: str) -> None:
        self.state.results[model] = {**data, "outcome": outcome, "time": _iso(self.now())}

    def _install(self, t: dz.Target, previous: str | None, downgrade: bool) -> None:
        """Download, check the manifest against the target and its release, install (the
        store checks the signature: nothing unsigned is stored)."""
        from .manifest import Manifest

        tar = fetch_bundle(self.client, self.cfg.source, t, self.dir / "downloads",
                           self.store.root, self._counted)
        what = f"bundle {t.bundle} ({t.model} {t.version})"
        raw, _ = bundle_manifest(tar)
        try:
            m = Manifest.from_dict(json.loads(raw), what)
        except ValueError as exc:
            raise InputError(f"{what}: manifest is not JSON ({exc})") from exc
        if (m.name, m.version, m.release) != (t.model, t.version, t.release):
            raise InputError(f"{what}: its manifest says {m.name} {m.version} release "
                             f"{m.release}, the desired state {t.model} {t.version} release "
                             f"{t.release}")
        trust.check_release(self.store.root, t.model, t.version, m.release, previous=previous,
                            allow_downgrade=downgrade)
        with self.store.locked():
            self.store.install(tar)
        tar.unlink(missing_ok=True)

    def _counted(self, n: int) -> None:
        self.downloaded += n

    def _gates(self, t: dz.Target, current: str | None
               ) -> tuple[dict | None, dict | None, list[str]]:
        gates = [parse_gate(g) for g in t.gates]
        data_file = self.store.version_dir(t.model, t.version) / GATE_FILE
        data = data_file if data_file.is_file() else None
        reference = data is not None and _has_outputs(data)
        relative = t.max_accuracy_drop is not None or t.max_latency_increase is not None
        try:
            old = self.measure(t.model, current, data, reference, t.bench_runs) \
                if relative and current else None
            figures = self.measure(t.model, t.version, data, reference, t.bench_runs)
        except EdgeDeployError as exc:
            return None, None, [f"gate not measured: {exc}"]
        return figures, old, check_gates(gates, figures, old,
                                         max_accuracy_drop=t.max_accuracy_drop,
                                         max_latency_increase=t.max_latency_increase)

    # 3. the report
    def status(self, serial: int | None) -> dz.Status:
        models = {}
        for name in self.store.names():
            ptr = self.store.pointer(name)
            release = None
            if ptr.current:
                try:
                    release = self.store.manifest(name, ptr.current).release
                except EdgeDeployError:
                    pass
            models[name] = {"current": ptr.current, "previous": ptr.previous,
                            "release": release}
        from .sysinfo import board_info

        bi = board_info(self.store.root, self.cfg.runtime, cached=True)
        info = {"arch": bi["arch"], "python": bi["python"], "runtime": bi["runtime"],
                "runtime_error": bi["runtime_error"], "numpy": bi["numpy"],
                "free_bytes": bi["store"].get("free_bytes")}
        now = self.now()
        return dz.Status(board=self.cfg.board, info=info, cohort=self.cfg.cohort, time=_iso(now), ts=now,
                         poll_every=self.cfg.poll_every, serial=serial,
                         agent=bi["agent"]["content_hash"][:12],
                         signers=len(trust.signer_entries(self.store.root)), models=models,
                         results=dict(self.state.results), error=self.doc_error,
                         downloaded_bytes=self.downloaded)

    def report(self, status: dz.Status) -> bool:
        st = self.state
        digest = status.digest()
        if digest == st.reported and st.since_report + 1 < self.cfg.report_every:
            st.since_report += 1
            return False
        loc = self.cfg.source
        self.client.put(loc.bucket, loc.key(dz.status_key(self.cfg.board)), status.to_json(),
                        content_type="application/json")
        st.reported, st.last_report, st.since_report = digest, status.ts, 0
        return True

    def run(self) -> PollResult:
        if not trust.requires_signature(self.store.root):
            raise SignatureRefused(
                f"this board has no allowed signers ({trust.signers_file(self.store.root)}): "
                f"it pulls only what a trusted key signed",
                hint="`edgedeploy trust BOARD --signer KEY.pub` first")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state.polls += 1
        actions: dict[str, str] = {}
        try:
            doc, not_modified = self.desired()
            if doc is not None:
                for model, t in sorted(doc.for_board(self.cfg.board).items()):
                    actions[model] = self.apply(t, doc.serial)
            status = self.status(doc.serial if doc else None)
            reported = self.report(status)
        finally:
            self.state.save(self.dir / STATE)
        return PollResult(status, reported, actions, not_modified)


def _has_outputs(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return "outputs.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def poll(cfg: PullConfig, store: Store, *, client: S3Client | None = None,
         measure: Measure | None = None, now: Callable[[], float] = time.time) -> PollResult:
    """One poll (module docstring). Raises ObjectStoreUnreachable when the store can't be
    reached (state saved; the board keeps its models), Conflict when another poll runs."""
    (store.root / PULL_DIR).mkdir(parents=True, exist_ok=True)
    own = client is None
    c = client or S3Client(cfg.source.endpoint, cfg.creds, timeout=cfg.timeout)
    try:
        with _PollLock(store.root / PULL_DIR / ".lock"):
            return Poll(cfg, store, c, measure or agent_measure(store.root, cfg.runtime),
                        now).run()
    finally:
        if own:
            c.close()

