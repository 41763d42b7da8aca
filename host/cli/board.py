"""The board-facing subcommands: push, bench, eval, status, rollback, bootstrap, targets. Each
``run_*`` unpacks the command line once; the ``*_command`` functions below take typed values
and do the work through host/deploy.py (one board) or host/fleet (many)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...errors import EdgeDeployError, InputError
from .common import RAW, Boards, add_board_options
from .render import bench_line, emit, eval_line, push_line, status_lines

EXAMPLES = """
BOARD is a name in the fleet file (--fleet, else $EDGEDEPLOY_FLEET, else ./fleet.toml),
or `local`. Unknown SSH host keys are refused unless --accept-new-host-key."""
PUSH_EXAMPLES = """examples:
  edgedeploy push out/digits.int8.tflite pi-kitchen
  edgedeploy push out/digits.int8.tflite local               # this machine, no SSH
  edgedeploy push out/digits.int8.tflite b0 --fleet fleet.toml --no-activate
  edgedeploy push out/digits.int8.tflite --all --parallel 32 --fleet fleet.toml
  edgedeploy push out/digits.int8.tflite --group kitchen --json
  edgedeploy push out/digits.int8.tflite pi-kitchen --no-delta   # the whole file, always

A board that stores an earlier version of the model this host pushed gets a delta in place of
the model file when it is smaller (the result line says "as a delta" and how many bytes).
""" + EXAMPLES
BENCH_EXAMPLES = """examples:
  edgedeploy bench b0 digits --runs 1000 --fleet fleet.toml
  edgedeploy bench b0 digits@3f2a9c1b0d4e --threads 4 --delegate none
  edgedeploy bench local                       # every active model on this machine
""" + EXAMPLES
EVAL_EXAMPLES = """examples:
  edgedeploy eval b0 digits --data test.npz --fleet fleet.toml
  edgedeploy eval b0 digits --data test.npz --reference host_outputs.npz --json
""" + EXAMPLES
STATUS_EXAMPLES = """examples:
  edgedeploy status b0 --fleet fleet.toml
  edgedeploy status --all --json
""" + EXAMPLES
ROLLBACK_EXAMPLES = """examples:
  edgedeploy rollback b0 digits --fleet fleet.toml
""" + EXAMPLES
BOOTSTRAP_EXAMPLES = """examples:
  pip download --only-binary=:all: --python-version 3.11 --platform manylinux2014_aarch64 \\
      ai-edge-litert numpy pip -d wheels/
  edgedeploy bootstrap pi-kitchen --wheelhouse wheels/
""" + EXAMPLES
TARGETS_EXAMPLES = """examples:
  edgedeploy targets profiles
  edgedeploy targets list --fleet fleet.toml
  edgedeploy targets show b0
  edgedeploy targets check            # every board: arch, Python, runtime vs its profile
