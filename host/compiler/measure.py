"""Figures measured on the host through the TFLite interpreter: accuracy, agreement with the
float32 model, single-thread latency. The measuring code is the board's own
(``edgedeploy.device.evaluate`` and ``.bench``), so host and board figures mean the same thing.
"""

from __future__ import annotations

import numpy as np

from ...device import bench, evaluate
from ...device.runtime import make_interpreter


def outputs_for(model: bytes, x: np.ndarray, source: str) -> np.ndarray:
    interp = make_interpreter(model, num_threads=1)
    return evaluate.run_dataset(interp, x, source)


def host_figures(model: bytes, x: np.ndarray, y: np.ndarray, *, source: str,
                 reference: np.ndarray | None, latency_runs: int, warmup: int = 20) -> dict:
    interp = make_interpreter(model, num_threads=1)
    out = evaluate.run_dataset(interp, x, source)
    acc = evaluate.accuracy(out, y, source)
    figures: dict = {"eval_data": source, "samples": acc.samples, "accuracy": acc.top1,
                     "top5_accuracy": acc.top5, "threads": 1}
    if reference is not None:
        agree = evaluate.agreement(out, reference)
        figures.update(top1_agreement=agree.top1_agreement, mean_abs_error=agree.mean_abs_error,
                       max_abs_error=agree.max_abs_error)
    if latency_runs > 0:
        t = bench.time_invokes(interp, runs=latency_runs, warmup=warmup,
                               inputs=[evaluate.quantize(x[:1], interp.get_input_details()[0])])
        figures["latency_ms"] = {"p50": t.p50_ms, "p90": t.p90_ms, "p99": t.p99_ms,
                                 "mean": t.mean_ms, "min": t.min_ms, "runs": t.runs}
    return figures


def check_eval_labels(model: bytes, y: np.ndarray, source: str) -> None:
    """Labels must index the model's output classes (checked before anything is written)."""
    interp = make_interpreter(model, num_threads=1)
    n_classes = int(np.prod(interp.get_output_details()[0]["shape"][1:]))
    if len(y) and y.max() >= n_classes:
        from ...errors import InputError
        raise InputError(f"{source}: labels y go up to {int(y.max())}, the model has "
                         f"{n_classes} output classes [0, {n_classes - 1}]")
