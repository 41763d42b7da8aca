"""The agent's command line (``edgedeploy-agent --help``): every command's options, in one
place apart from what the commands do (agent.py). Stdlib only."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

EXAMPLES = """examples:
  edgedeploy-agent info
  edgedeploy-agent --store /var/lib/edgedeploy install /tmp/digits-bundle/
  edgedeploy-agent activate digits 3f2a9c1b0d4e
  edgedeploy-agent bench digits --runs 1000 --warmup 50 --threads 1
  edgedeploy-agent eval digits --data test.npz --reference host_outputs.npz
  edgedeploy-agent eval digits@3f2a9c1b0d4e --bundled-data gate.npz --bundled-reference gate.npz
  edgedeploy-agent probe digits           # does it load and run here? (child process)
  edgedeploy-agent serve --socket /tmp/edgedeploy.sock
  edgedeploy-agent serve --socket /tmp/edgedeploy.sock --http-port 8000   # + KServe v2 REST
  edgedeploy-agent pull --source s3://fleet-bucket/prod --endpoint https://s3.example:9000 \
      --board pi-kitchen --credentials ~/.edgedeploy/s3.json --save

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
    ad.add_argument("--pull-every", type=float, metavar="S",
                    help="pull mode: also poll the object store every S seconds with the "
                         "settings `pull --save` stored (never idle then)")
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
    i.add_argument("--allow-downgrade", action="store_true",
                   help="with --activate: a release lower than this board has run")
    i.add_argument("--keep", type=int, default=3, help="versions to keep per model (3)")
    i.add_argument("--remove-bundle", action="store_true",
                   help="delete the bundle folder afterwards, installed or not (uploads)")
    a = sub.add_parser("activate", help="make VERSION the current one (atomic)")
    a.add_argument("name")
    a.add_argument("version")
    a.add_argument("--allow-downgrade", action="store_true",
                   help="a release lower than this board has run (signed bundles)")
    a.add_argument("--keep", type=int, default=3, help="versions to keep per model (3)")
    r = sub.add_parser("rollback", help="switch back to the previous version")
    r.add_argument("name")
    sub.add_parser("list", help="models, versions, current and previous")
    rm = sub.add_parser("remove", help="delete a version that is not active, or (no VERSION) "
                                       "the whole model")
    rm.add_argument("name")
    rm.add_argument("version", nargs="?", help="default: every version, the active one too")
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
    b.add_argument("--allow-cpu", action="store_true",
                   help="time it even when nothing would run on the Edge TPU that the model "
                        "or --delegate edgetpu asks for (said in `placement`)")
    e = sub.add_parser("eval", help="accuracy on labelled data; error against host outputs")
    e.add_argument("spec", metavar="NAME[@VERSION]|FILE.tflite")
    data = e.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", metavar="FILE.npz",
                      help="inputs keyed by input name (x: the only one), labels y (optional)")
    data.add_argument("--bundled-data", metavar="REL",
                      help="a file that travelled in the model's bundle (listed in its "
                           "manifest), e.g. gate.npz")
    ref = e.add_mutually_exclusive_group()
    ref.add_argument("--reference", metavar="FILE.npz",
                     help="host outputs keyed by output name (outputs: the only one)")
    ref.add_argument("--bundled-reference", metavar="REL", help="host outputs, from the bundle")
    e.add_argument("--data-version", metavar="VERSION",
                   help="take bundled files from this version of the model (default: the one "
                        "evaluated)")
    e.add_argument("--output", metavar="NAME", help="the output labels / top-1 refer to")
    e.add_argument("--data-name", metavar="NAME", help="what to call the data in messages "
                                                      "(the user's file, not this copy)")
    e.add_argument("--reference-name", metavar="NAME", help="the same for the reference")
    e.add_argument("--threads", type=int, default=1)
    pr = sub.add_parser("probe", help="load a model in a child process with this board's "
                                      "runtime, invoke it once on zeros: can it run here?")
    pr.add_argument("spec", metavar="NAME[@VERSION]|FILE.tflite")
    pr.add_argument("--timeout", type=float, default=120, metavar="S",
                    help="give up loading after S seconds (120)")
    pr.add_argument("--no-cache", action="store_true",
                    help="probe again even if this model was probed with this runtime")
    s = sub.add_parser("serve", help="on-device inference endpoint for local apps (NDJSON on "
                                     "a socket; HTTP with the Open Inference Protocol)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="NDJSON on a Unix socket")
    where.add_argument("--port", type=int, metavar="N",
                       help="NDJSON on TCP 127.0.0.1 (0: any free)")
    s.add_argument("--http-port", type=int, metavar="N",
                   help="also (or only) HTTP: KServe v2 REST + /metrics (0: any free)")
    s.add_argument("--http-host", default="127.0.0.1", metavar="ADDR",
                   help="address the HTTP endpoint binds (127.0.0.1; anything else exposes "
                        "the models to the network)")
    s.add_argument("--max-connections", type=int, default=64, metavar="N",
                   help="clients at once per protocol (64); the next one is told busy")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--poll", type=float, default=0.1, metavar="S",
                   help="how often to look for an activation (0.1 s)")
    s.add_argument("--models", nargs="*", metavar="NAME", help="serve only these models")
    from . import pullcmd

    pullcmd.register(sub)
    return p
