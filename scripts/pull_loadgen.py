"""Load generator for bench_pull: stands in for many boards polling an S3 object store the way
device/pull.py does when nothing changed — a conditional GET of the cohort's desired state
(answered 304) and, every REPORT_EVERY polls, a signed PUT of a status object of a real board's
size — each simulated board on its own schedule (every EVERY seconds, phases spread evenly).

Work is split over PROCS processes with THREADS threads each (one kept-alive connection per
thread), so the generator, not one Python thread, sets the pace. Every loop is bounded by
SECONDS. Result: polls and requests done against those scheduled, their latency percentiles,
errors, and how late the generator fell behind (a generator that can't keep up says so; its
achieved rate is the figure to quote, not the one asked for).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _import_checkout() -> None:
    try:
        import edgedeploy.device.s3  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO))
        import edgedeploy

        edgedeploy.__path__.append(str(REPO))


def _worker(args: dict, out: "mp.Queue") -> None:
    _import_checkout()
    from edgedeploy.device.s3 import Credentials, S3Client
    from edgedeploy.errors import EdgeDeployError

    names: list[str] = args["names"]
    every, seconds, threads = args["every"], args["seconds"], args["threads"]
    t_start = args["t_start"]
    creds = Credentials(args["access_key"], args["secret_key"])
    desired_key = args["desired_key"]
    stop_path = args.get("stop_path")
    status_body = json.dumps(args["status_template"]).encode()
    lock = threading.Lock()
    agg = {"polls": 0, "requests": 0, "errors": 0, "lat_ms": [], "late_ms": [],
           "bytes_in": 0, "bytes_out": 0, "error_samples": []}

    def run(slice_: list[tuple[float, str]]) -> None:
        c = S3Client(args["endpoint"], creds, timeout=10)
        etag = None
        lat, late = [], []
        polls = reqs = errs = 0
        samples: list[str] = []
        k = 0
        try:
            while True:
                for phase, name in slice_:
                    due = t_start + phase + k * every
                    if due > t_start + seconds or time.time() > t_start + seconds:
                        return  # bounded: a generator that fell behind stops on time too
                    if stop_path and os.path.exists(stop_path):
                        return
                    wait = due - time.time()
                    if wait > 0:
                        time.sleep(wait)
                    late.append(max(0.0, -wait) * 1000)
                    t0 = time.perf_counter()
                    try:
                        r = c.get(args["bucket"], desired_key, if_none_match=etag)
                        etag = r.etag or etag
                        reqs += 1
                        if (k % args["report_every"]) == 0:
                            c.put(args["bucket"], f"{args['status_prefix']}{name}/status.json",
                                  status_body.replace(b"BOARD", name.encode()),
                                  content_type="application/json")
                            reqs += 1
                        polls += 1
                    except EdgeDeployError as exc:
                        errs += 1
                        if len(samples) < 3:
                            samples.append(str(exc)[:200])
                    lat.append((time.perf_counter() - t0) * 1000)
                k += 1
        finally:
            with lock:
                agg["polls"] += polls
                agg["requests"] += reqs
                agg["errors"] += errs
                agg["lat_ms"] += lat
                agg["late_ms"] += late
                agg["bytes_in"] += c.counters.bytes_in
                agg["bytes_out"] += c.counters.bytes_out
                agg["error_samples"] += samples
            c.close()

    per_thread: list[list[tuple[float, str]]] = [[] for _ in range(threads)]
    for i, (phase, name) in enumerate(zip(args["phases"], names)):
        per_thread[i % threads].append((phase, name))
    ts = [threading.Thread(target=run, args=(sl,), daemon=True) for sl in per_thread if sl]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 60)
    out.put(agg)


def run(endpoint: str, bucket: str, desired_key: str, status_prefix: str, creds: dict,
        boards: int, every: float, seconds: float, *, procs: int = 2, threads: int = 32,
        report_every: int = 1, status_template: dict | None = None,
        stop_path: str | None = None) -> dict:
    """Simulate BOARDS boards polling every EVERY s for SECONDS s, or until STOP_PATH exists
    (module docstring)."""
    names = [f"sim{i:05d}" for i in range(boards)]
    phases = [every * i / boards for i in range(boards)]
    t_start = time.time() + 1.0
    q: mp.Queue = mp.Queue()
    ps = []
    for w in range(procs):
        args = {"names": names[w::procs], "phases": phases[w::procs], "every": every,
                "seconds": seconds, "threads": threads, "t_start": t_start,
                "endpoint": endpoint, "bucket": bucket, "desired_key": desired_key,
                "status_prefix": status_prefix, "access_key": creds["access_key"],
                "secret_key": creds["secret_key"], "report_every": report_every,
                "status_template": status_template or {"board": "BOARD"},
                "stop_path": stop_path}
        p = mp.get_context("fork").Process(target=_worker, args=(args, q), daemon=True)
        p.start()
        ps.append(p)
    parts = []
    for _ in ps:
        parts.append(q.get(timeout=seconds + 120))
    for p in ps:
        p.join(30)
    elapsed = max(1e-3, min(time.time(), t_start + seconds) - t_start)
    lat = sorted(x for a in parts for x in a["lat_ms"])
    late = sorted(x for a in parts for x in a["late_ms"])
    polls = sum(a["polls"] for a in parts)
    scheduled = int(boards * elapsed / every)

    def pct(xs: list[float], q: float) -> float | None:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else None
    return {"boards": boards, "every_s": every, "seconds": round(elapsed, 1), "procs": procs,
            "threads": threads, "report_every": report_every,
            "polls": polls, "polls_scheduled": scheduled,
            "polls_per_s": round(polls / elapsed, 1),
            "polls_per_s_asked": round(boards / every, 1),
            "requests": sum(a["requests"] for a in parts),
            "errors": sum(a["errors"] for a in parts),
            "error_samples": [s for a in parts for s in a["error_samples"]][:5],
            "latency_ms": {"p50": pct(lat, .5), "p90": pct(lat, .9), "p99": pct(lat, .99),
                           "mean": round(statistics.fmean(lat), 2) if lat else None},
            "behind_ms": {"p50": pct(late, .5), "p99": pct(late, .99)},
            "bytes_in": sum(a["bytes_in"] for a in parts),
            "bytes_out": sum(a["bytes_out"] for a in parts)}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objectstore", type=Path, required=True, help="DIR/objectstore.json")
    ap.add_argument("--identity", default="loadgen", help="board identity to use")
    ap.add_argument("--boards", type=int, default=10000)
    ap.add_argument("--every", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--prefix", default="load")
    a = ap.parse_args()
    info = json.loads(a.objectstore.read_text())
    print(json.dumps(run(info["endpoint"], info["bucket"], f"{a.prefix}/desired/all.json",
                         f"{a.prefix}/status/", info["boards"][a.identity], a.boards, a.every,
                         a.seconds, procs=a.procs, threads=a.threads), indent=1))
