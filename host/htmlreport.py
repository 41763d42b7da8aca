"""``edgedeploy report --html FILE``: one self-contained HTML file a person would open.

Everything is inside the file (inline SVG charts, inline CSS, no script, no link out):

- per model: a table of versions × boards with size, accuracy, agreement and max abs error
  against the host's outputs, p50/p90/p99, load time, peak RSS and the date of the newest
  measurement; a bench or eval that failed is marked ``failed`` with its message;
- per model and board: latency distributions of the newest bench of each version, with far-out
  samples clipped (Tukey fences, charts.outlier_fence) and counted in the legend;
- per model: accuracy and p50 latency across versions (in the order they first appeared), a
  line per board;
- the fleet: board, profile, runtime, current version(s) of each model, last seen.

``build`` is a pure function of the results' rows (and the fleet file when given); ``render``
turns its Report into HTML. Sizes in KiB, times in µs below 1 ms (units.py).
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import units
from .results import Line, Results, Row, summary_lines


@dataclass
class Version:
    version: str
    label: str | None
    first_seen: str
    size: int | None = None


@dataclass
class ModelSection:
    name: str
    versions: list[Version]
    lines: list[Line]                                   # one per (board, version)
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)


@dataclass
class FleetLine:
    board: str
    profile: str | None
    runtime: str | None
    current: dict[str, str]          # model → "version (label)"
    last_seen: str | None
    source: str                      # "status", "push" or "fleet file"


@dataclass
class Report:
    generated: str
    db: str
    filters: dict[str, str]
    models: list[ModelSection]
    fleet: list[FleetLine]


def _when(ts: str | None) -> str:
    return ts[:19].replace("T", " ") + " UTC" if ts else units.DASH


def build(res: Results, *, model: str | None = None, board: str | None = None,
          fleet=None) -> Report:
    rows = res.rows(model=model, board=board)
    lines = summary_lines(res, model=model, board=board)
    sections: list[ModelSection] = []
    for name in sorted({r.model for r in rows if r.model}):
        mine = [r for r in rows if r.model == name]
        versions: dict[str, Version] = {}
        for r in mine:
            if not r.version:
                continue
            v = versions.setdefault(r.version, Version(r.version, r.label, r.ts))
            v.label = v.label or r.label
            if r.kind == "push" and not r.failed and r.payload.get("size"):
                v.size = r.payload["size"]
        samples: dict[tuple[str, str], list[float]] = {}
        for r in mine:
            if r.kind == "bench" and not r.failed and r.version:
                s = (r.payload.get("timing") or {}).get("samples_ms")
                if s:
                    samples[(r.board, r.version)] = list(s)   # newest wins (rows by id)
        order = {v: i for i, v in enumerate(versions)}
        mlines = sorted((ln for ln in lines if ln.model == name),
                        key=lambda ln: (order.get(ln.version, 1 << 30), ln.board))
        for ln in mlines:
            if ln.size is None and ln.version in versions:
                ln.size = versions[ln.version].size
        sections.append(ModelSection(name, list(versions.values()), mlines, samples))
    return Report(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), str(res.path),
                  {k: v for k, v in (("model", model), ("board", board)) if v},
                  sections, fleet_lines(res.rows(board=board), fleet, board))


def fleet_lines(rows: list[Row], fleet=None, only_board: str | None = None) -> list[FleetLine]:
    """Per board: the newest `status` tells the current versions; without one, the newest
    activating push of each model does (marked as such)."""
    boards: dict[str, FleetLine] = {}
    for r in rows:
        fl = boards.setdefault(r.board, FleetLine(r.board, None, None, {}, None, "push"))
        fl.last_seen = max(fl.last_seen or "", r.ts)
        fl.profile = r.profile or fl.profile
        if r.runtime:
            ver = (r.payload.get("runtime") or {}).get("version")
            fl.runtime = f"{r.runtime} {ver}" if ver else r.runtime
    for r in rows:  # in time order: later rows overwrite
        fl = boards[r.board]
        if r.kind == "push" and r.payload.get("activated") and r.model:
            if fl.source == "push":
                fl.current[r.model] = f"{r.version} ({r.label})" if r.label else str(r.version)
        elif r.kind == "status" and not r.failed:
            fl.source = "status"
            fl.current = {}
            for m in r.payload.get("models") or []:
                cur = m.get("current")
                label = next((v.get("label") or v.get("mode") for v in m.get("versions") or []
                              if v.get("version") == cur), None)
                fl.current[m.get("name", "?")] = (f"{cur} ({label})" if label else
                                                  str(cur)) if cur else "none active"
    if fleet is not None:
        for b in fleet.boards.values():
            if only_board and b.name != only_board:
                continue
            fl = boards.setdefault(b.name, FleetLine(b.name, None, None, {}, None,
                                                     "fleet file"))
            fl.profile = b.profile.name
    return [boards[k] for k in sorted(boards)]


# -- rendering ------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1240px;padding:0 16px;color:#1d2330}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid
#dfe3ea;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:#5a6475;margin:0 0 8px}nav a{margin-right:12px}
table{border-collapse:collapse;margin:8px 0 16px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dfe3ea;padding:3px 6px;text-align:right;white-space:nowrap}
table.results{font-size:13px}td.when{white-space:normal;min-width:84px}
th{background:#f3f5f8;font-weight:600}td.text,th.text{text-align:left}
tr.first td{border-top:2px solid #b8c0cc}
td.failed{background:#fde8e8;color:#a11;text-align:left;white-space:normal;max-width:420px}
td.missing{color:#9aa3b2}figure{margin:8px 0 20px}figcaption{color:#5a6475;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{max-width:100%;height:auto}
.legend{font-size:12px;color:#5a6475}
"""

