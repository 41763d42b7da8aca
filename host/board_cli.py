"""The board-facing subcommands of ``edgedeploy``: push, bench, eval, status, rollback, targets,
report. Parsing lives here, the work in deploy.py / results.py; errors map to exit codes in
cli.main."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import EdgeDeployError, InputError

PUSH_EXAMPLES = """examples:
  edgedeploy push out/digits.int8.tflite pi-kitchen
  edgedeploy push out/digits.int8.tflite local               # this machine, no SSH
  edgedeploy push out/digits.int8.tflite b0 --fleet fleet.toml --no-activate
  edgedeploy push out/digits.int8.tflite --all --parallel 32 --fleet fleet.toml
  edgedeploy bench b0 digits --runs 1000 --fleet fleet.toml
  edgedeploy eval b0 digits --data test.npz --fleet fleet.toml
  edgedeploy status --all --fleet fleet.toml
  edgedeploy rollback b0 digits --fleet fleet.toml
  edgedeploy report --model digits --html report.html

BOARD is a name in the fleet file (--fleet, else $EDGEDEPLOY_FLEET, else ./fleet.toml),
or `local`. Unknown SSH host keys are refused unless --accept-new-host-key."""


ROLLOUT_EXAMPLES = """examples:
  edgedeploy rollout out/digits.int8.tflite --fleet fleet.toml --dry-run
  edgedeploy rollout out/digits.int8.tflite --group kitchen --gate-data gate.npz \\
      --gate "accuracy>=0.97" --gate "p99_ms<=25" --max-accuracy-drop 0.5
  edgedeploy rollout status                 # the latest rollout
  edgedeploy rollout --resume 20261124-101500-3f2a out/digits.int8.tflite
  edgedeploy rollout cancel 20261124-101500-3f2a

