"""What `edgedeploy wheelhouse` downloads and what `bootstrap` runs, per kind of board, as pure
decisions (tables). The downloads themselves and the installs on real emulated ARM boards are
in tests/integration/test_arm.py; Termux's commands are only checked here (no Android device
on this machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedeploy.errors import EnvironmentProblem, InputError
from edgedeploy.host.bootstrap import TERMUX_PACKAGES, no_network, parse_wheel, plan_bootstrap
from edgedeploy.host.wheelhouse import (BoardFacts, Target, parse_glibc, pip_download_argv, plan,
                                        platforms, target_from_profile)
from edgedeploy.targets import load_profile


def T(arch, python="3.11", glibc=(2, 36), numpy=None, runtimes=("litert", "tflite_runtime")):
    return Target(arch, python, glibc, numpy, runtimes, "test")


@pytest.mark.parametrize("target,runtime,system,install", [
    # Pi OS Bookworm 64-bit: LiteRT first; it needs numpy 2, so Debian's 1.24 can't serve it
    (T("aarch64", numpy="1.24.2"), "litert", False, ["ai-edge-litert==2.3.0", "numpy>=2"]),
    # Pi OS Bookworm 32-bit: no LiteRT wheel; tflite-runtime with the OS's numpy
    (T("armv7l", numpy="1.24.2"), "tflite_runtime", True, ["tflite-runtime==2.14.0"]),
    # Bullseye (glibc 2.31): tflite-runtime's ARM wheels need 2.34; LiteRT's aarch64 is 2.27
    (T("aarch64", glibc=(2, 31), runtimes=("tflite_runtime", "litert")), "litert", False,
     ["ai-edge-litert==2.3.0", "numpy>=2"]),
    # an aarch64 board that prefers tflite-runtime and has no OS numpy: numpy<2 from a wheel
    (T("aarch64", runtimes=("tflite_runtime",)), "tflite_runtime", False,
     ["tflite-runtime==2.14.0", "numpy<2"]),
    # an OS numpy that fits the runtime serves it, whichever runtime
    (T("x86_64", numpy="2.1.0"), "litert", True, ["ai-edge-litert==2.3.0"]),
    # Python 3.12: tflite-runtime 2.14 has no wheel; LiteRT does
    (T("aarch64", python="3.12"), "litert", False, ["ai-edge-litert==2.3.0", "numpy>=2"]),
])
def test_plan_picks_the_runtime_the_board_can_have(target, runtime, system, install):
    p = plan(target)
    assert (p.runtime, p.system_numpy, p.install) == (runtime, system, install)
    assert p.download == install + ["pip"]
    assert p.no_deps == (runtime == "tflite_runtime")
    assert p.platforms[0] == f"manylinux_2_{target.glibc[1]}_{target.arch}"


@pytest.mark.parametrize("target,words", [
    (T("armv7l"), ["no wheel for armv7l", "no numpy wheel for armv7l", "python3-numpy"]),
    (T("armv7l", glibc=(2, 31), numpy="1.19.5"), ["needs glibc ≥ 2.34", "has 2.31"]),
    (T("armv7l", python="3.12", numpy="1.26.4"), ["no wheel for Python 3.12"]),
    (T("riscv64", numpy="1.24.2"), ["no wheel for riscv64"]),
    (T("armv7l", numpy="2.2.0", runtimes=("tflite_runtime",)), ["needs numpy<2"]),
])
def test_plan_refuses_clearly(target, words):
    with pytest.raises(InputError) as e:
        plan(target)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_platform_tags_are_spelled_out_because_pip_does_not_widen_them():
    tags = platforms("aarch64", (2, 36))
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_34_aarch64" in tags
    assert "manylinux_2_27_aarch64" in tags and tags[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_37_aarch64" not in tags and len(tags) == 36 - 17 + 2
    assert "manylinux1_x86_64" in platforms("x86_64", (2, 31))
    assert platforms("aarch64", (2, 12)) == []
    assert (parse_glibc("glibc 2.36"), parse_glibc("2.28"), parse_glibc(None),
            parse_glibc("bionic")) == ((2, 36), (2, 28), None, None)


def test_pip_download_argv():
    p = plan(T("armv7l", numpy="1.24.2"))
    argv = pip_download_argv(p, Path("/w"), python="py")
    assert argv[:4] == ["py", "-m", "pip", "download"]
    assert ["--python-version", "3.11"] == argv[argv.index("--python-version"):][:2]
    assert "--only-binary=:all:" in argv and "--no-deps" in argv and "cp311" in argv
    assert argv.count("--platform") == len(p.platforms)
    assert argv[-2:] == ["tflite-runtime==2.14.0", "pip"]


@pytest.mark.parametrize("profile,arch,expect", [
    ("rpi-aarch64", None, ("aarch64", "3.11", (2, 36), "1.24.2")),
    ("rpi-armv7", None, ("armv7l", "3.11", (2, 36), "1.24.2")),
    ("coral-usb", "aarch64", ("aarch64", "3.11", (2, 36), None)),
])
def test_target_from_profile(profile, arch, expect):
    t = target_from_profile(load_profile(profile), arch)
    assert (t.arch, t.python, t.glibc, t.os_numpy) == expect


@pytest.mark.parametrize("profile,arch,words", [
    ("coral-usb", None, "--arch"),                      # x86_64 or aarch64: say which
    ("rpi-armv7", "aarch64", "profile rpi-armv7 is armv7l"),
    ("coral-devboard", None, "Coral's apt repository"),  # Mendel: glibc 2.28, Python 3.7
    ("local", None, "--for a board"),
])
def test_profile_without_wheels_or_ambiguous(profile, arch, words):
    with pytest.raises(InputError) as e:
        target_from_profile(load_profile(profile), arch)
    assert words in str(e.value)


def test_android_takes_no_wheelhouse():
    t = target_from_profile(load_profile("android-termux"))
    assert t.android and t.glibc is None
    with pytest.raises(InputError, match="bionic"):
        plan(t)


# -- bootstrap's plan --------------------------------------------------------------------
ARMV7 = BoardFacts("armv7l", "3.11.2", "glibc 2.36", "1.24.2", "/usr", False)
A64 = BoardFacts("aarch64", "3.11.2", "glibc 2.36", "1.24.2", "/usr", False)
TERMUX = BoardFacts("aarch64", "3.12.8", None, None, "/data/data/com.termux/files/usr", True)
WHEELS = [parse_wheel(Path(n)) for n in (
    "tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_armv7l.whl",
    "ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_aarch64.whl",
    "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
    "pip-26.3-py3-none-any.whl")]
ARMV7_MANIFEST = {"target": {"arch": "armv7l", "python": "3.11", "source": "profile rpi-armv7"},
                  "runtime": "tflite_runtime", "system_numpy": True,
                  "install": ["tflite-runtime==2.14.0"]}


def test_bootstrap_armv7_uses_the_os_numpy_through_system_site_packages():
    p = plan_bootstrap("/r", "python3", ARMV7, load_profile("rpi-armv7"), WHEELS,
                       ARMV7_MANIFEST)
    assert p.kind == "venv" and p.runtime == "tflite_runtime" and p.system_numpy
    assert [w.path.name for w in p.send] == [WHEELS[0].path.name, WHEELS[3].path.name]
    assert p.steps == [
        ["python3", "-m", "venv", "--system-site-packages", "--without-pip", "/r/venv"],
        ["/r/venv/bin/python", "/r/wheels/pip-26.3-py3-none-any.whl/pip", "install", "--quiet",
         "--no-compile", "--no-index", "--find-links", "/r/wheels", "tflite-runtime==2.14.0"]]


def test_bootstrap_aarch64_litert_gets_its_own_numpy():
    p = plan_bootstrap("/r", "python3", A64, load_profile("rpi-aarch64"), WHEELS, None)
    assert p.runtime == "litert" and not p.system_numpy
    assert p.steps[0] == ["python3", "-m", "venv", "--without-pip", "/r/venv"]
    assert p.steps[1][-2:] == ["ai-edge-litert", "numpy"]
    assert {w.name for w in p.send} == {"ai-edge-litert", "numpy", "pip"}


def test_bootstrap_refuses_a_wheelhouse_made_for_another_board():
    with pytest.raises(InputError, match="made for armv7l Python 3.11"):
        plan_bootstrap("/r", "python3", A64, load_profile("rpi-aarch64"), WHEELS,
                       ARMV7_MANIFEST)
    no_numpy = BoardFacts("armv7l", "3.11.2", "glibc 2.36", None, "/usr", False)
    with pytest.raises(EnvironmentProblem, match="apt install python3-numpy"):
        plan_bootstrap("/r", "python3", no_numpy, load_profile("rpi-armv7"), WHEELS,
                       ARMV7_MANIFEST)


def test_bootstrap_termux_runs_pkg_and_takes_no_wheels():
    prof = load_profile("android-termux")
    p = plan_bootstrap("/home/.edgedeploy", "python3", TERMUX, prof, None, None)
    assert p.kind == "termux" and p.venv is None and not p.send
    assert p.steps == [["pkg", "install", "-y", "python", "python-numpy",
                        "python-tflite-runtime"]]
    assert TERMUX_PACKAGES == ["python", "python-numpy", "python-tflite-runtime"]
    with pytest.raises(InputError, match="bionic"):
        plan_bootstrap("/r", "python3", TERMUX, prof, WHEELS, None)
    # a Termux board under another profile is still recognised by its Python
    assert plan_bootstrap("/r", "python3", TERMUX, load_profile("local"), None,
                          None).kind == "termux"


@pytest.mark.parametrize("stderr,offline", [
    ("E: Failed to fetch https://packages-cf.termux.dev/apt/termux-main/dists/stable/InRelease"
     "  Could not resolve 'packages-cf.termux.dev'", True),
    ("Temporary failure resolving 'grimler.se'", True),
    ("E: Unable to locate package python-tflite-runtime", False),
])
def test_termux_no_network_is_recognised(stderr, offline):
    assert no_network(stderr) is offline


def test_bootstrap_vendor_and_index():
    p = plan_bootstrap("/r", "python3", A64, load_profile("coral-devboard"), None, None)
    assert p.kind == "vendor" and p.steps == []
    p = plan_bootstrap("/r", "python3", ARMV7, load_profile("rpi-armv7"), None, None)
    assert p.steps == [["python3", "-m", "venv", "--system-site-packages", "/r/venv"],
                       ["/r/venv/bin/python", "-m", "pip", "install", "--quiet", "--no-compile",
                        "tflite-runtime"]]


# -- bootstrap's acting on a Termux board, through a recording transport (no device here) ---
class _Run:
    def __init__(self, command, exit_code, stdout="", stderr=""):
        self.command, self.exit_code, self.stdout, self.stderr = command, exit_code, stdout, stderr


class _Termux:
    """What a Termux board answers: its Python (bionic: no glibc), then `pkg`."""

    def __init__(self, pkg_exit: int, pkg_err: str = ""):
        self.ran: list[list[str]] = []
        self.pkg = (pkg_exit, pkg_err)

    def run(self, argv, timeout=None, input=None):
        import json

        self.ran.append(list(argv))
        if argv[0] == "pkg":
            return _Run(" ".join(argv), self.pkg[0], "", self.pkg[1])
        return _Run(" ".join(argv), 0, json.dumps({
            "arch": "aarch64", "python": "3.12.8", "libc": None, "numpy": None,
            "prefix": "/data/data/com.termux/files/usr", "android": True}))


class _Link:
    def __init__(self, t):
        self.transport = t
        self.root = "/data/data/com.termux/files/home/.edgedeploy"
        self.agent_uploaded = True
        self.stopped = False

    def stop_resident(self):
        self.stopped = True


class _Session:
    def __init__(self, t):
        from edgedeploy.targets import Board

        self.link = _Link(t)
        self.board = Board(name="phone", host="10.0.0.9", profile=load_profile("android-termux"))

    def state(self):
        from edgedeploy.device import protocol

        return protocol.State.parse({
            "agent": {"agent": "0.1.0", "content_hash": "h"}, "store": "/s", "models": [],
            "info": {"arch": "aarch64", "python": "3.12.8", "runtime": "tflite_runtime",
                     "runtimes": {"tflite_runtime": "2.14.0"}, "numpy": "1.26.4",
                     "emulated": False, "store": {"free_bytes": 10 ** 9}}})


def test_termux_bootstrap_runs_exactly_pkg_install():
    from edgedeploy.host.bootstrap import bootstrap

    t = _Termux(0)
    r = bootstrap(_Session(t), None)
    assert t.ran[1:] == [["pkg", "install", "-y", "python", "python-numpy",
                          "python-tflite-runtime"]]
    assert t.ran[0][:2] == ["python3", "-c"]  # the probe
    assert r["kind"] == "termux" and r["venv"] is None and r["wheels"] == []


def test_termux_bootstrap_without_network_says_so():
    from edgedeploy.host.bootstrap import bootstrap

    t = _Termux(100, "E: Failed to fetch https://packages-cf.termux.dev/... Temporary failure "
                     "resolving 'packages-cf.termux.dev'")
    with pytest.raises(EnvironmentProblem) as e:
        bootstrap(_Session(t), None)
    assert "no network" in str(e.value) and e.value.exit_code == 3
    t = _Termux(100, "E: Unable to locate package python-tflite-runtime")
    with pytest.raises(Exception) as e:
        bootstrap(_Session(t), None)
    assert "Unable to locate package" in str(e.value) and "no network" not in str(e.value)
