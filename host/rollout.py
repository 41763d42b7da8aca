"""Fleet rollouts: one model version to many boards, so that no board is ever left without a
working model.

Plan (pure, :func:`plan_waves`): a canary (default 1 board), then waves (``10%,50%,100%`` are
cumulative shares of the fleet, ``exp`` doubles). Per wave, every board is first *staged*
(uploaded, hash-checked and installed, not active), then all are *activated*, then *gated*
(the agent evaluates the gate data that travels in the bundle and benches, on the board) and
either *committed* or *rolled back* at once. A failure in the canary wave stops the rollout;
later, ``--max-failures`` (after ``--min-sample`` finished boards) aborts it, and an abort puts
every board this rollout activated back on its previous version.

Journal: SQLite (``rollouts`` / ``boards`` / ``events``); every state change is written before
it is acted on, so ``--resume ID`` after the host died asks each unfinished board where it
really is and goes on from there; finished boards are not redone.

Board states::

    pending → staging → staged → activating → activated → committed
                  ↘ failed      ↘ rolling_back → rolled_back   (gate failed / abort)
    skipped (incompatible, with --skip-incompatible)
    stranded (activated, then unreachable for its rollback: on the old or the new version;
              `--resume ID` retries the rollback once the board is back)
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from ..errors import BoardError, Conflict, EdgeDeployError, InputError, NotFound
from ..targets import Board
from .bundle import Bundle
from .deploy import BoardSession, plan_push

DEFAULT_DB = Path(os.environ.get("EDGEDEPLOY_ROLLOUTS", "~/.local/share/edgedeploy/"
                                                       "rollouts.db")).expanduser()
METRICS = {"accuracy": "eval top-1 on the gate data (0..1)",
           "agreement": "top-1 agreement with the reference outputs in the gate data (0..1)",
           "p50_ms": "bench median latency", "p90_ms": "bench p90 latency",
           "p99_ms": "bench p99 latency"}
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
       "==": operator.eq}
FINAL = {"committed", "rolled_back", "failed", "skipped", "stranded"}
BAD = {"failed", "rolled_back", "stranded"}
GATE_FILE = "gate.npz"


# -- pure: gates, counts, waves ---------------------------------------------------------
@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_gate(text: str) -> Gate:
    m = re.fullmatch(r"\s*([a-z0-9_]+)\s*(>=|<=|==|>|<)\s*([0-9.eE+-]+)\s*", text)
    if not m:
        raise InputError(f"gate {text!r}: expected METRIC OP NUMBER, e.g. accuracy>=0.97")
    metric, op, value = m.groups()
    if metric not in METRICS:
        raise InputError(f"gate {text!r}: unknown metric {metric!r}",
                         hint=f"metrics: {', '.join(METRICS)}")
    try:
        return Gate(metric, op, float(value))
    except ValueError as exc:
        raise InputError(f"gate {text!r}: {value!r} is not a number") from exc


def count_of(text: str, total: int, what: str) -> int:
    """'5%' of TOTAL (at least 1 when TOTAL > 0) or a plain count."""
    t = str(text).strip()
    try:
        if t.endswith("%"):
            pct = float(t[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return max(1, math.ceil(total * pct / 100)) if total else 0
        n = int(t)
        if n < 0:
            raise ValueError
        return n
    except ValueError as exc:
        raise InputError(f"{what} {text!r}: expected a count or a percentage such as 5%") \
            from exc


def plan_waves(names: list[str], canary: str = "1", waves: str = "10%,50%,100%"
               ) -> list[list[str]]:
    """Pure: [canary, wave 1, …]; every board exactly once, in the fleet's order."""
    total = len(names)
    if not total:
        return []
    c = min(max(count_of(canary, total, "--canary"), 1), total)
    plan = [names[:c]]
    done = c
    if waves.strip() == "exp":
        size = c
        while done < total:
            size *= 2
            plan.append(names[done:done + size])
            done += size
        return plan
    for part in waves.split(","):
        upto = count_of(part, total, "--waves") if part.strip().endswith("%") else \
            done + count_of(part, total, "--waves")
        if upto > done:
            plan.append(names[done:upto])
            done = upto
    if done < total:
        plan.append(names[done:])
    return plan


