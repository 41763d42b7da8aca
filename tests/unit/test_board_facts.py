"""Board facts and bench honesty, as pure functions: emulation from cpuinfo vs uname -m, a
Pi's vcgencmd throttling bits, the warnings bench adds, where ops ran (Edge TPU vs XNNPACK vs
CPU). Tables of cases; the agent's use of them is proven in tests/device and on the emulated
ARM boards in tests/integration/test_arm.py."""

from __future__ import annotations

import pytest

from edgedeploy.device.bench import edgetpu_placement
from edgedeploy.device.sysinfo import (arch_family, cpuinfo_family, emulation, parse_throttled,
                                       throttle_warnings)

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sse sse2 ssse3
"""
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd08

Revision\t: c03114
Serial\t\t: 10000000abcdef
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
PI_ARMV7_CPUINFO = """processor\t: 0
model name\t: ARMv7 Processor rev 3 (v7l)
BogoMIPS\t: 108.00
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize("machine,cpuinfo,emulated", [
    ("aarch64", X86_CPUINFO, True),         # an arm64 root under qemu-user on this host
    ("armv7l", X86_CPUINFO, True),
    ("aarch64", PI4_CPUINFO, False),        # a real Pi 4
    ("armv7l", PI_ARMV7_CPUINFO, False),    # 32-bit Pi OS
    ("armv7l", PI4_CPUINFO, False),         # 32-bit userland on a 64-bit Pi kernel
    ("x86_64", X86_CPUINFO, False),
    ("x86_64", PI4_CPUINFO, True),          # the other way round (x86 on ARM, e.g. box64)
    ("aarch64", None, None),                # no /proc: cannot tell, says so
    ("riscv64", X86_CPUINFO, None),
    ("aarch64", "processor: 0\n", None),
])
def test_emulation_is_cpuinfo_family_vs_uname(machine, cpuinfo, emulated):
    e = emulation(machine, cpuinfo)
    assert e["emulated"] is emulated, e
    if emulated:
        assert "qemu" in e["why"] and e["host_cpu"]


def test_families():
    assert [arch_family(m) for m in ("x86_64", "aarch64", "armv7l", "armv6l", "mips")] == \
        ["x86", "arm", "arm", "arm", None]
    assert (cpuinfo_family(X86_CPUINFO), cpuinfo_family(PI4_CPUINFO),
            cpuinfo_family(PI_ARMV7_CPUINFO), cpuinfo_family("")) == ("x86", "arm", "arm", None)


@pytest.mark.parametrize("text,now,since", [
    ("throttled=0x0", [], []),
    ("throttled=0x50005", ["under_voltage", "throttled"], ["under_voltage", "throttled"]),
    ("throttled=0x80000", [], ["soft_temp_limit"]),
    ("throttled=0xe0000", [], ["freq_capped", "throttled", "soft_temp_limit"]),
    ("throttled=0x2", ["freq_capped"], []),
])
def test_vcgencmd_get_throttled_bits(text, now, since):
    t = parse_throttled(text)
    assert t is not None and t["now"] == now and t["since_boot"] == since


@pytest.mark.parametrize("text", [None, "", "error=1 error_msg=\"Command not registered\"",
                                  "throttled=zz"])
def test_vcgencmd_garbage_is_none(text):
    assert parse_throttled(text) is None


def _snap(throttled=None, temp=None, freq=None, gov=None):
    return {"throttled": parse_throttled(throttled) if throttled else None,
            "temperature_c": temp, "freq_khz": freq, "governor": gov}


@pytest.mark.parametrize("before,after,words", [
    (_snap("throttled=0x0", 55.0, 1800000, "ondemand"),
     _snap("throttled=0x0", 61.0, 1800000, "ondemand"), []),
    (_snap("throttled=0x0"), _snap("throttled=0x40004"), ["throttled during the run"]),
    (_snap("throttled=0x0"), _snap("throttled=0x10000"), ["throttled during the run",
                                                          "under_voltage"]),
    (_snap("throttled=0x50000"), _snap("throttled=0x50000"), ["since boot", "not during"]),
    (_snap(temp=78.0), _snap(temp=82.5), ["82 °C"]),
    (_snap(freq=1800000), _snap(freq=600000), ["1800 → 600 MHz"]),
    (_snap(gov="powersave"), _snap(gov="powersave"), ["powersave"]),
    (_snap(), _snap(), []),                 # an x86 VM: nothing known, nothing said
])
def test_throttle_warnings(before, after, words):
    w = throttle_warnings(before, after)
    assert bool(w) == bool(words), w
    text = " ".join(w)
    assert all(x in text for x in words), w


@pytest.mark.parametrize("requested,nodes,delegated,total,compiled,expect", [
    # (applied, edgetpu_ops, xnnpack_ops, cpu_ops, cpu_only_on_edgetpu, first words)
    ("auto", 1, 8, 11, False, ("xnnpack", 0, 8, 3, False, "CPU: 8 of 11 ops in XNNPACK")),
    ("none", 0, 0, 11, False, (None, 0, 0, 11, False, "CPU: 11 ops on the builtin")),
    # the Edge TPU asked for and taking the compiled segment
    ("edgetpu", 1, 1, 3, True, ("edgetpu", 1, 0, 2, False, "Edge TPU: 1 op(s)")),
    # ...and an int8 model edgetpu_compiler never saw: the delegate takes nothing
    ("edgetpu", 0, 0, 11, False, (None, 0, 0, 11, True, "CPU ONLY")),
    # XNNPACK taking ops never makes them Edge TPU ops
    ("xnnpack", 1, 11, 11, False, ("xnnpack", 0, 11, 0, False, "CPU: 11 of 11")),
    ("auto", 1, 2, 3, True, ("xnnpack", 0, 2, 1, False, "CPU ONLY: a model compiled")),
    ("auto", None, None, None, False, (None, None, None, None, False, "CPU: this runtime")),
])
def test_placement(requested, nodes, delegated, total, compiled, expect):
    p = edgetpu_placement(requested, nodes, delegated, total, compiled)
    got = (p["applied"], p["edgetpu_ops"], p["xnnpack_ops"], p["cpu_ops"],
           p["cpu_only_on_edgetpu"])
    assert got == expect[:5], p
    assert p["line"].startswith(expect[5]), p["line"]
