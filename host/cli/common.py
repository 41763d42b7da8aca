"""What several subcommands share: the board options (fleet file, host keys, results history,
--json), unpacked once from the command line into a ``Boards`` value."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
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

    def results(self) -> "Results":
        from ..results import Results

        return Results(self.db)
