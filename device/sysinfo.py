"""Facts about the board the agent runs on (``edgedeploy-agent info``). Every probe reads a
file or asks the runtime, and yields ``None`` where the board doesn't say — never guesses.

Where a Raspberry Pi keeps them: the model in ``/proc/device-tree/model`` ("Raspberry Pi 4
Model B Rev 1.4"); throttling and under-voltage from ``vcgencmd get_throttled`` (firmware
bits, see ``parse_throttled``); CPU temperature in ``/sys/class/thermal``; the cpufreq
governor and clock in ``/sys/devices/system/cpu/cpu0/cpufreq``. ``snapshot()`` takes the ones
that change while a benchmark runs (bench records one before and one after the timed runs).

Emulation: a board whose ``/proc/cpuinfo`` describes another CPU family than ``uname -m``
(an aarch64 userland under qemu-user on an x86-64 host sees the host's x86 cpuinfo) is
``emulated``: its timings say nothing about the board it imitates.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}  # before / after firmware load


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_model() -> str | None:
    return _cpuinfo_model(_read("/proc/cpuinfo") or "") or platform.processor() or None


def arch_family(machine: str) -> str | None:
    """Pure: "x86" | "arm" | None for a ``uname -m``."""
    m = machine.lower()
    if m in ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"):
        return "x86"
    if m.startswith(("arm", "aarch64")):
        return "arm"
    return None


def cpuinfo_family(text: str) -> str | None:
    """Pure: the CPU family a /proc/cpuinfo text describes, or None when it doesn't say."""
    keys: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            keys.setdefault(k.strip().lower(), v.strip())
    if keys.get("vendor_id") in ("GenuineIntel", "AuthenticAMD", "HygonGenuine",
                                 "CentaurHauls") or "sse2" in keys.get("flags", "").split():
        return "x86"
    if "cpu implementer" in keys or "cpu architecture" in keys or \
            keys.get("model name", "").startswith("ARMv") or "asimd" in keys.get("features", ""):
        return "arm"
    return None


def emulation(machine: str, cpuinfo: str | None) -> dict:
    """Pure: ``{"emulated": bool | None, "host_cpu": str | None, "why": str}``. Emulated when
    cpuinfo's CPU family is not the userland's (qemu-user passes the host's cpuinfo through);
    None when either side is unknown."""
    want = arch_family(machine)
    have = cpuinfo_family(cpuinfo or "")
    if want is None or have is None:
        return {"emulated": None, "host_cpu": None,
                "why": "cannot tell: " + ("no /proc/cpuinfo" if not cpuinfo else
                                          f"unknown CPU family ({machine})")}
    if want == have:
        return {"emulated": False, "host_cpu": None, "why": f"{machine} on an {have} CPU"}
    host = _cpuinfo_model(cpuinfo or "")
    return {"emulated": True, "host_cpu": host,
            "why": f"an {machine} userland on an {have} CPU ({host or 'unknown model'}): "
                   f"emulated (qemu-user), timings are not the board's"}


def _cpuinfo_model(text: str) -> str | None:
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key and v.strip():
                return v.strip()
    return None


def board_model() -> str | None:
    """The device tree's model ("Raspberry Pi 4 Model B Rev 1.4"), else cpuinfo's Model line."""
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        raw = _read(path)
        if raw:
            return raw.rstrip("\x00").strip() or None
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        k, _, v = line.partition(":")
        if k.strip() == "Model" and v.strip():
            return v.strip()
    return None


# vcgencmd get_throttled bits (Raspberry Pi firmware): now (0-3) and since boot (16-19)
THROTTLE_BITS = {0: "under_voltage", 1: "freq_capped", 2: "throttled", 3: "soft_temp_limit"}


def parse_throttled(text: str | None) -> dict | None:
    """Pure: ``vcgencmd get_throttled``'s "throttled=0x50005" → {"raw", "now": [...],
    "since_boot": [...]}, or None when the text is not that."""
    if not text:
        return None
    value = text.strip().rpartition("=")[2].strip()
    try:
        raw = int(value, 16 if value.lower().startswith("0x") else 10)
    except ValueError:
        return None
    return {"raw": hex(raw),
            "now": [n for b, n in THROTTLE_BITS.items() if raw >> b & 1],
            "since_boot": [n for b, n in THROTTLE_BITS.items() if raw >> (b + 16) & 1]}


