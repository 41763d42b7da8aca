"""The wire format of a tensor-level delta, shared by the host's builder (``host/delta.py``)
and the board's applier (``device/delta.py``): a patch that rebuilds a new ``.tflite`` from
versions a board's store already holds plus the bytes that are new. Stdlib; numpy for the SCALE
and FSCALE helpers, imported only when used.

Wire format (one file, ``*.tflite.delta``; integers little-endian)::

    b"EDDELTA1"                        8 bytes, magic and format 1
    u32 H                              length of the header (≤ 64 KiB)
    H bytes: a zlib stream of JSON (UTF-8):
      {"format": 1,
       "target": {"sha256": "<hex>", "size": N},          # the file the patch rebuilds
       "bases": [{"name": "digits", "version": "3f2a…", "sha256": "<hex>", "size": M}, …],
       "streams": [{"name": "ops" | "lit" | "add", "codec": "lzma" | "zlib" | "none",
                    "size": compressed bytes, "raw": decompressed bytes,
                    "dict_size": D}, …],              # dict_size: lzma only
       "body_sha256": "<hex>"}                        # of every stream's bytes, in order
    the streams' bytes, back to back, in the order the header lists them

Codecs: ``lzma`` is raw LZMA2 (``lzma.FORMAT_RAW``, filter LZMA2 with ``dict_size`` D), ``zlib``
a zlib stream, ``none`` the bytes as they are. A base is one of the board's stored versions,
named by model name and version; its file's size must be as stated and the rebuilt file's sha256
proves every byte taken from it.

The ``ops`` stream (decompressed) is a sequence of ops, each an unsigned LEB128 varint tag then
varint operands; ops write the output from byte 0 onwards, in order, with no gap::

    0 COPY  base, rel, length            out += base[offset : offset + length]
    1 LIT   length                       out += the next LENGTH bytes of the ``lit`` stream
    2 ADD   base, rel, length, planes    out += (base[offset : offset + length] + d) mod 256,
                                         d = the next LENGTH bytes of the ``add`` stream
    3 LITP  length, planes               out += the next LENGTH bytes of ``lit``
    4 SCALE base, rel, length, size, channels, inner
                                         a quantized tensor whose scales changed: LENGTH bytes
                                         of signed SIZE-byte integers (1, 2 or 4), predicted
                                         from the base's and corrected. From ``add``: CHANNELS
                                         float32 multipliers m, then LENGTH residual bytes
                                         (SIZE planes). Element i of the output, with v_i the
                                         base's element i and c = (i // INNER) mod CHANNELS:
                                         (rint(v_i × m_c) + r_i) mod 2^(8 SIZE), rint rounding
                                         half to even in float64 (exact on every IEEE machine);
                                         LENGTH / SIZE a multiple of CHANNELS × INNER
    5 FSCALE base, rel, length, channels, inner
                                         the same for float32 elements (a tensor's scales when
                                         its input's scale changed): from ``add``, CHANNELS
                                         float32 m, then LENGTH residual bytes (4 planes);
                                         element i's bits: (bits(float32(v_i × m_c)) + r_i)
                                         mod 2^32, v_i × m_c in float64, rounded to float32
                                         to nearest even

    offset = end of the previous COPY/ADD from the same base (0 at first) + zigzag⁻¹(rel),
    zigzag⁻¹(z) = z >> 1 if z is even, else -((z + 1) >> 1)

``planes`` (1, 2 or 4; LENGTH a multiple of it): the bytes were sent byte-plane by byte-plane
— every element's first byte, then every second byte, … (``shuffle``) — and are put back in
element order (``unshuffle``) before use. Every stream must be used up exactly and the output
must be exactly ``target.size`` bytes. Every op but SCALE and FSCALE needs only the
standard library; those use numpy (every board has it: the runtime needs it).

A damaged patch (magic, header, a body whose sha256 differs, a stream that does not decompress
to its size, an op out of range) is refused with ``DeltaRefused``: see ``device/delta.py``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Sequence

from ..errors import DeltaRefused, InputError

MAGIC = b"EDDELTA1"
FORMAT = 1
MAX_HEADER = 1 << 16
MAX_BASES = 8
MAX_TARGET = 1 << 32
CODECS = ("lzma", "zlib", "none")
STREAMS = ("ops", "lit", "add")
OP_COPY, OP_LIT, OP_ADD, OP_LIT_SHUFFLED, OP_SCALE, OP_FSCALE = 0, 1, 2, 3, 4, 5
SCALE_SIZES = (1, 2, 4)
MAX_MULTIPLIER = float(1 << 16)
PLANES = (1, 2, 4)
SUFFIX = ".delta"


@dataclass(frozen=True)
class BaseRef:
    name: str
    version: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Stream:
    name: str
    codec: str
    size: int
    raw: int
    dict_size: int = 0


@dataclass(frozen=True)
class Header:
    target_sha256: str
    target_size: int
    bases: list[BaseRef]
    streams: list[Stream]
    body_sha256: str
    body_offset: int


# -- helpers both sides use --------------------------------------------------------------

def varints(*values: int) -> bytes:
    out = bytearray()
    for v in values:
        assert v >= 0, "varints are unsigned"
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
    return bytes(out)


def shuffle(data, planes: int) -> bytes:
    """Byte-plane order: every element's byte 0, then every byte 1, …"""
    if planes == 1:
        return bytes(data)
    return b"".join(bytes(data[i::planes]) for i in range(planes))