COLUMNS = ("version", "mode", "board", "runtime", "size KiB", "accuracy", "agreement",
           "max abs err", "p50", "p90", "p99", "load", "peak RSS", "measured")


def _td(text: str, cls: str = "", title: str = "", colspan: int = 1) -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' title="{html.escape(title)}"' if title
                                                   else "") + (f' colspan="{colspan}"'
                                                               if colspan > 1 else "")
    return f"<td{attrs}>{html.escape(text)}</td>"


def _val(text: str) -> str:
    return _td(text, "missing", "not measured") if text == units.DASH else _td(text)


_PATH = re.compile(r"(?<![^\s'\"(=])/(?:[^/\s:'\"]+/)+([^/\s:'\"]+)")


def _short(msg: str, n: int = 140) -> str:
    """The cell's text: absolute paths cut to their last part (the board's store path is long
    and says nothing the row does not), then at most N characters; the cell's title keeps the
    whole message."""
    msg = _PATH.sub(r"\1", msg)
    return msg if len(msg) <= n else msg[:n - 1] + "…"


def _results_table(sec: ModelSection) -> str:
    head = "".join(f'<th class="{"text" if c in ("version", "mode", "board", "runtime") else ""}"'
                   f'>{html.escape(c)}</th>' for c in COLUMNS)
    body, prev = [], None
    for ln in sec.lines:
        first = ln.version != prev
        prev = ln.version
        board = ln.board + (" (emulated)" if ln.emulated else "")
        cells = [_td(ln.version[:8], "text", ln.version), _td(ln.label or units.DASH, "text"),
                 _td(board, "text"), _td(ln.runtime or units.DASH, "text"),
                 _val(units.kib(ln.size))]
        if ln.eval_error:
            cells.append(_td("eval failed: " + _short(ln.eval_error), "failed", ln.eval_error, 3))
        else:
            cells += [_val(units.pct(ln.accuracy)), _val(units.pct(ln.agreement, 1)),
                      _val(units.DASH if ln.max_abs_error is None
                           else f"{ln.max_abs_error:.3g}")]
        if ln.bench_error:
            cells.append(_td("bench failed: " + _short(ln.bench_error), "failed",
                             ln.bench_error, 5))
        else:
            cells += [_val(units.ms(ln.p50_ms)), _val(units.ms(ln.p90_ms)),
                      _val(units.ms(ln.p99_ms)), _val(units.ms(ln.load_ms)),
                      _val(units.size(ln.peak_rss_bytes))]
        cells.append(_td(_when(ln.date), "when"))
        body.append(f'<tr class="{"first" if first else ""}">{"".join(cells)}</tr>')
    return (f'<table class="results" data-model="{html.escape(sec.name)}"><thead><tr>{head}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _latency_svg(sec: ModelSection, board: str) -> tuple[str, str] | None:
    """(svg, caption) of one board's latency distributions, a step histogram per version."""
    import numpy as np

    from . import charts

    series = [(v, sec.samples[(board, v.version)]) for v in sec.versions
              if (board, v.version) in sec.samples]
    if not series:
        return None
    fences = [charts.outlier_fence(s) for _, s in series]
    lo, hi = min(f.low for f in fences), max(f.high for f in fences)
    micro = hi < 1.0
    scale, unit = (1000.0, "µs") if micro else (1.0, "ms")
    plt = charts.pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 3.0))
    bins = np.linspace(lo * scale, hi * scale if hi > lo else lo * scale + 1e-6, 41)
    notes = []
    for (v, s), f in zip(series, fences):
        a = np.asarray(s)
        shown = a[(a >= f.low) & (a <= f.high)] * scale
        clipped = f.clipped_high + f.clipped_low
        label = f"{v.label or ''} {v.version[:8]} (n={len(a)}"
        if clipped:
            label += f"; {clipped} clipped, max {units.ms(f.max)}"
            notes.append(f"{v.label or v.version[:8]}: {f.clipped_high} above "
                         f"{units.ms(f.high)} (max {units.ms(f.max)})"
                         + (f", {f.clipped_low} below {units.ms(f.low)}" if f.clipped_low
                            else ""))
        ax.hist(shown, bins=bins, histtype="stepfilled", alpha=0.35, label=label + ")")
    ax.set_xlabel(f"invoke latency ({unit})")
    ax.set_ylabel("runs")
    ax.set_title(f"{sec.name} on {board}")
    ax.legend(fontsize=7, loc="upper right")
    title = f"latency distribution of {sec.name} on {board}"
    caption = ("outliers clipped (Tukey far-out fences) and counted: " + "; ".join(notes)
               if notes else "no sample outside the fences: nothing clipped")
    return charts.to_svg(fig, title), caption


