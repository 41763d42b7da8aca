"""The board's pull-mode commands (registered by agent.py): ``pull`` and ``trust``.

::

    edgedeploy-agent pull [--source URL] [--endpoint URL] [--board NAME] [--cohort C]
                          [--credentials FILE] [--report-every N] [--timeout S]
                          [--allow-downgrade]
                          [--save [--save-only]] [--every S [--polls N]]
    edgedeploy-agent trust [--add LINE]… [--replace]

``pull`` runs one poll (device/pull.py), or with ``--every S`` polls until stopped (``--polls
N``: N polls), backing off while the store is down. Flags not given come from the saved config
(``--save`` writes the flags given over it, and copies the credentials file into the store;
``--save-only``: and no poll)::

    STORE/pull/config.json   (owner-only)
    {"source": "s3://BUCKET/PREFIX" | "http(s)://HOST:PORT/BUCKET/PREFIX",
     "endpoint": null | "http(s)://HOST:PORT", "board": "b0", "cohort": "all",
     "credentials": "/…/creds.json" | null, "report_every": 1, "poll_every": 60.0,
     "timeout": 15.0}

    credentials file (owner-only): {"access_key": "…", "secret_key": "…",
                                    "region": "us-east-1", "session_token": null}

Without a credentials file the usual AWS_* variables are used, else requests go unsigned (a
public-read bucket; the status PUT is then refused by the store and the poll says so).

``trust`` adds allowed-signers lines (``host/signing`` makes them: ``NAME
namespaces="edgedeploy-bundle,edgedeploy-desired" TYPE KEY``) to STORE/trust/allowed_signers,
one per key (``--replace``: only those given); with no ``--add`` it lists them.

Answers (protocol.py's envelope)::

    pull   {"board": "b0", "cohort": "all", "actions": {"digits": "activated"},
            "reported": true, "not_modified": false, "status": {…device/desired.py: Status…}}
           (--every: {"board", "cohort", "polls": N, "failing": K})
    trust  {"file": "/…/trust/allowed_signers", "signers": ["alice@ci namespaces=…", …]}
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError

CONFIG = "config.json"
KEYS = ("source", "endpoint", "board", "cohort", "credentials", "report_every", "poll_every",
        "timeout")


def register(sub) -> None:
    p = sub.add_parser("pull", help="pull mode: one poll of the object store (fetch the "
                                    "desired state, install, gate, activate, report)")
    p.add_argument("--source", metavar="URL",
                   help="s3://BUCKET/PREFIX (with --endpoint) or http(s)://HOST:PORT/BUCKET/"
                        "PREFIX")
    p.add_argument("--endpoint", metavar="URL", help="the S3 endpoint for an s3:// source")
    p.add_argument("--board", help="this board's name in the fleet (default: the hostname)")
    p.add_argument("--cohort", help="the desired-state document to follow (default: all)")
    p.add_argument("--credentials", metavar="FILE",
                   help="JSON access_key/secret_key allowed to write STATUS/BOARD/ only")
    p.add_argument("--report-every", type=int, metavar="N",
                   help="write the status at least every N polls (1); always on a change")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds an object-store request may take (15)")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="take a lower release than this board has run")
    p.add_argument("--save", action="store_true",
                   help="remember these settings in STORE/pull/config.json (the credentials "
                        "file is copied to STORE/pull/credentials.json, owner-only)")
    p.add_argument("--save-only", action="store_true",
                   help="with --save: check and remember the settings, don't poll")
    p.add_argument("--every", type=float, metavar="S",
                   help="keep polling every S seconds (backing off while the store is down)")
    p.add_argument("--polls", type=int, metavar="N", help="with --every: stop after N polls")
    t = sub.add_parser("trust", help="the keys whose signatures this board takes "
                                     "(STORE/trust/allowed_signers)")
    t.add_argument("--add", action="append", default=[], metavar="LINE",
                   help="an allowed-signers line (edgedeploy trust makes them)")
    t.add_argument("--replace", action="store_true", help="keep only the lines given")


def config_path(store_root: Path) -> Path:
    return Path(store_root) / "pull" / CONFIG


def load_config(store_root: Path) -> dict:
    path = config_path(store_root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable pull config ({exc})",
                         hint="write it again with `edgedeploy-agent pull … --save`") from exc
    return {k: v for k, v in data.items() if k in KEYS} if isinstance(data, dict) else {}


def settings(a: argparse.Namespace, store_root: Path) -> dict:
    """The saved config with the flags given over it (pure but for the read)."""
    given = {"source": a.source, "endpoint": a.endpoint, "board": a.board, "cohort": a.cohort,
             "credentials": a.credentials, "report_every": a.report_every,
             "poll_every": a.every, "timeout": a.timeout}
    merged = {**load_config(store_root), **{k: v for k, v in given.items() if v is not None}}
    if a.credentials:
        merged["credentials"] = os.path.abspath(a.credentials)
    return merged


def pull_config(s: dict, allow_downgrade: bool, runtime: str | None):
    from .pull import PullConfig
    from .s3 import Credentials, parse_location

    if not s.get("source"):
        raise InputError("pull: no --source given and none saved",
                         hint="edgedeploy-agent pull --source s3://BUCKET/PREFIX --endpoint URL "
                              "--board NAME --credentials FILE --save")
    creds = None
    if s.get("credentials"):
        path = Path(s["credentials"])
        try:
            d = json.loads(path.read_text())
            creds = Credentials(d["access_key"], d["secret_key"], d.get("session_token"),
                                d.get("region") or "us-east-1")
        except FileNotFoundError:
            raise InputError(f"{path}: no such credentials file")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a credentials file ({type(exc).__name__}: {exc})",
                             hint='{"access_key": "…", "secret_key": "…"}') from exc
    else:
        creds = Credentials.from_env()
    report_every = int(s.get("report_every") or 1)
    if report_every < 1:
        raise InputError(f"--report-every {report_every}: expected a whole number ≥ 1")
    return PullConfig(parse_location(s["source"], s.get("endpoint")),
                      board=s.get("board") or socket.gethostname(),
                      cohort=s.get("cohort") or "all", creds=creds,
                      timeout=float(s.get("timeout") or 15.0),
                      poll_every=s.get("poll_every"), report_every=report_every,
                      allow_downgrade=allow_downgrade, runtime=runtime)


def keep_credentials(store_root: Path, s: dict) -> dict:
    """S with its credentials file copied to STORE/pull/credentials.json (owner-only); a copy
    that came through the store's upload folder is removed (the deployer sent it there)."""
    from .fsio import write_atomic
    from .store import INCOMING

    src = s.get("credentials")
    if not src:
        return s
    dest = Path(store_root) / "pull" / "credentials.json"
    if Path(src).resolve() == dest.resolve():
        return s
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        write_atomic(dest, Path(src).read_bytes())
    finally:
        os.umask(old)
    incoming = (Path(store_root) / INCOMING).resolve()
    if incoming in Path(src).resolve().parents:
        import shutil

        shutil.rmtree(Path(src).resolve().parent, ignore_errors=True)
    return {**s, "credentials": str(dest)}


