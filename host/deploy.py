"""One board, through a Transport: push (preflight, upload, verify, install, activate), bench,
eval, status, rollback. Decisions are pure functions of what the board said (see
``plan_push``); acting is the rest. Every failure is a BoardError naming the board, and leaves
the board on the model it had.

On the board (ROOT is the inventory's ``root``, default ``~/.edgedeploy``)::

    ROOT/agent/edgedeploy-agent.pyz   replaced when its content hash differs from ours
    ROOT/store/                       the agent's versioned store (see device/store.py)
    ROOT/incoming/VERSION.RANDOM/     an upload in progress; removed after install
    ROOT/data/SHA256.npz              eval data, sent once per content
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..device import agentd
from ..device.agentd import CONTROL
from ..device.manifest import Manifest, sha256_file
from ..errors import AgentError, BoardError, Incompatible, RemoteFailure, Unreachable
from ..targets import Board
from .bundle import Bundle
from .transport import Stream, Transport, open_transport, shell_join

AGENT_CACHE = Path(os.environ.get("EDGEDEPLOY_CACHE", "~/.cache/edgedeploy")).expanduser()
HELLO_TIMEOUT = 5.0


def _store_note(board: Board) -> Path:
    key = json.dumps([board.name, board.host, board.port, board.user, board.root])
    return AGENT_CACHE / "boards" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".store")


def _remembered_store(board: Board) -> str | None:
    """The board's absolute store path as its agent last said (a `~/…` root needs the board
    to expand it; the resident agent's socket is found by absolute path)."""
    try:
        return _store_note(board).read_text().strip() or None
    except OSError:
        return None


def _remember_store(board: Board, store: str) -> None:
    from ..device.store import write_atomic

    note = _store_note(board)
    try:
        note.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(note, store.encode())
    except OSError:
        pass  # only a speed-up


def _stream_file(stream: Stream, path: Path, progress: Callable[[int, int], None] | None
                 ) -> None:
    size = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 18):
            stream.send_bytes(chunk)
            done += len(chunk)
            if progress:
                progress(done, size)


def _quiet_close(s: Stream) -> None:
    try:
        s.close()
    except BoardError:
        pass


def local_agent() -> dict:
    """Build (once per content) the zipapp this host would send; its identity and path."""
    from ..device.ship import build_zipapp, content_hash, source_files

    h = content_hash(source_files())
    path = AGENT_CACHE / "agent" / f"edgedeploy-agent-{h[:16]}.pyz"
    if not path.exists():
        build_zipapp(path)
    return {"content_hash": h, "path": path}


@dataclass
class PushPlan:
    upload_model: bool
    activate: bool
    problems: list[str] = field(default_factory=list)


