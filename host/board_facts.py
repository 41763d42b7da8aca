"""What the host makes of a board's facts (as its agent reports them): pure functions.

- ``bench_delegate``: a board whose profile has an Edge TPU is benched on it by default.
- ``bench_preamble``: the lines said before a bench's timing: where the ops ran (Edge TPU,
  XNNPACK, CPU; "CPU ONLY" when an Edge TPU was expected), then the warnings (emulated board,
  throttled during the run, hot, clock fell).
- ``edgetpu_check``: for ``targets check``: does the Edge TPU delegate load, which devices.
- ``latency_gate_refusal``: latency gates measured on an emulated board are meaningless
  (qemu-user runs inference 330-400x slower): refused with a clear message, not failed.
"""

from __future__ import annotations

from typing import Any

from ..device import protocol
from ..targets import Profile

LATENCY_METRICS = ("p50_ms", "p90_ms", "p99_ms")


def bench_delegate(requested: str | None, profile: Profile) -> str:
    """The delegate a bench asks for: the user's, else the profile's Edge TPU, else auto."""
    if requested:
        return requested
    return "edgetpu" if profile.delegate == "edgetpu" else "auto"


def bench_preamble(b: protocol.Bench) -> list[str]:
    """The lines said before a bench's timing: where the ops ran, then warnings."""
    return ([b.placement] if b.placement else []) + [f"warning: {w}" for w in b.warnings]


def edgetpu_check(profile: Profile, info: dict) -> dict | None:
    """Whether the Edge TPU delegate loads on the board and which devices it sees; None for a
    board that neither has an Edge TPU profile nor shows one. ``problems`` when the profile
    says Edge TPU and the delegate does not load."""
    e = (info.get("delegates") or {}).get("edgetpu") or {}
    devices = list(e.get("devices") or [])
    if profile.delegate != "edgetpu" and not devices and not e.get("available"):
        return None
    loads = bool(e.get("available"))
    line = (f"Edge TPU delegate {'loads' if loads else 'does NOT load'}"
            + ("" if loads else f" ({e.get('error') or 'no libedgetpu'})")
            + f"; devices seen: {', '.join(devices) if devices else 'none'}")
    problems = []
    if profile.delegate == "edgetpu" and not loads:
        problems.append(f"profile {profile.name} has an Edge TPU, but its delegate does not "
                        f"load: {e.get('error') or 'no libedgetpu'}")
    elif profile.delegate == "edgetpu" and not devices:
        problems.append("the Edge TPU delegate loads, but no Edge TPU device is seen "
                        "(/dev/apex_*, or a Coral USB id): plugged in?")
    return {"delegate_loads": loads, "devices": devices, "error": e.get("error"),
            "line": line, "problems": problems}


def latency_gate_refusal(board: str, emulated: bool | None, latency_gates: list[str],
                         why: str | None = None) -> str | None:
    """Why latency gates cannot be judged on this board (emulated), or None."""
    if not latency_gates or not emulated:
        return None
    why = why or "emulated"
    return (f"latency gate(s) {', '.join(latency_gates)} refused on emulated board {board} "
            f"({why}): its timings are not the board's; gate it on accuracy/agreement, or "
            f"roll out to it without latency gates (--group/--tag)")


def emulation_why(info: protocol.BoardInfo) -> str | None:
    e = info.raw.get("emulation")
    return e.get("why") if isinstance(e, dict) else None


def latency_gates(gates: Any, max_latency_increase: float | None) -> list[str]:
    """The latency gates among GATES (parsed), and --max-latency-increase, as text."""
    out = [str(g) for g in gates if getattr(g, "metric", None) in LATENCY_METRICS]
    if max_latency_increase is not None:
        out.append(f"--max-latency-increase {max_latency_increase:g}%")
    return out
