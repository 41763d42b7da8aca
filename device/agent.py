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
from pathlib import Path

from ..errors import EdgeDeployError, InputError
from . import protocol
from .batch import batch, stdout_gone  # noqa: F401  (agent.batch: the deployer's protocol)
from .fsio import checkpoint

EXAMPLES = """examples:
  edgedeploy-agent info
  edgedeploy-agent --store /var/lib/edgedeploy install /tmp/digits-bundle/
  edgedeploy-agent activate digits 3f2a9c1b0d4e
  edgedeploy-agent bench digits --runs 1000 --warmup 50 --threads 1
  edgedeploy-agent eval digits --data test.npz --reference host_outputs.npz
  edgedeploy-agent eval digits@3f2a9c1b0d4e --bundled-data gate.npz --bundled-reference gate.npz
  edgedeploy-agent serve --socket /tmp/edgedeploy.sock

The store defaults to $EDGEDEPLOY_STORE, else ~/.edgedeploy/store."""


def default_store() -> str:
    return os.environ.get("EDGEDEPLOY_STORE") or str(Path.home() / ".edgedeploy" / "store")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgedeploy-agent", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Run, measure and keep TFLite models on this board. "
                                            "Prints one JSON message per command.")
    p.add_argument("--store", default=None, metavar="DIR",
                   help="model store folder (default $EDGEDEPLOY_STORE or ~/.edgedeploy/store)")
    p.add_argument("--runtime", choices=["litert", "tflite_runtime", "tensorflow"],
                   help="force a TFLite runtime (default: the first that imports)")
    p.add_argument("--within", type=float, metavar="S",
                   help="the deployer's deadline: a store change not started within S seconds "
                        "of receipt (the store lock still busy, or its client gone) is dropped, "
                        "nothing done")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("version", help="agent version and content hash")
    sub.add_parser("info", help="board facts: arch, Python, numpy, runtimes, delegates, CPU, "
                                "memory, disk")
    sub.add_parser("batch", help="read commands from stdin (a JSON argv list per line), "
                                 "answer each on a line; for deployers")
    ad = sub.add_parser("agentd", help="the resident agent: serve the store's control "
                                       "commands on STORE/agentd.sock (deployers reach it "
                                       "through SSH stream-local forwarding)")
    ad.add_argument("--idle", type=float, default=900, metavar="S",
                    help="exit after S seconds with no client (900; 0: never)")
    how = ad.add_mutually_exclusive_group()
    how.add_argument("--detach", action="store_true",
                     help="start it in the background and answer at once")
    how.add_argument("--stop", action="store_true", help="stop the running one, if any")
    ad.add_argument("--tag", default="", help="said in its hello: what it was started for")
    stp = sub.add_parser("state", help="one round trip for a deployer: version, info (runtime "
                                       "facts cached while Python and packages are unchanged) "
                                       "and list")
    stp.add_argument("--model", metavar="NAME", help="list only this model")
    stp.add_argument("--settled", action="store_true",
                     help="read the store under its lock: after any change under way ends "
                          "(a deployer that lost an answer asks this)")
    i = sub.add_parser("install", help="check a bundle's hashes and store it as NAME/VERSION")
    i.add_argument("bundle", metavar="BUNDLE", help="a folder or .tar/.tar.gz with a manifest")
    i.add_argument("--activate", action="store_true", help="activate it after installing")
    i.add_argument("--keep", type=int, default=3, help="versions to keep per model (3)")
    i.add_argument("--remove-bundle", action="store_true",
                   help="delete the bundle folder afterwards, installed or not (uploads)")
    a = sub.add_parser("activate", help="make VERSION the current one (atomic)")
    a.add_argument("name")
    a.add_argument("version")
    a.add_argument("--keep", type=int, default=3, help="versions to keep per model (3)")
    r = sub.add_parser("rollback", help="switch back to the previous version")
    r.add_argument("name")
    sub.add_parser("list", help="models, versions, current and previous")
    rm = sub.add_parser("remove", help="delete a version that is not active")
    rm.add_argument("name")
    rm.add_argument("version")
    v = sub.add_parser("verify", help="re-hash a stored version against its manifest")
    v.add_argument("spec", metavar="NAME[@VERSION]")
    b = sub.add_parser("bench", help="time a stored model (or a .tflite path)")
    b.add_argument("spec", metavar="NAME[@VERSION]|FILE.tflite")
    b.add_argument("--runs", type=int, default=100)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--delegate", default="auto", choices=["auto", "xnnpack", "none", "edgetpu"],
                   help="auto: the runtime's default (XNNPACK where it applies)")
    b.add_argument("--max-seconds", type=float, help="stop the timed runs after S seconds")
    b.add_argument("--inputs", metavar="FILE.npz", help="inputs instead of random data")
    b.add_argument("--op-profile", action="store_true", help="list ops and where they ran")
    b.add_argument("--no-samples", action="store_true", help="leave out the raw samples")
    e = sub.add_parser("eval", help="accuracy on labelled data; agreement with host outputs")
    e.add_argument("spec", metavar="NAME[@VERSION]|FILE.tflite")
    data = e.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", metavar="FILE.npz", help="x (float inputs), y")
    data.add_argument("--bundled-data", metavar="REL",
                      help="a file that travelled in the model's bundle (listed in its "
                           "manifest), e.g. gate.npz")
    ref = e.add_mutually_exclusive_group()
    ref.add_argument("--reference", metavar="FILE.npz", help="host outputs (key 'outputs')")
    ref.add_argument("--bundled-reference", metavar="REL", help="host outputs, from the bundle")
    e.add_argument("--data-version", metavar="VERSION",
                   help="take bundled files from this version of the model (default: the one "
                        "evaluated)")
    e.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("serve", help="on-device inference endpoint for local apps")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", metavar="PATH", help="a Unix socket")
    where.add_argument("--port", type=int, metavar="N", help="TCP on 127.0.0.1 (0: any free)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--poll", type=float, default=0.1, metavar="S",
                   help="how often to look for an activation (0.1 s)")
    s.add_argument("--models", nargs="*", metavar="NAME", help="serve only these models")
    return p


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
                   "already_present": got.already_present}
            if a.activate:
                ptr, removed = store.activate(got.name, got.version)
                out.update(current=ptr.current, previous=ptr.previous, removed=removed)
    finally:
        if a.remove_bundle and os.path.isdir(a.bundle) and not os.path.islink(a.bundle):
            import shutil

            shutil.rmtree(a.bundle, ignore_errors=True)
    return protocol.ok("install", **out)


