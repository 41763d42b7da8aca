"""``edgedeploy``: the thin CLI. Each module registers its subcommands and a handler
(``set_defaults(func=…)``) that unpacks the command line once into typed values:

    compile.py   compile, inspect                     (the host: no board)
    board.py     push, bootstrap, targets (and the parsers of the verbs below)
    fleetwide.py bench, eval, status, rollback, targets check: one board or many at once
    wheelhouse.py wheelhouse                            (the wheels a board needs)
    rollout.py   rollout start | status | cancel | resume
    pull.py      trust, publish; the --via halves of status and rollout start
    report.py    report
    render.py    what gets printed (lines, rich tables, JSON)

``main`` maps every EdgeDeployError to its exit code (0 ok · 1 a check or compile failed · 2
usage / bad input · 3 missing on this machine · 4 conflict in a board's store · 5 board
unreachable · 6 host key or login refused) and anything unexpected to one line and exit 1
(the traceback with ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import sys

from ... import __version__
from ...errors import EdgeDeployError
from . import board, compile, pull, report, rollout, wheelhouse
from .render import error

EXAMPLES = """examples:
  edgedeploy compile digits.keras --mode all --calib calib.npz --eval test.npz --out out/
  edgedeploy push out/digits.int8.tflite pi-kitchen
  edgedeploy bench pi-kitchen digits --runs 1000
  edgedeploy rollout start out/digits.int8.tflite --group kitchen --gate-data gate.npz \\
      --gate "accuracy>=0.97"
  edgedeploy report --model digits --html report.html
  edgedeploy publish out/digits.int8.tflite --store s3://fleet-bucket/prod --all
  edgedeploy status --via s3://fleet-bucket/prod

`edgedeploy COMMAND --help` shows each command's options and examples."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgedeploy", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compile TensorFlow models for small boards, push them over SSH, and "
                    "measure them there.")
    p.add_argument("--version", action="version", version=f"edgedeploy {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of an unexpected error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (compile, board, wheelhouse, rollout, pull, report):
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args, note = rollout.legacy(list(sys.argv[1:] if argv is None else argv))
    if note:
        print(f"edgedeploy: note: {note} (the old spelling still works, for now)",
              file=sys.stderr)
    a = build_parser().parse_args(args)
    name = a.command + (f" {a.verb}" if getattr(a, "verb", None) else "")
    try:
        return int(a.func(a))
    except EdgeDeployError as exc:
        if getattr(a, "json", False):
            print(json.dumps({"error": exc.to_dict()}))
        error(name, str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgedeploy: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback only when asked
        if a.debug:
            raise
        error(name, f"unexpected {type(exc).__name__}: {exc} (run with --debug for the "
                    f"traceback, and please report it)")
        return 1
