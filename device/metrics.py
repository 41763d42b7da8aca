"""What the serve endpoint counts, and the two ways it tells: the NDJSON ``metrics`` answer and
Prometheus's text exposition format (version 0.0.4) at ``GET /metrics``::

    edgedeploy_requests_total{model="digits",protocol="ndjson",outcome="ok"} 1234   counter
    edgedeploy_request_duration_seconds_bucket{model="digits",le="0.0005"} 1100    histogram
    edgedeploy_request_duration_seconds_sum{model="digits"} 0.41
    edgedeploy_request_duration_seconds_count{model="digits"} 1234
    edgedeploy_invoke_duration_seconds_...                                          histogram
    edgedeploy_model_info{model="digits",version="3f2a9c1b0d4e"} 1                  gauge
    edgedeploy_model_swaps_total{model="digits"} 1                                  counter
    edgedeploy_model_load_failures_total{model="digits"} 0                          counter
    edgedeploy_connections{protocol="ndjson"} 2                                     gauge
    edgedeploy_uptime_seconds 360.2                                                 gauge
    process_resident_memory_bytes 61234688                                          gauge

Request duration is the server's time from a parsed request to its answer (what a client's
round trip adds its transport to); invoke duration is set_tensor + invoke + get_tensor. Stdlib.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque

BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
             1.0, 2.5)


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_S) + 1)
        self.sum = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.sum += seconds
        self.n += 1


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = time.time()
        self.requests: dict[tuple[str, str, str], int] = {}   # (model, protocol, outcome)
        self.latencies: deque = deque(maxlen=10000)          # ms, every request
        self.request_h: dict[str, _Histogram] = {}
        self.invoke_h: dict[str, _Histogram] = {}
        self.connections: dict[str, int] = {"ndjson": 0, "http": 0}

    def record(self, model: str | None, ok: bool, ms: float, protocol: str = "ndjson",
               invoke_ms: float | None = None) -> None:
        key = (model or "", protocol, "ok" if ok else "error")
        with self.lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            self.latencies.append(ms)
            if model and ok:
                self.request_h.setdefault(model, _Histogram()).observe(ms / 1e3)
                if invoke_ms is not None:
                    self.invoke_h.setdefault(model, _Histogram()).observe(invoke_ms / 1e3)

    def connection(self, protocol: str, delta: int) -> None:
        with self.lock:
            self.connections[protocol] = self.connections.get(protocol, 0) + delta

    def snapshot(self, swaps: dict[str, int]) -> dict:
        """The NDJSON ``metrics`` answer."""
        with self.lock:
            lat = sorted(self.latencies)
            pct: dict = {}
            for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
                pct[key] = round(lat[min(int(q * len(lat)), len(lat) - 1)], 4) if lat else None
            pct["count"] = len(lat)
            models: dict[str, dict[str, int]] = {}
            for (m, _proto, outcome), n in self.requests.items():
                if not m:
                    continue
                e = models.setdefault(m, {"requests": 0, "errors": 0, "swaps": swaps.get(m, 0)})
                e["requests"] += n
                e["errors"] += n if outcome == "error" else 0
            return {"requests": sum(self.requests.values()),
                    "errors": sum(n for k, n in self.requests.items() if k[2] == "error"),
                    "latency_ms": pct, "models": models}

    def prometheus(self, health: dict, swaps: dict[str, int], failures: dict[str, int]) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        with self.lock:
            family("edgedeploy_requests_total", "counter",
                   "Requests answered, by model, protocol and outcome.")
            for (m, proto, outcome), n in sorted(self.requests.items()):
                out.append(f"edgedeploy_requests_total{_labels(model=m, protocol=proto, outcome=outcome)} {n}")
            for name, hists, help_ in (
                    ("edgedeploy_request_duration_seconds", self.request_h,
                     "Server time per successful request, parse to answer."),
                    ("edgedeploy_invoke_duration_seconds", self.invoke_h,
                     "set_tensor + invoke + get_tensor per successful inference.")):
                family(name, "histogram", help_)
                for m, h in sorted(hists.items()):
                    cum = 0
                    for le, c in zip([*map(_num, BUCKETS_S), "+Inf"], h.counts):
                        cum += c
                        out.append(f"{name}_bucket{_labels(model=m, le=le)} {cum}")
                    out.append(f"{name}_sum{_labels(model=m)} {_num(h.sum)}")
                    out.append(f"{name}_count{_labels(model=m)} {h.n}")
            family("edgedeploy_connections", "gauge", "Open client connections.")
            for proto, n in sorted(self.connections.items()):
                out.append(f"edgedeploy_connections{_labels(protocol=proto)} {n}")
        family("edgedeploy_model_info", "gauge", "The version each model serves (value 1).")
        for m, h in sorted(health.items()):
            if h.get("version"):
                out.append(f"edgedeploy_model_info{_labels(model=m, version=h['version'])} 1")
        family("edgedeploy_model_swaps_total", "counter", "Hot swaps to a newly activated version.")
        for m in sorted(health):
            out.append(f"edgedeploy_model_swaps_total{_labels(model=m)} {swaps.get(m, 0)}")
        family("edgedeploy_model_load_failures_total", "counter",
               "Activated versions that failed to load (the old one kept serving).")
        for m in sorted(health):
            out.append(f"edgedeploy_model_load_failures_total{_labels(model=m)} "
                       f"{failures.get(m, 0)}")
        family("edgedeploy_uptime_seconds", "gauge", "Seconds since the endpoint started.")
        out.append(f"edgedeploy_uptime_seconds {_num(time.time() - self.started)}")
        rss = _rss_bytes()
        if rss is not None:
            family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
            out.append(f"process_resident_memory_bytes {rss}")
        return "\n".join(out) + "\n"


def _num(v: float) -> str:
    return repr(float(v))


def _labels(**kv: str) -> str:
    def esc(v: str) -> str:
        return str(v).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in kv.items()) + "}"


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
