"""What a rollout decides, as pure functions of data: the wave plan, gate verdicts, the failure
rule, and the options that steer them — checked whole (``Options.validate``) before any board
is touched, so a typo is an InputError (exit 2), never a half-done rollout.

Waves: a canary (``--canary 1`` or ``5%``), then ``--waves``: cumulative shares of the fleet
(``10%,50%,100%``), plain counts added one after the other (``1,1,1``), or ``exp`` (each wave
twice the last). Gates: ``METRIC OP NUMBER`` on what the board measured (METRICS), plus the
relative ones against the version being replaced on the same board (``max_accuracy_drop``
points, ``max_latency_increase`` percent of p99). Failure rule: after ``min_sample`` finished
boards, more failed ones than ``max_failures`` (a count or a percentage) abort the rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

# gates are judged alike on the board (pull mode) and here: one definition, device/gates.py
from ...device.gates import GATE_FILE, METRICS, OPS, Gate, check_gates, parse_gate
from ...errors import InputError

__all__ = ["GATE_FILE", "METRICS", "OPS", "FailureLimit", "Gate", "Options", "check_gates",
           "count_of", "npz_keys", "parse_gate", "plan_waves", "too_many_failures",
           "rollout_end", "wave_verdict"]


def count_of(text: str, total: int, what: str) -> int:
    """'5%' of TOTAL (at least 1 when TOTAL > 0) or a plain count."""
    t = str(text).strip()
    try:
        if t.endswith("%"):
            pct = float(t[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return max(1, math.ceil(total * pct / 100)) if total else 0
        n = int(t)
        if n < 0:
            raise ValueError
        return n
    except ValueError as exc:
        raise InputError(f"{what} {text!r}: expected a count or a percentage such as 5%") \
            from exc


def plan_waves(names: list[str], canary: str = "1", waves: str = "10%,50%,100%"
               ) -> list[list[str]]:
    """Pure: [canary, wave 1, …]; every board exactly once, in the fleet's order."""
    total = len(names)
    if not total:
        return []
    c = min(max(count_of(canary, total, "--canary"), 1), total)
    plan = [names[:c]]
    done = c
    if waves.strip() == "exp":
        size = c
        while done < total:
            size *= 2
            plan.append(names[done:done + size])
            done += size
        return plan
    for part in waves.split(","):
        upto = count_of(part, total, "--waves") if part.strip().endswith("%") else \
            done + count_of(part, total, "--waves")
        if upto > done:
            plan.append(names[done:upto])
            done = upto
    if done < total:
        plan.append(names[done:])
    return plan


@dataclass(frozen=True)
class FailureLimit:
    """``max_failures`` parsed: a count, or a percentage of the finished boards."""
    value: float
    percent: bool

    @classmethod
    def parse(cls, text: str) -> "FailureLimit":
        t = str(text).strip()
        try:
            if t.endswith("%"):
                pct = float(t[:-1])
                if not 0 <= pct <= 100:
                    raise ValueError
                return cls(pct, True)
            n = int(t)
            if n < 0:
                raise ValueError
            return cls(n, False)
        except ValueError as exc:
            raise InputError(f"--max-failures {text!r}: expected a count (3) or a percentage "
                             f"(5%)") from exc

    def exceeded(self, failed: int, finished: int) -> bool:
        return 100 * failed / finished > self.value if self.percent else failed > self.value


def too_many_failures(failed: int, finished: int, max_failures: str, min_sample: int) -> bool:
    """Pure: abort when, after MIN_SAMPLE finished boards, failures exceed MAX_FAILURES."""
    if finished < max(min_sample, 1):
        return False
    return FailureLimit.parse(max_failures).exceeded(failed, finished)


def wave_verdict(rows: list, wave: int, max_failures: str, min_sample: int) -> str | None:
    """Pure: why the rollout stops after WAVE (ROWS: its journal's board rows), or None — a
    failed canary, or too many failed boards among the finished ones. SSH and pull rollouts
    judge alike."""
    from .journal import BAD, FINAL, BoardState

    rows = [b for b in rows if b.state != BoardState.SKIPPED]
    bad = [b for b in rows if b.state in BAD]
    canary = next((b for b in bad if b.wave == 0), None)
    if wave == 0 and canary is not None:
        return f"the canary {canary.board} failed: {canary.error}"
    finished = [b for b in rows if b.state in FINAL]
    if too_many_failures(len(bad), len(finished), max_failures, min_sample):
        return f"{len(bad)} of {len(finished)} finished boards failed (max {max_failures})"
    return None


