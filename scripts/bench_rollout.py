"""Rollout speed against Ansible, side by side in one run; writes benchmarks/rollout.json.

Boards: real sshd boards from scripts/fleet (10, 50, 200 by default; each its own netns, sshd,
host key, folder, board env). Both sides do the same job on the same boards: a model that is
already active at version A gets version B staged (uploaded, installed by the agent, not
active) on every board of a wave before any of them is activated, waves = canary 1, then
10%, 50%, 100% of the fleet, the same parallelism.

  edgedeploy   `edgedeploy rollout B --waves 10%,50%,100% --parallel P` (preflight, journal,
               no gates: the same work as the playbook)
  ansible      ansible-core `ansible-playbook -f P`, one play with `serial:` = the same wave
               sizes, tasks: file (incoming dir), copy model, copy manifest, command (agent
               install), command (agent activate); OpenSSH with ControlPersist (its default)

Each trial uses a fresh model name with version A pushed first (not timed). Wall time, host
CPU (this process's children: the CLI or ansible-playbook and everything they start, ssh
included) per board, and machine CPU (every process, /proc/stat: the boards' sshd and Python
run on these same cores). ansible-core is installed into its own venv for this benchmark
only; edgedeploy does not depend on it.
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

from benchrig import REPO, env_python, fleet_cmd, run_timed, write_result


def ansible_bin() -> Path:
    """ansible-playbook from the `ansible` env of scripts/envs (built on first use, only for
    this benchmark)."""
    return env_python("ansible").parent / "ansible-playbook"


def wave_sizes(n: int, waves: str) -> list[int]:
    from edgedeploy.host.fleet import plan_waves

    return [len(w) for w in plan_waves([f"b{i}" for i in range(n)], "1", waves)]


PLAYBOOK = """- hosts: boards
  gather_facts: false
  serial: {serial}
  tasks:
    - name: incoming folder
      file: {{path: "{{{{ root }}}}/incoming/{tag}", state: directory}}
    - name: model
      copy: {{src: "{model}", dest: "{{{{ root }}}}/incoming/{tag}/{model_name}"}}
    - name: manifest
      copy: {{src: "{manifest}", dest: "{{{{ root }}}}/incoming/{tag}/{manifest_name}"}}
    - name: stage (agent checks the hashes and installs)
      command: "{{{{ py }}}} {{{{ root }}}}/agent/edgedeploy-agent.pyz --store {{{{ root }}}}/store install {{{{ root }}}}/incoming/{tag} --remove-bundle"
    - name: activate
      command: "{{{{ py }}}} {{{{ root }}}}/agent/edgedeploy-agent.pyz --store {{{{ root }}}}/store activate {name} {version}"
