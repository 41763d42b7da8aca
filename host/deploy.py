"""One board, through its agent link: push (preflight, upload, verify, install, activate), bench,
eval, status, rollback. Decisions are pure functions of what the board said (``plan_push``,
``board_problems``, ``model_problems``); acting is the rest. Every failure is an
EdgeDeployError naming the board, and leaves the board on the model it had.

How the agent is reached (resident agent or a batch process, uploads, the agent's own
install) is host/agent_link.py's; where files go on the board, the agent says (its ``state``).

A lost answer (the link cut while install, activate or rollback ran; the agent's stream
ended; no answer in time) is not reported as a failure it may not be: the session reconnects
(RECONNECT_TRIES, RECONNECT_PAUSE apart), reads the model's entry once the store is settled
(``state --settled``: after any change under way) and reports what really happened — done
(with a note), not done (nothing changed, the version it runs), or, if the board can't be asked,
Unreachable (exit 5) with the last version it was known to run.

Whether the model travels whole or as a delta against a version the board stores is
host/transfer.py's; a delta the board refuses is followed by the full file, once.

(Past 400 lines: one session's operations on one board; what they share — the plan, the
lost-answer read-back every store change goes through — would be split across modules that
only make sense together. The link itself is agent_link.py's; transfers are transfer.py's.)
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from ..device import protocol
from ..device.manifest import Manifest, sha256_file
from ..errors import (BoardError, DeltaRefused, EdgeDeployError, Incompatible,
                      RemoteFailure, SignatureRefused, Unreachable)
from ..targets import Board
from .agent_link import AgentLink, Progress, local_agent
from .bundle import Bundle
from .delta import Delta
from .transfer import Deltas, delta_files, shared
from .transport import Transport

T = TypeVar("T")
RECONNECT_TRIES = 3      # after a lost answer: connections tried to read the board's state …
RECONNECT_PAUSE = 1.0    # … this many seconds apart

__all__ = ["BoardSession", "BoardStatus", "PushPlan", "PushResult", "board_problems",
           "local_agent", "model_problems", "plan_push", "runtime_problems"]


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


def runtime_problems(info: protocol.BoardInfo, requires: dict | None) -> list[str]:
    """Pure: the custom ops and op versions the model needs (REQUIRES, a manifest's) that the
    board's runtime lacks — the "Didn't find op for builtin opcode" a push would meet. A
    prediction from LiteRT's op-version table (compiler/op_versions.py); the board's install
    probe loads the model for real."""
    from .compiler.op_versions import board_check

    if not info.runtime:
        return []  # board_problems says so
    rt = f"{info.runtime} {info.runtimes.get(info.runtime) or ''}".rstrip()
    return [f"{rt} lacks the {p.message}" if p.kind == "custom_op" else p.message
            for p in board_check(requires, info.raw)]


def plan_push(board: Board, info: protocol.BoardInfo, entry: protocol.ModelEntry | None,
              bundle: Bundle, activate: bool) -> PushPlan:
    """Pure: what a push must do on this board (ENTRY: what its store holds of the model),
    and why it cannot (problems)."""
    problems = board_problems(board, info) + model_problems(board, bundle.manifest) + \
        runtime_problems(info, bundle.requires())
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
    note: str | None = None       # e.g. the answer was lost and the board's state read again
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
        self.accept_new_host_key = accept_new_host_key
        self._given = transport  # a transport handed in (tests) is reused to reconnect
        self.link = AgentLink(board, transport, accept_new_host_key=accept_new_host_key)
        self.note: str | None = None  # what the last change's lost answer turned out to be
        self.reconnect = (RECONNECT_TRIES, RECONNECT_PAUSE)  # (tries, pause) after one
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
                    continue
                p = self.probe(f"{e.name}@{e.current}")  # cached by sha256 + runtime
                if not p.loads:
                    problems.append(f"{e.name}@{e.current} does not load: {p.message}")
        return BoardStatus(self.board.name, h, h == local_agent()["content_hash"], models,
                           "ok" if not problems else "; ".join(problems))

    # -- changing ----------------------------------------------------------------------
    def push(self, bundle: Bundle, *, activate: bool = True, progress: Progress | None = None,
             state: protocol.State | None = None, allow_downgrade: bool = False) -> PushResult:
        """STATE: what `state(model=bundle.name)` just said, if the caller has it.
        ALLOW_DOWNGRADE: the board may take a release lower than it has run."""
        t0 = time.perf_counter()
        self.note = None
        st = state or self.state(model=bundle.name)
        entry = st.model(bundle.name)
        plan = plan_push(self.board, st.info, entry, bundle, activate)
        if plan.problems:
            raise Incompatible(self.board.name, "; ".join(plan.problems),
                               hint="nothing was changed on the board")
        current = entry.current if entry else None
        previous = entry.previous if entry else None
        sent, transfer, note = 0, "none", ""
        upload = plan.upload_model
        if not upload and activate and current != bundle.version:
            try:
                sw = self.activate(bundle.name, bundle.version, allow_downgrade=allow_downgrade)
                current, previous = sw.current, sw.previous
            except SignatureRefused:
                if not bundle.signature:
                    raise
                upload = True  # stored unsigned: the signed manifest goes with the files
        if upload:
            offer = self.deltas.offer(bundle, entry)
            transfer, note = offer.plan.kind, offer.plan.reason
            installed = None
            if offer.delta is not None:
                try:
                    sent, installed = self._upload_and_install(st, bundle, progress, activate,
                                                               allow_downgrade, offer.delta)
                except DeltaRefused as exc:  # the store is unchanged: the full file, once
                    sent += bundle.size - bundle.manifest.size + offer.delta.size
                    transfer, note = "full", f"the board refused the delta ({exc.message})"
            if installed is None:
                more, installed = self._upload_and_install(st, bundle, progress, activate,
                                                           allow_downgrade)
                sent += more
            self.deltas.remember(bundle)
            if installed.switched:
                current, previous = installed.switched.current, installed.switched.previous
        return PushResult(self.board.name, bundle.name, bundle.version, bundle.manifest.label,
                          sent, self.link.agent_uploaded, activate, current, previous,
                          time.perf_counter() - t0, self.link.resident, self.note, transfer,
                          bundle.size, note)

    def _upload_and_install(self, st: protocol.State, bundle: Bundle,
                            progress: Progress | None, activate: bool,
                            allow_downgrade: bool = False, delta: Delta | None = None
                            ) -> tuple[int, protocol.Installed]:
        """The bundle into a fresh folder in the agent's INCOMING, then one install (which
        checks every hash — and the signature, on a board with signers — takes the files in
        and removes the folder). DELTA: sent as MODEL.delta in place of the model file (the
        agent rebuilds the model from it)."""
        if not st.incoming:
            raise Incompatible(self.board.name, "its agent names no upload folder",
                               hint="`edgedeploy push` installs the current agent")
        folder = f"{st.incoming}/{bundle.version}.{secrets.token_hex(4)}"
        files = delta_files(bundle, delta)
        flags = (["--activate"] + (["--allow-downgrade"] if allow_downgrade else [])) \
            if activate else []
        try:
            sent = self.link.upload(folder, files, progress)
        except BaseException:
            self._remove(folder)
            raise
        entry = st.model(bundle.name)
        last = entry.current if entry else None

        def judge(e: protocol.ModelEntry | None) -> protocol.Installed | None:
            if e is None or not e.has(bundle.version) or \
                    (activate and e.current != bundle.version):
                return None
            sw = protocol.Switched(bundle.name, e.current, e.previous) if activate else None
            return protocol.Installed(bundle.name, bundle.version, "", 0, False, sw)
        try:
            installed = self._changed(
                bundle.name, "install" + (" and activate" if activate else ""), last,
                lambda: self.link.ask(protocol.Installed.parse, "install", folder,
                                      "--remove-bundle", *flags),
                judge)
        except BaseException:
            self._remove(folder)  # (an install that ran has removed it itself)
            raise
        return sent, installed

    def _remove(self, folder: str) -> None:
        """An upload folder nobody will install (errors ignored: the board sweeps it later)."""
        try:
            self.link.transport.run(["rm", "-rf", folder])
        except BoardError:
            pass

    def activate(self, name: str, version: str, *, allow_downgrade: bool = False
                 ) -> protocol.Switched:
        before = self.link.last_state.model(name) if self.link.last_state else None
        return self._changed(
            name, f"activate {version}", before.current if before else None,
            lambda: self.link.ask(protocol.Switched.parse, "activate", name, version,
                                  *(["--allow-downgrade"] if allow_downgrade else [])),
            lambda e: protocol.Switched(name, e.current, e.previous)
            if e is not None and e.current == version else None)

    def trust(self, lines: list[str], *, replace: bool = False) -> list[str]:
        """Add allowed-signers LINES to the board's store (REPLACE: only those); its list."""
        args: list[object] = ["trust", *[x for ln in lines for x in ("--add", ln)]]
        if replace:
            args.append("--replace")
        return [str(x) for x in self.link.call(*args).get("signers", [])]

    def rollback(self, name: str) -> protocol.Switched:
        """Back to NAME's previous version (the model's entry is read first: what a lost
        answer is judged against)."""
        before = self.state(install_agent=False, model=name).model(name)
        if before is None:
            return self.link.ask(protocol.Switched.parse, "rollback", name)  # the agent says
        return self._changed(
            name, "rollback", before.current,
            lambda: self.link.ask(protocol.Switched.parse, "rollback", name),
            lambda e: protocol.Switched(name, e.current, e.previous)
            if e is not None and before.previous is not None and
            (e.current, e.previous) == (before.previous, before.current) else None)

    # -- a lost answer -------------------------------------------------------------------
    def _changed(self, name: str, what: str, last_known: str | None, act: Callable[[], T],
                 judge: Callable[[protocol.ModelEntry | None], T | None]) -> T:
        """ACT, a store change; if its answer is lost, what really happened (see the module
        docstring): JUDGE's result when the board's entry for NAME shows it done."""
        self.note = None
        try:
            return act()
        except (Unreachable, RemoteFailure) as exc:
            why = exc.message.split(": ", 1)[-1]
            original: BoardError = exc
        entry, error = self._read_back(name)
        if error is not None:
            raise Unreachable(self.board.name,
                              f"the answer to {what} was lost ({why}) and the board can't be "
                              f"asked again ({error}): whether it happened is unknown; the last "
                              f"known version of {name} there is {last_known or 'none'}",
                              hint=f"`edgedeploy status {self.board.name}` once it is back")
        done = judge(entry)
        now = entry.current if entry else None
        if done is None:
            if isinstance(original, RemoteFailure):  # the agent died: its error, and the truth
                original.hint = (f"read again, the board runs {name} {now or '(none)'}: nothing "
                                 f"changed; " + (original.hint or ""))
                raise original
            raise Unreachable(self.board.name,  # a rollout retries an Unreachable step
                              f"the answer to {what} was lost ({why}); read again, the board "
                              f"runs {name} {now or '(none)'}: it did not happen",
                              hint="nothing changed; try again")
        self.note = (f"the answer to {what} was lost ({why}); read again, the board runs "
                     f"{name} {now}: it happened")
        return done

    def _read_back(self, name: str) -> tuple[protocol.ModelEntry | None, str | None]:
        """Reconnect (bounded) and read NAME's entry once the store is settled: (entry, None),
        or (None, why the board could not be asked)."""
        error = "not tried"
        tries, pause = self.reconnect
        for attempt in range(tries):
            if attempt:
                time.sleep(pause)
            try:
                self.link.close()
            except Exception:  # noqa: BLE001 — a dead link's close may fail any way
                pass
            try:
                self.link = AgentLink(self.board, self._given,
                                      accept_new_host_key=self.accept_new_host_key)
                ours = self.link.state(install_agent=False, model=name)
                if ours.agent.content_hash == local_agent()["content_hash"]:
                    settled = self.link.ask(protocol.State.parse, "state", "--model", name,
                                            "--settled")
                    return settled.model(name), None
                return ours.model(name), None
            except BoardError as exc:
                error = exc.message.split(": ", 1)[-1]
            except EdgeDeployError as exc:
                error = str(exc)
        return None, error

    def remove(self, name: str, version: str | None = None) -> protocol.Removed:
        """VERSION of NAME (not the active one), or without VERSION the whole model."""
        return self.link.ask(protocol.Removed.parse, "remove", name,
                             *([version] if version else []))

    def probe(self, spec: str) -> protocol.Probe:
        """Does SPEC load and run with the board's runtime (in a child process; cached)?"""
        return self.link.ask(protocol.Probe.parse, "probe", spec)

    # -- measuring ---------------------------------------------------------------------
    def bench(self, spec: str, *, runs: int = 100, warmup: int = 10, threads: int | None = None,
              delegate: str = "auto", max_seconds: float | None = None,
              op_profile: bool = False, allow_cpu: bool = False) -> protocol.Bench:
        args: list[object] = ["bench", spec, "--runs", runs, "--warmup", warmup, "--threads",
                              threads or self.board.profile.threads, "--delegate", delegate]
        if max_seconds:
            args += ["--max-seconds", max_seconds]
        if op_profile:
            args.append("--op-profile")
        if allow_cpu:
            args.append("--allow-cpu")
        return self.link.ask(protocol.Bench.parse, *args)

    def eval(self, spec: str, data: Path, reference: Path | None = None,
             output: str | None = None) -> protocol.Eval:
        """SPEC on DATA (inputs by name, y optional; sent once per content to the folder the
        agent names); messages name the user's files, not the board's copies."""
        args: list[object] = ["eval", spec, "--data", self._put_data(data), "--data-name",
                              str(data)]
        if reference:
            args += ["--reference", self._put_data(reference), "--reference-name",
                     str(reference)]
        if output:
            args += ["--output", output]
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

