"""One board, through its agent link: push (preflight, upload, verify, install, activate), bench,
eval, status, rollback. Decisions are pure functions of what the board said (``plan_push``,
``board_problems``, ``model_problems``); acting is the rest. Every failure is an
EdgeDeployError naming the board, and leaves the board on the model it had.

How the agent is reached (resident agent or a batch process, uploads, the agent's own
install) is host/agent_link.py's; where files go on the board, the agent says (its ``state``).
Whether the model travels whole or as a delta against a version the board stores is
host/transfer.py's; a delta the board refuses is followed by the full file, once.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..device import protocol
from ..device.manifest import Manifest, sha256_file
from ..errors import BoardError, DeltaRefused, Incompatible
from ..targets import Board
from .agent_link import AgentLink, Progress, local_agent
from .bundle import Bundle
from .delta import Delta
from .transfer import Deltas, delta_files, shared
from .transport import Transport

__all__ = ["BoardSession", "BoardStatus", "PushPlan", "PushResult", "board_problems",
           "local_agent", "model_problems", "plan_push"]


@dataclass
class PushPlan:
    upload_model: bool
    activate: bool
    problems: list[str] = field(default_factory=list)


def board_problems(board: Board, info: protocol.BoardInfo) -> list[str]:
    """Pure: where the board (as its agent's `info` describes it) departs from its profile."""
    problems = []
    prof = board.profile
    if prof.arch and info.arch not in prof.arch:
        problems.append(f"arch {info.arch} is not the profile {prof.name}'s "
                        f"({', '.join(prof.arch)})")
    if info.python and not prof.python_ok(info.python):
        problems.append(f"Python {info.python} is outside {prof.name}'s {prof.python}")
    if not info.runtime:
        problems.append(f"no TFLite runtime imports on the board ({info.runtime_error})")
    elif info.runtime not in prof.runtimes:
        problems.append(f"runtime {info.runtime} is not one {prof.name} allows "
                        f"({', '.join(prof.runtimes)})")
    return problems


def model_problems(board: Board, m: Manifest) -> list[str]:
    """Pure: whether a model's format fits the board's profile (Coral needs Edge TPU models)."""
    prof = board.profile
    compiled_etpu = bool(m.edgetpu and m.edgetpu.get("compiled"))
    if prof.model_format == "edgetpu" and not compiled_etpu:
        return [f"{prof.name} needs an Edge TPU model (edgedeploy compile --mode edgetpu with "
                f"edgetpu_compiler); {m.file} is {m.label}"]
    if prof.model_format != "edgetpu" and compiled_etpu:
        return [f"{m.file} is compiled for the Edge TPU; {prof.name} has none"]
    return []


def plan_push(board: Board, info: protocol.BoardInfo, entry: protocol.ModelEntry | None,
              bundle: Bundle, activate: bool) -> PushPlan:
    """Pure: what a push must do on this board (ENTRY: what its store holds of the model),
    and why it cannot (problems)."""
    problems = board_problems(board, info) + model_problems(board, bundle.manifest)
    present = entry is not None and entry.has(bundle.version)
    if not present and info.free_bytes is not None and info.free_bytes < 2 * bundle.size:
        problems.append(f"only {info.free_bytes} bytes free in the store, the bundle needs "
                        f"2 x {bundle.size}")
    return PushPlan(upload_model=not present, activate=activate, problems=problems)


@dataclass
class PushResult:
    board: str
    name: str
    version: str
    label: str
    bytes_sent: int
    agent_uploaded: bool
    activated: bool
    current: str | None
    previous: str | None
    seconds: float
    resident_agent: bool = False  # the board's resident agent did the work (no process start)
    transfer: str = "none"        # the model went "full" or as a "delta" ("none": not sent)
    full_bytes: int = 0           # what sending the bundle whole costs (bytes_sent: what did)
    transfer_note: str = ""       # why full (no earlier version, not smaller, delta refused …)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BoardStatus:
    board: str
    agent: str | None                 # the agent's content hash; None: no agent runs
    agent_current: bool               # it is the one this host would send
    models: tuple[protocol.ModelEntry, ...]
    health: str                       # "ok", or what is wrong

    def to_dict(self) -> dict:
        return {"board": self.board, "agent": self.agent, "agent_current": self.agent_current,
                "models": [m.raw for m in self.models], "health": self.health}


class BoardSession:
    """A connected board and the operations on it. A push of a version the board has is the
    SSH handshake and one agent call; see AgentLink for how calls reach the agent."""

    def __init__(self, board: Board, transport: Transport | None = None, *,
                 accept_new_host_key: bool = False, deltas: Deltas | None = None) -> None:
        self.board = board
        self.link = AgentLink(board, transport, accept_new_host_key=accept_new_host_key)
        self.deltas = deltas or shared()

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> "BoardSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------
    def state(self, *, install_agent: bool = True, model: str | None = None) -> protocol.State:
        """What the board's agent says (its version, the board, the store: of MODEL only)."""
        return self.link.state(install_agent=install_agent, model=model)

    def listing(self) -> protocol.Listing:
        return self.link.ask(protocol.Listing.parse, "list")

    def status(self) -> BoardStatus:
        h = self.link.version_hash()
        if h is None:
            return BoardStatus(self.board.name, None, False, (), "no agent")
        models = self.listing().models
        problems = []
        for e in models:
            if e.current:
                v = self.link.ask(protocol.Verified.parse, "verify", f"{e.name}@{e.current}")
                if not v.valid:
                    problems.append(f"{e.name}@{e.current}: {v.problems[0]}")
        return BoardStatus(self.board.name, h, h == local_agent()["content_hash"], models,
                           "ok" if not problems else "; ".join(problems))

    # -- changing ----------------------------------------------------------------------
    def push(self, bundle: Bundle, *, activate: bool = True, progress: Progress | None = None,
             state: protocol.State | None = None) -> PushResult:
        """STATE: what `state(model=bundle.name)` just said, if the caller has it."""
        t0 = time.perf_counter()
        st = state or self.state(model=bundle.name)
        entry = st.model(bundle.name)
        plan = plan_push(self.board, st.info, entry, bundle, activate)
        if plan.problems:
            raise Incompatible(self.board.name, "; ".join(plan.problems),
                               hint="nothing was changed on the board")
        current = entry.current if entry else None
        previous = entry.previous if entry else None
        sent, transfer, note = 0, "none", ""
        if plan.upload_model:
            offer = self.deltas.offer(bundle, entry)
            transfer, note = offer.plan.kind, offer.plan.reason
            installed = None
            if offer.delta is not None:
                try:
                    sent, installed = self._upload_and_install(st, bundle, progress, activate,
                                                               offer.delta)
                except DeltaRefused as exc:  # the store is unchanged: the full file, once
                    sent += bundle.size - bundle.manifest.size + offer.delta.size
                    transfer, note = "full", f"the board refused the delta ({exc.message})"
            if installed is None:
                more, installed = self._upload_and_install(st, bundle, progress, activate)
                sent += more
            self.deltas.remember(bundle)
            if installed.switched:
                current, previous = installed.switched.current, installed.switched.previous
        elif activate and current != bundle.version:
            sw = self.activate(bundle.name, bundle.version)
            current, previous = sw.current, sw.previous
        return PushResult(self.board.name, bundle.name, bundle.version, bundle.manifest.label,
                          sent, self.link.agent_uploaded, activate, current, previous,
                          time.perf_counter() - t0, self.link.resident, transfer,
                          bundle.size, note)

    def _upload_and_install(self, st: protocol.State, bundle: Bundle,
                            progress: Progress | None, activate: bool,
                            delta: Delta | None = None) -> tuple[int, protocol.Installed]:
        """The bundle into a fresh folder in the agent's INCOMING, then one install (which
        checks every hash, takes the files in and removes the folder). DELTA: sent as
        MODEL.delta in place of the model file (the agent rebuilds the model from it)."""
        if not st.incoming:
            raise Incompatible(self.board.name, "its agent names no upload folder",
                               hint="`edgedeploy push` installs the current agent")
        folder = f"{st.incoming}/{bundle.version}.{secrets.token_hex(4)}"
        files = delta_files(bundle, delta)
        try:
            sent = self.link.upload(folder, files, progress)
            installed = self.link.ask(protocol.Installed.parse, "install", folder,
                                      "--remove-bundle", *(["--activate"] if activate else []))
            return sent, installed
        except BaseException:
            try:
                self.link.transport.run(["rm", "-rf", folder])
            except BoardError:
                pass
            raise

    def activate(self, name: str, version: str) -> protocol.Switched:
        return self.link.ask(protocol.Switched.parse, "activate", name, version)

    def rollback(self, name: str) -> protocol.Switched:
        return self.link.ask(protocol.Switched.parse, "rollback", name)

    # -- measuring ---------------------------------------------------------------------
    def bench(self, spec: str, *, runs: int = 100, warmup: int = 10, threads: int | None = None,
              delegate: str = "auto", max_seconds: float | None = None) -> protocol.Bench:
        args: list[object] = ["bench", spec, "--runs", runs, "--warmup", warmup, "--threads",
                              threads or self.board.profile.threads, "--delegate", delegate]
        if max_seconds:
            args += ["--max-seconds", max_seconds]
        return self.link.ask(protocol.Bench.parse, *args)

    def eval(self, spec: str, data: Path, reference: Path | None = None) -> protocol.Eval:
        """SPEC on DATA (x, y; sent once per content to the folder the agent names)."""
        args: list[object] = ["eval", spec, "--data", self._put_data(data)]
        if reference:
            args += ["--reference", self._put_data(reference)]
        return self.link.ask(protocol.Eval.parse, *args)

    def eval_bundled(self, name: str, version: str, rel: str, *, data_version: str,
                     reference: bool) -> protocol.Eval:
        """NAME@VERSION on REL, a data file that travelled in DATA_VERSION's bundle (a
        rollout's gate data), with its ``outputs`` as the reference when REFERENCE."""
        args = ["eval", f"{name}@{version}", "--bundled-data", rel, "--data-version",
                data_version] + (["--bundled-reference", rel] if reference else [])
        return self.link.ask(protocol.Eval.parse, *args)

    def _put_data(self, path: Path) -> str:
        st = self.link.last_state or self.state()
        if not st.data:
            st = self.state()
        if not st.data:
            raise Incompatible(self.board.name, "its agent names no data folder",
                               hint="`edgedeploy push` installs the current agent")
        return self.link.put_once(st.data, path, f"{sha256_file(path)}{path.suffix}")

