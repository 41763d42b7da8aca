"""What every benchmark (scripts/bench_*.py) shares: timing a step (wall, this process's and
its children's CPU, the whole machine's CPU), simulated boards up and down (scripts/fleet, as a
subprocess), the digits CNN, other Python envs (scripts/envs), and writing the result JSON.

A benchmark is not a test: it prints a table and writes benchmarks/NAME.json with medians and
the baseline measured side by side in the same run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.support (the digits CNN) and an uninstalled checkout


def machine_busy_s() -> float:
    """CPU-seconds every process on this machine has used (from /proc/stat): with the boards'
    sshd and agents on the same cores, what a way of pushing costs the machine."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[..., dict | None], *args: Any) -> dict:
    """FN(*ARGS) measured: wall_s, host_cpu_s (this process and its children), machine_cpu_s;
    plus whatever FN returns."""
    busy0 = machine_busy_s()
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    extra = fn(*args) or {}
    wall = time.perf_counter() - t0
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu0 + (ch1.ru_utime - ch0.ru_utime) + \
        (ch1.ru_stime - ch0.ru_stime)
    return {"wall_s": wall, "host_cpu_s": cpu, "machine_cpu_s": machine_busy_s() - busy0,
            **extra}


def run_timed(argv: list[str], env: dict | None = None, what: str = "bench") -> dict:
    """A command measured as ``timed`` measures (its stdout kept); a failure ends the run."""
    out: dict = {}

    def run() -> None:
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"{what}: {' '.join(argv[:3])} failed ({p.returncode}):\n"
                             f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        out["stdout"] = p.stdout
    return {**timed(run), **out}


def fleet_cmd(cmd: str, d: Path, *args: str) -> None:
    """scripts/fleet CMD --dir D ARGS (up / down)."""
    subprocess.run([str(REPO / "scripts" / "fleet"), cmd, "--dir", str(d), *args], check=True,
                   stdout=subprocess.DEVNULL)


@contextmanager
def fleet(d: Path, n: int, *args: str) -> Iterator[Path]:
    """N simulated boards in D (scripts/fleet up), always stopped afterwards; D/fleet.toml."""
    try:
        fleet_cmd("up", d, str(n), *args)
        yield d / "fleet.toml"
    finally:
        if (d / "fleet-state.json").exists():
            fleet_cmd("down", d)


def env_python(name: str) -> Path:
    """The python of one of scripts/envs' environments (built on first use)."""
    out = subprocess.run([sys.executable if Path(sys.executable).exists() else "python3",
                          str(REPO / "scripts" / "envs"), name], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return Path(out)


def digits(out: Path, epochs: int) -> dict:
    """The digits CNN and its data in OUT (tests/support/digits_cnn.py); its summary."""
    from tests.support import digits_cnn

    return digits_cnn.make(out, epochs=epochs)


def write_result(path: Path, payload: dict, say: Callable[[str], None] = print) -> None:
    """The benchmark's JSON, whole (indent 2), and a line saying where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    say(f"wrote {path}")
