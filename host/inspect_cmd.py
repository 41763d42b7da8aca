"""``edgedeploy inspect MODEL.tflite [--target coral]``: every op of a model, and the Edge TPU
preflight, without TensorFlow."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .compiler.preflight import edgetpu_preflight
from .compiler.tflite_reader import read_model


def inspect_payload(path: Path, target: str | None) -> dict:
    info = read_model(path)
    payload = {"file": str(path), "size": info.size, "schema_version": info.version,
               "subgraphs": info.subgraphs, "param_bytes": info.param_bytes,
               "inputs": [_tensor(t) for t in info.inputs],
               "outputs": [_tensor(t) for t in info.outputs],
               "ops": [{"index": op.index, "type": op.type, "version": op.version,
                        "subgraph": op.subgraph, "signature": op.signature,
                        "inputs": [_tensor(t) for t in op.inputs if not t.const],
                        "outputs": [_tensor(t) for t in op.outputs]} for op in info.ops]}
    if target == "coral":
        payload["edgetpu"] = edgetpu_preflight(info).to_dict()
    return payload


def _tensor(t) -> dict:
    d = asdict(t)
    d.pop("index", None)
    return d


def render(payload: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 140))
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
