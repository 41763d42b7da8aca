"""`edgedeploy-agent serve --http-port` in both board envs, called by clients that are not ours:
Triton's own Python client (tritonclient[http], KServe v2 REST + binary tensor extension) and
Prometheus's own text parser, both from the `oip-client` env (scripts/envs); plain HTTP with
the spec's JSON examples; and the HTTP side of the hardening (bodies capped by the model)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgedeploy.device.client import Client
from edgedeploy.device.manifest import Manifest

from .conftest import bundle_dir
from .test_serve import Served

pytestmark = pytest.mark.board
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def oip_client_py() -> str:
    if os.environ.get("EDGEDEPLOY_OIP_CLIENT_PY"):
        return os.environ["EDGEDEPLOY_OIP_CLIENT_PY"]
    proc = subprocess.run(["python3", str(REPO / "scripts" / "envs"), "oip-client"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def http_served(agent, models, tmp_path):
    agent("install", bundle_dir(models["float32"], tmp_path / "b32"), "--activate")
    s = Served(agent, "--socket", tmp_path / "ed.sock", "--http-port", 0, "--poll", 0.05)
    yield s
    if s.proc.poll() is None:
        s.stop()


TRITON = r"""
import json, sys
import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, xfile = sys.argv[1], sys.argv[2]
x = np.load(xfile)
c = httpclient.InferenceServerClient(url=url)
out = {"live": c.is_server_live(), "ready": c.is_server_ready(),
       "model_ready": c.is_model_ready("digits"), "server": c.get_server_metadata()}
md = c.get_model_metadata("digits")
out["metadata"] = md
iname, oname = md["inputs"][0]["name"], md["outputs"][0]["name"]
for binary in (True, False):
    i = httpclient.InferInput(iname, list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=binary)
    o = httpclient.InferRequestedOutput(oname, binary_data=binary)
    r = c.infer("digits", [i], outputs=[o], request_id="req-%d" % binary)
    out["binary" if binary else "json"] = {"y": r.as_numpy(oname).tolist(),
                                           "response": r.get_response()}
errors = {}
try:
    i = httpclient.InferInput(iname, [1, 28, 28, 1], "FP32")
    i.set_data_from_numpy(np.zeros((1, 28, 28, 1), np.float32))
    c.infer("digits", [i])
except InferenceServerException as e:
    errors["shape"] = [e.status(), e.message()]
try:
    c.get_model_metadata("nosuch")
except InferenceServerException as e:
    errors["model"] = [e.status(), e.message()]
out["errors"] = errors
print(json.dumps(out))
"""

PROM = r"""
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode()
fams = {f.name: [[s.name, s.labels, s.value] for s in f.samples]
        for f in text_string_to_metric_families(text)}