def throttled() -> dict | None:
    """``vcgencmd get_throttled`` where the board has it (a Pi), else None."""
    import subprocess

    exe = shutil.which("vcgencmd") or next(
        (p for p in ("/usr/bin/vcgencmd", "/opt/vc/bin/vcgencmd") if os.path.exists(p)), None)
    if not exe:
        return None
    try:
        p = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_throttled(p.stdout) if p.returncode == 0 else None


def cpu_freq_khz() -> int | None:
    raw = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    return int(raw) if raw and raw.isdigit() else None


def governor() -> str | None:
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def snapshot() -> dict:
    """What changes while a benchmark runs: temperature, clock, governor, throttling."""
    return {"temperature_c": temperature_c(), "freq_khz": cpu_freq_khz(),
            "governor": governor(), "throttled": throttled()}


HOT_C = 80.0  # a Pi 4/5 starts to throttle its clock at 80 °C (soft limit ~ 60 °C on some)


def throttle_warnings(before: dict, after: dict) -> list[str]:
    """Pure: why timings taken between two snapshots may not be the board's usual speed."""
    out = []
    tb, ta = before.get("throttled"), after.get("throttled")
    if ta:
        new = [n for n in ta["since_boot"] if not tb or n not in tb["since_boot"]]
        if new or ta["now"]:
            out.append("the board throttled during the run (vcgencmd get_throttled "
                       f"{ta['raw']}: {', '.join(sorted(set(new + ta['now'])))}): these "
                       "timings are slower than the board's; cool it / fix its power supply "
                       "and bench again")
        elif ta["since_boot"]:
            out.append(f"the board has throttled since boot ({', '.join(ta['since_boot'])}; "
                       f"not during this run)")
    temps = [t for t in (before.get("temperature_c"), after.get("temperature_c")) if t]
    if temps and max(temps) >= HOT_C:
        out.append(f"CPU at {max(temps):.0f} °C (≥ {HOT_C:.0f} °C): a Pi caps its clock "
                   f"there; timings may be throttled")
    fb, fa = before.get("freq_khz"), after.get("freq_khz")
    if fb and fa and fa < 0.9 * fb:
        out.append(f"the CPU clock fell during the run ({fb // 1000} → {fa // 1000} MHz)")
    if after.get("governor") == "powersave":
        out.append("cpufreq governor is powersave: the CPU runs at its lowest clock")
    return out


def temperature_c() -> float | None:
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        raw = _read(str(zone / "temp"))
        if raw and raw.lstrip("-").isdigit():
            return round(int(raw) / 1000.0, 1)
    return None


def memory() -> dict:
    info: dict = {"total_bytes": None, "available_bytes": None}
    for line in (_read("/proc/meminfo") or "").splitlines():
        k, _, v = line.partition(":")
        if k in ("MemTotal", "MemAvailable") and v.split():
            info["total_bytes" if k == "MemTotal" else "available_bytes"] = \
                int(v.split()[0]) * 1024
    return info


def edgetpu_devices() -> list[str]:
    found = [str(p) for p in sorted(Path("/dev").glob("apex_*"))]  # PCIe / Dev Board
    for dev in sorted(Path("/sys/bus/usb/devices").glob("*")):
        ids = (_read(str(dev / "idVendor")), _read(str(dev / "idProduct")))
        if ids in CORAL_USB_IDS:
            found.append(f"usb:{dev.name}")
    return found


def emulation_facts() -> dict:
    """``{"emulated": …, "emulation": {…}}`` for this process (see ``emulation``)."""
    e = emulation(platform.machine(), _read("/proc/cpuinfo"))
    return {"emulated": e["emulated"], "emulation": e}


