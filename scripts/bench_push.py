"""Push speed against Fabric and scp, side by side in one run; writes benchmarks/push.json.

Boards: real sshd boards from scripts/fleet (each its own netns and veth shaped to --rate by
tc; this kernel has no netem, so there is no added delay and the link is rate-only — said in
the JSON). Models: a ~130 KB and a ~4 MB float32 TFLite (Dense nets), compiled by edgedeploy.

For each board count (1, 10, 50) and model, in rotating order, --reps times:
  edgedeploy   push_many: state, SFTP upload, sha256 check + install + activate on the board
  fabric       fabric.ThreadingGroup(...).put of the same two files (model + manifest),
               known_hosts enforced (RejectPolicy), a thread per board as Fabric does
  scp          one OpenSSH `scp` process per board, all started at once
Each trial pushes a new model name, so every trial really uploads. The agent is copied to the
boards once before timing (a first push does that; it is not the thing measured); the sessions
doing that leave each board a resident agent, which the timed pushes reach through SSH
stream-local forwarding. `--no-resident` measures boards without one (every session starts an
agent process: a board's first push) into benchmarks/push-no-resident.json.

Re-push (the version is already active): edgedeploy push against a bare `ssh BOARD true` per
board, all in parallel.

Machine CPU (all processes, /proc/stat) per trial is recorded too: the boards' sshd and agent
run on this machine's cores, so at 10 and 50 boards a way of pushing that does more on the
board (the agent's Python start, its sha256 check, the fsync'd install) pays for it here in
wall time, where real boards would each use their own CPU.

Link limit per board = bundle bytes × 8 / rate + one handshake (the median of `ssh b0 true`
alone, measured in the same run). Boards have a link each, so the limit does not grow with N;
what does is the host's CPU (2 cores here run the host side and every board's sshd).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchrig import REPO, fleet_cmd, timed, write_result

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def rate_bps(rate: str) -> float:
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1}
    for u, f in units.items():
        if rate.endswith(u):
            return float(rate[:-len(u)]) * f
    return float(rate)


def make_models(out: Path) -> dict[str, Path]:
    """A ~130 KB and a ~4 MB float32 model, compiled by `edgedeploy compile`. In a child
    process: TensorFlow's threads in this one would tax the pushes measured here."""
    subprocess.run([sys.executable, __file__, "--make-models", str(out)], check=True,
                   timeout=900, stdout=subprocess.DEVNULL)
    return {k: out / f"push_{k}.float32.tflite" for k in ("small", "large")}


def _make_models(out: Path) -> None:
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    specs = {"small": [keras.layers.Input((64,)), keras.layers.Dense(256),
                       keras.layers.Dense(64)],
             "large": [keras.layers.Input((1024,)), keras.layers.Dense(1000)]}
    cli = Path(sys.executable).with_name("edgedeploy")
    for name, layers in specs.items():
        src = out / f"push_{name}.keras"
        keras.Sequential(layers).save(src)
        subprocess.run([str(cli), "compile", str(src), "--mode", "float32", "--out",
                        str(out), "--json"], check=True, capture_output=True, timeout=600)


