"""``edgedeploy bootstrap BOARD [--wheelhouse DIR]``: make a board able to run the agent.

Boards are often offline. With a wheelhouse (a folder of wheels: ``pip download
--only-binary=:all: --platform … --python-version … ai-edge-litert numpy pip -d DIR``), the
wheels that can fit the board's Python and arch are sent to ROOT/wheels (a wheel already there
with the same size is not sent again), a venv is made at ROOT/venv, and the runtime is
installed into it with ``pip --no-index`` from those wheels only. Without a wheelhouse the
board's pip asks its own index (a board with internet).

The runtime is the first of the profile's preference that the wheelhouse has (ai-edge-litert
with numpy, or tflite-runtime with numpy<2: tflite-runtime's wheels are built against numpy 1).
pip runs from the pip wheel itself when the wheelhouse has one, so the board needs no
python3-venv/ensurepip. The deployer uses ROOT/venv/bin/python when the inventory names no
``python``. Ends with the agent installed and its ``state`` showing the runtime imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgeDeployError, EnvironmentProblem, InputError, RemoteFailure
from .deploy import BoardSession

PACKAGES = {"litert": ["ai-edge-litert", "numpy"],
            "tflite_runtime": ["tflite-runtime", "numpy<2"]}
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<ver>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-"
                    r"(?P<plat>[^-]+)\.whl$")


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


def choose(wheels: list[Wheel], runtimes: tuple[str, ...], python: str, arch: str
           ) -> tuple[str, list[Wheel]]:
    """Pure: the runtime to install (the profile's first that the wheelhouse can serve) and
    the wheels to send."""
    fit = [w for w in wheels if wheel_fits(w, python, arch)]
    names = {w.name for w in fit}
    for rt in runtimes:
        if rt in PACKAGES and PACKAGES[rt][0] in names and "numpy" in names:
            return rt, fit
    have = ", ".join(sorted(names)) or "no wheel"
    raise InputError(f"the wheelhouse has no runtime for Python {python} on {arch} (it has: "
                     f"{have})",
                     hint=f"pip download --only-binary=:all: --python-version {python[:4]} "
                          f"--platform manylinux2014_{arch} ai-edge-litert numpy pip -d DIR")


def bootstrap(s: BoardSession, wheelhouse: Path | None, progress=None) -> dict:
    board = s.board
    t = s.link.transport
    root = s.link.root
    base = board.python if board.python != "python3" else "python3"
    r = t.run([base, "-c", "import platform, sys; print(platform.machine(), "
                             "platform.python_version(), sys.prefix)"])
    if r.exit_code != 0:
        raise EnvironmentProblem(f"{board.name}: `{base}` does not run on the board "
                                 f"({r.stderr.strip() or r.exit_code})",
                                 hint="install Python 3 on the board, or set `python` in "
                                      "fleet.toml")
    arch, python, _ = r.stdout.split()[:3]
    venv = f"{root}/venv"
    vpy = f"{venv}/bin/python"
    sent, wheel_names = 0, []
    if wheelhouse is not None:
        if not wheelhouse.is_dir():
            raise InputError(f"{wheelhouse}: no such wheelhouse folder")
        wheels = [w for w in map(parse_wheel, sorted(wheelhouse.glob("*.whl"))) if w]
        runtime, fit = choose(wheels, board.profile.runtimes, python, arch)
        remote = f"{root}/wheels"
        t.mkdir(remote)
        for w in fit:
            dest = f"{remote}/{w.path.name}"
            if t.size(dest) != w.path.stat().st_size:
                sent += t.put(w.path, dest, progress)
            wheel_names.append(w.path.name)
        pip_wheel = next((w for w in fit if w.name == "pip"), None)
        src = ["--no-index", "--find-links", remote]
    else:
        runtime, pip_wheel, src = board.profile.runtimes[0], None, []
    if pip_wheel is not None:  # pip runs from its wheel: no ensurepip on the board needed
        steps = [[base, "-m", "venv", "--without-pip", venv],
                 [vpy, f"{root}/wheels/{pip_wheel.path.name}/pip", "install", "--quiet",
                  *src, *PACKAGES[runtime]]]
    else:
        steps = [[base, "-m", "venv", venv],
                 [vpy, "-m", "pip", "install", "--quiet", *src, *PACKAGES[runtime]]]
    for argv in steps:
        r = t.run(argv, timeout=1800)
        if r.exit_code != 0:
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
        raise EnvironmentProblem(f"{board.name}: the runtime does not import in {venv} "
                                 f"({info.runtime_error})")
    return {"board": board.name, "arch": arch, "python": python, "venv": venv,
            "runtime": info.runtime, "runtimes": info.runtimes,
            "numpy": info.numpy, "wheels": wheel_names, "bytes_sent": sent,
            "agent_uploaded": s.link.agent_uploaded, "agent": st.agent.content_hash}
