"""The delta wire format and the builder's pure parts: every op on hand-made patches, refusals
of damaged ones, the merge rules and "delta or full" as tables. No TensorFlow, no model: the
device tests rebuild real models in the board envs."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from edgedeploy.device import delta as applier
from edgedeploy.device import delta_format as wire
from edgedeploy.errors import DeltaRefused
from edgedeploy.host import delta as hd
from edgedeploy.host import delta_tables as tables

BASE = bytes(range(256)) * 8  # 2048 bytes


def patch_for(target: bytes, ops: bytes, lit: bytes = b"", add: bytes = b"",
              bases: list[bytes] | None = None, codecs=wire.CODECS) -> bytes:
    refs = [wire.BaseRef("m", f"v{i}", hashlib.sha256(b).hexdigest(), len(b))
            for i, b in enumerate(bases or [BASE])]
    data, _ = wire.encode(hashlib.sha256(target).hexdigest(), len(target), refs,
                          {"ops": ops, "lit": lit, "add": add}, codecs)
    return data


def run(tmp_path, patch: bytes, bases: list[bytes] | None = None, expected=None):
    bases = bases or [BASE]
    paths = []
    for i, b in enumerate(bases):
        p = tmp_path / f"base{i}.tflite"
        p.write_bytes(b)
        paths.append(p)
    (tmp_path / "p.delta").write_bytes(patch)
    out = tmp_path / "out.tflite"
    by_version = {f"v{i}": p for i, p in enumerate(paths)}
    got = applier.apply(tmp_path / "p.delta", lambda ref: by_version.get(ref.version), out, expected)
    return got, out.read_bytes()


def zz(r: int) -> int:
    return (r << 1) if r >= 0 else ((-r << 1) - 1)


# -- helpers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 1000, 4097])
def test_add_bytes_is_bytewise_mod_256(n):
    a, b = os.urandom(n), os.urandom(n)
    want = (np.frombuffer(a, np.uint8) + np.frombuffer(b, np.uint8)).astype(np.uint8).tobytes()
    assert wire.add_bytes(a, b) == want


@pytest.mark.parametrize("planes", [1, 2, 4])
def test_shuffle_is_byte_planes_and_unshuffle_inverts_it(planes):
    data = os.urandom(64 * planes)
    planar = np.frombuffer(data, np.uint8).reshape(-1, planes).T.tobytes()
    assert wire.shuffle(data, planes) == planar
    assert wire.unshuffle(planar, planes) == data


def test_varints_round_trip():
    values = [0, 1, 127, 128, 300, 2**32 - 1, 2**40 + 5]
    r = wire.Reader(wire.varints(*values), "t")
    assert [r.varint() for _ in values] == values


# -- every op, applied -------------------------------------------------------------------------

def test_copy_lit_add_litp_scale_rebuild_the_target(tmp_path):
    lit = b"hello, board"
    add_src = BASE[100:116]
    diff = bytes([1]) * 16
    scale_old = np.arange(-8, 8, dtype=np.int8).tobytes()  # 16 int8 values, 2 channels
    base = BASE[:512] + scale_old + BASE[528:]
    m = np.array([2.0, 0.5], "<f4")
    pred = wire.scaled_prediction(scale_old, 1, m.tobytes(), 8)
    want_scaled = (np.arange(16) * 3 % 251).astype(np.uint8)          # any bytes at all
    resid = ((want_scaled.astype(np.int64) - pred) & 0xFF).astype("<u1").tobytes()
    floats = np.linspace(0, 1, 8, dtype="<f4").tobytes()
    target = (base[0:64] + lit + wire.add_bytes(add_src, diff) + floats
              + want_scaled.tobytes())
    ops = (wire.varints(wire.OP_COPY, 0, zz(0), 64)
           + wire.varints(wire.OP_LIT, len(lit))
           + wire.varints(wire.OP_ADD, 0, zz(100 - 64), 16, 1)
           + wire.varints(wire.OP_LIT_SHUFFLED, len(floats), 4)
           + wire.varints(wire.OP_SCALE, 0, zz(512 - 116), 16, 1, 2, 8))
    patch = patch_for(target, ops, lit + wire.shuffle(floats, 4),
                      diff + m.tobytes() + resid, [base])
    got, out = run(tmp_path, patch, [base])
    assert out == target
    assert got.sha256 == hashlib.sha256(target).hexdigest() and got.size == len(target)


def test_two_bases_and_backward_offsets(tmp_path):
    other = os.urandom(300)
    target = BASE[1000:1100] + other[200:300] + BASE[10:20] + other[0:50]
    ops = (wire.varints(wire.OP_COPY, 0, zz(1000), 100) + wire.varints(wire.OP_COPY, 1, zz(200), 100)
           + wire.varints(wire.OP_COPY, 0, zz(10 - 1100), 10)
           + wire.varints(wire.OP_COPY, 1, zz(0 - 300), 50))
    _, out = run(tmp_path, patch_for(target, ops, bases=[BASE, other]), [BASE, other])
    assert out == target


@pytest.mark.parametrize("sizes, want", [
    ({"lzma": 100, "zlib": 120, "none": 300}, "lzma"),
    ({"lzma": 1000, "zlib": 1010, "none": 3000}, "zlib"),   # within 1 %: decodes faster
    ({"lzma": 1000, "zlib": 1011, "none": 1005}, "none"),
    ({"lzma": 757363, "zlib": 758084, "none": 784750}, "zlib"),  # int8 full retrain's literals
    ({"lzma": 0, "zlib": 8, "none": 0}, "none"),
    ({"lzma": 50}, "lzma"),
])
def test_pick_codec(sizes, want):
    assert wire.pick_codec(sizes) == want


@pytest.mark.parametrize("codec", ["lzma", "zlib", "none"])
def test_each_codec(tmp_path, codec):
    target = b"x" * 5000
    patch = patch_for(target, wire.varints(wire.OP_LIT, 5000), b"x" * 5000, codecs=[codec])
    assert run(tmp_path, patch)[1] == target


# -- refusals: DeltaRefused, and no output left behind ---------------------------------------

def good_patch() -> tuple[bytes, bytes]:
    target = BASE[:100] + b"new bytes"
    return target, patch_for(target, wire.varints(wire.OP_COPY, 0, 0, 100)
                             + wire.varints(wire.OP_LIT, 9), b"new bytes")


def corrupt(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:]


@pytest.mark.parametrize("damage,message", [
    (lambda p: b"XXDELTA1" + p[8:], "magic"),
    (lambda p: p[:20], "header"),
    (lambda p: corrupt(p, len(p) - 3), "damaged in transit"),
    (lambda p: p[:-1], "truncated or damaged"),
    (lambda p: p + b"\0", "truncated or damaged"),
    (lambda p: p[:8] + (2**20).to_bytes(4, "little") + p[12:], "header"),
])
def test_damaged_patch_is_refused(tmp_path, damage, message):
    _, patch = good_patch()
    with pytest.raises(DeltaRefused, match=message):
        run(tmp_path, damage(patch))
    assert not (tmp_path / "out.tflite").exists()


def test_missing_base_is_refused(tmp_path):
    _, patch = good_patch()
    (tmp_path / "p.delta").write_bytes(patch)
    with pytest.raises(DeltaRefused, match="does not hold"):
        applier.apply(tmp_path / "p.delta", lambda ref: None, tmp_path / "out.tflite")
    assert not (tmp_path / "out.tflite").exists()


def test_base_of_another_size_is_refused(tmp_path):
    _, patch = good_patch()
    with pytest.raises(DeltaRefused, match="bytes, the delta expects"):
        run(tmp_path, patch, [BASE + b"x"])


def test_result_whose_sha256_differs_is_refused(tmp_path):
    _, patch = good_patch()
    damaged = bytearray(BASE)
    damaged[5] ^= 1  # same size, other content: a base damaged on the board
    with pytest.raises(DeltaRefused, match="rebuilt file's sha256"):
        run(tmp_path, patch, [bytes(damaged)])
    assert not (tmp_path / "out.tflite").exists()


def test_manifest_sha256_other_than_the_patch_target_is_refused(tmp_path):
    _, patch = good_patch()
    with pytest.raises(DeltaRefused, match="the manifest names"):
        run(tmp_path, patch, expected="0" * 64)
    assert not (tmp_path / "out.tflite").exists()


@pytest.mark.parametrize("ops,lit,add", [
    (wire.varints(wire.OP_COPY, 0, 0, 5000), b"", b""),                 # past the base's end
    (wire.varints(wire.OP_COPY, 3, 0, 10), b"", b""),                   # no base 3
    (wire.varints(wire.OP_COPY, 0, 0, 50), b"", b""),                   # short of the target
    (wire.varints(wire.OP_COPY, 0, 0, 109, wire.OP_LIT, 1), b"x", b""),  # past the target
    (wire.varints(wire.OP_LIT, 109), b"y" * 100, b""),                  # literal runs out
    (wire.varints(wire.OP_COPY, 0, 0, 109), b"spare", b""),              # literal left over
    (wire.varints(9, 1, 2), b"", b""),                                  # unknown op
    (wire.varints(wire.OP_LIT_SHUFFLED, 109, 3), b"z" * 109, b""),      # bad planes
    (bytes([0x80]), b"", b""),                                          # cut inside a varint
    (wire.varints(wire.OP_SCALE, 0, 0, 108, 1, 5, 1) + wire.varints(wire.OP_LIT, 1),
     b"q", bytes(20) + bytes(108)),                                     # 108 % 5 channels
    (wire.varints(wire.OP_SCALE, 0, 0, 109, 1, 1, 109), b"",
     np.array([np.nan], "<f4").tobytes() + bytes(109)),                 # NaN multiplier
])
def test_ops_out_of_range_are_refused(tmp_path, ops, lit, add):
    target = BASE[:109]
    with pytest.raises(DeltaRefused):
        run(tmp_path, patch_for(target, ops, lit, add))
    assert not (tmp_path / "out.tflite").exists()


def test_a_stream_claiming_more_than_the_target_is_refused(tmp_path):
    # a decompression bomb: 1 MB of literal bytes for a 109-byte target
    target = BASE[:109]
    with pytest.raises(DeltaRefused, match="claims"):
        run(tmp_path, patch_for(target, wire.varints(wire.OP_LIT, 109), bytes(1 << 20)))


# -- the builder's pure parts ------------------------------------------------------------------

def seg(kind, length, base=-1, offset=0, payload=b"", planes=1):
    return tables.Seg(kind, length, base, offset, payload, planes)


def test_merge_joins_runs_in_step_and_turns_a_changed_value_into_an_add():
    segs = [seg("copy", 1100, 0, 0), seg("lit", 4, payload=b"\1\2\3\4"),
            seg("copy", 500, 0, 1104), seg("copy", 100, 0, 1604)]
    out = tables.merge(segs, [BASE])
    assert [(s.kind, s.offset, s.length) for s in out] == [("copy", 0, 1100), ("add", 1100, 604)]
    add = out[1]
    assert wire.add_bytes(BASE[1100:1704], add.payload) == b"\1\2\3\4" + BASE[1104:1704]


@pytest.mark.parametrize("segs,kinds", [
    # runs that continue each other: one op
    ([seg("copy", 10, 0, 0), seg("copy", 10, 0, 10)], ["copy"]),
    # not in step (a gap in the base): two ops
    ([seg("copy", 10, 0, 0), seg("copy", 10, 0, 11)], ["copy", "copy"]),
    # another base: two ops
    ([seg("copy", 10, 0, 0), seg("copy", 10, 1, 10)], ["copy", "copy"]),
    # a literal too long to be a changed value stays a literal
    ([seg("copy", 10, 0, 0), seg("lit", 65, payload=bytes(65)), seg("copy", 10, 0, 75)],
     ["copy", "lit", "copy"]),
    # a literal whose neighbours are not in step stays a literal
    ([seg("copy", 10, 0, 0), seg("lit", 4, payload=bytes(4)), seg("copy", 10, 0, 20)],
     ["copy", "lit", "copy"]),
    # a shuffled literal stays a literal
    ([seg("copy", 10, 0, 0), seg("lit", 4, payload=bytes(4), planes=4), seg("copy", 10, 0, 14)],
     ["copy", "lit", "copy"]),
    # a SCALE op is never merged
    ([seg("copy", 10, 0, 0), tables.Seg("scale", 16, 0, 10, bytes(20), 1, (1, 1, 16)),
      seg("copy", 10, 0, 26)], ["copy", "scale", "copy"]),
])
def test_merge_rules(segs, kinds):
    assert [s.kind for s in tables.merge(segs, [BASE, BASE])] == kinds


def delta_of(size: int) -> hd.Delta:
    return hd.Delta(b"d" * size, "0" * 64, 1000, [], hd.DeltaStats(1000, size))


@pytest.mark.parametrize("full,delta,kind,sent", [
    (1000, None, "full", 1000),
    (1000, delta_of(1000), "full", 1000),   # not smaller: full
    (1000, delta_of(1500), "full", 1000),
    (1000, delta_of(999), "delta", 999),
    (1000, delta_of(10), "delta", 10),
])
def test_plan_transfer(full, delta, kind, sent):
    plan = hd.plan_transfer(full, delta)
    assert (plan.kind, plan.bytes, plan.full_bytes) == (kind, sent, full)


def test_build_refuses_what_is_not_a_tflite():
    from edgedeploy.errors import InputError

    with pytest.raises(InputError, match="not a sound TFLite"):
        hd.build_delta(b"not a model at all", [hd.Base("m", "v1", b"neither")])
    with pytest.raises(InputError, match="at least one base"):
        hd.build_delta(b"x", [])


def test_fscale_rebuilds_float32_scaled_by_one_factor(tmp_path):
    old = np.linspace(1e-4, 3e-3, 64, dtype="<f4")
    new = (old.astype(np.float64) * 0.8125).astype("<f4")
    new[5] = np.float32(1.5)                                    # one value off the factor
    m = np.array([0.8125], "<f4")
    pred = wire.scaled_prediction(old.tobytes(), 0, m.tobytes(), 64)
    resid = ((np.frombuffer(new.tobytes(), "<u4").astype(np.int64) - pred) & 0xFFFFFFFF
             ).astype("<u4").tobytes()
    assert resid.count(0) >= len(resid) - 4                    # all but one value predicted
    base = old.tobytes() + BASE[:100]
    ops = wire.varints(wire.OP_FSCALE, 0, 0, 256, 1, 64)
    _, out = run(tmp_path, patch_for(new.tobytes(), ops, add=m.tobytes() + wire.shuffle(resid, 4),
                                     bases=[base]), [base])
    assert out == new.tobytes()
