"""Benchmark the device agent in both board envs, side by side in one run; writes
benchmarks/agent.json.

1. Timing fidelity: ``edgedeploy-agent bench`` p50 against a bare interpreter invoke loop on the
   same model in the same env (goal: within 3%). Rounds alternate agent / bare; medians.
2. Endpoint overhead: p50 round trip of a client predict through ``serve`` (Unix socket, client
   in the same board env) minus the p50 of an in-process set_tensor + invoke + get_tensor on the
   same model (goal: ≤ 0.2 ms).
3. Start-up: ``python3 edgedeploy-agent.pyz version`` against ``python3 -c pass``, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchrig import REPO, digits, write_result

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
GOALS = {"agent_vs_bare_p50_max_pct": 3.0, "endpoint_overhead_p50_max_ms": 0.2}

BARE = r"""
import sys, time, json
import numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    from tflite_runtime.interpreter import Interpreter
path, runs, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
it = Interpreter(model_path=path, num_threads=1)
it.allocate_tensors()
d = it.get_input_details()[0]
rng = np.random.default_rng(0)
if np.dtype(d["dtype"]).kind == "f":
    x = rng.random(d["shape"], dtype=np.float32).astype(d["dtype"])
else:
    info = np.iinfo(d["dtype"])
    x = rng.integers(info.min, int(info.max) + 1, d["shape"], dtype=d["dtype"])
it.set_tensor(d["index"], x)
for _ in range(warmup):
    it.invoke()
s = []
clock = time.perf_counter_ns
for _ in range(runs):
    t0 = clock(); it.invoke(); s.append((clock() - t0) / 1e6)
mode = sys.argv[4] if len(sys.argv) > 4 else "invoke"
if mode == "full":  # set_tensor + invoke + get_tensor, what one predict does in-process
    o = it.get_output_details()[0]
    s = []
    for _ in range(runs):
        t0 = clock(); it.set_tensor(d["index"], x); it.invoke(); it.get_tensor(o["index"])
        s.append((clock() - t0) / 1e6)
