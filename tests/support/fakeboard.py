"""A fake board for fast tests: a Transport whose board is a temporary folder and whose agent is
the real one (``edgedeploy-agent batch``, the same parser and store code a board runs), called
in this process. Everything above the transport — AgentLink, BoardSession, the rollout runner
and its journal — is the real code; what is fake is only the wire and the process boundary.

Fault hooks, per board (they persist across sessions, as a board's own troubles do)::

    board.cut_at = N        the Nth agent call (counting from 1) never arrives and the link
                            is down from then on: every call, command and upload raises
                            Unreachable, until board.restore()
    board.refuse = {"activate"}   those agent commands answer a store_error
    board.hang = {"bench"}        those never answer: the caller's timeout (Unreachable)

``board.calls`` lists every agent command the board received (argv lists), in order.

Use::

    fleet = FakeFleet(tmp_path, ["b0", "b1"])
    with fleet.session("b0") as s:          # a BoardSession on the fake board
        s.push(bundle)
    fleet.start(journal, bundle, options)   # a rollout over every fake board

The real-sshd tests (tests/integration) stay the proof that the wire works; these prove the
logic above it, in milliseconds.
"""

from __future__ import annotations

import functools
import json
import queue
import shutil
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgedeploy.device import agent as agent_cli
from edgedeploy.device.manifest import Manifest, TensorSpec, sha256_file
from edgedeploy.device.store import Store
from edgedeploy.errors import Unreachable
from edgedeploy.host.bundle import Bundle, load_bundle
from edgedeploy.host.deploy import BoardSession
from edgedeploy.host.transport import Progress, RunResult, Stream, Transport
from edgedeploy.host.transport.local import LocalTransport
from edgedeploy.targets import Board, local_board

TINY = Path(__file__).resolve().parent / "tiny"  # good.tflite, bad.tflite: make_tiny.py


@functools.lru_cache(maxsize=1)
def _runtime_facts_cache() -> bytes:
    """The agent's info-cache.json as this process would write it: every fake board is the
    same machine, so the runtime facts (an import of the TFLite runtime, ~0.3 s) are worked
    out once per test process, not once per board."""
    import tempfile

    from edgedeploy.device.sysinfo import runtime_facts

    with tempfile.TemporaryDirectory() as tmp:
        runtime_facts(Path(tmp))
        return (Path(tmp) / "info-cache.json").read_bytes()


class FakeBoard:
    """One fake board: its folder (ROOT/store is the agent's store) and its faults."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root = name, root
        self.store = root / "store"
        self.store.mkdir(parents=True)
        (self.store / "info-cache.json").write_bytes(_runtime_facts_cache())
        self.spec: Board = replace(local_board(), name=name, root=str(root),
                                   python=sys.executable, transport="fake")
        self.cut_at: int | None = None
        self.cut = False
        self.refuse: set[str] = set()
        self.hang: set[str] = set()
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def restore(self) -> None:
        """The link is back (faults cleared)."""
        self.cut_at, self.cut = None, False
        self.refuse, self.hang = set(), set()

    def check_link(self) -> None:
        if self.cut:
            raise Unreachable(self.name, "the link is down (fake board)")

    def current(self, model: str) -> str | None:
        """What the board really has active (read from its store, not through the host)."""
        return Store(self.store).pointer(model).current


@functools.lru_cache(maxsize=1)
def _parser() -> Any:
    return agent_cli.build_parser()  # ~50 ms to build: once per test process


class _AgentStream(Stream):
    """The agent's `batch`, run in a thread of this process, spoken to in lines."""

    def __init__(self, board: FakeBoard) -> None:
        self.board = board
        self.inbox: queue.Queue[str | None] = queue.Queue()
        self.outbox: queue.Queue[str] = queue.Queue()
        self.pending = b""
        self.dead = False
        parser = _parser()
        prefix = ["--store", str(board.store)]
        self.thread = threading.Thread(
            target=agent_cli.batch, args=(parser, prefix, Store(board.store)),
            kwargs={"lines": iter(self.inbox.get, None), "write": self.outbox.put}, daemon=True)
        self.thread.start()

    def send_bytes(self, data: bytes) -> None:
        self.board.check_link()
        self.pending += data
        while b"\n" in self.pending:
            raw, self.pending = self.pending.split(b"\n", 1)
            self._command(raw.decode())

    def _command(self, line: str) -> None:
        argv = [str(x) for x in json.loads(line)]
        b = self.board
        with b.lock:
            b.calls.append(argv)
            if b.cut_at is not None and len(b.calls) >= b.cut_at:
                b.cut = True
        if b.cut:
            self.dead = True
            raise Unreachable(b.name, f"`{argv[0]}`: the connection broke (fake board)")
        if argv[0] in b.hang:
            return  # never answered
        if argv[0] in b.refuse:
            self.outbox.put(json.dumps({"schema": 1, "ok": False, "kind": "error",
                                        "code": "store_error", "exit": 1,
                                        "message": f"{argv[0]} refused (fake board)"}) + "\n")
            return
        self.inbox.put(line + "\n")

    def read_line(self, timeout: float) -> str:
        self.board.check_link()
        try:
            return self.outbox.get(timeout=timeout)
        except queue.Empty:
            raise Unreachable(self.board.name, f"the agent gave no answer for {timeout} s "
                                               f"(fake board)") from None

    def close(self) -> int | None:
        self.inbox.put(None)
        self.thread.join(timeout=5)
        return 0

    def stderr(self) -> str:
        return ""


