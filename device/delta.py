"""Apply a tensor-level delta on the board: rebuild a new ``.tflite`` from the versions the store
already holds plus the few bytes that are new (wire format: ``delta_format.py``), into a staging
file, hashed as it is written, and checked against the manifest's sha256 before anything else
happens. The host builds deltas (``host/delta.py``). Stdlib; numpy for SCALE / FSCALE ops.

Refusals (``DeltaRefused``; the output file removed, nothing else touched): a damaged patch
(magic, header, a body whose sha256 differs, a stream that does not decompress to its size, an
op out of range), a base the board doesn't hold or whose size differs, and a rebuilt file whose
sha256 differs from the header's or the manifest's.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DeltaRefused
from .delta_format import (MAX_MULTIPLIER, OP_ADD, OP_COPY, OP_FSCALE, OP_LIT, OP_LIT_SHUFFLED,
                           OP_SCALE, PLANES, SCALE_SIZES, BaseRef, Reader, add_bytes, decompress,
                           read_header, scaled_prediction, unshuffle)
from .fsio import checkpoint


@dataclass(frozen=True)
class Applied:
    path: Path
    size: int
    sha256: str
    patch_bytes: int
    bases: list[BaseRef]


def apply(patch: str | os.PathLike, resolve: Callable[[BaseRef], "str | os.PathLike | None"],
          out: str | os.PathLike, expected_sha256: str | None = None) -> Applied:
    """Rebuild the patch's target into OUT (created, never replaced: a staging file) from the
    bases RESOLVE finds (a stored version's model file, or None when the board doesn't hold
    it). The result is hashed as it is written and checked against the header's sha256 and
    EXPECTED_SHA256 (the manifest's) before this returns; on any refusal OUT is removed."""
    patch, out = Path(patch), Path(out)
    what = f"delta {patch.name}"
    data = patch.read_bytes()
    h = read_header(data, what)
    if expected_sha256 is not None and h.target_sha256 != expected_sha256:
        raise DeltaRefused(f"{what} rebuilds sha256 {h.target_sha256[:12]}…, the manifest names "
                           f"{expected_sha256[:12]}…", hint="send the full file")
    files = []
    for ref in h.bases:
        p = resolve(ref)
        if p is None:
            raise DeltaRefused(f"{what} is built against {ref.name}@{ref.version}, which this "
                               f"board's store does not hold", hint="send the full file")
        if os.stat(p).st_size != ref.size:
            raise DeltaRefused(f"{what}: stored {ref.name}@{ref.version} has "
                               f"{os.stat(p).st_size} bytes, the delta expects {ref.size}",
                               hint="verify the store; send the full file")
        files.append(p)
    # add: differences and residuals (≤ the target) + SCALE multipliers (≤ one per element)
    limits = {"ops": 32 * h.target_size + 4096, "lit": h.target_size,
              "add": 2 * h.target_size + 4096}
    streams, pos = {}, h.body_offset
    for s in h.streams:
        streams[s.name] = decompress(data[pos:pos + s.size], s, limits[s.name], what)
        pos += s.size
    del data
    views = [memoryview(Path(p).read_bytes()) for p in files]
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    done = False
    try:
        sink = _Sink(fd)
        _run(streams, views, sink, h.target_size, what)
        sink.flush()
        digest = sink.hash.hexdigest()
        if digest != h.target_sha256 or (expected_sha256 and digest != expected_sha256):
            raise DeltaRefused(f"{what}: the rebuilt file's sha256 {digest[:12]}… differs from "
                               f"{(expected_sha256 or h.target_sha256)[:12]}…",
                               hint="a stored base may be damaged (`edgedeploy-agent verify`); "
                                    "send the full file")
        done = True
    finally:
        os.close(fd)
        if not done:
            out.unlink(missing_ok=True)
    return Applied(out, h.target_size, digest, patch.stat().st_size, h.bases)


class _Sink:
    """The output file, written in order and hashed on the way (small pieces are gathered)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.hash = hashlib.sha256()
        self.buf = bytearray()

    def put(self, piece) -> None:
        self.hash.update(piece)
        if len(piece) >= 1 << 16:
            self.flush()
            _write_all(self.fd, piece)
        else:
            self.buf += piece
            if len(self.buf) >= 1 << 18:
                self.flush()

    def flush(self) -> None:
        if self.buf:
            _write_all(self.fd, self.buf)
            self.buf = bytearray()


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _run(streams: dict[str, bytes], bases: list[memoryview], sink: _Sink, size: int,
         what: str) -> None:
    ops = Reader(streams["ops"], what)
    lit, add = memoryview(streams["lit"]), memoryview(streams["add"])
    lp = ap = pos = 0
    last_end = [0] * len(bases)
    nops = len(streams["ops"])

    def base_span(bi: int, rel: int, n: int) -> int:
        if bi >= len(bases):
            raise DeltaRefused(f"{what}: an op names base {bi} of {len(bases)}")
        off = last_end[bi] + ((rel >> 1) if not rel & 1 else -((rel + 1) >> 1))
        if off < 0 or off + n > len(bases[bi]):
            raise DeltaRefused(f"{what}: an op reads past the end of base {bi}")
        last_end[bi] = off + n
        return off

    while ops.p < nops:
        tag = ops.varint()
        if tag == OP_COPY:
            bi, rel, n = ops.varint(), ops.varint(), ops.varint()
            off = base_span(bi, rel, n)
            if pos + n > size:
                raise DeltaRefused(f"{what}: ops write past the target's size")
            sink.put(bases[bi][off:off + n])
        elif tag in (OP_LIT, OP_LIT_SHUFFLED):
            n = ops.varint()
            planes = ops.varint() if tag == OP_LIT_SHUFFLED else 1
            if planes not in PLANES or n % planes or pos + n > size or lp + n > len(lit):
                raise DeltaRefused(f"{what}: a literal op is out of range")
            sink.put(unshuffle(lit[lp:lp + n], planes) if planes > 1 else lit[lp:lp + n])
            lp += n
        elif tag == OP_ADD:
            bi, rel, n, planes = ops.varint(), ops.varint(), ops.varint(), ops.varint()
            off = base_span(bi, rel, n)
            if planes not in PLANES or n % planes or pos + n > size or ap + n > len(add):
                raise DeltaRefused(f"{what}: an add op is out of range")
            d = unshuffle(add[ap:ap + n], planes) if planes > 1 else add[ap:ap + n]
            sink.put(add_bytes(bases[bi][off:off + n], d))
            ap += n
        elif tag in (OP_SCALE, OP_FSCALE):
            bi, rel, n = ops.varint(), ops.varint(), ops.varint()
            esize = ops.varint() if tag == OP_SCALE else 4
            channels, inner = ops.varint(), ops.varint()
            off = base_span(bi, rel, n)
            need = 4 * channels + n
            if esize not in SCALE_SIZES or not channels or not inner or n % esize \
                    or (n // esize) % (channels * inner) or pos + n > size \
                    or ap + need > len(add):
                raise DeltaRefused(f"{what}: a scale op is out of range")
            sink.put(_scaled(bases[bi][off:off + n], esize if tag == OP_SCALE else 0,
                             add[ap:ap + 4 * channels], inner, add[ap + 4 * channels:ap + need],
                             what))
            ap += need
        else:
            raise DeltaRefused(f"{what}: unknown op {tag}")
        pos += n
        checkpoint("delta:applying")  # kill -9 tests: the output half written
    if pos != size or lp != len(lit) or ap != len(add):
        raise DeltaRefused(f"{what}: the ops write {pos} of {size} bytes and use {lp} of "
                           f"{len(lit)} literal and {ap} of {len(add)} difference bytes")


def _scaled(old, size: int, multipliers, inner: int, residual, what: str) -> bytes:
    """SCALE (SIZE 1, 2, 4) or FSCALE (SIZE 0: float32) of OLD."""
    import numpy as np

    m = np.frombuffer(multipliers, "<f4")
    if not np.all(np.isfinite(m)) or np.any(np.abs(m) > MAX_MULTIPLIER):
        raise DeltaRefused(f"{what}: a scale op's multipliers are out of range")
    width = size or 4
    pred = scaled_prediction(old, size, multipliers, inner)
    r = np.frombuffer(unshuffle(residual, width), f"<u{width}").astype(np.int64)
    return ((pred + r) & ((1 << (8 * width)) - 1)).astype(f"<u{width}").tobytes()
