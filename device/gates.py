"""Gates: the figures a new model version must reach on the board before it stays active.
Pure and stdlib only, so the board (pull mode, device/pull.py) and the host (rollouts) judge
alike.

A gate is ``METRIC OP NUMBER`` (``accuracy>=0.97``, ``p99_ms<=25``); relative gates compare with
the version being replaced, measured on the same board: ``max_accuracy_drop`` (points) and
``max_latency_increase`` (percent, p99).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Callable

from ..errors import InputError

METRICS = {"accuracy": "eval top-1 on the gate data (0..1)",
           "agreement": "top-1 agreement with the reference outputs in the gate data (0..1)",
           "p50_ms": "bench median latency", "p90_ms": "bench p90 latency",
           "p99_ms": "bench p99 latency"}
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
GATE_FILE = "gate.npz"  # the gate data travels in the bundle under this name


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def passes(self, measured: float) -> bool:
        return OPS[self.op](measured, self.value)


def parse_gate(text: str) -> Gate:
    m = re.fullmatch(r"\s*([a-z0-9_]+)\s*(>=|<=|==|>|<)\s*([0-9.eE+-]+)\s*", text)
    if not m:
        raise InputError(f"gate {text!r}: expected METRIC OP NUMBER, e.g. accuracy>=0.97")
    metric, op, value = m.groups()
    if metric not in METRICS:
        raise InputError(f"gate {text!r}: unknown metric {metric!r}",
                         hint=f"metrics: {', '.join(METRICS)}")
    try:
        return Gate(metric, op, float(value))
    except ValueError as exc:
        raise InputError(f"gate {text!r}: {value!r} is not a number") from exc


def check_gates(gates: list[Gate], figures: dict, old: dict | None, *,
                max_accuracy_drop: float | None, max_latency_increase: float | None
                ) -> list[str]:
    """Pure: the gates FIGURES fail (empty: passed). Relative gates compare with OLD (the
    version being replaced, measured on the same board); with no old version they pass."""
    failed = []
    for g in gates:
        v = figures.get(g.metric)
        if v is None:
            failed.append(f"{g}: not measured")
        elif not g.passes(v):
            failed.append(f"{g}: measured {v:.4g}")
    if old:
        if max_accuracy_drop is not None and old.get("accuracy") is not None:
            if figures.get("accuracy") is None:
                failed.append("accuracy: not measured")
            else:
                drop = 100 * (old["accuracy"] - figures["accuracy"])
                if drop > max_accuracy_drop:
                    failed.append(f"accuracy dropped {drop:.2f} points (max "
                                  f"{max_accuracy_drop:g}): {old['accuracy']:.4f} → "
                                  f"{figures['accuracy']:.4f}")
        if max_latency_increase is not None and old.get("p99_ms"):
            if figures.get("p99_ms") is None:
                failed.append("p99_ms: not measured")
            else:
                inc = 100 * (figures["p99_ms"] / old["p99_ms"] - 1)
                if inc > max_latency_increase:
                    failed.append(f"p99 latency up {inc:.1f}% (max {max_latency_increase:g}%): "
                                  f"{old['p99_ms']:.3f} → {figures['p99_ms']:.3f} ms")
    return failed
