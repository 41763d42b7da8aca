"""``edgedeploy rollout start | status | cancel | resume``: one model version to many boards,
through host/fleet. The handlers unpack the command line into typed values (Options, paths)
and call fleet.start / status / cancel / resume."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from .board import signed
from .common import RAW, Boards, add_board_options
from .render import dry_run_text, emit, rollout_event, rollout_table

if TYPE_CHECKING:
    from ..fleet import Options

VERBS = ("start", "status", "cancel", "resume")
JOURNAL_HELP = ("rollout journal (SQLite; default $EDGEDEPLOY_ROLLOUTS or "
                "~/.local/share/edgedeploy/rollouts.db)")
ABOUT = """Per wave: every board is staged (uploaded, checked, installed) before any is activated;
then each is gated on the board and committed or rolled back at once. A failed canary stops the
rollout; past --max-failures every board this rollout activated goes back. The journal keeps
every step, so `rollout resume` goes on after a crash without redoing finished boards."""
START_EXAMPLES = """examples:
  edgedeploy rollout start out/digits.int8.tflite --fleet fleet.toml --dry-run
  edgedeploy rollout start out/digits.int8.tflite --group kitchen --gate-data gate.npz \\
      --gate "accuracy>=0.97" --gate "p99_ms<=25" --max-accuracy-drop 0.5
  edgedeploy rollout start out/digits.int8.tflite --canary 5% --waves exp --max-failures 3
  edgedeploy rollout start out/digits.int8.tflite --via s3://fleet-bucket/prod --timeout 600

With --via (pull mode) the controller never connects to a board: each wave's boards are moved
in their cohort's signed desired state and their status objects are read until each says what
it did (its gates run on the board before it activates), or --timeout passes (give it a few
poll intervals). A gate failed on a board leaves its old version active; an abort moves every
board back to its old version in the desired state.

""" + ABOUT
STATUS_EXAMPLES = """examples:
  edgedeploy rollout status                        # the latest rollout
  edgedeploy rollout status 20261124-101500-3f2a --json"""
CANCEL_EXAMPLES = """examples:
  edgedeploy rollout cancel 20261124-101500-3f2a

A running rollout stops before its next wave; boards already updated stay updated."""
RESUME_EXAMPLES = """examples:
  edgedeploy rollout resume 20261124-101500-3f2a
  edgedeploy rollout resume 20261124-101500-3f2a out/digits.int8.tflite   # the bundle moved

