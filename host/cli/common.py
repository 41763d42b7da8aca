"""What several subcommands share: the board options (fleet file, host keys, results history,
--json), unpacked once from the command line into a ``Boards`` value."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from ...errors import InputError
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...targets import Board, Fleet
    from ..deploy import BoardSession
    from ..results import Results

RAW = argparse.RawDescriptionHelpFormatter


def add_board_options(p: argparse.ArgumentParser, *, board: bool = True,
                      results: bool = True) -> None:
    """BOARD (when BOARD), --fleet, --accept-new-host-key, --db, --json."""
    if board:
        p.add_argument("board", metavar="BOARD", help="a board in the fleet file, or `local`")
    p.add_argument("--fleet", type=Path, metavar="FILE",
                   help="inventory (default $EDGEDEPLOY_FLEET, else ./fleet.toml)")
    p.add_argument("--accept-new-host-key", action="store_true",
                   help="record an unknown host key (a changed one is still refused)")
    if results:
        p.add_argument("--db", type=Path, metavar="FILE",
                       help="results history (SQLite; default $EDGEDEPLOY_RESULTS or "
                            "~/.local/share/edgedeploy/results.db)")
    p.add_argument("--json", action="store_true", help="print JSON")


def add_selection_options(p: argparse.ArgumentParser, *, model: str | None = None,
                          results: bool = True) -> None:
    """BOARD… (then MODEL when the verb takes one), --all, --group, --tag, --parallel, and
    the board options."""
    what = "BOARD… " + model if model else "BOARD…"
    p.add_argument("targets", nargs="*", metavar=what,
                   help="boards from the fleet file (or `local`)"
                        + (f", then {model}" if model else ""))
    p.add_argument("--all", action="store_true", help="every board in the fleet")
    p.add_argument("--group", help="the boards in this group")
    p.add_argument("--tag", help="the boards with this tag")
    p.add_argument("--parallel", type=int, default=16, metavar="N",
                   help="boards worked on at once (16)")
    add_board_options(p, board=False, results=results)


@dataclass(frozen=True)
class Selection:
    """The boards a command runs on, the model word when it takes one, and whether the user
    asked for many (several names, --all, --group, --tag): then it ends with one table."""
    names: list[str]
    model: str | None
    many: bool


@dataclass(frozen=True)
class Boards:
    """Where the boards are, how to reach them, where results go."""
    fleet_path: Path
    accept_new_host_key: bool = False
    db: Path | None = None

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> "Boards":
        return cls(a.fleet or Path(os.environ.get("EDGEDEPLOY_FLEET", "fleet.toml")),
                   a.accept_new_host_key, getattr(a, "db", None))

    def fleet(self) -> "Fleet":
        from ...targets import load_fleet

        return load_fleet(self.fleet_path)

    def board(self, name: str) -> "Board":
        """NAME from the fleet file; `local` (this machine) unless the file names one."""
        from ...targets import load_fleet, local_board

        if name == "local" and not self.fleet_path.exists():
            return local_board()
        fleet = load_fleet(self.fleet_path)
        if name == "local" and "local" not in fleet.boards:
            return local_board()
        return fleet.get(name)

    def session(self, name: str) -> "BoardSession":
        from ..deploy import BoardSession

        return BoardSession(self.board(name), accept_new_host_key=self.accept_new_host_key)

    def pick(self, words: list[str], *, every: bool = False, group: str | None = None,
             tag: str | None = None, model: str | None = None,
             default_all: bool = False) -> Selection:
        """WORDS (after the verb) told apart into boards and the model word (MODEL names what
        the verb takes, e.g. "NAME[@VERSION]"; None: it takes none); --all / --group / --tag
        select from the fleet file. DEFAULT_ALL: no board named means every board."""
        from ..fleet.fanout import split_targets

        known = set(self.fleet().boards) if self.fleet_path.exists() else set()
        names, word = split_targets(words, known, want_model=model is not None)
        selecting = every or bool(group) or bool(tag) or (default_all and not names)
        if selecting:
            fleet = self.fleet()
            names = [b.name for b in fleet.select(names or None, group=group, tag=tag)]
            if not names:
                raise InputError(f"{fleet.path}: no board matches",
                                 hint="see `edgedeploy targets list`")
        if not names:
            raise InputError("name a BOARD (or several), or pass --all / --group G / --tag T")
        return Selection(names, word, selecting or len(names) > 1)

    def results(self) -> "Results":
        from ..results import Results

        return Results(self.db)
