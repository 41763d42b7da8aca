"""``edgedeploy wheelhouse --for PROFILE|BOARD -d DIR``: download exactly the wheels a board
needs, for its arch, Python and C library, so ``bootstrap --wheelhouse DIR`` works offline.

The target's facts come from its profile (``os_python``, ``os_glibc``, ``os_numpy``: what
the board's OS ships) or, for a board in the fleet, from the board itself (one SSH command:
``uname -m``, Python version, ``confstr(CS_GNU_LIBC_VERSION)``, the OS's numpy). Then, purely
(``plan``), the first runtime of the profile's preference that has wheels for it:

==================  =========================================  ==================================
runtime             wheels on PyPI (cp311)                     numpy
==================  =========================================  ==================================
ai-edge-litert 2.3  x86_64 manylinux_2_17, aarch64 2_27;        ≥ 2 (its ml_dtypes needs it): a
                    no armv7l                                  numpy 2 wheel; the OS's 1.x can't
tflite-runtime 2.14 x86_64 manylinux_2_17; aarch64 and armv7l  < 2: the OS's (Debian's
                    only manylinux_2_34 (glibc ≥ 2.34: Pi OS   python3-numpy 1.24) through a venv
                    Bookworm yes, Bullseye no); Python ≤ 3.11  with --system-site-packages, else
                                                               a numpy<2 wheel (none for armv7l)
==================  =========================================  ==================================

Platform tags are spelled out one by one (``manylinux_2_<g>_<arch>`` for every g from 17 to
the board's glibc, plus ``manylinux2014_<arch>``): pip 23 does not widen a ``--platform`` to
older tags, and ``--platform manylinux2014_aarch64`` alone finds no tflite-runtime (its ARM
wheels are tagged manylinux_2_34). Android (Termux) boards use no wheelhouse: bionic libc
takes no manylinux wheel; ``bootstrap`` installs Termux's packages there.

DIR/wheelhouse.json (written last, after every wheel is in place)::

    {"schema": 1, "target": {"arch", "python", "glibc", "os_numpy", "source"},
     "runtime": "tflite_runtime", "system_numpy": true,
     "install": ["tflite-runtime==2.14.0"],       # what bootstrap asks pip for on the board
     "download": ["tflite-runtime==2.14.0", "pip"], "no_deps": true,
     "platforms": ["manylinux_2_36_armv7l", …], "notes": ["…"],
     "wheels": {"tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_armv7l.whl": "<sha256>", …}}

A DIR whose wheelhouse.json has the same plan and whose wheels still hash right is reused
without asking the index (``--refresh`` asks again).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import EnvironmentProblem, InputError
from ..targets import Profile

MANIFEST = "wheelhouse.json"
PIP_REQ = "pip"


@dataclass(frozen=True)
class RuntimeWheels:
    package: str                         # the pinned requirement
    min_glibc: dict[str, tuple[int, int]]  # arch → the manylinux glibc its wheel needs
    python_max: tuple[int, int]          # newest CPython with a wheel
    numpy: str                           # the numpy it needs: ">=2" or "<2"
    with_deps: bool                      # let pip resolve its dependencies (litert's are many)


RUNTIMES = {
    "litert": RuntimeWheels("ai-edge-litert==2.3.0", {"x86_64": (2, 17), "aarch64": (2, 27)},
                            (3, 13), ">=2", True),
    "tflite_runtime": RuntimeWheels("tflite-runtime==2.14.0",
                                    {"x86_64": (2, 17), "aarch64": (2, 34),
                                     "armv7l": (2, 34)}, (3, 11), "<2", False),
}
NUMPY_WHEEL_ARCHS = ("x86_64", "aarch64")  # numpy publishes no armv7l wheel


@dataclass(frozen=True)
class Target:
    """What the wheels must fit."""
    arch: str                         # uname -m
    python: str                       # "3.11"
    glibc: tuple[int, int] | None     # None: not glibc (Android's bionic, musl)
    os_numpy: str | None              # numpy importable by the OS's python3, if any
    runtimes: tuple[str, ...]         # preference
    source: str                       # "profile rpi-armv7" / "board b1"
    android: bool = False


@dataclass
class Plan:
    runtime: str
    install: list[str]                # requirements pip installs on the board
    download: list[str]               # requirements pip downloads here
    no_deps: bool
    system_numpy: bool                # the venv sees the OS's numpy (--system-site-packages)
    platforms: list[str]
    python: str
    notes: list[str] = field(default_factory=list)

    def key(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "notes"}


def _vt(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def parse_glibc(text: str | None) -> tuple[int, int] | None:
    """Pure: "glibc 2.36" / "2.36" → (2, 36); anything else → None."""
    if not text:
        return None
    v = _vt(text.split()[-1])
    return (v[0], v[1]) if len(v) >= 2 else None


def platforms(arch: str, glibc: tuple[int, int]) -> list[str]:
    """Pure: every manylinux tag a board with this arch and glibc accepts, newest first."""
    major, minor = glibc
    if major != 2 or minor < 17:
        return []
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)]
    tags.append(f"manylinux2014_{arch}")
    if arch == "x86_64":
        tags += [f"manylinux_2_{m}_{arch}" for m in range(16, 4, -1)]
        tags += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    return tags


def numpy_fits(have: str | None, need: str) -> bool:
    """Pure: does numpy version HAVE satisfy ">=2" / "<2"?"""
    if not have:
        return False
    major = (_vt(have) or (0,))[0]
    return major >= 2 if need == ">=2" else major < 2


def why_not(rt: str, t: Target) -> str | None:
    """Pure: why runtime RT has no wheels for target T (None: it has)."""
    if rt not in RUNTIMES:
        return f"{rt}: not installed from wheels"
    w = RUNTIMES[rt]
    py = _vt(t.python)[:2]
    if t.arch not in w.min_glibc:
        return f"{rt}: no wheel for {t.arch}"
    if t.glibc is None:
        return f"{rt}: the board's C library is not glibc: manylinux wheels don't install"
    if t.glibc < w.min_glibc[t.arch]:
        need = w.min_glibc[t.arch]
        return (f"{rt}: its {t.arch} wheel needs glibc ≥ {need[0]}.{need[1]}, the board has "
                f"{t.glibc[0]}.{t.glibc[1]}")
    if py > w.python_max:
        return f"{rt}: no wheel for Python {t.python} (newest: {w.python_max[0]}.{w.python_max[1]})"
    if not numpy_fits(t.os_numpy, w.numpy) and t.arch not in NUMPY_WHEEL_ARCHS:
        return (f"{rt}: needs numpy{w.numpy}; the board's Python has "
                f"{'numpy ' + t.os_numpy if t.os_numpy else 'no numpy'} and PyPI has no "
                f"numpy wheel for {t.arch} (`apt install python3-numpy` on the board)")
    return None


def plan(t: Target, runtime: str | None = None) -> Plan:
    """Pure: the runtime, the wheels to download and what to install on the board."""
    if t.android:
        raise InputError(f"{t.source}: Android (Termux) takes no manylinux wheel (bionic libc)",
                         hint="bootstrap the board without --wheelhouse: it runs "
                              "`pkg install python python-numpy python-tflite-runtime`")
    order = (runtime,) if runtime else t.runtimes
    reasons = []
    for rt in order:
        reason = why_not(rt, t)
        if reason:
            reasons.append(reason)
            continue
        w = RUNTIMES[rt]
        assert t.glibc is not None
        system = numpy_fits(t.os_numpy, w.numpy)
        numpy_req = [] if system else [f"numpy{w.numpy}"]
        notes = list(reasons)
        notes.append(f"numpy {t.os_numpy} from the board's OS (venv --system-site-packages)"
                     if system else f"numpy{w.numpy} from a wheel" +
                     (f" (the OS's numpy {t.os_numpy} does not fit {rt})" if t.os_numpy
                      else ""))
        return Plan(runtime=rt, install=[w.package, *numpy_req],
                    download=[w.package, *numpy_req, PIP_REQ], no_deps=not w.with_deps,
                    system_numpy=system, platforms=platforms(t.arch, t.glibc),
                    python=".".join(map(str, _vt(t.python)[:2])), notes=notes)
    raise InputError(f"{t.source}: no TFLite runtime has wheels for {t.arch}, Python "
                     f"{t.python}" + (f", glibc {t.glibc[0]}.{t.glibc[1]}" if t.glibc else "")
                     + ": " + "; ".join(reasons),
                     hint="see the board matrix in README.md")


def target_from_profile(p: Profile, arch: str | None = None) -> Target:
    """Pure: the target a profile describes (ARCH picks one when it lists several)."""
    if p.bootstrap == "termux":
        return Target(arch or (p.arch[0] if p.arch else "aarch64"), p.os_python or "3.12",
                      None, None, p.runtimes, f"profile {p.name}", android=True)
    if p.bootstrap == "vendor":
        raise InputError(f"profile {p.name}: its runtime does not come from PyPI wheels "
                         f"(Python {p.os_python}, glibc {p.os_glibc}: tflite-runtime 2.14 needs "
                         f"glibc 2.34 and Python ≥ 3.8)",
                         hint="install python3-tflite-runtime and libedgetpu1-std from Coral's "
                              "apt repository on the board")
    if not p.os_python or not p.os_glibc:
        raise InputError(f"profile {p.name} does not say which Python and glibc its boards "
                         f"have", hint="make the wheelhouse --for a board in the fleet "
                                       "(its facts are asked over SSH)")
    if arch is None:
        if len(p.arch) != 1:
            raise InputError(f"profile {p.name} covers {', '.join(p.arch) or 'any arch'}",
                             hint="say which with --arch")
        arch = p.arch[0]
    elif p.arch and arch not in p.arch:
        raise InputError(f"--arch {arch}: profile {p.name} is {', '.join(p.arch)}")
    return Target(arch, p.os_python, parse_glibc(p.os_glibc), p.os_numpy or None, p.runtimes,
                  f"profile {p.name}")


# -- the board's own facts -----------------------------------------------------------------
PROBE = r"""
import json, os, platform, sys
try:
    libc = os.confstr("CS_GNU_LIBC_VERSION")
