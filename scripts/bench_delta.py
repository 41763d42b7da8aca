"""Tensor-level deltas against zstd --patch-from, bsdiff4 and rsync, side by side in one run;
writes benchmarks/delta.json (run through scripts/bench_delta).

Models: scripts/delta_models.py builds a MobileNetV2 (alpha 0.5, 96x96, 10 classes, random init,
trained briefly on sklearn digits) and updates of it, compiled by ``edgedeploy compile``: int8
with only the head retrained, the last 2 blocks fine-tuned, a full retrain, a re-quantization
with other calibration data; float32 and float16 of the head-only case. Cached in --work.

For each case (old → new), in one run:
  edgedeploy   host/delta.build_delta (median of --reps builds, this process, warm); the
               patch applied by device/delta.apply in each board env (the agent zipapp on
               PYTHONPATH, no TensorFlow), median of --apply-reps in a warm process, and the
               first apply of a fresh process (imports included)
  zstd         `zstd -19 --patch-from=OLD NEW` (CLI, its default threads); apply `zstd -d
               --patch-from=OLD` (a process each)
  bsdiff4      bsdiff4.diff / bsdiff4.patch (the bench-delta env)
  rsync        `rsync --no-whole-file --stats NEW DEST` with DEST a copy of OLD (its rolling
               checksum; a local rsync ships the same bytes it would over SSH): bytes sent +
               received (the receiver's block checksums travel too), plain and with -z
Board apply time is set against copying the full file in the same process and loop:
``shutil.copyfile`` (sendfile, page cache), that copy then hashed (what the store does with a
full upload), and both followed by fsync (the store fsyncs every file it installs), medians of
CPU time (this machine is shared: wall time is kept too).

Fleet (``--fleet-boards``, 10 by default): real sshd boards from scripts/fleet at
``--fleet-rate`` (1mbit) each, the int8 base pushed to all (not timed), then the head-only
update pushed to all at once — ``edgedeploy push`` as a delta against the same push with deltas
off (the whole file), alternating, ``--fleet-reps`` times; a new model name per trial, so every
trial really sends, and every delta trial builds its delta (once for the 10 boards, as one
``push --all`` does). Wall time, bytes sent, and each against the link limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOALS = {"head_share_max": 0.03, "vs_rsync_min": 5.0, "vs_zstd_max": 1.0,
         "apply_vs_copy_max": 1.5}
CASES = ["int8-head", "int8-blocks", "int8-full", "int8-requant", "float32-head",
         "float16-head"]

BOARD_APPLY = r"""
import hashlib, json, os, shutil, statistics, sys, time
t0 = time.perf_counter()
from edgedeploy.device import delta
patch, base, new, work, reps = sys.argv[1:6]
reps = int(reps)
want = hashlib.sha256(open(new, "rb").read()).hexdigest()

def fresh(name):
    p = os.path.join(work, name)
    if os.path.exists(p):
        os.unlink(p)
    return p

def fsync(path):
    fd = os.open(path, os.O_RDONLY); os.fsync(fd); os.close(fd)

def apply(sync):
    out = fresh("applied.tflite")
    got = delta.apply(patch, lambda ref: base, out, want)
    if sync:
        fsync(out)
    assert got.sha256 == want

def copy(sync):
    out = fresh("copied.tflite")
    shutil.copyfile(new, out)
    if sync:
        fsync(out)

