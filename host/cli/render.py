"""Everything the CLI prints: one line per result, rich tables, JSON. The handlers decide what
to show; this module only says how."""

from __future__ import annotations

import json
import sys
from typing import Any

from ...device import protocol


def emit(as_json: bool, payload: Any, text: str) -> None:
    """PAYLOAD as JSON (--json), else TEXT."""
    print(json.dumps(payload, indent=2) if as_json else text)


def error(command: str, message: str) -> None:
    print(f"edgedeploy {command}: error: {message}", file=sys.stderr)


def push_line(r: Any) -> str:
    state = f"active (previous {r.previous})" if r.activated else "installed"
    return (f"{r.board}: {r.name} {r.version} ({r.label}) {state}; {sent_text(r)}"
            f"{', agent updated' if r.agent_uploaded else ''} in {r.seconds:.2f} s")


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
    t = b.raw["timing"]
    return (f"{board}: {b.model.name} {b.model.version} ({b.model.mode}, {b.runtime} "
            f"{b.runtime_version}, {b.threads} thread(s), delegate {b.delegate or 'none'}): "
            f"p50 {t['p50_ms']:.3f} ms, p90 {t['p90_ms']:.3f}, p99 {t['p99_ms']:.3f}, "
            f"load {b.load_ms:.1f} ms, peak RSS {b.peak_rss_bytes // 1024} KB")


def eval_line(board: str, e: protocol.Eval) -> str:
    return (f"{board}: {e.model.name} {e.model.version} ({e.model.mode}): top-1 "
            f"{100 * e.top1:.2f}% on {e.samples} samples"
            + (f", agreement {100 * e.agreement:.2f}%" if e.agreement is not None else ""))


def status_lines(rows: list[dict]) -> str:
    out = []
    for st in rows:
        if "error" in st:
            out.append(f"{st['board']}: UNREACHABLE/FAILED: {st['error']}")
            continue
        models = ", ".join(f"{m['name']} {m['current']} (previous {m['previous']})"
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
    if "wave" in ev:
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

    t = Table(title=f"edgedeploy results ({path})")
    for c in ("board", "model", "label", "version", "runtime", "size KB", "sent", "accuracy",
              "p50 ms", "p99 ms"):
        t.add_column(c, justify="right")
    for ln in lines:
        t.add_row(ln["board"], ln["model"] or "", ln["label"] or "", ln["version"],
                  ln["runtime"] or "", f"{ln['size'] / 1024:.1f}" if ln["size"] else "–",
                  ln.get("sent") or "–",
                  f"{100 * ln['accuracy']:.2f}%" if ln["accuracy"] is not None else "–",
                  f"{ln['p50_ms']:.3f}" if ln["p50_ms"] else "–",
                  f"{ln['p99_ms']:.3f}" if ln["p99_ms"] else "–")
    Console(width=140).print(t)


def inspect_table(payload: dict) -> None:
    """`edgedeploy inspect`: the model's tensors, every op, the Edge TPU verdicts."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
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
    pf = payload.get("edgetpu")
    if pf:
        mib = 1024 * 1024
        console.print(f"Edge TPU preflight: {pf['n_edgetpu']} of {len(pf['ops'])} ops map "
                      f"([bold]{pf['verdict']}[/bold]); parameters {pf['param_bytes'] / mib:.2f} "
                      f"MiB → on-chip {pf['on_chip_bytes'] / mib:.2f} MiB, off-chip "
                      f"{pf['off_chip_bytes'] / mib:.2f} MiB (cache ≈ 8 MiB)")