"""


def inventory(fleet, d: Path, n: int, out: Path) -> Path:
    lines = ["[boards]"]
    for b in list(fleet.boards.values())[:n]:
        lines.append(f"{b.name} ansible_host={b.host} ansible_port={b.port or 22} "
                     f"py={b.python} root={b.root}")
    lines += ["", "[boards:vars]", "ansible_user=root",
              f"ansible_ssh_private_key_file={d / 'id_ed25519'}",
              f"ansible_ssh_common_args='-o UserKnownHostsFile={d / 'known_hosts'} "
              f"-o StrictHostKeyChecking=yes'",
              "ansible_python_interpreter=/usr/bin/python3"]
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", default="10,50,200")
    ap.add_argument("--parallel", type=int, default=20)
    ap.add_argument("--waves", default="10%,50%,100%")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "rollout.json")
    a = ap.parse_args(argv)
    counts = [int(x) for x in a.boards.split(",")]

    import bench_push
    from edgedeploy.host.bundle import Bundle, load_bundle
    from edgedeploy.host.fleet import push_many
    from edgedeploy.targets import load_fleet

    playbook_bin = ansible_bin()
    work = Path(tempfile.mkdtemp(prefix="bench_rollout."))
    d = work / "fleet"
    cli = [sys.executable, "-m", "edgedeploy.host.cli"]
    try:
        models = bench_push.make_models(work)
        # B: the ~130 KB model; A: the same bytes under another version label (the store
        # keys versions by label; only one label with two contents is refused)
        b_base = load_bundle(models["small"])
        a_base = Bundle(replace(b_base.manifest, version="a" + b_base.version[1:]),
                        b_base.model_path)
        print(f"starting {max(counts)} boards", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        fleet_cmd("up", d, str(max(counts)))
        up_s = time.perf_counter() - t0
        fleet = load_fleet(d / "fleet.toml")
        boards = list(fleet.boards.values())
        # the agent on every board once (a first push does that; not what is measured)
        res = push_many(boards, Bundle(replace(a_base.manifest, name="warm"),
                                       a_base.model_path), parallel=a.parallel)
        bad = list(res.failed)
        if bad:
            raise SystemExit(f"bench_rollout: warm-up push failed on {bad[:5]}")
        rows, trial = [], 0
        for n in counts:
            sub = d / f"fleet-{n}.toml"
            text = (d / "fleet.toml").read_text()
            head, *parts = text.split("[boards.")
            sub.write_text(head + "".join("[boards." + p for p in parts[:n]))
            sizes = wave_sizes(n, a.waves)
            inv = inventory(fleet, d, n, work / f"inventory-{n}.ini")
            cell: dict = {"boards": n, "parallel": a.parallel, "waves": sizes}
            runs: dict[str, list[dict]] = {"edgedeploy": [], "ansible": []}
            for rep in range(a.reps):
                for way in (["edgedeploy", "ansible"] if rep % 2 == 0 else
                            ["ansible", "edgedeploy"]):
                    trial += 1
                    name = f"ro{trial}"
                    old = Bundle(replace(a_base.manifest, name=name), a_base.model_path)
                    new = Bundle(replace(b_base.manifest, name=name), b_base.model_path)
                    push_many(boards[:n], old, parallel=a.parallel)
                    bdir = new.write_folder(work / f"bundle-{trial}")
                    if way == "edgedeploy":
                        r = run_timed([*cli, "rollout", "start", str(bdir), "--fleet", str(sub),
                                       "--waves", a.waves, "--parallel", str(a.parallel),
                                       "--journal", str(work / "journal.db"), "--json",
                                       "--max-failures", "0"],
                                      env={**os.environ,
                                           "EDGEDEPLOY_RESULTS": str(work / "r.db")},
                                      what="bench_rollout")
                        out = json.loads(r.pop("stdout"))
                        assert out["state"] == "succeeded", out
                    else:
                        pb = work / f"play-{trial}.yml"
                        pb.write_text(PLAYBOOK.format(
                            serial=json.dumps(sizes), tag=f"t{trial}",
                            model=new.model_path, model_name=new.manifest.file,
                            manifest=bdir / new.manifest_name,
                            manifest_name=new.manifest_name, name=name,
                            version=new.version))
                        env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True",
                               "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
                               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
                               "ANSIBLE_NOCOWS": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
                        r = run_timed([str(playbook_bin), "-i", str(inv), "-f",
                                       str(a.parallel), str(pb)], env=env,
                                      what="bench_rollout")
                        r.pop("stdout")
                    # both leave every board on B
                    for b in boards[:n][:: max(1, n // 5)]:
                        cur = json.loads((d / b.name / "home" / ".edgedeploy" / "store" /
                                          "models" / name / "current.json").read_text())
                        assert cur["current"] == new.version, (way, b.name, cur)
                    runs[way].append(r)
                    print(f"{n:>4} boards {way:>10}: {r['wall_s']:7.2f} s, host CPU "
                          f"{r['host_cpu_s'] / n * 1000:6.1f} ms/board, machine CPU "
                          f"{r['machine_cpu_s']:6.1f} s", flush=True)
            for way, rs in runs.items():
                cell[way] = {"wall_s_median": statistics.median(r["wall_s"] for r in rs),
                             "host_cpu_ms_per_board": statistics.median(
                                 r["host_cpu_s"] for r in rs) / n * 1000,
                             "machine_cpu_s_median": statistics.median(
                                 r["machine_cpu_s"] for r in rs),
                             "wall_s": [round(r["wall_s"], 3) for r in rs]}
            cell["speedup_vs_ansible"] = cell["ansible"]["wall_s_median"] / \
                cell["edgedeploy"]["wall_s_median"]
            cell["edgedeploy_s_per_board"] = cell["edgedeploy"]["wall_s_median"] / n
            rows.append(cell)
            print(f"{n:>4} boards: edgedeploy {cell['speedup_vs_ansible']:.1f}x faster than "
                  f"ansible", flush=True)
        out = {"what": "edgedeploy rollout vs ansible-core playbook (serial waves, same forks)",
               "ansible_core": subprocess.run([str(playbook_bin), "--version"],
                                              capture_output=True, text=True
                                              ).stdout.split("\n")[0],
               "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "fleet_up_s": up_s, "boards_max": max(counts),
               "goal": {"speedup_vs_ansible_min": 5.0, "cost": "linear or better in boards"},
               "model_bytes": b_base.size, "rollout": rows,
               "note": "the boards' sshd and agents run on this machine's cores too"}
        write_result(a.out, out)
    finally:
        if (d / "fleet-state.json").exists():
            fleet_cmd("down", d)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
