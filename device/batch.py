"""``edgedeploy-agent batch`` and the resident agent's connections: the batch protocol loop
(protocol.py states it). A deployer runs a session's commands through one such process, one
Python start-up, not one per command. Stdlib only.

Each line is a JSON argv list, parsed by the agent's own parser and run by agent.run; the answer
is the command's message plus ``"exit"``. A store change may come with ``--within S`` (the
deployer's deadline): it runs under a Guard (lock.py) — dropped, nothing done, if it cannot start
within S seconds of its line being read, or if its client has gone (GONE; for stdin: nobody
reads our stdout any more, stdout_gone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import protocol


def stdout_gone() -> str | None:
    """Whether whoever reads our stdout has gone (a pipe whose reader closed: the deployer's
    SSH session ended); None while it is there, or when stdout is no pipe."""
    import select

    try:
        p = select.poll()
        p.register(sys.stdout.fileno(), select.POLLOUT)
        events = p.poll(0)
    except (OSError, ValueError):
        return None
    if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events):
        return "its client hung up"
    return None


def batch(parser: argparse.ArgumentParser, prefix: list[str], store, lines=None,
          write=None, allowed=None, lock=None, gone=None) -> int:
    """Commands from stdin (or LINES), one JSON argv list per line; one answer per line on
    stdout (or through WRITE), with "exit", the status the command would have exited with, in
    order, until the input ends. A deployer runs a session's commands through one such
    process: one Python start-up, not one per command. The resident agent (agentd.py) serves
    its connections with this too, limited to ALLOWED commands, one at a time (LOCK), GONE
    telling whether its client is still there.

    A command line may start with ``--within S`` (the deployer's deadline, counted from when
    the line was read here): a store change that cannot start by then — waiting for LOCK or the
    store lock — or whose client has gone (GONE; stdin's reader: stdout_gone) is dropped
    unanswered-to (Expired), nothing done."""
    import contextlib

    from .agent import run
    from .lock import Guard

    if write is None:
        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()
    if gone is None and lines is None:
        gone = stdout_gone
    for line in sys.stdin if lines is None else lines:
        received = time.monotonic()
        if not line.strip():
            continue
        try:
            argv = json.loads(line)
            if not isinstance(argv, list):
                raise ValueError
            a = parser.parse_args([*prefix, *map(str, argv)])
            if a.command == "batch" or (a.command == "agentd" and not (a.detach or a.stop)):
                raise ValueError
            if allowed is not None and a.command not in allowed:
                code, msg = 2, protocol.error("not_here", f"{a.command} runs in its own "
                                                          f"process, not the resident agent")
            else:
                with lock or contextlib.nullcontext():
                    store.guard = Guard(received + a.within if a.within else None, gone)
                    try:
                        code, msg = run(a, store)
                    finally:
                        store.guard = Guard()
                    if "edgedeploy.device.sysinfo" in sys.modules:
                        sys.modules["edgedeploy.device.sysinfo"].flush_cache()
        except (ValueError, SystemExit):  # argparse has said why on stderr
            code, msg = 2, protocol.error("bad_input", f"batch: not a command: {line.strip()}")
        try:
            write(json.dumps({**msg, "exit": code}) + "\n")
        except BrokenPipeError:
            return 0  # the client hung up: nobody is left to answer
    return 0
