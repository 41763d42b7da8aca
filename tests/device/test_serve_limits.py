"""The serve endpoint under hostile or broken clients (issue 12, serve item), in both board envs:
one named test per threat. Each sends raw bytes on the real socket of a real `serve` process and
checks the answer, whether the connection is still usable (or closed cleanly), and the server's
peak memory (VmHWM from /proc)."""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest

from edgedeploy.device.client import Client

from .conftest import bundle_dir
from .test_serve import Served

pytestmark = pytest.mark.board

MiB = 1 << 20


@pytest.fixture
def digits_served(agent, models, tmp_path):
    agent("install", bundle_dir(models["float32"], tmp_path / "b32"), "--activate")
    s = Served(agent, "--socket", tmp_path / "ed.sock", "--max-connections", 3)
    yield s
    if s.proc.poll() is None:
        s.stop()


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    return s


def _answer(s: socket.socket) -> dict:
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"connection closed without an answer (got {buf[:200]!r})"
        buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def _works(path: str) -> None:
    with Client(socket=path) as c:
        p = c.predict("digits", np.zeros((1, 32, 32, 1), np.float32))
        assert p.outputs[0].shape == (1, 10)


def _send_in_background(s: socket.socket, total: int) -> threading.Thread:
    def pump() -> None:
        chunk = b"x" * MiB
        sent = 0
        try:
            while sent < total:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server hung up, as it should
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return t


def test_unterminated_200mb_line_is_refused_and_memory_stays_bounded(digits_served):
    path, pid = digits_served.ready["socket"], digits_served.proc.pid
    _works(path)
    before = _peak_rss(pid)
    s = _connect(path)
    pump = _send_in_background(s, 200 * MiB)
    reply = _answer(s)
    assert reply["ok"] is False and reply["code"] == "bad_input"
    assert "request line is at most" in reply["message"]
    assert _closed(s)
    pump.join(timeout=60)
    s.close()
    assert _peak_rss(pid) - before < 16 * MiB, (before, _peak_rss(pid))
    _works(path)


def test_binary_frames_declaring_4_gib_are_refused_before_reading(digits_served):
    path, pid = digits_served.ready["socket"], digits_served.proc.pid
    before = _peak_rss(pid)
    s = _connect(path)
    head = {"op": "predict", "model": "digits", "binary": True,
            "inputs": [{"dtype": "float32", "shape": [1, 32, 32, 1], "nbytes": 1 << 30}] * 4}
    s.sendall(json.dumps(head).encode() + b"\n")
    pump = _send_in_background(s, 64 * MiB)  # a client that goes on sending anyway
    reply = _answer(s)
    assert reply["ok"] is False and reply["code"] == "bad_input"
    assert "declares 4294967296 bytes" in reply["message"] and "closing" in reply["message"]
    assert _closed(s)
    pump.join(timeout=60)
    s.close()
    assert _peak_rss(pid) - before < 16 * MiB
    _works(path)


def test_binary_frame_larger_than_the_model_takes_is_refused(digits_served):
    """Under 1 GiB but more than the model's inputs can hold (32x32x1 floats: 8 KiB at 8 B per
    element): refused at once, nothing read."""
    s = _connect(digits_served.ready["socket"])
    s.sendall(json.dumps({"op": "predict", "model": "digits", "binary": True, "inputs": [
        {"dtype": "float32", "shape": [1, 32, 32, 1], "nbytes": 10 * MiB}]}).encode() + b"\n")
    reply = _answer(s)
    assert reply["ok"] is False and "(8192 at most)" in reply["message"]
    assert _closed(s)


def test_infinite_shape_gets_an_answer_and_the_connection_stays_usable(digits_served):
    s = _connect(digits_served.ready["socket"])
    s.sendall(b'{"op": "predict", "model": "digits", "id": 3, "inputs": [{"dtype": "float32", '
              b'"shape": [Infinity], "data": ""}]}\n')
    reply = _answer(s)
    assert reply["ok"] is False and reply["code"] == "bad_input"
    assert "Infinity" in reply["message"]
    s.sendall(b'{"op": "health"}\n')
    assert _answer(s)["kind"] == "health"
    s.close()


