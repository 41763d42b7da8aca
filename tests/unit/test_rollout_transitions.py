"""Every rollout transition on fake boards (tests/support/fakeboard.py: the real agent and store
in a temporary folder, called in-process; the real runner and journal above them): success,
staging failed, activation refused, gate failed, abort, a hung agent, stranded then repaired,
the host dying mid-rollout then resume. Each checks what every board really has against what
the journal says. The same trials on real sshd boards are tests/integration/test_rollout.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedeploy.errors import InputError
from edgedeploy.host.fleet import BoardState, Journal, Options, RolloutState, rollout_bundle
from edgedeploy.host.bundle import load_bundle
from tests.support.fakeboard import FakeFleet, gate_data, tiny_model

S = BoardState
NAMES = ["b0", "b1", "b2", "b3"]


class HostDied(BaseException):
    """The rollout's process stops dead (not an error anything catches)."""


@pytest.fixture
def rig(tmp_path):
    """Four fake boards on the good tiny model (version `old`), a journal, and the bundles a
    rollout sends: the good model with gate data (`good`), the bad one (`bad`)."""
    fleet = FakeFleet(tmp_path / "boards", NAMES)
    old = load_bundle(tiny_model(tmp_path / "old"))
    fleet.install_all(old)
    gate = str(gate_data(tmp_path / "gate.npz"))

    class Rig:
        pass
    r = Rig()
    r.fleet, r.old, r.gate = fleet, old, gate
    r.journal = Journal(tmp_path / "rollouts.db")
    r.good = rollout_bundle(tiny_model(tmp_path / "good"), gate)
    r.bad = rollout_bundle(tiny_model(tmp_path / "bad", "bad"), gate)
    return r


def opts(r, **kw) -> Options:
    base = dict(canary="1", waves="100%", gate_data=r.gate, gates=["accuracy>=0.9"],
                max_failures="0", min_sample=1, timeout=5, retries=0, bench_runs=5,
                parallel=4)
    return Options(**{**base, **kw})


def states(report) -> dict[str, str]:
    return {b.board: b.state.value for b in report.boards}


def boards_agree(r, report) -> None:
    """Committed boards run the new version; every other one the version it had."""
    for b in report.boards:
        have = r.fleet[b.board].current("tiny")
        if b.state == S.COMMITTED:
            assert have == b.new, (b, have)
        else:
            assert b.state in (S.ROLLED_BACK, S.FAILED, S.PENDING, S.SKIPPED), b
            assert have == r.old.version, (b, have)


def test_a_good_update_commits_everywhere(rig):
    rep = rig.fleet.start(rig.journal, rig.good, opts(rig, max_accuracy_drop=1.0))
    assert rep.state == RolloutState.SUCCEEDED and rep.counts == {"committed": 4}
    for b in rep.boards:
        assert b.old == rig.old.version and b.figures["accuracy"] == 1.0
        assert b.old_figures["accuracy"] == 1.0           # the old version, measured too
    boards_agree(rig, rep)


def test_a_failed_gate_rolls_the_canary_back_and_stops(rig):
    before = len(rig.fleet["b1"].calls)
    rep = rig.fleet.start(rig.journal, rig.bad, opts(rig))
    assert rep.state == RolloutState.ABORTED and "canary b0" in rep.message
    b0 = rep.boards[0]
    assert b0.state == S.ROLLED_BACK and "gate failed: accuracy>=0.9" in b0.error
    assert b0.figures["accuracy"] < 0.5                   # kept with the rollback
    assert states(rep) == {"b0": "rolled_back", "b1": "pending", "b2": "pending",
                           "b3": "pending"}
    assert [c[0] for c in rig.fleet["b1"].calls[before:]] == ["state"]  # the preflight only
    boards_agree(rig, rep)


def test_staging_failed_counts_and_aborts(rig):
    rig.fleet["b2"].refuse = {"install"}
    rep = rig.fleet.start(rig.journal, rig.good, opts(rig))
    assert rep.state == RolloutState.ABORTED
    by = {b.board: b for b in rep.boards}
    assert by["b2"].state == S.FAILED and "staging" in by["b2"].error
    assert "install refused" in by["b2"].error and "b2" in by["b2"].error
    # the abort put every board this rollout activated back
    assert {by[n].state for n in ("b0", "b1", "b3")} == {S.ROLLED_BACK}
    assert "rollout aborted" in by["b0"].error
    boards_agree(rig, rep)


def test_a_refused_activation_rolls_that_board_back(rig):
    rig.fleet["b1"].refuse = {"activate"}
    rep = rig.fleet.start(rig.journal, rig.good, opts(rig, max_failures="50%", min_sample=4))
    by = {b.board: b for b in rep.boards}
    assert by["b1"].state == S.ROLLED_BACK and "activation" in by["b1"].error
    assert rep.state == RolloutState.PARTIAL and rep.counts == {"committed": 3,
                                                                "rolled_back": 1}
    boards_agree(rig, rep)


