"""Rollouts through an object store (pull mode): the same plan as SSH rollouts — canary, waves,
gates, ``--max-failures``, the journal with ``status`` / ``resume`` / ``cancel`` — carried out
by moving boards in their cohort's signed desired state and reading their status objects
(device/desired.py has the formats). The controller never connects to a board.

Per wave: each board is journalled ``staging`` (with its old version, from its last status),
then moved to the new target in its cohort's desired state (one signed write per cohort); its
status is then read until it tells what it did with that document (host/pullwatch.py), or
``--timeout`` passes:

    the board committed the new version (gates passed on the board)   → committed
    a gate failed on the board (it never activated it; old kept)      → rolled_back
    refused (signature, release, content), failed, or silent          → failed

The failure rule is the SSH rollouts' (policy.py). An abort moves every board this rollout
moved back in the desired state — to its old version as a rollback target (kept on the board,
no bundle, no gates); committed boards are journalled ``rolling_back`` and ``rolled_back``
once they report the old version, ``stranded`` if they don't within ``--timeout`` (the desired
state says the old version: such a board goes back when it next polls; ``rollout resume``
confirms it). A board moved, silent, and back later catches up with whatever the desired state
then says.

Resume: the journal says which boards were moved; their desired state is written again (a new
serial) and their statuses read. The journal's state names and transitions are journal.py's;
pull mode adds staging → committed | rolled_back (the board stages, gates and activates by
itself).
"""

from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

from ...device import desired as dz
from ...device import protocol
from ...errors import InputError, ObjectStoreUnreachable
from ...targets import Board
from ..bucket import Published, Via, desired_after, desired_without, stale
from ..bundle import Bundle
from ..deploy import board_problems, model_problems
from ..pullwatch import observe, observe_back
from ..signing import sign_bundle
from .journal import FINAL, BoardRow, BoardState, Journal, RolloutState
from .policy import Options, rollout_end, wave_verdict

S = BoardState
T = TypeVar("T")
Emit = Callable[[dict], None]
READ_EVERY = 1.0    # seconds between two reads of the wave's statuses
WRITE_RETRIES = 5   # a write or read the rollout can't go on without: 1+2+4+8+16 s of retries


def cohort_of(board: Board) -> str:
    return getattr(board, "cohort", None) or "all"


