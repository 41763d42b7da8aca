"""The pure parts of a rollout: waves, gates, the abort rule."""

from __future__ import annotations

import pytest

from edgedeploy.errors import InputError
from edgedeploy.host.fleet import (Gate, check_gates, count_of, parse_gate, plan_waves,
                                     too_many_failures)

NAMES = [f"b{i}" for i in range(20)]


def test_waves_cover_every_board_once_in_order():
    plan = plan_waves(NAMES, "1", "10%,50%,100%")
    assert [len(w) for w in plan] == [1, 1, 8, 10]
    assert sum(plan, []) == NAMES
    assert [len(w) for w in plan_waves(NAMES, "5%", "exp")] == [1, 2, 4, 8, 5]
    assert [len(w) for w in plan_waves(NAMES, "2", "1,1")] == [2, 1, 1, 16]
    assert plan_waves(NAMES[:1], "1", "10%,100%") == [["b0"]]
    assert plan_waves([], "1", "100%") == []
    # a canary larger than the fleet is the fleet
    assert plan_waves(NAMES[:3], "10", "100%") == [NAMES[:3]]


def test_counts_and_gates_parse_or_say_why():
    assert count_of("5%", 200, "x") == 10 and count_of("5%", 3, "x") == 1
    assert count_of("7", 3, "x") == 7
    for bad in ("0%", "150%", "-1", "many"):
        with pytest.raises(InputError):
            count_of(bad, 10, "--canary")
    assert parse_gate("accuracy >= 0.97") == Gate("accuracy", ">=", 0.97)
    assert str(parse_gate("p99_ms<=25")) == "p99_ms<=25"
    with pytest.raises(InputError, match="unknown metric 'speed'"):
        parse_gate("speed>=3")
    with pytest.raises(InputError, match="METRIC OP NUMBER"):
        parse_gate("accuracy is high")


def test_gates_absolute_and_relative():
    gates = [Gate("accuracy", ">=", 0.97), Gate("p99_ms", "<=", 25)]
    ok = {"accuracy": 0.98, "p99_ms": 10.0, "p50_ms": 5.0}
    assert check_gates(gates, ok, None, max_accuracy_drop=None, max_latency_increase=None) == []
    bad = check_gates(gates, {"accuracy": 0.5, "p99_ms": 30.0}, None, max_accuracy_drop=None,
                      max_latency_increase=None)
    assert len(bad) == 2 and "measured 0.5" in bad[0]
    assert check_gates([Gate("agreement", ">=", 0.9)], ok, None, max_accuracy_drop=None,
                       max_latency_increase=None) == ["agreement>=0.9: not measured"]
    old = {"accuracy": 0.985, "p99_ms": 8.0}
    rel = check_gates([], ok, old, max_accuracy_drop=0.4, max_latency_increase=10)
    assert len(rel) == 2 and "dropped 0.50 points" in rel[0] and "up 25.0%" in rel[1]
    assert check_gates([], ok, old, max_accuracy_drop=1, max_latency_increase=30) == []
    assert check_gates([], ok, None, max_accuracy_drop=0, max_latency_increase=0) == []


def test_abort_rule_waits_for_the_minimum_sample():
    assert not too_many_failures(2, 4, "5%", 5)           # too few finished boards
    assert too_many_failures(1, 5, "5%", 5)               # 20% > 5%
    assert not too_many_failures(1, 20, "5%", 5)          # exactly 5%: not over
    assert too_many_failures(2, 20, "5%", 5)
    assert not too_many_failures(2, 10, "2", 1) and too_many_failures(3, 10, "2", 1)
