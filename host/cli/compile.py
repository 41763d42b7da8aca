"""``edgedeploy compile`` and ``edgedeploy inspect``: the host side, no board involved."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import RAW
from .render import emit, inspect_table

if TYPE_CHECKING:
    from ..compiler import CompileOptions

COMPILE_EXAMPLES = """examples:
  edgedeploy compile digits.keras --mode float16 --out out/
  edgedeploy compile digits.keras --mode int8 --calib calib.npz --io uint8 --out out/
  edgedeploy compile digits.keras --mode all --calib calib.npz --eval test.npz --out out/
  edgedeploy compile digits.keras --mode int8 --qat --train train.npz --epochs 2 --out out/
  edgedeploy compile digits.keras --mode dynamic --prune 0.5 --train train.npz --out out/
  edgedeploy compile saved_model/ --mode edgetpu --calib images/ --out out/

Each compile writes NAME.MODE.tflite and NAME.MODE.manifest.json into --out.
With --mode all it also writes NAME.compare.json and, with --eval, NAME.compare.png."""

INSPECT_EXAMPLES = """examples:
  edgedeploy inspect out/digits.int8.tflite
  edgedeploy inspect out/digits.edgetpu-int8.tflite --target coral
  edgedeploy inspect out/digits.float32.tflite --target coral --json"""


def register(sub: Any) -> None:
    from ..compiler.modes import MODES

    c = sub.add_parser("compile", help="Keras/SavedModel → TFLite in one mode or all of them",
                       description="Convert MODEL (.keras, .h5 or a SavedModel folder) to "
                                   "TFLite.", epilog=COMPILE_EXAMPLES, formatter_class=RAW)
    c.add_argument("model", type=Path, metavar="MODEL")
    c.add_argument("--mode", required=True, choices=[*MODES, "all"])
    c.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    c.add_argument("--name", help="NAME of the outputs (default: the model file's stem)")
    q = c.add_argument_group("quantization")
    q.add_argument("--calib", type=Path, metavar="DATA",
                   help="representative inputs: .npz (x) / .npy, or a folder of images")
    q.add_argument("--calib-samples", type=int, metavar="N", help="use the first N samples")
    q.add_argument("--io", choices=["float32", "int8", "uint8", "int16"],
                   help="input/output tensor type (int8: float32|int8|uint8; edgetpu: uint8|int8)")
    q.add_argument("--allow-float-fallback", action="store_true",
                   help="let ops that cannot be integer-only stay float (int8, int16x8)")
    e = c.add_argument_group("Edge TPU")
    e.add_argument("--num-segments", type=int, metavar="N", help="edgetpu_compiler -n")
    e.add_argument("--min-runtime-version", metavar="V", help="edgetpu_compiler -m")
    t = c.add_argument_group("training-time optimization (one at a time; needs --train)")
    t.add_argument("--train", type=Path, metavar="DATA", help=".npz with x and y")
    t.add_argument("--epochs", type=int, default=2, metavar="N", help="fine-tune epochs (2)")
    t.add_argument("--qat", action="store_true", help="quantization-aware training")
    t.add_argument("--prune", type=float, metavar="SPARSITY", help="magnitude pruning, e.g. 0.5")
    t.add_argument("--cluster", type=int, metavar="K", help="weight clustering into K clusters")
    m = c.add_argument_group("measurement")
    m.add_argument("--eval", type=Path, metavar="DATA",
                   help=".npz with x, y: accuracy, agreement with float32, latency on this host")
    m.add_argument("--latency-runs", type=int, default=200, metavar="N",
                   help="timed single-thread invokes per model (200)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=run_compile)

    i = sub.add_parser("inspect", help="list a .tflite model's ops; Edge TPU preflight",
                       description="Read a .tflite file (no TensorFlow needed) and list its "
                                   "ops; with --target coral, predict the Edge TPU mapping.",
                       epilog=INSPECT_EXAMPLES, formatter_class=RAW)
    i.add_argument("model", type=Path, metavar="MODEL.tflite")
    i.add_argument("--target", choices=["coral"], help="predict the Edge TPU op mapping")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_inspect)


def run_compile(a: argparse.Namespace) -> int:
    from ..compiler import CompileOptions, Training

    opts = CompileOptions(
        model=a.model, mode=a.mode, out=a.out, calib=a.calib, calib_samples=a.calib_samples,
        io=a.io, allow_float_fallback=a.allow_float_fallback, num_segments=a.num_segments,
        min_runtime_version=a.min_runtime_version,
        training=Training(qat=a.qat, prune=a.prune, cluster=a.cluster, epochs=a.epochs),
        train_data=a.train, eval_data=a.eval, latency_runs=a.latency_runs, name=a.name)
    return compile_command(opts, as_json=a.json)


def compile_command(opts: "CompileOptions", *, as_json: bool) -> int:
    """Compile as OPTS say; the table (or JSON); 0 when every mode asked for compiled."""
    from rich.console import Console

    from ..compiler import compile_model
    from ..compiler import report as rep

    with Console(stderr=True).status("compiling…") as status:
        result = compile_model(opts, progress=lambda msg: status.update(msg))
    table = rep.rows(result)
    payload = rep.to_json(result, table)
    name = result.results[0].manifest.name if result.results and result.results[0].manifest \
        else (opts.name or opts.model.stem)
    if opts.mode == "all":
        rep.write_json(opts.out / f"{name}.compare.json", payload)
        if rep.plot(table, opts.out / f"{name}.compare.png", title=name):
            payload["plot"] = str(opts.out / f"{name}.compare.png")
    if as_json:
        print(json.dumps(payload, indent=2))
    else:
        rep.render(table)
        for mode, why in result.plan.skipped:
            print(f"skipped {mode}: {why}")
        for r in result.results:
            for note in r.notes:
                print(f"{r.label}: {note}")
            if r.ok:
                print(f"wrote {r.model_path} and {r.manifest_path}")
        if "plot" in payload:
            print(f"wrote {opts.out / (name + '.compare.json')} and {payload['plot']}")
    return 0 if result.ok else 1


def run_inspect(a: argparse.Namespace) -> int:
    return inspect_command(a.model, a.target, as_json=a.json)


def inspect_command(model: Path, target: str | None, *, as_json: bool) -> int:
    from ..inspect_cmd import inspect_payload

    payload = inspect_payload(model, target)
    if as_json:
        emit(True, payload, "")
    else:
        inspect_table(payload)
    return 0
