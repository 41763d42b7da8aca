"""Polling again and again (``edgedeploy-agent pull --every S``, ``agentd --pull-every S``):
one poll (device/pull.py) every S seconds over one kept-alive connection, backing off while
polls fail — the object store down, another poll running — so a fleet that lost its store
neither hammers it nor comes back in step. The board keeps running what it runs meanwhile.

Log lines (one JSON object per poll, for STORE/pull/loop.log and bench_pull)::

    {"poll": N, "actions": [...], "reported": bool, "not_modified": bool,
     "requests": N, "body_in": BYTES, "body_out": BYTES}
    {"poll": N, "error": MESSAGE, "failing": N, "next_in": SECONDS}
"""

from __future__ import annotations

import json
import random
import time
from typing import Callable

from ..errors import EdgeDeployError
from .pull import PullConfig, poll
from .s3 import S3Client
from .store import Store

MAX_BACKOFF = 600.0


def next_delay(every: float, failures: int, rand: float) -> float:
    """Pure: seconds to the next poll after FAILURES polls in a row failed (RAND in [0, 1)):
    EVERY when all is well; else doubling from EVERY up to 32 x EVERY (at most 10 min, never
    less than EVERY), with ±25 % jitter so a fleet that lost its store doesn't come back in
    step."""
    if failures <= 0:
        return every
    cap = max(every, min(32 * every, MAX_BACKOFF))
    base = min(every * (2 ** min(failures, 16)), cap)
    return base * (0.75 + 0.5 * rand)


def run_loop(cfg: PullConfig, store: Store, every: float, *, max_polls: int | None = None,
             should_stop: Callable[[], bool] = lambda: False,
             sleep: Callable[[float], None] = time.sleep,
             log: Callable[[str], None] = lambda s: None) -> int:
    """Poll every EVERY seconds (backing off while polls fail) until SHOULD_STOP or MAX_POLLS;
    the number of polls that failed in a row at the end. LOG gets a JSON line per poll: what
    was done, requests made and body bytes in and out (one kept-alive connection)."""
    failures = 0
    done = 0
    rng = random.Random()
    client = S3Client(cfg.source.endpoint, cfg.creds, timeout=cfg.timeout)
    try:
        while not should_stop() and (max_polls is None or done < max_polls):
            before = (client.counters.requests, client.counters.bytes_in,
                      client.counters.bytes_out)
            try:
                r = poll(cfg, store, client=client)
                failures = 0
                c = client.counters
                log(json.dumps({"poll": done, "actions": r.actions, "reported": r.reported,
                                "not_modified": r.not_modified,
                                "requests": c.requests - before[0],
                                "body_in": c.bytes_in - before[1],
                                "body_out": c.bytes_out - before[2]}))
            except EdgeDeployError as exc:  # the store down, another poll running, …
                failures += 1
                log(json.dumps({"poll": done, "error": str(exc), "failing": failures,
                                "next_in": round(next_delay(every, failures, 0.5), 2)}))
            done += 1
            if max_polls is not None and done >= max_polls:
                break
            sleep(next_delay(every, failures, rng.random()))
    finally:
        client.close()
    return failures
