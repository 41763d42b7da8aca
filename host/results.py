"""The history of every report from a board (SQLite), and the summary built from it.

Default file: ``~/.local/share/edgedeploy/results.db`` (``EDGEDEPLOY_RESULTS`` or ``--db``).

    results(id, ts, board, kind, model, version, label, runtime, payload JSON, profile)

``kind`` is ``push``, ``bench``, ``eval`` or ``status``; ``payload`` is the agent's answer as
received, or for a measurement that failed ``{"error": "one line", "code": "…"}`` (so a failed
bench shows as failed, not as a blank). ``profile`` is the board's profile name when known
(added to older files on open). ``ts`` is UTC, ``YYYY-MM-DDTHH:MM:SSZ``.
The HTML report is htmlreport.py; this module only stores and summarizes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import EdgeDeployError, InputError

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
    profile: str | None = None

    @property
    def failed(self) -> bool:
        return "error" in self.payload


class Results:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_db()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path)
            self.db.executescript(SCHEMA)
            if "profile" not in self._columns():
                # checked again under the write lock: two processes opening an old file at
                # once both saw the column missing ("duplicate column name: profile")
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    if "profile" not in self._columns():
                        self.db.execute("ALTER TABLE results ADD COLUMN profile TEXT")
                    self.db.execute("COMMIT")
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
        except (sqlite3.DatabaseError, OSError) as exc:
            raise InputError(f"{self.path}: not a usable results database ({exc})",
                             hint="pass another file with --db") from exc

    def _columns(self) -> set[str]:
        return {r[1] for r in self.db.execute("PRAGMA table_info(results)")}

    def record(self, kind: str, board: str, payload: dict, *, model: str | None = None,
               version: str | None = None, label: str | None = None,
               profile: str | None = None) -> int:
        m: dict = payload["model"] if isinstance(payload.get("model"), dict) else {}
        rt: dict = payload["runtime"] if isinstance(payload.get("runtime"), dict) else {}
        with self.db:
            cur = self.db.execute(
                "INSERT INTO results (ts, board, kind, model, version, label, runtime, payload,"
                " profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), board, kind,
                 model or m.get("name"), version or m.get("version"), label or m.get("mode"),
                 rt.get("name"), json.dumps(payload), profile))
        return int(cur.lastrowid or 0)

    def record_failure(self, kind: str, board: str, error: EdgeDeployError | str, *,
                       model: str | None = None, version: str | None = None,
                       label: str | None = None, profile: str | None = None) -> int:
        """A bench/eval that could not be made: kept, so the report marks it failed."""
        code = error.code if isinstance(error, EdgeDeployError) else "error"
        return self.record(kind, board, {"error": str(error), "code": code}, model=model,
                           version=version, label=label, profile=profile)

    def rows(self, *, model: str | None = None, board: str | None = None,
             kind: str | None = None) -> list[Row]:
        q, args = ("SELECT id, ts, board, kind, model, version, label, runtime, payload, "
                   "profile FROM results WHERE 1=1"), []
        for col, val in (("model", model), ("board", board), ("kind", kind)):
            if val:
                q += f" AND {col} = ?"
                args.append(val)
        return [Row(id=r[0], ts=r[1], board=r[2], kind=r[3], model=r[4], version=r[5],
                    label=r[6], runtime=r[7], payload=json.loads(r[8]), profile=r[9])
                for r in self.db.execute(q + " ORDER BY id", args)]

    def latest(self, **kw) -> dict[tuple[str, str, str], Row]:
        """The newest row per (board, version, kind)."""
        out: dict = {}
        for r in self.rows(**kw):
            out[(r.board, r.version or "", r.kind)] = r
        return out

    def close(self) -> None:
        self.db.close()


@dataclass
class Line:
    """What the latest measurements say about one model version on one board."""

    board: str
    model: str | None
    version: str
    label: str | None
    runtime: str | None
    size: int | None = None
    sent: str | None = None          # how the last push travelled: "delta 3.4 of 958.6 KiB" …
    accuracy: float | None = None
    agreement: float | None = None
    max_abs_error: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    load_ms: float | None = None
    peak_rss_bytes: int | None = None
    delegate: str | None = None
    emulated: bool | None = None     # the bench ran on an emulated board (qemu): not its speed
    date: str | None = None
    bench_error: str | None = None
    eval_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def summary_lines(res: Results, *, model: str | None = None, board: str | None = None
                  ) -> list[Line]:
    """One line per (board, model version), from the newest push, bench and eval of each."""
    latest = res.latest(model=model, board=board)
    keys = sorted({(b, v) for b, v, k in latest if k in ("push", "bench", "eval")})
    lines = []
    for b, v in keys:
        bench, ev, push = (latest.get((b, v, k)) for k in ("bench", "eval", "push"))
        rows = [r for r in (bench, ev, push) if r is not None]
        measured = [r for r in (bench, ev) if r is not None and not r.failed]
        ln = Line(board=b, model=rows[0].model, version=v,
                  label=next((r.label for r in rows if r.label), None),
                  runtime=next((r.runtime for r in measured if r.runtime), None),
                  date=max(r.ts for r in rows))
        if push is not None and not push.failed:
            ln.size = push.payload.get("size")
            ln.sent = sent_summary(push.payload)
        if bench is not None and bench.failed:
            ln.bench_error = bench.payload["error"]
        elif bench is not None:
            t = bench.payload.get("timing") or {}
            ln.p50_ms, ln.p90_ms, ln.p99_ms = t.get("p50_ms"), t.get("p90_ms"), t.get("p99_ms")
            ln.load_ms = bench.payload.get("load_ms")
            ln.peak_rss_bytes = bench.payload.get("peak_rss_bytes")
            ln.delegate = (bench.payload.get("delegate") or {}).get("applied")
            # an emulated board's timings are not the board's: said beside them
            ln.emulated = bool(bench.payload.get("emulated"))
        if ev is not None and ev.failed:
            ln.eval_error = ev.payload["error"]
        elif ev is not None:
            ln.accuracy = ev.payload.get("top1")
            ag = ev.payload.get("agreement") or {}
            ln.agreement, ln.max_abs_error = ag.get("top1_agreement"), ag.get("max_abs_error")
        lines.append(ln)
    return lines


def summary(res: Results, *, model: str | None = None, board: str | None = None) -> list[dict]:
    """summary_lines as dicts (``--json``)."""
    return [ln.to_dict() for ln in summary_lines(res, model=model, board=board)]


def sent_summary(push: dict) -> str | None:
    """How the last push of a version reached its board: "delta 3.4 of 958.6 KiB",
    "full 958.6 KiB", "none" (the board had it); None for pushes recorded before deltas."""
    how, sent, full = push.get("transfer"), push.get("bytes_sent"), push.get("full_bytes")
    if how is None or sent is None:
        return None
    if how == "none":
        return "none"
    if how == "delta" and full:
        return f"delta {sent / 1024:.1f} of {full / 1024:.1f} KiB"
    return f"full {sent / 1024:.1f} KiB"


def write_html(res: Results, out: Path, *, model: str | None = None,
               board: str | None = None, fleet=None) -> Path:
    """The self-contained HTML report (htmlreport.py)."""
    from .htmlreport import write

    return write(res, Path(out), model=model, board=board, fleet=fleet)
