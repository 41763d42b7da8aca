"""``compile_model``: check every input, then convert each mode, measure, write atomically.

All inputs (model, calibration, training and evaluation data, option combinations) are checked
before the first file is written, so bad input leaves the output folder as it was. Each model and
manifest is written to a temporary name in the output folder, fsync'd, then renamed.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ... import __version__
from ...device.manifest import Manifest, TensorSpec, sha256_file
from ...device.store import write_atomic as atomic_write
from ...errors import EdgeDeployError, InputError
from . import data as datamod
from . import edgetpu, measure
from .convert import SourceModel, convert, load_source, versions
from .modes import Plan, Training, io_for, label, plan_modes
from .preflight import edgetpu_preflight
from .tflite_reader import TensorInfo, float_ops, read_model


@dataclass
class CompileOptions:
    model: Path
    mode: str
    out: Path
    calib: Path | None = None
    calib_samples: int | None = None
    io: str | None = None
    allow_float_fallback: bool = False
    num_segments: int | None = None
    min_runtime_version: str | None = None
    training: Training = field(default_factory=Training)
    train_data: Path | None = None
    eval_data: Path | None = None
    latency_runs: int = 200
    name: str | None = None


@dataclass
class ModeResult:
    mode: str
    label: str
    ok: bool
    manifest: Manifest | None = None
    model_path: Path | None = None
    manifest_path: Path | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class CompileReport:
    source: dict
    plan: Plan
    results: list[ModeResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def tensor_specs(tensors: list[TensorInfo]) -> list[TensorSpec]:
    """Manifest specs from the flatbuffer (the same names, indices and quantization the
    interpreter reports: a test checks that)."""
    return [TensorSpec(t.name, t.index, list(t.shape), t.dtype,
                       float(t.scale[0]) if t.scale else 0.0,
                       int(t.zero_point[0]) if t.zero_point else 0) for t in tensors]


def _gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, 6))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Inputs:
    src: SourceModel
    calib: np.ndarray | None
    calib_info: dict | None
    train: tuple[np.ndarray, np.ndarray] | None
    eval: tuple[np.ndarray, np.ndarray] | None


def _check_inputs(opts: CompileOptions) -> tuple[_Inputs, Plan]:
    plan = plan_modes(opts.mode, has_calib=opts.calib is not None or opts.train_data is not None,
                      training=opts.training, io=opts.io)
    if opts.training.active and opts.train_data is None:
        raise InputError(f"--{opts.training.tag.rstrip('0123456789')} fine-tunes the model and "
                         f"needs --train DATA (an .npz with x and y)")
    if opts.num_segments is not None and opts.num_segments < 1:
        raise InputError(f"--num-segments must be at least 1, got {opts.num_segments}")
    if opts.latency_runs < 0:
        raise InputError(f"--latency-runs must be 0 or more, got {opts.latency_runs}")
    if opts.out.exists() and not opts.out.is_dir():
        raise InputError(f"{opts.out}: exists and is not a folder", hint="give --out a folder")
    src = load_source(opts.model)
    if any(d < 0 for d in src.sample_shape):
        raise InputError(f"{opts.model}: input shape {src.sample_shape} has unknown dimensions; "
                         f"TFLite models for boards need a fixed input shape")
    train = datamod.load_labelled(opts.train_data, src.sample_shape) if opts.train_data else None
    calib = calib_info = None
    if opts.calib is not None:
        calib = datamod.load_calibration(opts.calib, src.sample_shape, opts.calib_samples)
        digest = sha256_file(opts.calib) if opts.calib.is_file() else "folder"
        calib_info = datamod.summary(calib, str(opts.calib), digest)
    elif train is not None and any(m in ("int8", "int16x8", "edgetpu") for m in plan.modes):
        calib = train[0][: opts.calib_samples or 200]
        assert opts.train_data is not None  # train came from it
        calib_info = datamod.summary(calib, f"{opts.train_data} (x, training split)",
                                     sha256_file(opts.train_data))
    ev = datamod.load_labelled(opts.eval_data, src.sample_shape) if opts.eval_data else None
    return _Inputs(src, calib, calib_info, train, ev), plan


def compile_model(opts: CompileOptions, progress: Callable[[str], None] | None = None
                  ) -> CompileReport:
    say = progress or (lambda _m: None)
    inputs, plan = _check_inputs(opts)
    src = inputs.src
    name = opts.name or (src.path.name if src.format == "saved_model" else src.path.stem)
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"--name {name!r}: not usable as a file name")

    keras_model = None
    if opts.training.active:
        assert inputs.train is not None
        say(f"fine-tuning with {opts.training.tag} for {opts.training.epochs} epoch(s)")
        from .training import optimize
        keras_model = optimize(src, opts.training, *inputs.train)

    reference = None
    ev_source = str(opts.eval_data) if opts.eval_data else ""
    if inputs.eval is not None:
        say("float32 reference outputs")
        ref_model = convert(src, "float32", keras_model=None)
        measure.check_eval_labels(ref_model, inputs.eval[1], ev_source)
        reference = measure.outputs_for(ref_model, inputs.eval[0], ev_source)

    opts.out.mkdir(parents=True, exist_ok=True)
    conv_versions = {**versions(), "edgedeploy": __version__}
    results: list[ModeResult] = []
    for mode in plan.modes:
        say(f"converting {mode}")
        io = io_for(mode, opts.io)
        try:
            model = convert(src, mode, keras_model=keras_model, calib=inputs.calib, io=io,
                            allow_float_fallback=opts.allow_float_fallback and mode != "edgetpu",
                            qat=opts.training.qat)
            results.append(_finish(opts, name, mode, io, model, inputs, reference, conv_versions,
                                   say))
        except EdgeDeployError as exc:
            if opts.mode != "all":
                raise
            results.append(ModeResult(mode, label(mode, opts.training), False, error=str(exc)))
    return CompileReport(src.describe(), plan, results)


def _finish(opts: CompileOptions, name: str, mode: str, io: str, model: bytes, inputs: _Inputs,
            reference, conv_versions: dict, say) -> ModeResult:
    # gzip (zlib releases the GIL) runs beside the checks and measurements below
    pool = ThreadPoolExecutor(max_workers=1)
    gzip_future = pool.submit(_gzip_size, model)
    try:
        return _finish_mode(opts, name, mode, io, model, inputs, reference, conv_versions, say,
                            gzip_future)
    finally:
        pool.shutdown(wait=True)


def _finish_mode(opts, name, mode, io, model, inputs, reference, conv_versions, say,
                 gzip_future) -> ModeResult:
    info = read_model(model)
    float_left = [f"{op.type}#{op.index}" for op in float_ops(info)]
    notes: list[str] = []
    etpu: dict | None = None
    final = model
    compiled = True
    if mode == "edgetpu":
        pf = edgetpu_preflight(info)
        etpu = {"preflight": pf.to_dict(), "compiled": False}
        compiler = edgetpu.find_compiler()
        if compiler is None:
            compiled = False
            etpu["message"] = edgetpu.ABSENT_MESSAGE
            notes.append(edgetpu.ABSENT_MESSAGE)
        else:
            say("running edgetpu_compiler")
            final, log, _text = edgetpu.compile_for_edgetpu(
                model, compiler, num_segments=opts.num_segments,
                min_runtime_version=opts.min_runtime_version)
            etpu.update(compiled=True, log=log.to_dict(), compiler=compiler)
        notes.append(f"Edge TPU preflight: {pf.n_edgetpu} of {len(pf.ops)} ops map ({pf.verdict})")
    lbl = label(mode, opts.training, compiled_for_edgetpu=compiled)
    figures = None
    if inputs.eval is not None:
        if mode == "edgetpu" and compiled:
            notes.append("host figures measured on the int8 model before Edge TPU compilation")
        say(f"measuring {lbl} on {opts.eval_data}")
        figures = measure.host_figures(model, *inputs.eval, source=str(opts.eval_data),
                                       reference=reference, latency_runs=opts.latency_runs)
    sha = hashlib.sha256(final).hexdigest()
    fname = f"{name}.{lbl}.tflite"
    integer = mode in ("int8", "int16x8", "edgetpu")
    quant = {"io": io, "float_fallback": bool(float_left) if integer else None,
             "float_ops": float_left if integer else [],
             "calibration": inputs.calib_info if integer and not opts.training.qat else None}
    training = {"qat": opts.training.qat, "prune": opts.training.prune,
                "cluster": opts.training.cluster,
                "epochs": opts.training.epochs if opts.training.active else None,
                "data": str(opts.train_data) if opts.training.active else None}
    manifest = Manifest(
        name=name, version=sha[:12], mode=mode, label=lbl, file=fname, sha256=sha,
        size=len(final), gzip_size=gzip_future.result() if final is model else _gzip_size(final),
        inputs=tensor_specs(info.inputs), outputs=tensor_specs(info.outputs),
        quantization=quant, training=training, source=inputs.src.describe(),
        converter=conv_versions, edgetpu=etpu, host_figures=figures, created=_now())
    model_path = opts.out / fname
    manifest_path = opts.out / f"{name}.{lbl}.manifest.json"
    atomic_write(model_path, final)
    atomic_write(manifest_path, manifest.to_json().encode())
    return ModeResult(mode, lbl, True, manifest, model_path, manifest_path, notes=notes)