def save_config(store_root: Path, s: dict) -> None:
    from .fsio import write_atomic

    path = config_path(store_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        write_atomic(path, (json.dumps({k: s.get(k) for k in KEYS}, indent=1) + "\n").encode())
    finally:
        os.umask(old)


def cmd_pull(a: argparse.Namespace, store) -> dict:
    from . import protocol
    from .pull import poll
    from .pullloop import run_loop

    s = settings(a, store.root)
    cfg = pull_config(s, a.allow_downgrade, a.runtime)
    if a.save:
        s = keep_credentials(store.root, s)
        save_config(store.root, s)
        if a.save_only:
            return protocol.ok("pull", board=cfg.board, cohort=cfg.cohort, saved=True,
                               source=str(cfg.source), config=str(config_path(store.root)))
    if a.every is not None:
        if a.every <= 0:
            raise InputError(f"--every {a.every}: expected seconds > 0")
        import sys

        failing = run_loop(cfg, store, a.every, max_polls=a.polls,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
        return protocol.ok("pull", board=cfg.board, cohort=cfg.cohort, polls=a.polls,
                           failing=failing)
    r = poll(cfg, store)
    return protocol.ok("pull", board=cfg.board, cohort=cfg.cohort, actions=r.actions,
                       reported=r.reported, not_modified=r.not_modified,
                       status=asdict(r.status))


def cmd_trust(a: argparse.Namespace, store) -> dict:
    from . import protocol, trust

    lines = []
    for line in a.add:
        parts = line.split()
        if len(parts) < 3 or not parts[-2].startswith(("ssh-", "ecdsa-", "sk-")):
            raise InputError(f"trust: {line[:60]!r} is not an allowed-signers line",
                             hint="NAME namespaces=\"…\" TYPE BASE64 (edgedeploy trust makes "
                                  "them)")
        lines.append(trust.signer_line(f"{parts[-2]} {parts[-1]}", parts[0]))
    if lines or a.replace:
        store.root.mkdir(parents=True, exist_ok=True)
        merged = lines if a.replace else trust.merge_signers(trust.signer_entries(store.root),
                                                             lines)
        trust.write_signers(store.root, merged)
    return protocol.ok("trust", file=str(trust.signers_file(store.root)),
                       signers=trust.signer_entries(store.root))


def check_saved(store_root: Path, every: float) -> None:
    """For ``agentd --pull-every``: the saved settings make a config, EVERY is positive."""
    if not every > 0:
        raise InputError(f"--pull-every {every}: expected seconds > 0")
    s = load_config(store_root)
    pull_config(s, False, None)


def daemon_loop(store, every: float, runtime: str | None):
    """agentd's pull thread: (should_stop) -> None, polling with the saved settings; what it
    does goes to STORE/pull/loop.log (the last 200 lines)."""
    def loop(should_stop) -> None:
        from .pullloop import run_loop

        log_path = Path(store.root) / "pull" / "loop.log"
        lines: list[str] = []

        def log(line: str) -> None:
            import time

            lines.append(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}")
            del lines[:-200]
            try:
                log_path.write_text("\n".join(lines) + "\n")
            except OSError:
                pass
        try:
            cfg = pull_config(load_config(store.root), False, runtime)
        except InputError as exc:
            log(f"pull: {exc}")
            return
        cfg.poll_every = every  # said in every status: the controller's staleness
        run_loop(cfg, store, every, should_stop=should_stop, log=log,
                 sleep=lambda s: _sleep_until(s, should_stop))
    return loop


def _sleep_until(seconds: float, should_stop) -> None:
    import time

    end = time.monotonic() + seconds
    while not should_stop() and time.monotonic() < end:
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))
