"""Facts about the board the agent runs on (``edgedeploy-agent info``). Every probe reads a
file or asks the runtime, and yields ``None`` where the board doesn't say — never guesses."""

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
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key and v.strip():
                return v.strip()
    return platform.processor() or None


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
        "cpu": {"model": cpu_model(), "cores": os.cpu_count(),
                "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
                "temperature_c": temperature_c()},
        "memory": memory(),
        "store": disk(Path(store_root)),
    }
