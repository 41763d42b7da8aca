"""Rollouts and pushes that meet on the same boards (issue 12), on fake boards (the real agent,
store, runner and journal; tests/support/fakeboard.py): the journal's check-and-insert is one
transaction, a board changed under a rollout is superseded (never marked committed with a
version it no longer runs, never rolled back over the change), every option is checked again
before a resume touches anything, and an unreachable board is exit 5 with its name once."""

from __future__ import annotations

import threading

import pytest

from edgedeploy.errors import Conflict, InputError, Unreachable
from edgedeploy.host.fleet import (BoardState, Journal, Options, RolloutState, guard_push,
                                   report, rollout_bundle)
from tests.support.fakeboard import tiny_model

from .test_rollout_transitions import opts, rig  # noqa: F401  (the fixture)

S = BoardState


def test_create_checks_and_inserts_in_one_transaction(rig):
    """Two rollouts that both passed the early check (the preflight runs between it and the
    insert) on overlapping boards: the second insert is refused, atomically."""
    o = opts(rig)
    rig.journal.create("r1", rig.good, "b", "f", o, [["b0"], ["b1"]], {})
    other = Journal(rig.journal.path)  # another process's connection
    with pytest.raises(Conflict, match="rollout r1 is (running|unfinished) on b1"):
        other.create("r2", rig.good, "b", "f", o, [["b1"], ["b2"]], {})
    assert [r[0] for r in other._db().execute("SELECT id FROM rollouts")] == ["r1"]
    assert not other.boards("r2")
    other.create("r3", rig.good, "b", "f", o, [["b2"], ["b3"]], {})  # no overlap: fine


def test_rollouts_started_at_once_one_runs(rig):
    results: dict[int, object] = {}
    go = threading.Barrier(2)

    def one(i: int) -> None:
        go.wait()
        try:
            results[i] = rig.fleet.start(Journal(rig.journal.path), rig.good, opts(rig))
        except Conflict as exc:
            results[i] = exc
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [r for r in results.values() if isinstance(r, Conflict)]
    ran = [r for r in results.values() if not isinstance(r, Conflict)]
    assert len(refused) == 1 and len(ran) == 1, results


def test_a_board_pushed_during_its_rollout_is_superseded(rig, tmp_path):
    """A push --force while the rollout gates b0: the rollout reads the board again before
    committing, finds the pushed version, and leaves it (superseded); the journal has both."""
    pushed = rollout_bundle(tiny_model(tmp_path / "pushed2", "bad", name="tiny"), None)

    def on_event(e: dict) -> None:
        if e.get("board") == "b0" and e.get("state") == "activated":
            assert guard_push(rig.journal.path, ["b0"], pushed.version, force=True)
            with rig.fleet.session("b0") as s:
                s.push(pushed)
    rep = rig.fleet.start(rig.journal, rig.good, opts(rig), emit=on_event)
    by = {b.board: b for b in rep.boards}
    assert by["b0"].state == S.SUPERSEDED and pushed.version in (by["b0"].error or "")
    assert rig.fleet["b0"].current("tiny") == pushed.version  # left as the push left it
    assert all(by[n].state == S.COMMITTED for n in ("b1", "b2", "b3"))
    assert rep.state == RolloutState.PARTIAL
    assert [(f.board, f.version) for f in rep.forced] == [("b0", pushed.version)]


def test_a_push_onto_a_rollouts_board_is_refused_without_force(rig):
    rig.journal.create("r1", rig.good, "b", "f", opts(rig), [["b0"], ["b1"]], {})
    with pytest.raises(Conflict) as err:
        guard_push(rig.journal.path, ["b1"], "v9", force=False)
    assert "rollout r1" in str(err.value) and "--force" in str(err.value)
    assert guard_push(rig.journal.path, ["b2"], "v9", force=False) == []  # not covered
    assert [b.id for b in guard_push(rig.journal.path, ["b1"], "v9", force=True)] == ["r1"]
    assert [(f.board, f.version) for f in report(rig.journal, "r1").forced] == [("b1", "v9")]
    assert guard_push(rig.journal.path.with_name("none.db"), ["b1"], "v", force=False) == []
    assert not rig.journal.path.with_name("none.db").exists()  # no journal made by a push


@pytest.mark.parametrize("field, value, match", [
    ("max_failures", "abc", "--max-failures 'abc'"),
    ("canary", "-3", "--canary"),
    ("waves", "10%,x", "--waves"),
    ("parallel", 0, "--parallel"),
    ("timeout", float("inf"), "--timeout"),
    ("gates", ["latency<5"], "unknown metric"),
    ("retries", "2", "--retries"),
])
def test_resume_checks_every_option_before_touching_a_board(rig, field, value, match):
    """Options stored by an older edgedeploy (or edited): resume refuses them, exit 2, before
    any board is reached, the journal as it was."""
    bad = Options(**{**opts(rig).__dict__, field: value})
    rig.journal.create("r1", rig.good, "b", "f", bad, [["b0"], ["b1"]], {})
    rig.journal.set_rollout("r1", RolloutState.RUNNING, pid=1 << 22)  # its process is gone
    before = [(b.board, b.state) for b in rig.journal.boards("r1")]
    with pytest.raises(InputError, match=match):
        rig.fleet.resume(rig.journal, "r1", rig.good)
    assert all(b.calls == [] for b in rig.fleet.boards.values())
    assert [(b.board, b.state) for b in rig.journal.boards("r1")] == before
    assert rig.journal.rollout("r1").state == RolloutState.RUNNING


def test_an_unreachable_board_in_preflight_is_exit_5_named_once(rig):
    rig.fleet["b2"].cut_at = 1
    with pytest.raises(Unreachable) as err:
        rig.fleet.start(rig.journal, rig.good, opts(rig))
    assert err.value.exit_code == 5
    assert str(err.value).startswith("b2: can't be reached (") and str(err.value).count("b2") == 1
    assert not rig.journal._db().execute("SELECT * FROM rollouts").fetchall()
