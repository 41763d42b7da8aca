"""One bundle to many boards at once, no waves or gates (``edgedeploy push --all``): the plain
fan-out, Fabric's ``Group.put`` shape — every board gets a result or the error that stopped
it, and one board's failure doesn't touch the others."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ...errors import BoardError, EdgeDeployError
from ...targets import Board
from ..bundle import Bundle
from ..deploy import BoardSession, PushResult


@dataclass
class FleetResult:
    """Per board, in the fleet's order: what the push did, or the error that stopped it."""
    succeeded: dict[str, PushResult] = field(default_factory=dict)
    failed: dict[str, EdgeDeployError] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __len__(self) -> int:
        return len(self.order)


OnDone = Callable[[str, "PushResult | EdgeDeployError"], None]


def push_many(boards: list[Board], bundle: Bundle, *, activate: bool = True, parallel: int = 16,
              accept_new_host_key: bool = False, on_done: OnDone | None = None,
              allow_downgrade: bool = False) -> FleetResult:
    """Push one bundle to many boards, PARALLEL at a time (a thread each: the work is waiting
    on links and boards). ON_DONE is told about each board as it finishes."""

    def one(board: Board) -> PushResult | EdgeDeployError:
        out: PushResult | EdgeDeployError
        try:
            with BoardSession(board, accept_new_host_key=accept_new_host_key) as s:
                out = s.push(bundle, activate=activate, allow_downgrade=allow_downgrade)
        except BoardError as exc:
            out = exc
        except EdgeDeployError as exc:  # a store error on the board: its message names it
            out = exc if exc.board else BoardError(board.name, str(exc))
        if on_done:
            on_done(board.name, out)
        return out

    result = FleetResult(order=[b.name for b in boards])
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(boards)))) as pool:
        for board, out in zip(boards, pool.map(one, boards)):
            if isinstance(out, PushResult):
                result.succeeded[board.name] = out
            else:
                result.failed[board.name] = out
    return result
