"""The executor of one rollout: runs (or resumes) it from its journal, wave by wave.

Per wave, every board is first *staged* (uploaded, hash-checked and installed, not active; the
version being replaced is measured there when a relative gate asks), then all are *activated*,
then each is *gated* (the agent evaluates the gate data that travelled in the bundle and
benches, on the board) and *committed* or *rolled back* at once. After the wave the failure
rule decides (policy.py): a failed canary, or too many failures, aborts — every board this
rollout activated goes back to its previous version. A board's journal row is written before
the board is touched (journal.py), so a run cut short is resumed from where each board really
is (``recover``). An activation whose answer was lost but which happened (read back, see
host/deploy.py) is not confirmed: that board is rolled back, the report saying what happened.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, TypeVar

from ...errors import Conflict, EdgeDeployError, Unreachable
from ...targets import Board
from ..bundle import Bundle
from ..deploy import BoardSession
from .journal import FINAL, NEVER_ACTIVATED, BoardRow, BoardState, Journal, RolloutState
from .policy import GATE_FILE, Options, check_gates, npz_keys, rollout_end, wave_verdict

S = BoardState
T = TypeVar("T")
Emit = Callable[[dict], None]
# How a runner reaches a board (tests pass one that makes fake boards).
SessionFactory = Callable[[Board, bool], BoardSession]


def open_session(board: Board, accept_new_host_key: bool) -> BoardSession:
    return BoardSession(board, accept_new_host_key=accept_new_host_key)


class Runner:
    """Runs (or resumes) one rollout from its journal."""

    def __init__(self, journal: Journal, rollout_id: str, boards: dict[str, Board],
                 bundle: Bundle, options: Options, emit: Emit | None = None,
                 connect: SessionFactory = open_session) -> None:
        self.journal, self.rollout_id = journal, rollout_id
        self.boards, self.bundle, self.options = boards, bundle, options
        self.gates = options.parsed_gates()
        # the gate data carries the host's outputs: eval reports agreement with them
        self.reference = GATE_FILE in bundle.extra and \
            "outputs" in npz_keys(bundle.extra[GATE_FILE])
        self.emit = emit or (lambda event: None)
        self.connect = connect
        self.pool = ThreadPoolExecutor(max_workers=max(1, options.parallel))
        self.sessions: dict[str, BoardSession] = {}
        self.sessions_lock = threading.Lock()

    # -- boards ----------------------------------------------------------------------------
    @contextmanager
    def session(self, name: str) -> Iterator[BoardSession]:
        """A board's connection (and its agent process), kept from step to step within a
        wave; one that failed is dropped, so the next step connects afresh."""
        with self.sessions_lock:
            s = self.sessions.pop(name, None)
        if s is None:
            b = replace(self.boards[name], command_timeout=self.options.timeout,
                        connect_timeout=min(self.boards[name].connect_timeout,
                                            self.options.timeout))
            s = self.connect(b, self.options.accept_new_host_key)
        try:
            yield s
        except BaseException:
            s.close()
            raise
        with self.sessions_lock:
            self.sessions[name] = s

    def close_sessions(self) -> None:
        with self.sessions_lock:
            sessions, self.sessions = list(self.sessions.values()), {}
        for s in sessions:
            s.close()

    def with_retries(self, step: Callable[[], T]) -> T:
        """STEP, again after a broken link (``retries`` times, backing off)."""
        for attempt in range(self.options.retries + 1):
            try:
                return step()
            except Unreachable:
                if attempt == self.options.retries:
                    raise
                time.sleep(min(2 ** attempt, 5))
        raise AssertionError("unreachable")

    def record(self, name: str, state: BoardState, *, sent: dict | None = None,
               **cols: Any) -> None:
        """Journal first (the transition table is checked there), then tell the caller (SENT:
        how the model travelled, for the caller only)."""
        self.journal.set_board(self.rollout_id, name, state, **cols)
        self.emit({"board": name, "state": state.value,
                   **{k: v for k, v in cols.items() if k in ("error", "old")},
                   **({"sent": sent} if sent else {})})

    def measure(self, s: BoardSession, version: str) -> dict[str, float]:
        """Figures of the model at VERSION on the board: eval on the gate data that travelled
        in the new version's bundle, and bench."""
        name = self.bundle.name
        figures: dict[str, float] = {}
        if GATE_FILE in self.bundle.extra:
            ev = s.eval_bundled(name, version, GATE_FILE, data_version=self.bundle.version,
                                reference=self.reference)
            if ev.top1 is not None:  # None: the gate data has no labels y
                figures["accuracy"] = ev.top1
            if ev.agreement is not None:
                figures["agreement"] = ev.agreement
        b = s.bench(f"{name}@{version}", runs=self.options.bench_runs, warmup=5)
        figures.update(p50_ms=b.p50_ms, p90_ms=b.p90_ms, p99_ms=b.p99_ms,
                       emulated=float(bool(b.emulated)))  # 1.0: timings not the board's
        return figures

    def stage(self, name: str) -> None:
        self.record(name, S.STAGING)

        def step() -> tuple[str | None, dict[str, float] | None, dict]:
            with self.session(name) as s:
                st = s.state(model=self.bundle.name)
                entry = st.model(self.bundle.name)
                old = entry.current if entry else None
                if entry and old == self.bundle.version:
                    old = entry.previous
                r = s.push(self.bundle, activate=False, state=st)
                sent = {"transfer": r.transfer, "bytes_sent": r.bytes_sent,
                        "full_bytes": r.full_bytes, "note": r.transfer_note}
                old_figures = self.measure(s, old) if old and self.options.relative else None
                return old, old_figures, sent
        try:
            old, old_figures, sent = self.with_retries(step)
        except EdgeDeployError as exc:
            self.record(name, S.FAILED, error=f"staging: {exc}")
            return
        self.record(name, S.STAGED, old=old, old_figures=old_figures, sent=sent)

    def activate(self, name: str) -> None:
        self.record(name, S.ACTIVATING)

        lost: list[str] = []

        def step() -> None:
            with self.session(name) as s:
                s.activate(self.bundle.name, self.bundle.version)
                if s.note:  # its answer was lost (agent died, link cut); read back: switched
                    lost.append(s.note)
        try:
            self.with_retries(step)
        except EdgeDeployError as exc:
            self.roll_back(name, f"activation: {exc}")
            return
        if lost:  # switched, but never confirmed: back, as an unconfirmed update is (Mender)
            self.roll_back(name, f"activation: {lost[-1]}, but never confirmed")
            return
        self.record(name, S.ACTIVATED)

    def outside_change(self, s: BoardSession) -> str | None:
        """The version the board runs now, if it is not this rollout's (a `push --force`
        meanwhile: the journal has it); None when it runs ours."""
        entry = s.state(install_agent=False, model=self.bundle.name).model(self.bundle.name)
        current = entry.current if entry else None
        return None if current == self.bundle.version else (current or "no version")

    def commit(self, name: str, figures: dict[str, float] | None = None) -> None:
        """COMMITTED, after reading again what the board runs: a board changed under the
        rollout is SUPERSEDED (neither committed nor rolled back over the change)."""
        try:
            with self.session(name) as s:
                other = self.outside_change(s)
        except EdgeDeployError as exc:
            self.roll_back(name, f"not committed: the board's version could not be read "
                                 f"again ({exc})", figures=figures)
            return
        if other is not None:
            self.record(name, S.SUPERSEDED, figures=figures,
                        error=f"the board runs {other} now, not {self.bundle.version}: changed "
                              f"outside this rollout; left as it is")
        else:
            self.record(name, S.COMMITTED, figures=figures)

    def gate(self, name: str, old_figures: dict[str, float] | None) -> None:
        if not self.options.measures:
            self.commit(name)
            return

        def step() -> dict[str, float]:
            with self.session(name) as s:
                return self.measure(s, self.bundle.version)
        try:
            figures = self.with_retries(step)
        except EdgeDeployError as exc:
            self.roll_back(name, f"gate not measured: {exc}")
            return
        from ..board_facts import latency_gate_refusal, latency_gates
        refusal = latency_gate_refusal(name, bool(figures.get("emulated")), latency_gates(
            self.gates, self.options.max_latency_increase))
        if refusal:  # a fresh board preflight could not ask: refused here, never judged
            self.roll_back(name, refusal, figures=figures)
            return
        failed = check_gates(self.gates, figures, old_figures,
                             max_accuracy_drop=self.options.max_accuracy_drop,
                             max_latency_increase=self.options.max_latency_increase)
        if failed:
            self.roll_back(name, "gate failed: " + "; ".join(failed), figures=figures)
        else:
            self.commit(name, figures)

    def roll_back(self, name: str, why: str, figures: dict[str, float] | None = None) -> None:
        """Put NAME back on the version it had (rolled_back); unreachable, it is stranded."""
        row = self.journal.board(self.rollout_id, name)
        self.record(name, S.ROLLING_BACK, error=why, figures=figures)
        try:
            with self.session(name) as s:
                entry = s.state(install_agent=False, model=self.bundle.name).model(
                    self.bundle.name)
                current = entry.current if entry else None
                if current not in (self.bundle.version, row.old) and \
                        row.state not in NEVER_ACTIVATED:
                    self.record(name, S.SUPERSEDED, error=f"{why}; the board runs {current} "
                                f"now (changed outside this rollout): left as it is")
                    return
                if row.old and current != row.old:
                    s.activate(self.bundle.name, row.old)
                elif not row.old and current == self.bundle.version:
                    raise Conflict(f"{name}: no previous version of {self.bundle.name} to go "
                                   f"back to; the board stays on {self.bundle.version}")
            self.record(name, S.ROLLED_BACK, error=why)
        except EdgeDeployError as exc:
            if row.state in NEVER_ACTIVATED:
                self.record(name, S.FAILED, error=why)
            else:
                self.record(name, S.STRANDED, error=f"{why}; rollback failed: {exc}")

    # -- the whole rollout -----------------------------------------------------------------
    def rows(self) -> dict[str, BoardRow]:
        return {b.board: b for b in self.journal.boards(self.rollout_id)}

    def cancelled(self) -> bool:
        return self.journal.rollout(self.rollout_id).state == RolloutState.CANCELLING

    def run(self) -> RolloutState:
        """Every wave not finished yet; the state the rollout ended in."""
        self.journal.set_rollout(self.rollout_id, RolloutState.RUNNING, pid=os.getpid())
        plan = self.journal.rollout(self.rollout_id).plan
        try:
            for wave, names in enumerate(plan):
                rows = self.rows()
                self.recover([n for n in names if rows[n].state not in FINAL], rows)
                rows = self.rows()
                todo = [n for n in names if rows[n].state not in FINAL]
                self.emit({"wave": wave, "boards": len(names), "todo": len(todo)})
                if self.cancelled():
                    return self.finish(RolloutState.CANCELLED, "cancelled before wave "
                                       f"{wave}{' (canary)' if wave == 0 else ''}")
                list(self.pool.map(self.stage, [n for n in todo if rows[n].state in
                                                (S.PENDING, S.STAGING)]))
                rows = self.rows()
                list(self.pool.map(self.activate, [n for n in todo if rows[n].state in
                                                   (S.STAGED, S.ACTIVATING)]))
                rows = self.rows()
                list(self.pool.map(lambda n: self.gate(n, rows[n].old_figures),
                                   [n for n in todo if rows[n].state == S.ACTIVATED]))
                verdict = self.verdict(wave)
                if verdict:
                    self.abort(verdict)
                    return self.finish(RolloutState.ABORTED, verdict)
                self.close_sessions()  # a wave's connections end with it
            return self.finish(*rollout_end(self.journal.boards(self.rollout_id)))
        finally:
            self.pool.shutdown(wait=True)
            self.close_sessions()

    def repair(self) -> RolloutState:
        """An ended rollout: retry the rollback of every stranded board."""
        stranded = [b.board for b in self.journal.boards(self.rollout_id)
                    if b.state == S.STRANDED]
        try:
            list(self.pool.map(lambda n: self.roll_back(n, "rollback retried"), stranded))
        finally:
            self.pool.shutdown(wait=True)
            self.close_sessions()
        r = self.journal.rollout(self.rollout_id)
        left = [b.board for b in self.journal.boards(self.rollout_id) if b.state == S.STRANDED]
        return self.finish(r.state, (r.message or "") + (
            f"; still stranded: {', '.join(left)}" if left else
            f"; rollback completed on {', '.join(stranded)}" if stranded else ""))

    def recover(self, names: list[str], rows: dict[str, BoardRow]) -> None:
        """After a host crash: ask each board that was mid-step where it is."""
        for n in names:
            state = rows[n].state
            if state == S.ROLLING_BACK:
                self.roll_back(n, rows[n].error or "interrupted while rolling back")
            elif state in (S.ACTIVATING, S.ACTIVATED):
                try:
                    with self.session(n) as s:
                        entry = s.state(model=self.bundle.name).model(self.bundle.name)
                    on_new = entry is not None and entry.current == self.bundle.version
                    if state == S.ACTIVATING or not on_new:
                        self.record(n, S.ACTIVATED if on_new else S.STAGED)
                except EdgeDeployError as exc:
                    self.roll_back(n, f"unreachable after an interruption: {exc}")

    def verdict(self, wave: int) -> str | None:
        return wave_verdict(self.journal.boards(self.rollout_id), wave,
                            self.options.max_failures, self.options.min_sample)

    def abort(self, why: str) -> None:
        back = [b.board for b in self.journal.boards(self.rollout_id)
                if b.state in (S.COMMITTED, S.ACTIVATED, S.ACTIVATING)]
        list(self.pool.map(lambda n: self.roll_back(n, f"rollout aborted: {why}"), back))

    def finish(self, state: RolloutState, message: str | None) -> RolloutState:
        self.journal.set_rollout(self.rollout_id, state, message)
        return state
