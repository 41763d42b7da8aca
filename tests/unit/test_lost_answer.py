"""A store change whose answer is lost (the link breaks while install, activate or rollback
runs) is judged by what the board really has, read again (issue 12): done (with a note), not
done (and why), or unknown (exit 5, with the last known version). On fake boards; the real cut
link is tests/integration/test_threats.py::test_a_link_cut_during_install_reports_the_truth.
And what a host that died mid-staging left on the board goes when its rollout is resumed."""

from __future__ import annotations

import pytest

from edgedeploy.errors import Unreachable
from edgedeploy.host.bundle import load_bundle
from tests.support.fakeboard import FakeFleet, tiny_model


@pytest.fixture
def board(tmp_path):
    fleet = FakeFleet(tmp_path / "boards", ["b0"])
    old = load_bundle(tiny_model(tmp_path / "old"))
    new = load_bundle(tiny_model(tmp_path / "new", "bad"))
    fleet.install_all(old)
    return fleet, old, new


def test_an_install_whose_answer_is_lost_but_happened(board):
    fleet, old, new = board
    fleet["b0"].lose = {"install"}
    with fleet.session("b0") as s:
        r = s.push(new)
    assert (r.current, r.previous) == (new.version, old.version)
    assert r.note and "was lost" in r.note and "it happened" in r.note
    assert fleet["b0"].current("tiny") == new.version
    assert fleet["b0"].calls[-1][:3] == ["state", "--model", "tiny"]  # read again, settled
    assert "--settled" in fleet["b0"].calls[-1]


def test_an_install_whose_command_never_arrived(board):
    fleet, old, new = board
    fleet["b0"].drop = {"install"}
    with fleet.session("b0") as s, pytest.raises(Unreachable) as err:
        s.push(new)
    assert "did not happen" in str(err.value) and f"runs tiny {old.version}" in str(err.value)
    assert fleet["b0"].current("tiny") == old.version


def test_a_board_that_stays_cut_off_is_unknown_with_its_last_version(board):
    fleet, old, new = board
    with fleet.session("b0") as s:
        s.state(model="tiny")
        fleet["b0"].cut_at = len(fleet["b0"].calls) + 2  # the install's call: cut for good
        with pytest.raises(Unreachable) as err:
            s.push(new, state=s.state(model="tiny"))
    assert err.value.exit_code == 5
    assert "unknown" in str(err.value) and f"last known version of tiny there is " \
        f"{old.version}" in str(err.value)


def test_a_rollback_and_an_activate_whose_answers_are_lost(board):
    fleet, old, new = board
    with fleet.session("b0") as s:
        s.push(new)
    fleet["b0"].lose = {"rollback", "activate"}
    with fleet.session("b0") as s:
        back = s.rollback("tiny")
        assert (back.current, back.previous) == (old.version, new.version) and s.note
        again = s.activate("tiny", new.version)
        assert again.current == new.version and s.note
    assert fleet["b0"].current("tiny") == new.version


def test_resume_after_the_host_died_mid_staging_sweeps_its_upload(tmp_path):
    """The host died mid-staging, long ago: its incoming/VERSION.RANDOM stayed "forever, even
    after --resume". The resumed rollout's first locked step on the board sweeps it."""
    import os
    import time

    from edgedeploy.host.fleet import Journal, Options, rollout_bundle

    fleet = FakeFleet(tmp_path / "boards", ["b0"])
    old = load_bundle(tiny_model(tmp_path / "old"))
    fleet.install_all(old)
    new = rollout_bundle(tiny_model(tmp_path / "new", "bad"), None)
    journal = Journal(tmp_path / "rollouts.db")
    journal.create("r1", new, "bundle", "fake-fleet", Options(min_sample=1), [["b0"]], {})
    journal.set_rollout("r1", journal.rollout("r1").state, pid=1 << 22)  # its host is gone
    left = fleet["b0"].store / "incoming" / f"{new.version}.dead"
    left.mkdir(parents=True)
    (left / "tiny.float32.tflite").write_bytes(b"half an upl")
    hours_ago = time.time() - 3 * 3600
    for p in (left / "tiny.float32.tflite", left):
        os.utime(p, (hours_ago, hours_ago))
    rep = fleet.resume(journal, "r1", new)
    assert rep.counts == {"committed": 1}
    assert not left.exists() and list(left.parent.iterdir()) == []


def test_a_rollouts_activation_whose_answer_is_lost_is_rolled_back(tmp_path):
    """In a rollout, an activation whose answer was lost (the agent died after the switch, or
    the link was cut) but which happened is never confirmed: the board goes back, the report
    says what happened."""
    from edgedeploy.host.fleet import Journal, Options, rollout_bundle

    fleet = FakeFleet(tmp_path / "boards", ["b0"])
    old = load_bundle(tiny_model(tmp_path / "old"))
    fleet.install_all(old)
    new = rollout_bundle(tiny_model(tmp_path / "new", "bad"), None)
    fleet["b0"].lose = {"activate"}
    rep = fleet.start(Journal(tmp_path / "rollouts.db"), new, Options(min_sample=1))
    (b,) = rep.boards
    assert b.state.value == "rolled_back", rep
    assert "was lost" in b.error and "it happened" in b.error and "never confirmed" in b.error
    assert fleet["b0"].current("tiny") == old.version
