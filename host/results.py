"""The history of every report from a board (SQLite), and the report built from it.

Default file: ``~/.local/share/edgedeploy/results.db`` (``EDGEDEPLOY_RESULTS`` or ``--db``).

    results(id, ts, board, kind, model, version, label, runtime, payload JSON)

``kind`` is ``push``, ``bench`` or ``eval``; ``payload`` is the agent's answer as received.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    board TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT,
    version TEXT,
    label TEXT,
    runtime TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_model ON results(model, version);
CREATE INDEX IF NOT EXISTS results_board ON results(board);
"""


def default_db() -> Path:
    return Path(os.environ.get("EDGEDEPLOY_RESULTS")
                or "~/.local/share/edgedeploy/results.db").expanduser()


@dataclass
class Row:
    id: int
    ts: str
    board: str
    kind: str
    model: str | None
    version: str | None
    label: str | None
    runtime: str | None
    payload: dict


class Results:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_db()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(SCHEMA)

    def record(self, kind: str, board: str, payload: dict, *, model: str | None = None,
               version: str | None = None, label: str | None = None) -> int:
        m, rt = payload.get("model"), payload.get("runtime")
        m = m if isinstance(m, dict) else {}
        rt = rt if isinstance(rt, dict) else {}
        with self.db:
            cur = self.db.execute(
                "INSERT INTO results (ts, board, kind, model, version, label, runtime, payload)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), board, kind,
                 model or m.get("name"), version or m.get("version"), label or m.get("mode"),
                 rt.get("name"), json.dumps(payload)))
        return int(cur.lastrowid or 0)

    def rows(self, *, model: str | None = None, board: str | None = None,
             kind: str | None = None) -> list[Row]:
        q, args = "SELECT * FROM results WHERE 1=1", []
        for col, val in (("model", model), ("board", board), ("kind", kind)):
            if val:
                q += f" AND {col} = ?"
                args.append(val)
        return [Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]))
                for r in self.db.execute(q + " ORDER BY id", args)]

    def latest(self, **kw) -> dict[tuple[str, str, str], Row]:
        """The newest row per (board, version, kind)."""
        out: dict = {}
        for r in self.rows(**kw):
            out[(r.board, r.version or "", r.kind)] = r
        return out

    def close(self) -> None:
        self.db.close()


def summary(res: Results, *, model: str | None = None, board: str | None = None) -> list[dict]:
    """One line per (board, model version): size, accuracy on the board, p50/p99 latency."""
    latest = res.latest(model=model, board=board)
    keys = sorted({(b, v) for b, v, _ in latest})
    lines = []
    for b, v in keys:
        bench, ev, push = (latest.get((b, v, k)) for k in ("bench", "eval", "push"))
        any_row = bench or ev or push
        assert any_row is not None
        t = bench.payload["timing"] if bench else {}
        lines.append({
            "board": b, "model": any_row.model, "version": v, "label": any_row.label,
            "runtime": measured.runtime if (measured := bench or ev) else None,
            "size": (push.payload.get("size") if push else None),
            "sent": sent_summary(push.payload) if push else None,
            "accuracy": ev.payload["top1"] if ev else None,
            "p50_ms": t.get("p50_ms"), "p99_ms": t.get("p99_ms"),
            "delegate": bench.payload["delegate"]["applied"] if bench else None,
        })
    return lines


def sent_summary(push: dict) -> str | None:
    """How the last push of a version reached its board: "delta 3.4 of 958.6 KB",
    "full 958.6 KB", "none" (the board had it); None for pushes recorded before deltas."""
    how, sent, full = push.get("transfer"), push.get("bytes_sent"), push.get("full_bytes")
    if how is None or sent is None:
        return None
    if how == "none":
        return "none"
    if how == "delta" and full:
        return f"delta {sent / 1024:.1f} of {full / 1024:.1f} KB"
    return f"full {sent / 1024:.1f} KB"


def write_html(res: Results, out: Path, *, model: str | None = None,
               board: str | None = None) -> Path:
    """A self-contained HTML report: the summary table, a latency histogram per bench and the
    size / accuracy / latency trade-off, as PNGs beside the HTML."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = summary(res, model=model, board=board)
    imgs = []
    benches = [r for r in res.latest(model=model, board=board).values() if r.kind == "bench"]
    if benches:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in benches:
            samples = r.payload["timing"].get("samples_ms") or []
            if samples:
                ax.hist(samples, bins=50, alpha=0.5, label=f"{r.board} {r.label} {r.version}")
        ax.set_xlabel("invoke latency (ms)")
        ax.set_ylabel("runs")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out.with_name(out.stem + ".latency.png")
        fig.savefig(p, dpi=100)
        plt.close(fig)
        imgs.append(p)
    trade = [ln for ln in lines if ln["accuracy"] is not None and ln["size"]]
    if trade:
        fig, ax = plt.subplots(figsize=(6, 4))
        for ln in trade:
            ax.scatter(ln["size"] / 1024, 100 * ln["accuracy"],
                       s=40 + 400 * (ln["p50_ms"] or 0) / max(x["p50_ms"] or 1e-9 for x in trade))
            ax.annotate(f"{ln['board']} {ln['label']}", (ln["size"] / 1024,
                                                         100 * ln["accuracy"]), fontsize=7)
        ax.set_xlabel("model size (KB)")
        ax.set_ylabel("accuracy on the board (%)")
        ax.set_title("size vs accuracy (marker size: p50 latency)")
        fig.tight_layout()
        p = out.with_name(out.stem + ".tradeoff.png")
        fig.savefig(p, dpi=100)
        plt.close(fig)
        imgs.append(p)
    cols = ["board", "model", "label", "version", "runtime", "size", "sent", "accuracy",
            "p50_ms", "p99_ms", "delegate"]
    rows_html = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(ln[c]))}</td>" for c in cols)
                        + "</tr>" for ln in lines)
    body = (f"<h1>edgedeploy report</h1><p>{html.escape(str(res.path))}</p>"
            f"<table border=1 cellpadding=4><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>"
            f"{rows_html}</table>"
            + "".join(f'<p><img src="{html.escape(p.name)}"></p>' for p in imgs))
    out.write_text(f"<!doctype html><meta charset=utf-8><title>edgedeploy report</title>{body}")
    return out


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
