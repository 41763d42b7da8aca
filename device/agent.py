"""``edgedeploy-agent``: the board side. One JSON message on stdout per command (see
protocol.py), progress on stderr, exit status 0 / the error's exit code.

Runs with the standard library, numpy and one TFLite runtime — shipped as the zipapp
``edgedeploy-agent.pyz`` (see ship.py), or installed as the ``edgedeploy-agent`` script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..errors import EdgeDeployError, InputError
from . import protocol
from .batch import batch, stdout_gone  # noqa: F401  (agent.batch: the deployer's protocol)
from .fsio import checkpoint

def build_parser() -> argparse.ArgumentParser:
    """The command line (agent_args.py)."""
    from .agent_args import build_parser as parser

    return parser()


def _model_info(name: str, version: str, m) -> dict:
    return {"name": name, "version": version, "mode": m.label, "sha256": m.sha256}


def _resolve(store, spec: str):
    """A stored NAME[@VERSION], or a path to a .tflite (with its manifest beside it if any)."""
    from .manifest import Manifest

    if spec.endswith(".tflite") and os.path.exists(spec):
        mpath = spec[:-len(".tflite")] + ".manifest.json"
        m = Manifest.load(mpath) if os.path.exists(mpath) else None
        info = _model_info(m.name, m.version, m) if m else {"path": spec}
        return info, spec, m
    name, version, m, path = store.resolve(spec)
    return _model_info(name, version, m), str(path), m


def _runtime_info(rt) -> dict:
    return {"name": rt.name, "version": rt.version}


def cmd_version(a, store) -> dict:
    import platform

    from .ship import identity

    return protocol.ok("version", **identity(), python=platform.python_version())


def cmd_info(a, store) -> dict:
    from .sysinfo import board_info

    return protocol.ok("info", **board_info(store.root, a.runtime))


def cmd_state(a, store) -> dict:
    from .sysinfo import board_info

    info = board_info(store.root, a.runtime, cached=True)
    if a.settled:
        with store.locked():
            models = store.listing(a.model)
    else:
        models = store.listing(a.model)
    return protocol.ok("state", agent=info["agent"], info=info, store=str(store.root),
                       incoming=str(store.incoming), data=str(store.data), models=models)


def cmd_install(a, store) -> dict:
    store.keep = a.keep
    try:
        with store.locked():
            got = store.install(a.bundle, move=a.remove_bundle)
            out = {"name": got.name, "version": got.version, "path": str(got.path),
                   "files": got.files, "bytes": got.bytes,
                   "already_present": got.already_present,
                   "delta": None if got.delta is None else {
                       "bytes": got.delta.patch_bytes,
                       "bases": [f"{b.name}@{b.version}" for b in got.delta.bases]}}
            if a.activate:
                ptr, removed = store.activate(got.name, got.version,
                                              allow_downgrade=a.allow_downgrade)
                out.update(current=ptr.current, previous=ptr.previous, removed=removed)
    finally:
        if a.remove_bundle and os.path.isdir(a.bundle) and not os.path.islink(a.bundle):
            import shutil

            shutil.rmtree(a.bundle, ignore_errors=True)
    return protocol.ok("install", **out)


def cmd_activate(a, store) -> dict:
    store.keep = a.keep
    with store.locked():
        ptr, removed = store.activate(a.name, a.version, allow_downgrade=a.allow_downgrade)
    return protocol.ok("activate", name=a.name, current=ptr.current, previous=ptr.previous,
                       removed=removed)


def cmd_rollback(a, store) -> dict:
    with store.locked():
        ptr = store.rollback(a.name)
    return protocol.ok("rollback", name=a.name, current=ptr.current, previous=ptr.previous)


def cmd_list(a, store) -> dict:
    return protocol.ok("list", store=str(store.root), models=store.listing())


def cmd_remove(a, store) -> dict:
    with store.locked():
        if a.version is None:
            versions = store.remove_model(a.name)
            return protocol.ok("remove", name=a.name, version=None, versions=versions,
                               removed=True)
        store.remove(a.name, a.version)
    return protocol.ok("remove", name=a.name, version=a.version, versions=[a.version],
                       removed=True)


def cmd_verify(a, store) -> dict:
    name, version, _, _ = store.resolve(a.spec)
    problems = store.verify(name, version)
    return protocol.ok("verify", name=name, version=version, valid=not problems,
                       problems=problems)


def cmd_bench(a, store) -> dict:
    from .bench import bench_model
    from .runtime import load_runtime

    info, path, m = _resolve(store, a.spec)
    rt = load_runtime(a.runtime)
    edgetpu = bool(m and m.edgetpu and m.edgetpu.get("compiled"))
    result = bench_model(path, runs=a.runs, warmup=a.warmup, threads=a.threads,
                         delegate=a.delegate, max_seconds=a.max_seconds, inputs_path=a.inputs,
                         op_profile=a.op_profile, edgetpu_model=edgetpu, runtime=rt,
                         manifest=m, allow_cpu=a.allow_cpu)
    if a.no_samples:
        result["timing"].pop("samples_ms", None)
    checkpoint("bench:measured")  # tests: a slow gate measurement (no store lock held)
    return protocol.ok("bench", model=info, runtime=_runtime_info(rt), **result)


def cmd_eval(a, store) -> dict:
    import numpy as np

    from .evaluate import accuracy, agreement, error_stats, match, pick_output, ports, \
        run_outputs
    from .runtime import load_runtime, make_interpreter

    info, path, m = _resolve(store, a.spec)
    data_path = a.data or _bundled(store, info, a.bundled_data, a.data_version)
    ref_path = a.reference or (_bundled(store, info, a.bundled_reference, a.data_version)
                               if a.bundled_reference else None)
    data_name = a.data_name or a.data or a.bundled_data
    ref_name = a.reference_name or a.reference or a.bundled_reference
    data = _load_arrays(data_path, data_name)
    ref = _load_arrays(ref_path, ref_name) if ref_path else None
    if ref is None and "y" not in data:
        raise InputError(f"{data_name}: no labels y and no --reference: nothing to compare with",
                         hint="add y (class ids) to the data, or pass --reference outputs")
    rt = load_runtime(a.runtime)
    interp = make_interpreter(path, num_threads=a.threads, runtime=rt)
    ins, outs = ports(interp, m)
    found = match(list(data), ins, data_name, single="x", what="input")
    top = pick_output(outs, a.output, labels="y" in data, source=data_name)
    ref_keys = match(list(ref), outs, ref_name, single="outputs", what="output",
                     ignore=()) if ref is not None else {}
    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or done == total and total >= 1000:
            last[0] = now
            print(f"eval {info.get('name', path)}: {done}/{total}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    outputs = run_outputs(interp, ins, outs, {k: data[v] for k, v in found.items()},
                          data_name, progress)
    seconds = time.perf_counter() - t0
    samples = len(next(iter(outputs.values()))) if outputs else 0
    acc = accuracy(outputs[top.key], data["y"], data_name) if "y" in data and top else None
    errors = [error_stats(p.key, outputs[p.key], ref[ref_keys[p.key]], ref_name).__dict__
              for p in outs] if ref is not None else None
    agree = agreement(outputs[top.key], ref[ref_keys[top.key]], ref_name).__dict__ \
        if ref is not None and top is not None else None
    blob = b"".join(np.ascontiguousarray(outputs[p.key]).tobytes() for p in outs)
    return protocol.ok("eval", model=info, runtime=_runtime_info(rt), data=data_name,
                       reference=ref_name, samples=samples, output=top.key if top else None,
                       outputs=[p.key for p in outs],
                       top1=acc.top1 if acc else None, top5=acc.top5 if acc else None,
                       agreement=agree, errors=errors, seconds=round(seconds, 4),
                       outputs_sha256=_sha_bytes(blob))


def _bundled(store, info: dict, rel: str, version: str | None) -> str:
    """The path of REL, a file the bundle of the evaluated model (or of VERSION of it)
    carried: the store's layout stays the agent's business."""
    if "name" not in info:
        raise InputError(f"{info.get('path')}: bundled files need a stored model (NAME[@V])")
    name, version = info["name"], version or info["version"]
    m = store.manifest(name, version)
    if rel not in (m.files or {}):
        raise InputError(f"model {name} version {version} carries no {rel!r}",
                         hint=f"it carries: {', '.join(m.files or {}) or 'no extra files'}")
    return str(store.version_dir(name, version) / rel)


def _sha_bytes(b: bytes) -> str:
    import hashlib

    return hashlib.sha256(b).hexdigest()


def _load_arrays(path: str, name: str) -> dict:
    """Every array of an .npz (an .npy is its one array, as ``x``); InputError naming NAME."""
    import numpy as np

    try:
        z = np.load(path, allow_pickle=False)
        if isinstance(z, np.ndarray):
            return {"x": z}
        with z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise InputError(f"{name}: no such file")
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{name}: not a readable .npz ({exc})") from exc


def cmd_probe(a, store) -> dict:
    from .probe import probe

    m = None
    if a.spec.endswith(".tflite") and os.path.exists(a.spec):
        info, path = {"path": a.spec}, a.spec
    else:
        info, path, m = _resolve(store, a.spec)
    r = probe(path, runtime=a.runtime, timeout=a.timeout,
              cache_dir=None if a.no_cache else store.probe_cache,
              edgetpu=bool(m and m.edgetpu and m.edgetpu.get("compiled")))
    d = r.to_dict()
    return protocol.ok("probe", model=info, loads=d.pop("ok"), **d)


def runs_check(runtime: str | None, cache_dir: str):
    """The store's check before a version may become current: device/probe.py's gate (the
    model loaded in a child process with this board's runtime; only a success is cached)."""
    def runs(path, manifest, what: str):
        from .probe import gate

        return gate(path, manifest, runtime=runtime, cache_dir=cache_dir, what=what)
    return runs


def cmd_serve(a, store) -> dict:
    from .serve import serve

    if a.socket is None and a.port is None and a.http_port is None:
        raise InputError("serve needs --socket PATH, --port N or --http-port N")
    serve(store, socket_path=a.socket, port=a.port, threads=a.threads, poll=a.poll,
          models=a.models, runtime=a.runtime, http_port=a.http_port, http_host=a.http_host,
          max_connections=a.max_connections)
    return protocol.ok("serve", stopped=True)


def cmd_agentd(a, store) -> dict:
    """--detach: start the resident agent in the background and answer at once; --stop."""
    from . import agentd

    if a.stop:
        return protocol.ok("agentd", **agentd.stop(str(store.root)))
    if a.pull_every is not None:
        from .pullcmd import check_saved

        check_saved(store.root, a.pull_every)  # a bad setting is said here, not lost
    return protocol.ok("agentd", **agentd.spawn(str(store.root), sys.argv[0],
                                                _prefix(a), a.idle, a.tag, a.pull_every))


def _prefix(a) -> list[str]:
    return (["--store", a.store] if a.store else []) + \
        (["--runtime", a.runtime] if a.runtime else [])


def cmd_pull(a, store) -> dict:
    from .pullcmd import cmd_pull as pull

    return pull(a, store)


def cmd_trust(a, store) -> dict:
    from .pullcmd import cmd_trust as trust

    return trust(a, store)


COMMANDS = {"pull": cmd_pull, "trust": cmd_trust, "version": cmd_version, "info": cmd_info,
            "state": cmd_state, "install": cmd_install,
            "activate": cmd_activate, "rollback": cmd_rollback, "list": cmd_list,
            "remove": cmd_remove, "verify": cmd_verify, "bench": cmd_bench, "eval": cmd_eval,
            "probe": cmd_probe, "serve": cmd_serve, "agentd": cmd_agentd}


def run(a: argparse.Namespace, store) -> tuple[int, dict]:
    """One parsed command against STORE: (exit status, the message)."""
    try:
        return 0, COMMANDS[a.command](a, store)
    except EdgeDeployError as exc:
        return exc.exit_code, protocol.error(exc.code, str(exc))
    except KeyboardInterrupt:
        return 130, protocol.error("error", "interrupted")
    except OSError as exc:  # the board's filesystem said no: name the file
        return 1, protocol.error("store_error",
                                 f"{exc.filename or store.root}: {exc.strerror or exc}")


def main(argv: list[str] | None = None) -> int:
    from .store import Store

    parser = build_parser()
    a = parser.parse_args(argv)
    from .store import PROBES

    from .agent_args import default_store

    root = a.store or default_store()
    store = Store(root, runs=runs_check(a.runtime, os.path.join(root, PROBES)))
    if a.command == "batch":
        return batch(parser, _prefix(a), store)
    if a.command == "agentd" and not (a.detach or a.stop):
        from .agentd import Daemon

        def serve_lines(lines, write, allowed, lock, gone) -> None:
            batch(parser, _prefix(a), store, lines, write, allowed, lock, gone)

        pull = None
        if a.pull_every:
            from .pullcmd import daemon_loop

            pull = daemon_loop(store, a.pull_every, a.runtime)
        return Daemon(str(store.root), a.idle, serve_lines, a.tag, pull).run()
    if a.within:
        from .lock import Guard

        store.guard = Guard(time.monotonic() + a.within)
    code, msg = run(a, store)
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