def _trend_svg(sec: ModelSection) -> str | None:
    """Accuracy and p50 latency across versions, one line per board."""
    if not sec.versions:
        return None
    from . import charts

    plt = charts.pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 3.2))
    xs = list(range(len(sec.versions)))
    ticks = [f"{v.label or '?'}\n{v.version[:8]}" for v in sec.versions]
    idx = {v.version: i for i, v in enumerate(sec.versions)}
    p50s = [ln.p50_ms for ln in sec.lines if ln.p50_ms is not None]
    micro = bool(p50s) and max(p50s) < 1.0
    boards = sorted({ln.board for ln in sec.lines})
    for k, board in enumerate(boards):
        # boards with equal figures would hide each other: a small sideways shift, own marker
        dx = 0.06 * (k - (len(boards) - 1) / 2) if len(boards) > 1 else 0.0
        style = dict(marker="os^Dvp"[k % 6], linestyle=("-", "--", ":", "-.")[k % 4],
                     label=board, alpha=0.85)
        mine = sorted((ln for ln in sec.lines if ln.board == board), key=lambda ln: idx.get(
            ln.version, 0))
        acc = [(idx[ln.version] + dx, 100 * ln.accuracy) for ln in mine
               if ln.accuracy is not None and ln.version in idx]
        lat = [(idx[ln.version] + dx, ln.p50_ms * (1000 if micro else 1)) for ln in mine
               if ln.p50_ms is not None and ln.version in idx]
        if acc:
            a1.plot(*zip(*acc), **style)
        if lat:
            a2.plot(*zip(*lat), **style)
    for ax, ylabel, what in ((a1, "top-1 accuracy on the board (%)", "accuracy"),
                             (a2, f"p50 latency ({'µs' if micro else 'ms'})", "p50 latency")):
        ax.set_xticks(xs, ticks, fontsize=7)
        ax.set_xlim(-0.5, len(xs) - 0.5)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{what} across versions")
        if ax.get_lines():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center",
                    transform=ax.transAxes, color="0.5")
    return charts.to_svg(fig, f"accuracy and latency of {sec.name} across versions")


