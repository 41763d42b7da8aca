"""Pull mode at scale, side by side with the SSH rollout in one run; writes benchmarks/pull.json.

Rig: N real boards (scripts/fleet: netns, sshd, both board envs; 200 by default), each set up
once over SSH for pull mode (`pull-setup`: signer, credentials that may write only its own
status, the resident agent polling every EVERY s) against one SeaweedFS (scripts/objectstore);
plus scripts/pull_loadgen.py standing in for LOAD more boards' polls (10,000 by default)
against the same store, in one trial per --load-every interval (5 s: more than this machine's
store serves — the generator runs flat out and says what it got; 60 s: the README's case).
Measured:

* idle polls: object-store requests per board per poll and HTTP body bytes (the agents' loop
  logs), bytes on the wire per poll (each board's link counters: TCP/IP and HTTP headers
  included), the store's CPU per poll (weed's /proc stat);
* `edgedeploy rollout start --via` of a new version (a model already active at the old one;
  waves canary 1, then --waves; no gates, as bench_rollout): wall time from the command to
  every board committed, controller CPU (the CLI process and its children) per board — alone,
  then with the load generator running (started first, stopped when the rollout ends);
* `edgedeploy rollout start` over SSH of the same boards, same waves, --parallel P, in the same
  run (a fresh model name: the pull loops leave it alone; the resident agents serve it).

A benchmark, not a test: it prints a table and writes JSON; medians over --reps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from benchrig import REPO, fleet_cmd, run_timed, write_result

OS = REPO / "scripts" / "objectstore"


def log(msg: str) -> None:
    print(f"bench_pull: {msg}", file=sys.stderr, flush=True)


def objectstore(cmd: str, d: Path, *args: str) -> dict:
    p = subprocess.run([sys.executable, str(OS), cmd, "--dir", str(d), *args],
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"bench_pull: objectstore {cmd}: {p.stderr[-2000:]}")
    return json.loads((d / "objectstore.json").read_text()) if cmd == "up" else {}


def host_ip(addr: str) -> str:
    a, b, c, last = addr.split(".")
    return f"{a}.{b}.{c}.{int(last) - 1}"


def proc_cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def link_bytes(veths: list[str]) -> int:
    total = 0
    for v in veths:
        base = Path("/sys/class/net") / v / "statistics"
        total += int((base / "rx_bytes").read_text()) + int((base / "tx_bytes").read_text())
    return total


def loop_lines(d: Path, names: list[str], since: dict[str, int] | None = None
               ) -> tuple[dict[str, int], list[dict]]:
    """(line counts now, the JSON poll lines after SINCE) of every board's loop log."""
    counts, out = {}, []
    for n in names:
        p = d / n / "home" / ".edgedeploy" / "store" / "pull" / "loop.log"
        lines = p.read_text().splitlines() if p.exists() else []
        counts[n] = len(lines)
        start = (since or {}).get(n, 0)
        for x in lines[start:] if start <= len(lines) else lines:
            body = x.split(" ", 1)[1] if " " in x else ""
            if body.startswith("{"):
                out.append(json.loads(body))
    return counts, out


