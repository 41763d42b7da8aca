"""The boards users have: emulated Raspberry Pi OS boards (aarch64 and armv7l Debian bookworm
roots under qemu-user, each running its own ARM sshd, python3 and Debian numpy) beside x86-64
boards, all real OpenSSH servers in network namespaces (scripts/fleet up 4 --arch mixed):

    b0 x86_64  ai-edge-litert + numpy 2       (board env)
    b1 aarch64 fresh Pi OS 64-bit: python3 3.11, numpy 1.24, no runtime
    b2 armv7l  fresh Pi OS 32-bit: python3 3.11, numpy 1.24, no runtime
    b3 x86_64  tflite-runtime 2.14 + numpy 1  (board env)

The ARM boards start with no TFLite runtime; each is bootstrapped from a wheelhouse made for
it (b1's by asking the board over SSH, b2's from the rpi-armv7 profile): LiteRT with a numpy 2
wheel on aarch64, tflite-runtime 2.14 (manylinux_2_34) with Debian's own numpy on armv7l. Then
push, bench (emulated: said, never timed against anything), eval (top-1 equal to the x86
board's on the same runtime), rollback, a mixed-arch rollout with gates (latency gates refused
on the emulated boards), and the serve endpoint on the board. Emulated boards are for function,
not speed: no timing is asserted here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.integration.conftest import ed, ed_json, fleet_down, fleet_up

# emulated boards: minutes each (and the ARM roots, built once): `scripts/test` runs them,
# `scripts/test --ci` (CI, within its time limit) does not
pytestmark = pytest.mark.slow

WHEELHOUSES = Path(os.path.expanduser("~/.cache/edgedeploy/wheelhouse"))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    d = tmp_path_factory.mktemp("armfleet")
    # the first run on a machine waits here for the ARM roots (scripts/armroot, cached)
    fleet_up(d, 4, "--arch", "mixed", "--rate", "200mbit", timeout=3600)
    yield d
    fleet_down(d)


def state(d: Path) -> dict:
    return {b["name"]: b for b in json.loads((d / "fleet-state.json").read_text())["boards"]}


def _first(models, tmp_path_factory, n: int, folder: str, file: str) -> Path:
    """The first N labelled test samples as their own .npz."""
    with np.load(models["test"]) as z:
        x, y = z["x"][:n], z["y"][:n]
    p = tmp_path_factory.mktemp(folder) / file
    np.savez(p, x=x, y=y)
    return p


@pytest.fixture(scope="module")
def gate(models, tmp_path_factory) -> Path:
    """100 labelled test samples: enough for an accuracy gate, quick under emulation."""
    return _first(models, tmp_path_factory, 100, "armgate", "gate.npz")


@pytest.fixture(scope="module")
def test250(models, tmp_path_factory) -> Path:
    """The first 250 test samples: top-1 compared sample for sample, at emulated speed."""
    return _first(models, tmp_path_factory, 250, "armtest", "test250.npz")


def test_arm_boards_are_fresh_pis_and_say_they_are_emulated(mixed, models, tmp_path):
    db = tmp_path / "r.db"
    fleet = mixed / "fleet.toml"
    st = state(mixed)
    assert [st[f"b{i}"]["arch"] for i in range(4)] == ["x86_64", "aarch64", "armv7l", "x86_64"]
    text = fleet.read_text()
    arm = text.split("[boards.b1]")[1].split("[boards.b2]")[0]
    assert 'profile = "rpi-aarch64"' in arm and "python" not in arm and "root" not in arm
    p = ed("targets", "check", "--fleet", fleet, "--json", db=db)
    assert p.returncode == 1, p.stderr  # the ARM boards have no runtime yet
    rows = {r["board"]: r for r in json.loads(p.stdout)}
    for name, arch in (("b1", "aarch64"), ("b2", "armv7l")):
        r = rows[name]
        assert not r["ok"] and any("no TFLite runtime" in x for x in r["problems"]), r
    assert rows["b0"]["ok"] and rows["b3"]["ok"]
    # the agent's own view: uname -m is ARM, cpuinfo is this host's x86 CPU
    info = json.loads(subprocess.run(
        ["ssh", "-i", mixed / "id_ed25519", "-o", f"UserKnownHostsFile={mixed / 'known_hosts'}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{st['b2']['addr']}",
         "python3 ~/.edgedeploy/agent/edgedeploy-agent.pyz info"],
        capture_output=True, text=True, timeout=300).stdout)
    assert info["arch"] == "armv7l" and info["python"].startswith("3.11")
    assert info["numpy"] == "1.24.2" and info["runtime"] is None
    assert info["emulated"] is True and "qemu" in info["emulation"]["why"]
    assert info["emulation"]["host_cpu"] and info["board_model"] is None
    # a push to a board with no runtime is refused and changes nothing
    p = ed("push", models["int8"], "b1", "--fleet", fleet, db=db)
    assert p.returncode != 0 and "b1" in p.stderr and "runtime" in p.stderr
    assert not (Path(st["b1"]["home"]) / ".edgedeploy" / "store" / "models").exists()


@pytest.fixture(scope="module")
def bootstrapped(mixed, tmp_path_factory) -> dict:
    """b1 and b2 bootstrapped, each from a wheelhouse made for it (cached between runs: an
    unchanged wheelhouse is reused without asking the index)."""
    db = tmp_path_factory.mktemp("armdb") / "r.db"
    fleet = mixed / "fleet.toml"
    wh = {"b1": ed_json("wheelhouse", "--for", "b1", "-d", WHEELHOUSES / "rpi-aarch64-board",
                        "--fleet", fleet, db=db),
          "b2": ed_json("wheelhouse", "--for", "rpi-armv7", "-d", WHEELHOUSES / "rpi-armv7",
                        db=db)}
    out = {}
    for name in ("b1", "b2"):
        out[name] = ed_json("bootstrap", name, "--fleet", fleet, "--wheelhouse", wh[name]["dir"],
                            db=db)
    return {"wheelhouse": wh, "bootstrap": out, "db": db}


def test_wheelhouse_and_bootstrap_per_arch(mixed, bootstrapped):
    wh, bs = bootstrapped["wheelhouse"], bootstrapped["bootstrap"]
    # aarch64 (asked over SSH): LiteRT, which needs numpy 2: a numpy wheel, not Debian's 1.24
    assert wh["b1"]["target"]["arch"] == "aarch64" and wh["b1"]["target"]["source"] == "board b1"
    assert wh["b1"]["target"]["glibc"] == "2.36" and wh["b1"]["target"]["os_numpy"] == "1.24.2"
    assert wh["b1"]["runtime"] == "litert" and not wh["b1"]["system_numpy"]
    assert any(n.startswith("ai_edge_litert-2.3.0") and "aarch64" in n for n in wh["b1"]["wheels"])
    assert any(n.startswith("numpy-2.") and "aarch64" in n for n in wh["b1"]["wheels"])
    # armv7l (from the profile): tflite-runtime's manylinux_2_34 wheel, numpy from Debian
    assert wh["b2"]["runtime"] == "tflite_runtime" and wh["b2"]["system_numpy"]
    assert "tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_armv7l.whl" in wh["b2"]["wheels"]
    assert not any(n.startswith("numpy") for n in wh["b2"]["wheels"])
    b1, b2 = bs["b1"], bs["b2"]
    assert (b1["arch"], b1["runtime"], b1["system_numpy"]) == ("aarch64", "litert", False)
    assert b1["numpy"].startswith("2.") and b1["emulated"] is True
    assert (b2["arch"], b2["runtime"], b2["system_numpy"]) == ("armv7l", "tflite_runtime", True)
    assert b2["numpy"] == "1.24.2" and b2["runtimes"]["tflite_runtime"] == "2.14.0"
    assert b2["steps"][0].endswith("-m venv --system-site-packages --without-pip "
                                   "/root/.edgedeploy/venv")
    for name in ("b1", "b2"):
        assert bs[name]["venv"] == "/root/.edgedeploy/venv"
        assert bs[name]["bytes_sent"] > 0 or bs[name]["agent_uploaded"] is False
        assert (Path(state(mixed)[name]["home"]) / ".edgedeploy" / "venv" / "bin").is_dir()
    # the other arch's wheelhouse is refused, the board unchanged (a second bootstrap sending
    # nothing is tests/integration/test_bootstrap.py's, on x86: quicker there)
    fleet = mixed / "fleet.toml"
    p = ed("bootstrap", "b1", "--fleet", fleet, "--wheelhouse", wh["b2"]["dir"],
           db=bootstrapped["db"])
    assert p.returncode == 2 and "made for armv7l" in p.stderr and "b1" not in p.stdout
    p = ed("targets", "check", "--fleet", fleet, "--json", db=bootstrapped["db"])
    rows = {r["board"]: r for r in json.loads(p.stdout)}
    assert p.returncode == 0 and all(r["ok"] for r in rows.values()), rows
    assert rows["b1"]["emulated"] and rows["b2"]["emulated"] and not rows["b0"]["emulated"]


@pytest.mark.parametrize("name,twin", [("b1", "b0"), ("b2", "b3")])
def test_push_bench_eval_rollback_on_emulated_pi(mixed, bootstrapped, models, test250, name,
                                                 twin, tmp_path):
    """TWIN: the x86 board on the same runtime, whose top-1 the ARM board must equal."""
    db = tmp_path / "r.db"
    f = ["--fleet", mixed / "fleet.toml"]
    first = ed_json("push", models["float32"], name, *f, db=db)
    second = ed_json("push", models["int8"], name, *f, db=db)
    assert first["activated"] and second["previous"] == first["version"]
    ed_json("push", models["int8"], twin, *f, db=db)

    b = ed_json("bench", name, "digits", "--runs", 5, "--warmup", 1, *f, db=db)
    assert b["emulated"] is True and b["warnings"][0].startswith("emulated board")
    assert b["placement"]["edgetpu_ops"] == 0 and b["placement"]["line"].startswith("CPU")
    assert b["timing"]["runs"] == 5 and b["conditions"]["before"] and b["conditions"]["after"]
    text = ed("bench", name, "digits", "--runs", 3, "--warmup", 1, *f, db=db)
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and lines[0].startswith(f"{name}: CPU")
    assert lines[1].startswith(f"{name}: warning: emulated board") and "p50" in lines[-1]

    ev = ed_json("eval", name, "digits", "--data", test250, *f, db=db)
    ev_x86 = ed_json("eval", twin, "digits", "--data", test250, *f, db=db)
    assert ev["samples"] == ev_x86["samples"] == 250
    assert ev["top1"] == ev_x86["top1"] > 0.9, (ev["top1"], ev_x86["top1"])
    assert ev["runtime"]["name"] == ev_x86["runtime"]["name"]

    rb = ed_json("rollback", name, "digits", *f, db=db)
    assert rb["current"] == first["version"] and rb["previous"] == second["version"]
    st = ed_json("status", name, *f, db=db)
    assert st["health"] == "ok" and st["models"][0]["current"] == first["version"]


def test_mixed_arch_rollout_with_gates(mixed, bootstrapped, models, gate, tmp_path):
    db, jn = tmp_path / "r.db", tmp_path / "j.db"
    f = ["--fleet", mixed / "fleet.toml", "--journal", jn, "--timeout", "1800"]
    # a latency gate can't be judged on an emulated board: refused before anything is pushed
    p = ed("rollout", "start", models["float32"], *f, "--gate-data", gate, "--gate",
           "accuracy>=0.9", "--gate", "p99_ms<=1000", db=db)
    assert p.returncode == 2, p.stderr
    assert "refused on emulated board b1" in p.stderr and "b2" in p.stderr
    assert "b0:" not in p.stderr and "nothing was pushed" in p.stderr
    # ... or those boards are skipped, said as such, and the x86 boards are gated on latency
    r = ed_json("rollout", "start", models["float32"], *f, "--gate-data", gate, "--gate",
                "accuracy>=0.9", "--gate", "p99_ms<=1000", "--skip-incompatible",
                "--canary", "1", "--waves", "100%", db=db)
    outcome = {b["board"]: b["state"] for b in r["boards"]}
    assert outcome == {"b0": "committed", "b3": "committed", "b1": "skipped",
                       "b2": "skipped"}, r
    # accuracy gates hold on every arch: all four on the int8 model, canary an ARM board
    r = ed_json("rollout", "start", models["int8"], *f, "--gate-data", gate, "--gate",
                "accuracy>=0.9", "--canary", "1", "--waves", "100%", db=db)
    assert r["state"] == "succeeded", r
    boards = {b["board"]: b for b in r["boards"]}
    assert all(b["state"] == "committed" for b in boards.values()), boards
    acc = {n: b["figures"]["accuracy"] for n, b in boards.items()}
    assert acc["b1"] == acc["b0"] and acc["b2"] == acc["b3"] and min(acc.values()) >= 0.9
    assert boards["b1"]["figures"]["emulated"] and not boards["b0"]["figures"]["emulated"]


SERVE_SCRIPT = r"""
import json, subprocess, sys, time
pyz, store, sock, data = sys.argv[1:5]
sys.path.insert(0, pyz)
import numpy as np
from edgedeploy.device.client import Client
p = subprocess.Popen([sys.executable, pyz, "--store", store, "serve", "--socket", sock],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
ready = json.loads(p.stdout.readline())
x = np.load(data)["x"][:8]
out = []
with Client(socket=sock, timeout=300) as c:
    for i in range(len(x)):
        r = c.predict("digits", x[i:i + 1])
        out.append({"version": r.version, "outputs": r.outputs[0].tolist()})
p.terminate()
p.wait(timeout=120)
print(json.dumps({"ready": ready, "answers": out, "exit": p.returncode}))
"""


def test_serve_on_the_emulated_pi(mixed, bootstrapped, models):
    """The on-device endpoint on the armv7l board (tflite-runtime, Debian numpy): a client on
    the board gets the same top-1 as this host's interpreter for the same samples."""
    st = state(mixed)["b2"]
    ed_json("push", models["int8"], "b2", "--fleet", mixed / "fleet.toml",
            db=bootstrapped["db"])
    digest = hashlib.sha256(Path(models["test"]).read_bytes()).hexdigest()
    root = "/root/.edgedeploy"
    data = f"{root}/data/{digest}.npz"
    board_copy = Path(st["home"]) / ".edgedeploy" / "data" / f"{digest}.npz"
    board_copy.parent.mkdir(parents=True, exist_ok=True)  # the board's disk, seen from here
    board_copy.write_bytes(Path(models["test"]).read_bytes())
    p = subprocess.run(
        ["ssh", "-i", mixed / "id_ed25519", "-o", f"UserKnownHostsFile={mixed / 'known_hosts'}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{st['addr']}",
         f"{root}/venv/bin/python - {root}/agent/edgedeploy-agent.pyz {root}/store "
         f"{root}/serve.sock {data}"], input=SERVE_SCRIPT, capture_output=True, text=True,
        timeout=600)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["ready"]["kind"] == "serving" and got["exit"] == 0
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(models["int8"]))
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zp = inp["quantization"]
    oscale, ozp = outp["quantization"]
    with np.load(models["test"]) as z:
        x = z["x"][:8]
    for i, a in enumerate(got["answers"]):
        q = np.clip(np.round(x[i:i + 1] / scale + zp), 0, 255).astype(inp["dtype"])
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        host = (interp.get_tensor(outp["index"]).astype(np.float32) - ozp) * oscale
        assert int(np.argmax(a["outputs"])) == int(np.argmax(host)), i