def unshuffle(data, planes: int) -> bytes:
    if planes == 1:
        return bytes(data)
    m = len(data) // planes
    out = bytearray(len(data))
    for i in range(planes):
        out[i::planes] = data[i * m:(i + 1) * m]
    return bytes(out)


def add_bytes(a, b) -> bytes:
    """(a + b) mod 256, byte by byte, for equal-length byte strings — with two big-integer
    additions (even bytes, odd bytes: a lane's carry lands in a masked-off byte), no numpy."""
    n = len(a)
    x, y = int.from_bytes(a, "little"), int.from_bytes(b, "little")
    even = int.from_bytes(b"\xff\x00" * (n // 2 + 1), "little") & ((1 << (8 * n)) - 1)
    odd = even << 8 & ((1 << (8 * n)) - 1)
    return (((x & even) + (y & even)) & even | ((x & odd) + (y & odd)) & odd).to_bytes(
        n, "little")


def scaled_prediction(old, size: int, multipliers, inner: int):
    """SCALE's prediction (numpy int64 array): rint(v × m_c) for the base's signed SIZE-byte
    elements OLD and the float32 MULTIPLIERS, element i in channel (i // INNER) mod channels;
    SIZE 0: FSCALE's, the bits of float32(v × m_c) for float32 elements. The host's builder and
    the board's applier both call this: the same float64 steps, exact on IEEE machines."""
    import numpy as np

    m = np.frombuffer(multipliers, "<f4").astype(np.float64)
    v = np.frombuffer(old, "<f4" if size == 0 else f"<i{size}").astype(np.float64)
    reps = len(v) // (len(m) * inner)
    x = v * np.tile(np.repeat(m, inner), reps)
    if size == 0:
        with np.errstate(over="ignore", invalid="ignore"):
            return x.astype("<f4").view("<u4").astype(np.int64)
    return np.rint(x).astype(np.int64)


def _lzma_dict(raw: int) -> int:
    d = 1 << 12
    while d < raw and d < 1 << 26:
        d <<= 1
    return d


# A codec that decodes faster is kept when it is at most this much larger than the smallest:
# lzma decodes near-incompressible int8 weights at a few tens of MB/s, zlib at hundreds.
CODEC_SLACK = 0.01


def pick_codec(sizes: dict[str, int]) -> str:
    """Of the codecs tried (SIZES: codec → compressed bytes), the fastest to decode (none, then
    zlib, then lzma) whose size is within ``CODEC_SLACK`` of the smallest."""
    smallest = min(sizes.values())
    return next(c for c in ("none", "zlib", "lzma")
                if c in sizes and sizes[c] <= smallest * (1 + CODEC_SLACK))


def encode(target_sha256: str, target_size: int, bases: Sequence[BaseRef],
           streams: dict[str, bytes], codecs: Sequence[str] = CODECS) -> tuple[bytes, dict]:
    """The patch file's bytes for STREAMS (raw), each compressed with one of CODECS
    (``pick_codec``: the smallest, or a faster one nearly as small); and, per stream, what was
    chosen."""
    import lzma
    import zlib

    parts: list[tuple[Stream, bytes]] = []
    for name in STREAMS:
        raw = streams.get(name, b"")
        cands: dict[str, tuple[Stream, bytes]] = {}
        for codec in codecs:
            if codec == "lzma":
                d = _lzma_dict(len(raw))
                c = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=[
                    {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": d}])
                cand = (Stream(name, codec, len(c), len(raw), d), c)
            elif codec == "zlib":
                c = zlib.compress(raw, 9)
                cand = (Stream(name, codec, len(c), len(raw)), c)
            elif codec == "none":
                cand = (Stream(name, codec, len(raw), len(raw)), raw)
            else:
                raise InputError(f"unknown delta codec {codec!r}", hint=f"one of {CODECS}")
            cands[codec] = cand
        if not cands:
            raise InputError("no delta codec given", hint=f"one of {CODECS}")
        parts.append(cands[pick_codec({c: v[0].size for c, v in cands.items()})])
    body = b"".join(c for _s, c in parts)
    header = {"format": FORMAT, "target": {"sha256": target_sha256, "size": target_size},
              "bases": [b.__dict__ for b in bases],
              "streams": [{k: v for k, v in s.__dict__.items() if k != "dict_size" or v}
                          for s, _c in parts],
              "body_sha256": hashlib.sha256(body).hexdigest()}
    import zlib

    hb = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    info = {s.name: {"codec": s.codec, "bytes": s.size, "raw": s.raw} for s, _c in parts}
    return MAGIC + struct.pack("<I", len(hb)) + hb + body, info


# -- reading --------------------------------------------------------------------------------

def read_header(data: bytes, what: str = "delta") -> Header:
    """Parse and check a patch's header and body hash (DeltaRefused if damaged)."""
    if len(data) < 12 or data[:8] != MAGIC:
        raise DeltaRefused(f"{what}: not an edgedeploy delta (no {MAGIC!r} magic)",
                           hint="send the full file")
    (hlen,) = struct.unpack_from("<I", data, 8)
    if hlen > MAX_HEADER or 12 + hlen > len(data):
        raise DeltaRefused(f"{what}: damaged header (length {hlen})", hint="send the full file")
    import zlib

    try:
        z = zlib.decompressobj()
        raw = z.decompress(data[12:12 + hlen], MAX_HEADER)
        if not z.eof:
            raise ValueError("the header's zlib stream is cut or too long")
        h = json.loads(raw)
        if h.get("format") != FORMAT:
            raise DeltaRefused(f"{what}: delta format {h.get('format')!r}, this agent applies "
                               f"format {FORMAT}", hint="send the full file")
        bases = [BaseRef(str(b["name"]), str(b["version"]), str(b["sha256"]), int(b["size"]))
                 for b in h["bases"]]
        streams = [Stream(str(s["name"]), str(s["codec"]), int(s["size"]), int(s["raw"]),
                          int(s.get("dict_size", 0))) for s in h["streams"]]
        target_sha, target_size = str(h["target"]["sha256"]), int(h["target"]["size"])
        body_sha = str(h["body_sha256"])
    except (ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
        raise DeltaRefused(f"{what}: damaged header ({type(exc).__name__}: {exc})",
                           hint="send the full file") from exc
    if not 0 < len(bases) <= MAX_BASES or not 0 < target_size <= MAX_TARGET \
            or sorted(s.name for s in streams) != sorted(STREAMS) \
            or any(s.codec not in CODECS or s.size < 0 or s.raw < 0 for s in streams):
        raise DeltaRefused(f"{what}: header out of range", hint="send the full file")
    body_offset = 12 + hlen
    if sum(s.size for s in streams) != len(data) - body_offset:
        raise DeltaRefused(f"{what}: {len(data) - body_offset} body bytes, the header lists "
                           f"{sum(s.size for s in streams)}: truncated or damaged",
                           hint="send it again or the full file")
    if hashlib.sha256(memoryview(data)[body_offset:]).hexdigest() != body_sha:
        raise DeltaRefused(f"{what}: damaged in transit (its body's sha256 differs from its "
                           f"header's)", hint="send it again or the full file")
    return Header(target_sha, target_size, bases, streams, body_sha, body_offset)


def decompress(data: bytes, s: Stream, limit: int, what: str) -> bytes:
    if s.raw > limit:
        raise DeltaRefused(f"{what}: stream {s.name} claims {s.raw} bytes (at most {limit})")
    import lzma
    import zlib

    try:
        if s.codec == "none":
            out = bytes(data)
        elif s.codec == "zlib":
            out = zlib.decompressobj().decompress(data, s.raw + 1)
        else:
            if not 1 << 12 <= s.dict_size <= 1 << 26:
                raise DeltaRefused(f"{what}: stream {s.name}: lzma dictionary {s.dict_size}")
            out = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[
                {"id": lzma.FILTER_LZMA2, "dict_size": s.dict_size}]).decompress(data, s.raw + 1)
    except (lzma.LZMAError, zlib.error, ValueError, EOFError) as exc:
        raise DeltaRefused(f"{what}: stream {s.name} does not decompress ({exc})") from exc
    if len(out) != s.raw:
        raise DeltaRefused(f"{what}: stream {s.name} decompresses to {len(out)} bytes, the "
                           f"header says {s.raw}")
    return out


class Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.d, self.p, self.what = data, 0, what

    def varint(self) -> int:
        v = shift = 0
        while True:
            if self.p >= len(self.d) or shift > 63:
                raise DeltaRefused(f"{self.what}: op stream ends inside an op")
            b = self.d[self.p]
            self.p += 1
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7
