"""Signed bundles and pull mode: ``edgedeploy trust``, ``publish``, ``pull-setup``, and the
``--via`` halves of ``status`` and ``rollout start`` (which register themselves in board.py and
rollout.py and call the functions here). The object store's layout and documents are
device/desired.py's; what the controller does there is host/bucket.py's."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import EdgeDeployError, InputError
from .common import RAW, Boards, add_board_options
from .render import emit

if TYPE_CHECKING:
    from ..bucket import Via

TRUST_EXAMPLES = """examples:
  edgedeploy trust pi-kitchen pi-hall --signer ~/.ssh/id_ed25519.pub
  edgedeploy trust --all --signer release.pub --name release@ci --fleet fleet.toml
  edgedeploy trust b0 --signer new.pub --replace       # only this key from now on

A board with allowed signers takes only bundles (and pull-mode desired states) one of these
keys signed; `push` signs with the fleet file's signing_key."""
PUBLISH_EXAMPLES = """examples:
  edgedeploy publish out/digits.int8.tflite --store s3://fleet-bucket/prod --all
  edgedeploy publish out/digits.int8.tflite --group kitchen --gate "p99_ms<=25"
  edgedeploy publish out/digits.int8.tflite --boards b0 b1 --store http://127.0.0.1:8333/ed/fleet

Uploads the signed bundle (named by its sha256: nothing is sent when it is there) and writes
each cohort's signed desired state: the whole cohort when every board of it is chosen, else
those boards by name. Boards pick it up at their next poll. The store and its endpoint default
to the fleet file's [pull] store / endpoint; credentials come from AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN)."""


def register(sub: Any) -> None:
    register_setup(sub)
    t = sub.add_parser("trust", help="the keys whose signatures boards take (allowed signers)",
                       epilog=TRUST_EXAMPLES, formatter_class=RAW)
    t.add_argument("boards", nargs="*", metavar="BOARD")
    t.add_argument("--signer", action="append", required=True, type=Path, metavar="KEY.pub",
                   help="an OpenSSH public key (repeatable)")
    t.add_argument("--name", help="the signer's name (default: the key's comment)")
    t.add_argument("--replace", action="store_true", help="these keys only, from now on")
    t.add_argument("--all", action="store_true", help="every board in the fleet")
    t.add_argument("--group", help="the boards in this group")
    t.add_argument("--tag", help="the boards with this tag")
    add_board_options(t, board=False, results=False)
    t.set_defaults(func=run_trust)

    p = sub.add_parser("publish", help="pull mode: upload a signed bundle and set it as the "
                                       "desired state of boards", epilog=PUBLISH_EXAMPLES,
                       formatter_class=RAW)
    p.add_argument("model", metavar="MODEL", help="a .tflite with its manifest, or a bundle dir")
    p.add_argument("--store", metavar="URL",
                   help="s3://BUCKET/PREFIX or http(s)://HOST:PORT/BUCKET/PREFIX "
                        "(default: the fleet file's [pull] store)")
    p.add_argument("--endpoint", metavar="URL", help="the S3 endpoint for an s3:// store")
    p.add_argument("--boards", nargs="+", metavar="BOARD", help="these boards")
    p.add_argument("--all", action="store_true", help="every board in the fleet")
    p.add_argument("--group", help="the boards in this group")
    p.add_argument("--tag", help="the boards with this tag")
    g = p.add_argument_group("gates (run by each board before it activates the model)")
    g.add_argument("--gate", action="append", default=[], metavar="EXPR",
                   help="e.g. accuracy>=0.97, p99_ms<=25 (repeatable)")
    g.add_argument("--gate-data", type=Path, metavar="FILE.npz",
                   help="x, y (and reference `outputs`); travels in the bundle")
    g.add_argument("--max-accuracy-drop", type=float, metavar="POINTS")
    g.add_argument("--max-latency-increase", type=float, metavar="PCT")
    g.add_argument("--bench-runs", type=int, default=50, metavar="N")
    p.add_argument("--release", type=int, metavar="N", help="sign with this release number")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="boards may take it though they ran a higher release")
    add_board_options(p, board=False, results=False)
    p.set_defaults(func=run_publish)