def check_gates(gates: list[Gate], figures: dict, old: dict | None, *,
                max_accuracy_drop: float | None, max_latency_increase: float | None
                ) -> list[str]:
    """Pure: the gates FIGURES fail (empty: passed). Relative gates compare with OLD (the
    version being replaced, measured on the same board); with no old version they pass."""
    failed = []
    for g in gates:
        v = figures.get(g.metric)
        if v is None:
            failed.append(f"{g}: not measured")
        elif not OPS[g.op](v, g.value):
            failed.append(f"{g}: measured {v:.4g}")
    if old:
        if max_accuracy_drop is not None and old.get("accuracy") is not None:
            drop = 100 * (old["accuracy"] - figures["accuracy"])
            if drop > max_accuracy_drop:
                failed.append(f"accuracy dropped {drop:.2f} points (max {max_accuracy_drop:g}): "
                              f"{old['accuracy']:.4f} → {figures['accuracy']:.4f}")
        if max_latency_increase is not None and old.get("p99_ms"):
            inc = 100 * (figures["p99_ms"] / old["p99_ms"] - 1)
            if inc > max_latency_increase:
                failed.append(f"p99 latency up {inc:.1f}% (max {max_latency_increase:g}%): "
                              f"{old['p99_ms']:.3f} → {figures['p99_ms']:.3f} ms")
    return failed


def too_many_failures(failed: int, finished: int, max_failures: str, min_sample: int) -> bool:
    """Pure: abort when, after MIN_SAMPLE finished boards, failures exceed MAX_FAILURES."""
    if finished < max(min_sample, 1):
        return False
    limit = str(max_failures).strip()
    if limit.endswith("%"):
        return 100 * failed / finished > float(limit[:-1])
    return failed > int(limit)


@dataclass
class Options:
    canary: str = "1"
    waves: str = "10%,50%,100%"
    parallel: int = 16
    gates: list[str] = field(default_factory=list)
    max_accuracy_drop: float | None = None
    max_latency_increase: float | None = None      # percent
    max_failures: str = "5%"
    min_sample: int = 5
    timeout: float = 300.0
    retries: int = 1
    bench_runs: int = 50
    skip_incompatible: bool = False
    accept_new_host_key: bool = False
    gate_data: str | None = None                   # travels in the bundle as gate.npz

    def parsed_gates(self) -> list[Gate]:
        return [parse_gate(g) for g in self.gates]

    @property
    def measures(self) -> bool:
        return bool(self.gates) or self.max_accuracy_drop is not None or \
            self.max_latency_increase is not None


# -- the journal ------------------------------------------------------------------------
SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
  id TEXT PRIMARY KEY, model TEXT, version TEXT, bundle TEXT, fleet TEXT, options TEXT,
  plan TEXT, state TEXT, pid INTEGER, host TEXT, created REAL, updated REAL, message TEXT);
CREATE TABLE IF NOT EXISTS boards (
  rollout TEXT, board TEXT, wave INTEGER, state TEXT, old TEXT, new TEXT, figures TEXT,
  old_figures TEXT, error TEXT, updated REAL, PRIMARY KEY (rollout, board));
CREATE TABLE IF NOT EXISTS events (
  rollout TEXT, ts REAL, board TEXT, state TEXT, detail TEXT);
