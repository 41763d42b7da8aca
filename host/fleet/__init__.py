"""Fleet operations: one model version to many boards, so that no board is ever left without a
working model.

* ``push_many`` (push.py): the plain fan-out, a FleetResult with ``.succeeded`` / ``.failed``.
* Rollouts: ``preflight`` reaches every board read-only; ``start`` checks the options
  (``Options.validate``) and the journal before any board is touched, plans the waves and runs
  them (runner.py); ``resume`` goes on after the host died (or retries stranded boards'
  rollbacks); ``cancel`` stops a running one before its next wave; ``report`` reads the journal.

Layout: policy.py (pure decisions: waves, gates, failure rule, Options), journal.py (SQLite,
versioned schema, board-state enum and transition table), runner.py (the executor).
"""

from __future__ import annotations

import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import (AuthFailed, Conflict, EdgeDeployError, HostKeyRefused, InputError,
                       JournalError, Unreachable)
from ...targets import Board
from ..bundle import Bundle, load_bundle
from ..deploy import local_agent, plan_push
from .journal import (BoardRow, BoardState, Busy, Forced, Journal, RolloutRow, RolloutState,
                      alive, busy_conflict)
from .policy import (GATE_FILE, Gate, Options, check_gates, count_of, parse_gate, plan_waves,
                     too_many_failures)
from .push import FleetResult, push_many
from . import pull
from .runner import Emit, Runner, SessionFactory, open_session

if TYPE_CHECKING:
    from ..bucket import Via

__all__ = ["BoardRow", "BoardState", "Busy", "DryRun", "FleetResult", "Forced", "GATE_FILE",
           "Gate", "Journal", "guard_push",
           "JournalError", "Options", "Report", "RolloutRow", "RolloutState", "cancel",
           "check_gates", "count_of", "parse_gate", "plan_waves", "preflight", "push_many",
           "report", "resume", "rollout_bundle", "start", "too_many_failures"]


@dataclass
class Report:
    """A rollout as its journal has it."""
    id: str
    model: str
    version: str
    state: RolloutState
    message: str | None
    boards: list[BoardRow]
    waves: list[int]
    forced: list[Forced] = field(default_factory=list)  # `push --force` onto its boards

    @property
    def ok(self) -> bool:
        return self.state == RolloutState.SUCCEEDED

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for b in self.boards:
            out[b.state.value] = out.get(b.state.value, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "version": self.version,
                "state": self.state.value, "message": self.message, "counts": self.counts,
                "waves": self.waves,
                "boards": [{"board": b.board, "wave": b.wave, "state": b.state.value,
                            "old": b.old, "new": b.new, "figures": b.figures,
                            "old_figures": b.old_figures, "error": b.error}
                           for b in self.boards],
                "forced": [{"board": f.board, "ts": f.ts, "version": f.version, "who": f.who}
                           for f in self.forced]}


@dataclass
class DryRun:
    """What ``start`` would do: the waves, the boards left out and why, notes, the gates."""
    model: str
    version: str
    waves: list[list[str]]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    gates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": True, "model": self.model, "version": self.version,
                "waves": self.waves, "skipped": self.skipped, "notes": self.notes,
                "gates": self.gates}


def report(journal: Journal, rollout_id: str) -> Report:
    r = journal.rollout(rollout_id)
    return Report(r.id, r.model, r.version, r.state, r.message, journal.boards(rollout_id),
                  [len(w) for w in r.plan], journal.forced(rollout_id))


def guard_push(journal_path: Path | None, names: list[str], version: str, *, force: bool
               ) -> list[Busy]:
    """Before `push` touches NAMES: an unfinished rollout covering any of them refuses the
    push (Conflict) unless FORCE, which is recorded in that rollout's journal (before the push
    acts) — the rollout then finds the board changed and leaves it as it is (superseded). The
    rollouts in the way ([] when there is no journal at all)."""
    import getpass
    import socket

    from .journal import DEFAULT_DB

    path = Path(journal_path or DEFAULT_DB).expanduser()
    if not path.exists():
        return []
    journal = Journal(path)
    busy = journal.active_on(set(names))
    if busy and not force:
        err = busy_conflict(busy[0])
        raise Conflict(err.message, hint="let it finish, or pass --force to push anyway (the "
                                         "rollout's journal records it)")
    who = f"{getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"
    for b in busy:
        for board in b.boards:
            journal.record_forced(b.id, board, version, who)
    return busy