def test_a_hung_agent_is_a_failed_gate_measurement(rig):
    rig.fleet["b3"].hang = {"bench"}
    rep = rig.fleet.start(rig.journal, rig.good, opts(rig, timeout=0.3, max_failures="1"))
    by = {b.board: b for b in rep.boards}
    assert by["b3"].state == S.ROLLED_BACK and "gate not measured" in by["b3"].error
    assert "no answer" in by["b3"].error
    assert rep.state == RolloutState.PARTIAL
    boards_agree(rig, rep)


def test_a_board_cut_off_in_its_rollback_is_stranded_until_resume(rig):
    b2 = rig.fleet["b2"]
    # cut b2's link at its gate's eval, after its activation: its calls will be the
    # preflight's state, then state, install, activate, (cut) eval
    b2.cut_at = 5
    rep = rig.fleet.start(rig.journal, rig.good, opts(rig))
    by = {b.board: b for b in rep.boards}
    assert [c[0] for c in b2.calls[-4:]] == ["state", "install", "activate", "eval"]
    assert by["b2"].state == S.STRANDED and "rollback failed" in by["b2"].error
    assert rep.state == RolloutState.ABORTED
    assert b2.current("tiny") == rig.good.version       # really left on the new version
    b2.restore()
    again = rig.fleet.resume(rig.journal, rep.id, rig.good)
    assert again.state == RolloutState.ABORTED and "rollback completed on b2" in again.message
    assert {b.board: b.state for b in again.boards}["b2"] == S.ROLLED_BACK
    boards_agree(rig, again)


def test_the_host_dies_mid_rollout_and_resume_finishes_it(rig):
    seen = []

    def emit(event: dict) -> None:
        seen.append(event)
        if event.get("board") == "b1" and event.get("state") == "activated":
            raise HostDied

    o = opts(rig, waves="1,1,1", parallel=1)
    with pytest.raises(HostDied):
        rig.fleet.start(rig.journal, rig.good, o, emit=emit)
    rollout_id = rig.journal.rollout().id
    before = {b.board: b.state for b in rig.journal.boards(rollout_id)}
    assert before == {"b0": S.COMMITTED, "b1": S.ACTIVATED, "b2": S.PENDING,
                      "b3": S.PENDING}
    assert rig.journal.rollout(rollout_id).state == RolloutState.RUNNING
    b0_calls = len(rig.fleet["b0"].calls)
    rep = rig.fleet.resume(rig.journal, rollout_id, rig.good)
    assert rep.state == RolloutState.SUCCEEDED and rep.counts == {"committed": 4}
    assert len(rig.fleet["b0"].calls) == b0_calls       # a finished board is not redone
    committed = [e.board for e in rig.journal.events(rollout_id) if e.state == S.COMMITTED]
    assert sorted(committed) == NAMES
    boards_agree(rig, rep)


def test_a_crash_mid_activation_is_recovered_from_the_board(rig):
    """The journal says `activating` but the board never switched: resume sees the old
    version there, stages it as such and goes on."""
    def emit(event: dict) -> None:
        if event.get("board") == "b0" and event.get("state") == "activating":
            raise HostDied

    with pytest.raises(HostDied):
        rig.fleet.start(rig.journal, rig.good, opts(rig, parallel=1), emit=emit)
    rollout_id = rig.journal.rollout().id
    assert rig.journal.board(rollout_id, "b0").state == S.ACTIVATING
    assert rig.fleet["b0"].current("tiny") == rig.old.version
    rep = rig.fleet.resume(rig.journal, rollout_id, rig.good)
    assert rep.state == RolloutState.SUCCEEDED
    b0_states = [e.state for e in rig.journal.events(rollout_id) if e.board == "b0"]
    assert b0_states == [S.STAGING, S.STAGED, S.ACTIVATING, S.STAGED, S.ACTIVATING,
                         S.ACTIVATED, S.COMMITTED]
    boards_agree(rig, rep)


def test_bad_options_touch_no_board(rig):
    for bad in (opts(rig, max_failures="abc"), opts(rig, waves="10%,x"),
                opts(rig, gates=["speed>=1"])):
        with pytest.raises(InputError):
            rig.fleet.start(rig.journal, rig.good, bad)
    assert all(b.calls == [] for b in rig.fleet.boards.values())


def test_a_second_rollout_on_busy_boards_is_refused(rig):
    from edgedeploy.errors import Conflict

    def emit(event: dict) -> None:
        if event.get("state") == "staged":
            raise HostDied
    with pytest.raises(HostDied):
        rig.fleet.start(rig.journal, rig.good, opts(rig), emit=emit)
    with pytest.raises(Conflict, match="is running on b0"):
        rig.fleet.start(rig.journal, rig.bad, opts(rig))


def test_the_fake_board_really_refuses_bad_bytes(rig, tmp_path):
    """The fake board is the real store: a model whose bytes differ from its manifest is
    refused on the board and the board keeps what it had."""
    model = tiny_model(tmp_path / "corrupt", "bad")
    bundle = load_bundle(model)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    from edgedeploy.errors import HashMismatch

    with rig.fleet.session("b0") as s, pytest.raises(HashMismatch) as err:
        s.push(bundle)
    assert str(err.value).startswith("b0: ") and err.value.board == "b0"
    assert rig.fleet["b0"].current("tiny") == rig.old.version
    assert not list(Path(rig.fleet["b0"].store / "incoming").iterdir())