class Rig:
    def __init__(self, d: Path, resident: bool) -> None:
        from edgedeploy.targets import load_fleet

        self.d = d
        self.fleet = load_fleet(d / "fleet.toml")
        self.boards = [replace(b, resident_agent=resident) for b in self.fleet.boards.values()]
        self.key = str(d / "id_ed25519")
        self.known = str(d / "known_hosts")
        self.ssh_opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                         "-o", f"UserKnownHostsFile={self.known}", "-o", "LogLevel=ERROR",
                         "-i", self.key]

    def clean_homes(self) -> None:
        """What the baselines left in the boards' homes (the boards' folders are on this
        machine's disk)."""
        for b in self.boards:
            home = self.d / b.name / "home"
            for p in home.glob("push_*"):
                p.unlink()

    # -- the three ways -------------------------------------------------------------------
    def ours(self, n: int, bundle) -> dict:
        from edgedeploy.host.fleet import push_many

        res = push_many(self.boards[:n], bundle, parallel=n)
        bad = {k: str(v) for k, v in res.failed.items()}
        if bad:
            raise SystemExit(f"bench_push: edgedeploy push failed: {bad}")
        return {"bytes": sum(r.bytes_sent for r in res.succeeded.values()),
                "resident": sum(r.resident_agent for r in res.succeeded.values())}

    def wait_resident(self, want: bool) -> int:
        """Until every board's resident agent runs (bounded): the warm-up sessions start them
        as they close, and their start-up must not fall into a timed trial."""
        from edgedeploy.device.agentd import running_pid

        deadline = time.monotonic() + 60
        while True:
            up = sum(running_pid(f"{b.root}/store") is not None for b in self.boards)
            if not want or up == len(self.boards) or time.monotonic() > deadline:
                return up
            time.sleep(0.1)

    def fabric(self, n: int, files: list[Path]) -> dict:
        import paramiko
        from fabric import ThreadingGroup

        g = ThreadingGroup(*[b.host for b in self.boards[:n]], user="root",
                           connect_kwargs={"key_filename": self.key, "look_for_keys": False,
                                           "allow_agent": False})
        for c in g:  # Fabric auto-adds unknown keys; hold it to the same rule as ours
            c.client.load_host_keys(self.known)
            c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            for f in files:
                g.put(str(f))
        finally:
            g.close()
        return {}

    def scp(self, n: int, files: list[Path]) -> dict:
        procs = [subprocess.Popen(["scp", "-q", *self.ssh_opts, *map(str, files),
                                   f"root@{b.host}:"], stderr=subprocess.PIPE)
                 for b in self.boards[:n]]
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise SystemExit(f"bench_push: scp failed: {err.decode().strip()}")
        return {}

    def ssh_true(self, n: int) -> dict:
        procs = [subprocess.Popen(["ssh", *self.ssh_opts, f"root@{b.host}", "true"])
                 for b in self.boards[:n]]
        for p in procs:
            if p.wait(timeout=120) != 0:
                raise SystemExit("bench_push: ssh true failed")
        return {}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--make-models"]:
        _make_models(Path(argv[1]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", default="1,10,50", help="board counts (1,10,50)")
    ap.add_argument("--rate", default="20mbit", help="each board's link rate (20mbit)")
    ap.add_argument("--reps", type=int, default=3, help="trials per cell (3); medians")
    ap.add_argument("--no-resident", action="store_true",
                    help="boards with resident_agent = false: every session starts an agent "
                         "process (what a first push, or a board without one, costs)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    a.out = a.out or REPO / "benchmarks" / ("push-no-resident.json" if a.no_resident
                                            else "push.json")
    counts = [int(x) for x in a.boards.split(",")]

    from edgedeploy.host.bundle import Bundle, load_bundle

    work = Path(tempfile.mkdtemp(prefix="bench_push."))
    d = work / "fleet"
    try:
        print(f"compiling the two models in {work}", file=sys.stderr)
        models = make_models(work)
        bundles = {k: load_bundle(p) for k, p in models.items()}
        print(f"starting {max(counts)} boards at {a.rate}", file=sys.stderr)
        fleet_cmd("up", d, str(max(counts)), "--rate", a.rate, "--netem",
                  f"delay 20ms rate {a.rate}")
        rig = Rig(d, resident=not a.no_resident)
        # what a first push does, once per board before timing: copy the agent, make the
        # store (and, unless --no-resident, leave a resident agent behind)
        rig.ours(len(rig.boards), Bundle(replace(bundles["small"].manifest, name="push_warm"),
                                         bundles["small"].model_path))
        resident_up = rig.wait_resident(not a.no_resident)
        time.sleep(1)

        handshake = statistics.median(timed(rig.ssh_true, 1)["wall_s"] for _ in range(7))
        rows = []
        trial = 0
        for n in counts:
            for size, base in bundles.items():
                files_dir = work / f"files_{size}"
                files_dir.mkdir(exist_ok=True)
                bundle_bytes = base.size
                files = [base.model_path, files_dir / f"push_{size}.float32.manifest.json"]
                files[1].write_bytes(base.manifest_bytes())
                runs: dict[str, list[dict]] = {"edgedeploy": [], "fabric": [], "scp": []}
                order = list(runs)
                for rep in range(a.reps):
                    for k in range(len(order)):
                        way = order[(rep + k) % len(order)]
                        trial += 1
                        if way == "edgedeploy":
                            b = Bundle(replace(base.manifest, name=f"push_{size}_t{trial}"),
                                       base.model_path)
                            r = timed(rig.ours, n, b)
                        else:
                            r = timed(getattr(rig, way), n, files)
                        rig.clean_homes()
                        runs[way].append(r)
                limit = bundle_bytes * 8 / rate_bps(a.rate) + handshake
                cell = {"boards": n, "model": size, "bundle_bytes": bundle_bytes,
                        "link_limit_s": limit}
                for way, rs in runs.items():
                    cell[way] = {"wall_s_median": statistics.median(r["wall_s"] for r in rs),
                                 "host_cpu_s_median": statistics.median(r["host_cpu_s"]
                                                                        for r in rs),
                                 "machine_cpu_s_median": statistics.median(
                                     r["machine_cpu_s"] for r in rs),
                                 "wall_s": [round(r["wall_s"], 4) for r in rs]}
                cell["edgedeploy"]["pushes_via_resident_agent"] = sum(
                    r["resident"] for r in runs["edgedeploy"])
                fastest = min(("fabric", "scp"), key=lambda w: cell[w]["wall_s_median"])
                ours = cell["edgedeploy"]["wall_s_median"]
                cell["fastest_baseline"] = fastest
                cell["ratio_vs_fastest_baseline"] = ours / cell[fastest]["wall_s_median"]
                cell["ratio_vs_link_limit"] = ours / limit
                rows.append(cell)
                print(f"{n:>3} boards {size:>5} ({bundle_bytes / 1024:7.1f} KB): edgedeploy "
                      f"{ours:6.2f} s  fabric {cell['fabric']['wall_s_median']:6.2f} s  scp "
                      f"{cell['scp']['wall_s_median']:6.2f} s  limit {limit:5.2f} s  → "
                      f"{cell['ratio_vs_fastest_baseline']:.2f}x {fastest}, "
                      f"{cell['ratio_vs_link_limit']:.2f}x limit; machine CPU-s "
                      f"{cell['edgedeploy']['machine_cpu_s_median']:.2f} / "
                      f"{cell['fabric']['machine_cpu_s_median']:.2f} / "
                      f"{cell['scp']['machine_cpu_s_median']:.2f}", flush=True)

        # re-push: the active version again, against a bare `ssh BOARD true`
        repush = []
        for n in counts:
            b = Bundle(replace(bundles["small"].manifest, name="push_repush"),
                       bundles["small"].model_path)
            rig.ours(n, b)
            ours_r, ssh_r = [], []
            for rep in range(max(a.reps, 5)):
                pair = [("edgedeploy", lambda: timed(rig.ours, n, b)),
                        ("ssh", lambda: timed(rig.ssh_true, n))]
                for way, fn in (pair if rep % 2 == 0 else pair[::-1]):
                    r = fn()
                    (ours_r if way == "edgedeploy" else ssh_r).append(r)
                    if way == "edgedeploy" and r.get("bytes"):
                        raise SystemExit("bench_push: a re-push sent model bytes")
            row = {"boards": n,
                   "edgedeploy_wall_s_median": statistics.median(r["wall_s"] for r in ours_r),
                   "ssh_true_wall_s_median": statistics.median(r["wall_s"] for r in ssh_r),
                   "model_bytes_sent": 0}
            row["ratio"] = row["edgedeploy_wall_s_median"] / row["ssh_true_wall_s_median"]
            repush.append(row)
            print(f"re-push {n:>3} boards: edgedeploy {row['edgedeploy_wall_s_median']:.3f} s, "
                  f"ssh true {row['ssh_true_wall_s_median']:.3f} s → {row['ratio']:.2f}x",
                  flush=True)

        state = json.loads((d / "fleet-state.json").read_text())
        out = {"what": "edgedeploy push vs Fabric ThreadingGroup.put vs parallel scp",
               "rate": a.rate, "link": state.get("link"),
               "delay": "not simulated: tc netem is absent in this kernel; tbf shapes the rate"
                        if not str(state.get("link", "")).startswith("netem") else "netem",
               "reps": a.reps, "handshake_ssh_true_s": handshake,
               "resident_agent": not a.no_resident, "resident_agents_up": resident_up,
               "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "goals": {"ratio_vs_fastest_baseline_max": 1.0, "ratio_vs_link_limit_max": 1.5},
               "push": rows, "repush": repush,
               "note": "edgedeploy's time includes what the baselines don't do: the agent's "
                       "state call, the sha256 check and install, and the activation"
                       + ("; every session starts an agent process on the board"
                          if a.no_resident else "; the boards' resident agents do that work "
                          "(started by the warm-up sessions, not timed)")}
        write_result(a.out, out)
    finally:
        if (d / "fleet-state.json").exists():
            fleet_cmd("down", d)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