def add_via(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--via", metavar="URL", help=f"{what} through an object store: "
                                                "s3://BUCKET/PREFIX or http(s)://HOST:PORT/"
                                                "BUCKET/PREFIX ('-': the fleet file's [pull] "
                                                "store)")
    p.add_argument("--endpoint", metavar="URL", help="the S3 endpoint for an s3:// --via")


def via_of(url: str | None, endpoint: str | None, where: Boards, *, need_key: bool = True
           ) -> "Via":
    from ..bucket import Via

    return Via.resolve(None if url == "-" else url, endpoint, where.fleet(), need_key=need_key)


# -- trust ---------------------------------------------------------------------------------
def run_trust(a: argparse.Namespace) -> int:
    return trust_command(a.boards, a.signer, Boards.from_args(a), name=a.name,
                         replace=a.replace, every=a.all, group=a.group, tag=a.tag,
                         as_json=a.json)


def trust_command(names: list[str], signers: list[Path], where: Boards, *, name: str | None,
                  replace: bool, every: bool, group: str | None, tag: str | None,
                  as_json: bool) -> int:
    from ...device.trust import signer_line
    from ..deploy import BoardSession

    lines = []
    for key in signers:
        try:
            text = key.expanduser().read_text()
        except OSError as exc:
            raise InputError(f"{key}: {exc.strerror or exc}",
                             hint="give the signer's OpenSSH public key (.pub)") from exc
        lines.append(signer_line(text, name))  # a bad key: an InputError before any board
    if not (names or every or group or tag):
        raise InputError("name a BOARD (or several), or pass --all / --group G / --tag T")
    boards = where.fleet().select(names or None, group=group, tag=tag)
    out, failed = [], 0
    for b in boards:
        try:
            with BoardSession(b, accept_new_host_key=where.accept_new_host_key) as s:
                s.state()  # the current agent (it has `trust`)
                out.append({"board": b.name, "signers": s.trust(lines, replace=replace)})
        except EdgeDeployError as exc:  # reported per board; exit 1 at the end
            failed += 1
            out.append({"board": b.name, "error": str(exc)})
    text = "\n".join(f"{r['board']}: {len(r['signers'])} allowed signer(s)" if "signers" in r
                     else f"{r['board']}: FAILED: {r['error']}" for r in out)
    emit(as_json, out, text)
    return 1 if failed else 0


# -- publish -------------------------------------------------------------------------------
def run_publish(a: argparse.Namespace) -> int:
    return publish_command(Path(a.model), Boards.from_args(a), store=a.store,
                           endpoint=a.endpoint, names=a.boards, every=a.all, group=a.group,
                           tag=a.tag, gates=a.gate, gate_data=a.gate_data,
                           max_accuracy_drop=a.max_accuracy_drop,
                           max_latency_increase=a.max_latency_increase,
                           bench_runs=a.bench_runs, release=a.release,
                           allow_downgrade=a.allow_downgrade, as_json=a.json)


