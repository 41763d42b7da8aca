"""The fine-tune check (pure) and the baseline row of the comparison table."""

from __future__ import annotations

from pathlib import Path

from edgedeploy.device.manifest import Manifest
from edgedeploy.host.compiler import report as rep
from edgedeploy.host.compiler.modes import Plan, Training
from edgedeploy.host.compiler.pipeline import CompileReport, ModeResult, accuracy_warnings


def test_warns_past_two_points_and_says_epochs_and_what_to_try():
    t = Training(prune=0.5, epochs=2)
    got = accuracy_warnings(t, [("prune50-float32", 0.706), ("prune50-int8", 0.93),
                                ("prune50-float16", None)], 0.937, "test.npz")
    assert len(got) == 1
    w = got[0]
    assert w.startswith("prune50-float32: accuracy fell 23.1 points (93.7% → 70.6%)")
    assert "on test.npz after 2 epoch(s) of prune50 fine-tuning" in w
    assert "--epochs" in w and "--prune" in w


def test_no_warning_at_two_points_or_without_a_baseline():
    t = Training(cluster=8, epochs=1)
    assert accuracy_warnings(t, [("x", 0.915)], 0.935, "d") == []   # exactly 2.0 points
    assert accuracy_warnings(t, [("x", 0.5)], None, "d") == []
    (w,) = accuracy_warnings(t, [("x", 0.90)], 0.935, "d")
    assert "--cluster centroids" in w


def _manifest(label: str, size: int, acc: float) -> Manifest:
    return Manifest(name="m", version="v", mode=label.split("-")[-1], label=label, file="f",
                    sha256="s", size=size, inputs=[], outputs=[], gzip_size=size // 2,
                    host_figures={"accuracy": acc, "latency_ms": {"p50": 1.0}})


def test_single_mode_table_has_the_source_as_baseline_row():
    r = ModeResult("float32", "prune50-float32", True, _manifest("prune50-float32", 1000, 0.80),
                   Path("m.tflite"))
    report = CompileReport({}, Plan(("float32",), ()), [r],
                           baseline={"label": "source-float32", "size": 1000, "gzip_size": 900,
                                     "host_figures": {"accuracy": 0.95,
                                                      "latency_ms": {"p50": 2.0}}})
    rows = rep.rows(report)
    assert [x.label for x in rows] == ["source-float32", "prune50-float32"]
    assert round(rows[1].accuracy_delta_pts, 6) == -15.0
    assert rows[1].size_ratio == 1.0 and rows[1].latency_ratio == 0.5
    assert rep.to_json(report, rows)["rows"][0]["mode"] == "source"