def wait_all(check, what: str, seconds: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if check():
            return time.monotonic() - t0
        time.sleep(0.5)
    raise SystemExit(f"bench_pull: timed out waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", type=int, default=200)
    ap.add_argument("--every", type=float, default=5.0, help="boards' poll interval (5 s)")
    ap.add_argument("--load", type=int, default=10000, help="simulated boards (10000)")
    ap.add_argument("--load-every", default="5,60",
                    help="the simulated boards' poll intervals, a trial each (5,60 s)")
    ap.add_argument("--load-procs", type=int, default=2)
    ap.add_argument("--load-threads", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=20, help="SSH rollout's parallelism")
    ap.add_argument("--waves", default="10%,50%,100%")
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "pull.json")
    a = ap.parse_args(argv)

    import bench_push
    import pull_loadgen
    from edgedeploy.device.s3 import Credentials, Location
    from edgedeploy.host.bucket import Bucket
    from edgedeploy.host.bundle import Bundle, load_bundle
    from edgedeploy.host.deploy import BoardSession
    from edgedeploy.host.fleet import push_many
    from edgedeploy.host.pullsetup import PullSetup, setup_pull
    from edgedeploy.targets import load_fleet

    work = Path(tempfile.mkdtemp(prefix="bench_pull."))
    d, osd = work / "fleet", work / "os"
    names = [f"b{i}" for i in range(a.boards)]
    cli = [sys.executable, "-m", "edgedeploy.host.cli"]
    result: dict = {"what": "pull mode (S3: SeaweedFS) vs SSH rollout, same boards, same run",
                    "boards": a.boards, "poll_every_s": a.every, "waves": a.waves,
                    "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        models = bench_push.make_models(work)
        base = load_bundle(models["small"])
        log(f"starting {a.boards} boards and the object store")
        t0 = time.perf_counter()
        fleet_cmd("up", d, str(a.boards))
        info = objectstore("up", osd, "--boards", ",".join(names), "--loadgen", "--bind",
                           "0.0.0.0", "--prefix", "fleet")
        result["rig_up_s"] = round(time.perf_counter() - t0, 1)
        key = work / "release_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release@bench",
                        "-f", str(key)], check=True)
        toml = (d / "fleet.toml").read_text()
        (d / "fleet.toml").write_text(
            f'signing_key = "{key}"\n[pull]\nstore = "s3://{info["bucket"]}/fleet"\n'
            f'endpoint = "{info["endpoint"]}"\npoll_every = {a.every}\n\n' + toml)
        fleet = load_fleet(d / "fleet.toml")
        state = {b["name"]: b for b in json.loads((d / "fleet-state.json").read_text())
                 ["boards"]}
        env = {**os.environ, "AWS_ACCESS_KEY_ID": info["controller"]["access_key"],
               "AWS_SECRET_ACCESS_KEY": info["controller"]["secret_key"],
               "EDGEDEPLOY_RESULTS": str(work / "r.db"),
               "EDGEDEPLOY_ROLLOUTS": str(work / "journal.db")}
        pub = key.with_suffix(".pub").read_text()

        def enroll(name: str) -> None:
            src = f"http://{host_ip(state[name]['addr'])}:{info['port']}/{info['bucket']}/fleet"
            with BoardSession(fleet.boards[name]) as s:
                setup_pull(s, PullSetup(src, every=a.every), [pub], info["boards"][name])
        log("setting every board up for pull mode (over SSH, once)")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=a.parallel) as pool:
            list(pool.map(enroll, names))
        result["setup_s"] = round(time.perf_counter() - t0, 1)
        bucket = Bucket(Location(info["endpoint"], info["bucket"], "fleet"),
                        Credentials(info["controller"]["access_key"],
                                    info["controller"]["secret_key"]))
        wait_all(lambda: len(set(bucket.statuses()) & set(names)) == a.boards,
                 "every board's first report", 300)

        def fresh(name: str) -> Bundle:
            return Bundle(replace(base.manifest, name=name), base.model_path)

        def committed(name: str, version: str) -> bool:
            st = bucket.statuses()
            return all((st[n].models.get(name) or {}).get("current") == version for n in names)

        load_every = [float(x) for x in a.load_every.split(",") if x]
        ways = ["pull"] + [f"pull_load{x:g}" for x in load_every] + ["ssh"]
        trials: dict[str, list[dict]] = {w: [] for w in ways}
        loads: dict[str, dict] = {}
        idle: dict = {}
        for rep in range(a.reps):
            for way in ways:
                name = f"{way.replace('_', '').replace('.', '')}{rep}"
                old = fresh(name)
                new = Bundle(replace(old.manifest, version="b" + old.version[1:]),
                             old.model_path)
                oldf, newf = old.write_folder(work / f"{name}-a"), new.write_folder(
                    work / f"{name}-b")
                if way == "ssh":  # the old version pushed first (not measured), signed: the
                    from edgedeploy.host.signing import sign_bundle  # boards trust signers

                    res = push_many(list(fleet.boards.values()), sign_bundle(old, key),
                                    parallel=a.parallel)
                    if res.failed:
                        raise SystemExit(f"bench_pull: push failed on {list(res.failed)[:5]}")
                    cmd = [*cli, "rollout", "start", str(newf), "--fleet", str(d / "fleet.toml"),
                           "--waves", a.waves, "--parallel", str(a.parallel), "--json",
                           "--max-failures", "0"]
                else:  # the old version published to every board first (not measured)
                    subprocess.run([*cli, "publish", str(oldf), "--all", "--fleet",
                                    str(d / "fleet.toml")], env=env, check=True,
                                   capture_output=True)
                    wait_all(lambda: committed(name, old.version), "the old version", 300)
                    if not idle:  # idle polls, once: every board runs a model, none changes
                        idle = measure_idle(a, d, names, state, info, bucket)
                    cmd = [*cli, "rollout", "start", str(newf), "--via", "-", "--fleet",
                           str(d / "fleet.toml"), "--waves", a.waves, "--timeout", "300",
                           "--json", "--max-failures", "0"]
                loader = None
                stop = work / f"stop-{name}"
                if way.startswith("pull_load"):
                    box: dict = {}
                    every = float(way[len("pull_load"):])

                    def run_load(every: float = every) -> None:
                        box["r"] = pull_loadgen.run(
                            info["endpoint"], info["bucket"], "fleet/desired/all.json",
                            "fleet/status/", info["boards"]["loadgen"], a.load, every,
                            900, procs=a.load_procs, threads=a.load_threads,
                            status_template=sample_status(bucket, names[0]),
                            stop_path=str(stop))
                    loader = threading.Thread(target=run_load)
                    loader.start()
                    time.sleep(max(a.every, min(every, 15)) + 2)  # the load is on first
                log(f"rep {rep}: {way} rollout of {a.boards} boards")
                load_before = os.getloadavg()[0]
                try:
                    r = run_timed(cmd, env=env, what="bench_pull")
                finally:
                    stop.touch()
                    if loader is not None:
                        loader.join()
                out = json.loads(r.pop("stdout"))
                if out["state"] != "succeeded":
                    raise SystemExit(f"bench_pull: {way} rollout {out['state']}: "
                                     f"{out.get('message')}")
                if loader is not None:
                    loads[way] = box["r"]
                    r["load"] = box["r"]
                if way != "ssh":
                    assert committed(name, new.version)
                r["controller_cpu_ms_per_board"] = r["host_cpu_s"] / a.boards * 1000
                r["loadavg_1min"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
                trials[way].append(r)
                log(f"  {r['wall_s']:.1f} s, controller CPU "
                    f"{r['controller_cpu_ms_per_board']:.1f} ms/board, machine CPU "
                    f"{r['machine_cpu_s']:.0f} s")
        bucket.close()
        rows = {}
        for way, rs in trials.items():
            rows[way] = {"wall_s_median": round(statistics.median(r["wall_s"] for r in rs), 2),
                         "controller_cpu_ms_per_board": round(statistics.median(
                             r["controller_cpu_ms_per_board"] for r in rs), 2),
                         "machine_cpu_s_median": round(statistics.median(
                             r["machine_cpu_s"] for r in rs), 1),
                         "wall_s": [round(r["wall_s"], 2) for r in rs],
                         "loadavg_1min_before_after": [r["loadavg_1min"] for r in rs]}
        result.update(idle_poll=idle, rollout=rows, load=loads,
                      model_bytes=base.size,
                      note="boards, sshd, agents, SeaweedFS, the load generator and the "
                           "controller share this machine's cores")
        print_table(result)
        write_result(a.out, result)
    finally:
        objectstore("down", osd)
        if (d / "fleet-state.json").exists():
            fleet_cmd("down", d)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


def sample_status(bucket, board: str) -> dict:
    """A real board's status, as the template of the simulated boards' (same size)."""
    from dataclasses import asdict

    st = asdict(bucket.statuses()[board])
    st["board"] = "BOARD"
    return st


def measure_idle(a, d: Path, names: list[str], state: dict, info: dict, bucket) -> dict:
    veths = [state[n]["veth"] for n in names]
    weed = json.loads((d.parent / "os" / "objectstore.json").read_text())["pid"]
    counts, _ = loop_lines(d, names)
    b0, c0, t0 = link_bytes(veths), proc_cpu_s(weed), time.monotonic()
    time.sleep(a.idle_seconds)
    b1, c1, t1 = link_bytes(veths), proc_cpu_s(weed), time.monotonic()
    _, polls = loop_lines(d, names, counts)
    ok = [p for p in polls if "requests" in p]
    idle = [p for p in ok if p.get("not_modified")]
    n = max(1, len(ok))
    return {"seconds": round(t1 - t0, 1), "polls": len(ok),
            "polls_not_modified": len(idle),
            "requests_per_poll": round(sum(p["requests"] for p in ok) / n, 3),
            "http_body_bytes_per_poll": round(sum(p["body_in"] + p["body_out"]
                                                  for p in ok) / n, 1),
            "wire_bytes_per_poll": round((b1 - b0) / n, 1),
            "store_cpu_ms_per_poll": round((c1 - c0) / n * 1000, 3),
            "polls_per_s": round(len(ok) / (t1 - t0), 1)}


def print_table(r: dict) -> None:
    i = r["idle_poll"]
    print(f"\n{r['boards']} boards polling every {r['poll_every_s']:g} s; model "
          f"{r['model_bytes']} bytes")
    print(f"idle poll: {i['requests_per_poll']} requests, {i['http_body_bytes_per_poll']} "
          f"body bytes, {i['wire_bytes_per_poll']} bytes on the wire, store CPU "
          f"{i['store_cpu_ms_per_poll']} ms  ({i['polls']} polls in {i['seconds']} s)")
    print(f"{'rollout':<16}{'wall s':>10}{'controller CPU ms/board':>26}{'machine CPU s':>16}")
    for way, row in r["rollout"].items():
        print(f"{way:<16}{row['wall_s_median']:>10.2f}{row['controller_cpu_ms_per_board']:>26.2f}"
              f"{row['machine_cpu_s_median']:>16.1f}")
    for way, L in (r.get("load") or {}).items():
        print(f"{way}: load generator, {L['boards']} boards every {L['every_s']:g} s, asked "
              f"{L['polls_per_s_asked']} polls/s, got {L['polls_per_s']} polls/s over "
              f"{L['seconds']} s (latency p50 {L['latency_ms']['p50']} ms, p99 "
              f"{L['latency_ms']['p99']} ms, {L['errors']} errors)")


if __name__ == "__main__":
    sys.exit(main())