except (ValueError, OSError, AttributeError):
    libc = None
try:
    import numpy
    np = numpy.__version__
except Exception:
    np = None
print(json.dumps({"arch": platform.machine(), "python": platform.python_version(),
                  "libc": libc, "numpy": np, "prefix": sys.prefix,
                  "android": hasattr(sys, "getandroidapilevel")
                  or "com.termux" in os.environ.get("PREFIX", "") + sys.prefix}))
"""


@dataclass(frozen=True)
class BoardFacts:
    arch: str
    python: str          # "3.11.2"
    libc: str | None     # "glibc 2.36"
    numpy: str | None    # importable by that Python
    prefix: str
    android: bool

    def target(self, runtimes: tuple[str, ...], source: str) -> Target:
        return Target(self.arch, self.python, parse_glibc(self.libc), self.numpy, runtimes,
                      source, android=self.android)


def probe(transport, python: str, board_name: str) -> BoardFacts:
    """Ask the board's PYTHON (one command) for its arch, version, libc and numpy."""
    r = transport.run([python, "-c", PROBE], timeout=300)
    if r.exit_code != 0:
        raise EnvironmentProblem(f"{board_name}: `{python}` does not run on the board "
                                 f"({(r.stderr.strip() or str(r.exit_code)).splitlines()[-1]})",
                                 hint="install Python 3 on the board, or set `python` in "
                                      "fleet.toml")
    try:
        d = json.loads(r.stdout.strip().splitlines()[-1])
        return BoardFacts(str(d["arch"]), str(d["python"]), d.get("libc"), d.get("numpy"),
                          str(d.get("prefix", "")), bool(d.get("android")))
    except (ValueError, KeyError, IndexError) as exc:
        raise EnvironmentProblem(f"{board_name}: could not read its Python's answer "
                                 f"({r.stdout[-200:]!r})") from exc


