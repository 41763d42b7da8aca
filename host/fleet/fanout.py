"""One command on many boards at once (``bench``, ``eval``, ``status``, ``rollback``,
``remove``, ``targets check`` with ``BOARD…``, ``--all``, ``--group``, ``--tag``): Fabric's
``Group`` shape. Every board gets its result or the error that stopped it, ``PARALLEL`` at a
time (a thread each: the work is waiting on links and boards), in the fleet's order; one
board's failure never stops the others.

``split_targets`` is pure: the words a user typed after the verb, told apart into boards and
the rest (a model name), so ``edgedeploy bench b0 b1 digits`` reads as it does today with one
board.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

from ...errors import BoardError, EdgeDeployError, InputError

T = TypeVar("T")


@dataclass
class Outcome(Generic[T]):
    board: str
    value: T | None = None
    error: EdgeDeployError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self) -> T:
        """The value (of a board that succeeded); its error otherwise."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


@dataclass
class FanOut(Generic[T]):
    """Per board, in order: what the work returned, or the error that stopped it."""
    outcomes: list[Outcome[T]] = field(default_factory=list)

    @property
    def succeeded(self) -> dict[str, T]:
        return {o.board: o.value for o in self.outcomes if o.ok}  # type: ignore[misc]

    @property
    def failed(self) -> dict[str, EdgeDeployError]:
        return {o.board: o.error for o in self.outcomes if o.error is not None}

    @property
    def ok(self) -> bool:
        return not self.failed

    def exit_code(self) -> int:
        return 0 if self.ok else 1


def fan_out(names: list[str], work: Callable[[str], T], *, parallel: int = 16,
            on_done: Callable[[Outcome[T]], None] | None = None) -> FanOut[T]:
    """WORK(name) for every board NAME, PARALLEL at a time. An EdgeDeployError becomes that
    board's outcome (named after the board when it doesn't say which); anything else is a bug
    and propagates."""
    if parallel < 1:
        raise InputError(f"--parallel {parallel}: give 1 or more")

    def one(name: str) -> Outcome[T]:
        t0 = time.perf_counter()
        try:
            out: Outcome[T] = Outcome(name, value=work(name))
        except BoardError as exc:
            out = Outcome(name, error=exc)
        except EdgeDeployError as exc:
            out = Outcome(name, error=exc if getattr(exc, "board", None) else
                          _with_board(name, exc))
        out.seconds = time.perf_counter() - t0
        if on_done is not None:
            on_done(out)
        return out

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(names) or 1))) as pool:
        return FanOut(list(pool.map(one, names)))


def _with_board(name: str, exc: EdgeDeployError) -> EdgeDeployError:
    """The same error class and code, its message prefixed with the board's name."""
    try:
        new = type(exc)(f"{name}: {exc.message}", hint=exc.hint)
    except TypeError:          # a subclass with another constructor: keep it as it is
        return exc
    new.__cause__ = exc
    return new


def split_targets(words: list[str], boards: set[str], *, want_model: bool) -> tuple[list[str],
                                                                                   str | None]:
    """(board names, the model word) from what followed the verb. Words that name a board
    (or ``local``) are boards; with WANT_MODEL the one word that isn't is the model (NAME or
    NAME@VERSION; a word with ``@`` is always the model). Refuses two models, a model where
    none is taken, and a word that is neither."""
    picked, model = [], None
    for w in words:
        is_board = (w in boards or w == "local") and "@" not in w
        if is_board:
            picked.append(w)
        elif want_model and model is None:
            model = w
        elif want_model:
            raise InputError(f"{w!r} is not a board in the fleet file, and the model is "
                             f"already {model!r}",
                             hint=f"boards: {', '.join(sorted(boards)) or 'none'}")
        else:
            raise InputError(f"no board named {w!r} in the fleet file",
                             hint=f"boards: {', '.join(sorted(boards)) or 'none'}")
    return picked, model
