"""Charts for people: the compile comparison (PNG) and the HTML report's figures (inline SVG).

Pure parts, tested as tables: ``outlier_fence`` (which samples a histogram shows and how many it
clips), ``group_coincident`` (markers that would sit on each other become one marker with one
label). ``place_labels`` puts each label at the first of a ring of candidate offsets where it
overlaps no other label, no marker and stays inside the axes — measured by matplotlib's own
renderer, so the result holds for the fonts actually used. Matplotlib is imported lazily.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


# -- pure ---------------------------------------------------------------------------------------
@dataclass
class Fence:
    low: float
    high: float
    shown: int
    clipped_high: int
    clipped_low: int
    max: float
    min: float


def outlier_fence(samples: Sequence[float], k: float = 3.0) -> Fence:
    """Tukey's far-out fences (Q1 − k·IQR, Q3 + k·IQR; with IQR 0, when most samples are equal,
    1 % of the median stands in for it): what a latency histogram shows; samples outside are
    counted, not drawn."""
    a = np.asarray(samples, dtype=float)
    if a.size == 0:
        return Fence(0.0, 0.0, 0, 0, 0, 0.0, 0.0)
    q1, q3 = np.percentile(a, [25, 75])
    iqr = q3 - q1
    if iqr <= 0:
        iqr = max(abs(float(np.median(a))) * 0.01, 1e-9)
    low, high = max(float(a.min()), q1 - k * iqr), min(float(a.max()), q3 + k * iqr)
    return Fence(low, high, int(((a >= low) & (a <= high)).sum()), int((a > high).sum()),
                 int((a < low).sum()), float(a.max()), float(a.min()))


def group_coincident(points: Sequence[tuple[float, float]], radius: float
                     ) -> list[list[int]]:
    """Indices of points grouped when closer than RADIUS (same units as the points, e.g.
    display pixels), transitively; groups in order of their first member."""
    parent = list(range(len(points)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (xi, yi) in enumerate(points):
        for j in range(i):
            xj, yj = points[j]
            if math.hypot(xi - xj, yi - yj) < radius:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(points)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def candidate_offsets(step: float = 10.0, rings: int = 6) -> list[tuple[float, float]]:
    """Offsets (points) tried for a label, nearest first: right, up-right, up, … then wider."""
    out = []
    for r in range(1, rings + 1):
        for ang in (30, -30, 90, -90, 150, -150, 0, 180):
            out.append((r * step * math.cos(math.radians(ang)) * 1.4,
                        r * step * math.sin(math.radians(ang))))
    return out


def _overlap(a, b, pad: float = 2.0) -> bool:
    return not (a.x1 + pad <= b.x0 or b.x1 + pad <= a.x0 or a.y1 + pad <= b.y0
                or b.y1 + pad <= a.y0)


def place_labels(ax, anchors: Sequence[tuple[float, float]], texts: Sequence[str],
                 avoid_radius_px: float = 8.0, fontsize: float = 8) -> list[Any]:
    """Annotate each anchor (data coordinates) with its text where it overlaps nothing already
    placed (labels, markers) and stays inside the axes; returns the Annotation objects."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    from matplotlib.transforms import Bbox

    axbox = ax.get_window_extent(renderer)
    marks = []
    for x, y in anchors:
        px, py = ax.transData.transform((x, y))
        marks.append(Bbox.from_extents(px - avoid_radius_px, py - avoid_radius_px,
                                       px + avoid_radius_px, py + avoid_radius_px))
    placed: list = []
    out = []
    for (x, y), text in zip(anchors, texts):
        best = None
        for dx, dy in candidate_offsets():
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy),
                              fontsize=fontsize, ha="left" if dx >= 0 else "right",
                              va="bottom" if dy >= 0 else "top",
                              arrowprops=dict(arrowstyle="-", color="0.6", lw=0.6,
                                              shrinkA=0, shrinkB=4))
            box = ann.get_window_extent(renderer)
            inside = (box.x0 >= axbox.x0 and box.x1 <= axbox.x1 and box.y0 >= axbox.y0
                      and box.y1 <= axbox.y1)
            clear = not any(_overlap(box, b) for b in placed + marks)
            if inside and clear:
                best = (ann, box)
                break
            ann.remove()
        if best is None:  # nowhere clear: the least crowded spot of the first ring
            ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(8, 6),
                              fontsize=fontsize)
            best = (ann, ann.get_window_extent(renderer))
        placed.append(best[1])
        out.append(best[0])
    return out


# -- rendering ----------------------------------------------------------------------------------
def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.grid": True,
                         "grid.alpha": 0.3, "figure.dpi": 100})
    return plt


def to_svg(fig, title: str) -> str:
    """The figure as an inline <svg> element (text kept as text, with a <title>)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    from html import escape

    head_end = svg.index(">") + 1
    return (svg[:head_end].replace("<svg", f'<svg role="img" aria-label="{escape(title)}"', 1)
            + f"<title>{escape(title)}</title>" + svg[head_end:])
