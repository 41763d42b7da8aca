"""Two operators opening the same new rollout journal or results database at the same moment
(two `edgedeploy rollout start` at once, as test_threats does over real boards): each opens it
and goes on. Before, 4–9 in 120 such pairs failed with "database is locked" (the journal's switch
to WAL takes an exclusive lock without waiting) and 1 in 120 with "duplicate column name:
profile" (both results openers added the column). Real processes, real SQLite files; each
round starts both behind a barrier."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

ROUNDS = 100


def _open(kind: str, path: str, barrier) -> str | None:
    barrier.wait()
    try:
        if kind == "journal":
            from edgedeploy.host.fleet.journal import Journal
            Journal(Path(path)).active_on({"b0"})
        else:
            from edgedeploy.host.results import Results
            Results(path).record("bench", "b0", {"timing": {}})
    except Exception as exc:  # the test reports every failure it saw
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.parametrize("kind", ["journal", "results"])
def test_two_processes_open_a_new_database_at_once(kind, tmp_path):
    ctx = mp.get_context("fork")
    failures = []
    with ctx.Manager() as manager, ctx.Pool(2) as pool:
        for i in range(ROUNDS):
            barrier = manager.Barrier(2)
            path = str(tmp_path / f"{kind}-{i}.db")
            failures += [f for f in pool.starmap(_open, [(kind, path, barrier)] * 2) if f]
    assert failures == []