def cmd_activate(a, store) -> dict:
    store.keep = a.keep
    with store.locked():
        ptr, removed = store.activate(a.name, a.version)
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
        store.remove(a.name, a.version)
    return protocol.ok("remove", name=a.name, version=a.version, removed=True)


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
                         op_profile=a.op_profile, edgetpu_model=edgetpu, runtime=rt)
    if a.no_samples:
        result["timing"].pop("samples_ms", None)
    checkpoint("bench:measured")  # tests: a slow gate measurement (no store lock held)
    return protocol.ok("bench", model=info, runtime=_runtime_info(rt), **result)


def cmd_eval(a, store) -> dict:
    import numpy as np

    from .evaluate import accuracy, agreement, run_dataset
    from .runtime import load_runtime, make_interpreter

    info, path, _ = _resolve(store, a.spec)
    data_path = a.data or _bundled(store, info, a.bundled_data, a.data_version)
    ref_path = a.reference or (_bundled(store, info, a.bundled_reference, a.data_version)
                               if a.bundled_reference else None)
    data = _load_npz(data_path, ("x", "y"))
    ref = _load_npz(ref_path, ("outputs",))["outputs"] if ref_path else None
    rt = load_runtime(a.runtime)
    interp = make_interpreter(path, num_threads=a.threads, runtime=rt)
    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or done == total and total >= 1000:
            last[0] = now
            print(f"eval {info.get('name', path)}: {done}/{total}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    outputs = run_dataset(interp, data["x"], data_path, progress)
    seconds = time.perf_counter() - t0
    acc = accuracy(outputs, data["y"], data_path)
    agree = agreement(outputs, ref, str(ref_path)).__dict__ if ref is not None else None
    return protocol.ok("eval", model=info, runtime=_runtime_info(rt), data=data_path,
                       samples=acc.samples, top1=acc.top1, top5=acc.top5, agreement=agree,
                       seconds=round(seconds, 4), outputs_sha256=_sha(np.ascontiguousarray(outputs)))


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


def _sha(a) -> str:
    import hashlib

    return hashlib.sha256(a.tobytes()).hexdigest()


def _load_npz(path: str, keys: tuple[str, ...]) -> dict:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing and len(z.files) == 1 and len(keys) == 1:
                return {keys[0]: z[z.files[0]]}
            if missing:
                raise InputError(f"{path}: lacks array(s) {', '.join(missing)} "
                                 f"(it has {', '.join(z.files) or 'none'})",
                                 hint=f"save it with np.savez(path, {'=..., '.join(keys)}=...)")
            return {k: z[k] for k in keys}
    except FileNotFoundError:
        raise InputError(f"{path}: no such file")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npz ({exc})") from exc


def cmd_serve(a, store) -> dict:
    from .serve import serve

    serve(store, socket_path=a.socket, port=a.port, threads=a.threads, poll=a.poll,
          models=a.models, runtime=a.runtime)
    return protocol.ok("serve", stopped=True)


def cmd_agentd(a, store) -> dict:
    """--detach: start the resident agent in the background and answer at once; --stop."""
    from . import agentd

    if a.stop:
        return protocol.ok("agentd", **agentd.stop(str(store.root)))
    return protocol.ok("agentd", **agentd.spawn(str(store.root), sys.argv[0],
                                                _prefix(a), a.idle, a.tag))


def _prefix(a) -> list[str]:
    return (["--store", a.store] if a.store else []) + \
        (["--runtime", a.runtime] if a.runtime else [])


COMMANDS = {"version": cmd_version, "info": cmd_info, "state": cmd_state, "install": cmd_install,
            "activate": cmd_activate, "rollback": cmd_rollback, "list": cmd_list,
            "remove": cmd_remove, "verify": cmd_verify, "bench": cmd_bench, "eval": cmd_eval,
            "serve": cmd_serve, "agentd": cmd_agentd}


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
    store = Store(a.store or default_store())
    if a.command == "batch":
        return batch(parser, _prefix(a), store)
    if a.command == "agentd" and not (a.detach or a.stop):
        from .agentd import Daemon

        def serve_lines(lines, write, allowed, lock, gone) -> None:
            batch(parser, _prefix(a), store, lines, write, allowed, lock, gone)

        return Daemon(str(store.root), a.idle, serve_lines, a.tag).run()
    if a.within:
        from .lock import Guard

        store.guard = Guard(time.monotonic() + a.within)
    code, msg = run(a, store)
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