def rollout_bundle(model: str | Path, gate_data: str | None) -> Bundle:
    """The bundle a rollout sends: the model, and the gate data as GATE_FILE when given."""
    b = load_bundle(model)
    return b.with_files({GATE_FILE: Path(gate_data)}) if gate_data else b


def preflight(boards: list[Board], bundle: Bundle, options: Options,
              connect: SessionFactory = open_session,
              unreachable: dict[str, str] | None = None
              ) -> tuple[dict[str, str], dict[str, str]]:
    """Reach every board (read-only: no agent is installed): {board: problem} for the ones
    that can't take the bundle (the ones that can't be reached also in UNREACHABLE), and
    {board: note} (e.g. the agent will be updated). Problems don't repeat the board's name."""
    from ..board_facts import emulation_why, latency_gate_refusal, latency_gates

    ours = local_agent()["content_hash"]
    latency = latency_gates(options.parsed_gates(), options.max_latency_increase)
    problems: dict[str, str] = {}
    notes: dict[str, str] = {}
    gone = unreachable if unreachable is not None else {}

    def one(b: Board) -> None:
        try:
            with connect(replace(b, command_timeout=options.timeout),
                         options.accept_new_host_key) as s:
                try:
                    st = s.state(install_agent=False, model=bundle.name)
                except (Unreachable, HostKeyRefused, AuthFailed):
                    raise  # the board, not its agent: a problem, below
                except EdgeDeployError as exc:
                    notes[b.name] = f"agent missing or not runnable; it will be installed ({exc})"
                    return
                if st.agent.content_hash != ours:
                    notes[b.name] = "agent will be updated"
                p = plan_push(b, st.info, st.model(bundle.name), bundle, activate=False).problems
                refusal = latency_gate_refusal(b.name, st.info.emulated, latency,
                                               emulation_why(st.info))
                p += [refusal] if refusal else []
                if p:
                    problems[b.name] = "; ".join(p)
        except EdgeDeployError as exc:
            text = str(exc)
            problems[b.name] = text[len(b.name) + 2:] if text.startswith(f"{b.name}: ") \
                else text
            if isinstance(exc, Unreachable):
                gone[b.name] = problems[b.name]

    with ThreadPoolExecutor(max_workers=max(1, options.parallel)) as pool:
        list(pool.map(one, boards))
    return problems, notes


def start(journal: Journal, boards: list[Board], bundle: Bundle, bundle_path: str,
          fleet_path: str, options: Options, *, dry_run: bool = False, emit: Emit | None = None,
          connect: SessionFactory = open_session, via: "Via | None" = None) -> Report | DryRun:
    """Check, plan and run a rollout (DRY_RUN: only check and plan). Bad options, a busy
    board or a board that can't take the model stop it before anything is pushed. VIA: pull
    mode (fleet/pull.py) — the same plan, carried out through the object store; BUNDLE is
    then signed (boards take nothing else) and preflight reads the boards' status objects."""
    if via is not None and not bundle.signature:
        raise InputError("a rollout through an object store sends signed bundles only",
                         hint="set signing_key in the fleet file")
    options.validate()
    if options.gate_data and GATE_FILE not in bundle.extra:
        raise InputError(f"the bundle lacks the gate data ({GATE_FILE})",
                         hint="build it with fleet.rollout_bundle(model, gate_data)")
    busy = journal.active_on({b.name for b in boards})
    if busy:  # early, before the preflight; create() checks again, atomically
        raise busy_conflict(busy[0])
    unreachable: dict[str, str] = {}
    problems, notes = pull.preflight(boards, bundle, via) if via is not None else \
        preflight(boards, bundle, options, connect, unreachable)
    if problems and not options.skip_incompatible:
        lines = "; ".join(f"{k}: {v}" for k, v in sorted(problems.items()))
        hint = "nothing was pushed; fix them, or pass --skip-incompatible"
        if unreachable:  # exit 5, as everywhere a board can't be reached
            if len(problems) == 1:
                (name, why), = problems.items()
                raise Unreachable(name, f"can't be reached ({why}); nothing was pushed",
                                  hint=hint)
            raise Unreachable(", ".join(sorted(unreachable)),
                              f"{len(unreachable)} board(s) can't be reached; nothing was "
                              f"pushed ({lines})", hint=hint)
        raise InputError(f"{len(problems)} board(s) can't take {bundle.name} {bundle.version}: "
                         f"{lines}", hint=hint)
    order = [b.name for b in boards if b.name not in problems]
    plan = plan_waves(order, options.canary, options.waves)
    if dry_run:
        return DryRun(bundle.name, bundle.version, plan, problems, notes,
                      [str(g) for g in options.parsed_gates()])
    if not plan:
        raise InputError("no board to roll out to")
    rollout_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    by_name = {b.name: b for b in boards}
    if via is not None:
        with via.bucket() as store:
            published = store.publish_bundle(bundle)  # before the journal: nothing to undo
        journal.create(rollout_id, bundle, bundle_path, fleet_path, options, plan, problems)
        pull.PullRunner(journal, rollout_id, by_name, bundle, options, via, published,
                        emit).run()
        return report(journal, rollout_id)
    journal.create(rollout_id, bundle, bundle_path, fleet_path, options, plan, problems)
    Runner(journal, rollout_id, by_name, bundle, options, emit, connect).run()
    return report(journal, rollout_id)