def publish_command(model: Path, where: Boards, *, store: str | None, endpoint: str | None,
                    names: list[str] | None, every: bool, group: str | None, tag: str | None,
                    gates: list[str], gate_data: Path | None, max_accuracy_drop: float | None,
                    max_latency_increase: float | None, bench_runs: int,
                    release: int | None, allow_downgrade: bool, as_json: bool) -> int:
    from ...device import desired as dz
    from ..bucket import desired_after
    from ..fleet import Options, rollout_bundle
    from ..fleet.pull import cohort_of
    from ..signing import sign_bundle

    Options(gates=gates, gate_data=str(gate_data) if gate_data else None,
            max_accuracy_drop=max_accuracy_drop, max_latency_increase=max_latency_increase,
            bench_runs=bench_runs).validate()
    if not (names or every or group or tag):
        raise InputError("choose the boards: --boards B…, --all, --group G or --tag T")
    fleet = where.fleet()
    chosen = fleet.select(names, group=group, tag=tag)
    if not chosen:
        raise InputError(f"{fleet.path}: no board matches", hint="see `edgedeploy targets list`")
    via = via_of(store, endpoint, where)
    assert via.signing_key is not None  # Via.resolve saw to it
    bundle = sign_bundle(rollout_bundle(model, str(gate_data) if gate_data else None),
                         via.signing_key, release)
    cohorts: dict[str, list[str]] = {}
    for b in chosen:
        cohorts.setdefault(cohort_of(b), []).append(b.name)
    members: dict[str, set[str]] = {}
    for b in fleet.boards.values():
        members.setdefault(cohort_of(b), set()).add(b.name)
    written: dict[str, dict[str, Any]] = {}
    with via.bucket() as bucket:
        pub = bucket.publish_bundle(bundle)
        target = dz.Target(bundle.name, bundle.version, pub.sha256, pub.size, pub.key,
                           bundle.manifest.release, gates=tuple(gates),
                           max_accuracy_drop=max_accuracy_drop,
                           max_latency_increase=max_latency_increase, bench_runs=bench_runs,
                           allow_downgrade=allow_downgrade)
        for cohort, boards in sorted(cohorts.items()):
            whole = set(boards) == members[cohort] and not names
            doc = desired_after(bucket.desired(cohort), cohort, target,
                                None if whole else sorted(boards), now=time.time())
            bucket.put_desired(doc)
            written[cohort] = {"serial": doc.serial, "boards": "*" if whole else sorted(boards)}
        for w in bucket.warnings:
            print(f"edgedeploy publish: warning: {w}", file=sys.stderr)
    out = {"model": bundle.name, "version": bundle.version, "release": bundle.manifest.release,
           "store": str(via.location), "bundle": pub.key, "sha256": pub.sha256,
           "size": pub.size, "uploaded": pub.uploaded, "cohorts": written}
    text = (f"{bundle.name} {bundle.version} (release {bundle.manifest.release}) → "
            f"{via.location}/{pub.key}: {pub.uploaded} of {pub.size} bytes sent\n" +
            "\n".join(f"  desired/{c}.json serial {w['serial']}: "
                      f"{'every board' if w['boards'] == '*' else ', '.join(w['boards'])}"
                      for c, w in written.items()))
    emit(as_json, out, text)
    return 0


# -- status --via ---------------------------------------------------------------------------
def status_rows(via: "Via", boards: list[str], stale_polls: int, default_every: float
                ) -> list[dict]:
    """Each board's last report and its age (boards of the fleet first, then any others the
    bucket has)."""
    from ..bucket import stale

    with via.bucket() as bucket:
        statuses = bucket.statuses()
    now = time.time()
    rows = []
    for name in boards + sorted(set(statuses) - set(boards)):
        st = statuses.get(name)
        if st is None:
            rows.append({"board": name, "reported": False, "stale": True, "age_s": None})
            continue
        age, silent = stale(st, now, stale_polls, default_every)
        rows.append({"board": name, "reported": True, "cohort": st.cohort,
                     "time": st.time, "age_s": round(age, 1), "stale": silent,
                     "poll_every": st.poll_every, "models": st.models,
                     "results": {m: {k: r.get(k) for k in ("version", "outcome", "error",
                                                            "figures", "rollout")}
                                 for m, r in st.results.items()},
                     "error": st.error, "agent": st.agent, "signers": st.signers})
    return rows


def status_text(rows: list[dict], where: str) -> str:
    lines = [f"{where}:"]
    for r in rows:
        if not r["reported"]:
            lines.append(f"  {r['board']}: no status (not pulling?)")
            continue
        models = ", ".join(f"{m} {e.get('current')}" for m, e in sorted(r["models"].items())) \
            or "no model"
        last = "; ".join(f"{m} {x['version']}: {x['outcome']}"
                         + (f" ({x['error']})" if x.get("error") else "")
                         for m, x in sorted(r["results"].items()))
        flag = "STALE " if r["stale"] else ""
        lines.append(f"  {r['board']}: {flag}{models}; reported {r['age_s']:.0f} s ago"
                     + (f"; last: {last}" if last else "")
                     + (f"; {r['error']}" if r.get("error") else ""))
    return "\n".join(lines)


def status_via_command(url: str | None, endpoint: str | None, where: Boards, *,
                       stale_polls: int, as_json: bool) -> int:
    if stale_polls < 1:
        raise InputError(f"--stale-polls {stale_polls}: expected a whole number ≥ 1")
    fleet = where.fleet()
    via = via_of(url, endpoint, where, need_key=False)
    rows = status_rows(via, list(fleet.boards), stale_polls, fleet.pull.poll_every)
    emit(as_json, rows, status_text(rows, str(via.location)))
    return 1 if any(r["stale"] for r in rows) else 0


