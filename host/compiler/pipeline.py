"""``compile_model``: check every input, then convert each mode, measure, write atomically.

All inputs (model, calibration, training and evaluation data, option combinations) are checked
before the first file is written, so bad input leaves the output folder as it was. Each model and
manifest is written to a temporary name in the output folder, fsync'd, then renamed.

A ``.tflite`` is imported, not converted (importer.py): its file is copied as
``NAME.MODE.tflite`` with a manifest read from the flatbuffer, and ``--eval`` measures it.

With ``--eval``, the source model converted to float32 is measured too and shown as the
``source`` baseline row (its outputs are the reference every mode's error is measured against).
A training-time optimization is checked against that baseline: a drop of more than
``ACCURACY_WARN_PTS`` points is a warning that says how many epochs were used (without
``--eval``, the check runs on the training data in Keras).
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ... import __version__
from ...device.manifest import Manifest, sha256_file
from ...device.store import write_atomic as atomic_write
from ...errors import EdgeDeployError, InputError
from . import data as datamod
from . import edgetpu, measure
from .importer import import_manifest, requirements, tensor_specs
from .modes import Plan, Training, io_for, label, plan_modes
from .preflight import edgetpu_preflight
from .source import SourceModel, load_source
from .tflite_reader import float_ops, read_model

ACCURACY_WARN_PTS = 2.0
BASELINE = "source-float32"


@dataclass
class CompileOptions:
    model: Path
    mode: str | None
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
    output: str | None = None           # the output labels refer to (several outputs)


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
    baseline: dict | None = None        # the source model as float32: size, host figures
    training: dict | None = None        # tag, epochs, samples, accuracy before/after
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def _gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, 6))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Inputs:
    src: SourceModel
    calib: dict | None
    calib_info: dict | None
    train: datamod.Labelled | None
    eval: datamod.Labelled | None


def is_tflite(path: Path) -> bool:
    return path.suffix.lower() == ".tflite" and not path.is_dir()


def _check_common(opts: CompileOptions) -> None:
    if opts.num_segments is not None and opts.num_segments < 1:
        raise InputError(f"--num-segments must be at least 1, got {opts.num_segments}")
    if opts.latency_runs < 0:
        raise InputError(f"--latency-runs must be 0 or more, got {opts.latency_runs}")
    if opts.out.exists() and not opts.out.is_dir():
        raise InputError(f"{opts.out}: exists and is not a folder", hint="give --out a folder")


def _check_inputs(opts: CompileOptions) -> tuple[_Inputs, Plan]:
    if opts.mode is None:
        raise InputError("--mode is needed to convert a Keras model or SavedModel",
                         hint="e.g. --mode float16, or --mode all")
    plan = plan_modes(opts.mode, has_calib=opts.calib is not None or opts.train_data is not None,
                      training=opts.training, io=opts.io)
    if opts.training.active and opts.train_data is None:
        raise InputError(f"--{opts.training.tag.rstrip('0123456789')} fine-tunes the model and "
                         f"needs --train DATA (an .npz with the inputs and y)")
    _check_common(opts)
    src = load_source(opts.model)
    for t in src.inputs:
        if any(d < 0 for d in t.shape):
            raise InputError(f"{opts.model}: input {t.name!r} has shape {t.shape} with unknown "
                             f"dimensions; TFLite models for boards need a fixed input shape")
    if opts.training.active and len(src.outputs) > 1:
        raise InputError(f"{opts.model}: fine-tuning a model with {len(src.outputs)} outputs is "
                         f"not supported (one loss per output would be needed)",
                         hint="compile without --qat/--prune/--cluster")
    train = datamod.load_labelled(opts.train_data, src.inputs) if opts.train_data else None
    calib = calib_info = None
    if opts.calib is not None:
        calib = datamod.load_calibration(opts.calib, src.inputs, opts.calib_samples)
        digest = sha256_file(opts.calib) if opts.calib.is_file() else "folder"
        calib_info = datamod.summary(calib, str(opts.calib), digest)
    elif train is not None and any(m in ("int8", "int16x8", "edgetpu") for m in plan.modes):
        n = opts.calib_samples or 200
        calib = {k: v[:n] for k, v in train.x.items()}
        assert opts.train_data is not None  # train came from it
        calib_info = datamod.summary(calib, f"{opts.train_data} (inputs, training split)",
                                     sha256_file(opts.train_data))
    ev = datamod.load_labelled(opts.eval_data, src.inputs, need_y=False) \
        if opts.eval_data else None
    return _Inputs(src, calib, calib_info, train, ev), plan


def compile_model(opts: CompileOptions, progress: Callable[[str], None] | None = None
                  ) -> CompileReport:
    say = progress or (lambda _m: None)
    if is_tflite(opts.model):
        return import_model(opts, say)
    inputs, plan = _check_inputs(opts)
    src = inputs.src
    name = opts.name or (src.path.name if src.format == "saved_model" else src.path.stem)
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"--name {name!r}: not usable as a file name")

    from .convert import convert, versions

    reference = None
    baseline: dict | None = None
    ev_source = str(opts.eval_data) if opts.eval_data else ""
    if inputs.eval is not None:
        say("float32 reference outputs")
        ref_model = convert(src, "float32", keras_model=None)
        measure.check_eval(ref_model, inputs.eval, ev_source, opts.output)
        reference = measure.outputs_for(ref_model, inputs.eval.x, ev_source)
        if opts.training.active or "float32" not in plan.modes:
            # the source model as a row of its own, where no float32 row already is it
            baseline = {"label": BASELINE, "size": len(ref_model),
                        "gzip_size": _gzip_size(ref_model),
                        "host_figures": measure.host_figures(
                            ref_model, inputs.eval, source=ev_source, reference=None,
                            latency_runs=opts.latency_runs, output=opts.output)}

    keras_model = None
    training: dict | None = None
    warnings: list[str] = []
    if opts.training.active:
        assert inputs.train is not None
        say(f"fine-tuning with {opts.training.tag} for {opts.training.epochs} epoch(s)")
        from .training import keras_accuracy, optimize
        keras_model = optimize(src, opts.training, inputs.train)
        training = {"tag": opts.training.tag, "epochs": opts.training.epochs,
                    "samples": len(inputs.train), "data": str(opts.train_data)}
        if inputs.eval is None:  # check the fine-tune on its own data, in Keras
            before = keras_accuracy(src.tf_keras(), inputs.train, src)
            after = keras_accuracy(keras_model, inputs.train, src)
            where = f"{opts.train_data} (training data)"
            training.update(check_data=where, accuracy_before=before, accuracy_after=after)
            warnings += accuracy_warnings(opts.training, [(opts.training.tag, after)], before,
                                          where)

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
    if opts.training.active and baseline is not None:
        base_acc = baseline["host_figures"].get("accuracy")
        rows = [(r.label, (r.manifest.host_figures or {}).get("accuracy")) for r in results
                if r.ok and r.manifest is not None]
        if training is not None:
            training.update(check_data=ev_source, accuracy_before=base_acc,
                            accuracy_after={lbl: acc for lbl, acc in rows})
        warnings += accuracy_warnings(opts.training, rows, base_acc, ev_source)
    return CompileReport(src.describe(), plan, results, baseline, training, warnings)


def accuracy_warnings(t: Training, rows: list[tuple[str, float | None]], before: float | None,
                      where: str) -> list[str]:
    """Pure: one warning per row whose accuracy fell more than ACCURACY_WARN_PTS points below
    BEFORE after the fine-tune of T."""
    out: list[str] = []
    if before is None:
        return out
    for lbl, acc in rows:
        if acc is None or round((before - acc) * 100, 6) <= ACCURACY_WARN_PTS:
            continue
        advice = "try more --epochs (e.g. 10)"
        if t.prune is not None:
            advice += " or a lower --prune sparsity"
        elif t.cluster is not None:
            advice += " or more --cluster centroids"
        out.append(f"{lbl}: accuracy fell {(before - acc) * 100:.1f} points ({100 * before:.1f}% "
                   f"→ {100 * acc:.1f}%) on {where} after {t.epochs} epoch(s) of "
                   f"{t.tag} fine-tuning: {advice}")
    return out


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
        figures = measure.host_figures(model, inputs.eval, source=str(opts.eval_data),
                                       reference=reference, latency_runs=opts.latency_runs,
                                       output=opts.output)
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
    final_info = info if final is model else read_model(final)
    ins, outs = tensor_specs(final_info)
    manifest = Manifest(
        name=name, version=sha[:12], mode=mode, label=lbl, file=fname, sha256=sha,
        size=len(final), gzip_size=gzip_future.result() if final is model else _gzip_size(final),
        inputs=ins, outputs=outs, quantization=quant, training=training,
        source=inputs.src.describe(), converter=conv_versions, edgetpu=etpu,
        host_figures=figures, requires=requirements(final_info), created=_now())
    model_path = opts.out / fname
    manifest_path = opts.out / f"{name}.{lbl}.manifest.json"
    atomic_write(model_path, final)
    atomic_write(manifest_path, manifest.to_json().encode())
    return ModeResult(mode, lbl, True, manifest, model_path, manifest_path, notes=notes)


_NOT_FOR_IMPORT = (("calib", "--calib"), ("calib_samples", "--calib-samples"), ("io", "--io"),
                   ("train_data", "--train"), ("num_segments", "--num-segments"),
                   ("min_runtime_version", "--min-runtime-version"))


def import_model(opts: CompileOptions, say) -> CompileReport:
    """``compile X.tflite``: no conversion. The file is copied as NAME.MODE.tflite with a
    manifest read from its flatbuffer (``source.imported``); ``--eval`` measures it."""
    given = [flag for attr, flag in _NOT_FOR_IMPORT if getattr(opts, attr) is not None]
    if opts.training.active:
        given.append(f"--{opts.training.tag.rstrip('0123456789')}")
    if opts.allow_float_fallback:
        given.append("--allow-float-fallback")
    if given:
        raise InputError(f"{opts.model}: a .tflite is imported as it is (no conversion), so "
                         f"{', '.join(given)} do(es) not apply", hint="drop those options")
    _check_common(opts)
    data = opts.model.read_bytes() if opts.model.is_file() else None
    if data is None:
        raise InputError(f"{opts.model}: no such file")
    m = import_manifest(opts.model, data, name=opts.name)
    if opts.mode not in (None, "all") and opts.mode != m.mode:
        raise InputError(f"{opts.model}: a {m.mode} model (read from the file); compile imports "
                         f"a .tflite as it is and cannot make it {opts.mode}",
                         hint=f"drop --mode, or compile the source model with --mode {opts.mode}")
    name = m.name
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"--name {name!r}: not usable as a file name")
    notes = [f"imported as it is (no conversion): mode {m.mode} read from the file"]
    if m.requires and m.requires.get("min_runtime"):
        notes.append(f"needs a TFLite runtime of TensorFlow {m.requires['min_runtime']} or newer")
    if opts.eval_data is not None:
        # quantized inputs take float data (quantized on the way in), as for compiled models
        inputs = [datamod.TensorIO(s.key or s.name, list(s.shape[1:]),
                                   "float32" if s.scale else s.dtype) for s in m.inputs]
        ev = datamod.load_labelled(opts.eval_data, inputs, need_y=False)
        if m.edgetpu:
            notes.append("an Edge TPU-compiled model runs only with the Edge TPU delegate: "
                         "--eval skipped on this host")
        else:
            measure.check_eval(data, ev, str(opts.eval_data), opts.output)
            say(f"measuring {m.label} on {opts.eval_data}")
            m.host_figures = measure.host_figures(data, ev, source=str(opts.eval_data),
                                                  reference=None,
                                                  latency_runs=opts.latency_runs,
                                                  output=opts.output)
    m.file = f"{name}.{m.label}.tflite"
    m.source["path"] = str(opts.model)
    opts.out.mkdir(parents=True, exist_ok=True)
    model_path = opts.out / m.file
    manifest_path = opts.out / f"{name}.{m.label}.manifest.json"
    atomic_write(model_path, data)
    atomic_write(manifest_path, m.to_json().encode())
    plan = Plan((m.mode,), ())
    return CompileReport(dict(m.source), plan,
                         [ModeResult(m.mode, m.label, True, m, model_path, manifest_path,
                                     notes=notes)])