def disk(path: Path) -> dict:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        du = shutil.disk_usage(p)
        return {"path": str(path), "free_bytes": du.free, "total_bytes": du.total}
    except OSError:
        return {"path": str(path), "free_bytes": None, "total_bytes": None}


def _runtime_facts(prefer_runtime: str | None) -> dict:
    """numpy, the runtime that imports, Edge TPU library: the slow part of `info` (imports)."""
    from ..errors import EdgeDeployError
    from .runtime import load_edgetpu, load_runtime, runtime_versions

    try:
        import numpy

        numpy_version: str | None = numpy.__version__
    except ImportError:
        numpy_version = None
    runtime, runtime_error = None, None
    edgetpu: dict[str, Any] = {"available": False}
    try:
        rt = load_runtime(prefer_runtime)
        runtime = rt.name
        try:
            load_edgetpu(rt)
            edgetpu["available"] = True
        except EdgeDeployError as exc:
            edgetpu["error"] = str(exc)
    except EdgeDeployError as exc:
        runtime_error = str(exc)
    return {"numpy": numpy_version, "runtimes": runtime_versions(), "runtime": runtime,
            "runtime_error": runtime_error, "edgetpu": edgetpu,
            "os": platform.platform()}  # reads the Python binary for its libc: ~20 ms


def _facts_key(prefer_runtime: str | None) -> str:
    """What the runtime facts depend on: this Python, the agent, the runtime asked for, and
    every import folder (a package installed or removed changes its folder's mtime)."""
    import hashlib
    import json
    import sys

    from .ship import identity

    stamps: list[tuple[str, int | None]] = []
    for d in sys.path:
        try:
            stamps.append((d, os.stat(d or ".").st_mtime_ns))
        except OSError:
            stamps.append((d, None))
    raw = json.dumps([sys.executable, sys.version, identity()["content_hash"], prefer_runtime,
                      list(os.uname()), stamps])
    return hashlib.sha256(raw.encode()).hexdigest()


_PENDING: list = []  # facts learnt before the store existed: written once it does


def runtime_facts(store_root: Path, prefer_runtime: str | None = None) -> dict:
    """_runtime_facts, remembered in STORE/info-cache.json while its key holds (importing the
    runtime costs ~0.2 s on every push otherwise). The store is not created for it: on a
    board with no store yet the facts wait for `flush_cache` (a batch calls it after each
    command, so the install that creates the store also records them). A cache that can't
    be read or written is simply not used."""
    import json

    key = _facts_key(prefer_runtime)
    cache = Path(store_root) / "info-cache.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["facts"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    facts = _runtime_facts(prefer_runtime)
    _PENDING[:] = [(cache, json.dumps({"key": key, "facts": facts}).encode())]
    flush_cache()
    return facts


def flush_cache() -> None:
    """Write facts learnt earlier, if their store exists now."""
    if not _PENDING:
        return
    cache, data = _PENDING[0]
    if cache.parent.is_dir():
        try:
            from .fsio import write_atomic

            write_atomic(cache, data)
        except OSError:
            pass
        _PENDING.clear()


def board_info(store_root: Path, prefer_runtime: str | None = None, *,
               cached: bool = False) -> dict:
    from .ship import identity

    facts = runtime_facts(store_root, prefer_runtime) if cached else \
        _runtime_facts(prefer_runtime)
    edgetpu = {**facts["edgetpu"], "devices": edgetpu_devices()}
    return {
        "agent": identity(), "arch": platform.machine(), "os": facts["os"],
        "system": platform.system(), "python": platform.python_version(),
        "numpy": facts["numpy"], "runtimes": facts["runtimes"], "runtime": facts["runtime"],
        "runtime_error": facts["runtime_error"],
        "delegates": {"xnnpack": {"available": facts["runtime"] is not None},
                      "edgetpu": edgetpu},
        "cpu": {"model": cpu_model(), "cores": os.cpu_count(), "governor": governor(),
                "freq_khz": cpu_freq_khz(), "temperature_c": temperature_c()},
        "board_model": board_model(), "throttled": throttled(),
        **emulation_facts(),
        "memory": memory(),
        "store": disk(Path(store_root)),
    }
