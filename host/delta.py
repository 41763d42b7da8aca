"""Tensor-level deltas: a patch that rebuilds a new ``.tflite`` from versions a board already
stores, sending only what is new. The builder (this module) runs on the host; the applier is
``device/delta.py``, whose docstring states the wire format both sides speak.

How a patch is built, for a new model NEW and bases B0, B1, … (the board's stored versions,
most preferred first — its current one):

1. Parse every file's flatbuffer (``device.flatbuffer_check.layout``: any .tflite, whoever
   converted it) into regions: each buffer of at least ``MIN_BUFFER`` bytes (a tensor's data)
   and each tensor's quantization scales (float32, per channel), keyed by subgraph, tensor name
   and part, with the tensor's type, shape and scales.
2. A region of NEW whose sha256 equals a region of any base is a COPY of that base's bytes,
   wherever it moved to, whatever its index.
3. A region found in no base whose key had a region of the same length in a base is sent the
   cheapest of these (each tried, sized with zlib): ADD — the bytewise difference from the old
   bytes (fine-tuned weights move a little); SCALE — for integer tensor data whose quantization
   scales changed (a fine-tune of int8 weights changes max|w|, so every value is re-scaled): the
   old values times old/new scale per channel, rounded, plus the residual; FSCALE — float32
   values that moved by one factor (a bias's scales after its input's scale changed: a
   re-calibration); or its bytes (LIT). Multi-byte elements go byte-plane by byte-plane
   (``shuffle``) when that compresses better.
4. Everything else — the flatbuffer's tables, tensor names, small buffers, padding — is matched
   (``delta_tables.match_tables``) against the bases' bytes outside their regions by a greedy
   matcher on 8-byte grams
   (position-independent: the layout may shift) that first tries to continue the previous run:
   COPY for runs found, literal bytes for the rest.
5. Fewer, longer ops (``delta_tables.merge``): a short literal between two runs of one base in step (a
   changed value inside a table) becomes an ADD, short runs beside it join it, and runs that
   continue each other become one COPY: an unchanged layout is a handful of ops.
6. The op, literal and difference streams are compressed each with whichever of lzma / zlib /
   none is smallest — or a faster one to decode when it is within 1 % of that
   (``delta_format.pick_codec``: a full retrain's literals, near-incompressible int8 weights,
   go as zlib, decoded on the board ~3x faster than lzma for 0.1 % more bytes).

``plan_transfer`` is the pure decision "delta or full": the delta only when it is smaller than
the full file. Nothing here touches a board.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import dataclass, field
from typing import Sequence

from ..device import delta_format as wire
from ..device.flatbuffer_check import TYPE_SIZES, FlatbufferError, Layout, TensorRef, layout
from ..errors import InputError
from .delta_tables import Index, Seg, diff, emit, match_tables, merge

MIN_BUFFER = 64      # smaller buffers are matched with the tables around them
SIGNED_INTS = {9: 1, 7: 2, 2: 4}   # TensorType INT8, INT16, INT32 → bytes: what SCALE takes


@dataclass(frozen=True)
class Base:
    """A version the board holds: its identity and, here on the host, its bytes."""

    name: str
    version: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class DeltaStats:
    """What a patch is made of. Regions: tensor buffers and quantization scales (step 1)."""

    target_size: int
    patch_size: int = 0
    copied_regions: int = 0
    copied_region_bytes: int = 0
    added_regions: int = 0
    scaled_regions: int = 0
    literal_regions: int = 0
    changed_region_bytes: int = 0
    table_copied_bytes: int = 0
    table_literal_bytes: int = 0
    ops: int = 0
    streams: dict[str, dict] = field(default_factory=dict)
    build_seconds: float = 0.0

    @property
    def share(self) -> float:
        return self.patch_size / self.target_size if self.target_size else 1.0


@dataclass
class Delta:
    data: bytes
    target_sha256: str
    target_size: int
    bases: list[wire.BaseRef]
    stats: DeltaStats

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class TransferPlan:
    """What to send: ``"delta"`` or ``"full"``, its bytes, the full file's, and why."""

    kind: str
    bytes: int
    full_bytes: int
    reason: str


def plan_transfer(full_size: int, delta: Delta | None, reason_no_delta: str = "") -> TransferPlan:
    """Pure: the delta when there is one and it is smaller than the full file, else full."""
    if delta is None:
        return TransferPlan("full", full_size, full_size, reason_no_delta or "no delta")
    if delta.size >= full_size:
        return TransferPlan("full", full_size, full_size,
                            f"the delta ({delta.size} B) is not smaller than the file")
    return TransferPlan("delta", delta.size, full_size,
                        f"{delta.size} B delta against {len(delta.bases)} stored version(s)")


