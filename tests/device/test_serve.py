"""`edgedeploy-agent serve` in both board envs: several concurrent clients keep getting answers
while a new version is activated (0 failed requests); a broken new version is refused at
install, and one put in the store behind the agent's back — a model that crashes the runtime —
is probed out of process before the swap: the old one keeps serving, the reason in `health`."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgedeploy.device.client import Client
from edgedeploy.device.manifest import Manifest
from edgedeploy.errors import InputError, NotFound

from .conftest import bundle_dir
from .test_agent import _bundle_for_bytes

pytestmark = pytest.mark.board
CRASHER = Path(__file__).resolve().parent.parent / "fixtures" / "crash-on-load.tflite"


class Served:
    def __init__(self, agent, *args):
        self.proc = subprocess.Popen(
            [agent.python, str(agent.pyz), "--store", str(agent.store), "serve", *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"PATH": "/usr/bin:/bin"})
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        self.ready = json.loads(line)
        assert self.ready["kind"] == "serving", self.ready

    def stop(self) -> dict:
        self.proc.terminate()
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def served(agent, models, tmp_path):
    b32 = bundle_dir(models["float32"], tmp_path / "b32")
    agent("install", b32, "--activate")
    s = Served(agent, "--socket", tmp_path / "ed.sock", "--poll", 0.05)
    yield s
    if s.proc.poll() is None:
        s.stop()


def _wait_for(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_hot_swap_under_concurrent_load(agent, models, served, tmp_path):
    sock = served.ready["socket"]
    x = np.load(models["test"])["x"].astype(np.float32)
    y = np.load(models["test"])["y"]
    v_old = served.ready["models"]["digits"]["version"]
    b8 = bundle_dir(models["int8"], tmp_path / "b8")
    v_new = Manifest.load(next(b8.glob("*.manifest.json"))).version
    stop = threading.Event()
    seen: list[tuple[str, bool]] = []
    failures: list[str] = []

    def client_loop(k: int) -> None:
        with Client(socket=sock) as c:
            i = k
            while not stop.is_set() and i < 100_000:  # bounded
                try:
                    p = c.predict("digits", x[i % len(x)][None])
                    seen.append((p.version, int(p.outputs[0].argmax()) == int(y[i % len(x)])))
                except Exception as exc:  # any failure at all counts
                    failures.append(f"{type(exc).__name__}: {exc}")
                i += 4

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    assert _wait_for(lambda: len(seen) > 200)
    agent("install", b8, "--activate")  # the switch, mid-traffic
    assert _wait_for(lambda: any(v == v_new for v, _ in seen[-50:]))
    n_at_swap = len(seen)
    assert _wait_for(lambda: len(seen) > n_at_swap + 200)

    # a broken new version (hashes match): refused at install, nothing changes
    like = Manifest.load(next(b8.glob("*.manifest.json")))
    bad, m_bad = _bundle_for_bytes(tmp_path, "broken", b"\0" * 4096, like)
    err = agent("install", bad, "--activate", ok=False)
    assert err["code"] == "model_load_failed" and "not a valid model" in err["message"]
    # a model that kills the runtime, activated behind the agent's back (a store with no
    # probe): serve probes it in a child process before the swap and keeps the old one
    crash, m_crash = _bundle_for_bytes(tmp_path, "crash", CRASHER.read_bytes(), like)
    from edgedeploy.device.store import Store
    st = Store(agent.store)
    with st.locked():
        st.install(crash)
        st.activate("digits", m_crash.version)
    with Client(socket=sock) as c:
        assert _wait_for(lambda: c.health()["models"]["digits"]["last_error"] is not None)
        h = c.health()["models"]["digits"]
        assert h["version"] == v_new and m_crash.version in h["last_error"]
        assert "still serving" in h["last_error"]
        assert "the runtime crashed loading it: signal 11 (SIGSEGV)" in h["last_error"]
    n_after_bad = len(seen)
    assert _wait_for(lambda: len(seen) > n_after_bad + 200)
    stop.set()
    for t in threads:
        t.join(timeout=30)

    assert failures == []
    versions = [v for v, _ in seen]
    assert set(versions) == {v_old, v_new}
    assert versions[n_after_bad:].count(v_new) == len(versions[n_after_bad:])
    assert np.mean([ok for _, ok in seen]) > 0.95  # real predictions, both versions
    with Client(socket=sock) as c:
        m = c.metrics()
        assert m["errors"] == 0 and m["requests"] >= len(seen)
        assert m["latency_ms"]["p50"] > 0 and m["models"]["digits"]["swaps"] == 1
    assert served.stop()["kind"] == "serve"


def test_errors_and_tcp(agent, models, tmp_path):
    agent("install", bundle_dir(models["int8"], tmp_path / "b8"), "--activate")
    s = Served(agent, "--port", 0)
    try:
        assert s.ready["host"] == "127.0.0.1" and s.ready["port"] > 0
        with Client(port=s.ready["port"]) as c:
            with pytest.raises(NotFound, match="nosuch"):
                c.predict("nosuch", np.zeros((1, 32, 32, 1), np.float32))
            with pytest.raises(InputError, match=r"shape \[1, 32, 32, 1\]"):
                c.predict("digits", np.zeros((1, 28, 28, 1), np.float32))
            with pytest.raises(InputError, match="uint8"):
                c.predict("digits", np.zeros((1, 32, 32, 1), np.int32))
            p = c.predict("digits", np.zeros((1, 32, 32, 1), np.uint8))
            assert p.outputs[0].shape == (1, 10) and p.outputs[0].dtype == np.float32
            assert c.metrics()["errors"] == 3
    finally:
        s.stop()


def test_shared_memory_binary_frames_and_base64_give_the_same_answers(served, models):
    """The three ways a tensor travels: shared memory (inputs and, from the second call on,
    outputs), binary frames, base64 JSON — same bytes out for the same sample."""
    from edgedeploy.device import tensors

    sock = served.ready["socket"]
    x = np.load(models["test"])["x"][:20].astype(np.float32)
    with Client(socket=sock, shm=True) as a, Client(socket=sock, shm=False) as b:
        for i in range(len(x)):
            pa, pb = a.predict("digits", x[i:i + 1]), b.predict("digits", x[i:i + 1])
            np.testing.assert_array_equal(pa.outputs[0], pb.outputs[0])
            j = b.call({"op": "predict", "model": "digits",
                        "inputs": [tensors.encode_b64(x[i:i + 1])]})
            np.testing.assert_array_equal(tensors.decode_b64(j["outputs"][0]), pb.outputs[0])
        assert a._region is not None and b._region is None
        # the answers really came through the region: ask for outputs there explicitly
        r = a._region
        head = r.write(0, x[:1])
        reply = a.call({"op": "predict", "model": "digits", "inputs": [head],
                        "output_shm": {"region": r.name, "offset": 4096, "nbytes": 4096}})
        (o,) = reply["outputs"]
        assert o["shm"] == r.name and o["offset"] == 4096 and o["nbytes"] == 40
        np.testing.assert_array_equal(r.read(o), a.predict("digits", x[:1]).outputs[0])


def test_zero_copy_arrays_are_read_where_the_app_wrote_them(served, models):
    """Client.shared_like: the app fills an array that lives in shared memory and predict
    sends only a header. Answers match the frames path for every sample written in place; the
    client made no copy region (nothing was copied); plain arrays and shared ones alternate on
    one model and the shared one goes back to zero copy; the client's limit on shared arrays,
    release, and a dtype that can't travel (refused before a region is made); a client
    without shared memory (TCP, or shm=False) is refused."""
    from edgedeploy.device.client import MAX_SHARED, SHARED

    sock = served.ready["socket"]
    x = np.load(models["test"])["x"][:12].astype(np.float32)
    with Client(socket=sock) as c, Client(socket=sock, shm=False) as ref:
        xs = c.shared_like(x[:1])
        assert xs.shape == x[:1].shape and xs.dtype == np.float32
        np.testing.assert_array_equal(xs, x[:1])
        for i in range(len(x)):
            xs[...] = x[i:i + 1]                       # written in place, then predicted
            got = c.predict("digits", xs).outputs[0]
            np.testing.assert_array_equal(got, ref.predict("digits", x[i:i + 1]).outputs[0])
        assert c._plans["digits"].where == [SHARED]
        assert c._region is None                       # no copy region: nothing was copied
        plain = c.predict("digits", x[3:4]).outputs[0]  # a plain array on the same model
        np.testing.assert_array_equal(plain, ref.predict("digits", x[3:4]).outputs[0])
        xs[...] = x[5:6]
        np.testing.assert_array_equal(c.predict("digits", xs).outputs[0],
                                      ref.predict("digits", x[5:6]).outputs[0])
        # shared → plain → shared: the shared array goes back to sending only its header
        c.predict("digits", x[:1])
        c.predict("digits", xs)
        assert c._plans["digits"].where == [SHARED]
        # the client's limit (the server's regions, less one kept for copies); release
        more = []
        with pytest.raises(InputError, match=f"at most {MAX_SHARED} shared arrays"):
            for _ in range(MAX_SHARED):
                more.append(c.shared_like(x[:1]))
        assert len(more) == MAX_SHARED - 1             # + the first one
        c.release(more.pop())
        more.append(c.shared_like(x[:1]))
        with pytest.raises(InputError, match="not an array this client"):
            c.release(x[:1])
        # a dtype that can't travel is refused before any region is made
        with pytest.raises(InputError, match="can't travel"):
            c.shared_like(np.array(["a"], dtype=object))
        assert len(c._shared_regions) == MAX_SHARED
        np.testing.assert_array_equal(c.predict("digits", xs).outputs[0],
                                      ref.predict("digits", x[5:6]).outputs[0])
    with Client(socket=sock, shm=False) as no_shm, pytest.raises(InputError):
        no_shm.shared_like(x[:1])


def test_prepared_requests_answer_each_id_and_forget_a_gone_region(served, models):
    """A predict line seen once runs again without being parsed (serve.py's prepared
    requests): each id is answered with its own id and the right outputs, a line with an id
    JSON would refuse (a leading zero) is refused, once the region is unregistered the same
    line gets a clear error instead of reading unmapped memory; with binary frames, every
    sample's answer matches base64's (the hot swap under load covers a prepared frames line
    meeting a new model slot)."""
    sock = served.ready["socket"]
    x = np.load(models["test"])["x"][:3].astype(np.float32)
    with Client(socket=sock) as c, Client(socket=sock, shm=False) as ref:
        xs = c.shared_like(x[:1])
        want = ref.predict("digits", x[:1]).outputs[0]
        c.predict("digits", xs)
        c.predict("digits", xs)                        # laid out for its outputs, validated
        head = c._plans["digits"].head
        for rid in (41, 0, 10 ** 17):
            reply = c._roundtrip([head + str(rid).encode() + b"}\n"], "")
            assert reply["id"] == rid and reply["model"] == "digits"
            got = np.empty(reply["outputs"][0]["shape"], np.float32)
            c._conn.read_into(got.data.cast("B"))
            np.testing.assert_array_equal(got, want)
        with pytest.raises(InputError, match="not a JSON object"):
            c._roundtrip([head + b"041}\n"], "")
        xs[...] = x[2:3]                               # the prepared line reads the new bytes
        np.testing.assert_array_equal(c.predict("digits", xs).outputs[0],
                                      ref.predict("digits", x[2:3]).outputs[0])
        region = c._plans["digits"].sig[0]
        name = c._shared[id(region)][1]["shm"]
        c.call({"op": "shm_unregister", "region": name})
        with pytest.raises(InputError, match=f"no shared-memory region '{name}'"):
            c._roundtrip([head + b"42}\n"], "")
        assert c.health()["ok"]                        # the connection keeps answering
    # frames: the line is the same for every sample, the bytes after it differ
    from edgedeploy.device import tensors
    x = np.load(models["test"])["x"][:8].astype(np.float32)
    with Client(socket=sock, shm=False) as f:
        for i in range(len(x)):
            got = f.predict("digits", x[i:i + 1]).outputs[0]
            j = f.call({"op": "predict", "model": "digits",
                        "inputs": [tensors.encode_b64(x[i:i + 1])]})
            np.testing.assert_array_equal(got, tensors.decode_b64(j["outputs"][0]))


def test_server_region_limits_and_an_interrupted_call(served, models):
    """The server's shared-memory budget per connection: 16 regions, 16 GiB together (sparse
    memfds: nothing is allocated); refused registers leave the connection answering. A call
    cut off between its request and its answer makes the next predict fail loudly (the
    answers are out of step) instead of returning the previous request's outputs."""
    from edgedeploy.device import shm
    from edgedeploy.errors import EnvironmentProblem

    sock = served.ready["socket"]
    x = np.load(models["test"])["x"][:2].astype(np.float32)
    with Client(socket=sock) as c:
        regions = []

        def register(name, size):
            r = shm.ClientRegion(name, size)
            regions.append(r)
            c.call({"op": "shm_register", "region": r.name, "size": r.size}, fds=[r.fd])

        try:
            for i in range(4):                         # 4 × 4 GiB: the whole byte budget
                register(f"big{i}", shm.MAX_SIZE)
            with pytest.raises(InputError, match="bytes of regions per connection"):
                register("one-more", 4096)
            for i in range(4):
                c.call({"op": "shm_unregister", "region": f"big{i}"})
            for i in range(shm.MAX_REGIONS):
                register(f"small{i}", 4096)
            with pytest.raises(InputError, match="at most 16 regions per connection"):
                register("seventeenth", 4096)
            assert c.predict("digits", x[:1]).outputs[0].shape == (1, 10)
        finally:
            for r in regions:
                r.close()
    with Client(socket=sock) as c:
        c.predict("digits", x[:1])
        c.predict("digits", x[:1])
        plan = c._plans["digits"]
        c._next_id += 1                                # a request whose answer nobody reads
        c._conn_send([plan.head + str(c._next_id).encode() + b"}\n", x[1:2].data.cast("B")])
        with pytest.raises(EnvironmentProblem, match="answered request"):
            c.predict("digits", x[:1])
    with Client(socket=sock) as c:                     # the unread answer is an error
        c.predict("digits", x[:1])
        c._next_id += 1
        c._conn_send([json.dumps({"op": "predict", "model": "nope", "id": c._next_id,
                                  "inputs": []}).encode() + b"\n"])
        with pytest.raises(EnvironmentProblem, match="answered request"):
            c.predict("digits", x[:1])
