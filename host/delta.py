"""Tensor-level deltas: a patch that rebuilds a new ``.tflite`` from versions a board already
stores, sending only what is new. The builder (this module) runs on the host; the applier is
``device/delta.py``, whose docstring states the wire format both sides speak.

How a patch is built, for a new model NEW and bases B0, B1, … (the board's stored versions,
most preferred first — its current one):

1. Parse every file's flatbuffer (``device.flatbuffer_check.layout``: any .tflite, whoever
   converted it): where each buffer's bytes lie, which tensor names it, with what type, shape
   and quantization scales.
2. Each buffer of NEW of at least ``MIN_BUFFER`` bytes whose sha256 equals a buffer of any base
   is a COPY of that base's bytes, wherever the buffer moved to, whatever its index.
3. A buffer found in no base whose tensor (same subgraph and name, same byte length) had a
   buffer in a base is sent the cheapest of three ways (each tried, zlib-sized):
   ADD — the bytewise difference from the old bytes (fine-tuned weights move a little);
   SCALE — for an integer tensor whose quantization scales changed (every fine-tune of int8
   weights changes max|w|, so every value is re-scaled): the old values times old/new scale per
   channel, rounded, plus the residual; or the bytes themselves (LIT). Multi-byte elements go
   byte-plane by byte-plane (``shuffle``) when that compresses better.
4. Everything else — the flatbuffer's tables, tensor names, quantization parameters, padding,
   small buffers — is matched against the bases' bytes outside their big buffers by a greedy
   matcher on 8-byte grams (position-independent: the layout may shift) that first tries to
   continue the previous run: COPY for runs found, literal bytes for the rest.
5. Fewer, longer ops (``_merge``): a short literal between two runs of one base in step (a
   changed scale inside a table) becomes an ADD, short runs beside it join it, and runs that
   continue each other become one COPY — an unchanged layout is a handful of ops.
6. The op, literal and difference streams are compressed each with whichever of lzma / zlib /
   none is smallest.

``plan_transfer`` is the pure decision "delta or full": the delta only when it is smaller than
the full file. Nothing here touches a board.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import dataclass, field
from typing import Sequence

from ..device import delta as wire
from ..device.flatbuffer_check import TYPE_SIZES, FlatbufferError, Layout, TensorRef, layout
from ..errors import InputError

MIN_BUFFER = 64      # smaller buffers are matched with the tables around them
GRAM = 8             # bytes per indexed gram of the table matcher
STRIDE = 4           # a base is indexed every STRIDE bytes: runs of ≥ GRAM + STRIDE - 1 found
MIN_COPY = 12        # a run found through the index shorter than this is sent as bytes
MIN_CONTINUE = 4     # … a run that continues the previous one may be this short
MERGE_LIT = 64       # a literal this short between two runs of one base in step becomes ADD
MERGE_COPY = 1024    # a run this short beside an ADD of the same base in step joins the ADD
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
    target_size: int
    patch_size: int = 0
    copied_buffers: int = 0
    copied_buffer_bytes: int = 0
    added_buffers: int = 0
    scaled_buffers: int = 0
    literal_buffers: int = 0
    changed_buffer_bytes: int = 0
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

@dataclass
class _Model:
    data: bytes
    layout: Layout
    big: list[tuple[int, int, int]]              # (start, length, buffer index), by start
    by_tensor: dict[tuple[int, str], TensorRef]  # (subgraph, tensor name) → its tensor
    by_buffer: dict[int, TensorRef]              # buffer index → the first tensor naming it


def _parse(data: bytes, what: str) -> _Model:
    try:
        lay = layout(data)
    except FlatbufferError as exc:
        raise InputError(f"{what}: not a sound TFLite model ({exc})",
                         hint="a delta is built from .tflite files only") from exc
    big = sorted((s, n, k) for k, (s, n) in enumerate(lay.buffers) if n >= MIN_BUFFER)
    kept: list[tuple[int, int, int]] = []
    for s, n, k in big:  # overlapping spans (a crafted file): the rest count as tables
        if not kept or s >= kept[-1][0] + kept[-1][1]:
            kept.append((s, n, k))
    by_tensor: dict[tuple[int, str], TensorRef] = {}
    by_buffer: dict[int, TensorRef] = {}
    for t in lay.tensors:
        by_tensor.setdefault((t.subgraph, t.name), t)
        by_buffer.setdefault(t.buffer, t)
    return _Model(data, lay, kept, by_tensor, by_buffer)


def _gaps(size: int, big: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """The [start, end) ranges of a file outside its big buffers."""
    out, pos = [], 0
    for s, n, _k in big:
        if s > pos:
            out.append((pos, s))
        pos = max(pos, s + n)
    if pos < size:
        out.append((pos, size))
    return out


# -- segments: what the new file is made of ---------------------------------------------------

@dataclass
class _Seg:
    """A piece of the new file. ``copy``: base bytes; ``add``: base bytes + ``payload`` (the
    difference, element order); ``scale``: ``payload`` = multipliers + residual (sent as is);
    ``lit``: ``payload`` = the bytes."""

    kind: str
    length: int
    base: int = -1
    offset: int = 0
    payload: bytes = b""
    planes: int = 1
    scale: tuple[int, int, int] = (0, 0, 0)    # SCALE: element size, channels, inner

    @property
    def end(self) -> int:
        return self.offset + self.length


def _diff(new, old) -> bytes:
    import numpy as np

    return (np.frombuffer(new, np.uint8) - np.frombuffer(old, np.uint8)).tobytes()


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


def _buffer_seg(chunk: bytes, t_new: TensorRef | None, bms: list[_Model],
                by_hash: dict[bytes, tuple[int, int]], stats: DeltaStats) -> _Seg:
    """A big buffer of NEW: COPY when a base holds its bytes, else the cheapest of LIT, ADD
    and SCALE against its tensor's old buffer."""
    n = len(chunk)
    hit = by_hash.get(hashlib.sha256(chunk).digest())
    if hit is not None:
        stats.copied_buffers += 1
        stats.copied_buffer_bytes += n
        return _Seg("copy", n, hit[0], hit[1])
    stats.changed_buffer_bytes += n
    elem = TYPE_SIZES.get(t_new.type, 1) if t_new is not None else 1
    planes = _best_planes(chunk, elem)
    best = _Seg("lit", n, payload=chunk, planes=planes)
    cost = _zsize(wire.shuffle(chunk, planes))
    if t_new is not None:
        for bi, bm in enumerate(bms):
            t_old = bm.by_tensor.get((t_new.subgraph, t_new.name))
            if t_old is None or bm.layout.buffers[t_old.buffer][1] != n:
                continue
            q = bm.layout.buffers[t_old.buffer][0]
            old = bm.data[q:q + n]
            diff = _diff(chunk, old)
            dplanes = _best_planes(diff, elem)
            c = _zsize(wire.shuffle(diff, dplanes))
            if c < cost:
                best, cost = _Seg("add", n, bi, q, diff, dplanes), c
            sc = _scale_payload(chunk, old, t_new, t_old)
            if sc is not None and _zsize(sc[0]) < cost:
                best, cost = _Seg("scale", n, bi, q, sc[0], scale=sc[1]), _zsize(sc[0])
            break
    if best.kind == "lit":
        stats.literal_buffers += 1
    elif best.kind == "add":
        stats.added_buffers += 1
    else:
        stats.scaled_buffers += 1
    return best