print(json.dumps({"p50_ms": float(np.median(s))}))
"""

CLIENT = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
import numpy as np
from edgedeploy.device.client import Client
sock, runs = sys.argv[2], int(sys.argv[3])
with Client(socket=sock) as c:
    shape = c.health()  # connection warm
    x = None
    for _ in range(50):
        x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
        c.predict("digits", x)
    s = []
    for _ in range(runs):
        t0 = time.perf_counter_ns(); c.predict("digits", x); s.append((time.perf_counter_ns() - t0) / 1e6)
print(json.dumps({"p50_ms": float(np.median(s))}))
"""


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "agent.json")
    a = p.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from edgedeploy.device.ship import build_zipapp
    from edgedeploy.host.bundle import load_bundle
    from edgedeploy.host.compiler import CompileOptions, compile_model

    envs = {"litert": os.environ["EDGEDEPLOY_BOARD_LITERT_PY"],
            "tflite_runtime": os.environ["EDGEDEPLOY_BOARD_TFLRT_PY"]}
    work = Path(tempfile.mkdtemp(prefix="edgedeploy-bench-agent-"))
    console = Console()
    console.print(f"training the digits CNN and compiling float32 + int8 in {work}")
    digits(work / "data", epochs=3)
    for mode in ("float32", "int8"):
        compile_model(CompileOptions(model=work / "data" / "digits.keras", mode=mode,
                                     out=work / "models", calib=work / "data" / "calib.npz"))
    pyz = build_zipapp(work / "edgedeploy-agent.pyz")["path"]
    results: dict = {"goals": GOALS, "runs": a.runs, "rounds": a.rounds, "envs": {}}

    fidelity = Table(title=f"agent bench p50 vs a bare invoke loop (median of {a.rounds} "
                           f"alternating rounds, {a.runs} runs each)")
    for col in ("env", "model", "agent p50 ms", "bare p50 ms", "diff %"):
        fidelity.add_column(col, justify="right")
    endpoint = Table(title="serve endpoint: client round trip vs in-process predict (p50)")
    for col in ("env", "round trip ms", "in-process ms", "overhead ms"):
        endpoint.add_column(col, justify="right")
    startup = Table(title="start-up (median of 15)")
    for col in ("env", "agent version s", "python -c pass s", "agent extra s"):
        startup.add_column(col, justify="right")

    for env, py in envs.items():
        store = work / f"store-{env}"
        res: dict = {"python": py, "models": {}}
        for mode in ("float32", "int8"):
            model = work / "models" / f"digits.{mode}.tflite"
            bundle = load_bundle(model).write_folder(work / f"bundle-{mode}")
            run_json([py, pyz, "--store", str(store), "install", str(bundle), "--activate"])
            agent_p50, bare_p50 = [], []
            for r in range(a.rounds):
                pair = [("agent", agent_p50), ("bare", bare_p50)]
                for which, sink in (pair if r % 2 == 0 else pair[::-1]):
                    if which == "agent":
                        out = run_json([py, pyz, "--store", str(store), "bench", "digits",
                                        "--runs", str(a.runs), "--warmup", "100", "--no-samples"])
                        sink.append(out["timing"]["p50_ms"])
                    else:
                        sink.append(run_json([py, "-c", BARE, str(model), str(a.runs),
                                              "100"])["p50_ms"])
            ag, ba = statistics.median(agent_p50), statistics.median(bare_p50)
            diff = 100.0 * (ag - ba) / ba
            res["models"][mode] = {"agent_p50_ms": agent_p50, "bare_p50_ms": bare_p50,
                                   "agent_median_ms": ag, "bare_median_ms": ba,
                                   "diff_pct": diff}
            fidelity.add_row(env, mode, f"{ag:.4f}", f"{ba:.4f}", f"{diff:+.2f}")

        # endpoint overhead on the float32 model (float input, 4 KB per request)
        run_json([py, pyz, "--store", str(store), "activate", "digits",
                  load_bundle(work / "models" / "digits.float32.tflite").version])
        sock = str(work / f"{env}.sock")
        srv = subprocess.Popen([py, pyz, "--store", str(store), "serve", "--socket", sock],
                               stdout=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"})
        assert srv.stdout is not None and json.loads(srv.stdout.readline())["kind"] == "serving"
        rts, inproc = [], []
        try:
            for r in range(a.rounds):
                rts.append(run_json([py, "-c", CLIENT, pyz, sock, str(a.runs)])["p50_ms"])
                inproc.append(run_json([py, "-c", BARE, str(work / "models" /
                                                         "digits.float32.tflite"),
                                        str(a.runs), "100", "full"])["p50_ms"])
        finally:
            srv.terminate()
            srv.wait(timeout=30)
        rt_m, ip_m = statistics.median(rts), statistics.median(inproc)
        res["endpoint"] = {"round_trip_p50_ms": rts, "in_process_p50_ms": inproc,
                           "overhead_ms": rt_m - ip_m}
        endpoint.add_row(env, f"{rt_m:.4f}", f"{ip_m:.4f}", f"{rt_m - ip_m:.4f}")

        agent_s, bare_s = [], []
        for _ in range(15):
            t0 = time.perf_counter()
            run_json([py, pyz, "--store", str(store), "version"])
            agent_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run([py, "-c", "pass"], check=True)
            bare_s.append(time.perf_counter() - t0)
        res["startup"] = {"agent_version_s": statistics.median(agent_s),
                          "python_pass_s": statistics.median(bare_s)}
        startup.add_row(env, f"{statistics.median(agent_s):.3f}",
                        f"{statistics.median(bare_s):.3f}",
                        f"{statistics.median(agent_s) - statistics.median(bare_s):.3f}")
        results["envs"][env] = res

    console.print(fidelity)
    console.print(endpoint)
    console.print(startup)
    verdicts = {}
    for env, res in results["envs"].items():
        for mode, m in res["models"].items():
            verdicts[f"{env}/{mode}/agent_vs_bare_pct"] = \
                (abs(m["diff_pct"]) <= GOALS["agent_vs_bare_p50_max_pct"], m["diff_pct"])
        verdicts[f"{env}/endpoint_overhead_ms"] = \
            (res["endpoint"]["overhead_ms"] <= GOALS["endpoint_overhead_p50_max_ms"],
             res["endpoint"]["overhead_ms"])
    for k, (ok, v) in verdicts.items():
        console.print(f"{'met ' if ok else 'MISSED'}  {k} = {v:.4f}")
    results["verdicts"] = {k: {"met": ok, "value": v} for k, (ok, v) in verdicts.items()}
    write_result(a.out, results, console.print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
