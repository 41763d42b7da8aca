"""The board-facing subcommands' parsers (push, bench, eval, status, rollback, remove,
bootstrap, targets) and the handlers of push, bootstrap and targets; bench, eval, status,
rollback, remove and targets check run on one board or many in fleetwide.py. Each ``run_*``
unpacks the command line once; the ``*_command`` functions take typed values and do the work through host/deploy.py (one
board) or host/fleet (many)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...errors import InputError
from .common import RAW, Boards, add_board_options, add_selection_options
from .render import emit, push_line

EXAMPLES = """
BOARD is a name in the fleet file (--fleet, else $EDGEDEPLOY_FLEET, else ./fleet.toml),
or `local`. Several boards (BOARD BOARD…, --all, --group G, --tag T) are worked on --parallel N
at a time; a failing board doesn't stop the others, the run ends with one table and exits 1
if any board failed. Unknown SSH host keys are refused unless --accept-new-host-key.
The fleet file's keys: the README's "fleet.toml reference"."""
PUSH_EXAMPLES = """examples:
  edgedeploy push out/digits.int8.tflite pi-kitchen
  edgedeploy push vendor/mobilenet_v2_edgetpu.tflite coral-1 # a bare .tflite: imported
  edgedeploy push out/digits.int8.tflite local               # this machine, no SSH
  edgedeploy push out/digits.int8.tflite b0 --fleet fleet.toml --no-activate
  edgedeploy push out/digits.int8.tflite --all --parallel 32 --fleet fleet.toml
  edgedeploy push out/digits.int8.tflite --group kitchen --json
  edgedeploy push out/digits.int8.tflite b0 --force     # b0 is in an unfinished rollout
  edgedeploy push out/digits.int8.tflite b0 --allow-downgrade   # an older signed release
  edgedeploy push out/digits.int8.tflite pi-kitchen --no-delta   # the whole file, always

A board an unfinished rollout covers (its journal: --journal, $EDGEDEPLOY_ROLLOUTS) is refused
(exit 4) unless --force, which that rollout's journal records; the rollout then leaves the
board as the push left it (superseded).
Signed when the fleet file names signing_key (boards that trust signers take nothing else).
A board that stores an earlier version of the model this host pushed gets a delta in place of
the model file when it is smaller (the result line says "as a delta" and how many bytes).
""" + EXAMPLES
BENCH_EXAMPLES = """examples:
  edgedeploy bench b0 digits --runs 1000 --fleet fleet.toml
  edgedeploy bench b0 digits@3f2a9c1b0d4e --threads 4 --delegate none
  edgedeploy bench b0                          # every active model on b0, past one that fails
  edgedeploy bench --all digits --parallel 8   # every board, one table
  edgedeploy bench b0 digits --op-profile      # + the op list (and why no per-op times)
  edgedeploy bench coral-cam digits_edgetpu         # Edge TPU profile: the Edge TPU delegate
  edgedeploy bench coral-cam digits --allow-cpu     # knowingly time a model the TPU can't take
  edgedeploy bench local                       # every active model on this machine

The first lines say where the ops ran (Edge TPU, XNNPACK, CPU) and warn about an emulated
board or one that throttled during the timed runs. On a board whose profile has an Edge TPU,
a run with nothing on the Edge TPU is the error silent_cpu_fallback unless --allow-cpu.
""" + EXAMPLES
EVAL_EXAMPLES = """examples:
  edgedeploy eval b0 digits --data test.npz --fleet fleet.toml
  edgedeploy eval b0 digits --data test.npz --reference host_outputs.npz --json
  edgedeploy eval b0 landmarker --data frames.npz --reference host_outputs.npz
  edgedeploy eval b0 detector --data labelled.npz --output scores
  edgedeploy eval --group kitchen digits@3f2a9c1b0d4e --data test.npz

Data: one array per model input, keyed by the input's name (x for a model with one input),
and labels y (optional). Reference: the host's outputs keyed by output name (outputs for one
output): each output's max and mean abs error and cosine similarity.
""" + EXAMPLES
STATUS_EXAMPLES = """examples:
  edgedeploy status b0 --fleet fleet.toml
  edgedeploy status --all --json
  edgedeploy status --tag camera --parallel 32
  edgedeploy status --via s3://fleet-bucket/prod     # pull mode: no board is reached
  edgedeploy status --via -                          # the fleet file's [pull] store

