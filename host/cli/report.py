"""``edgedeploy report``: tables (and an HTML page with plots) from the results history."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import RAW
from .render import emit, results_table

EXAMPLES = """examples:
  edgedeploy report                                  # every board, every model
  edgedeploy report --model digits --html report.html
  edgedeploy report --board b0 --json

Every push, bench and eval lands in the history (--db, $EDGEDEPLOY_RESULTS, else
~/.local/share/edgedeploy/results.db)."""


def register(sub: Any) -> None:
    rp = sub.add_parser("report", help="tables (and HTML with plots) from the results history",
                        epilog=EXAMPLES, formatter_class=RAW)
    rp.add_argument("--model", help="only this model")
    rp.add_argument("--board", help="only this board")
    rp.add_argument("--html", type=Path, metavar="FILE", help="also write an HTML report")
    rp.add_argument("--db", type=Path, metavar="FILE", help="results history (SQLite)")
    rp.add_argument("--json", action="store_true", help="print JSON")
    rp.set_defaults(func=run_report)


def run_report(a: argparse.Namespace) -> int:
    return report_command(a.db, model=a.model, board=a.board, html=a.html, as_json=a.json)


def report_command(db: Path | None, *, model: str | None, board: str | None,
                   html: Path | None, as_json: bool) -> int:
    from ..results import Results, summary, write_html

    res = Results(db)
    lines = summary(res, model=model, board=board)
    payload: dict = {"db": str(res.path), "rows": lines}
    if html:
        payload["html"] = str(write_html(res, html, model=model, board=board))
    if as_json:
        emit(True, payload, "")
        return 0
    results_table(str(res.path), lines)
    if html:
        print(f"wrote {payload['html']}")
    return 0
