"""Figures measured on the host through the TFLite interpreter: accuracy, error against the
float32 model, single-thread latency. The measuring code is the board's own
(``edgedeploy.device.evaluate`` and ``.bench``), so host and board figures mean the same thing.

Inputs and outputs are matched by name (device/evaluate.py); ``output`` names the output labels
refer to (needed when a model has several and the data has labels).
"""

from __future__ import annotations

import numpy as np

from ...device import bench, evaluate
from ...device.runtime import make_interpreter
from .data import Labelled


def outputs_for(model: bytes, xs: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Every output (key → [N, ...] float32) of MODEL on the inputs XS."""
    interp = make_interpreter(model, num_threads=1)
    ins, outs = evaluate.ports(interp)
    found = evaluate.match(list(xs), ins, source, single="x", what="input")
    return evaluate.run_outputs(interp, ins, outs, {k: xs[v] for k, v in found.items()}, source)


def host_figures(model: bytes, ev: Labelled, *, source: str,
                 reference: dict[str, np.ndarray] | None, latency_runs: int,
                 output: str | None = None, warmup: int = 20) -> dict:
    interp = make_interpreter(model, num_threads=1)
    ins, outs = evaluate.ports(interp)
    found = evaluate.match(list(ev.x), ins, source, single="x", what="input")
    xs = {k: ev.x[v] for k, v in found.items()}
    out = evaluate.run_outputs(interp, ins, outs, xs, source)
    top = evaluate.pick_output(outs, output, labels=ev.y is not None, source=source)
    figures: dict = {"eval_data": source, "samples": len(ev), "threads": 1,
                     "output": top.key if top else None}
    if ev.y is not None and top is not None:
        acc = evaluate.accuracy(out[top.key], ev.y, source)
        figures.update(accuracy=acc.top1, top5_accuracy=acc.top5)
    if reference is not None:
        errs = [evaluate.error_stats(p.key, out[p.key], reference[p.key], "float32 reference")
                for p in outs]
        figures["outputs"] = {e.output: {"max_abs_error": e.max_abs_error,
                                         "mean_abs_error": e.mean_abs_error,
                                         "cosine": e.cosine} for e in errs}
        figures["max_abs_error"] = max(e.max_abs_error for e in errs)
        figures["mean_abs_error"] = float(np.mean([e.mean_abs_error for e in errs]))
        figures["min_cosine"] = min(e.cosine for e in errs)
        if top is not None:
            agree = evaluate.agreement(out[top.key], reference[top.key])
            figures.update(top1_agreement=agree.top1_agreement)
    if latency_runs > 0:
        first = [evaluate.quantize(xs[p.key][:1], p.detail) for p in ins]
        t = bench.time_invokes(interp, runs=latency_runs, warmup=warmup, inputs=first)
        figures["latency_ms"] = {"p50": t.p50_ms, "p90": t.p90_ms, "p99": t.p99_ms,
                                 "mean": t.mean_ms, "min": t.min_ms, "runs": t.runs}
    return figures


def check_eval(model: bytes, ev: Labelled, source: str, output: str | None) -> None:
    """Before anything is written: the data fits the inputs, ``--output`` names an output, and
    labels index the chosen output's classes."""
    from ...errors import InputError

    interp = make_interpreter(model, num_threads=1)
    ins, outs = evaluate.ports(interp)
    evaluate.match(list(ev.x), ins, source, single="x", what="input")
    top = evaluate.pick_output(outs, output, labels=ev.y is not None, source=source)
    if ev.y is None or top is None:
        return
    n_classes = int(np.prod(top.detail["shape"][1:]))
    if len(ev.y) and ev.y.max() >= n_classes:
        raise InputError(f"{source}: labels y go up to {int(ev.y.max())}, output {top.key!r} has "
                         f"{n_classes} classes [0, {n_classes - 1}]")