# -- parsing ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Region:
    """A typed run of a model file: a tensor's buffer (``data``) or its quantization scales
    (``scale``, float32). KEY pairs it with its old self: (subgraph, tensor name, part)."""

    start: int
    length: int
    key: tuple[int, str, str] | None
    tensor: TensorRef | None
    elem: int            # bytes per element

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass
class _Model:
    data: bytes
    layout: Layout
    regions: list[_Region]                          # by start, not overlapping
    by_key: dict[tuple[int, str, str], _Region]


def _parse(data: bytes, what: str) -> _Model:
    try:
        lay = layout(data)
    except FlatbufferError as exc:
        raise InputError(f"{what}: not a sound TFLite model ({exc})",
                         hint="a delta is built from .tflite files only") from exc
    first: dict[int, TensorRef] = {}
    for t in lay.tensors:
        first.setdefault(t.buffer, t)
    found = []
    for k, (s, n) in enumerate(lay.buffers):
        if n >= MIN_BUFFER:
            owner = first.get(k)
            found.append(_Region(s, n, (owner.subgraph, owner.name, "data") if owner else None,
                                 owner, TYPE_SIZES.get(owner.type, 1) if owner else 1))
    for t in lay.tensors:
        s, n = t.scale_span
        if n >= MIN_BUFFER:
            found.append(_Region(s, n, (t.subgraph, t.name, "scale"), t, 4))
    regions: list[_Region] = []
    for r in sorted(found, key=lambda r: r.start):  # overlaps (shared or crafted): first wins
        if not regions or r.start >= regions[-1].end:
            regions.append(r)
    by_key: dict[tuple[int, str, str], _Region] = {}
    for r in regions:
        if r.key is not None:
            by_key.setdefault(r.key, r)
    return _Model(data, lay, regions, by_key)


def _gaps(size: int, regions: list[_Region]) -> list[tuple[int, int]]:
    """The [start, end) ranges of a file outside its regions."""
    out, pos = [], 0
    for r in regions:
        if r.start > pos:
            out.append((pos, r.start))
        pos = max(pos, r.end)
    if pos < size:
        out.append((pos, size))
    return out


# -- regions, sent the cheapest way -----------------------------------------------------------

def _zsize(data: bytes) -> int:
    return len(zlib.compress(data, 6))


def _best_planes(data: bytes, elem: int) -> int:
    """1, or ELEM when DATA compresses better byte-plane by byte-plane (zlib level 1)."""
    if elem <= 1 or len(data) % elem:
        return 1
    return elem if len(zlib.compress(wire.shuffle(data, elem), 1)) < \
        len(zlib.compress(data, 1)) else 1


def _scale_payload(new: bytes, old: bytes, t_new: TensorRef, t_old: TensorRef
                   ) -> tuple[bytes, tuple[int, int, int]] | None:
    """SCALE's multipliers + residual for a quantized integer tensor whose scales changed, or
    None when it doesn't apply."""
    import numpy as np

    size = SIGNED_INTS.get(t_new.type)
    if size is None or t_old.type != t_new.type or t_old.shape != t_new.shape \
            or not t_new.scales or len(t_new.scales) != len(t_old.scales) \
            or t_new.scales == t_old.scales or len(new) % size:
        return None
    count = len(new) // size
    channels = len(t_new.scales)
    if channels == 1:
        inner = count
    else:
        q = t_new.quantized_dimension
        if not 0 <= q < len(t_new.shape) or t_new.shape[q] != channels \
                or q != t_old.quantized_dimension:
            return None
        inner = 1
        for d in t_new.shape[q + 1:]:
            inner *= d
    if inner <= 0 or count % (channels * inner):
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        m = (np.asarray(t_old.scales, np.float64) / np.asarray(t_new.scales, np.float64)
             ).astype("<f4")
    if not np.all(np.isfinite(m)) or np.any(np.abs(m) > wire.MAX_MULTIPLIER):
        return None
    pred = wire.scaled_prediction(old, size, m.tobytes(), inner)
    resid = ((np.frombuffer(new, f"<i{size}").astype(np.int64) - pred)
             & ((1 << (8 * size)) - 1)).astype(f"<u{size}").tobytes()
    return m.tobytes() + wire.shuffle(resid, size), (size, channels, inner)


def _fscale_payload(new: bytes, old: bytes) -> tuple[bytes, tuple[int, int, int]] | None:
    """FSCALE's multiplier + residual for float32 values that moved by one factor (a tensor's
    quantization scales when its input's scale changed), or None."""
    import numpy as np

    if len(new) % 4 or len(new) != len(old):
        return None
    a = np.frombuffer(old, "<f4").astype(np.float64)
    b = np.frombuffer(new, "<f4").astype(np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return None
    nz = a != 0
    if not nz.any():
        return None
    m = np.asarray([np.median(b[nz] / a[nz])], "<f4")
    if not np.isfinite(m[0]) or abs(float(m[0])) > wire.MAX_MULTIPLIER:
        return None
    count = len(a)
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite((a * float(m[0])).astype("<f4"))):
            return None
    pred = wire.scaled_prediction(old, 0, m.tobytes(), count)
    resid = ((np.frombuffer(new, "<u4").astype(np.int64) - pred) & 0xFFFFFFFF).astype("<u4")
    return m.tobytes() + wire.shuffle(resid.tobytes(), 4), (0, 1, count)


