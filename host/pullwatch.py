"""What a pull-mode rollout concludes about a board from its status object (pure). The
controller never connects to a board: after it moves a board in the desired state, it reads the
board's status (device/desired.py: Status) until the board has acted on that document or the
wait runs out.

Moving a board to the new target (``observe``)::

    no status, or a status of an older serial      waiting   (failed once WAIT has passed:
                                                              "silent for N s")
    result for this target: committed              committed (figures from the board)
                            gate_failed            rolled_back (the board never activated it;
                                                              it kept the old version)
                            refused                failed    (signature, release, content)
                            failed                 waiting   (the board retries at its next
                                                              poll), failed once WAIT passed

Moving a board back on abort (``observe_back``): ``rolled_back`` once the board reports the old
version current (or none, if it had none) at a serial at least that of the document that moved
it back; ``stranded`` when WAIT passes first (the desired state says the old version: the board
goes back whenever it next polls, and ``--resume`` confirms it).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..device.desired import Status, Target


@dataclass(frozen=True)
class Observation:
    state: str                  # waiting | committed | rolled_back | failed | stranded
    figures: dict | None = None
    old_figures: dict | None = None
    error: str | None = None


def observe(status: Status | None, want: Target, serial: int, *, since: float, now: float,
            wait: float) -> Observation:
    """Pure: a board moved to WANT by the desired state of SERIAL (written at SINCE)."""
    late = now - since > wait
    if status is None or status.serial is None or status.serial < serial:
        if late:
            return Observation("failed", error=f"silent for {now - since:.0f} s: it has not "
                                                f"acted on the desired state {serial}")
        return Observation("waiting")
    res = (status.results or {}).get(want.model) or {}
    if res.get("target") != want.digest():
        if (status.models.get(want.model) or {}).get("current") == want.version:
            return Observation("committed")  # it ran this version already
        if late:
            return Observation("failed", error=f"no result for {want.model} {want.version} "
                                                f"after {now - since:.0f} s")
        return Observation("waiting")
    outcome = res.get("outcome")
    if outcome == "committed":
        return Observation("committed", res.get("figures"), res.get("old_figures"))
    if outcome == "gate_failed":
        return Observation("rolled_back", res.get("figures"), res.get("old_figures"),
                           res.get("error") or "gate failed on the board")
    if outcome == "refused":
        return Observation("failed", error=f"refused by the board: {res.get('error')}")
    if late:
        return Observation("failed", error=f"failed on the board: {res.get('error')}")
    return Observation("waiting")


def observe_back(status: Status | None, model: str, old: str | None, serial: int, *,
                 since: float, now: float, wait: float) -> Observation:
    """Pure: a board moved back to version OLD by the desired state of SERIAL."""
    if status is not None and status.serial is not None and status.serial >= serial and \
            (status.models.get(model) or {}).get("current") == old:
        return Observation("rolled_back")
    if now - since > wait:
        return Observation("stranded", error=f"not back on {old} after {now - since:.0f} s; "
                                              f"the desired state says {old}: it goes back "
                                              f"when it next polls")
    return Observation("waiting")