class FakeTransport(Transport):
    """The host's view of a FakeBoard: the agent in-process, files and shell commands on this
    machine (the board's folder is local), every operation subject to the board's faults."""

    def __init__(self, board: FakeBoard) -> None:
        self.board = board.name
        self.fake = board
        self.local = LocalTransport(board.name)

    def run(self, argv: Sequence[str] | str, *, timeout: float | None = None,
            input: bytes | None = None) -> RunResult:
        self.fake.check_link()
        return self.local.run(argv, timeout=timeout, input=input)

    def start(self, command: str) -> Stream:
        self.fake.check_link()
        if not command.endswith(" batch"):
            raise AssertionError(f"the fake board runs only the agent's batch: {command}")
        return _AgentStream(self.fake)

    def put(self, data: Path | bytes, remote: str, progress: Progress | None = None) -> int:
        self.fake.check_link()
        return self.local.put(data, remote, progress)

    def mkdir(self, path: str) -> None:
        self.fake.check_link()
        self.local.mkdir(path)

    def close(self) -> None:
        pass


class FakeFleet:
    """Named fake boards under one temporary folder, and sessions / rollouts over them."""

    def __init__(self, tmp: Path, names: list[str]) -> None:
        self.boards = {n: FakeBoard(n, tmp / n) for n in names}

    def __getitem__(self, name: str) -> FakeBoard:
        return self.boards[name]

    def specs(self) -> list[Board]:
        return [b.spec for b in self.boards.values()]

    def connect(self, board: Board, accept_new_host_key: bool = False) -> BoardSession:
        """A SessionFactory (host/fleet/runner.py) that reaches the fake boards."""
        return BoardSession(board, FakeTransport(self.boards[board.name]))

    def session(self, name: str) -> BoardSession:
        return self.connect(self.boards[name].spec)

    def install_all(self, bundle: Bundle) -> None:
        """BUNDLE installed and active on every board, straight into its store (as if it
        had been pushed before the test)."""
        src = bundle.write_folder(next(iter(self.boards.values())).root.parent / ".bundle")
        for b in self.boards.values():
            store = Store(b.store)
            with store.locked():
                store.install(src)
                store.activate(bundle.name, bundle.version)
        shutil.rmtree(src)

    def start(self, journal: Any, bundle: Bundle, options: Any, **kw: Any) -> Any:
        from edgedeploy.host import fleet

        return fleet.start(journal, self.specs(), bundle, "bundle", "fake-fleet", options,
                           connect=self.connect, **kw)

    def resume(self, journal: Any, rollout_id: str, bundle: Bundle, **kw: Any) -> Any:
        from edgedeploy.host import fleet

        return fleet.resume(journal, rollout_id, {b.name: b.spec for b in self.boards.values()},
                            bundle, connect=self.connect, **kw)


def tiny_model(dest: Path, which: str = "good", name: str = "tiny") -> Path:
    """A model file with its manifest in DEST (a folder of its own): NAME, the tiny model
    WHICH (good: top-1 = argmax of the first three inputs; bad: the opposite)."""
    dest.mkdir(parents=True, exist_ok=True)
    model = dest / f"{name}.float32.tflite"
    shutil.copyfile(TINY / f"{which}.tflite", model)
    sha = sha256_file(model)
    m = Manifest(name=name, version=sha[:12], mode="float32", label="float32", file=model.name,
                 sha256=sha, size=model.stat().st_size,
                 inputs=[TensorSpec("x", 0, [1, 4], "float32")],
                 outputs=[TensorSpec("y", 0, [1, 3], "float32")])
    (dest / f"{name}.float32.manifest.json").write_text(m.to_json())
    return model


def gate_data(path: Path, n: int = 30, outputs: bool = False) -> Path:
    """x (n x 4), y = argmax of the first three inputs (the good model's answer)."""
    x = np.random.default_rng(0).random((n, 4), dtype=np.float32)
    y = x[:, :3].argmax(1)
    extra = {"outputs": np.eye(3, dtype=np.float32)[y]} if outputs else {}
    np.savez(path, x=x, y=y, **extra)
    return path


def bundle_of(model: Path) -> Bundle:
    return load_bundle(model)
