"""The table half of a delta build (host/delta.py): what lies between a model's regions — the
flatbuffer's tables, tensor names, small buffers, padding — matched against the bases' bytes,
then every piece of the new file (``Seg``) merged into fewer ops and written as the patch's raw
streams (wire format: device/delta_format.py). Pure functions of bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..device import delta_format as wire

GRAM = 8             # bytes per indexed gram of the table matcher
STRIDE = 4           # a base is indexed every STRIDE bytes: runs of ≥ GRAM + STRIDE - 1 found
MIN_COPY = 12        # a run found through the index shorter than this is sent as bytes
MIN_CONTINUE = 4     # … a run that continues the previous one may be this short
MERGE_LIT = 64       # a literal this short between two runs of one base in step becomes ADD
MERGE_COPY = 1024    # a run this short beside an ADD of the same base in step joins the ADD


@dataclass
class Seg:
    """A piece of the new file. ``copy``: base bytes; ``add``: base bytes + ``payload`` (the
    difference, element order); ``scale``: ``payload`` = multipliers + residual (sent as is);
    ``lit``: ``payload`` = the bytes."""

    kind: str
    length: int
    base: int = -1
    offset: int = 0
    payload: bytes = b""
    planes: int = 1
    scale: tuple[int, int, int] = (0, 0, 0)    # element size (0: FSCALE), channels, inner
    region: bool = False                        # a region's (else from the table matcher)

    @property
    def end(self) -> int:
        return self.offset + self.length


def diff(new, old) -> bytes:
    import numpy as np

    return (np.frombuffer(new, np.uint8) - np.frombuffer(old, np.uint8)).tobytes()


class Index:
    """GRAM-byte grams of the bases' bytes in GAPS (outside their regions) → (base, position)."""

    def __init__(self, bases: list[bytes], gaps: list[list[tuple[int, int]]]) -> None:
        self.grams: dict[bytes, tuple[int, int]] = {}
        for bi in range(len(bases) - 1, -1, -1):  # the most preferred base wins a tie
            d = bases[bi]
            for lo, hi in gaps[bi]:
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


def match_tables(new: bytes, lo: int, hi: int, bases: list[bytes], index: Index,
                 cont: tuple[int, int] | None, segs: list[Seg]) -> tuple[int, int] | None:
    """Match NEW[lo:hi] (bytes outside regions) against the bases, onto SEGS. CONT:
    (base, base position - new position) of the run before; the one after is returned."""
    grams = index.grams
    p = lit_start = lo
    while p < hi:
        found = None
        if cont is not None:
            bi, shift = cont
            q = p + shift
            bd = bases[bi]
            if 0 <= q < len(bd):
                n = _match_len(new, p, bd, q, min(hi - p, len(bd) - q))
                if n >= MIN_CONTINUE:
                    found = (bi, q, n)
        if found is None and p + GRAM <= hi:
            hit = grams.get(new[p:p + GRAM])
            if hit is not None:
                bi, q = hit
                bd = bases[bi]
                n = _match_len(new, p, bd, q, min(hi - p, len(bd) - q))
                if n >= MIN_COPY:
                    found = (bi, q, n)
        if found is None:
            p += 1
            continue
        bi, q, n = found
        bd = bases[bi]
        while p > lit_start and q > 0 and new[p - 1] == bd[q - 1]:
            p, q, n = p - 1, q - 1, n + 1
        if p > lit_start:
            segs.append(Seg("lit", p - lit_start, payload=new[lit_start:p]))
        segs.append(Seg("copy", n, bi, q))
        p += n
        lit_start = p
        cont = (bi, q - (p - n))
    if hi > lit_start:
        segs.append(Seg("lit", hi - lit_start, payload=new[lit_start:hi]))
    return cont


def merge(segs: list[Seg], bases: list[bytes]) -> list[Seg]:
    """Fewer, longer ops (pure): a short literal between two runs of one base in step (a
    changed value inside a table) becomes an ADD, short runs beside it join it, and runs that
    continue each other become one COPY: an unchanged layout is a handful of ops."""
    def in_step(a: Seg, b: Seg) -> bool:
        return a.base >= 0 and a.base == b.base and a.end == b.offset \
            and a.kind != "scale" and b.kind != "scale"

    out: list[Seg] = []
    for i, s in enumerate(segs):  # short literals between two runs in step → ADD
        if s.kind == "lit" and s.length <= MERGE_LIT and s.planes == 1 and out \
                and out[-1].base >= 0 and i + 1 < len(segs) \
                and segs[i + 1].base == out[-1].base \
                and segs[i + 1].offset == out[-1].end + s.length:
            bi, off = out[-1].base, out[-1].end
            s = Seg("add", s.length, bi, off, diff(s.payload, bases[bi][off:s.length + off]))
        out.append(s)
    for i, s in enumerate(out):  # short runs beside a single-plane ADD in step → ADD of zeros
        if s.kind == "copy" and s.length < MERGE_COPY:
            near = [out[j] for j in (i - 1, i + 1) if 0 <= j < len(out)]
            if any(t.kind == "add" and t.planes == 1 and (in_step(t, s) or in_step(s, t))
                   for t in near):
                out[i] = Seg("add", s.length, s.base, s.offset, bytes(s.length))
    merged: list[Seg] = []
    for s in out:  # neighbours of one kind in step → one op
        last = merged[-1] if merged else None
        if last is not None and in_step(last, s) and last.kind == s.kind == "copy":
            merged[-1] = Seg("copy", last.length + s.length, last.base, last.offset)
        elif last is not None and in_step(last, s) and last.kind == s.kind == "add" \
                and last.planes == s.planes == 1:
            merged[-1] = Seg("add", last.length + s.length, last.base, last.offset,
                              last.payload + s.payload)
        else:
            merged.append(s)
    return merged


def emit(segs: list[Seg]) -> dict[str, bytes]:
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
        elif s.kind == "scale" and s.scale[0] == 0:
            ops += wire.varints(wire.OP_FSCALE, s.base, rel(s.base, s.offset), s.length,
                                *s.scale[1:])
            add += s.payload
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