class _Index:
    """GRAM-byte grams of the bases' bytes outside big buffers → (base, position)."""

    def __init__(self, bases: list[_Model]) -> None:
        self.grams: dict[bytes, tuple[int, int]] = {}
        for bi in range(len(bases) - 1, -1, -1):  # the most preferred base wins a tie
            d = bases[bi].data
            for lo, hi in _gaps(len(d), bases[bi].big):
                for p in range(lo, hi - GRAM + 1, STRIDE):
                    self.grams[d[p:p + GRAM]] = (bi, p)


def _match_len(a: bytes, i: int, b: bytes, j: int, limit: int) -> int:
    n, step = 0, 32
    while n < limit:
        k = min(step, limit - n)
        if a[i + n:i + n + k] == b[j + n:j + n + k]:
            n += k
            step = min(step * 2, 1 << 16)
            continue
        while n < limit and a[i + n] == b[j + n]:
            n += 1
        return n
    return n


def _tables(new: bytes, lo: int, hi: int, bases: list[_Model], index: _Index,
            cont: tuple[int, int] | None, segs: list[_Seg], stats: DeltaStats
            ) -> tuple[int, int] | None:
    """Match NEW[lo:hi] (bytes outside big buffers) against the bases, onto SEGS. CONT:
    (base, base position - new position) of the run before; the one after is returned."""
    grams = index.grams
    p = lit_start = lo
    while p < hi:
        found = None
        if cont is not None:
            bi, shift = cont
            q = p + shift
            bd = bases[bi].data
            if 0 <= q < len(bd):
                n = _match_len(new, p, bd, q, min(hi - p, len(bd) - q))
                if n >= MIN_CONTINUE:
                    found = (bi, q, n)
        if found is None and p + GRAM <= hi:
            hit = grams.get(new[p:p + GRAM])
            if hit is not None:
                bi, q = hit
                bd = bases[bi].data
                n = _match_len(new, p, bd, q, min(hi - p, len(bd) - q))
                if n >= MIN_COPY:
                    found = (bi, q, n)
        if found is None:
            p += 1
            continue
        bi, q, n = found
        bd = bases[bi].data
        while p > lit_start and q > 0 and new[p - 1] == bd[q - 1]:
            p, q, n = p - 1, q - 1, n + 1
        if p > lit_start:
            segs.append(_Seg("lit", p - lit_start, payload=new[lit_start:p]))
            stats.table_literal_bytes += p - lit_start
        segs.append(_Seg("copy", n, bi, q))
        stats.table_copied_bytes += n
        p += n
        lit_start = p
        cont = (bi, q - (p - n))
    if hi > lit_start:
        segs.append(_Seg("lit", hi - lit_start, payload=new[lit_start:hi]))
        stats.table_literal_bytes += hi - lit_start
    return cont