Goes on with a rollout whose host process died, from where each board really is; for one that
ended with stranded boards, retries their rollbacks."""


def register(sub: Any) -> None:
    ro = sub.add_parser("rollout", help="roll a model out to many boards: canary, waves, "
                                        "gates, automatic rollback, crash-safe journal",
                        description="Roll a model out to many boards.",
                        epilog=START_EXAMPLES.split("\n\n")[0].replace(
                            "examples:", "examples (see `rollout VERB --help`):") + "\n  "
                        "edgedeploy rollout status ; edgedeploy rollout resume ID ; "
                        "edgedeploy rollout cancel ID\n\n" + ABOUT, formatter_class=RAW)
    verbs = ro.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    s = verbs.add_parser("start", help="check, plan and run a rollout", epilog=START_EXAMPLES,
                         formatter_class=RAW)
    s.add_argument("model", metavar="MODEL",
                   help="a .tflite (with its manifest, or bare: imported), or a bundle dir")
    s.add_argument("--group", help="the boards in this group")
    s.add_argument("--tag", help="the boards with this tag")
    w = s.add_argument_group("waves")
    w.add_argument("--canary", default="1", metavar="N|P%", help="first wave (1)")
    w.add_argument("--waves", default="10%,50%,100%", metavar="SPEC",
                   help="cumulative shares after the canary (10%%,50%%,100%%), counts added "
                        "one after the other (1,1,1), or `exp` (each twice the last)")
    w.add_argument("--parallel", type=int, default=16, metavar="N",
                   help="boards worked on at once (16)")
    w.add_argument("--no-delta", action="store_true",
                   help="always send the whole model file (by default a board that holds an "
                        "earlier version gets a delta when it is smaller)")
    g = s.add_argument_group("gates (measured on each board after its activation)")
    g.add_argument("--gate", action="append", default=[], metavar="EXPR",
                   help="e.g. accuracy>=0.97, p99_ms<=25, agreement>=0.99 (repeatable)")
    g.add_argument("--gate-data", type=Path, metavar="FILE.npz",
                   help="x, y (and reference `outputs` for agreement); travels in the bundle")
    g.add_argument("--max-accuracy-drop", type=float, metavar="POINTS",
                   help="vs the version being replaced, on the same board")
    g.add_argument("--max-latency-increase", metavar="PCT",
                   help="p99 vs the version being replaced, e.g. 10%%")
    g.add_argument("--bench-runs", type=int, default=50, metavar="N",
                   help="timed runs for the latency gates (50)")
    f = s.add_argument_group("failures")
    f.add_argument("--max-failures", default="5%", metavar="N|P%",
                   help="abort (and roll back) past this many failed boards (5%%)")
    f.add_argument("--min-sample", type=int, default=5, metavar="N",
                   help="finished boards before --max-failures can trigger (5)")
    f.add_argument("--timeout", type=float, default=300, metavar="S",
                   help="per board command (300)")
    f.add_argument("--retries", type=int, default=1, metavar="N",
                   help="per step on a broken link (1)")
    f.add_argument("--skip-incompatible", action="store_true",
                   help="leave out boards the model doesn't fit (listed as skipped)")
    s.add_argument("--dry-run", action="store_true", help="preflight and print the plan only")
    s.add_argument("--journal", type=Path, metavar="FILE", help=JOURNAL_HELP)
    from .pull import add_via

    add_via(s, "the same plan, carried out")
    add_board_options(s, board=False)
    s.set_defaults(func=run_start)

    st = verbs.add_parser("status", help="a rollout's boards and figures (the latest one "
                                         "without ID)", epilog=STATUS_EXAMPLES,
                          formatter_class=RAW)
    st.add_argument("id", nargs="?", metavar="ID")
    st.add_argument("--journal", type=Path, metavar="FILE", help=JOURNAL_HELP)
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=run_status)

    c = verbs.add_parser("cancel", help="stop a running rollout before its next wave",
                         epilog=CANCEL_EXAMPLES, formatter_class=RAW)
    c.add_argument("id", metavar="ID")
    c.add_argument("--journal", type=Path, metavar="FILE", help=JOURNAL_HELP)
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=run_cancel)

    r = verbs.add_parser("resume", help="go on with a rollout whose host process died",
                         epilog=RESUME_EXAMPLES, formatter_class=RAW)
    r.add_argument("id", metavar="ID")
    r.add_argument("model", nargs="?", metavar="MODEL",
                   help="the bundle, when it is no longer where the rollout found it")
    r.add_argument("--journal", type=Path, metavar="FILE", help=JOURNAL_HELP)
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=run_resume)


def legacy(argv: list[str]) -> tuple[list[str], str | None]:
    """The spellings before `rollout VERB` (``rollout MODEL …``, ``rollout --resume ID``,
    ``rollout status|cancel`` after options), rewritten; and a note saying so (None: the
    command line was already current)."""
    if "rollout" not in argv:
        return argv, None
    i = argv.index("rollout")
    head, rest = argv[:i + 1], argv[i + 1:]
    if not rest or rest[0] in VERBS or rest[0] in ("-h", "--help"):
        return argv, None
    if "--resume" in rest:
        j = rest.index("--resume")
        rid = rest[j + 1:j + 2]
        rest = rest[:j] + rest[j + 2:]
        return head + ["resume", *rid, *rest], "`rollout --resume ID` is now `rollout resume ID`"
    verb = next((t for t in rest if t in VERBS), None)
    if verb is not None:
        rest.remove(verb)
        return head + [verb, *rest], None
    return head + ["start", *rest], "`rollout MODEL` is now `rollout start MODEL`"


def _journal(path: Path | None) -> Any:
    from ..fleet import Journal

    return Journal(path)


def _show(report: Any, as_json: bool) -> int:
    r = report.to_dict()
    if as_json:
        emit(True, r, "")
    else:
        rollout_table(r)
    return 0 if report.ok else 1


def _events(as_json: bool) -> Any:
    return None if as_json else rollout_event


# -- start ---------------------------------------------------------------------------------
def run_start(a: argparse.Namespace) -> int:
    from ..fleet import Options

    if a.no_delta:
        from ..transfer import configure

        configure(enabled=False)

    inc = a.max_latency_increase
    try:
        increase = float(str(inc).rstrip("%")) if inc is not None else None
    except ValueError as exc:
        raise InputError(f"--max-latency-increase {inc!r}: expected a percentage such as "
                         f"10%") from exc
    options = Options(canary=a.canary, waves=a.waves, parallel=a.parallel, gates=a.gate,
                      max_accuracy_drop=a.max_accuracy_drop, max_latency_increase=increase,
                      max_failures=a.max_failures, min_sample=a.min_sample,
                      timeout=a.timeout, retries=a.retries, bench_runs=a.bench_runs,
                      skip_incompatible=a.skip_incompatible,
                      accept_new_host_key=a.accept_new_host_key,
                      gate_data=str(a.gate_data.resolve()) if a.gate_data else None,
                      **_via_options(a.via, a.endpoint, Boards.from_args(a)))
    return start_command(Path(a.model), options, Boards.from_args(a), a.journal, group=a.group,
                         tag=a.tag, dry_run=a.dry_run, as_json=a.json)


def start_command(model: Path, options: "Options", where: Boards, journal: Path | None, *,
                  group: str | None, tag: str | None, dry_run: bool, as_json: bool) -> int:
    from .. import fleet

    options.validate()  # before the fleet file, the bundle or any board is read
    boards = where.fleet().select(None, group=group, tag=tag)
    if not boards:
        raise InputError(f"{where.fleet_path}: no board matches",
                         hint="see `edgedeploy targets list`")
    via = _via(options, where)
    bundle = signed(fleet.rollout_bundle(model, options.gate_data), where)
    out = fleet.start(_journal(journal), boards, bundle, str(model.resolve()),
                      str(where.fleet_path.resolve()), options, dry_run=dry_run,
                      emit=_events(as_json), via=via)
    if isinstance(out, fleet.DryRun):
        r = out.to_dict()
        emit(as_json, r, dry_run_text(r))
        return 0
    return _show(out, as_json)


# -- status, cancel, resume ----------------------------------------------------------------
def run_status(a: argparse.Namespace) -> int:
    return status_command(a.id, a.journal, as_json=a.json)


def status_command(rollout_id: str | None, journal: Path | None, *, as_json: bool) -> int:
    from .. import fleet

    j = _journal(journal)
    return _show(fleet.report(j, j.rollout(rollout_id).id), as_json)


def run_cancel(a: argparse.Namespace) -> int:
    return cancel_command(a.id, a.journal, as_json=a.json)


def cancel_command(rollout_id: str, journal: Path | None, *, as_json: bool) -> int:
    from .. import fleet

    r = fleet.cancel(_journal(journal), rollout_id).to_dict()
    emit(as_json, r, f"rollout {rollout_id}: {r['state']} ({r['message']})")
    return 0


def run_resume(a: argparse.Namespace) -> int:
    return resume_command(a.id, Path(a.model) if a.model else None, a.journal, as_json=a.json)


def resume_command(rollout_id: str, model: Path | None, journal: Path | None, *,
                   as_json: bool) -> int:
    """The fleet file, the bundle and the options are the ones the rollout started with (its
    journal row); MODEL: the bundle, when it has moved."""
    from ...targets import load_fleet
    from .. import fleet

    j = _journal(journal)
    row = j.rollout(rollout_id)
    where = Boards(Path(row.fleet))
    boards = load_fleet(Path(row.fleet)).boards
    bundle = signed(fleet.rollout_bundle(model or row.bundle, row.options.gate_data), where)
    return _show(fleet.resume(j, rollout_id, boards, bundle, _events(as_json),
                              via=_via(row.options, where)), as_json)


def _via_options(url: str | None, endpoint: str | None, where: Boards) -> dict:
    """--via / --endpoint as the journal keeps them: '-' and a missing endpoint filled in from
    the fleet file's [pull] table (a resume then needs nothing else)."""
    if not url:
        return {"via": None, "via_endpoint": None}
    pull = where.fleet().pull if where.fleet_path.exists() else None
    if url == "-":
        if pull is None or not pull.store:
            raise InputError(f"--via -: {where.fleet_path} has no [pull] store")
        url = pull.store
    if endpoint is None and pull is not None and url.startswith("s3://"):
        endpoint = pull.endpoint
    return {"via": url, "via_endpoint": endpoint}


def _via(options: "Options", where: Boards) -> Any:
    """The object store of a pull-mode rollout (None: SSH)."""
    if not options.via:
        return None
    from .pull import via_of

    return via_of(options.via, options.via_endpoint, where)

