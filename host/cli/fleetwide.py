"""The verbs that read or change one board or many: bench, eval, status, rollback, targets check.

Each takes ``BOARD…`` (then the model word where it needs one), ``--all``, ``--group G``,
``--tag T``, ``--parallel N``: the boards are worked on at once (host/fleet/fanout.py), a
failing board doesn't stop the others, and a run on several boards ends with one table (board ×
figures, failures named) and exit status 1 if any board failed. On one board named alone, the
output (and ``--json``) is what it always was, and its error keeps its own exit code.

Results land in the history from this (the main) thread: SQLite connections stay in the thread
that made them. A bench or eval that fails is recorded as failed, so the report marks it.

(A little past 400 lines: six verbs that share the fan-out, the summary and the one-table
ending; each verb is a short handler plus its table cells.)
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from ...errors import EdgeDeployError, InputError, NotFound
from ..fleet.fanout import FanOut, Outcome, fan_out
from .common import Boards, Selection
from .render import bench_line, emit, eval_line, fleet_table, op_table, status_lines

T = TypeVar("T")


def _run(sel: Selection, work: Callable[[str], T], parallel: int, as_json: bool) -> FanOut[T]:
    def done(o: Outcome[T]) -> None:
        if sel.many and not as_json:
            print(f"{o.board}: {'done' if o.ok else f'FAILED: {o.error}'} "
                  f"({o.seconds:.1f} s)", file=sys.stderr, flush=True)

    result = fan_out(sel.names, work, parallel=parallel, on_done=done)
    if not sel.many and result.failed:
        raise next(iter(result.failed.values()))  # one board: its own error and exit code
    return result


def _failure(board: str, exc: EdgeDeployError) -> dict:
    return {"board": board, "error": str(exc), "code": exc.code}


def _summary(result: FanOut, rows: list[dict], failed_boards: set[str]) -> dict:
    n = len(result.outcomes)
    return {"boards": n, "ok": n - len(failed_boards), "failed": len(failed_boards),
            "failed_boards": sorted(failed_boards), "results": rows}


def _end(summary: dict) -> None:
    failed = summary["failed_boards"]
    print(f"{summary['ok']} of {summary['boards']} boards ok"
          + (f"; failed: {', '.join(failed)}" if failed else ""))


# -- bench -------------------------------------------------------------------------------
@dataclass
class Measured:
    board: str
    spec: str
    answer: Any = None                 # protocol.Bench / protocol.Eval
    error: EdgeDeployError | None = None


def run_bench(a: argparse.Namespace) -> int:
    where = Boards.from_args(a)
    sel = where.pick(a.targets, every=a.all, group=a.group, tag=a.tag, model="NAME[@VERSION]")
    return bench_command(sel, where, runs=a.runs, warmup=a.warmup, threads=a.threads,
                         delegate=a.delegate, op_profile=a.op_profile, parallel=a.parallel,
                         as_json=a.json, allow_cpu=a.allow_cpu)


def bench_command(sel: Selection, where: Boards, *, runs: int, warmup: int,
                  threads: int | None, delegate: str | None, op_profile: bool, parallel: int,
                  as_json: bool, allow_cpu: bool = False) -> int:
    """SEL's model on each board, or every active model there; past a model that fails. The
    delegate: DELEGATE, else the Edge TPU on a board whose profile has one, else auto."""
    from ..board_facts import bench_delegate, bench_preamble

    def work(name: str) -> list[Measured]:
        out = []
        with where.session(name) as s:
            listing = s.listing().models
            if sel.model:   # NAME alone: the version it is at, so a failure names it too
                entry = next((e for e in listing if e.name == sel.model), None)
                specs = [f"{sel.model}@{entry.current}" if entry and entry.current and
                         "@" not in sel.model else sel.model]
            else:
                specs = [f"{e.name}@{e.current}" for e in listing if e.current]
            if not specs:
                raise InputError(f"{name}: no active model to bench",
                                 hint="push one, or name NAME@VERSION")
            for spec in specs:
                try:
                    out.append(Measured(name, spec, s.bench(
                        spec, runs=runs, warmup=warmup, threads=threads,
                        delegate=bench_delegate(delegate, s.board.profile),
                        op_profile=op_profile, allow_cpu=allow_cpu)))
                except EdgeDeployError as exc:
                    out.append(Measured(name, spec, error=exc))
        return out

    result = _run(sel, work, parallel, as_json)
    res = where.results()
    rows: list[dict[str, Any]] = []
    failed, measured = set(result.failed), []
    for o in result.outcomes:
        if o.error is not None:
            rows.append(_failure(o.board, o.error))
            continue
        for m in o.get():
            measured.append(m)
            profile = _profile(where, m.board)
            if m.error is None:
                res.record("bench", m.board, m.answer.raw, profile=profile)
                rows.append(m.answer.raw)
            else:
                failed.add(m.board)
                name, _, version = m.spec.partition("@")
                res.record_failure("bench", m.board, m.error, model=name,
                                   version=version or None, profile=profile)
                rows.append({**_failure(m.board, m.error), "model": name,
                             "version": version or None})
    if not sel.many and sel.model and measured and measured[0].error is not None:
        raise measured[0].error          # one board, one model: its error, its exit code
    if not sel.many and len(measured) == 1 and not failed:
        b = measured[0].answer  # where it ran, emulation, throttling: said before the timing
        emit(as_json, b.raw, "\n".join([f"{sel.names[0]}: {x}" for x in bench_preamble(b)]
                                       + [bench_line(sel.names[0], b)])
             + (("\n" + op_table(b.raw)) if op_profile else ""))
        return 0
    if as_json:
        emit(True, _summary(result, rows, failed) if sel.many else rows, "")
        return 1 if failed else 0
    fleet_table(f"bench on {len(sel.names)} board(s)", [
        "board", "model", "version", "mode", "runtime", "p50", "p90", "p99", "load",
        "peak RSS"], [_bench_cells(m) for m in measured]
        + [(o.board, o.error) for o in result.outcomes if o.error is not None])
    for m in measured:  # where it ran, emulation, throttling
        if m.error is None:
            for x in bench_preamble(m.answer):
                print(f"{m.board} {m.spec}: {x}")
    if op_profile:
        for m in measured:
            if m.error is None:
                print(f"{m.board} {m.spec}:\n{op_table(m.answer.raw)}")
    _end(_summary(result, rows, failed))
    return 1 if failed else 0


def _bench_cells(m: Measured) -> tuple:
    from .. import units

    if m.error is not None:
        return (m.board, m.error, m.spec)
    b = m.answer
    return (m.board, [b.model.name, b.model.version, b.model.mode, f"{b.runtime} "
                      f"{b.runtime_version or ''}".strip(), units.ms(b.p50_ms),
                      units.ms(b.p90_ms), units.ms(b.p99_ms), units.ms(b.load_ms),
                      units.size(b.peak_rss_bytes)])


def _profile(where: Boards, board: str) -> str | None:
    try:
        return where.board(board).profile.name
    except EdgeDeployError:
        return None


# -- eval --------------------------------------------------------------------------------
def run_eval(a: argparse.Namespace) -> int:
    where = Boards.from_args(a)
    sel = where.pick(a.targets, every=a.all, group=a.group, tag=a.tag, model="NAME[@VERSION]")
    if not sel.model:
        raise InputError("name the model to evaluate: BOARD… NAME[@VERSION] --data FILE.npz")
    return eval_command(sel, a.data, a.reference, where, parallel=a.parallel, as_json=a.json,
                        output=a.output)


def eval_command(sel: Selection, data: Path, reference: Path | None, where: Boards, *,
                 parallel: int, as_json: bool, output: str | None = None) -> int:
    for f in (data, reference):
        if f is not None and not f.is_file():
            raise InputError(f"{f}: no such data file")
    spec = str(sel.model)

    def work(name: str) -> Any:
        with where.session(name) as s:
            return s.eval(spec, data, reference, output)

    result = _run(sel, work, parallel, as_json)
    res = where.results()
    rows: list[dict[str, Any]] = []
    cells: list[tuple] = []
    name, _, version = spec.partition("@")
    for o in result.outcomes:
        profile = _profile(where, o.board)
        if o.error is not None:
            res.record_failure("eval", o.board, o.error, model=name, version=version or None,
                               profile=profile)
            rows.append(_failure(o.board, o.error))
            cells.append((o.board, o.error))
            continue
        e = o.get()
        res.record("eval", o.board, e.raw, profile=profile)
        rows.append(e.raw)
        from .. import units
        errs = [x["max_abs_error"] for x in e.raw.get("errors") or []] or \
            [x for x in [(e.raw.get("agreement") or {}).get("max_abs_error")] if x is not None]
        cells.append((o.board, [e.model.name, e.model.version, e.model.mode,
                                units.pct(e.top1), units.pct(e.agreement, 1),
                                f"{max(errs):.3g}" if errs else "–", str(e.samples)]))
    if not sel.many:
        e = result.outcomes[0].get()
        emit(as_json, e.raw, eval_line(sel.names[0], e))
        return 0
    summary = _summary(result, rows, set(result.failed))
    if as_json:
        emit(True, summary, "")
    else:
        fleet_table(f"eval of {spec} on {len(sel.names)} board(s)",
                    ["board", "model", "version", "mode", "top-1", "agreement", "max abs err",
                     "samples"], cells)
        _end(summary)
    return result.exit_code()


# -- status ------------------------------------------------------------------------------
def run_status(a: argparse.Namespace) -> int:
    where = Boards.from_args(a)
    if a.via:  # pull mode: the boards' last reports, read from the store; no board is reached
        from .pull import status_via_command

        return status_via_command(a.via, a.endpoint, where, stale_polls=a.stale_polls,
                                  as_json=a.json)
    sel = where.pick(a.targets, every=a.all, group=a.group, tag=a.tag)
    return status_command(sel, where, parallel=a.parallel, as_json=a.json)


def status_command(sel: Selection, where: Boards, *, parallel: int, as_json: bool) -> int:
    def work(name: str) -> Any:
        with where.session(name) as s:
            return s.status()

    result = _run(sel, work, parallel, as_json)
    res = where.results()
    out: list[dict[str, Any]] = []
    for o in result.outcomes:
        if o.error is not None:
            out.append({"board": o.board, "error": str(o.error), "code": o.error.code})
            continue
        d = o.get().to_dict()
        res.record("status", o.board, d, profile=_profile(where, o.board))
        out.append(d)
    if not sel.many:
        emit(as_json, out[0], status_lines(out))
        return 0
    if as_json:
        emit(True, out, "")
    else:
        fleet_table(f"status of {len(sel.names)} board(s)",
                    ["board", "model", "current", "previous", "agent", "health"],
                    [c for o in result.outcomes for c in _status_cells(o)])
        _end({"boards": len(out), "ok": len(out) - len(result.failed),
                        "failed_boards": sorted(result.failed)})
    return result.exit_code()


def _status_cells(o: Outcome) -> list[tuple]:
    if o.error is not None:
        return [(o.board, o.error)]
    st = o.get()
    agent = "current" if st.agent_current else ("outdated" if st.agent else "none")
    if not st.models:
        return [(o.board, ["–", "no models", "", agent, st.health])]
    cells = []
    for m in st.models:
        cells.append((o.board, [m.name, _version(m, m.current), _version(m, m.previous),
                                agent, st.health]))
    return cells


def _version(entry: Any, version: str | None) -> str:
    if not version:
        return "–"
    v = next((x for x in entry.versions if x.version == version), None)
    return f"{version} {v.describe()}" if v is not None else version


# -- rollback ----------------------------------------------------------------------------
def run_rollback(a: argparse.Namespace) -> int:
    where = Boards.from_args(a)
    sel = where.pick(a.targets, every=a.all, group=a.group, tag=a.tag, model="NAME")
    if not sel.model:
        raise InputError("name the model to roll back: BOARD… NAME")
    return rollback_command(sel, where, parallel=a.parallel, as_json=a.json)


def rollback_command(sel: Selection, where: Boards, *, parallel: int, as_json: bool) -> int:
    model = str(sel.model)

    def work(name: str) -> Any:
        with where.session(name) as s:
            try:
                return s.rollback(model)
            except NotFound as exc:   # the agent's hint names its own command: name ours
                msg = re.sub(r" \(see `edgedeploy-agent [^`]*`\)$", "", exc.message)
                raise type(exc)(msg if msg.startswith(name) else f"{name}: {msg}",
                                hint=f"see `edgedeploy status {name}` for the versions it "
                                     f"keeps; push a version to have one to go back to") \
                    from exc

    def row(sw: Any) -> dict[str, Any]:
        return {"name": sw.name, "current": sw.current, "previous": sw.previous}

    return _changed_on_boards(
        sel, _run(sel, work, parallel, as_json), as_json=as_json, row=row,
        cells=lambda sw: [model, str(sw.current), str(sw.previous)],
        one=lambda board, sw: (row(sw), f"{board}: {model} now {sw.current} (was "
                                        f"{sw.previous})"),
        title=f"rollback of {model} on {len(sel.names)} board(s)",
        columns=["board", "model", "now", "was"])


def _changed_on_boards(sel: Selection, result: FanOut, *, as_json: bool,
                       row: Callable[[Any], dict], cells: Callable[[Any], list],
                       one: Callable[[str, Any], tuple[Any, str]], title: str,
                       columns: list[str]) -> int:
    """How a verb that changes each board's store ends: on one board alone, ONE's (JSON,
    line); on many, ROW per board (JSON) or one table of CELLS, failures named, exit 1 if any
    board failed."""
    rows: list[dict[str, Any]] = []
    table: list[tuple] = []
    for o in result.outcomes:
        if o.error is not None:
            rows.append(_failure(o.board, o.error))
            table.append((o.board, o.error))
        else:
            rows.append({"board": o.board, **row(o.get())})
            table.append((o.board, cells(o.get())))
    if not sel.many:
        data, line = one(sel.names[0], result.outcomes[0].get())
        emit(as_json, data, line)
        return 0
    summary = _summary(result, rows, set(result.failed))
    if as_json:
        emit(True, summary, "")
    else:
        fleet_table(title, columns, table)
        _end(summary)
    return result.exit_code()


# -- remove ------------------------------------------------------------------------------
def run_remove(a: argparse.Namespace) -> int:
    where = Boards.from_args(a)
    sel = where.pick(a.targets, every=a.all, group=a.group, tag=a.tag, model="NAME[@VERSION]")
    if not sel.model:
        raise InputError("name the model to remove: BOARD… NAME[@VERSION]")
    return remove_command(sel, where, parallel=a.parallel, as_json=a.json)


def remove_command(sel: Selection, where: Boards, *, parallel: int, as_json: bool) -> int:
    """NAME@VERSION (not the active one) off each board, or with NAME alone the whole model."""
    spec = str(sel.model)
    name, _, version = spec.partition("@")
    if not name:
        raise InputError(f"{spec!r}: name the model (NAME or NAME@VERSION)")

    def work(board: str) -> Any:
        with where.session(board) as s:
            return s.remove(name, version or None)

    def said(board: str, r: Any) -> str:
        gone = ", ".join(r.versions) or "no version"
        return f"{board}: removed {name} " + (f"version {version}" if version else
                                              f"(every version: {gone})")

    return _changed_on_boards(
        sel, _run(sel, work, parallel, as_json), as_json=as_json,
        row=lambda r: {**r.raw, "versions": list(r.versions)},
        cells=lambda r: [name, ", ".join(r.versions) or "–"],
        one=lambda board, r: (r.raw, said(board, r)),
        title=f"remove of {spec} on {len(sel.names)} board(s)",
        columns=["board", "model", "versions removed"])


# -- targets check -----------------------------------------------------------------------
def targets_check(sel: Selection, where: Boards, *, parallel: int, as_json: bool) -> int:
    """Each board's arch, Python, runtime against its profile (installs our agent where it is
    missing or old)."""
    from ..board_facts import edgetpu_check
    from ..deploy import board_problems

    def work(name: str) -> dict[str, Any]:
        board = where.board(name)
        with where.session(name) as s:
            info = s.state().info
        etpu = edgetpu_check(board.profile, info.raw)
        problems = board_problems(board, info) + (etpu or {}).get("problems", [])
        return {"board": name, "ok": not problems, "problems": problems, "arch": info.arch,
                "python": info.python, "runtime": info.runtime, "numpy": info.numpy,
                "emulated": info.emulated, "board_model": info.raw.get("board_model"),
                "edgetpu": etpu}

    result = fan_out(sel.names, work, parallel=parallel)
    out: list[dict[str, Any]] = [
        o.get() if o.error is None else {"board": o.board, "ok": False,
                                         "problems": [str(o.error)], "code": o.error.code}
        for o in result.outcomes]
    bad = [r["board"] for r in out if not r["ok"]]
    if as_json:
        emit(True, out, "")
    else:
        fleet_table(f"targets check of {len(out)} board(s)",
                    ["board", "arch", "Python", "runtime", "numpy"],
                    [(r["board"], [r["arch"] + (" (emulated)" if r.get("emulated") else ""),
                                   r["python"], r["runtime"], r["numpy"]])
                     if r["ok"] else (r["board"], InputError("; ".join(r["problems"])))
                     for r in out])
        for r in out:  # whole lines, never wrapped by the table: whether the Edge TPU is there
            if r.get("edgetpu"):
                print(f"{r['board']}: {r['edgetpu']['line']}")
        print(f"{len(out) - len(bad)} of {len(out)} boards match their profile"
              + (f"; mismatched or unreachable: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


__all__ = ["run_bench", "run_eval", "run_status", "run_rollback", "run_remove", "targets_check"]
