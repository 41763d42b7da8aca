"""Charts a person reads: coinciding points share a label, no two labels overlap, and a
latency histogram's outliers are clipped and counted (host/charts.py)."""

import itertools

import numpy as np
import pytest

from edgedeploy.host import charts
from edgedeploy.host.compiler.report import Row, figure, plot


@pytest.mark.parametrize("points, radius, groups", [
    ([], 10, []),
    ([(0, 0)], 10, [[0]]),
    ([(0, 0), (0, 0)], 10, [[0, 1]]),
    ([(0, 0), (5, 0), (12, 0)], 10, [[0, 1, 2]]),      # transitive
    ([(0, 0), (20, 0), (0.5, 0.5)], 10, [[0, 2], [1]]),
    ([(0, 0), (10, 0)], 10, [[0], [1]]),               # exactly RADIUS apart: separate
])
def test_group_coincident(points, radius, groups):
    assert charts.group_coincident(points, radius) == groups


def test_outlier_fence_clips_and_counts_one_huge_sample():
    """Issue 15: one outlier put 1000 samples in one bin."""
    rng = np.random.default_rng(0)
    s = list(rng.normal(0.165, 0.004, 999)) + [45.0]
    f = charts.outlier_fence(s)
    assert f.clipped_high == 1 and f.shown == 999 and f.max == 45.0
    assert f.high < 0.25
    assert np.histogram([x for x in s if f.low <= x <= f.high], bins=40)[0].max() < 200


@pytest.mark.parametrize("samples, shown, high_clipped", [
    ([1.0] * 100, 100, 0),
    ([1.0] * 99 + [50.0], 99, 1),
    ([0.1, 0.2, 0.3, 0.4], 4, 0),
    ([], 0, 0),
])
def test_outlier_fence_table(samples, shown, high_clipped):
    f = charts.outlier_fence(samples)
    assert (f.shown, f.clipped_high) == (shown, high_clipped)


def _rows() -> list[Row]:
    # digits-like: int8, edgetpu-int8 and int16x8 land on one spot, dynamic next to them
    return [Row("float32", "float32", True, 1_278_268, accuracy=0.9833, latency_p50_ms=0.165),
            Row("float16", "float16", True, 641_000, accuracy=0.9833, latency_p50_ms=0.170),
            Row("dynamic", "dynamic", True, 333_000, accuracy=0.9815, latency_p50_ms=0.140),
            Row("int8", "int8", True, 332_328, accuracy=0.9815, latency_p50_ms=0.055),
            Row("edgetpu-int8", "edgetpu", True, 332_328, accuracy=0.9815,
                latency_p50_ms=0.056),
            Row("int16x8", "int16x8", True, 334_000, accuracy=0.9815, latency_p50_ms=0.30)]


def test_compare_plot_labels_never_overlap_when_points_coincide(tmp_path):
    fig, ax, labels = figure(_rows(), "digits")
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in labels]
    texts = [a.get_text() for a in labels]
    # the four modes on one spot share one label that names each of them
    shared = [t for t in texts if "int8" in t and "edgetpu-int8" in t]
    assert len(shared) == 1 and "int16x8" in shared[0] and "dynamic" in shared[0]
    assert sum(t.count("\n") + 1 for t in texts) == 6          # every mode named once
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    axbox = ax.get_window_extent(renderer)
    for b in boxes:
        assert axbox.x0 <= b.x0 and b.x1 <= axbox.x1 and axbox.y0 <= b.y0 and b.y1 <= axbox.y1
    assert "µs" in " ".join(texts)
    assert plot(_rows(), tmp_path / "c.png", "digits") and (tmp_path / "c.png").stat().st_size


def test_compare_plot_needs_an_accuracy(tmp_path):
    assert not plot([Row("int8", "int8", True, 1000)], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
