"""Gate figures of a stored model version, measured by the agent's own ``eval`` and ``bench``,
each in a process of its own (its timings and memory are its own; a model that crashes the
runtime fails its gate and not the caller). Pull mode's poll uses it before it activates a
version (device/pull.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ..errors import RunFailure

MEASURE_TIMEOUT = 900.0

# figures of NAME@VERSION: (name, version, gate data path | None, has reference outputs, runs)
Measure = Callable[[str, str, "Path | None", bool, int], dict]


def agent_argv(store_root: Path, runtime: str | None) -> list[str]:
    """How to run this agent in a process of its own (the zipapp, or the installed package)."""
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if argv0.endswith(".pyz") or os.path.isdir(argv0):
        base = [sys.executable, argv0]
    else:
        base = [sys.executable, "-m", "edgedeploy.device.agent"]
    return base + ["--store", str(store_root)] + (["--runtime", runtime] if runtime else [])


def agent_measure(store_root: Path, runtime: str | None) -> Measure:
    """The gates' figures from the agent's own ``eval`` and ``bench``, each in a process of its
    own (its timings and memory are its own; a model that crashes the runtime fails its gate
    and not this poll)."""
    base = agent_argv(store_root, runtime)

    def call(*args: str) -> dict:
        try:
            p = subprocess.run([*base, *args], capture_output=True, text=True,
                               timeout=MEASURE_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise RunFailure(f"`{' '.join(args[:2])}` took over {MEASURE_TIMEOUT:.0f} s") \
                from exc
        try:
            msg = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            msg = None
        if not isinstance(msg, dict) or not msg.get("ok"):
            why = msg.get("message") if isinstance(msg, dict) else \
                (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
            raise RunFailure(f"`{' '.join(args[:2])}`: {why}")
        return msg

    def measure(name: str, version: str, data: Path | None, reference: bool, runs: int
                ) -> dict:
        figures: dict = {}
        if data is not None:
            args = ["eval", f"{name}@{version}", "--data", str(data)]
            ev = call(*args, *(["--reference", str(data)] if reference else []))
            figures["accuracy"] = ev["top1"]
            if ev.get("agreement"):
                figures["agreement"] = ev["agreement"]["top1_agreement"]
        b = call("bench", f"{name}@{version}", "--runs", str(runs), "--warmup", "5",
                 "--no-samples")
        t = b["timing"]
        figures.update(p50_ms=t["p50_ms"], p90_ms=t["p90_ms"], p99_ms=t["p99_ms"])
        return figures
    return measure