def copy_sha256(sync):
    # what the store does with a full upload: the bytes written, then hashed against the manifest
    out = fresh("copied.tflite")
    shutil.copyfile(new, out)
    with open(out, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == want

apply(False)
first = time.perf_counter() - t0  # a fresh process: imports + the first apply
ways = {"apply": (apply, False), "copy": (copy, False), "copy_sha256": (copy_sha256, False),
        "apply_fsync": (apply, True), "copy_fsync": (copy, True)}
wall = {k: [] for k in ways}
cpu = {k: [] for k in ways}
for i in range(reps):
    names = list(ways) if i % 2 == 0 else list(ways)[::-1]
    for k in names:
        fn, sync = ways[k]
        w, c = time.perf_counter(), time.process_time()
        fn(sync)
        cpu[k].append(time.process_time() - c)
        wall[k].append(time.perf_counter() - w)
assert open(os.path.join(work, "applied.tflite"), "rb").read() == open(new, "rb").read()
print(json.dumps({"first_apply_with_imports_s": first,
                  **{k + "_s": statistics.median(v) for k, v in wall.items()},
                  **{k + "_cpu_s": statistics.median(v) for k, v in cpu.items()}}))
"""

BSDIFF = r"""
import json, statistics, sys, time
import bsdiff4
old, new, reps = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read(), int(sys.argv[3])
d, p = [], []
for _ in range(reps):
    t = time.perf_counter(); patch = bsdiff4.diff(old, new); d.append(time.perf_counter() - t)
    t = time.perf_counter(); out = bsdiff4.patch(old, patch); p.append(time.perf_counter() - t)
    assert out == new
print(json.dumps({"bytes": len(patch), "build_s": statistics.median(d),
                  "apply_s": statistics.median(p), "version": bsdiff4.__version__}))
"""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"bench_delta: {' '.join(cmd)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}\n{proc.stderr}")
    return proc


def timed_proc(cmd: list[str]) -> float:
    t = time.perf_counter()
    run(cmd)
    return time.perf_counter() - t


def zstd_case(old: Path, new: Path, work: Path, reps: int) -> dict:
    patch, out = work / "z.zst", work / "z.out"
    build = [timed_proc(["zstd", "-q", "-f", "-19", f"--patch-from={old}", str(new),
                         "-o", str(patch)]) for _ in range(reps)]
    apply = [timed_proc(["zstd", "-q", "-d", "-f", f"--patch-from={old}", str(patch),
                         "-o", str(out)]) for _ in range(reps)]
    assert out.read_bytes() == new.read_bytes()
    return {"bytes": patch.stat().st_size, "build_s": statistics.median(build),
            "apply_s": statistics.median(apply), "apply_is": "a zstd process (start included)"}


def rsync_case(old: Path, new: Path, work: Path, compress: bool) -> dict:
    dest = work / "rsync-dest.tflite"
    shutil.copyfile(old, dest)
    t = time.perf_counter()
    proc = run(["rsync", "--no-whole-file", "--stats", *(["-z"] if compress else []),
                str(new), str(dest)])
    wall = time.perf_counter() - t
    assert dest.read_bytes() == new.read_bytes()

    def stat(label: str) -> int:
        m = re.search(rf"{label}: ([\d,]+)", proc.stdout)
        if not m:
            raise SystemExit(f"bench_delta: rsync --stats printed no {label!r}:\n{proc.stdout}")
        return int(m.group(1).replace(",", ""))

    sent, received = stat("Total bytes sent"), stat("Total bytes received")
    return {"bytes": sent + received, "sent": sent, "received": received,
            "literal": stat("Literal data"), "matched": stat("Matched data"), "wall_s": wall}


def fleet_part(pairs: dict, work: Path, n: int, rate: str, reps: int) -> dict:
    """The head-only update to N boards at RATE: delta vs full, same run (see docstring)."""
    from dataclasses import replace

    import benchrig

    from edgedeploy.host.bundle import Bundle, load_bundle
    from edgedeploy.host.fleet import push_many
    from edgedeploy.host.transfer import configure, shared
    from edgedeploy.targets import load_fleet

    base, head = (load_bundle(Path(pairs["int8-head"][k])) for k in ("old", "new"))

    def as_name(b: Bundle, name: str) -> Bundle:
        return Bundle(replace(b.manifest, name=name), b.model_path)

    runs: dict[str, list[dict]] = {"delta": [], "full": []}
    with benchrig.fleet(work / "fleet", n, "--rate", rate) as toml:
        boards = list(load_fleet(toml).boards.values())

        def push(bundle: Bundle) -> dict:
            res = push_many(boards, bundle, parallel=n)
            if res.failed:
                raise SystemExit(f"bench_delta: push failed: "
                                 f"{ {k: str(v) for k, v in res.failed.items()} }")
            ok = res.succeeded.values()
            return {"bytes": sum(r.bytes_sent for r in ok),
                    "transfers": sorted({r.transfer for r in ok}),
                    "full_bytes": sum(r.full_bytes for r in ok)}
        configure(enabled=True)
        push(as_name(base, "mnv2_warm"))  # the agent goes to each board once (not timed)
        time.sleep(1)
        for rep in range(reps):
            for way in (["delta", "full"] if rep % 2 == 0 else ["full", "delta"]):
                name = f"mnv2_{way}_{rep}"
                configure(enabled=True)
                push(as_name(base, name))  # what the boards hold before the update
                configure(enabled=way == "delta")
                shared().clear()  # every trial builds its delta, as one `push --all` does
                r = benchrig.timed(push, as_name(head, name))
                if r["transfers"] != [way]:
                    raise SystemExit(f"bench_delta: a {way} trial sent {r['transfers']}")
                runs[way].append(r)
                print(f"fleet {way} rep {rep}: {r['wall_s']:.2f} s, {r['bytes']:,} B",
                      file=sys.stderr, flush=True)
        configure(enabled=True)
    bps = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    unit = next(u for u in bps if rate.endswith(u))
    rate_bps = float(rate[:-len(unit)]) * bps[unit]
    out: dict = {"boards": n, "rate": rate, "reps": reps}
    for way, rs in runs.items():
        per_board = rs[0]["bytes"] / n
        out[way] = {"wall_s_median": statistics.median(r["wall_s"] for r in rs),
                    "wall_s": [round(r["wall_s"], 3) for r in rs],
                    "host_cpu_s_median": statistics.median(r["host_cpu_s"] for r in rs),
                    "bytes_per_board": per_board,
                    "link_limit_s": per_board * 8 / rate_bps}
    out["speedup"] = out["full"]["wall_s_median"] / out["delta"]["wall_s_median"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path,
                    default=Path(os.environ.get("EDGEDEPLOY_CACHE", "~/.cache/edgedeploy"))
                    .expanduser() / "bench-delta",
                    help="where the models are built and kept (reused while complete)")
    ap.add_argument("--reps", type=int, default=5, help="builds per case and tool (5)")
    ap.add_argument("--apply-reps", type=int, default=41, help="board applies per case (41)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--fleet-boards", type=int, default=10,
                    help="boards for the push part (10; 0: skip it)")
    ap.add_argument("--fleet-rate", default="1mbit", help="each board's link (1mbit)")
    ap.add_argument("--fleet-reps", type=int, default=3, help="trials per way (3)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "delta.json")
    a = ap.parse_args(argv)
    host_py, bench_py = os.environ["EDGEDEPLOY_HOST_PY"], os.environ["EDGEDEPLOY_BENCH_DELTA_PY"]
    boards = {"litert": os.environ["EDGEDEPLOY_BOARD_LITERT_PY"],
              "tflite_runtime": os.environ["EDGEDEPLOY_BOARD_TFLRT_PY"]}

    print(f"models in {a.work} (built once: ~15 min)", file=sys.stderr, flush=True)
    pairs = json.loads(run([host_py, str(REPO / "scripts" / "delta_models.py"), str(a.work)],
                           timeout=7200).stdout.strip().splitlines()[-1])

    from rich.console import Console
    from rich.table import Table

    from edgedeploy.device.ship import build_zipapp
    from edgedeploy.host.delta import Base, build_delta, plan_transfer

    work = Path(tempfile.mkdtemp(prefix="bench_delta."))
    os.environ["EDGEDEPLOY_MODEL_CACHE"] = str(work / "host-models")  # this run's own
    rows = []
    try:
        pyz = Path(build_zipapp(work / "edgedeploy-agent.pyz")["path"])
        zstd_version = run(["zstd", "--version"]).stdout.strip()
        rsync_version = run(["rsync", "--version"]).stdout.splitlines()[0]
        for case in a.cases.split(","):
            old, new = Path(pairs[case]["old"]), Path(pairs[case]["new"])
            old_b, new_b = old.read_bytes(), new.read_bytes()
            print(f"{case}: {len(old_b)} → {len(new_b)} B", file=sys.stderr, flush=True)
            builds, d = [], None
            for _ in range(a.reps):
                t = time.perf_counter()
                d = build_delta(new_b, [Base("mnv2", "old", old_b)])
                builds.append(time.perf_counter() - t)
            assert d is not None
            patch = work / f"{case}.delta"
            patch.write_bytes(d.data)
            apply = {}
            for rt, py in boards.items():
                bw = work / f"apply-{case}-{rt}"
                bw.mkdir()
                proc = run([py, "-c", BOARD_APPLY, str(patch), str(old), str(new), str(bw),
                            str(a.apply_reps)], cwd=work,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pyz)})
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                r["ratio_vs_copy"] = r["apply_s"] / r["copy_s"]
                r["ratio_vs_copy_sha256"] = r["apply_s"] / r["copy_sha256_s"]
                r["ratio_vs_copy_fsync"] = r["apply_fsync_s"] / r["copy_fsync_s"]
                r["cpu_ratio_vs_copy"] = r["apply_cpu_s"] / max(r["copy_cpu_s"], 1e-9)
                r["cpu_ratio_vs_copy_sha256"] = r["apply_cpu_s"] / max(r["copy_sha256_cpu_s"],
                                                                       1e-9)
                apply[rt] = r
            ours = {"bytes": d.size, "share": d.size / len(new_b),
                    "plan": plan_transfer(len(new_b), d).kind,
                    "build_s": statistics.median(builds), "apply": apply,
                    "ops": d.stats.ops, "copied_regions": d.stats.copied_regions,
                    "added_regions": d.stats.added_regions,
                    "scaled_regions": d.stats.scaled_regions,
                    "literal_regions": d.stats.literal_regions,
                    "changed_region_bytes": d.stats.changed_region_bytes,
                    "table_literal_bytes": d.stats.table_literal_bytes,
                    "streams": d.stats.streams}
            z = zstd_case(old, new, work, a.reps)
            b = json.loads(run([bench_py, "-c", BSDIFF, str(old), str(new),
                                str(a.reps)]).stdout)
            r_plain = rsync_case(old, new, work, False)
            r_z = rsync_case(old, new, work, True)
            row = {"case": case, "old_bytes": len(old_b), "full_bytes": len(new_b),
                   "edgedeploy": ours, "zstd_patch_from_19": z, "bsdiff4": b,
                   "rsync": r_plain, "rsync_z": r_z}
            row["vs_zstd"] = d.size / z["bytes"]
            row["vs_bsdiff4"] = d.size / b["bytes"]
            row["rsync_over_ours"] = r_plain["bytes"] / d.size
            row["rsync_z_over_ours"] = r_z["bytes"] / d.size
            rows.append(row)

        fleet = fleet_part(pairs, work, a.fleet_boards, a.fleet_rate, a.fleet_reps) \
            if a.fleet_boards else None
        head = next((r for r in rows if r["case"] == "int8-head"), None)
        goals = {
            "head_share": None if head is None else {
                "value": head["edgedeploy"]["share"], "max": GOALS["head_share_max"],
                "met": head["edgedeploy"]["share"] <= GOALS["head_share_max"]},
            "head_vs_rsync": None if head is None else {
                "value": head["rsync_over_ours"], "min": GOALS["vs_rsync_min"],
                "met": head["rsync_over_ours"] >= GOALS["vs_rsync_min"],
                "with_rsync_z": head["rsync_z_over_ours"],
                "met_with_rsync_z": head["rsync_z_over_ours"] >= GOALS["vs_rsync_min"]},
            "no_worse_than_zstd": {
                "worst": max(r["vs_zstd"] for r in rows), "max": GOALS["vs_zstd_max"],
                "met": all(r["vs_zstd"] <= GOALS["vs_zstd_max"] for r in rows)},
            "apply_vs_copy": {
                "measure": "CPU time (process_time) of the board env process, medians; wall "
                           "time on this shared machine is in each case's figures",
                "worst": max(x["cpu_ratio_vs_copy"] for r in rows
                             for x in r["edgedeploy"]["apply"].values()),
                "worst_copy_sha256": max(x["cpu_ratio_vs_copy_sha256"] for r in rows
                                         for x in r["edgedeploy"]["apply"].values()),
                "worst_fsync": max(x["ratio_vs_copy_fsync"] for r in rows
                                   for x in r["edgedeploy"]["apply"].values()),
                "max": GOALS["apply_vs_copy_max"]},
        }
        ac = goals["apply_vs_copy"]
        ac["met"] = ac["worst"] <= ac["max"]
        ac["met_copy_sha256"] = ac["worst_copy_sha256"] <= ac["max"]
        ac["met_fsync"] = ac["worst_fsync"] <= ac["max"]
        ac["per_case"] = {r["case"]: {rt: {k: round(x[k], 3) for k in (
            "cpu_ratio_vs_copy", "cpu_ratio_vs_copy_sha256", "ratio_vs_copy",
            "ratio_vs_copy_sha256", "ratio_vs_copy_fsync")}
            for rt, x in r["edgedeploy"]["apply"].items()} for r in rows}

        console = Console(width=170)
        t = Table(title="bytes sent (share of the full file); host build s; board apply: CPU ms "
                        "in a warm process, litert / tflite-runtime env")
        for col in ("case", "full B", "edgedeploy", "zstd -19", "bsdiff4", "rsync", "rsync -z",
                    "build s ours/zstd/bsdiff", "apply CPU ms", "copy CPU ms",
                    "apply/copy", "apply/(copy+sha256)", "wall +fsync apply/copy"):
            t.add_column(col, justify="left" if col == "case" else "right")
        for r in rows:
            o, n = r["edgedeploy"], r["full_bytes"]

            def pct(x: int) -> str:
                return f"{x:,} ({x / n:.2%})"

            def both(key: str, fmt: str) -> str:
                return " / ".join(format(x[key], fmt) for x in o["apply"].values())
            t.add_row(r["case"], f"{n:,}", pct(o["bytes"]), pct(r["zstd_patch_from_19"]["bytes"]),
                      pct(r["bsdiff4"]["bytes"]), pct(r["rsync"]["bytes"]),
                      pct(r["rsync_z"]["bytes"]),
                      f"{o['build_s']:.2f}/{r['zstd_patch_from_19']['build_s']:.2f}/"
                      f"{r['bsdiff4']['build_s']:.2f}",
                      " / ".join(f"{x['apply_cpu_s'] * 1e3:.1f}" for x in o["apply"].values()),
                      " / ".join(f"{x['copy_cpu_s'] * 1e3:.1f}" for x in o["apply"].values()),
                      both("cpu_ratio_vs_copy", ".1f"), both("cpu_ratio_vs_copy_sha256", ".2f"),
                      both("ratio_vs_copy_fsync", ".2f"))
        console.print(t)
        if fleet:
            console.print(
                f"push of the head-only update to {fleet['boards']} boards at {fleet['rate']} "
                f"each: delta {fleet['delta']['wall_s_median']:.2f} s "
                f"({fleet['delta']['bytes_per_board']:,.0f} B/board, link limit "
                f"{fleet['delta']['link_limit_s']:.2f} s) vs full "
                f"{fleet['full']['wall_s_median']:.2f} s ({fleet['full']['bytes_per_board']:,.0f}"
                f" B/board, limit {fleet['full']['link_limit_s']:.2f} s): "
                f"{fleet['speedup']:.1f}x")
        for k, v in goals.items():
            if v is not None:
                console.print(f"goal {k}: " + json.dumps(
                    {x: y for x, y in v.items() if x != "per_case"}))

        out = {"what": "edgedeploy tensor-level delta vs zstd --patch-from -19, bsdiff4, rsync",
               "models": "scripts/delta_models.py (MobileNetV2 alpha 0.5 96x96, 10 classes, "
                         "sklearn digits; edgedeploy compile)",
               "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "machine": platform.machine()},
               "tools": {"zstd": zstd_version, "rsync": rsync_version,
                         "bsdiff4": rows[0]["bsdiff4"]["version"] if rows else None},
               "reps": a.reps, "apply_reps": a.apply_reps, "goals": goals, "cases": rows,
               "fleet_push": fleet,
               "notes": [
                   "bytes: what travels. edgedeploy and zstd/bsdiff: the patch file; rsync: "
                   "Total bytes sent + received of --stats (received = the block checksums "
                   "the receiver sends first)",
                   "apply: device/delta.apply in the board env (warm process; hashes the "
                   "result as it writes it and checks it against the manifest's sha256); "
                   "copy: shutil.copyfile of the full new file in the same loop (sendfile: no "
                   "user-space copy, no hash); copy+sha256: that copy then hashed, what the "
                   "store does with a full upload (written, then checked against the "
                   "manifest); +fsync: apply and copy followed by fsync, as the store installs "
                   "files",
                   "zstd apply and build are CLI processes (process start included); bsdiff4 "
                   "in-process"]}
        import benchrig

        benchrig.write_result(a.out, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