def rollout_end(rows: list) -> tuple:
    """Pure: how a rollout that ran every wave ends (ROWS: its journal's board rows):
    (RolloutState.SUCCEEDED, None), or PARTIAL with the boards not updated."""
    from .journal import BoardState, RolloutState

    bad = [b.board for b in rows if b.state not in (BoardState.COMMITTED, BoardState.SKIPPED)]
    if bad:
        return (RolloutState.PARTIAL, f"{len(bad)} board(s) not updated (under "
                                      f"--max-failures): {', '.join(bad[:10])}")
    return RolloutState.SUCCEEDED, None


@dataclass
class Options:
    """How a rollout goes. Stored in the journal as JSON (``--resume`` reads it back), so the
    fields stay plain values."""
    canary: str = "1"
    waves: str = "10%,50%,100%"
    parallel: int = 16
    gates: list[str] = field(default_factory=list)
    max_accuracy_drop: float | None = None
    max_latency_increase: float | None = None      # percent
    max_failures: str = "5%"
    min_sample: int = 5
    timeout: float = 300.0
    retries: int = 1
    bench_runs: int = 50
    skip_incompatible: bool = False
    accept_new_host_key: bool = False
    gate_data: str | None = None                   # travels in the bundle as gate.npz
    via: str | None = None                         # pull mode: s3://BUCKET/PREFIX
    via_endpoint: str | None = None                # ... its S3 endpoint (None: AWS)

    def parsed_gates(self) -> list[Gate]:
        return [parse_gate(g) for g in self.gates]

    @property
    def measures(self) -> bool:
        return bool(self.gates) or self.max_accuracy_drop is not None or \
            self.max_latency_increase is not None

    @property
    def relative(self) -> bool:
        """A gate compares with the version being replaced (measured while staging)."""
        return self.max_accuracy_drop is not None or self.max_latency_increase is not None

    def validate(self) -> None:
        """Check every option (and the gate data file) before any board is touched; an
        InputError (exit 2) names the first that is wrong."""
        for name, text in (("--canary", self.canary), ("--waves", self.waves),
                           ("--max-failures", self.max_failures)):
            if not isinstance(text, str):
                raise InputError(f"{name} {text!r}: expected text such as 5% or 3")
        for name, flag in (("--skip-incompatible", self.skip_incompatible),
                           ("--accept-new-host-key", self.accept_new_host_key)):
            if not isinstance(flag, bool):
                raise InputError(f"{name} {flag!r}: expected true or false")
        if not isinstance(self.gates, list) or not all(isinstance(g, str) for g in self.gates):
            raise InputError(f"--gate {self.gates!r}: expected gate expressions")
        count_of(self.canary, 100, "--canary")
        if self.via is not None:
            from ...device.s3 import parse_location

            parse_location(self.via, self.via_endpoint)
        if self.waves.strip() != "exp":
            for part in self.waves.split(","):
                count_of(part, 100, "--waves")
        FailureLimit.parse(self.max_failures)
        for name, value, least in (("--parallel", self.parallel, 1),
                                   ("--min-sample", self.min_sample, 0),
                                   ("--retries", self.retries, 0),
                                   ("--bench-runs", self.bench_runs, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InputError(f"{name} {value!r}: expected a whole number ≥ {least}")
        if not isinstance(self.timeout, (int, float)) or isinstance(self.timeout, bool) or \
                not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise InputError(f"--timeout {self.timeout!r}: expected seconds > 0")
        for name, v in (("--max-accuracy-drop", self.max_accuracy_drop),
                        ("--max-latency-increase", self.max_latency_increase)):
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)
                                  or not (v >= 0 and math.isfinite(v))):
                raise InputError(f"{name} {v!r}: expected a number ≥ 0")
        gates = self.parsed_gates()
        needs_data = any(g.metric in ("accuracy", "agreement") for g in gates)
        if self.gate_data is None:
            if needs_data:
                raise InputError("accuracy/agreement gates need --gate-data FILE.npz (x, y)")
            if self.max_accuracy_drop is not None:
                raise InputError("--max-accuracy-drop needs --gate-data FILE.npz (x, y)")
            return
        keys = npz_keys(Path(self.gate_data))
        missing = [k for k in ("x", "y") if k not in keys]
        if missing:
            raise InputError(f"{self.gate_data}: gate data lacks {', '.join(missing)}",
                             hint="np.savez(path, x=inputs, y=labels[, outputs=host outputs])")
        if any(g.metric == "agreement" for g in gates) and "outputs" not in keys:
            raise InputError("an agreement gate needs reference outputs: key 'outputs' in the "
                             "--gate-data file")


def npz_keys(path: Path) -> list[str]:
    """The arrays an .npz holds, or an InputError naming the file."""
    import zipfile

    if not path.is_file():
        raise InputError(f"{path}: no such gate data file")
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] if n.endswith(".npy") else n for n in z.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not an .npz file ({exc})") from exc
