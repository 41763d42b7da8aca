"""``edgedeploy wheelhouse``: parsing and printing (the work is in wheelhouse.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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


def add_parser(sub, common) -> None:
    w = sub.add_parser("wheelhouse", help="download the wheels a board (or profile) needs, so "
                                          "`bootstrap --wheelhouse` works offline",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("--for", dest="target", required=True, metavar="PROFILE|BOARD")
    w.add_argument("-d", "--dir", type=Path, required=True, metavar="DIR")
    w.add_argument("--arch", choices=["x86_64", "aarch64", "armv7l"],
                   help="for a profile that covers several")
    w.add_argument("--runtime", choices=["litert", "tflite_runtime"],
                   help="this runtime, not the profile's first that fits")
    w.add_argument("--refresh", action="store_true", help="ask the index even if DIR is whole")
    common(w, board=False)


def cmd_wheelhouse(a) -> int:
    import sys

    from ..targets import load_profile, profile_names
    from . import wheelhouse as wh

    if a.target in profile_names():
        target = wh.target_from_profile(load_profile(a.target), a.arch)
    else:
        from .board_cli import resolve_board
        from .transport import open_transport

        board = resolve_board(a, a.target)
        with open_transport(board, accept_new_host_key=a.accept_new_host_key) as t:
            facts = wh.probe(t, board.python, board.name)
        if a.arch and a.arch != facts.arch:
            from ..errors import InputError
            raise InputError(f"--arch {a.arch}: board {board.name} is {facts.arch}")
        target = facts.target(board.profile.runtimes, f"board {board.name}")

    def say(msg: str) -> None:
        if not a.json:
            print(msg, file=sys.stderr, flush=True)

    r = wh.make(target, a.dir, runtime=a.runtime, refresh=a.refresh, progress=say)
    t = r["target"]
    text = [f"{a.dir}: {r['runtime']} for {t['arch']} Python {t['python']} glibc {t['glibc']} "
            f"({t['source']}): {len(r['wheels'])} wheel(s), {r['bytes'] / 2**20:.1f} MiB"
            f"{' (already there)' if r['reused'] else ''}"]
    text += [f"  {n}" for n in r["wheels"]]
    text += [f"note: {n}" for n in r["notes"]]
    print(json.dumps(r, indent=2) if a.json else "\n".join(text))
    return 0