def _fleet_table(fleet: list[FleetLine]) -> str:
    head = "".join(f'<th class="text">{c}</th>' for c in
                   ("board", "profile", "runtime", "current versions", "last seen", "from"))
    body = []
    for fl in fleet:
        cur = "; ".join(f"{m}: {v}" for m, v in sorted(fl.current.items())) or units.DASH
        body.append("<tr>" + _td(fl.board, "text") + _td(fl.profile or units.DASH, "text")
                    + _td(fl.runtime or units.DASH, "text") + _td(cur, "text")
                    + _td(_when(fl.last_seen) if fl.last_seen else "never", "text")
                    + _td({"status": "latest status", "push": "latest push",
                           "fleet file": "fleet file only"}[fl.source], "text") + "</tr>")
    return (f'<table class="fleet"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
            f'</tbody></table>')


def render(report: Report) -> str:
    esc = html.escape
    what = ", ".join(f"{k} {v}" for k, v in report.filters.items()) or "every model and board"
    nav = "".join(f'<a href="#model-{esc(s.name)}">{esc(s.name)}</a>' for s in report.models)
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>edgedeploy report: {esc(what)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>edgedeploy report</h1><p class=\"meta\">{esc(what)} · generated "
             f"{esc(_when(report.generated))} from <code>{esc(report.db)}</code> · "
             f"{len(report.models)} model(s), {len(report.fleet)} board(s)</p>"
             f"<nav>{nav}<a href=\"#fleet\">fleet</a></nav></header>"]
    if not report.models:
        parts.append("<p>No measurements recorded yet: push, bench and eval a model first "
                     "(<code>edgedeploy bench BOARD</code>).</p>")
    for sec in report.models:
        parts.append(f'<section class="model" id="model-{esc(sec.name)}">'
                     f"<h2>{esc(sec.name)}</h2><h3>versions × boards</h3>"
                     + _results_table(sec))
        parts.append("<h3>latency distributions</h3><div class=\"charts\">")
        boards = sorted({b for b, _ in sec.samples})
        for b in boards:
            got = _latency_svg(sec, b)
            if got:
                svg, caption = got
                parts.append(f'<figure class="latency" data-board="{esc(b)}">{svg}'
                             f"<figcaption>{esc(caption)}</figcaption></figure>")
        if not boards:
            parts.append("<p class=\"legend\">no bench with raw samples recorded</p>")
        parts.append("</div>")
        trend = _trend_svg(sec)
        if trend:
            parts.append(f'<h3>across versions</h3><figure class="trend">{trend}'
                         f"<figcaption>versions in the order they first appeared; a missing "
                         f"point is a version not measured (or failed) on that board"
                         f"</figcaption></figure>")
        parts.append("</section>")
    parts.append(f'<section id="fleet"><h2>fleet</h2>{_fleet_table(report.fleet)}'
                 f"<p class=\"legend\">current versions come from the newest "
                 f"<code>edgedeploy status</code> of a board when there is one, else from the "
                 f"newest push that activated each model</p></section></body></html>")
    return "".join(parts)


def write(res: Results, out: Path, *, model: str | None = None, board: str | None = None,
          fleet=None) -> Path:
    doc = render(build(res, model=model, board=board, fleet=fleet))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(out)
    return out