print(json.dumps(fams))
"""


def _run(py: str, code: str, *args) -> dict:
    proc = subprocess.run([py, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_triton_client_infers_and_sees_a_hot_swap(http_served, oip_client_py, agent, models,
                                                  tmp_path):
    url = http_served.ready["http"]
    assert url.startswith("http://127.0.0.1:")
    x = np.load(models["test"])["x"][:1].astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with Client(socket=http_served.ready["socket"]) as c:
        want = c.predict("digits", x).outputs[0]
    got = _run(oip_client_py, TRITON, url.removeprefix("http://"), tmp_path / "x.npy")
    assert got["live"] and got["ready"] and got["model_ready"]
    assert "binary_tensor_data" in got["server"]["extensions"]
    md = got["metadata"]
    assert md["inputs"][0]["datatype"] == "FP32" and md["inputs"][0]["shape"] == [1, 32, 32, 1]
    assert md["outputs"][0]["shape"] == [1, 10]
    v_old = md["versions"][0]
    for way in ("binary", "json"):
        np.testing.assert_array_equal(np.array(got[way]["y"], np.float32), want)
        assert got[way]["response"]["model_version"] == v_old
    assert got["binary"]["response"]["id"] == "req-1"
    assert got["binary"]["response"]["outputs"][0]["parameters"]["binary_data_size"] == 40
    assert got["errors"]["shape"][0] == "400" and "[1, 32, 32, 1]" in got["errors"]["shape"][1]
    assert got["errors"]["model"][0] == "404" and "nosuch" in got["errors"]["model"][1]

    # activate the int8 (uint8 I/O) version: HTTP sees the swap, FP32 inputs get quantized
    b8 = bundle_dir(models["int8"], tmp_path / "b8")
    v_new = Manifest.load(next(b8.glob("*.manifest.json"))).version
    agent("install", b8, "--activate")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        md = json.load(urllib.request.urlopen(f"{url}/v2/models/digits"))
        if md["versions"] == [v_new]:
            break
        time.sleep(0.05)
    assert md["versions"] == [v_new] and md["inputs"][0]["datatype"] == "UINT8"
    got = _run(oip_client_py, TRITON, url.removeprefix("http://"), tmp_path / "x.npy")
    assert got["binary"]["response"]["model_version"] == v_new
    assert int(np.argmax(got["binary"]["y"])) == int(np.argmax(want))


def _post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_spec_json_examples_over_plain_http(http_served, models):
    """The KServe v2 REST examples, as a curl user would send them: flat and nested data."""
    url = http_served.ready["http"]
    md = json.load(urllib.request.urlopen(f"{url}/v2/models/digits"))
    iname = md["inputs"][0]["name"]
    x = np.load(models["test"])["x"][:1].astype(np.float32)
    with Client(socket=http_served.ready["socket"]) as c:
        want = c.predict("digits", x).outputs[0]
    for data in (x.ravel().tolist(), x.tolist()):
        status, r = _post(f"{url}/v2/models/digits/infer", json.dumps({
            "id": "42", "inputs": [{"name": iname, "shape": [1, 32, 32, 1], "datatype": "FP32",
                                    "data": data}]}).encode())
        assert status == 200 and r["id"] == "42" and r["model_name"] == "digits"
        (o,) = r["outputs"]
        assert o["datatype"] == "FP32" and o["shape"] == [1, 10]
        np.testing.assert_allclose(np.array(o["data"], np.float32).reshape(1, 10), want)
    version = md["versions"][0]
    assert _post(f"{url}/v2/models/digits/versions/{version}/infer", json.dumps(
        {"inputs": [{"name": iname, "shape": [1, 32, 32, 1], "datatype": "FP32",
                     "data": x.ravel().tolist()}]}).encode())[0] == 200
    status, r = _post(f"{url}/v2/models/digits/versions/0000/infer", b"{}")
    assert status == 404 and "not the one served" in r["error"]


ERRORS = {
    "not json": (b"{nope", 400, "not a JSON object"),
    "no inputs": (b"{}", 400, "\"inputs\""),
    "unknown input": (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", '
                      b'"data": [1]}]}', 400, "no such input"),
    "bad datatype": (b'{"inputs": [{"name": "IN", "shape": [1, 32, 32, 1], "datatype": "BYTES",'
                     b' "data": []}]}', 400, "datatype"),
    "too few values": (b'{"inputs": [{"name": "IN", "shape": [1, 32, 32, 1], "datatype": '
                       b'"FP32", "data": [1, 2, 3]}]}', 400, "needs 1024"),
    "infinite shape": (b'{"inputs": [{"name": "IN", "shape": [Infinity], "datatype": "FP32", '
                       b'"data": []}]}', 400, "Infinity"),
    "unknown output": (b'{"inputs": [{"name": "IN", "shape": [1, 32, 32, 1], "datatype": '
                       b'"FP32", "data": ZEROS}], "outputs": [{"name": "nope"}]}', 400,
                       "no output"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_http_malformed_inference_gets_a_json_error(http_served, case):
    url = http_served.ready["http"]
    iname = json.load(urllib.request.urlopen(f"{url}/v2/models/digits"))["inputs"][0]["name"]
    body, status, words = ERRORS[case]
    body = body.replace(b'"IN"', json.dumps(iname).encode()).replace(
        b"ZEROS", json.dumps([0.0] * 1024).encode())
    got, r = _post(f"{url}/v2/models/digits/infer", body)
    assert got == status and words in r["error"], r


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError


def test_http_body_larger_than_the_model_takes_is_refused_unread(http_served):
    host, port = http_served.ready["http"].removeprefix("http://").split(":")
    before = _peak_rss(http_served.proc.pid)
    c = http.client.HTTPConnection(host, int(port), timeout=20)
    c.putrequest("POST", "/v2/models/digits/infer")
    c.putheader("Content-Length", str(1 << 30))
    c.putheader("Content-Type", "application/json")
    c.endheaders()                                   # no body follows: the answer must not wait
    r = c.getresponse()
    assert r.status == 413 and "at most" in json.loads(r.read())["error"]
    assert r.getheader("Connection") == "close"
    c.close()
    for path, status in (("/v2/models/nosuch/infer", 404), ("/v2/nothing", 404)):
        c = http.client.HTTPConnection(host, int(port), timeout=20)
        c.request("POST", path, body=b"{}")
        assert c.getresponse().status == status
        c.close()
    c = http.client.HTTPConnection(host, int(port), timeout=20)
    c.putrequest("POST", "/v2/models/digits/infer")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    assert c.getresponse().status == 411
    assert _peak_rss(http_served.proc.pid) - before < 16 << 20


def test_prometheus_metrics_parse_with_prometheus_own_parser(http_served, oip_client_py):
    url = http_served.ready["http"]
    iname = json.load(urllib.request.urlopen(f"{url}/v2/models/digits"))["inputs"][0]["name"]
    body = json.dumps({"inputs": [{"name": iname, "shape": [1, 32, 32, 1], "datatype": "FP32",
                                   "data": [0.0] * 1024}]}).encode()
    for _ in range(3):
        assert _post(f"{url}/v2/models/digits/infer", body)[0] == 200
    assert _post(f"{url}/v2/models/digits/infer", b"{}")[0] == 400
    with Client(socket=http_served.ready["socket"]) as c:
        for _ in range(5):
            c.predict("digits", np.zeros((1, 32, 32, 1), np.float32))
    fams = _run(oip_client_py, PROM, url)

    def value(family: str, sample: str, **labels) -> float:
        hits = [v for n, lab, v in fams[family] if n == sample and
                all(lab.get(k) == w for k, w in labels.items())]
        assert len(hits) == 1, (family, sample, labels, fams.get(family))
        return hits[0]

    assert value("edgedeploy_requests", "edgedeploy_requests_total", model="digits",
                 protocol="http", outcome="ok") == 3
    assert value("edgedeploy_requests", "edgedeploy_requests_total", model="digits",
                 protocol="http", outcome="error") == 1
    assert value("edgedeploy_requests", "edgedeploy_requests_total", model="digits",
                 protocol="ndjson", outcome="ok") == 5
    assert value("edgedeploy_invoke_duration_seconds", "edgedeploy_invoke_duration_seconds_count",
                 model="digits") == 8
    assert value("edgedeploy_invoke_duration_seconds", "edgedeploy_invoke_duration_seconds_bucket",
                 model="digits", le="+Inf") == 8
    version = json.load(urllib.request.urlopen(f"{url}/v2/models/digits"))["versions"][0]
    assert value("edgedeploy_model_info", "edgedeploy_model_info", model="digits",
                 version=version) == 1
    assert value("process_resident_memory_bytes", "process_resident_memory_bytes") > 1e6