# -- acting ---------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(d: Path) -> dict | None:
    try:
        m = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("schema") == 1 else None


def _still_good(d: Path, m: dict | None, p: Plan) -> bool:
    if not m or m.get("plan") != p.key() or not m.get("wheels"):
        return False
    return all((d / n).is_file() and sha256(d / n) == h for n, h in m["wheels"].items())


def pip_download_argv(p: Plan, dest: Path, python: str = sys.executable) -> list[str]:
    """Pure: the pip command that fetches the plan's wheels."""
    argv = [python, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", p.python,
            "--abi", "cp" + p.python.replace(".", ""), "-d", str(dest)]
    for tag in p.platforms:
        argv += ["--platform", tag]
    if p.no_deps:
        argv.append("--no-deps")
    return argv + p.download


def make(t: Target, dest: Path, *, runtime: str | None = None, refresh: bool = False,
         progress=None) -> dict:
    """Plan, then download into DEST (kept whole: a failed download leaves no manifest)."""
    p = plan(t, runtime)
    dest.mkdir(parents=True, exist_ok=True)
    old = read_manifest(dest)
    reused = not refresh and _still_good(dest, old, p)
    if not reused:
        before = {f.name for f in dest.glob("*.whl")}
        (dest / MANIFEST).unlink(missing_ok=True)
        if progress:
            progress(f"pip download for {t.arch}, Python {p.python}: {' '.join(p.download)}")
        proc = subprocess.run(pip_download_argv(p, dest), capture_output=True, text=True,
                              timeout=1800, env={**os.environ, "PIP_NO_INPUT": "1"})
        if proc.returncode != 0:
            tail = [ln for ln in proc.stderr.splitlines()
                    if "is ignored: it is neither a file nor a directory" not in ln][-4:]
            raise EnvironmentProblem(f"pip download for {t.source} ({t.arch}, Python "
                                     f"{p.python}) failed: {' | '.join(tail)}",
                                     hint="this host needs the package index (PyPI) once; "
                                          "the wheelhouse then serves boards offline")
        got = {f.name for f in dest.glob("*.whl")}
        new = sorted(got - before) if before else sorted(got)
        names = _plan_wheels(dest, p, t, new)
    else:
        names = sorted(old["wheels"]) if old else []
    manifest = {"schema": 1, "target": {"arch": t.arch, "python": p.python,
                                        "glibc": ".".join(map(str, t.glibc)) if t.glibc
                                        else None, "os_numpy": t.os_numpy,
                                        "source": t.source},
                "runtime": p.runtime, "system_numpy": p.system_numpy, "install": p.install,
                "download": p.download, "no_deps": p.no_deps, "platforms": p.platforms,
                "notes": p.notes, "plan": p.key(),
                "wheels": {n: sha256(dest / n) for n in names}}
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, dest / MANIFEST)
    size = sum((dest / n).stat().st_size for n in names)
    return {**{k: manifest[k] for k in ("target", "runtime", "system_numpy", "install",
                                         "notes")},
            "dir": str(dest), "wheels": names, "bytes": size, "reused": reused}


def _plan_wheels(dest: Path, p: Plan, t: Target, new: list[str]) -> list[str]:
    """The wheels in DEST that belong to this plan: those that fit the target (wheels made
    for other boards may share the folder)."""
    from .bootstrap import parse_wheel, wheel_fits

    fit = []
    for f in sorted(dest.glob("*.whl")):
        w = parse_wheel(f)
        if w and wheel_fits(w, p.python, t.arch):
            fit.append(f.name)
    return fit or new