def board_problems(board: Board, info: dict) -> list[str]:
    """Pure: where the board (as its agent's `info` describes it) departs from its profile."""
    problems = []
    prof = board.profile
    if prof.arch and info.get("arch") not in prof.arch:
        problems.append(f"arch {info.get('arch')} is not the profile {prof.name}'s "
                        f"({', '.join(prof.arch)})")
    if info.get("python") and not prof.python_ok(info["python"]):
        problems.append(f"Python {info['python']} is outside {prof.name}'s {prof.python}")
    if not info.get("runtime"):
        problems.append(f"no TFLite runtime imports on the board ({info.get('runtime_error')})")
    elif info["runtime"] not in prof.runtimes:
        problems.append(f"runtime {info['runtime']} is not one {prof.name} allows "
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


def plan_push(board: Board, info: dict, listing: list[dict], bundle: Bundle,
              activate: bool) -> PushPlan:
    """Pure: what a push must do on this board, and why it cannot (problems)."""
    m = bundle.manifest
    problems = board_problems(board, info) + model_problems(board, m)
    present = any(e["name"] == m.name and any(v["version"] == m.version and "error" not in v
                                              for v in e["versions"]) for e in listing)
    free = (info.get("store") or {}).get("free_bytes")
    if not present and free is not None and free < 2 * bundle.size:
        problems.append(f"only {free} bytes free in the store, the bundle needs 2 x "
                        f"{bundle.size}")
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

    def to_dict(self) -> dict:
        return asdict(self)


class BoardSession:
    """A connected board: its paths, the agent, the operations.

    Round trips and board CPU are what a push costs, so: the commands of a session go through
    one agent process (``batch``); one call (``state``: version,
    board facts, listing) tells everything a plan needs; directories are made over SFTP (no
    shell); install, activate and the clean-up of the upload are one command. A re-push of
    the active version is the SSH handshake and one agent call."""

    def __init__(self, board: Board, transport: Transport | None = None, *,
                 accept_new_host_key: bool = False) -> None:
        self.board = board
        self.t = transport or open_transport(board, accept_new_host_key=accept_new_host_key)
        # Commands may use ~/ (the remote shell expands it); SFTP needs the absolute path,
        # learnt from the agent's answer or, before there is an agent, from the shell.
        spec_root = board.root.rstrip("/") or "/"
        self._root = None if spec_root.startswith("~") else spec_root
        self.agent_path = f"{spec_root}/agent/edgedeploy-agent.pyz"
        self.store = f"{spec_root}/store"
        self._batch: Stream | None = None       # the session's `batch` process
        self._resident: Stream | None = None    # the board's resident agent (agentd)
        self._resident_tried = False
        self._resident_path = ""
        self._store_abs = None if spec_root.startswith("~") else f"{spec_root}/store"

    @property
    def root(self) -> str:
        if self._root is None:
            home = self.t.check(["printf", "%s", "~"]).stdout.strip()
            self._root = (home + self.board.root[1:]).rstrip("/")
        return self._root

    def close(self) -> None:
        try:
            self._start_resident()
            self._end_streams()
        finally:
            self.t.close()

    def __enter__(self) -> "BoardSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the agent ---------------------------------------------------------------------
    def _agent_cmd(self, *args: Any) -> str:
        """The shell command for an agent call. With no `python` in the inventory, the venv
        `edgedeploy bootstrap` made (ROOT/venv) if there is one, else python3."""
        tail = shell_join([self.agent_path, "--store", self.store, *map(str, args)])
        if self.board.python != "python3":
            return f"{shell_join([self.board.python])} {tail}"
        venv = shell_join([f"{self.board.root.rstrip('/')}/venv/bin/python"])
        return f'p={venv}; [ -x "$p" ] || p=python3; exec "$p" {tail}'

    @staticmethod
    def _last_json(text: str) -> dict | None:
        for line in reversed(text.strip().splitlines()):
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            return msg if isinstance(msg, dict) else None
        return None

    def agent(self, *args: Any, timeout: float | None = None, tolerate: tuple = (),
              payload: Path | None = None, progress: Callable[[int, int], None] | None = None
              ) -> dict:
        """Run an agent command; its answer, or an AgentError/RemoteFailure naming the board.
        The store's control commands go to the board's resident agent when one answers
        (no process starts on the board); the rest, and everything when there is none,
        through one `edgedeploy-agent batch` process per session. PAYLOAD: a file whose
        bytes follow the command line (the resident agent's `upload`)."""
        stream, what = self._stream(str(args[0]))
        line = ""
        try:
            stream.send_line(json.dumps([str(x) for x in args]))
            if payload is not None:
                _stream_file(stream, payload, progress)
            line = stream.read_line(timeout or self.board.command_timeout)
        except Unreachable:
            self._end(stream)
            raise
        msg = None
        if line:
            try:
                msg = json.loads(line)
            except ValueError:
                msg = None
        if not isinstance(msg, dict) or "ok" not in msg:
            code, err = self._end(stream)
            raise RemoteFailure(self.board.name, f"{what} <<< {' '.join(map(str, args))}", code,
                                err or line,
                                hint="the agent crashed or is missing; `edgedeploy push` "
                                     "installs it")
        if not msg["ok"]:
            if msg.get("code") in tolerate:
                return msg
            raise AgentError(self.board.name, msg.get("code", "error"),
                             msg.get("message", "failed"), msg.get("exit"))
        return msg

    def _stream(self, command: str) -> tuple[Stream, str]:
        if (command in CONTROL or command == agentd.UPLOAD) and self._resident_agent():
            assert self._resident is not None
            return self._resident, f"resident agent {self._resident_path}"
        cmd = self._agent_cmd("batch")
        if self._batch is None:
            self._batch = self.t.start(cmd)
        return self._batch, cmd

    def _resident_agent(self) -> bool:
        """Connect (once a session) to the board's resident agent, if it has one running."""
        if self._resident is not None:
            return True
        if self._resident_tried or not self.board.resident_agent or not self.t.forwards_unix:
            return False
        self._resident_tried = True
        store = self._store_abs or _remembered_store(self.board)
        if not store:
            return False
        path = f"{store}/{agentd.SOCKET}"
        s = self.t.connect_unix(path)
        if s is None:
            return False
        try:
            hello = json.loads(s.read_line(HELLO_TIMEOUT) or "null")
        except (ValueError, BoardError):
            hello = None
        if not isinstance(hello, dict) or hello.get(agentd.HELLO_KEY) != 1 \
                or hello.get("tag") != self.board.python:
            _quiet_close(s)  # gone, an old one that saw a new agent and quit, another Python
            return False
        self._resident, self._resident_path = s, path
        return True

    def _end(self, stream: Stream | None) -> tuple[int | None, str]:
        if stream is None:
            return None, ""
        if stream is self._resident:
            self._resident = None
        if stream is self._batch:
            self._batch = None
        code = stream.close()
        return code, stream.stderr()

    def _end_streams(self) -> None:
        """End the session's connection to the resident agent and its batch process."""
        self._end(self._resident)
        self._end(self._batch)

    def stop_resident(self) -> None:
        """Stop the board's resident agent (its Python environment is about to change)."""
        self._end(self._resident)
        self._resident_tried = False
        self.agent("agentd", "--stop")

    def _start_resident(self) -> None:
        """At the end of a session that had to start an agent process: leave a resident
        agent behind for the next one (started detached by that process; errors ignored —
        it is only a speed-up)."""
        if self._batch is None or self._resident is not None or not self._resident_tried \
                or not self.board.resident_agent:
            return
        try:
            self.agent("agentd", "--detach", "--idle", self.board.resident_idle,
                       "--tag", self.board.python, timeout=2 * HELLO_TIMEOUT)
        except BoardError:
            pass

    def agent_hash(self) -> str | None:
        r = self.t.run(self._agent_cmd("version"))
        msg = self._last_json(r.stdout) if r.exit_code == 0 else None
        return msg.get("content_hash") if msg else None

    def state(self, *, install_agent: bool = True, model: str | None = None) -> dict:
        """The agent's `state` (version, info, listing — of MODEL only, if given) in one call.
        With INSTALL_AGENT, a missing or different agent is replaced by ours first;
        state["agent_uploaded"] says."""
        ours = local_agent()
        args = ["state"] + (["--model", model] if model else [])
        st: dict | None = None
        try:
            st = self.agent(*args)
        except RemoteFailure:
            if not install_agent:
                raise
        uploaded = False
        if st is None or st["agent"]["content_hash"] != ours["content_hash"]:
            if not install_agent:
                return {**st, "agent_uploaded": False}  # type: ignore[dict-item]
            self._end_streams()
            self._upload_agent(ours["path"])
            uploaded = True
            self._resident_tried = False  # an old resident agent quits when asked now
            st = self.agent(*args)
        if self._root is None:
            self._root = posixpath.dirname(st["store"].rstrip("/"))
        if st["store"] != self._store_abs:
            self._store_abs = st["store"]
            _remember_store(self.board, st["store"])
        return {**st, "agent_uploaded": uploaded}

    def _upload_agent(self, path: Path) -> None:
        tmp = f"{self.agent_path}.{secrets.token_hex(4)}.tmp"
        self.t.mkdir(f"{self.root}/agent")
        self.t.put(path, self._abs(tmp))
        self.t.check(["mv", "-f", tmp, self.agent_path])

    def _abs(self, path: str) -> str:
        """A board path under the spec's root, made absolute (SFTP has no ~)."""
        spec_root = self.board.root.rstrip("/")
        return self.root + path[len(spec_root):] if path.startswith(spec_root) else path

    # -- operations --------------------------------------------------------------------
    def push(self, bundle: Bundle, *, activate: bool = True,
             progress: Callable[[int, int], None] | None = None,
             state: dict | None = None) -> PushResult:
        """STATE: what `state(model=bundle.name)` just said, if the caller has it."""
        t0 = time.perf_counter()
        st = state or self.state(model=bundle.name)
        plan = plan_push(self.board, st["info"], st["models"], bundle, activate)
        if plan.problems:
            raise Incompatible(self.board.name, "; ".join(plan.problems),
                               hint="nothing was changed on the board")
        entry = next((e for e in st["models"] if e["name"] == bundle.name), None)
        current = entry["current"] if entry else None
        previous = entry["previous"] if entry else None
        sent = 0
        if plan.upload_model:
            sent, ans = self._upload_and_install(bundle, progress, activate)
            if activate:
                current, previous = ans["current"], ans["previous"]
        elif activate and current != bundle.version:
            a = self.agent("activate", bundle.name, bundle.version)
            current, previous = a["current"], a["previous"]
        return PushResult(self.board.name, bundle.name, bundle.version, bundle.manifest.label,
                          sent, st["agent_uploaded"], activate, current, previous,
                          time.perf_counter() - t0, self._resident is not None)

    def _upload_and_install(self, bundle: Bundle, progress, activate: bool
                            ) -> tuple[int, dict]:
        import tempfile

        incoming = f"{self.root}/incoming/{bundle.version}.{secrets.token_hex(4)}"
        sent = 0
        total = bundle.size
        resident = self._resident_agent()  # then the files go through it: no SFTP session
        try:
            if not resident:
                self.t.mkdir(incoming)
            with tempfile.TemporaryDirectory() as tmp:
                mpath = Path(tmp) / bundle.manifest_name
                mpath.write_bytes(bundle.manifest_bytes())
                files = [(mpath, bundle.manifest_name)] + \
                    [(p, rel) for rel, p in bundle.files().items()]
                for local, rel in files:
                    if "/" in rel and not resident:
                        self.t.mkdir(f"{incoming}/{rel.rsplit('/', 1)[0]}")
                    base = sent

                    def cb(done: int, _total: int, base: int = base) -> None:
                        if progress:
                            progress(base + done, total)
                    try:
                        if resident:
                            sent += self.agent(agentd.UPLOAD, incoming, rel,
                                               local.stat().st_size, payload=local,
                                               progress=cb)["bytes"]
                        else:
                            sent += self.t.put(local, f"{incoming}/{rel}", cb)
                    except BoardError as exc:
                        raise BoardError(self.board.name,
                                         f"upload of {rel} failed: {exc.message.split(': ', 1)[-1]}"
                                         f"{self._disk_hint()}",
                                         hint="the board keeps its active model") from exc
            args = ["install", incoming, "--remove-bundle"] + (["--activate"] if activate else [])
            return sent, self.agent(*args)
        except BaseException:
            try:
                self.t.run(["rm", "-rf", incoming])
            except BoardError:
                pass
            raise

    def _disk_hint(self) -> str:
        r = self.t.run(["df", "-Pk", self.root])
        try:
            free_kb = int(r.stdout.strip().splitlines()[-1].split()[3])
            return f" (the board has {free_kb} KB free under {self.root}: disk full?)"
        except (ValueError, IndexError):
            return ""

    def bench(self, spec: str, *, runs: int = 100, warmup: int = 10, threads: int | None = None,
              delegate: str = "auto", max_seconds: float | None = None,
              allow_cpu: bool = False) -> dict:
        args = ["bench", spec, "--runs", runs, "--warmup", warmup, "--threads",
                threads or self.board.profile.threads, "--delegate", delegate]
        if max_seconds:
            args += ["--max-seconds", max_seconds]
        if allow_cpu:
            args.append("--allow-cpu")
        return self.agent(*args)

    def put_data(self, path: Path) -> str:
        """Send a data file once per content; its path on the board."""
        digest = sha256_file(path)
        remote = f"{self.root}/data/{digest}{path.suffix}"
        if self.t.run(["test", "-f", remote]).exit_code != 0:
            self.t.mkdir(f"{self.root}/data")
            tmp = f"{remote}.{secrets.token_hex(4)}.tmp"
            self.t.put(path, tmp)
            self.t.check(["mv", "-f", tmp, remote])
        return remote

    def eval(self, spec: str, data: Path, reference: Path | None = None) -> dict:
        args = ["eval", spec, "--data", self.put_data(data)]
        if reference:
            args += ["--reference", self.put_data(reference)]
        return self.agent(*args)

    def status(self) -> dict:
        h = self.agent_hash()
        if h is None:
            return {"board": self.board.name, "agent": None, "agent_current": False,
                    "models": [], "health": "no agent"}
        listing = self.agent("list")["models"]
        problems = []
        for e in listing:
            if e["current"]:
                v = self.agent("verify", f"{e['name']}@{e['current']}")
                if not v["valid"]:
                    problems.append(f"{e['name']}@{e['current']}: {v['problems'][0]}")
        return {"board": self.board.name, "agent": h, "agent_current":
                h == local_agent()["content_hash"], "models": listing,
                "health": "ok" if not problems else "; ".join(problems)}

    def rollback(self, name: str) -> dict:
        return self.agent("rollback", name)


def push_many(boards: list[Board], bundle: Bundle, *, activate: bool = True, parallel: int = 16,
              accept_new_host_key: bool = False,
              on_done: Callable[[str, "PushResult | BoardError"], None] | None = None
              ) -> dict[str, "PushResult | BoardError"]:
    """Push one bundle to many boards, PARALLEL at a time (a thread each: the work is waiting
    on links and boards). Every board gets a result or the BoardError that stopped it; one
    board's failure doesn't touch the others."""
    from concurrent.futures import ThreadPoolExecutor

    from ..errors import EdgeDeployError

    def one(board: Board) -> "PushResult | BoardError":
        try:
            with BoardSession(board, accept_new_host_key=accept_new_host_key) as s:
                out: PushResult | BoardError = s.push(bundle, activate=activate)
        except BoardError as exc:
            out = exc
        except EdgeDeployError as exc:
            out = BoardError(board.name, str(exc))
        if on_done:
            on_done(board.name, out)
        return out

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(boards)))) as pool:
        return dict(zip((b.name for b in boards), pool.map(one, boards)))
