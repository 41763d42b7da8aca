#!/usr/bin/env python3
"""Mutate a real .tflite until a TFLite runtime crashes loading it (how
tests/fixtures/crash-on-load.tflite was found; see tests/fixtures/README.md).

    BOARD_PY=$(python3 scripts/envs board-tflrt)
    $BOARD_PY scripts/find_crasher.py BASE.tflite OUT.tflite [--seed 3] [--tries 3000] \
        [--signal 11] [--edits 1]

Rewrites the integers ``check_tflite`` reads (shapes, operator tensor indices, opcode and buffer
indices) to other plausible values, one or two at a time; keeps a candidate only if it still
passes the bounds check; loads it (allocate, invoke on zeros) in a forked child of this process
(which imported the runtime once) and stops at the first child that dies of SIGNAL. Runs in a
board env: stdlib + numpy + the runtime, with this checkout's device package.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _device_package() -> None:
    """Make ``edgedeploy.device`` importable from this checkout without installing it."""
    stage = Path(tempfile.mkdtemp(prefix="edgedeploy-stage-")) / "edgedeploy"
    stage.mkdir()
    for f in ("__init__.py", "errors.py"):
        shutil.copy(REPO / "edgedeploy" / f, stage / f)
    shutil.copytree(REPO / "device", stage / "device",
                    ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(stage.parent))


def targets(fc, base: bytes) -> list[tuple[int, str]]:
    """(byte position, field) of every integer the bounds check reads that names a shape,
    tensor, opcode or buffer."""
    log: list[tuple[int, str]] = []
    u32, i32 = fc._Buf.u32, fc._Buf.i32

    def spy(orig):
        def read(self, pos, what):
            log.append((pos, what))
            return orig(self, pos, what)
        return read
    fc._Buf.u32, fc._Buf.i32 = spy(u32), spy(i32)
    try:
        fc.check_tflite(base)
    finally:
        fc._Buf.u32, fc._Buf.i32 = u32, i32
    keep = ("shape", "inputs", "outputs", "opcode_index", "buffer", "tensor_index")
    return sorted({(p, w) for p, w in log if w.split(".")[-1] in keep})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--tries", type=int, default=3000)
    p.add_argument("--runtime", default="tflite_runtime.interpreter")
    p.add_argument("--signal", type=int, default=11, help="stop at a child killed by it (11)")
    p.add_argument("--edits", type=int, default=1, help="integers changed per candidate (1)")
    a = p.parse_args(argv)
    _device_package()
    import numpy as np

    from edgedeploy.device import flatbuffer_check as fc

    interpreter = __import__(a.runtime, fromlist=["Interpreter"]).Interpreter
    base = a.base.read_bytes()
    spots = targets(fc, base)
    rng = random.Random(a.seed)
    devnull = os.open(os.devnull, os.O_WRONLY)
    for n in range(a.tries):
        data = bytearray(base)
        edits = []
        for _ in range(a.edits):
            pos, what = rng.choice(spots)
            old = struct.unpack_from("<i", data, pos)[0]
            new = rng.choice([0, 1, 2, 3, old + 1, old - 1, rng.randrange(20), -1, 1000, 65536])
            struct.pack_into("<i", data, pos, new)
            edits.append({"byte": pos, "field": what, "old": old, "new": new})
        try:
            fc.check_tflite(bytes(data))
        except fc.FlatbufferError:
            continue
        pid = os.fork()
        if pid == 0:
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            try:
                it = interpreter(model_content=bytes(data))
                it.allocate_tensors()
                for d in it.get_input_details():
                    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
                it.invoke()
            except Exception:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == a.signal:
            a.out.write_bytes(bytes(data))
            print(json.dumps({"try": n, "signal": os.WTERMSIG(status), "edits": edits}))
            return 0
    print(json.dumps({"tries": a.tries, "found": None}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