def _merge(segs: list[_Seg], bases: list[_Model]) -> list[_Seg]:
    """Fewer, longer ops (pure): see step 5 of the module docstring."""
    def in_step(a: _Seg, b: _Seg) -> bool:
        return a.base >= 0 and a.base == b.base and a.end == b.offset \
            and a.kind != "scale" and b.kind != "scale"

    out: list[_Seg] = []
    for i, s in enumerate(segs):  # short literals between two runs in step → ADD
        if s.kind == "lit" and s.length <= MERGE_LIT and s.planes == 1 and out \
                and out[-1].base >= 0 and i + 1 < len(segs) \
                and segs[i + 1].base == out[-1].base \
                and segs[i + 1].offset == out[-1].end + s.length:
            bi, off = out[-1].base, out[-1].end
            s = _Seg("add", s.length, bi, off, _diff(s.payload, bases[bi].data[off:s.length + off]))
        out.append(s)
    for i, s in enumerate(out):  # short runs beside a single-plane ADD in step → ADD of zeros
        if s.kind == "copy" and s.length < MERGE_COPY:
            near = [out[j] for j in (i - 1, i + 1) if 0 <= j < len(out)]
            if any(t.kind == "add" and t.planes == 1 and (in_step(t, s) or in_step(s, t))
                   for t in near):
                out[i] = _Seg("add", s.length, s.base, s.offset, bytes(s.length))
    merged: list[_Seg] = []
    for s in out:  # neighbours of one kind in step → one op
        last = merged[-1] if merged else None
        if last is not None and in_step(last, s) and last.kind == s.kind == "copy":
            merged[-1] = _Seg("copy", last.length + s.length, last.base, last.offset)
        elif last is not None and in_step(last, s) and last.kind == s.kind == "add" \
                and last.planes == s.planes == 1:
            merged[-1] = _Seg("add", last.length + s.length, last.base, last.offset,
                              last.payload + s.payload)
        else:
            merged.append(s)
    return merged


def _emit(segs: list[_Seg]) -> dict[str, bytes]:
    """The raw ops / lit / add streams of SEGS (wire format: device/delta.py)."""
    ops, lit, add = bytearray(), bytearray(), bytearray()
    last_end: dict[int, int] = {}

    def rel(bi: int, offset: int) -> int:
        r = offset - last_end.get(bi, 0)
        return (r << 1) if r >= 0 else ((-r << 1) - 1)

    for s in segs:
        if s.kind == "copy":
            ops += wire.varints(wire.OP_COPY, s.base, rel(s.base, s.offset), s.length)
        elif s.kind == "add":
            ops += wire.varints(wire.OP_ADD, s.base, rel(s.base, s.offset), s.length, s.planes)
            add += wire.shuffle(s.payload, s.planes)
        elif s.kind == "scale":
            ops += wire.varints(wire.OP_SCALE, s.base, rel(s.base, s.offset), s.length,
                                *s.scale)
            add += s.payload
        elif s.planes > 1:
            ops += wire.varints(wire.OP_LIT_SHUFFLED, s.length, s.planes)
            lit += wire.shuffle(s.payload, s.planes)
        else:
            ops += wire.varints(wire.OP_LIT, s.length)
            lit += s.payload
        if s.base >= 0:
            last_end[s.base] = s.end
    return {"ops": bytes(ops), "lit": bytes(lit), "add": bytes(add)}


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
        for s, n, _k in bms[bi].big:
            by_hash[hashlib.sha256(d[s:s + n]).digest()] = (bi, s)
    index = _Index(bms)
    segs: list[_Seg] = []
    cont: tuple[int, int] | None = None
    pos = 0
    for s, n, k in nm.big:
        if s > pos:
            cont = _tables(new, pos, s, bms, index, cont, segs, stats)
        seg = _buffer_seg(new[s:s + n], nm.by_buffer.get(k), bms, by_hash, stats)
        segs.append(seg)
        if seg.base >= 0:
            cont = (seg.base, seg.offset - s)
        pos = s + n
    if pos < len(new):
        _tables(new, pos, len(new), bms, index, cont, segs, stats)

    merged = _merge(segs, bms)
    refs = [wire.BaseRef(x.name, x.version, x.sha256, len(x.data)) for x in bases]
    target_sha = hashlib.sha256(new).hexdigest()
    data, info = wire.encode(target_sha, len(new), refs, _emit(merged), codecs)
    stats.patch_size = len(data)
    stats.ops = len(merged)
    stats.streams = info
    stats.build_seconds = time.perf_counter() - t0
    return Delta(data, target_sha, len(new), refs, stats)
