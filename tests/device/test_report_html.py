"""`edgedeploy report --html` opened in a real browser (headless Chromium, Debian's package).

The results come from the real agent in both board envs: two "boards" (one per env, each with
its own store) get the digits float32 and int8 versions, bench them (raw samples) and eval them
against the host's float32 outputs (agreement); a broken third version fails its bench and
eval on one board, as a real failure. A push and a status row per board are recorded as the
host records them. The report is written by the CLI, then Chromium renders it to a screenshot
(kept at TMP/report-screenshot.png and printed) and dumps the DOM after load, with a small
checker script appended to a copy of the page that measures every table and chart as laid out.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgedeploy.device.manifest import Manifest
from edgedeploy.host.results import Results
from tests.conftest import board_pythons, run_cli

from .conftest import Agent, bundle_dir
from .test_agent import _bundle_for_bytes

pytestmark = pytest.mark.board

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,2000"]

CHECKER = """<script>
(function () {
  const box = e => { const r = e.getBoundingClientRect(); return [Math.round(r.width),
                                                                  Math.round(r.height)]; };
  const out = {
    tables: [...document.querySelectorAll("table")].map(t => ({
      cls: t.className, rows: t.tBodies[0].rows.length, size: box(t),
      head: [...t.tHead.rows[0].cells].map(c => c.textContent)})),
    svgs: [...document.querySelectorAll("svg")].map(s => ({
      size: box(s), title: (s.querySelector("title") || {}).textContent || "",
      paths: s.querySelectorAll("path").length})),
    failed: [...document.querySelectorAll("td.failed")].map(td => td.textContent),
    external: [...document.querySelectorAll("[src], link[href], img")].length,
    text: document.body.innerText};
  const pre = document.createElement("pre");
  pre.id = "__check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed: run the tests through scripts/test (it "
                    "apt-installs chromium)")
    return path


def _browser(args: list[str], profile: Path, timeout: float = 180) -> str:
    proc = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _reference(models: dict, n: int) -> Path:
    """The host's float32 outputs for the first N test samples (LiteRT on this host)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgedeploy.device.evaluate import run_dataset

    it = Interpreter(model_path=str(models["float32"]), num_threads=1)
    it.allocate_tensors()
    x = np.load(models["test"])["x"][:n].astype(np.float32)
    out = models["dir"] / f"ref{n}.npz"
    np.savez(out, outputs=run_dataset(it, x))
    return out


@pytest.fixture
def history(models, agent_pyz, tmp_path) -> Path:
    """A results DB filled by the real agent in both board envs (see the module docstring)."""
    pythons = board_pythons()
    if len(pythons) < 2:
        pytest.fail("both board envs are needed: run the tests through scripts/test")
    n = 200
    t = np.load(models["test"])
    np.savez(tmp_path / "test200.npz", x=t["x"][:n], y=t["y"][:n])
    ref = _reference(models, n)
    db = tmp_path / "results.db"
    res = Results(db)
    b32, b8 = bundle_dir(models["float32"], tmp_path / "b32"), bundle_dir(models["int8"],
                                                                         tmp_path / "b8")
    like = Manifest.load(next(b8.glob("*.manifest.json")))
    bad, m_bad = _bundle_for_bytes(tmp_path, "broken", b"\0" * 4096, like)
    boards = {"pi-litert": "litert", "pi-tflrt": "tflite_runtime"}
    for board, runtime in boards.items():
        (tmp_path / board).mkdir()
        ag = Agent(pythons[runtime], agent_pyz, tmp_path / board / "store", runtime)
        bundles = [b32, b8] + ([bad] if board == "pi-tflrt" else [])
        for b in bundles:
            m = Manifest.load(next(b.glob("*.manifest.json")))
            if b is bad:  # install refuses what can't load: put it there behind its back
                from edgedeploy.device.store import Store

                st = Store(tmp_path / board / "store")
                with st.locked():
                    ptr, _ = st.activate(m.name, st.install(b).version)
                inst = {"current": ptr.current, "previous": ptr.previous}
            else:
                inst = ag("install", b, "--activate")
            res.record("push", board, {"board": board, "name": m.name, "version": m.version,
                                       "label": m.label, "activated": True, "size": m.size,
                                       "current": inst["current"],
                                       "previous": inst["previous"]},
                       model=m.name, version=m.version, label=m.label,
                       profile="rpi-aarch64" if runtime == "litert" else "rpi-armv7")
            spec = f"digits@{m.version}"
            bench = ag("bench", spec, "--runs", 400, "--warmup", 20, ok=b is not bad)
            ev = ag("eval", spec, "--data", tmp_path / "test200.npz", "--reference", ref,
                    ok=b is not bad)
            for kind, msg in (("bench", bench), ("eval", ev)):
                if msg["ok"]:
                    res.record(kind, board, msg, profile=None)
                else:
                    from edgedeploy.errors import from_message
                    res.record_failure(kind, board, from_message(msg["code"], msg["message"]),
                                       model=m.name, version=m.version, label=m.label)
        if board == "pi-tflrt":
            ag("rollback", "digits")        # the broken one is not left active
        listing = ag("list")["models"]
        res.record("status", board, {"board": board, "agent": "x", "agent_current": True,
                                     "models": listing, "health": "ok"})
    res.close()
    return db


def test_html_report_in_a_real_browser(history, models, tmp_path):
    out = tmp_path / "report.html"
    p = run_cli("report", "--model", "digits", "--html", out, "--db", history, "--json",
                check=True)
    assert json.loads(p.stdout)["html"] == str(out)
    page = out.read_text()
    # self-contained: one file, nothing beside it, nothing fetched
    assert sorted(x.name for x in tmp_path.iterdir() if x.name.startswith("report")) == \
        ["report.html"]
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", page), "a link out of the file"

    shot = tmp_path / "report-screenshot.png"
    _browser([f"--screenshot={shot}", out.as_uri()], tmp_path / "chromium-profile-1")
    print(f"\nreport screenshot: {shot}")
    from PIL import Image

    img = Image.open(shot)
    assert img.size == (1280, 2000)
    assert np.asarray(img.convert("L")).std() > 20          # a page, not a blank

    checked = tmp_path / "report-checked.html"
    checked.write_text(page.replace("</body>", CHECKER + "</body>"))
    dom = _browser(["--dump-dom", checked.as_uri()], tmp_path / "chromium-profile-2")
    m = re.search(r'<pre id="__check">(.*?)</pre>', dom, re.S)
    assert m, dom[-2000:]
    import html as _html
    got = json.loads(_html.unescape(m.group(1)))

    tables = {t["cls"]: t for t in got["tables"]}
    res = tables["results"]
    assert res["rows"] == 5                      # 2 versions × 2 boards + the broken one
    assert res["head"][:6] == ["version", "mode", "board", "runtime", "size KiB", "accuracy"]
    assert {"agreement", "max abs err", "p50", "p90", "p99", "load", "peak RSS",
            "measured"} <= set(res["head"])
    assert res["size"][0] > 600 and res["size"][1] > 100
    assert tables["fleet"]["rows"] == 2
    # every chart laid out with a real size: 2 latency histograms (one per board) + the trend
    titles = [s["title"] for s in got["svgs"]]
    assert sorted(t for t in titles if t.startswith("latency")) == [
        "latency distribution of digits on pi-litert",
        "latency distribution of digits on pi-tflrt"]
    assert "accuracy and latency of digits across versions" in titles
    for s in got["svgs"]:
        assert s["size"][0] > 300 and s["size"][1] > 150 and s["paths"] > 10, s
    assert got["external"] == 0
    # failures are marked, with the agent's message
    assert len(got["failed"]) == 2
    assert all("failed" in f and "cannot load" in f for f in got["failed"]), got["failed"]
    text = got["text"]
    # units: µs below 1 ms, sizes in KiB, accuracy as a percentage, a date
    assert "µs" in text and re.search(r"\d+\.\d\d %", text)
    f32 = Manifest.load(models["float32"].with_name("digits.float32.manifest.json"))
    assert f"{f32.size / 1024:.1f}" in text
    assert re.search(r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)
    assert "rpi-aarch64" in text and "rpi-armv7" in text
    assert "litert" in text and "tflite_runtime" in text
    assert "latest status" in text


def test_latency_histogram_clips_an_outlier_and_says_so(tmp_path):
    """One 45 ms sample among 1000 at ~0.17 ms: the histogram keeps its resolution and the
    caption counts the clipped sample (issue 15: 1000 samples in one bin)."""
    res = Results(tmp_path / "r.db")
    rng = np.random.default_rng(0)
    samples = [round(float(x), 4) for x in rng.normal(0.17, 0.005, 999)] + [45.0]
    res.record("bench", "b0", {"model": {"name": "m", "version": "v1", "mode": "int8"},
                               "runtime": {"name": "litert", "version": "2.3.0"},
                               "timing": {"p50_ms": 0.17, "p90_ms": 0.18, "p99_ms": 0.19,
                                          "samples_ms": samples},
                               "load_ms": 3.0, "peak_rss_bytes": 60 << 20})
    from edgedeploy.host.htmlreport import build, render

    page = render(build(res))
    assert "1 above" in page and "max 45.0 ms" in page
    assert "60.0 MiB" in page and "170 µs" in page
