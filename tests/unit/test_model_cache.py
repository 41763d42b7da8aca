"""The host's model cache (what deltas are built against): by content, pruned by use."""

from __future__ import annotations

import hashlib
import os
import time

from edgedeploy.host.model_cache import ModelCache


def put(cache: ModelCache, tmp_path, data: bytes) -> str:
    p = tmp_path / f"src-{hashlib.sha256(data).hexdigest()[:8]}.tflite"
    p.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    cache.put(p, sha)
    return sha


def test_put_then_get_by_content(tmp_path):
    cache = ModelCache(tmp_path / "cache")
    sha = put(cache, tmp_path, b"model one")
    assert cache.get(sha) == b"model one"
    assert cache.get("0" * 64) is None
    assert cache.get("not a hash") is None


def test_a_file_changed_in_the_cache_is_dropped_not_returned(tmp_path):
    cache = ModelCache(tmp_path / "cache")
    sha = put(cache, tmp_path, b"model one")
    path = tmp_path / "cache" / f"{sha}.tflite"
    os.unlink(path)
    path.write_bytes(b"something else")  # (a hard link's source edited in place does this)
    assert cache.get(sha) is None and not path.exists()


def test_prune_keeps_the_most_recently_used(tmp_path):
    cache = ModelCache(tmp_path / "cache", max_files=2, max_bytes=1 << 20)
    a = put(cache, tmp_path, b"a" * 10)
    time.sleep(0.02)
    b = put(cache, tmp_path, b"b" * 10)
    time.sleep(0.02)
    assert cache.get(a) is not None  # a used: b is now the oldest
    time.sleep(0.02)
    c = put(cache, tmp_path, b"c" * 10)
    assert cache.get(a) and cache.get(c) and cache.get(b) is None


def test_prune_by_bytes(tmp_path):
    cache = ModelCache(tmp_path / "cache", max_files=10, max_bytes=25)
    a = put(cache, tmp_path, b"a" * 10)
    time.sleep(0.02)
    b = put(cache, tmp_path, b"b" * 10)
    time.sleep(0.02)
    c = put(cache, tmp_path, b"c" * 10)
    assert cache.get(a) is None and cache.get(b) and cache.get(c)
