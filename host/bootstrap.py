"""``edgedeploy bootstrap BOARD [--wheelhouse DIR]``: make a board able to run the agent.

First the board's Python is asked (one command) for its arch, version, C library and numpy;
then ``plan_bootstrap`` decides, purely, what to send and run; then that is done, and the
agent's ``state`` must show the runtime importing.

- **A wheelhouse** (``edgedeploy wheelhouse --for BOARD|PROFILE -d DIR``, or any folder of
  wheels): the wheels that fit the board's Python and arch go to ROOT/wheels (a wheel already
  there with the same size is not sent again), a venv is made at ROOT/venv and the runtime is
  installed into it with ``pip --no-index`` from those wheels only: the board needs no
  internet. The runtime is the wheelhouse's (its wheelhouse.json says which, and whether numpy
  comes from the board's OS: then the venv gets ``--system-site-packages``, so Debian's numpy
  1.24 serves tflite-runtime on armv7l, where PyPI has no numpy wheel); a folder without
  wheelhouse.json gives the first runtime of the profile's preference it has wheels for.
  pip runs from the pip wheel itself when there is one: the board needs no ensurepip. pip
  installs with ``--no-compile``: Python byte-compiles a module when it is first imported, so
  the board does not compile every file of numpy (its tests, f2py…) at install time
  (measured on the emulated aarch64 board: LiteRT + numpy 118 s → 49 s; the first import of
  the runtime then takes 8.8 s, later ones 3.7 s).
- **No wheelhouse**: the board's pip asks its own index (a board with internet).
- **Android (Termux)**: no venv, no wheels (PyPI's manylinux wheels do not install on bionic
  libc): ``pkg install -y python python-numpy python-tflite-runtime``, Termux's own builds.
  A board without network is told so plainly. (Unit-tested command list; not run on a
  device here.)
- **Coral Dev Board** (profile ``bootstrap = "vendor"``): its runtime comes from Coral's apt
  repository; nothing is installed, the runtime is only checked.

The deployer uses ROOT/venv/bin/python when the inventory names no ``python``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import EdgeDeployError, EnvironmentProblem, InputError, RemoteFailure
from ..targets import Profile
from .deploy import BoardSession
from .wheelhouse import RUNTIMES, BoardFacts, numpy_fits, probe, read_manifest

PACKAGES = {"litert": ["ai-edge-litert", "numpy"],
            "tflite_runtime": ["tflite-runtime", "numpy<2"]}
TERMUX_PACKAGES = ["python", "python-numpy", "python-tflite-runtime"]
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<ver>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-"
                    r"(?P<plat>[^-]+)\.whl$")
_NO_NETWORK = ("could not resolve", "temporary failure resolving", "failed to fetch",
               "network is unreachable", "unable to connect", "no address associated",
               "connection timed out", "name or service not known")


@dataclass
class Wheel:
    path: Path
    name: str          # normalised: lower case, '-' for '_'
    py: list[str]
    abi: list[str]
    plat: list[str]


def parse_wheel(path: Path) -> Wheel | None:
    m = _WHEEL.match(path.name)
    if not m:
        return None
    return Wheel(path, m["name"].lower().replace("_", "-"), m["py"].split("."),
                 m["abi"].split("."), m["plat"].split("."))


def wheel_fits(w: Wheel, python: str, arch: str) -> bool:
    """Pure, and generous (pip on the board decides exactly): could W install on CPython
    PYTHON (e.g. "3.11.2") on ARCH (uname -m)?"""
    major, minor = (python.split(".") + ["0"])[:2]
    cp = f"cp{major}{minor}"
    py_ok = any(t in (cp, f"py{major}", f"py{major}{minor}") for t in w.py) or \
        ("abi3" in w.abi and any(t.startswith(f"cp{major}") and
                                 int(t[3:] or 0) <= int(minor) for t in w.py))
    arch_names = {"armv7l": ("armv7l", "armv7"), "aarch64": ("aarch64", "arm64"),
                  "x86_64": ("x86_64", "amd64")}.get(arch, (arch,))
    plat_ok = any(p == "any" or p.endswith(arch_names) for p in w.plat)
    return py_ok and plat_ok


def choose(wheels: list[Wheel], runtimes: tuple[str, ...], python: str, arch: str,
           os_numpy: str | None = None) -> tuple[str, list[Wheel], bool]:
    """Pure: the runtime to install (the profile's first that the wheelhouse can serve, with
    numpy from a wheel or, where it fits, from the board's OS), the wheels to send, and
    whether the venv uses the OS's numpy."""
    fit = [w for w in wheels if wheel_fits(w, python, arch)]
    names = {w.name for w in fit}
    for rt in runtimes:
        if rt not in PACKAGES or PACKAGES[rt][0] not in names:
            continue
        if numpy_fits(os_numpy, RUNTIMES[rt].numpy):
            return rt, fit, True
        if "numpy" in names:
            return rt, fit, False
    have = ", ".join(sorted(names)) or "no wheel"
    raise InputError(f"the wheelhouse has no runtime for Python {python} on {arch} (it has: "
                     f"{have})",
                     hint="make one for the board: edgedeploy wheelhouse --for BOARD -d DIR "
                          "(it picks the platform tags: e.g. tflite-runtime's ARM wheels are "
                          "manylinux_2_34, not manylinux2014)")


@dataclass
class BootstrapPlan:
    kind: str                          # venv | termux | vendor
    runtime: str
    send: list[Wheel] = field(default_factory=list)
    steps: list[list[str]] = field(default_factory=list)
    system_numpy: bool = False
    venv: str | None = None
    notes: list[str] = field(default_factory=list)


def plan_bootstrap(root: str, base: str, facts: BoardFacts, profile: Profile,
                   wheels: list[Wheel] | None, manifest: dict | None) -> BootstrapPlan:
    """Pure: what bootstrap sends and runs on a board (ROOT: the board's root, absolute; BASE:
    the board's Python; WHEELS: the wheelhouse's, or None for none)."""
    if facts.android or profile.bootstrap == "termux":
        if wheels is not None:
            raise InputError("Android (Termux) takes no manylinux wheel (bionic libc): no "
                             "--wheelhouse for it",
                             hint="bootstrap it without --wheelhouse: it runs `pkg install "
                                  + " ".join(TERMUX_PACKAGES) + "` (the board needs network)")
        return BootstrapPlan("termux", "tflite_runtime",
                             steps=[["pkg", "install", "-y", *TERMUX_PACKAGES]],
                             notes=["Termux's own python, numpy and tflite-runtime (pkg); no "
                                    "venv"])
    if profile.bootstrap == "vendor" and wheels is None:
        return BootstrapPlan("vendor", profile.runtimes[0],
                             notes=[f"{profile.name}: the runtime comes from Coral's apt "
                                    f"repository (python3-tflite-runtime, libedgetpu1-std); "
                                    f"only checked here"])
    venv = f"{root}/venv"
    vpy = f"{venv}/bin/python"
    if wheels is None:
        rt = profile.runtimes[0]
        system = numpy_fits(facts.numpy, RUNTIMES[rt].numpy)
        reqs = PACKAGES[rt][:1] if system else PACKAGES[rt]
        return BootstrapPlan("venv", rt, system_numpy=system, venv=venv, steps=[
            [base, "-m", "venv", *(["--system-site-packages"] if system else []), venv],
            [vpy, "-m", "pip", "install", "--quiet", "--no-compile", *reqs]],
            notes=["the board's pip uses its own package index"])
    if manifest:
        t = manifest.get("target", {})
        py2 = ".".join(facts.python.split(".")[:2])
        if t.get("arch") != facts.arch or t.get("python") != py2:
            raise InputError(f"the wheelhouse was made for {t.get('arch')} Python "
                             f"{t.get('python')} ({t.get('source')}); the board is "
                             f"{facts.arch} Python {py2}",
                             hint="edgedeploy wheelhouse --for BOARD -d DIR makes one for it")
        rt, system = manifest["runtime"], bool(manifest.get("system_numpy"))
        if system and not numpy_fits(facts.numpy, RUNTIMES[rt].numpy):
            raise EnvironmentProblem(f"the wheelhouse counts on the board's own numpy (its "
                                     f"{t.get('arch')} has no numpy wheel), but the board's "
                                     f"Python has "
                                     f"{'numpy ' + facts.numpy if facts.numpy else 'none'}",
                                     hint="apt install python3-numpy on the board")
        fit = [w for w in wheels if wheel_fits(w, facts.python, facts.arch)]
        reqs = list(manifest.get("install") or PACKAGES[rt])
    else:
        rt, fit, system = choose(wheels, profile.runtimes, facts.python, facts.arch,
                                 facts.numpy)
        reqs = PACKAGES[rt][:1] if system else PACKAGES[rt]
    remote = f"{root}/wheels"
    pip_wheel = next((w for w in fit if w.name == "pip"), None)
    src = ["--no-index", "--find-links", remote]
    site = ["--system-site-packages"] if system else []
    if pip_wheel is not None:  # pip runs from its wheel: no ensurepip on the board needed
        steps = [[base, "-m", "venv", *site, "--without-pip", venv],
                 [vpy, f"{remote}/{pip_wheel.path.name}/pip", "install", "--quiet",
                  "--no-compile", *src, *reqs]]
    else:
        steps = [[base, "-m", "venv", *site, venv],
                 [vpy, "-m", "pip", "install", "--quiet", "--no-compile", *src, *reqs]]
    notes = [f"numpy {facts.numpy} from the board's OS"] if system else []
    return BootstrapPlan("venv", rt, send=fit, steps=steps, system_numpy=system, venv=venv,
                         notes=notes)


def no_network(text: str) -> bool:
    """Pure: does a package manager's error say the board could not reach its mirror?"""
    low = text.lower()
    return any(s in low for s in _NO_NETWORK)


def bootstrap(s: BoardSession, wheelhouse: Path | None,
              progress: Callable[[int, int], None] | None = None) -> dict:
    board = s.board
    t = s.link.transport
    base = board.python
    facts = probe(t, base, board.name)
    wheels: list[Wheel] | None = None
    manifest = None
    if wheelhouse is not None:
        if not wheelhouse.is_dir():
            raise InputError(f"{wheelhouse}: no such wheelhouse folder")
        wheels = [w for w in map(parse_wheel, sorted(wheelhouse.glob("*.whl"))) if w]
        manifest = read_manifest(wheelhouse)
    root = s.link.root
    plan = plan_bootstrap(root, base, facts, board.profile, wheels, manifest)
    sent, wheel_names = 0, []
    if plan.send:
        remote = f"{root}/wheels"
        t.mkdir(remote)
        for w in plan.send:
            dest = f"{remote}/{w.path.name}"
            if t.size(dest) != w.path.stat().st_size:
                sent += t.put(w.path, dest, progress)
            wheel_names.append(w.path.name)
    for argv in plan.steps:
        r = t.run(argv, timeout=1800)
        if r.exit_code != 0:
            if plan.kind == "termux" and no_network(r.stderr + r.stdout):
                raise EnvironmentProblem(
                    f"{board.name}: `{' '.join(argv)}` could not reach Termux's package "
                    f"mirror: the board has no network",
                    hint="connect the device to a network and bootstrap again, or run the pkg "
                         "command in Termux yourself; wheels cannot stand in (bionic libc)")
            raise RemoteFailure(board.name, r.command, r.exit_code, r.stderr or r.stdout,
                                hint="the board's previous setup is unchanged where this "
                                     "step failed; see the message")
    try:  # one started under the old Python would keep answering for it
        s.link.stop_resident()
    except EdgeDeployError:
        pass  # no agent there yet
    st = s.state()
    info = st.info
    if not info.runtime:
        where = plan.venv or base
        hint = ("install python3-tflite-runtime and libedgetpu1-std from Coral's apt "
                "repository" if plan.kind == "vendor" else None)
        raise EnvironmentProblem(f"{board.name}: the runtime does not import in {where} "
                                 f"({info.runtime_error})", hint=hint)
    return {"board": board.name, "arch": facts.arch, "python": facts.python,
            "venv": plan.venv, "kind": plan.kind, "system_numpy": plan.system_numpy,
            "runtime": info.runtime, "runtimes": info.runtimes,
            "numpy": info.numpy, "wheels": wheel_names, "bytes_sent": sent,
            "steps": [" ".join(a) for a in plan.steps], "notes": plan.notes,
            "emulated": info.emulated,
            "agent_uploaded": s.link.agent_uploaded, "agent": st.agent.content_hash}
