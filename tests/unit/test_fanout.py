"""Many boards at once (host/fanout.py): order kept, failures don't stop the others, really in
parallel; the words after a verb told apart into boards and a model."""

import threading

import pytest

from edgedeploy.errors import EdgeDeployError, InputError, NotFound, Unreachable
from edgedeploy.host.fleet.fanout import fan_out, split_targets


def test_fan_out_keeps_order_and_goes_past_failures():
    def work(name: str) -> str:
        if name == "b1":
            raise Unreachable("b1", "cannot connect")
        if name == "b3":
            raise NotFound("model digits is not in the store")
        return name.upper()

    seen = []
    r = fan_out(["b0", "b1", "b2", "b3"], work, parallel=2, on_done=lambda o: seen.append(o))
    assert [o.board for o in r.outcomes] == ["b0", "b1", "b2", "b3"]
    assert r.succeeded == {"b0": "B0", "b2": "B2"}
    assert set(r.failed) == {"b1", "b3"} and r.exit_code() == 1
    assert r.failed["b1"].exit_code == 5
    # an error that doesn't name the board gets the board's name, same class and code
    assert isinstance(r.failed["b3"], NotFound) and str(r.failed["b3"]).startswith("b3: ")
    assert sorted(o.board for o in seen) == ["b0", "b1", "b2", "b3"]


def test_fan_out_runs_boards_at_the_same_time():
    barrier = threading.Barrier(3, timeout=10)   # only met if three run at once

    def work(name: str) -> int:
        return barrier.wait()

    r = fan_out(["a", "b", "c"], work, parallel=3)
    assert r.ok and sorted(r.succeeded.values()) == [0, 1, 2]


def test_fan_out_lets_bugs_through():
    def work(name: str) -> None:
        raise KeyError(name)

    with pytest.raises(KeyError):
        fan_out(["a"], work)


def test_fan_out_refuses_zero_parallel():
    with pytest.raises(InputError, match="--parallel 0"):
        fan_out(["a"], lambda n: n, parallel=0)


BOARDS = {"b0", "b1", "pi-kitchen"}


@pytest.mark.parametrize("words, want_model, boards, model", [
    (["b0", "digits"], True, ["b0"], "digits"),
    (["b0", "b1", "digits@3f2a"], True, ["b0", "b1"], "digits@3f2a"),
    (["digits", "b1"], True, ["b1"], "digits"),
    (["b0"], True, ["b0"], None),
    ([], True, [], None),
    (["local"], False, ["local"], None),
    (["b0", "pi-kitchen"], False, ["b0", "pi-kitchen"], None),
])
def test_split_targets(words, want_model, boards, model):
    assert split_targets(words, BOARDS, want_model=want_model) == (boards, model)


@pytest.mark.parametrize("words, want_model, message", [
    (["b0", "digits", "mnist"], True, "'mnist' is not a board"),
    (["b0", "b9"], False, "no board named 'b9'"),
])
def test_split_targets_refuses(words, want_model, message):
    with pytest.raises(InputError, match=message):
        split_targets(words, BOARDS, want_model=want_model)


def test_outcome_error_is_an_edgedeploy_error():
    r = fan_out(["x"], lambda n: (_ for _ in ()).throw(EdgeDeployError("boom")))
    assert str(r.failed["x"]) == "x: boom"