def _region_seg(chunk: bytes, region: _Region, bms: list[_Model],
                by_hash: dict[bytes, tuple[int, int]], stats: DeltaStats) -> Seg:
    """A region of NEW: COPY when a base holds its bytes anywhere, else the cheapest of LIT,
    ADD, SCALE (integer tensor data) and FSCALE (float32) against its old self."""
    n = len(chunk)
    hit = by_hash.get(hashlib.sha256(chunk).digest())
    if hit is not None:
        stats.copied_regions += 1
        stats.copied_region_bytes += n
        return Seg("copy", n, hit[0], hit[1])
    stats.changed_region_bytes += n
    elem = region.elem
    planes = _best_planes(chunk, elem)
    best = Seg("lit", n, payload=chunk, planes=planes)
    cost = _zsize(wire.shuffle(chunk, planes))
    for bi, bm in enumerate(bms):
        was = bm.by_key.get(region.key) if region.key is not None else None
        if was is None or was.length != n:
            continue
        old = bm.data[was.start:was.end]
        delta = diff(chunk, old)
        dplanes = _best_planes(delta, elem)
        c = _zsize(wire.shuffle(delta, dplanes))
        if c < cost:
            best, cost = Seg("add", n, bi, was.start, delta, dplanes), c
        floats = region.key is not None and region.key[2] == "scale" or \
            region.tensor is not None and region.tensor.type == 0
        sc = _fscale_payload(chunk, old) if floats else \
            _scale_payload(chunk, old, region.tensor, was.tensor) \
            if region.tensor is not None and was.tensor is not None else None
        if sc is not None and _zsize(sc[0]) < cost:
            best, cost = Seg("scale", n, bi, was.start, sc[0], scale=sc[1]), _zsize(sc[0])
        break
    if best.kind == "lit":
        stats.literal_regions += 1
    elif best.kind == "add":
        stats.added_regions += 1
    else:
        stats.scaled_regions += 1
    return best


def build_delta(new: bytes, bases: Sequence[Base], *, codecs: Sequence[str] = wire.CODECS
                ) -> Delta:
    """The patch that rebuilds NEW from BASES (most preferred first; the first
    ``wire.MAX_BASES`` are used). InputError if NEW or a base is not a sound .tflite. A patch
    is returned even when it is not smaller than NEW: ``plan_transfer`` decides."""
    t0 = time.perf_counter()
    if not bases:
        raise InputError("a delta needs at least one base version")
    bases = list(bases)[:wire.MAX_BASES]
    nm = _parse(new, "the new model")
    bms = [_parse(b.data, f"stored version {b.name}@{b.version}") for b in bases]
    stats = DeltaStats(len(new))

    by_hash: dict[bytes, tuple[int, int]] = {}
    for bi in range(len(bms) - 1, -1, -1):  # the most preferred base wins a tie
        d = bms[bi].data
        for r in bms[bi].regions:
            by_hash[hashlib.sha256(d[r.start:r.end]).digest()] = (bi, r.start)
    index = Index([b.data for b in bms], [_gaps(len(b.data), b.regions) for b in bms])
    base_bytes = [b.data for b in bms]
    segs: list[Seg] = []
    cont: tuple[int, int] | None = None
    pos = 0
    for r in nm.regions:
        if r.start > pos:
            cont = match_tables(new, pos, r.start, base_bytes, index, cont, segs)
        seg = _region_seg(new[r.start:r.end], r, bms, by_hash, stats)
        seg.region = True
        segs.append(seg)
        if seg.base >= 0:
            cont = (seg.base, seg.offset - r.start)
        pos = r.end
    if pos < len(new):
        match_tables(new, pos, len(new), base_bytes, index, cont, segs)

    for sg in segs:
        if sg.kind == "copy" and sg.region is False:
            stats.table_copied_bytes += sg.length
        elif sg.kind == "lit" and sg.region is False:
            stats.table_literal_bytes += sg.length
    merged = merge(segs, base_bytes)
    refs = [wire.BaseRef(x.name, x.version, x.sha256, len(x.data)) for x in bases]
    target_sha = hashlib.sha256(new).hexdigest()
    data, info = wire.encode(target_sha, len(new), refs, emit(merged), codecs)
    stats.patch_size = len(data)
    stats.ops = len(merged)
    stats.streams = info
    stats.build_seconds = time.perf_counter() - t0
    return Delta(data, target_sha, len(new), refs, stats)
