"""Everything the CLI prints: one line per result, rich tables, JSON. The handlers decide what
to show; this module only says how."""

from __future__ import annotations

import json
import sys
from typing import Any

from .. import units
from ...device import protocol


def emit(as_json: bool, payload: Any, text: str) -> None:
    """PAYLOAD as JSON (--json), else TEXT."""
    print(json.dumps(payload, indent=2) if as_json else text)


def error(command: str, message: str) -> None:
    print(f"edgedeploy {command}: error: {message}", file=sys.stderr)


def push_line(r: Any) -> str:
    state = f"active (previous {r.previous})" if r.activated else "installed"
    return (f"{r.board}: {r.name} {r.version} ({r.label}) {state}; {sent_text(r)}"
            f"{', agent updated' if r.agent_uploaded else ''} in {r.seconds:.2f} s"
            + (f" ({r.note})" if getattr(r, "note", None) else ""))


def sent_text(r: Any) -> str:
    """What a push sent: the model as a delta or whole, bytes against the full bundle's."""
    if r.transfer == "none":
        return "sent 0 model bytes (the board had it)"
    share = f" ({100 * r.bytes_sent / r.full_bytes:.1f}% of {r.full_bytes})" \
        if r.full_bytes else ""
    how = "as a delta" if r.transfer == "delta" else "whole"
    why = f" [{r.transfer_note}]" if r.transfer == "full" and r.transfer_note else ""
    return f"sent {r.bytes_sent} bytes {how}{share}{why}"


def bench_line(board: str, b: protocol.Bench) -> str:
    return (f"{board}: {b.model.name} {b.model.version} ({b.model.mode}, {b.runtime} "
            f"{b.runtime_version}, {b.threads} thread(s), delegate {b.delegate or 'none'}): "
            f"p50 {units.ms(b.p50_ms)}, p90 {units.ms(b.p90_ms)}, p99 {units.ms(b.p99_ms)}, "
            f"load {units.ms(b.load_ms)}, peak RSS {units.size(b.peak_rss_bytes)}")


def op_table(raw: dict) -> str:
    """`bench --op-profile`: every op, where it ran, and what the agent says about op times."""
    ops = raw.get("ops") or []
    lines = [f"  {o.get('index', i):>4}  {o.get('op', '?'):<28} "
             f"{'delegate' if o.get('delegated') else 'CPU kernels'}"
             for i, o in enumerate(ops)]
    timing = raw.get("op_timing")
    if timing:
        lines.append(f"  op times: {timing}")
    if raw.get("note"):
        lines.append(f"  note: {raw['note']}")
    return "\n".join(lines) or "  (no op list)"


def eval_line(board: str, e: protocol.Eval) -> str:
    """One line: top-1 on the labels (and agreement), then each output's error against the
    reference; the user's data file, not the board's copy."""
    r = e.raw
    parts = []
    if e.top1 is not None:
        outs = r.get("outputs") or []
        which = f" ({r['output']})" if r.get("output") and len(outs) > 1 else ""
        parts.append(f"top-1{which} {units.pct(e.top1)}")
        if e.agreement is not None:
            parts.append(f"agreement {units.pct(e.agreement)}")
    for x in r.get("errors") or []:
        parts.append(f"{x['output']}: max err {x['max_abs_error']:.3g}, mean "
                     f"{x['mean_abs_error']:.3g}, cosine {x['cosine']:.6f}")
    data = f" of {r['data']}" if r.get("data") else ""
    ref = f" vs {r['reference']}" if r.get("reference") else ""
    return (f"{board}: {e.model.name} {e.model.version} ({e.model.mode}) on {e.samples} "
            f"samples{data}{ref}: " + "; ".join(parts))


def _describe(m: dict, version: str | None) -> str:
    """VERSION with its mode and label, as the board's listing gives them."""
    if not version:
        return "none"
    for v in m.get("versions") or []:
        if v.get("version") == version:
            entry = protocol.VersionEntry.parse(v) if "error" not in v else None
            return f"{version} {entry.describe()}" if entry else f"{version} (unreadable)"
    return version


def status_lines(rows: list[dict]) -> str:
    out = []
    for st in rows:
        if "error" in st:
            out.append(f"{st['board']}: UNREACHABLE/FAILED: {st['error']}")
            continue
        models = ", ".join(f"{m['name']} {_describe(m, m['current'])} active (previous "
                           f"{_describe(m, m['previous'])})"
                           for m in st["models"]) or "no models"
        agent = "agent current" if st["agent_current"] else \
            ("agent outdated" if st["agent"] else "no agent")
        out.append(f"{st['board']}: {models}; {agent}; health {st['health']}")
    return "\n".join(out)


