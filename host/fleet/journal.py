"""The rollout journal: SQLite, every state change written (and committed, WAL, synchronous
FULL) before it is acted on, so ``rollout resume ID`` after the host died asks each unfinished
board where it really is and goes on from there; finished boards are not redone.

Tables (schema version in ``PRAGMA user_version``; MIGRATIONS brings an older file up, an
unversioned file from before versioning is version 0)::

    rollouts (id, model, version, bundle, fleet, options JSON, plan JSON, state, pid, host,
              created, updated, message)
    boards   (rollout, board, wave, state, old, new, figures JSON, old_figures JSON, error,
              updated)                       -- wave -1: skipped before the plan
    events   (rollout, ts, board, state, detail)   -- one row per board state change
    forced   (rollout, board, ts, version, who)    -- `push --force` onto a board the rollout
                                                      covers (schema 3)

Board states and the only moves between them (TRANSITIONS, enforced by ``set_board``)::

    pending → staging → staged → activating → activated → committed
                  ↘ failed      ↘ rolling_back → rolled_back   (gate failed / abort)
    skipped (incompatible, with --skip-incompatible)
    superseded (activated, then found running a version this rollout did not put there — a
                `push --force` meanwhile: neither committed nor rolled back over it)
    stranded (activated, then unreachable for its rollback: on the old or the new version;
              `rollout resume ID` retries the rollback once the board is back)

A self-move (staging → staging …) is a step retried after a crash; activating/activated →
staged is a recovery that found the board still on its old version. A pull-mode rollout
(fleet/pull.py) moves a board from staging straight to what the board reported: committed, or
rolled_back (a gate failed on the board, which kept its old version).

Exclusivity: ``create`` checks that no unfinished rollout covers the boards and inserts the
new one in one ``BEGIN IMMEDIATE`` transaction, so of two rollouts started at once on the same
boards one runs and the other gets a Conflict.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ...errors import Conflict, JournalError, NotFound
from ..bundle import Bundle
from .policy import Options

DEFAULT_DB = Path(os.environ.get("EDGEDEPLOY_ROLLOUTS", "~/.local/share/edgedeploy/"
                                                       "rollouts.db")).expanduser()


class BoardState(str, Enum):
    PENDING = "pending"
    STAGING = "staging"
    STAGED = "staged"
    ACTIVATING = "activating"
    ACTIVATED = "activated"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    SKIPPED = "skipped"
    STRANDED = "stranded"
    SUPERSEDED = "superseded"

    def __str__(self) -> str:
        return self.value


class RolloutState(str, Enum):
    RUNNING = "running"
    CANCELLING = "cancelling"     # asked to stop before its next wave
    CANCELLED = "cancelled"
    ABORTED = "aborted"
    PARTIAL = "partial"           # ended, some boards not updated (within --max-failures)
    SUCCEEDED = "succeeded"

    def __str__(self) -> str:
        return self.value


S = BoardState
TRANSITIONS: dict[BoardState, frozenset[BoardState]] = {
    S.PENDING: frozenset({S.STAGING}),
    # pull mode (fleet/pull.py): the board stages, gates and activates by itself, so a board
    # the desired state moved goes from staging to what it reported
    S.STAGING: frozenset({S.STAGING, S.STAGED, S.FAILED, S.COMMITTED, S.ROLLED_BACK}),
    S.STAGED: frozenset({S.ACTIVATING}),
    S.ACTIVATING: frozenset({S.ACTIVATING, S.ACTIVATED, S.STAGED, S.ROLLING_BACK}),
    S.ACTIVATED: frozenset({S.COMMITTED, S.STAGED, S.ROLLING_BACK, S.SUPERSEDED}),
    S.COMMITTED: frozenset({S.ROLLING_BACK}),
    S.ROLLING_BACK: frozenset({S.ROLLING_BACK, S.ROLLED_BACK, S.STRANDED, S.FAILED,
                               S.SUPERSEDED}),
    S.STRANDED: frozenset({S.ROLLING_BACK}),
    S.ROLLED_BACK: frozenset(), S.FAILED: frozenset(), S.SKIPPED: frozenset(),
    S.SUPERSEDED: frozenset(),
}
FINAL = frozenset({S.COMMITTED, S.ROLLED_BACK, S.FAILED, S.SKIPPED, S.STRANDED, S.SUPERSEDED})
BAD = frozenset({S.FAILED, S.ROLLED_BACK, S.STRANDED})       # count toward --max-failures
NEVER_ACTIVATED = frozenset({S.PENDING, S.STAGING, S.STAGED})

_V1 = """
CREATE TABLE IF NOT EXISTS rollouts (
  id TEXT PRIMARY KEY, model TEXT, version TEXT, bundle TEXT, fleet TEXT, options TEXT,
  plan TEXT, state TEXT, pid INTEGER, host TEXT, created REAL, updated REAL, message TEXT);
