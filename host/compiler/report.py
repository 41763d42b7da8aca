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
    if base is not None:
        for x in out:
            if not x.ok:
                continue
            x.size_ratio = x.size / base.size if x.size is not None and base.size else None
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

    console = console or Console(width=max(Console().width, 120))
    t = Table(title="edgedeploy compile: modes side by side (host, 1 thread)")
    for col, just in (("mode", "left"), ("size KB", "right"), ("gzip KB", "right"),
                      ("vs f32", "right"), ("accuracy", "right"), ("Δ pts", "right"),
                      ("agree", "right"), ("max err", "right"), ("p50 ms", "right"),
                      ("vs f32", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in table_rows:
        if not r.ok:
            t.add_row(r.label, "[red]failed[/red]", "", "", "", "", "", "", "", "")
            continue
        t.add_row(r.label, _fmt(r.size and r.size / 1000, ".1f"),
                  _fmt(r.gzip_size and r.gzip_size / 1000, ".1f"), _fmt(r.size_ratio, ".2f") + ("x" if r.size_ratio else ""),
                  _fmt(r.accuracy and r.accuracy * 100, ".2f", "–") + ("%" if r.accuracy else ""),
                  _fmt(r.accuracy_delta_pts, "+.2f"), _fmt(r.top1_agreement and
                                                          r.top1_agreement * 100, ".1f"),
                  _fmt(r.max_abs_error, ".4f"), _fmt(r.latency_p50_ms, ".3f"),
                  _fmt(r.latency_ratio, ".2f") + ("x" if r.latency_ratio else ""))
    console.print(t)
    for r in table_rows:
        if r.error:
            console.print(f"[red]{r.label}[/red]: {r.error}")


def to_json(report: CompileReport, table_rows: list[Row]) -> dict:
    return {"source": report.source, "skipped": [list(s) for s in report.plan.skipped],
            "rows": [asdict(r) for r in table_rows],
            "notes": {r.label: r.notes for r in report.results if r.notes}}


def write_json(path: Path, payload: dict) -> None:
    atomic_write(path, (json.dumps(payload, indent=2) + "\n").encode())


def plot(table_rows: list[Row], path: Path, title: str = "size vs accuracy") -> bool:
    """PNG: size (KB) against accuracy, one marker per mode, marker area ∝ latency.
    Returns False (and writes nothing) when no row has an accuracy to plot."""
    pts = [r for r in table_rows if r.ok and r.accuracy is not None and r.size]
    if not pts:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = [r.latency_p50_ms or 0.0 for r in pts]
    top = max(lat) or 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r, ms in zip(pts, lat):
        kb, acc = (r.size or 0) / 1000, (r.accuracy or 0.0) * 100  # pts have both
        ax.scatter(kb, acc, s=60 + 600 * ms / top, alpha=0.6)
        ax.annotate(f"{r.label}\n{ms:.3f} ms" if ms else r.label, (kb, acc),
                    textcoords="offset points", xytext=(8, 6), fontsize=8)
    ax.set_xlabel("model size (KB)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{title} (marker size ∝ p50 latency, 1 thread)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return True
