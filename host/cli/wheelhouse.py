"""``edgedeploy wheelhouse``: parsing and printing (the work is in host/wheelhouse.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ...errors import InputError
from .common import RAW, Boards, add_board_options
from .render import emit

EXAMPLES = """examples:
  edgedeploy wheelhouse --for rpi-armv7 -d wheels/armv7        # from the profile's facts
  edgedeploy wheelhouse --for rpi-aarch64 -d wheels/pi64 --runtime tflite_runtime
  edgedeploy wheelhouse --for coral-usb --arch aarch64 -d wheels/coral
  edgedeploy wheelhouse --for pi-kitchen -d wheels/kitchen --fleet fleet.toml  # asks the board
  edgedeploy bootstrap pi-kitchen --wheelhouse wheels/kitchen --fleet fleet.toml

--for names a board profile (edgedeploy targets profiles) or a board in the fleet. A profile
says what its OS ships (Python, glibc, numpy); a board is asked over SSH. The wheels are those
of the first runtime the target can have: tflite-runtime on armv7l (its wheels are
manylinux_2_34: glibc ≥ 2.34), with numpy from the board's OS where it fits; ai-edge-litert
with numpy 2 on aarch64. DIR/wheelhouse.json says what and why; an unchanged DIR is reused
without the index. Android (Termux) takes no wheels: bootstrap runs pkg there."""


def register(sub: Any) -> None:
    w = sub.add_parser("wheelhouse", help="download the wheels a board (or profile) needs, so "
                                          "`bootstrap --wheelhouse` works offline",
                       epilog=EXAMPLES, formatter_class=RAW)
    w.add_argument("--for", dest="target", required=True, metavar="PROFILE|BOARD")
    w.add_argument("-d", "--dir", type=Path, required=True, metavar="DIR")
    w.add_argument("--arch", choices=["x86_64", "aarch64", "armv7l"],
                   help="for a profile that covers several")
    w.add_argument("--runtime", choices=["litert", "tflite_runtime"],
                   help="this runtime, not the profile's first that fits")
    w.add_argument("--refresh", action="store_true", help="ask the index even if DIR is whole")
    add_board_options(w, board=False, results=False)
    w.set_defaults(func=run_wheelhouse)


def run_wheelhouse(a: argparse.Namespace) -> int:
    return wheelhouse_command(a.target, a.dir, Boards.from_args(a), arch=a.arch,
                              runtime=a.runtime, refresh=a.refresh, as_json=a.json)


def wheelhouse_command(target: str, dest: Path, where: Boards, *, arch: str | None,
                       runtime: str | None, refresh: bool, as_json: bool) -> int:
    from ...targets import load_profile, profile_names
    from .. import wheelhouse as wh

    if target in profile_names():
        t = wh.target_from_profile(load_profile(target), arch)
    else:
        from ..transport import open_transport

        board = where.board(target)
        with open_transport(board, accept_new_host_key=where.accept_new_host_key) as tr:
            facts = wh.probe(tr, board.python, board.name)
        if arch and arch != facts.arch:
            raise InputError(f"--arch {arch}: board {board.name} is {facts.arch}")
        t = facts.target(board.profile.runtimes, f"board {board.name}")

    def say(msg: str) -> None:
        if not as_json:
            print(msg, file=sys.stderr, flush=True)

    r = wh.make(t, dest, runtime=runtime, refresh=refresh, progress=say)
    tg = r["target"]
    text = [f"{dest}: {r['runtime']} for {tg['arch']} Python {tg['python']} glibc "
            f"{tg['glibc']} ({tg['source']}): {len(r['wheels'])} wheel(s), "
            f"{r['bytes'] / 2**20:.1f} MiB{' (already there)' if r['reused'] else ''}"]
    text += [f"  {n}" for n in r["wheels"]]
    text += [f"note: {n}" for n in r["notes"]]
    emit(as_json, r, "\n".join(text))
    return 0