MALFORMED = {
    "not json": b"hello",
    "bad utf-8": b'{"op": "\xff\xfe"}',
    "a list": b"[1, 2]",
    "nesting 50k deep": b"[" * 50_000,
    "NaN id": b'{"op": "health", "id": NaN}',
    "unknown op": b'{"op": "format-disk"}',
    "shape of floats": b'{"op": "predict", "model": "digits", "inputs": [{"dtype": "float32", '
                       b'"shape": [1.5], "data": ""}]}',
    "shape of bools": b'{"op": "predict", "model": "digits", "inputs": [{"dtype": "float32", '
                      b'"shape": [true], "data": ""}]}',
    "negative dim": b'{"op": "predict", "model": "digits", "inputs": [{"dtype": "float32", '
                    b'"shape": [-1], "data": ""}]}',
    "2**70 dim": b'{"op": "predict", "model": "digits", "inputs": [{"dtype": "float32", '
                 b'"shape": [1180591620717411303424], "data": ""}]}',
    "object dtype": b'{"op": "predict", "model": "digits", "inputs": [{"dtype": "O", '
                    b'"shape": [1], "data": "AAAAAAAAAAA="}]}',
    "dtype not a string": b'{"op": "predict", "model": "digits", "inputs": [{"dtype": 5, '
                          b'"shape": [1], "data": ""}]}',
    "inputs not a list": b'{"op": "predict", "model": "digits", "inputs": 7}',
    "data not base64": b'{"op": "predict", "model": "digits", "inputs": [{"dtype": "float32", '
                       b'"shape": [1, 32, 32, 1], "data": "***"}]}',
    "model not a string": b'{"op": "predict", "model": ["digits"], "inputs": []}',
    "shm region unknown": b'{"op": "predict", "model": "digits", "binary": true, "inputs": '
                          b'[{"dtype": "float32", "shape": [1, 32, 32, 1], "shm": "r9", '
                          b'"nbytes": 4096}]}',
    "shm_register without a descriptor": b'{"op": "shm_register", "region": "r", "size": 64}',
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_gets_an_error_answer_and_the_connection_stays_usable(
        digits_served, case):
    s = _connect(digits_served.ready["socket"])
    s.sendall(MALFORMED[case] + b"\n")
    reply = _answer(s)
    assert reply["ok"] is False and reply["code"] in ("bad_input", "not_found"), reply
    s.sendall(b'{"op": "health"}\n')
    assert _answer(s)["kind"] == "health"
    s.close()


def test_binary_frame_with_a_bad_header_is_drained_and_the_stream_stays_in_step(digits_served):
    s = _connect(digits_served.ready["socket"])
    x = np.zeros((1, 16, 16, 4), np.float32)   # 4 KiB, wrong shape for the model
    s.sendall(json.dumps({"op": "predict", "model": "digits", "binary": True, "inputs": [
        {"dtype": "float32", "shape": [1, 16, 16, 4], "nbytes": x.nbytes}]}).encode() + b"\n"
        + x.tobytes())
    reply = _answer(s)
    assert reply["ok"] is False and "shape [1, 32, 32, 1]" in reply["message"]
    s.sendall(b'{"op": "health"}\n')
    assert _answer(s)["kind"] == "health"


def test_binary_frame_without_nbytes_is_answered_then_closed(digits_served):
    s = _connect(digits_served.ready["socket"])
    s.sendall(b'{"op": "predict", "model": "digits", "binary": true, "inputs": '
              b'[{"dtype": "float32", "shape": [1, 32, 32, 1]}]}\n')
    reply = _answer(s)
    assert reply["ok"] is False and "nbytes" in reply["message"]
    assert _closed(s)


def test_unsealed_shared_memory_is_refused(digits_served):
    """A memfd the client could shrink under the server's mapping (SIGBUS) is refused."""
    import array
    import os

    s = _connect(digits_served.ready["socket"])
    fd = os.memfd_create("unsealed", os.MFD_CLOEXEC)
    os.ftruncate(fd, 1 * MiB)
    s.sendmsg([b'{"op": "shm_register", "region": "r0", "size": 1048576}\n'],
              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    os.close(fd)
    reply = _answer(s)
    assert reply["ok"] is False and "not sealed against shrinking" in reply["message"]
    s.sendall(b'{"op": "health"}\n')
    assert _answer(s)["kind"] == "health"


def test_shared_memory_slice_outside_the_region_is_refused(digits_served):
    with Client(socket=digits_served.ready["socket"], shm=True) as c:
        x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
        ref = c.predict("digits", x).outputs[0]    # registers a 1 MiB region
        region = c._region
        with pytest.raises(Exception, match="outside region"):
            c.call({"op": "predict", "model": "digits", "binary": True, "inputs": [
                {"dtype": "float32", "shape": [1, 32, 32, 1], "shm": region.name,
                 "offset": region.size - 100, "nbytes": 4096}]})
        np.testing.assert_array_equal(c.predict("digits", x).outputs[0], ref)


def test_clients_past_max_connections_are_told_busy(digits_served):
    path = digits_served.ready["socket"]
    held = [_connect(path) for _ in range(3)]
    for h in held:
        h.sendall(b'{"op": "health"}\n')
        assert _answer(h)["ok"]
    extra = _connect(path)
    reply = _answer(extra)
    assert reply["ok"] is False and "busy" in reply["message"]
    assert _closed(extra)
    held.pop().close()
    for _ in range(100):   # the server notices the close shortly
        try:
            _works(path)
            break
        except Exception:
            import time
            time.sleep(0.05)
    else:
        raise AssertionError("a slot never freed up")