def rollout_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"rollout {r['id']}: {r['model']} → {r['version']}: {r['state']}"
                    + (f" ({r['message']})" if r.get("message") else ""))
    for c in ("board", "wave", "old → new", "accuracy", "p99 ms", "outcome"):
        t.add_column(c)
    for b in r["boards"]:
        f = b["figures"] or {}
        t.add_row(b["board"], str(b["wave"]) if b["wave"] >= 0 else "–",
                  f"{b['old'] or '–'} → {b['new']}",
                  f"{100 * f['accuracy']:.2f}%" if "accuracy" in f else "–",
                  f"{f['p99_ms']:.3f}" if "p99_ms" in f else "–",
                  b["state"] + (f": {b['error']}" if b["error"] else ""))
    Console(width=160).print(t)
    print(", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items())))


def dry_run_text(r: dict) -> str:
    return "\n".join([f"{r['model']} {r['version']}: gates {', '.join(r['gates']) or 'none'}"]
                     + [f"wave {i}{' (canary)' if i == 0 else ''}: {', '.join(w)}"
                        for i, w in enumerate(r["waves"])]
                     + [f"skipped {k}: {v}" for k, v in r["skipped"].items()]
                     + [f"note {k}: {v}" for k, v in r["notes"].items()])


def rollout_event(ev: dict) -> None:
    """A rollout's progress on stderr: a line per wave and per board state change."""
    if "warning" in ev:
        print(f"warning: {ev['warning']}", file=sys.stderr, flush=True)
    elif "wave" in ev:
        print(f"wave {ev['wave']}{' (canary)' if ev['wave'] == 0 else ''}: "
              f"{ev['todo']} of {ev['boards']} board(s) to do", file=sys.stderr, flush=True)
    else:
        extra = f": {ev['error']}" if ev.get("error") else ""
        sent = ev.get("sent")
        if sent and sent["transfer"] != "none":
            extra += (f" (model sent {'as a delta' if sent['transfer'] == 'delta' else 'whole'}"
                      f": {sent['bytes_sent']} of {sent['full_bytes']} bytes)")
        print(f"  {ev['board']}: {ev['state']}{extra}", file=sys.stderr, flush=True)


def results_table(path: str, lines: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from .. import units

    t = Table(title=f"edgedeploy results ({path})")
    for c in ("board", "model", "label", "version", "runtime", "size KiB", "sent",
              "accuracy", "p50", "p99"):
        t.add_column(c, justify="right")
    for ln in lines:
        t.add_row(ln["board"] + (" (emulated)" if ln.get("emulated") else ""),
                  ln["model"] or "", ln["label"] or "", ln["version"],
                  ln["runtime"] or "", units.kib(ln["size"]), ln.get("sent") or units.DASH,
                  "[red]eval failed[/red]" if ln.get("eval_error") else units.pct(ln["accuracy"]),
                  "[red]bench failed[/red]" if ln.get("bench_error") else units.ms(ln["p50_ms"]),
                  "" if ln.get("bench_error") else units.ms(ln["p99_ms"]))
    Console(width=140).print(t)


def inspect_table(payload: dict) -> None:
    """`edgedeploy inspect`: the model's tensors, every op, the Edge TPU verdicts."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    pf = payload.get("edgetpu")
    if pf:  # said first: what to do about this model on a Coral
        console.print(f"[bold]{pf['summary']}[/bold]", highlight=False)
    console.print(f"[bold]{payload['file']}[/bold]: {payload['size']:,} B, "
                  f"{len(payload['ops'])} ops, {payload['param_bytes']:,} B of parameters")
    for kind in ("inputs", "outputs"):
        for t in payload[kind]:
            q = f" scale={t['scale'][0]:.6g} zp={t['zero_point'][0]}" if t["scale"] else ""
            console.print(f"  {kind[:-1]} {t['name']}: {t['dtype']} {t['shape']}{q}")
    verdicts = {v["index"]: v for v in payload.get("edgetpu", {}).get("ops", [])}
    table = Table()
    for col in ("#", "op", "v", "in → out dtypes", "quantization"):
        table.add_column(col)
    if verdicts:
        table.add_column("Edge TPU")
        table.add_column("why")
    for op in payload["ops"]:
        outs = op["outputs"]
        quant = (f"s={outs[0]['scale'][0]:.4g} zp={outs[0]['zero_point'][0]}"
                 if outs and outs[0]["scale"] else "float")
        row = [str(op["index"]), op["type"], str(op["version"]), op["signature"], quant]
        if verdicts:
            v = verdicts[op["index"]]
            row += ["[green]yes[/green]" if v["edgetpu"] else "[red]CPU[/red]", v["reason"]]
        table.add_row(*row)
    console.print(table)
    if pf:
        mib = 1024 * 1024
        cpu_params = pf["param_bytes"] - pf["mapped_param_bytes"]
        console.print(f"Edge TPU preflight: {pf['n_edgetpu']} of {len(pf['ops'])} ops map "
                      f"([bold]{pf['verdict']}[/bold])")
        console.print(f"parameters: {pf['param_bytes'] / mib:.2f} MiB in all ops; the mapped "
                      f"ops' {pf['mapped_param_bytes'] / mib:.2f} MiB → on-chip "
                      f"{pf['on_chip_bytes'] / mib:.2f}, off-chip "
                      f"{pf['off_chip_bytes'] / mib:.2f} MiB (cache ≈ 8 MiB); "
                      f"{cpu_params / mib:.2f} MiB stay on the CPU")


def fleet_table(title: str, columns: list[str], rows: list[tuple]) -> None:
    """One table for a run on several boards: ROWS are (board, [cells]) or (board, error[,
    what]) — a failure spans the row, in red, with the error's own words."""
    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape

    from ...errors import EdgeDeployError

    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")
    for row in rows:
        board, body = row[0], row[1]
        if isinstance(body, EdgeDeployError):
            what = f"{row[2]}: " if len(row) > 2 else ""
            cells = [f"[red]FAILED[/red] {escape(what + str(body))}"] + \
                [""] * (len(columns) - 2)
            t.add_row(escape(board), *cells)
        else:
            t.add_row(escape(board), *[escape(str(c)) for c in body])
    Console(width=max(Console().width, 160)).print(t)
