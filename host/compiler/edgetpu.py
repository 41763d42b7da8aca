"""Run Coral's ``edgetpu_compiler`` when it is on PATH, and read its log into the manifest.

The compiler runs only on x86-64 Linux and comes from Coral's apt repository, which is out of
reach on many machines: then ``find_compiler`` returns None and the caller says so and keeps the
int8 model and the preflight.

Log format parsed (stdout of ``edgetpu_compiler -s``)::

    Edge TPU Compiler version 16.0.384591198
    Input model: m.tflite            (older versions: "Input: m.tflite")
    On-chip memory used for caching model parameters: 3.02MiB
    On-chip memory remaining for caching model parameters: 4.31MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 31
    Number of operations that will run on Edge TPU: 29
    Number of operations that will run on CPU: 2
    Operator                       Count      Status
    CONV_2D                        14         Mapped to Edge TPU
    SOFTMAX                        1          Operation is working on an unsupported data type
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ...errors import CompileError

ABSENT_MESSAGE = ("edgetpu_compiler is not on PATH: it runs only on x86-64 Linux and is installed "
                  "from Coral's apt repository (package edgetpu-compiler); the int8 model and "
                  "the Edge TPU preflight were written instead")

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "KB": 1000, "MB": 1000 ** 2}


@dataclass
class OpLine:
    op: str
    count: int
    status: str

    @property
    def on_edgetpu(self) -> bool:
        return self.status.startswith("Mapped to Edge TPU")


@dataclass
class CompilerLog:
    version: str | None = None
    on_chip_bytes: int | None = None
    on_chip_remaining_bytes: int | None = None
    off_chip_bytes: int | None = None
    subgraphs: int | None = None
    total_ops: int | None = None
    edgetpu_ops: int | None = None
    cpu_ops: int | None = None
    operators: list[OpLine] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _bytes(text: str) -> int:
    m = re.match(r"\s*([\d.]+)\s*([KMG]i?B|B)", text)
    if not m:
        raise ValueError(text)
    return int(round(float(m.group(1)) * _UNITS[m.group(2)]))


def parse_log(text: str) -> CompilerLog:
    """Pure: the figures and the operator table of an edgetpu_compiler log."""
    log = CompilerLog()
    keys: dict[str, tuple[str, Callable[[str], object]]] = {
        "On-chip memory used for caching model parameters": ("on_chip_bytes", _bytes),
        "On-chip memory remaining for caching model parameters": ("on_chip_remaining_bytes", _bytes),
        "Off-chip memory used for streaming uncached model parameters": ("off_chip_bytes", _bytes),
        "Number of Edge TPU subgraphs": ("subgraphs", int),
        "Total number of operations": ("total_ops", int),
        "Number of operations that will run on Edge TPU": ("edgetpu_ops", int),
        "Number of operations that will run on CPU": ("cpu_ops", int),
    }
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"Edge TPU Compiler version (\S+)", line)
        if m:
            log.version = m.group(1)
            continue
        if ":" in line and not in_table:
            key, _, value = line.partition(":")
            if key in keys:
                attr, conv = keys[key]
                setattr(log, attr, conv(value.strip()))
                continue
        if re.match(r"Operator\s+Count\s+Status", line):
            in_table = True
            continue
        if in_table:
            m = re.match(r"([A-Z0-9_]+)\s+(\d+)\s+(.+)$", line)
            if m:
                log.operators.append(OpLine(m.group(1), int(m.group(2)), m.group(3).strip()))
    if log.operators and log.edgetpu_ops is None:
        # a model that maps fully prints no per-device counts: derive them from the table
        log.edgetpu_ops = sum(o.count for o in log.operators if o.on_edgetpu)
        log.cpu_ops = sum(o.count for o in log.operators if not o.on_edgetpu)
    return log


def find_compiler() -> str | None:
    return shutil.which("edgetpu_compiler")


def compile_for_edgetpu(model: bytes, compiler: str, *, num_segments: int | None = None,
                        min_runtime_version: str | None = None,
                        timeout: float = 600) -> tuple[bytes, CompilerLog, str]:
    """Run the compiler on an int8 model; return the compiled bytes, the parsed log, raw text."""
    if num_segments and num_segments > 1:
        raise CompileError("segmented Edge TPU output (several files) is not bundled yet",
                           hint="compile with --num-segments 1 for now")
    with tempfile.TemporaryDirectory(prefix="edgedeploy-etpu-") as tmp:
        src = Path(tmp) / "model.tflite"
        src.write_bytes(model)
        cmd = [compiler, "-s", "-o", tmp]
        if num_segments:
            cmd += ["-n", str(num_segments)]
        if min_runtime_version:
            cmd += ["-m", str(min_runtime_version)]
        cmd.append(str(src))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CompileError(f"edgetpu_compiler did not finish in {timeout:.0f} s") from exc
        text = proc.stdout + proc.stderr
        if proc.returncode != 0:
            tail = " | ".join(text.strip().splitlines()[-3:])
            raise CompileError(f"edgetpu_compiler failed with exit {proc.returncode}: {tail}")
        outputs = sorted(Path(tmp).glob("*_edgetpu.tflite"))
        if not outputs:
            raise CompileError("edgetpu_compiler reported success but wrote no *_edgetpu.tflite")
        return outputs[0].read_bytes(), parse_log(text), text