With --via: each board's last status report and its age; STALE past --stale-polls polls
(exit 1 if any board is stale or has never reported).
""" + EXAMPLES
ROLLBACK_EXAMPLES = """examples:
  edgedeploy rollback b0 digits --fleet fleet.toml
  edgedeploy rollback --group canary digits    # every canary board back to its previous
""" + EXAMPLES
REMOVE_EXAMPLES = """examples:
  edgedeploy remove b0 digits@3f2a9c1b0d4e      # one version (not the active one)
  edgedeploy remove b0 digits --fleet fleet.toml  # the whole model, the active version too
  edgedeploy remove --group canary digits@3f2a9c1b0d4e   # that version off every canary board
""" + EXAMPLES
BOOTSTRAP_EXAMPLES = """examples:
  edgedeploy wheelhouse --for pi-kitchen -d wheels/pi-kitchen   # the wheels that board needs
  edgedeploy bootstrap pi-kitchen --wheelhouse wheels/pi-kitchen
  edgedeploy bootstrap phone                   # android-termux: pkg install, no wheels
""" + EXAMPLES
TARGETS_EXAMPLES = """examples:
  edgedeploy targets profiles
  edgedeploy targets list --fleet fleet.toml
  edgedeploy targets show b0
  edgedeploy targets check            # every board: arch, Python, runtime vs its profile
  edgedeploy targets check b0 b1 --parallel 2
  edgedeploy targets check --group kitchen --json

the fleet file (--fleet FILE, $EDGEDEPLOY_FLEET, ./fleet.toml): [defaults] holds any board key,
[boards.NAME] overrides them. Keys: host (address or ~/.ssh/config alias), user, port, key,
known_hosts, ssh_config (OpenSSH client config to read HostName/User/Port/IdentityFile/
UserKnownHostsFile/ProxyJump from), profile (see `targets profiles`), python, root, transport
(ssh|local), tags, groups, connect_timeout, command_timeout, resident_agent, resident_idle,
cohort (pull mode: the desired-state document the board follows). At the top of the file:
signing_key (sign bundles and desired states) and a [pull] table (store, endpoint, poll_every).

  [defaults]
  user = "pi"
  key = "~/.ssh/id_ed25519"
  profile = "rpi-aarch64"

  [boards.pi-kitchen]
  host = "192.168.1.40"
  groups = ["canary"]