class PullRunner:
    """Runs (or resumes) one pull-mode rollout from its journal."""

    def __init__(self, journal: Journal, rollout_id: str, boards: dict[str, Board],
                 bundle: Bundle, options: Options, via: Via, published: Published,
                 emit: Emit | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.journal, self.rollout_id = journal, rollout_id
        self.boards, self.bundle, self.options, self.via = boards, bundle, options, via
        self.emit = emit or (lambda event: None)
        self.clock, self.sleep = clock, sleep
        self.bucket = via.bucket()
        self.target = dz.Target(
            model=bundle.name, version=bundle.version, sha256=published.sha256,
            size=published.size, bundle=published.key, release=bundle.manifest.release,
            gates=tuple(options.gates), max_accuracy_drop=options.max_accuracy_drop,
            max_latency_increase=options.max_latency_increase, bench_runs=options.bench_runs,
            rollout=rollout_id)

    def record(self, name: str, state: BoardState, **cols) -> None:
        self.journal.set_board(self.rollout_id, name, state, **cols)
        self.emit({"board": name, "state": state.value,
                   **{k: v for k, v in cols.items() if k in ("error", "old")}})

    def rows(self) -> dict[str, BoardRow]:
        return {b.board: b for b in self.journal.boards(self.rollout_id)}

    # -- the desired state -----------------------------------------------------------------
    def move(self, names: list[str], target: dz.Target | None = None) -> int:
        """Put NAMES on TARGET (the new version by default) in their cohorts' desired states;
        the highest serial written."""
        target = target or self.target
        serial = 0
        by_cohort: dict[str, list[str]] = {}
        for n in names:
            by_cohort.setdefault(cohort_of(self.boards[n]), []).append(n)
        for cohort, members in sorted(by_cohort.items()):
            def write() -> dz.Desired:
                doc = desired_after(self.bucket.desired(cohort), cohort, target,
                                    sorted(members), now=self.clock())
                self.bucket.put_desired(doc)
                return doc
            serial = max(serial, self.retried(write, f"writing desired/{cohort}.json").serial)
        self.warn()
        return serial

    def warn(self) -> None:
        for w in self.bucket.warnings:
            self.emit({"warning": w})
        self.bucket.warnings.clear()

    def move_back(self, rows: list[BoardRow]) -> tuple[int, list[str]]:
        """Every board in ROWS back to its old version (a rollback target), or, with none,
        off the new target; (the highest serial written, the boards with no old version)."""
        by_cohort: dict[str, list[BoardRow]] = {}
        for r in rows:
            by_cohort.setdefault(cohort_of(self.boards[r.board]), []).append(r)
        serial, orphans = 0, []
        for cohort, members in sorted(by_cohort.items()):
            doc = self.retried(lambda: self.bucket.desired(cohort), f"reading desired/{cohort}")
            olds: dict[str, list[str]] = {}
            for r in members:
                if r.old:
                    olds.setdefault(r.old, []).append(r.board)
                else:
                    orphans.append(r.board)
            now = self.clock()
            for old, names in sorted(olds.items()):
                back = dz.Target(self.bundle.name, old, "", 0, "", rollback=True,
                                 rollout=self.rollout_id)
                doc = desired_after(doc, cohort, back, sorted(names), now=now)
            doc = desired_without(doc, cohort, self.bundle.name, self.bundle.version,
                                  [n for n in orphans if n in {m.board for m in members}],
                                  now=now)
            final = doc
            self.retried(lambda: self.bucket.put_desired(final), f"writing desired/{cohort}")
            serial = max(serial, doc.serial)
        self.warn()
        return serial, orphans

    # -- waiting for the boards -------------------------------------------------------------
    def read(self, names: set[str]) -> dict[str, dz.Status] | None:
        """The statuses of NAMES; None when the store did not answer (said as a warning: the
        time lost is not counted against the boards)."""
        try:
            return self.bucket.statuses(only=names)
        except ObjectStoreUnreachable as exc:
            self.emit({"warning": f"reading statuses: {exc}; trying again"})
            return None

    def retried(self, step: Callable[[], T], what: str) -> T:
        """STEP, again while the store does not answer (RETRIES times, backing off); then the
        error (the journal has every board's state: `rollout resume` goes on)."""
        for attempt in range(WRITE_RETRIES + 1):
            try:
                return step()
            except ObjectStoreUnreachable as exc:
                if attempt == WRITE_RETRIES:
                    raise
                self.emit({"warning": f"{what}: {exc}; trying again"})
                self.sleep(min(2 ** attempt, 16))
        raise AssertionError("unreachable")

    def watch(self, names: list[str], serial: int, since: float) -> None:
        """Read the boards' statuses until each has told what it did, or --timeout passed."""
        waiting = set(names)
        while waiting:
            t0 = self.clock()
            statuses = self.read(waiting)
            if statuses is None:
                since += self.clock() - t0 + READ_EVERY  # the store's silence, not theirs
                self.sleep(READ_EVERY)
                continue
            now = self.clock()
            for n in sorted(waiting):
                obs = observe(statuses.get(n), self.target, serial, since=since, now=now,
                              wait=self.options.timeout)
                if obs.state == "waiting":
                    continue
                waiting.discard(n)
                if obs.state == "committed":
                    self.record(n, S.COMMITTED, figures=obs.figures,
                                old_figures=obs.old_figures)
                elif obs.state == "rolled_back":
                    self.record(n, S.ROLLED_BACK, figures=obs.figures,
                                old_figures=obs.old_figures, error=obs.error)
                else:
                    self.record(n, S.FAILED, error=obs.error)
            if waiting:
                self.sleep(READ_EVERY)

    def watch_back(self, names: list[str], old: dict[str, str | None], serial: int,
                   since: float) -> None:
        waiting = set(names)
        while waiting:
            t0 = self.clock()
            statuses = self.read(waiting)
            if statuses is None:
                since += self.clock() - t0 + READ_EVERY
                self.sleep(READ_EVERY)
                continue
            now = self.clock()
            for n in sorted(waiting):
                obs = observe_back(statuses.get(n), self.bundle.name, old[n], serial,
                                   since=since, now=now, wait=self.options.timeout)
                if obs.state == "waiting":
                    continue
                waiting.discard(n)
                row = self.journal.board(self.rollout_id, n)
                if obs.state == "rolled_back":
                    self.record(n, S.ROLLED_BACK, error=row.error)
                else:
                    self.record(n, S.STRANDED, error=f"{row.error}; {obs.error}")
            if waiting:
                self.sleep(READ_EVERY)

    # -- the whole rollout --------------------------------------------------------------------
    def cancelled(self) -> bool:
        return self.journal.rollout(self.rollout_id).state == RolloutState.CANCELLING

    def run(self) -> RolloutState:
        self.journal.set_rollout(self.rollout_id, RolloutState.RUNNING, pid=os.getpid())
        plan = self.journal.rollout(self.rollout_id).plan
        try:
            rows = self.rows()
            back = [r for r in rows.values() if r.state == S.ROLLING_BACK]
            if back:  # died while aborting: finish the abort
                self.put_back(back)
                r = self.journal.rollout(self.rollout_id)
                return self.finish(RolloutState.ABORTED, r.message or "aborted")
            for wave, names in enumerate(plan):
                rows = self.rows()
                todo = [n for n in names if rows[n].state not in FINAL]
                self.emit({"wave": wave, "boards": len(names), "todo": len(todo)})
                if not todo:
                    continue
                if self.cancelled():
                    return self.finish(RolloutState.CANCELLED, "cancelled before wave "
                                       f"{wave}{' (canary)' if wave == 0 else ''}")
                statuses = self.retried(lambda: self.bucket.statuses(only=set(todo)),
                                        "reading statuses")
                for n in todo:
                    if rows[n].state == S.PENDING:
                        st = statuses.get(n)
                        old = (st.models.get(self.bundle.name) or {}).get("current") \
                            if st else None
                        self.record(n, S.STAGING, old=old if old != self.bundle.version
                                    else None)
                since = self.clock()
                serial = self.move(todo)
                self.watch(todo, serial, since)
                verdict = self.verdict(wave)
                if verdict:
                    self.abort(verdict)
                    return self.finish(RolloutState.ABORTED, verdict)
            return self.finish(*rollout_end(self.journal.boards(self.rollout_id)))
        finally:
            self.bucket.close()

    def verdict(self, wave: int) -> str | None:
        return wave_verdict(self.journal.boards(self.rollout_id), wave,
                            self.options.max_failures, self.options.min_sample)

    def abort(self, why: str) -> None:
        """Every board this rollout moved goes back in the desired state; the committed ones
        are watched until they report their old version."""
        rows = self.rows()
        moved = [r for r in rows.values() if r.state not in (S.PENDING, S.SKIPPED)]
        for r in moved:
            if r.state == S.COMMITTED:
                self.record(r.board, S.ROLLING_BACK, error=f"rollout aborted: {why}")
        self.put_back(moved)

    def put_back(self, moved: list[BoardRow]) -> None:
        since = self.clock()
        serial, orphans = self.move_back(moved)
        rows = self.rows()
        going = [n for n, r in rows.items() if r.state == S.ROLLING_BACK]
        for n in [n for n in going if n in orphans]:
            self.record(n, S.STRANDED, error=f"{rows[n].error}; no previous version of "
                                             f"{self.bundle.name} to go back to: it stays on "
                                             f"{self.bundle.version}")
        going = [n for n in going if n not in orphans]
        self.watch_back(going, {n: rows[n].old for n in going}, serial, since)

    def repair(self) -> RolloutState:
        """An ended rollout: move its stranded boards back again and watch them."""
        try:
            stranded = [b for b in self.journal.boards(self.rollout_id)
                        if b.state == S.STRANDED]
            for b in stranded:
                self.record(b.board, S.ROLLING_BACK, error=b.error)
            self.put_back(stranded)
            r = self.journal.rollout(self.rollout_id)
            left = [b.board for b in self.journal.boards(self.rollout_id)
                    if b.state == S.STRANDED]
            return self.finish(r.state, (r.message or "") + (
                f"; still stranded: {', '.join(left)}" if left else
                f"; rollback completed on {', '.join(b.board for b in stranded)}"
                if stranded else ""))
        finally:
            self.bucket.close()

    def finish(self, state: RolloutState, message: str | None) -> RolloutState:
        self.journal.set_rollout(self.rollout_id, state, message)
        return state


def publish_signed(bundle: Bundle, via: Via, release: int | None = None
                   ) -> tuple[Bundle, Published]:
    """The bundle signed (its release: RELEASE, else from its manifest), uploaded
    content-addressed (nothing is sent when it is there already)."""
    if via.signing_key is None:
        raise InputError("pull mode needs signing_key in the fleet file")
    signed = sign_bundle(bundle, via.signing_key, release)
    with via.bucket() as b:
        return signed, b.publish_bundle(signed)


def preflight(boards: list[Board], bundle: Bundle, via: Via, stale_polls: int = 3,
              default_every: float = 60.0) -> tuple[dict[str, str], dict[str, str]]:
    """What the boards' status objects say of them (no board is reached): {board: problem}
    for the ones that can't take the bundle — no status at all (not pulling), a board that
    departs from its profile, a model format it can't run, too little space — and {board:
    note} (silent for a while: it catches up when back)."""
    with via.bucket() as b:
        statuses = b.statuses(only={x.name for x in boards})
    problems: dict[str, str] = {}
    notes: dict[str, str] = {}
    now = time.time()
    for board in boards:
        st = statuses.get(board.name)
        if st is None:
            problems[board.name] = (f"no status under {via.location}/status/{board.name}/: "
                                    f"is it pulling? (edgedeploy-agent pull … --save, then "
                                    f"agentd --pull-every S)")
            continue
        if st.cohort != cohort_of(board):
            problems[board.name] = (f"it follows cohort {st.cohort}, the fleet file says "
                                    f"{cohort_of(board)}")
            continue
        p = model_problems(board, bundle.manifest)
        if st.info:
            i = st.info
            info = protocol.BoardInfo(i.get("arch"), i.get("python"), i.get("numpy"),
                                      i.get("runtime"), i.get("runtime_error"),
                                      i.get("free_bytes"), i)
            p = board_problems(board, info) + p
            free = info.free_bytes
            if free is not None and free < 2 * bundle.size:
                p.append(f"only {free} bytes free in the store, the bundle needs 2 x "
                         f"{bundle.size}")
        if p:
            problems[board.name] = "; ".join(p)
        age, silent = stale(st, now, stale_polls, default_every)
        if silent:
            notes[board.name] = f"silent for {age:.0f} s; it catches up when it polls again"
    return problems, notes