def resume(journal: Journal, rollout_id: str, boards: dict[str, Board], bundle: Bundle,
           emit: Emit | None = None, connect: SessionFactory = open_session,
           via: "Via | None" = None) -> Report:
    """Go on with a rollout whose process died, from where each board really is; or, for one
    that ended with stranded boards, retry their rollbacks. A pull-mode rollout (its options
    name ``via``) needs VIA and the bundle signed as it was."""
    r = journal.rollout(rollout_id)
    r.options.validate()  # as journalled: a bad one stops here, before any board is touched
    stranded = any(b.state == BoardState.STRANDED for b in journal.boards(rollout_id))
    if r.state != RolloutState.RUNNING and not stranded:
        raise Conflict(f"rollout {rollout_id} is {r.state}: nothing to resume")
    if alive(r.pid, r.host) and r.pid != os.getpid():
        raise Conflict(f"rollout {rollout_id} is still running (pid {r.pid} on {r.host})",
                       hint=f"`edgedeploy rollout cancel {rollout_id}` to stop it")
    if bundle.version != r.version:
        raise InputError(f"rollout {rollout_id} is of version {r.version}; {r.bundle} is now "
                         f"{bundle.version}", hint="the bundle changed since; start a new "
                                                   "rollout")
    missing = [b.board for b in journal.boards(rollout_id) if b.board not in boards]
    if missing:
        raise InputError(f"rollout {rollout_id}: boards no longer in the fleet: "
                         f"{', '.join(missing)}")
    if r.options.via:
        if via is None or not bundle.signature:
            raise InputError(f"rollout {rollout_id} went through {r.options.via}: resuming it "
                             f"needs the fleet file's signing_key")
        with via.bucket() as store:
            published = store.publish_bundle(bundle)  # there already: 0 bytes
        pr = pull.PullRunner(journal, rollout_id, boards, bundle, r.options, via, published,
                             emit)
        pr.run() if r.state == RolloutState.RUNNING else pr.repair()
        return report(journal, rollout_id)
    runner = Runner(journal, rollout_id, boards, bundle, r.options, emit, connect)
    runner.run() if r.state == RolloutState.RUNNING else runner.repair()
    return report(journal, rollout_id)


def cancel(journal: Journal, rollout_id: str) -> Report:
    r = journal.rollout(rollout_id)
    if r.state != RolloutState.RUNNING:
        raise Conflict(f"rollout {rollout_id} is {r.state} already")
    if alive(r.pid, r.host):
        journal.set_rollout(rollout_id, RolloutState.CANCELLING,
                            "cancel asked; the running rollout stops before its next wave")
    else:
        journal.set_rollout(rollout_id, RolloutState.CANCELLED,
                            "cancelled while no process ran it")
    return report(journal, rollout_id)