Per wave: every board is staged (uploaded, checked, installed) before any is activated; then
each is gated on the board and committed or rolled back at once. A failed canary stops the
rollout; past --max-failures every board this rollout activated goes back. The journal keeps
every step, so --resume goes on after a crash without redoing finished boards."""


def add_parsers(sub) -> None:
    def common(p, board: bool = True) -> None:
        if board:
            p.add_argument("board", metavar="BOARD")
        p.add_argument("--fleet", type=Path, metavar="FILE", help="inventory (fleet.toml)")
        p.add_argument("--accept-new-host-key", action="store_true",
                       help="record an unknown host key (a changed one is still refused)")
        p.add_argument("--db", type=Path, metavar="FILE", help="results history (SQLite)")
        p.add_argument("--json", action="store_true", help="print JSON")

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("push", help="send a model to a board, install and activate it",
                       epilog=PUSH_EXAMPLES, formatter_class=fmt)
    p.add_argument("model", metavar="MODEL", help="a .tflite with its manifest, or a bundle dir")
    p.add_argument("boards", nargs="*", metavar="BOARD", help="one or more boards")
    common(p, board=False)
    p.add_argument("--no-activate", action="store_true", help="install only")
    p.add_argument("--all", action="store_true", help="every board in the fleet")
    p.add_argument("--group", help="the boards in this group")
    p.add_argument("--tag", help="the boards with this tag")
    p.add_argument("--parallel", type=int, default=16, metavar="N",
                   help="boards pushed at once (16)")

    b = sub.add_parser("bench", help="time a model on a board", epilog=PUSH_EXAMPLES,
                       formatter_class=fmt)
    common(b)
    b.add_argument("model", nargs="?", default=None, metavar="NAME[@VERSION]",
                   help="default: every active model")
    b.add_argument("--runs", type=int, default=100)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--threads", type=int, help="default: the board profile's")
    b.add_argument("--delegate", default=None, choices=["auto", "xnnpack", "none", "edgetpu"],
                   help="default: edgetpu on a board whose profile has an Edge TPU, else auto")
    b.add_argument("--allow-cpu", action="store_true",
                   help="time it even when nothing runs on the Edge TPU (said first; without "
                        "it that is the error silent_cpu_fallback)")

    e = sub.add_parser("eval", help="accuracy of a model on a board", epilog=PUSH_EXAMPLES,
                       formatter_class=fmt)
    common(e)
    e.add_argument("model", metavar="NAME[@VERSION]")
    e.add_argument("--data", type=Path, required=True, metavar="FILE.npz", help="x, y")
    e.add_argument("--reference", type=Path, metavar="FILE.npz", help="host outputs")

    s = sub.add_parser("status", help="active and previous versions, agent, health")
    s.add_argument("board", nargs="?", metavar="BOARD")
    s.add_argument("--all", action="store_true", help="every board in the fleet")
    common(s, board=False)

    r = sub.add_parser("rollback", help="switch a board back to a model's previous version")
    common(r)
    r.add_argument("model", metavar="NAME")

    bs = sub.add_parser("bootstrap", help="set a board up: agent + runtime wheels in a venv "
                                          "(offline with --wheelhouse)")
    common(bs)
    bs.add_argument("--wheelhouse", type=Path, metavar="DIR",
                    help="wheels to install from (the board needs no internet; make them with "
                         "`edgedeploy wheelhouse --for BOARD -d DIR`); without it the "
                         "board's pip uses its own index (Termux: pkg)")
    from .wheelhouse_cli import add_parser as add_wheelhouse
    add_wheelhouse(sub, common)

    ro = sub.add_parser("rollout", help="roll a model out to many boards: canary, waves, "
                                        "gates, automatic rollback, crash-safe journal",
                        epilog=ROLLOUT_EXAMPLES, formatter_class=fmt)
    ro.add_argument("target", nargs="?", metavar="MODEL | status | cancel",
                    help="a .tflite with its manifest or a bundle dir; or `status [ID]`, "
                         "`cancel ID`")
    ro.add_argument("id", nargs="?", metavar="ID", help="rollout id (status, cancel)")
    ro.add_argument("--resume", metavar="ID", help="continue a rollout whose host process died")
    ro.add_argument("--group", help="the boards in this group")
    ro.add_argument("--tag", help="the boards with this tag")
    ro.add_argument("--canary", default="1", metavar="N|P%", help="first wave (1)")
    ro.add_argument("--waves", default="10%,50%,100%", metavar="SPEC",
                    help="cumulative shares after the canary, or `exp` (10%%,50%%,100%%)")
    ro.add_argument("--parallel", type=int, default=16, metavar="N",
                    help="boards worked on at once (16)")
    ro.add_argument("--gate", action="append", default=[], metavar="EXPR",
                    help="e.g. accuracy>=0.97, p99_ms<=25, agreement>=0.99 (repeatable)")
    ro.add_argument("--gate-data", type=Path, metavar="FILE.npz",
                    help="x, y (and reference `outputs` for agreement); travels in the bundle")
    ro.add_argument("--max-accuracy-drop", type=float, metavar="POINTS",
                    help="vs the version being replaced, on the same board")
    ro.add_argument("--max-latency-increase", metavar="PCT",
                    help="p99 vs the version being replaced, e.g. 10%%")
    ro.add_argument("--max-failures", default="5%", metavar="N|P%",
                    help="abort (and roll back) past this many failed boards (5%%)")
    ro.add_argument("--min-sample", type=int, default=5, metavar="N",
                    help="finished boards before --max-failures can trigger (5)")
    ro.add_argument("--timeout", type=float, default=300, metavar="S",
                    help="per board command (300)")
    ro.add_argument("--retries", type=int, default=1, metavar="N", help="per step on a broken link (1)")
    ro.add_argument("--bench-runs", type=int, default=50, metavar="N",
                    help="timed runs for the latency gates (50)")
    ro.add_argument("--skip-incompatible", action="store_true",
                    help="leave out boards the model doesn't fit (listed as skipped)")
    ro.add_argument("--dry-run", action="store_true", help="preflight and print the plan only")
    ro.add_argument("--journal", type=Path, metavar="FILE",
                    help="rollout journal (SQLite; default ~/.local/share/edgedeploy/"
                         "rollouts.db or $EDGEDEPLOY_ROLLOUTS)")
    common(ro, board=False)

    t = sub.add_parser("targets", help="board profiles and the fleet: list, show, check")
    t.add_argument("action", choices=["list", "show", "check", "profiles"])
    t.add_argument("board", nargs="?", metavar="BOARD")
    common(t, board=False)

    rp = sub.add_parser("report", help="tables (and HTML with plots) from the results history")
    rp.add_argument("--model")
    rp.add_argument("--board")
    rp.add_argument("--html", type=Path, metavar="FILE")
    rp.add_argument("--db", type=Path, metavar="FILE")
    rp.add_argument("--json", action="store_true")


def _fleet_path(a) -> Path:
    return a.fleet or Path(os.environ.get("EDGEDEPLOY_FLEET", "fleet.toml"))


def resolve_board(a, name: str):
    from ..targets import load_fleet, local_board

    path = _fleet_path(a)
    if name == "local" and not path.exists():
        return local_board()
    fleet = load_fleet(path)
    if name == "local" and "local" not in fleet.boards:
        return local_board()
    return fleet.get(name)


def _session(a, name: str):
    from .deploy import BoardSession

    return BoardSession(resolve_board(a, name), accept_new_host_key=a.accept_new_host_key)


def _results(a):
    from .results import Results

    return Results(a.db)


def _print(a, payload, text: str) -> None:
    print(json.dumps(payload, indent=2) if a.json else text)


def cmd_push(a) -> int:
    from .bundle import load_bundle

    bundle = load_bundle(a.model)
    if a.all or a.group or a.tag or len(a.boards) > 1:
        return _push_many(a, bundle)
    if not a.boards:
        raise InputError("name a BOARD (or several), or pass --all / --group G / --tag T")
    return _push_one(a, bundle, a.boards[0])


def _push_one(a, bundle, name: str) -> int:
    from rich.progress import Progress

    with _session(a, name) as s:
        if a.json or not sys.stderr.isatty():
            result = s.push(bundle, activate=not a.no_activate)
        else:
            with Progress(transient=True) as bar:
                task = bar.add_task(f"{name}: {bundle.name}", total=bundle.size)
                result = s.push(bundle, activate=not a.no_activate,
                                progress=lambda done, total: bar.update(task, completed=done))
    payload = _record_push(a, bundle, result)
    _print(a, payload, _push_line(result))
    return 0


def _record_push(a, bundle, result) -> dict:
    payload = {**result.to_dict(), "size": bundle.manifest.size}
    _results(a).record("push", result.board, payload, model=bundle.name,
                       version=bundle.version, label=bundle.manifest.label)
    return payload


def _push_line(r) -> str:
    state = f"active (previous {r.previous})" if r.activated else "installed"
    return (f"{r.board}: {r.name} {r.version} ({r.label}) {state}; sent {r.bytes_sent} model "
            f"bytes{', agent updated' if r.agent_uploaded else ''} in {r.seconds:.2f} s")


def _push_many(a, bundle) -> int:
    import time

    from ..targets import load_fleet
    from .deploy import PushResult, push_many

    fleet = load_fleet(_fleet_path(a))
    boards = fleet.select(a.boards or None, group=a.group, tag=a.tag)
    if not boards:
        raise InputError(f"{fleet.path}: no board matches", hint="see `edgedeploy targets list`")

    def done(name: str, out) -> None:
        if not a.json:
            print(_push_line(out) if isinstance(out, PushResult) else f"{name}: FAILED: {out}",
                  flush=True)

    t0 = time.perf_counter()
    results = push_many(boards, bundle, activate=not a.no_activate, parallel=a.parallel,
                        accept_new_host_key=a.accept_new_host_key, on_done=done)
    rows, failed = [], 0
    for name, out in results.items():
        if isinstance(out, PushResult):
            rows.append(_record_push(a, bundle, out))
        else:
            failed += 1
            rows.append({"board": name, "error": str(out), "code": out.code})
    summary = {"boards": len(boards), "ok": len(boards) - failed, "failed": failed,
               "seconds": round(time.perf_counter() - t0, 3), "results": rows}
    _print(a, summary, f"{len(boards) - failed} of {len(boards)} boards on {bundle.name} "
                       f"{bundle.version}; {failed} failed; {summary['seconds']:.2f} s")
    return 1 if failed else 0


def cmd_bench(a) -> int:
    from .board_facts import bench_delegate

    res = _results(a)
    out = []
    with _session(a, a.board) as s:
        specs = [a.model] if a.model else \
            [e["name"] for e in s.agent("list")["models"] if e["current"]]
        if not specs:
            raise InputError(f"{a.board}: no active model to bench",
                             hint="push one, or name NAME@VERSION")
        for spec in specs:
            r = s.bench(spec, runs=a.runs, warmup=a.warmup, threads=a.threads,
                        delegate=bench_delegate(a.delegate, s.board.profile),
                        allow_cpu=a.allow_cpu)
            res.record("bench", a.board, r)
            out.append(r)
    if a.json:
        print(json.dumps(out if len(out) > 1 else out[0], indent=2))
    else:
        from .board_facts import bench_preamble

        for r in out:
            t = r["timing"]
            for line in bench_preamble(r):  # where it ran, emulation, throttling: said first
                print(f"{a.board}: {line}")
            print(f"{a.board}: {r['model']['name']} {r['model']['version']} "
                  f"({r['model']['mode']}, {r['runtime']['name']} {r['runtime']['version']}, "
                  f"{r['threads']} thread(s), delegate {r['delegate']['applied'] or 'none'}): "
                  f"p50 {t['p50_ms']:.3f} ms, p90 {t['p90_ms']:.3f}, p99 {t['p99_ms']:.3f}, "
                  f"load {r['load_ms']:.1f} ms, peak RSS {r['peak_rss_bytes'] // 1024} KB")
    return 0


def cmd_eval(a) -> int:
    for f in (a.data, a.reference):
        if f is not None and not f.is_file():
            raise InputError(f"{f}: no such data file")
    with _session(a, a.board) as s:
        r = s.eval(a.model, a.data, a.reference)
    _results(a).record("eval", a.board, r)
    ag = r.get("agreement")
    _print(a, r, f"{a.board}: {r['model']['name']} {r['model']['version']} "
                 f"({r['model']['mode']}): top-1 {100 * r['top1']:.2f}% on {r['samples']} "
                 f"samples" + (f", agreement {100 * ag['top1_agreement']:.2f}%" if ag else ""))
    return 0


def cmd_status(a) -> int:
    from ..targets import load_fleet

    if a.all:
        names = list(load_fleet(_fleet_path(a)).boards)
    elif a.board:
        names = [a.board]
    else:
        raise InputError("name a BOARD or pass --all")
    out, failed = [], 0
    for n in names:
        try:
            with _session(a, n) as s:
                out.append(s.status())
        except EdgeDeployError as exc:
            if not a.all:
                raise
            failed += 1
            out.append({"board": n, "error": str(exc)})
    if a.json:
        print(json.dumps(out if a.all else out[0], indent=2))
    else:
        for st in out:
            if "error" in st:
                print(f"{st['board']}: UNREACHABLE/FAILED: {st['error']}")
                continue
            models = ", ".join(f"{m['name']} {m['current']} (previous {m['previous']})"
                               for m in st["models"]) or "no models"
            agent = "agent current" if st["agent_current"] else \
                ("agent outdated" if st["agent"] else "no agent")
            print(f"{st['board']}: {models}; {agent}; health {st['health']}")
    return 1 if failed else 0


def cmd_rollback(a) -> int:
    with _session(a, a.board) as s:
        r = s.rollback(a.model)
    _print(a, r, f"{a.board}: {a.model} now {r['current']} (was {r['previous']})")
    return 0


def cmd_bootstrap(a) -> int:
    from .bootstrap import bootstrap

    board = resolve_board(a, a.board)
    with _session(a, a.board) as s:
        r = bootstrap(s, a.wheelhouse)
    if board.python != "python3":
        r["note"] = (f"the inventory sets python = {board.python} for {a.board}; remove it to "
                     f"use {r['venv']}")
    _print(a, r, f"{a.board}: {r['runtime']} {r['runtimes'].get(r['runtime'])} with numpy "
                 f"{r['numpy']} in {r['venv']} (Python {r['python']}, {r['arch']}); sent "
                 f"{len(r['wheels'])} wheel(s), {r['bytes_sent']} bytes"
                 f"{'; agent installed' if r['agent_uploaded'] else ''}"
                 + (f"\nnote: {r['note']}" if "note" in r else ""))
    return 0


def _rollout_opts(a):
    from .rollout import Options

    inc = a.max_latency_increase
    try:
        inc = float(str(inc).rstrip("%")) if inc is not None else None
    except ValueError as exc:
        raise InputError(f"--max-latency-increase {a.max_latency_increase!r}: expected a "
                         f"percentage such as 10%") from exc
    if a.gate_data is not None and not a.gate_data.is_file():
        raise InputError(f"{a.gate_data}: no such gate data file")
    return Options(canary=a.canary, waves=a.waves, parallel=a.parallel, gates=a.gate,
                   max_accuracy_drop=a.max_accuracy_drop, max_latency_increase=inc,
                   max_failures=a.max_failures, min_sample=a.min_sample, timeout=a.timeout,
                   retries=a.retries, bench_runs=a.bench_runs,
                   skip_incompatible=a.skip_incompatible,
                   accept_new_host_key=a.accept_new_host_key,
                   gate_data=str(a.gate_data.resolve()) if a.gate_data else None)


def _rollout_bundle(model: str, gate_data: str | None):
    from .bundle import load_bundle
    from .rollout import GATE_FILE

    b = load_bundle(model)
    return b.with_files({GATE_FILE: Path(gate_data)}) if gate_data else b


def _emit(a):
    def emit(ev: dict) -> None:
        if a.json:
            return
        if "wave" in ev:
            print(f"wave {ev['wave']}{' (canary)' if ev['wave'] == 0 else ''}: "
                  f"{ev['todo']} of {ev['boards']} board(s) to do", file=sys.stderr, flush=True)
        else:
            extra = f": {ev['error']}" if ev.get("error") else ""
            print(f"  {ev['board']}: {ev['state']}{extra}", file=sys.stderr, flush=True)
    return emit


def _print_rollout(a, r: dict) -> int:
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"rollout {r['id']}: {r['model']} → {r['version']}: {r['state']}"
                        + (f" ({r['message']})" if r.get("message") else ""))
        for c in ("board", "wave", "old → new", "accuracy", "p99 ms", "outcome"):
            t.add_column(c)
        for b in r["boards"]:
            f = b["figures"] or {}
            t.add_row(b["board"], str(b["wave"]) if b["wave"] >= 0 else "–",
                      f"{b['old'] or '–'} → {b['new']}",
                      f"{100 * f['accuracy']:.2f}%" if "accuracy" in f else "–",
                      f"{f['p99_ms']:.3f}" if "p99_ms" in f else "–",
                      b["state"] + (f": {b['error']}" if b["error"] else ""))
        Console(width=160).print(t)
        print(", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items())))
    return 0 if r["state"] == "succeeded" else 1


def cmd_rollout(a) -> int:
    from ..targets import load_fleet
    from . import rollout as ro

    j = ro.Journal(a.journal)
    if a.target == "status":
        return _print_rollout(a, ro.report(j, j.rollout(a.id)["id"]))
    if a.target == "cancel":
        if not a.id:
            raise InputError("rollout cancel needs the rollout ID")
        r = ro.cancel(j, a.id)
        _print(a, r, f"rollout {a.id}: {r['state']} ({r['message']})")
        return 0
    if a.resume:
        row = j.rollout(a.resume)
        fleet = load_fleet(Path(row["fleet"]))
        bundle = _rollout_bundle(a.target or row["bundle"], row["options"].get("gate_data"))
        return _print_rollout(a, ro.resume(j, a.resume, fleet.boards, bundle, _emit(a)))
    if not a.target:
        raise InputError("name the MODEL to roll out (or `status`, `cancel ID`, --resume ID)")
    opts = _rollout_opts(a)
    fleet_path = _fleet_path(a)
    fleet = load_fleet(fleet_path)
    boards = fleet.select(None, group=a.group, tag=a.tag)
    if not boards:
        raise InputError(f"{fleet_path}: no board matches", hint="see `edgedeploy targets list`")
    bundle = _rollout_bundle(a.target, opts.gate_data)
    r = ro.start(j, boards, bundle, str(Path(a.target).resolve()), str(fleet_path.resolve()),
                 opts, dry_run=a.dry_run, emit=_emit(a))
    if a.dry_run:
        _print(a, r, "\n".join([f"{r['model']} {r['version']}: gates "
                                f"{', '.join(r['gates']) or 'none'}"]
                               + [f"wave {i}{' (canary)' if i == 0 else ''}: {', '.join(w)}"
                                  for i, w in enumerate(r["waves"])]
                               + [f"skipped {k}: {v}" for k, v in r["skipped"].items()]
                               + [f"note {k}: {v}" for k, v in r["notes"].items()]))
        return 0
    return _print_rollout(a, r)


def cmd_targets(a) -> int:
    from dataclasses import asdict

    from ..targets import load_fleet, load_profile, profile_names

    if a.action == "profiles":
        profs = [asdict(load_profile(n)) for n in profile_names()]
        _print(a, profs, "\n".join(f"{p['name']:16} {p['description']}" for p in profs))
        return 0
    fleet = load_fleet(_fleet_path(a))
    boards = fleet.select([a.board] if a.board else None)
    if a.action == "list":
        rows = [{"name": b.name, "address": b.address, "profile": b.profile.name,
                 "tags": b.tags, "groups": b.groups} for b in boards]
        _print(a, rows, "\n".join(f"{r['name']:12} {r['address']:28} {r['profile']:16} "
                                  f"tags={','.join(r['tags'])} groups={','.join(r['groups'])}"
                                  for r in rows))
        return 0
    if a.action == "show":
        rows = [{**asdict(b), "profile": asdict(b.profile)} for b in boards]
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
        return 0
    from .board_facts import edgetpu_check
    from .deploy import board_problems

    failed, out = 0, []
    for b in boards:
        try:
            with _session(a, b.name) as s:
                info = s.state()["info"]  # installs our agent where it is missing or old
            etpu = edgetpu_check(b.profile, info)
            problems = board_problems(b, info) + (etpu or {}).get("problems", [])
            out.append({"board": b.name, "ok": not problems, "problems": problems,
                        "arch": info["arch"], "python": info["python"],
                        "runtime": info["runtime"], "numpy": info["numpy"],
                        "emulated": info.get("emulated"), "board_model": info.get("board_model"),
                        "edgetpu": etpu})
        except EdgeDeployError as exc:
            out.append({"board": b.name, "ok": False, "problems": [str(exc)]})
        failed += 0 if out[-1]["ok"] else 1
    _print(a, out, "\n".join(
        f"{r['board']:12} {'ok' if r['ok'] else 'MISMATCH'} "
        + (f"{r.get('arch')} Python {r.get('python')} {r.get('runtime')} numpy {r.get('numpy')}"
           f"{' (emulated)' if r.get('emulated') else ''}"
           if r["ok"] else "; ".join(r["problems"]))
        + (f"\n{'':13}{r['edgetpu']['line']}" if r.get("edgetpu") else "") for r in out))
    return 1 if failed else 0


def cmd_report(a) -> int:
    from .results import Results, summary, write_html

    res = Results(a.db)
    lines = summary(res, model=a.model, board=a.board)
    payload: dict = {"db": str(res.path), "rows": lines}
    if a.html:
        payload["html"] = str(write_html(res, a.html, model=a.model, board=a.board))
    if a.json:
        print(json.dumps(payload, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"edgedeploy results ({res.path})")
    for c in ("board", "model", "label", "version", "runtime", "size KB", "accuracy",
              "p50 ms", "p99 ms"):
        t.add_column(c, justify="right")
    for ln in lines:
        t.add_row(ln["board"] + (" (emulated)" if ln.get("emulated") else ""),
                  ln["model"] or "", ln["label"] or "", ln["version"],
                  ln["runtime"] or "", f"{ln['size'] / 1024:.1f}" if ln["size"] else "–",
                  f"{100 * ln['accuracy']:.2f}%" if ln["accuracy"] is not None else "–",
                  f"{ln['p50_ms']:.3f}" if ln["p50_ms"] else "–",
                  f"{ln['p99_ms']:.3f}" if ln["p99_ms"] else "–")
    Console(width=140).print(t)
    if a.html:
        print(f"wrote {payload['html']}")
    return 0


def _cmd_wheelhouse(a) -> int:
    from .wheelhouse_cli import cmd_wheelhouse

    return cmd_wheelhouse(a)


COMMANDS = {"wheelhouse": _cmd_wheelhouse, "rollout": cmd_rollout, "bootstrap": cmd_bootstrap,
            "push": cmd_push, "bench": cmd_bench, "eval": cmd_eval, "status": cmd_status,
            "rollback": cmd_rollback, "targets": cmd_targets, "report": cmd_report}
