"""The side-by-side comparison users know from the TFLite docs: mode, size, size vs float32,
accuracy, change vs float32, latency. Rows are pure data; rendering (rich table, JSON, PNG) apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .pipeline import CompileReport, atomic_write


@dataclass
class Row:
    label: str
    mode: str
    ok: bool
    size: int | None = None
    gzip_size: int | None = None
    size_ratio: float | None = None         # vs float32 (same training variant)
    accuracy: float | None = None
    accuracy_delta_pts: float | None = None  # percentage points vs float32
    top1_agreement: float | None = None
    max_abs_error: float | None = None
    latency_p50_ms: float | None = None
    latency_ratio: float | None = None
    file: str | None = None
    error: str | None = None


def rows(report: CompileReport) -> list[Row]:
    out = []
    for r in report.results:
        if not r.ok or r.manifest is None:
            out.append(Row(r.label, r.mode, False, error=r.error))
            continue
        m = r.manifest
        f = m.host_figures or {}
        out.append(Row(r.label, r.mode, True, m.size, m.gzip_size, accuracy=f.get("accuracy"),
                       top1_agreement=f.get("top1_agreement"), max_abs_error=f.get("max_abs_error"),
                       latency_p50_ms=(f.get("latency_ms") or {}).get("p50"),
                       file=str(r.model_path)))
    base = next((x for x in out if x.mode == "float32" and x.ok), None)
    if report.baseline is not None:  # the source model, measured as float32: the reference row
        f = report.baseline.get("host_figures") or {}
        base = Row(report.baseline.get("label", "source-float32"), "source", True,
                   report.baseline["size"], report.baseline.get("gzip_size"),
                   accuracy=f.get("accuracy"),
                   latency_p50_ms=(f.get("latency_ms") or {}).get("p50"))
        out.insert(0, base)
    if base is not None:
        for x in out:
            if not x.ok:
                continue
            x.size_ratio = x.size / base.size if x.size and base.size else None
            if x.accuracy is not None and base.accuracy is not None:
                x.accuracy_delta_pts = (x.accuracy - base.accuracy) * 100
            if x.latency_p50_ms and base.latency_p50_ms:
                x.latency_ratio = x.latency_p50_ms / base.latency_p50_ms
    return out


def _fmt(v, spec: str, none: str = "–") -> str:
    return none if v is None else format(v, spec)


def render(table_rows: list[Row], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from .. import units

    console = console or Console(width=max(Console().width, 120))
    t = Table(title="edgedeploy compile: modes side by side (host, 1 thread)")
    for col, just in (("mode", "left"), ("size KiB", "right"), ("gzip KiB", "right"),
                      ("vs f32", "right"), ("accuracy", "right"), ("Δ pts", "right"),
                      ("agree", "right"), ("max err", "right"), ("p50", "right"),
                      ("vs f32", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in table_rows:
        if not r.ok:
            t.add_row(r.label, "[red]failed[/red]", "", "", "", "", "", "", "", "")
            continue
        t.add_row(r.label, units.kib(r.size), units.kib(r.gzip_size),
                  _fmt(r.size_ratio, ".2f") + ("x" if r.size_ratio else ""),
                  units.pct(r.accuracy), _fmt(r.accuracy_delta_pts, "+.2f"),
                  units.pct(r.top1_agreement, 1), _fmt(r.max_abs_error, ".4f"),
                  units.ms(r.latency_p50_ms),
                  _fmt(r.latency_ratio, ".2f") + ("x" if r.latency_ratio else ""))
    console.print(t)
    for r in table_rows:
        if r.error:
            console.print(f"[red]{r.label}[/red]: {r.error}")


def to_json(report: CompileReport, table_rows: list[Row]) -> dict:
    return {"source": report.source, "skipped": [list(s) for s in report.plan.skipped],
            "rows": [asdict(r) for r in table_rows],
            "notes": {r.label: r.notes for r in report.results if r.notes},
            "training": report.training, "warnings": report.warnings}


def write_json(path: Path, payload: dict) -> None:
    atomic_write(path, (json.dumps(payload, indent=2) + "\n").encode())


def plot(table_rows: list[Row], path: Path, title: str = "size vs accuracy") -> bool:
    """PNG: size (KiB) against accuracy, one marker per mode, marker area ∝ latency. Modes that
    land on the same spot (int8 and edgetpu-int8 often do) share one label listing each; every
    label is placed where it overlaps no other label or marker (charts.place_labels).
    Returns False (and writes nothing) when no row has an accuracy to plot."""
    drawn = figure(table_rows, title)
    if drawn is None:
        return False
    fig = drawn[0]
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    from .. import charts

    charts.pyplot().close(fig)
    tmp.replace(path)
    return True


def figure(table_rows: list[Row], title: str = "size vs accuracy"):
    """(figure, axes, label annotations) of the comparison plot; None without accuracies."""
    pts = [r for r in table_rows if r.ok and r.accuracy is not None and r.size]
    if not pts:
        return None
    from .. import charts, units

    plt = charts.pyplot()
    lat = [r.latency_p50_ms or 0.0 for r in pts]
    top = max(lat) or 1.0
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
    xs = [(r.size or 0) / units.KiB for r in pts]
    ys = [(r.accuracy or 0.0) * 100 for r in pts]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (r, ms) in enumerate(zip(pts, lat)):
        ax.scatter(xs[i], ys[i], s=60 + 600 * ms / top, alpha=0.45,
                   color=colors[i % len(colors)], edgecolors="black", linewidths=0.5)
    ax.margins(x=0.3, y=0.35)
    ax.set_xlabel("model size (KiB)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{title} (marker area ∝ p50 latency, 1 thread)")
    fig.tight_layout()
    fig.canvas.draw()
    px = [tuple(ax.transData.transform(p)) for p in zip(xs, ys)]
    anchors, texts = [], []
    for group in charts.group_coincident(px, radius=10.0):
        anchors.append((xs[group[0]], ys[group[0]]))
        texts.append("\n".join(f"{pts[i].label}  {units.ms(lat[i]) if lat[i] else ''}".rstrip()
                               for i in group))
    return fig, ax, charts.place_labels(ax, anchors, texts)