"""


class Journal:
    """SQLite, one connection per thread, every write committed at once (WAL)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path or DEFAULT_DB).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        with self._lock:
            c = self._db()
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        c = getattr(self._local, "c", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA synchronous=FULL")
            self._local.c = c
        return c

    def _write(self, sql: str, args: tuple) -> None:
        with self._lock:
            self._db().execute(sql, args)

    def create(self, rid: str, bundle: Bundle, bundle_path: str, fleet: str, opts: Options,
               plan: list[list[str]], skipped: dict[str, str]) -> None:
        now = time.time()
        with self._lock:
            c = self._db()
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO rollouts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      (rid, bundle.name, bundle.version, bundle_path, fleet,
                       json.dumps(asdict(opts)), json.dumps(plan), "running", os.getpid(),
                       socket.gethostname(), now, now, None))
            for w, names in enumerate(plan):
                for n in names:
                    c.execute("INSERT INTO boards VALUES (?,?,?,?,?,?,?,?,?,?)",
                              (rid, n, w, "pending", None, bundle.version, None, None, None,
                               now))
            for n, why in skipped.items():
                c.execute("INSERT INTO boards VALUES (?,?,?,?,?,?,?,?,?,?)",
                          (rid, n, -1, "skipped", None, bundle.version, None, None, why, now))
            c.execute("COMMIT")

    def set_board(self, rid: str, board: str, state: str, **cols) -> None:
        sets = ", ".join(f"{k} = ?" for k in cols)
        vals = [json.dumps(v) if k in ("figures", "old_figures") and v is not None else v
                for k, v in cols.items()]
        now = time.time()
        with self._lock:
            c = self._db()
            c.execute(f"UPDATE boards SET state = ?, updated = ?{', ' + sets if sets else ''} "
                      f"WHERE rollout = ? AND board = ?", (state, now, *vals, rid, board))
            c.execute("INSERT INTO events VALUES (?,?,?,?,?)",
                      (rid, now, board, state, cols.get("error")))

    def set_rollout(self, rid: str, state: str, message: str | None = None,
                    pid: int | None = None) -> None:
        self._write("UPDATE rollouts SET state = ?, message = coalesce(?, message), "
                    "updated = ?, pid = coalesce(?, pid) WHERE id = ?",
                    (state, message, time.time(), pid, rid))

    def rollout(self, rid: str | None = None) -> dict:
        c = self._db()
        row = c.execute("SELECT * FROM rollouts WHERE id = ?", (rid,)).fetchone() if rid else \
            c.execute("SELECT * FROM rollouts ORDER BY created DESC LIMIT 1").fetchone()
        if row is None:
            raise NotFound(f"{self.path}: no rollout {rid or ''}".strip(),
                           hint="see `edgedeploy rollout status`")
        out = dict(row)
        out["options"] = json.loads(out["options"])
        out["plan"] = json.loads(out["plan"])
        return out

    def boards(self, rid: str) -> list[dict]:
        rows = self._db().execute("SELECT * FROM boards WHERE rollout = ? ORDER BY wave, board",
                                  (rid,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            for k in ("figures", "old_figures"):
                d[k] = json.loads(d[k]) if d[k] else None
            out.append(d)
        return out

    def active_on(self, names: set[str]) -> list[dict]:
        """Rollouts not finished that cover any of NAMES."""
        c = self._db()
        out = []
        for r in c.execute("SELECT id, pid, host FROM rollouts "
                           "WHERE state IN ('running', 'cancelling')"):
            boards = {b[0] for b in c.execute(
                "SELECT board FROM boards WHERE rollout = ?", (r["id"],))}
            if boards & names:
                out.append({"id": r["id"], "pid": r["pid"], "host": r["host"],
                            "boards": sorted(boards & names)})
        return out


def _alive(pid: int | None, host: str | None) -> bool:
    if not pid:
        return False
    if host != socket.gethostname():
        return True  # another host's process: it can't be checked from here, so assume so
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# -- acting -----------------------------------------------------------------------------
class Rollout:
    """Runs (or resumes) one rollout from its journal."""

    def __init__(self, journal: Journal, rid: str, boards: dict[str, Board], bundle: Bundle,
                 opts: Options, emit: Callable[[dict], None] | None = None) -> None:
        self.j, self.rid, self.boards, self.bundle, self.opts = journal, rid, boards, bundle, opts
        self.gates = opts.parsed_gates()
        self.reference = _gate_has_outputs(bundle)  # the gate data carries host outputs
        self.emit = emit or (lambda ev: None)
        self.pool = ThreadPoolExecutor(max_workers=max(1, opts.parallel))
        self._sessions: dict[str, BoardSession] = {}
        self._slock = threading.Lock()

    # one board, one step; the journal row is written before the board is touched
    @contextmanager
    def _session(self, name: str) -> Iterator[BoardSession]:
        """A board's connection (and its agent process), kept from step to step within a
        wave; one that failed is dropped, so the next step connects afresh."""
        with self._slock:
            s = self._sessions.pop(name, None)
        if s is None:
            b = replace(self.boards[name], command_timeout=self.opts.timeout,
                        connect_timeout=min(self.boards[name].connect_timeout,
                                            self.opts.timeout))
            s = BoardSession(b, accept_new_host_key=self.opts.accept_new_host_key)
        try:
            yield s
        except BaseException:
            s.close()
            raise
        with self._slock:
            self._sessions[name] = s

    def _close_sessions(self) -> None:
        with self._slock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            s.close()

    def _with_retries(self, fn: Callable[[], dict]) -> dict:
        from ..errors import Unreachable

        for attempt in range(self.opts.retries + 1):
            try:
                return fn()
            except Unreachable:
                if attempt == self.opts.retries:
                    raise
                time.sleep(min(2 ** attempt, 5))
        raise AssertionError("unreachable")

    def _set(self, name: str, state: str, **cols) -> None:
        self.j.set_board(self.rid, name, state, **cols)
        self.emit({"board": name, "state": state, **{k: v for k, v in cols.items()
                                                       if k in ("error", "old")}})

    def _measure(self, s: BoardSession, version: str, data_version: str) -> dict:
        """Figures of NAME@VERSION on the board: eval on the gate data, bench."""
        figures: dict = {}
        if self.bundle.extra.get(GATE_FILE):
            # the gate data travelled in the bundle: it lies in the new version's folder
            # absolute: agent arguments reach no shell, so a `~/…` root would stay unexpanded
            data = f"{s.root}/store/models/{self.bundle.name}/{data_version}/{GATE_FILE}"
            args = ["eval", f"{self.bundle.name}@{version}", "--data", data]
            if self.reference:
                args += ["--reference", data]
            ev = s.agent(*args)
            figures["accuracy"] = ev["top1"]
            if ev.get("agreement"):
                figures["agreement"] = ev["agreement"]["top1_agreement"]
        b = s.bench(f"{self.bundle.name}@{version}", runs=self.opts.bench_runs, warmup=5)
        t = b["timing"]
        figures.update(p50_ms=t["p50_ms"], p90_ms=t["p90_ms"], p99_ms=t["p99_ms"],
                       emulated=b.get("emulated"))
        return figures

    def stage(self, name: str) -> None:
        self._set(name, "staging")
        try:
            def go() -> dict:
                with self._session(name) as s:
                    st = s.state(model=self.bundle.name)
                    entry = next((e for e in st["models"] if e["name"] == self.bundle.name),
                                 None)
                    old = entry["current"] if entry else None
                    if old == self.bundle.version:
                        old = entry["previous"]
                    s.push(self.bundle, activate=False, state=st)
                    old_fig = self._measure(s, old, self.bundle.version) \
                        if old and (self.opts.max_accuracy_drop is not None or
                                    self.opts.max_latency_increase is not None) else None
                    return {"old": old, "old_figures": old_fig}
            r = self._with_retries(go)
            self._set(name, "staged", old=r["old"], old_figures=r["old_figures"])
        except EdgeDeployError as exc:
            self._set(name, "failed", error=f"staging: {exc}")

    def activate(self, name: str) -> None:
        self._set(name, "activating")
        try:
            def go() -> dict:
                with self._session(name) as s:
                    return s.agent("activate", self.bundle.name, self.bundle.version)
            self._with_retries(go)
            self._set(name, "activated")
        except EdgeDeployError as exc:
            self._back(name, f"activation: {exc}")

    def gate(self, name: str, old_figures: dict | None) -> None:
        if not self.opts.measures:
            self._set(name, "committed")
            return
        try:
            def go() -> dict:
                with self._session(name) as s:
                    return self._measure(s, self.bundle.version, self.bundle.version)
            fig = self._with_retries(go)
        except EdgeDeployError as exc:
            self._back(name, f"gate not measured: {exc}")
            return
        from .board_facts import latency_gate_refusal, latency_gates
        refusal = latency_gate_refusal(name, fig, latency_gates(
            self.gates, self.opts.max_latency_increase))
        if refusal:  # a fresh board preflight could not ask: refused here, never judged
            self._back(name, refusal)
            return
        failed = check_gates(self.gates, fig, old_figures,
                             max_accuracy_drop=self.opts.max_accuracy_drop,
                             max_latency_increase=self.opts.max_latency_increase)
        if failed:
            self.j.set_board(self.rid, name, "activated", figures=fig)
            self._back(name, "gate failed: " + "; ".join(failed))
        else:
            self._set(name, "committed", figures=fig)

    def _back(self, name: str, why: str) -> None:
        """Put NAME back on the version it had (state rolled_back), or say it failed."""
        row = next(b for b in self.j.boards(self.rid) if b["board"] == name)
        self._set(name, "rolling_back", error=why)
        try:
            with self._session(name) as s:
                st = s.state(install_agent=False, model=self.bundle.name)
                entry = next((e for e in st["models"] if e["name"] == self.bundle.name), None)
                current = entry["current"] if entry else None
                if row["old"] and current != row["old"]:
                    s.agent("activate", self.bundle.name, row["old"])
                elif not row["old"] and current == self.bundle.version:
                    raise Conflict(f"{name}: no previous version of {self.bundle.name} to go "
                                   f"back to; the board stays on {self.bundle.version}")
            self._set(name, "rolled_back", error=why)
        except EdgeDeployError as exc:
            if row["state"] in ("pending", "staging", "staged"):  # never activated
                self._set(name, "failed", error=why)
            else:
                self._set(name, "stranded", error=f"{why}; rollback failed: {exc}")

    # the whole thing
    def _cancelled(self) -> bool:
        return self.j.rollout(self.rid)["state"] == "cancelling"

    def run(self) -> dict:
        self.j.set_rollout(self.rid, "running", pid=os.getpid())
        plan = self.j.rollout(self.rid)["plan"]
        try:
            for w, names in enumerate(plan):
                rows = {b["board"]: b for b in self.j.boards(self.rid)}
                self._recover([n for n in names if rows[n]["state"] not in FINAL], rows)
                rows = {b["board"]: b for b in self.j.boards(self.rid)}
                todo = [n for n in names if rows[n]["state"] not in FINAL]
                self.emit({"wave": w, "boards": len(names), "todo": len(todo)})
                if self._cancelled():
                    return self._finish("cancelled", "cancelled before wave "
                                                     f"{w}{' (canary)' if w == 0 else ''}")
                list(self.pool.map(self.stage, [n for n in todo
                                                if rows[n]["state"] in ("pending", "staging")]))
                rows = {b["board"]: b for b in self.j.boards(self.rid)}
                list(self.pool.map(self.activate, [n for n in todo
                                                   if rows[n]["state"] in ("staged",
                                                                           "activating")]))
                rows = {b["board"]: b for b in self.j.boards(self.rid)}
                list(self.pool.map(lambda n: self.gate(n, rows[n]["old_figures"]),
                                   [n for n in todo if rows[n]["state"] == "activated"]))
                verdict = self._verdict(w)
                if verdict:
                    self._abort(verdict)
                    return self._finish("aborted", verdict)
                self._close_sessions()  # a wave's connections end with it
            rows = self.j.boards(self.rid)
            bad = [b["board"] for b in rows if b["state"] not in ("committed", "skipped")]
            if bad:
                return self._finish("partial", f"{len(bad)} board(s) not updated (under "
                                               f"--max-failures): {', '.join(bad[:10])}")
            return self._finish("succeeded", None)
        finally:
            self.pool.shutdown(wait=True)
            self._close_sessions()

    def repair(self) -> dict:
        """An ended rollout: retry the rollback of every stranded board."""
        stranded = [b["board"] for b in self.j.boards(self.rid) if b["state"] == "stranded"]
        try:
            list(self.pool.map(lambda n: self._back(n, "rollback retried"), stranded))
        finally:
            self.pool.shutdown(wait=True)
            self._close_sessions()
        r = self.j.rollout(self.rid)
        left = [b["board"] for b in self.j.boards(self.rid) if b["state"] == "stranded"]
        return self._finish(r["state"], (r["message"] or "") + (
            f"; still stranded: {', '.join(left)}" if left else
            f"; rollback completed on {', '.join(stranded)}" if stranded else ""))

    def _recover(self, names: list[str], rows: dict) -> None:
        """After a host crash: ask each board that was mid-step where it is."""
        for n in names:
            st = rows[n]["state"]
            if st == "rolling_back":
                self._back(n, rows[n]["error"] or "interrupted while rolling back")
            elif st in ("activating", "activated"):
                try:
                    with self._session(n) as s:
                        cur = next((e["current"] for e in
                                    s.state(model=self.bundle.name)["models"]
                                    if e["name"] == self.bundle.name), None)
                    self._set(n, "activated" if cur == self.bundle.version else "staged")
                except EdgeDeployError as exc:
                    self._back(n, f"unreachable after an interruption: {exc}")

    def _verdict(self, wave: int) -> str | None:
        rows = [b for b in self.j.boards(self.rid) if b["state"] != "skipped"]
        bad = [b for b in rows if b["state"] in BAD]
        if wave == 0 and any(b["wave"] == 0 for b in bad):
            b = next(b for b in bad if b["wave"] == 0)
            return f"the canary {b['board']} failed: {b['error']}"
        finished = [b for b in rows if b["state"] in FINAL]
        if too_many_failures(len(bad), len(finished), self.opts.max_failures,
                             self.opts.min_sample):
            return (f"{len(bad)} of {len(finished)} finished boards failed (max "
                    f"{self.opts.max_failures})")
        return None

    def _abort(self, why: str) -> None:
        rows = self.j.boards(self.rid)
        back = [b["board"] for b in rows if b["state"] in ("committed", "activated",
                                                            "activating")]
        list(self.pool.map(lambda n: self._back(n, f"rollout aborted: {why}"), back))

    def _finish(self, state: str, message: str | None) -> dict:
        self.j.set_rollout(self.rid, state, message)
        return report(self.j, self.rid)


def report(j: Journal, rid: str) -> dict:
    r = j.rollout(rid)
    boards = j.boards(rid)
    counts: dict[str, int] = {}
    for b in boards:
        counts[b["state"]] = counts.get(b["state"], 0) + 1
    return {"id": rid, "model": r["model"], "version": r["version"], "state": r["state"],
            "message": r["message"], "counts": counts, "waves": [len(w) for w in r["plan"]],
            "boards": [{"board": b["board"], "wave": b["wave"], "state": b["state"],
                        "old": b["old"], "new": b["new"], "figures": b["figures"],
                        "old_figures": b["old_figures"], "error": b["error"]} for b in boards]}


# -- starting, resuming ------------------------------------------------------------------
def preflight(boards: list[Board], bundle: Bundle, opts: Options
              ) -> tuple[dict[str, str], dict[str, str]]:
    """Reach every board (read-only: no agent is installed): {board: problem} for the ones
    that can't take the bundle, and {board: note} (e.g. the agent will be updated)."""
    from .board_facts import latency_gate_refusal, latency_gates
    from .deploy import local_agent

    ours = local_agent()["content_hash"]
    latency = latency_gates(opts.parsed_gates(), opts.max_latency_increase)
    problems: dict[str, str] = {}
    notes: dict[str, str] = {}

    def one(b: Board) -> None:
        try:
            with BoardSession(replace(b, command_timeout=opts.timeout),
                              accept_new_host_key=opts.accept_new_host_key) as s:
                try:
                    st = s.state(install_agent=False, model=bundle.name)
                except BoardError as exc:
                    notes[b.name] = f"agent missing or not runnable; it will be installed ({exc})"
                    return
                if st["agent"]["content_hash"] != ours:
                    notes[b.name] = "agent will be updated"
                p = plan_push(b, st["info"], st["models"], bundle, activate=False).problems
                refusal = latency_gate_refusal(b.name, st["info"], latency)
                p += [refusal] if refusal else []
                if p:
                    problems[b.name] = "; ".join(p)
        except BoardError as exc:
            problems[b.name] = str(exc)

    with ThreadPoolExecutor(max_workers=max(1, opts.parallel)) as pool:
        list(pool.map(one, boards))
    return problems, notes


def start(j: Journal, boards: list[Board], bundle: Bundle, bundle_path: str, fleet_path: str,
          opts: Options, *, dry_run: bool = False,
          emit: Callable[[dict], None] | None = None) -> dict:
    gates = opts.parsed_gates()  # bad gates: an error before anything is touched
    if any(g.metric == "agreement" for g in gates) and not _gate_has_outputs(bundle):
        raise InputError("an agreement gate needs reference outputs: key 'outputs' in the "
                         "--gate-data file")
    if GATE_FILE not in bundle.extra and any(g.metric in ("accuracy", "agreement")
                                             for g in gates):
        raise InputError("accuracy/agreement gates need --gate-data FILE.npz (x, y)")
    if opts.max_accuracy_drop is not None and GATE_FILE not in bundle.extra:
        raise InputError("--max-accuracy-drop needs --gate-data FILE.npz (x, y)")
    names = {b.name for b in boards}
    busy = j.active_on(names)
    if busy:
        b = busy[0]
        live = _alive(b["pid"], b["host"])
        raise Conflict(f"rollout {b['id']} is {'running' if live else 'unfinished'} on "
                       f"{', '.join(b['boards'][:5])}{'…' if len(b['boards']) > 5 else ''}",
                       hint=f"wait for it, or `edgedeploy rollout --resume {b['id']}` / "
                            f"`edgedeploy rollout cancel {b['id']}`")
    problems, notes = preflight(boards, bundle, opts)
    if problems and not opts.skip_incompatible:
        lines = "; ".join(f"{k}: {v}" for k, v in sorted(problems.items()))
        raise InputError(f"{len(problems)} board(s) can't take {bundle.name} {bundle.version}: "
                         f"{lines}", hint="nothing was pushed; fix them, or pass "
                                          "--skip-incompatible")
    order = [b.name for b in boards if b.name not in problems]
    plan = plan_waves(order, opts.canary, opts.waves)
    if dry_run:
        return {"dry_run": True, "model": bundle.name, "version": bundle.version,
                "waves": plan, "skipped": problems, "notes": notes,
                "gates": [str(g) for g in gates]}
    if not plan:
        raise InputError("no board to roll out to")
    rid = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    j.create(rid, bundle, bundle_path, fleet_path, opts, plan, problems)
    by_name = {b.name: b for b in boards}
    return Rollout(j, rid, by_name, bundle, opts, emit).run()


def resume(j: Journal, rid: str, boards: dict[str, Board], bundle: Bundle,
           emit: Callable[[dict], None] | None = None) -> dict:
    r = j.rollout(rid)
    stranded = any(b["state"] == "stranded" for b in j.boards(rid))
    if r["state"] != "running" and not stranded:
        raise Conflict(f"rollout {rid} is {r['state']}: nothing to resume")
    if _alive(r["pid"], r["host"]) and r["pid"] != os.getpid():
        raise Conflict(f"rollout {rid} is still running (pid {r['pid']} on {r['host']})",
                       hint=f"`edgedeploy rollout cancel {rid}` to stop it")
    if bundle.version != r["version"]:
        raise InputError(f"rollout {rid} is of version {r['version']}; {r['bundle']} is now "
                         f"{bundle.version}", hint="the bundle changed since; start a new "
                                                   "rollout")
    opts = Options(**r["options"])
    missing = [b["board"] for b in j.boards(rid) if b["board"] not in boards]
    if missing:
        raise InputError(f"rollout {rid}: boards no longer in the fleet: {', '.join(missing)}")
    ro = Rollout(j, rid, boards, bundle, opts, emit)
    return ro.run() if r["state"] == "running" else ro.repair()


def cancel(j: Journal, rid: str) -> dict:
    r = j.rollout(rid)
    if r["state"] != "running":
        raise Conflict(f"rollout {rid} is {r['state']} already")
    if _alive(r["pid"], r["host"]):
        j.set_rollout(rid, "cancelling", "cancel asked; the running rollout stops before "
                                         "its next wave")
    else:
        j.set_rollout(rid, "cancelled", "cancelled while no process ran it")
    return report(j, rid)


def _gate_has_outputs(bundle: Bundle) -> bool:
    if GATE_FILE not in bundle.extra:
        return False
    import numpy as np

    with np.load(bundle.extra[GATE_FILE], allow_pickle=False) as z:
        return "outputs" in z.files