""" + EXAMPLES


def register(sub: Any) -> None:
    p = sub.add_parser("push", help="send a model to a board, install and activate it",
                       description="Send MODEL to one or more boards: checked, uploaded, "
                                   "installed, activated.", epilog=PUSH_EXAMPLES,
                       formatter_class=RAW)
    p.add_argument("model", metavar="MODEL", help="a .tflite with its manifest, or a bundle dir")
    p.add_argument("boards", nargs="*", metavar="BOARD", help="one or more boards")
    add_board_options(p, board=False)
    p.add_argument("--no-activate", action="store_true", help="install only")
    p.add_argument("--all", action="store_true", help="every board in the fleet")
    p.add_argument("--group", help="the boards in this group")
    p.add_argument("--tag", help="the boards with this tag")
    p.add_argument("--parallel", type=int, default=16, metavar="N",
                   help="boards pushed at once (16)")
    p.add_argument("--no-delta", action="store_true",
                   help="always send the whole model file (by default a board that holds an "
                        "earlier version gets a delta when it is smaller)")
    p.set_defaults(func=run_push)

    b = sub.add_parser("bench", help="time a model on a board", epilog=BENCH_EXAMPLES,
                       formatter_class=RAW)
    add_board_options(b)
    b.add_argument("model", nargs="?", default=None, metavar="NAME[@VERSION]",
                   help="default: every active model")
    b.add_argument("--runs", type=int, default=100, help="timed invokes (100)")
    b.add_argument("--warmup", type=int, default=10, help="untimed invokes first (10)")
    b.add_argument("--threads", type=int, help="default: the board profile's")
    b.add_argument("--delegate", default="auto", choices=["auto", "xnnpack", "none", "edgetpu"],
                   help="auto: the runtime's default (XNNPACK where it applies)")
    b.set_defaults(func=run_bench)

    e = sub.add_parser("eval", help="accuracy of a model on a board", epilog=EVAL_EXAMPLES,
                       formatter_class=RAW)
    add_board_options(e)
    e.add_argument("model", metavar="NAME[@VERSION]")
    e.add_argument("--data", type=Path, required=True, metavar="FILE.npz", help="x, y")
    e.add_argument("--reference", type=Path, metavar="FILE.npz",
                   help="host outputs (key `outputs`): top-1 agreement with them")
    e.set_defaults(func=run_eval)

    s = sub.add_parser("status", help="active and previous versions, agent, health",
                       epilog=STATUS_EXAMPLES, formatter_class=RAW)
    s.add_argument("board", nargs="?", metavar="BOARD")
    s.add_argument("--all", action="store_true", help="every board in the fleet")
    add_board_options(s, board=False)
    s.set_defaults(func=run_status)

    r = sub.add_parser("rollback", help="switch a board back to a model's previous version",
                       epilog=ROLLBACK_EXAMPLES, formatter_class=RAW)
    add_board_options(r)
    r.add_argument("model", metavar="NAME")
    r.set_defaults(func=run_rollback)

    bs = sub.add_parser("bootstrap", help="set a board up: agent + runtime wheels in a venv "
                                          "(offline with --wheelhouse)",
                        epilog=BOOTSTRAP_EXAMPLES, formatter_class=RAW)
    add_board_options(bs)
    bs.add_argument("--wheelhouse", type=Path, metavar="DIR",
                    help="wheels to install from (the board needs no internet); without it "
                         "the board's pip uses its own index")
    bs.set_defaults(func=run_bootstrap)

    t = sub.add_parser("targets", help="board profiles and the fleet: list, show, check",
                       epilog=TARGETS_EXAMPLES, formatter_class=RAW)
    t.add_argument("action", choices=["list", "show", "check", "profiles"])
    t.add_argument("board", nargs="?", metavar="BOARD", help="only this board")
    add_board_options(t, board=False)
    t.set_defaults(func=run_targets)


# -- push ----------------------------------------------------------------------------------
def run_push(a: argparse.Namespace) -> int:
    many = a.all or bool(a.group) or bool(a.tag) or len(a.boards) > 1
    if not many and not a.boards:
        raise InputError("name a BOARD (or several), or pass --all / --group G / --tag T")
    if a.no_delta:
        from ..transfer import configure

        configure(enabled=False)
    return push_command(Path(a.model), a.boards, Boards.from_args(a), activate=not a.no_activate,
                        many=many, group=a.group, tag=a.tag, parallel=a.parallel,
                        as_json=a.json)


def push_command(model: Path, names: list[str], where: Boards, *, activate: bool, many: bool,
                 group: str | None, tag: str | None, parallel: int, as_json: bool) -> int:
    from ..bundle import load_bundle

    bundle = load_bundle(model)
    if many:
        return _push_many(bundle, names, where, activate=activate, group=group, tag=tag,
                          parallel=parallel, as_json=as_json)
    from rich.progress import Progress

    with where.session(names[0]) as s:
        if as_json or not sys.stderr.isatty():
            result = s.push(bundle, activate=activate)
        else:
            with Progress(transient=True) as bar:
                task = bar.add_task(f"{names[0]}: {bundle.name}", total=bundle.size)
                result = s.push(bundle, activate=activate,
                                progress=lambda done, total: bar.update(task, completed=done))
    emit(as_json, _record_push(where, bundle, result), push_line(result))
    return 0


def _record_push(where: Boards, bundle: Any, result: Any) -> dict:
    payload = {**result.to_dict(), "size": bundle.manifest.size}
    where.results().record("push", result.board, payload, model=bundle.name,
                           version=bundle.version, label=bundle.manifest.label)
    return payload


def _push_many(bundle: Any, names: list[str], where: Boards, *, activate: bool,
               group: str | None, tag: str | None, parallel: int, as_json: bool) -> int:
    from ..deploy import PushResult
    from ..fleet import push_many

    fleet = where.fleet()
    boards = fleet.select(names or None, group=group, tag=tag)
    if not boards:
        raise InputError(f"{fleet.path}: no board matches", hint="see `edgedeploy targets list`")

    def done(name: str, out: Any) -> None:
        if not as_json:
            print(push_line(out) if isinstance(out, PushResult) else f"{name}: FAILED: {out}",
                  flush=True)

    t0 = time.perf_counter()
    results = push_many(boards, bundle, activate=activate, parallel=parallel,
                        accept_new_host_key=where.accept_new_host_key, on_done=done)
    rows = []
    for name in results.order:
        if name in results.succeeded:
            rows.append(_record_push(where, bundle, results.succeeded[name]))
        else:
            err = results.failed[name]
            rows.append({"board": name, "error": str(err), "code": err.code})
    failed = len(results.failed)
    summary = {"boards": len(boards), "ok": len(boards) - failed, "failed": failed,
               "seconds": round(time.perf_counter() - t0, 3), "results": rows}
    emit(as_json, summary, f"{len(boards) - failed} of {len(boards)} boards on {bundle.name} "
                           f"{bundle.version}; {failed} failed; {summary['seconds']:.2f} s")
    return 1 if failed else 0


# -- measuring -----------------------------------------------------------------------------
def run_bench(a: argparse.Namespace) -> int:
    return bench_command(a.board, a.model, Boards.from_args(a), runs=a.runs, warmup=a.warmup,
                         threads=a.threads, delegate=a.delegate, as_json=a.json)


def bench_command(board: str, spec: str | None, where: Boards, *, runs: int, warmup: int,
                  threads: int | None, delegate: str, as_json: bool) -> int:
    res = where.results()
    out = []
    with where.session(board) as s:
        specs = [spec] if spec else [e.name for e in s.listing().models if e.current]
        if not specs:
            raise InputError(f"{board}: no active model to bench",
                             hint="push one, or name NAME@VERSION")
        for one in specs:
            b = s.bench(one, runs=runs, warmup=warmup, threads=threads, delegate=delegate)
            res.record("bench", board, b.raw)
            out.append(b)
    if as_json:
        print(json.dumps(out[0].raw if len(out) == 1 else [b.raw for b in out], indent=2))
    else:
        print("\n".join(bench_line(board, b) for b in out))
    return 0


def run_eval(a: argparse.Namespace) -> int:
    return eval_command(a.board, a.model, a.data, a.reference, Boards.from_args(a),
                        as_json=a.json)


def eval_command(board: str, spec: str, data: Path, reference: Path | None, where: Boards, *,
                 as_json: bool) -> int:
    for f in (data, reference):
        if f is not None and not f.is_file():
            raise InputError(f"{f}: no such data file")
    with where.session(board) as s:
        e = s.eval(spec, data, reference)
    where.results().record("eval", board, e.raw)
    emit(as_json, e.raw, eval_line(board, e))
    return 0


# -- the store -----------------------------------------------------------------------------
def run_status(a: argparse.Namespace) -> int:
    if not a.all and not a.board:
        raise InputError("name a BOARD or pass --all")
    return status_command(a.board, Boards.from_args(a), every=a.all, as_json=a.json)


def status_command(board: str | None, where: Boards, *, every: bool, as_json: bool) -> int:
    names = list(where.fleet().boards) if every else [str(board)]
    out, failed = [], 0
    for n in names:
        try:
            with where.session(n) as s:
                out.append(s.status().to_dict())
        except EdgeDeployError as exc:
            if not every:
                raise
            failed += 1
            out.append({"board": n, "error": str(exc)})
    emit(as_json, out if every else out[0], status_lines(out))
    return 1 if failed else 0


def run_rollback(a: argparse.Namespace) -> int:
    return rollback_command(a.board, a.model, Boards.from_args(a), as_json=a.json)


def rollback_command(board: str, model: str, where: Boards, *, as_json: bool) -> int:
    with where.session(board) as s:
        sw = s.rollback(model)
    r = {"name": sw.name, "current": sw.current, "previous": sw.previous}
    emit(as_json, r, f"{board}: {model} now {sw.current} (was {sw.previous})")
    return 0


def run_bootstrap(a: argparse.Namespace) -> int:
    return bootstrap_command(a.board, a.wheelhouse, Boards.from_args(a), as_json=a.json)


def bootstrap_command(name: str, wheelhouse: Path | None, where: Boards, *,
                      as_json: bool) -> int:
    from ..bootstrap import bootstrap

    board = where.board(name)
    with where.session(name) as s:
        r = bootstrap(s, wheelhouse)
    if board.python != "python3":
        r["note"] = (f"the inventory sets python = {board.python} for {name}; remove it to "
                     f"use {r['venv']}")
    emit(as_json, r, f"{name}: {r['runtime']} {r['runtimes'].get(r['runtime'])} with numpy "
                     f"{r['numpy']} in {r['venv']} (Python {r['python']}, {r['arch']}); sent "
                     f"{len(r['wheels'])} wheel(s), {r['bytes_sent']} bytes"
                     f"{'; agent installed' if r['agent_uploaded'] else ''}"
                     + (f"\nnote: {r['note']}" if "note" in r else ""))
    return 0


# -- targets -------------------------------------------------------------------------------
def run_targets(a: argparse.Namespace) -> int:
    return targets_command(a.action, a.board, Boards.from_args(a), as_json=a.json)


def targets_command(action: str, board: str | None, where: Boards, *, as_json: bool) -> int:
    from ...targets import load_profile, profile_names

    if action == "profiles":
        profs = [asdict(load_profile(n)) for n in profile_names()]
        emit(as_json, profs, "\n".join(f"{p['name']:16} {p['description']}" for p in profs))
        return 0
    boards = where.fleet().select([board] if board else None)
    if action == "list":
        rows = [{"name": b.name, "address": b.address, "profile": b.profile.name,
                 "tags": b.tags, "groups": b.groups} for b in boards]
        emit(as_json, rows, "\n".join(f"{r['name']:12} {r['address']:28} {r['profile']:16} "
                                      f"tags={','.join(r['tags'])} groups={','.join(r['groups'])}"
                                      for r in rows))
        return 0
    if action == "show":
        shown = [{**asdict(b), "profile": asdict(b.profile)} for b in boards]
        print(json.dumps(shown if len(shown) > 1 else shown[0], indent=2))
        return 0
    from ..deploy import board_problems

    failed = 0
    out: list[dict[str, Any]] = []
    for b in boards:
        try:
            with where.session(b.name) as s:
                info = s.state().info  # installs our agent where it is missing or old
            problems = board_problems(b, info)
            out.append({"board": b.name, "ok": not problems, "problems": problems,
                        "arch": info.arch, "python": info.python,
                        "runtime": info.runtime, "numpy": info.numpy})
        except EdgeDeployError as exc:
            out.append({"board": b.name, "ok": False, "problems": [str(exc)]})
        failed += 0 if out[-1]["ok"] else 1
    emit(as_json, out, "\n".join(
        f"{r['board']:12} {'ok' if r['ok'] else 'MISMATCH'} "
        + (f"{r.get('arch')} Python {r.get('python')} {r.get('runtime')} numpy {r.get('numpy')}"
           if r["ok"] else "; ".join(r["problems"])) for r in out))
    return 1 if failed else 0