CREATE TABLE IF NOT EXISTS boards (
  rollout TEXT, board TEXT, wave INTEGER, state TEXT, old TEXT, new TEXT, figures TEXT,
  old_figures TEXT, error TEXT, updated REAL, PRIMARY KEY (rollout, board));
CREATE TABLE IF NOT EXISTS events (
  rollout TEXT, ts REAL, board TEXT, state TEXT, detail TEXT);
"""
# MIGRATIONS[n] takes a file from version n-1 to n. Version 1 is the schema every journal had
# before versioning (its tables are created if absent, left as they are if present); 2 indexes
# the events by rollout (resume and report read them per rollout).
MIGRATIONS: dict[int, str] = {
    1: _V1,
    2: "CREATE INDEX IF NOT EXISTS events_by_rollout ON events (rollout, board);",
    3: "CREATE TABLE IF NOT EXISTS forced (rollout TEXT, board TEXT, ts REAL, version TEXT, "
       "who TEXT);",
}
SCHEMA_VERSION = max(MIGRATIONS)


@dataclass(frozen=True)
class RolloutRow:
    id: str
    model: str
    version: str
    bundle: str
    fleet: str
    options: Options
    plan: list[list[str]]
    state: RolloutState
    pid: int | None
    host: str | None
    created: float
    updated: float
    message: str | None


@dataclass(frozen=True)
class BoardRow:
    rollout: str
    board: str
    wave: int
    state: BoardState
    old: str | None
    new: str
    figures: dict[str, float] | None
    old_figures: dict[str, float] | None
    error: str | None
    updated: float


@dataclass(frozen=True)
class Event:
    ts: float
    board: str
    state: BoardState
    detail: str | None


@dataclass(frozen=True)
class Forced:
    """A `push --force` onto a board an unfinished rollout covered."""
    board: str
    ts: float
    version: str
    who: str


@dataclass(frozen=True)
class Busy:
    """An unfinished rollout covering some of the boards asked for."""
    id: str
    pid: int | None
    host: str | None
    boards: list[str]


def migrate(c: sqlite3.Connection, path: Path) -> int:
    """Bring the open file C up to SCHEMA_VERSION, one step per transaction; its version."""
    version = c.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise JournalError(f"{path}: rollout journal schema {version} is newer than this "
                           f"edgedeploy's ({SCHEMA_VERSION})",
                           hint="use the edgedeploy that wrote it, or another --journal")
    for step in range(version + 1, SCHEMA_VERSION + 1):
        c.execute("BEGIN IMMEDIATE")
        try:
            if c.execute("PRAGMA user_version").fetchone()[0] >= step:
                c.execute("COMMIT")     # another process took this step while we waited
                continue
            for stmt in MIGRATIONS[step].split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute(f"PRAGMA user_version = {step}")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


def _wal(c: sqlite3.Connection, wait: float = 30.0) -> None:
    """Put the file in WAL mode. Switching takes an exclusive lock and SQLite does not wait
    for it (no busy handler): two operators opening a new journal at once saw "database is
    locked". Retry until WAIT seconds have passed, as every other statement here waits."""
    deadline = time.monotonic() + wait
    while True:
        try:
            c.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Journal:
    """SQLite, one connection per thread, every write committed at once (WAL)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path or DEFAULT_DB).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        with self._lock:
            c = self._db()
            _wal(c)
            migrate(c, self.path)

    def _db(self) -> sqlite3.Connection:
        c = getattr(self._local, "c", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA synchronous=FULL")
            self._local.c = c
        return c

    # -- writing ---------------------------------------------------------------------------
    def create(self, rollout_id: str, bundle: Bundle, bundle_path: str, fleet: str,
               options: Options, plan: list[list[str]], skipped: dict[str, str]) -> None:
        """The new rollout, if no unfinished one covers any of its boards: the check and the
        insert are one transaction (else a Conflict naming the rollout in the way)."""
        now = time.time()
        covered = {n for wave in plan for n in wave} | set(skipped)
        with self._lock:
            c = self._db()
            c.execute("BEGIN IMMEDIATE")
            busy = self._active_on(c, covered)
            if busy:
                c.execute("ROLLBACK")
                raise busy_conflict(busy[0])
            c.execute("INSERT INTO rollouts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      (rollout_id, bundle.name, bundle.version, bundle_path, fleet,
                       json.dumps(asdict(options)), json.dumps(plan), RolloutState.RUNNING.value,
                       os.getpid(), socket.gethostname(), now, now, None))
            for wave, names in enumerate(plan):
                for n in names:
                    c.execute("INSERT INTO boards VALUES (?,?,?,?,?,?,?,?,?,?)",
                              (rollout_id, n, wave, S.PENDING.value, None, bundle.version,
                               None, None, None, now))
            for n, why in skipped.items():
                c.execute("INSERT INTO boards VALUES (?,?,?,?,?,?,?,?,?,?)",
                          (rollout_id, n, -1, S.SKIPPED.value, None, bundle.version, None,
                           None, why, now))
            c.execute("COMMIT")

    def set_board(self, rollout_id: str, board: str, state: BoardState, *,
                  old: str | None = None, figures: dict | None = None,
                  old_figures: dict | None = None, error: str | None = None) -> None:
        """Move BOARD to STATE (a move TRANSITIONS allows, else JournalError), with the columns
        given (None: unchanged), and log the event — one transaction."""
        state = BoardState(state)
        cols: dict[str, Any] = {"old": old, "error": error,
                                "figures": json.dumps(figures) if figures is not None else None,
                                "old_figures": json.dumps(old_figures)
                                if old_figures is not None else None}
        cols = {k: v for k, v in cols.items() if v is not None}
        sets = "".join(f", {k} = ?" for k in cols)
        now = time.time()
        with self._lock:
            c = self._db()
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute("SELECT state FROM boards WHERE rollout = ? AND board = ?",
                                (rollout_id, board)).fetchone()
                if row is None:
                    raise NotFound(f"{self.path}: rollout {rollout_id} has no board {board}")
                was = BoardState(row[0])
                if state not in TRANSITIONS[was]:
                    raise JournalError(f"rollout {rollout_id}: {board} cannot go from {was} "
                                       f"to {state}")
                c.execute(f"UPDATE boards SET state = ?, updated = ?{sets} "
                          f"WHERE rollout = ? AND board = ?",
                          (state.value, now, *cols.values(), rollout_id, board))
                c.execute("INSERT INTO events VALUES (?,?,?,?,?)",
                          (rollout_id, now, board, state.value, error))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def set_rollout(self, rollout_id: str, state: RolloutState, message: str | None = None,
                    pid: int | None = None) -> None:
        with self._lock:
            self._db().execute(
                "UPDATE rollouts SET state = ?, message = coalesce(?, message), updated = ?, "
                "pid = coalesce(?, pid) WHERE id = ?",
                (state.value, message, time.time(), pid, rollout_id))

    # -- reading ---------------------------------------------------------------------------
    def rollout(self, rollout_id: str | None = None) -> RolloutRow:
        """ROLLOUT_ID's row (the latest rollout's when None)."""
        c = self._db()
        row = c.execute("SELECT * FROM rollouts WHERE id = ?", (rollout_id,)).fetchone() \
            if rollout_id else \
            c.execute("SELECT * FROM rollouts ORDER BY created DESC LIMIT 1").fetchone()
        if row is None:
            raise NotFound(f"{self.path}: no rollout {rollout_id or ''}".strip(),
                           hint="see `edgedeploy rollout status`")
        d = dict(row)
        try:
            options = Options(**json.loads(d["options"]))
        except (TypeError, ValueError) as exc:
            raise JournalError(f"{self.path}: rollout {d['id']}'s options cannot be read "
                               f"({exc})", hint="start a new rollout") from None
        return RolloutRow(**{**d, "options": options,
                             "plan": json.loads(d["plan"]), "state": RolloutState(d["state"])})

    def boards(self, rollout_id: str) -> list[BoardRow]:
        rows = self._db().execute("SELECT * FROM boards WHERE rollout = ? ORDER BY wave, board",
                                  (rollout_id,)).fetchall()
        return [BoardRow(**{**dict(r), "state": BoardState(r["state"]),
                            "figures": json.loads(r["figures"]) if r["figures"] else None,
                            "old_figures": json.loads(r["old_figures"])
                            if r["old_figures"] else None}) for r in rows]

    def board(self, rollout_id: str, name: str) -> BoardRow:
        row = next((b for b in self.boards(rollout_id) if b.board == name), None)
        if row is None:
            raise NotFound(f"{self.path}: rollout {rollout_id} has no board {name}")
        return row

    def events(self, rollout_id: str) -> list[Event]:
        rows = self._db().execute("SELECT ts, board, state, detail FROM events "
                                  "WHERE rollout = ? ORDER BY ts", (rollout_id,)).fetchall()
        return [Event(r["ts"], r["board"], BoardState(r["state"]), r["detail"]) for r in rows]

    def record_forced(self, rollout_id: str, board: str, version: str, who: str) -> None:
        """A `push --force` of VERSION onto BOARD, which ROLLOUT_ID covers (before it acts)."""
        with self._lock:
            self._db().execute("INSERT INTO forced VALUES (?,?,?,?,?)",
                               (rollout_id, board, time.time(), version, who))

    def forced(self, rollout_id: str) -> list[Forced]:
        rows = self._db().execute("SELECT board, ts, version, who FROM forced WHERE rollout = ? "
                                  "ORDER BY ts", (rollout_id,)).fetchall()
        return [Forced(r["board"], r["ts"], r["version"], r["who"]) for r in rows]

    def active_on(self, names: set[str]) -> list[Busy]:
        """Rollouts not finished that cover any of NAMES."""
        return self._active_on(self._db(), names)

    @staticmethod
    def _active_on(c: sqlite3.Connection, names: set[str]) -> list[Busy]:
        out = []
        for r in c.execute("SELECT id, pid, host FROM rollouts WHERE state IN (?, ?)",
                           (RolloutState.RUNNING.value, RolloutState.CANCELLING.value)):
            boards = {b[0] for b in c.execute(
                "SELECT board FROM boards WHERE rollout = ?", (r["id"],))}
            if boards & names:
                out.append(Busy(r["id"], r["pid"], r["host"], sorted(boards & names)))
        return out


def busy_conflict(b: Busy) -> Conflict:
    """The error for a rollout in the way of another (or of a push)."""
    live = alive(b.pid, b.host)
    return Conflict(f"rollout {b.id} is {'running' if live else 'unfinished'} on "
                    f"{', '.join(b.boards[:5])}{'…' if len(b.boards) > 5 else ''}",
                    hint=f"wait for it, or `edgedeploy rollout resume {b.id}` / "
                         f"`edgedeploy rollout cancel {b.id}`")


def alive(pid: int | None, host: str | None) -> bool:
    """Whether the process that ran a rollout still runs (one on another host: assumed so)."""
    if not pid:
        return False
    if host != socket.gethostname():
        return True  # another host's process: it can't be checked from here
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