Every key with its default: the README's "fleet.toml reference".
""" + EXAMPLES


def register(sub: Any) -> None:
    p = sub.add_parser("push", help="send a model to a board, install and activate it",
                       description="Send MODEL to one or more boards: checked, uploaded, "
                                   "installed, activated.", epilog=PUSH_EXAMPLES,
                       formatter_class=RAW)
    p.add_argument("model", metavar="MODEL",
                   help="a .tflite (with the manifest compile wrote, or bare: its manifest is "
                        "made from the file), or a bundle dir")
    p.add_argument("boards", nargs="*", metavar="BOARD", help="one or more boards")
    add_board_options(p, board=False)
    p.add_argument("--no-activate", action="store_true", help="install only")
    p.add_argument("--all", action="store_true", help="every board in the fleet")
    p.add_argument("--group", help="the boards in this group")
    p.add_argument("--tag", help="the boards with this tag")
    p.add_argument("--parallel", type=int, default=16, metavar="N",
                   help="boards pushed at once (16)")
    p.add_argument("--force", action="store_true",
                   help="push even to boards an unfinished rollout covers (recorded in its "
                        "journal)")
    p.add_argument("--journal", type=Path, metavar="FILE",
                   help="the rollout journal to check (default $EDGEDEPLOY_ROLLOUTS or "
                        "~/.local/share/edgedeploy/rollouts.db)")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="let boards take a release lower than they have run (signed bundles)")
    p.add_argument("--release", type=int, metavar="N",
                   help="sign with this release number (default: the manifest's creation time)")
    p.add_argument("--no-delta", action="store_true",
                   help="always send the whole model file (by default a board that holds an "
                        "earlier version gets a delta when it is smaller)")
    p.set_defaults(func=run_push)

    from . import fleetwide

    b = sub.add_parser("bench", help="time a model on one board or many",
                       description="Time NAME[@VERSION] (default: every active model) on each "
                                   "board; past a model or board that fails.",
                       epilog=BENCH_EXAMPLES, formatter_class=RAW)
    add_selection_options(b, model="[NAME[@VERSION]]")
    b.add_argument("--runs", type=int, default=100, help="timed invokes (100)")
    b.add_argument("--warmup", type=int, default=10, help="untimed invokes first (10)")
    b.add_argument("--threads", type=int, help="default: the board profile's")
    b.add_argument("--delegate", default=None, choices=["auto", "xnnpack", "none", "edgetpu"],
                   help="default: edgetpu on a board whose profile has an Edge TPU, else auto "
                        "(the runtime's default: XNNPACK where it applies)")
    b.add_argument("--allow-cpu", action="store_true",
                   help="time it even when nothing runs on the Edge TPU (said first; without "
                        "it that is the error silent_cpu_fallback)")
    b.add_argument("--op-profile", action="store_true",
                   help="also list every op and whether the delegate took it (per-op times: "
                        "see the note it prints)")
    b.set_defaults(func=fleetwide.run_bench)

    e = sub.add_parser("eval", help="accuracy of a model on one board or many",
                       epilog=EVAL_EXAMPLES, formatter_class=RAW)
    add_selection_options(e, model="NAME[@VERSION]")
    e.add_argument("--data", type=Path, required=True, metavar="FILE.npz",
                   help="inputs keyed by input name (x for one input), labels y (optional)")
    e.add_argument("--reference", type=Path, metavar="FILE.npz",
                   help="host outputs keyed by output name (outputs for one output): max/mean "
                        "abs error and cosine similarity per output")
    e.add_argument("--output", metavar="NAME",
                   help="the output labels and top-1 refer to (models with several)")
    e.set_defaults(func=fleetwide.run_eval)

    s = sub.add_parser("status", help="active and previous versions (mode, label), agent, "
                                      "health of one board or many",
                       epilog=STATUS_EXAMPLES, formatter_class=RAW)
    add_selection_options(s)
    from .pull import add_via

    add_via(s, "each board's last report and its age, read")
    s.add_argument("--stale-polls", type=int, default=3, metavar="N",
                   help="with --via: silent for more than N polls is stale (3)")
    s.set_defaults(func=fleetwide.run_status)

    r = sub.add_parser("rollback", help="switch boards back to a model's previous version",
                       epilog=ROLLBACK_EXAMPLES, formatter_class=RAW)
    add_selection_options(r, model="NAME")
    r.set_defaults(func=fleetwide.run_rollback)

    rm = sub.add_parser("remove", help="delete a model version from one board or many (or "
                                       "the whole model)",
                        description="Delete NAME@VERSION from each board's store (not the "
                                    "active version: activate or roll back first), or, with "
                                    "NAME alone, every version of the model and its pointer — "
                                    "a `serve` there stops serving it.",
                        epilog=REMOVE_EXAMPLES, formatter_class=RAW)
    add_selection_options(rm, model="NAME[@VERSION]")
    rm.set_defaults(func=fleetwide.run_remove)

    bs = sub.add_parser("bootstrap", help="set a board up: agent + runtime wheels in a venv "
                                          "(offline with --wheelhouse)",
                        epilog=BOOTSTRAP_EXAMPLES, formatter_class=RAW)
    add_board_options(bs)
    bs.add_argument("--wheelhouse", type=Path, metavar="DIR",
                    help="wheels to install from (the board needs no internet; make them with "
                         "`edgedeploy wheelhouse --for BOARD -d DIR`); without it the "
                         "board's pip uses its own index (Termux: pkg)")
    bs.set_defaults(func=run_bootstrap)

    t = sub.add_parser("targets", help="board profiles and the fleet: list, show, check",
                       epilog=TARGETS_EXAMPLES, formatter_class=RAW)
    t.add_argument("action", choices=["list", "show", "check", "profiles"])
    add_selection_options(t)
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
                        as_json=a.json, force=a.force, journal=a.journal,
                        allow_downgrade=a.allow_downgrade, release=a.release)


def push_command(model: Path, names: list[str], where: Boards, *, activate: bool, many: bool,
                 group: str | None, tag: str | None, parallel: int, as_json: bool,
                 force: bool = False, journal: Path | None = None,
                 allow_downgrade: bool = False, release: int | None = None) -> int:
    from ..bundle import load_bundle
    from ..fleet import guard_push

    bundle = signed(load_bundle(model), where, release)
    if many:
        boards = where.fleet().select(names or None, group=group, tag=tag)
        guard_push(journal, [b.name for b in boards], bundle.version, force=force)
        return _push_many(bundle, names, where, activate=activate, group=group, tag=tag,
                          parallel=parallel, as_json=as_json, allow_downgrade=allow_downgrade)
    guard_push(journal, names[:1], bundle.version, force=force)
    from rich.progress import Progress

    with where.session(names[0]) as s:
        if as_json or not sys.stderr.isatty():
            result = s.push(bundle, activate=activate, allow_downgrade=allow_downgrade)
        else:
            with Progress(transient=True) as bar:
                task = bar.add_task(f"{names[0]}: {bundle.name}", total=bundle.size)
                result = s.push(bundle, activate=activate, allow_downgrade=allow_downgrade,
                                progress=lambda done, total: bar.update(task, completed=done))
    emit(as_json, _record_push(where, bundle, result), push_line(result))
    return 0


def signed(bundle: Any, where: Boards, release: int | None = None) -> Any:
    """BUNDLE signed with the fleet file's signing_key, when it names one (a bundle that comes
    signed, with no key here, goes as it is)."""
    from ..signing import sign_bundle

    key = where.fleet().signing_key if where.fleet_path.exists() else None
    if key is None:
        if release is not None:
            raise InputError("--release needs a signing key: set signing_key in the fleet file")
        return bundle
    return sign_bundle(bundle, key, release)


def _record_push(where: Boards, bundle: Any, result: Any) -> dict:
    payload = {**result.to_dict(), "size": bundle.manifest.size}
    where.results().record("push", result.board, payload, model=bundle.name,
                           version=bundle.version, label=bundle.manifest.label)
    return payload


def _push_many(bundle: Any, names: list[str], where: Boards, *, activate: bool,
               group: str | None, tag: str | None, parallel: int, as_json: bool,
               allow_downgrade: bool = False) -> int:
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
                        accept_new_host_key=where.accept_new_host_key, on_done=done,
                        allow_downgrade=allow_downgrade)
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


# -- bootstrap ---------------------------------------------------------------------------
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
                     f"{r['numpy']} in {r['venv'] or 'the board’s own Python'} (Python "
                     f"{r['python']}, {r['arch']}); sent "
                     f"{len(r['wheels'])} wheel(s), {r['bytes_sent']} bytes"
                     f"{'; agent installed' if r['agent_uploaded'] else ''}"
                     + (f"\nnote: {r['note']}" if "note" in r else ""))
    return 0


# -- targets -------------------------------------------------------------------------------
def run_targets(a: argparse.Namespace) -> int:
    where = Boards.from_args(a)
    if a.action == "profiles":
        return targets_command("profiles", [], where, as_json=a.json)
    # no board named: every board (as `targets list` always did); `--all` says it outright
    sel = where.pick(a.targets, every=a.all, group=a.group, tag=a.tag, default_all=True)
    if a.action == "check":
        from .fleetwide import targets_check
        return targets_check(sel, where, parallel=a.parallel, as_json=a.json)
    return targets_command(a.action, sel.names, where, as_json=a.json)


def targets_command(action: str, names: list[str], where: Boards, *, as_json: bool) -> int:
    from ...targets import load_profile, profile_names

    if action == "profiles":
        profs = [asdict(load_profile(n)) for n in profile_names()]
        emit(as_json, profs, "\n".join(f"{p['name']:16} {p['description']}" for p in profs))
        return 0
    boards = [where.board(n) for n in names]
    if action == "list":
        rows = [{"name": b.name, "address": b.address, "profile": b.profile.name,
                 "tags": b.tags, "groups": b.groups} for b in boards]
        emit(as_json, rows, "\n".join(f"{r['name']:12} {r['address']:28} {r['profile']:16} "
                                      f"tags={','.join(r['tags'])} groups={','.join(r['groups'])}"
                                      for r in rows))
        return 0
    shown = [{**asdict(b), "profile": asdict(b.profile)} for b in boards]
    print(json.dumps(shown if len(shown) > 1 else shown[0], indent=2))
    return 0