# -- pull-setup ----------------------------------------------------------------------------
SETUP_EXAMPLES = """examples:
  edgedeploy pull-setup --all --credentials creds.json --every 60      # [pull] store
  edgedeploy pull-setup pi-kitchen --source s3://fleet-bucket/prod \\
      --endpoint https://s3.example:9000 --credentials pi-kitchen.json --cohort kitchen

Over SSH, once: the current agent, the fleet file's signing key as the boards' allowed signer
(with --signer KEY.pub: that key instead), the store's settings and the board's credentials
(a JSON file {"access_key": …, "secret_key": …}, or one such object per board name), then the
resident agent polling every --every seconds. Give each board credentials that may write only
STATUS/BOARD/* under the prefix (README: Pull mode)."""


def register_setup(sub: Any) -> None:
    p = sub.add_parser("pull-setup", help="set boards up for pull mode (over SSH, once)",
                       epilog=SETUP_EXAMPLES, formatter_class=RAW)
    p.add_argument("boards", nargs="*", metavar="BOARD")
    p.add_argument("--source", metavar="URL", help="the store as the boards reach it "
                                                    "(default: the fleet file's [pull] store)")
    p.add_argument("--endpoint", metavar="URL", help="the S3 endpoint for an s3:// source")
    p.add_argument("--credentials", type=Path, metavar="FILE", help="JSON, see below")
    p.add_argument("--signer", action="append", type=Path, metavar="KEY.pub",
                   help="allowed signer (default: signing_key's .pub)")
    p.add_argument("--every", type=float, metavar="S", help="poll interval (the fleet file's "
                                                             "[pull] poll_every, else 60)")
    p.add_argument("--report-every", type=int, default=1, metavar="N",
                   help="status at least every N polls (1)")
    p.add_argument("--all", action="store_true", help="every board in the fleet")
    p.add_argument("--group", help="the boards in this group")
    p.add_argument("--tag", help="the boards with this tag")
    add_board_options(p, board=False, results=False)
    p.set_defaults(func=run_setup)


def run_setup(a: argparse.Namespace) -> int:
    import json

    from ..deploy import BoardSession
    from ..pullsetup import PullSetup, setup_pull

    where = Boards.from_args(a)
    fleet = where.fleet()
    if not (a.boards or a.all or a.group or a.tag):
        raise InputError("name a BOARD (or several), or pass --all / --group G / --tag T")
    source = a.source or fleet.pull.store
    if not source:
        raise InputError("no --source, and the fleet file has no [pull] store")
    pubs = [p.expanduser().read_text() for p in (a.signer or [])]
    if not pubs:
        if not fleet.signing_key:
            raise InputError("no --signer, and the fleet file has no signing_key")
        key = Path(fleet.signing_key)
        pub = key if key.suffix == ".pub" else key.with_name(key.name + ".pub")
        try:
            pubs = [pub.read_text()]
        except OSError as exc:
            raise InputError(f"{pub}: {exc.strerror or exc}",
                             hint="pass --signer KEY.pub") from exc
    creds: dict | None = None
    if a.credentials:
        try:
            creds = json.loads(a.credentials.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{a.credentials}: not a JSON credentials file ({exc})") from exc
    boards = fleet.select(a.boards or None, group=a.group, tag=a.tag)
    out, failed = [], 0
    for b in boards:
        mine = creds.get(b.name) if creds and "access_key" not in creds else creds
        setup = PullSetup(source, a.endpoint or fleet.pull.endpoint, b.cohort,
                          a.every or fleet.pull.poll_every, a.report_every)
        try:
            with BoardSession(b, accept_new_host_key=where.accept_new_host_key) as s:
                out.append(setup_pull(s, setup, pubs, mine))
        except EdgeDeployError as exc:
            failed += 1
            out.append({"board": b.name, "error": str(exc)})
    emit(a.json, out, "\n".join(f"{r['board']}: pulling every {a.every or fleet.pull.poll_every:g} s"
                                if "error" not in r else f"{r['board']}: FAILED: {r['error']}"
                                for r in out))
    return 1 if failed else 0