def test_coral_profile_board_says_what_it_lacks(mixed, bootstrapped, models, tmp_path):
    """b0 (x86-64) inventoried as a Coral USB host: `targets check` says the Edge TPU delegate
    does not load and no device is seen (no Coral here), bench goes for the Edge TPU by default
    and fails saying so rather than timing the CPU, and a plain int8 model is not pushed to it."""
    db = tmp_path / "r.db"
    ed_json("push", models["int8"], "b0", "--fleet", mixed / "fleet.toml", db=db)
    text = (mixed / "fleet.toml").read_text()
    head, rest = text.split("[boards.b0]")
    b0 = rest.split("[boards.")[0]
    coral = tmp_path / "coral.toml"
    coral.write_text(head + "[boards.b0]" + b0 + 'profile = "coral-usb"\n')
    p = ed("targets", "check", "--fleet", coral, "--json", db=db)
    row = json.loads(p.stdout)[0]
    assert p.returncode == 1 and not row["ok"]
    assert row["edgetpu"]["delegate_loads"] is False and row["edgetpu"]["devices"] == []
    assert "libedgetpu" in row["edgetpu"]["line"] and "devices seen: none" in row["edgetpu"]["line"]
    p = ed("targets", "check", "--fleet", coral, db=db)
    assert "Edge TPU delegate does NOT load" in p.stdout
    p = ed("bench", "b0", "digits", "--runs", 3, "--fleet", coral, db=db)
    assert p.returncode == 3 and "Edge TPU delegate does not load" in p.stderr
    p = ed("bench", "b0", "digits", "--runs", 3, "--fleet", coral, "--allow-cpu", db=db)
    assert p.returncode == 3  # --allow-cpu does not make a missing delegate a timing
    p = ed("push", models["float32"], "b0", "--fleet", coral, db=db)
    assert p.returncode != 0 and "needs an Edge TPU model" in p.stderr
