"""The host's link to one board's agent, through a Transport.

Round trips and board CPU are what a session costs, so the link:

* sends the store's control commands (protocol.CONTROL) to the board's resident agent
  (``agentd``, reached through SSH stream-local forwarding at STORE/agentd.sock: no process
  starts on the board) when one answers the hello for this board's ``python``;
* sends everything else — and everything when there is no resident agent — through one
  ``edgedeploy-agent batch`` process per session;
* at the end of a session that had to start a batch process, asks it to leave a resident agent
  behind (``agentd --detach``), unless the inventory says ``resident_agent = false``;
* remembers the board's absolute store path on this host (the resident agent's socket is
  found by absolute path; a ``~/…`` root needs the board to expand it);
* installs our agent zipapp when the board's differs (content hash), and uploads files: through
  the resident agent's ``upload`` line when one serves the session, else over SFTP.

Answers are parsed once, here, into protocol.py's dataclasses. An agent error comes back as
the exception it was on the board (``errors.from_message``, same class and exit code) with the
board's name in its message; an agent that died or printed no JSON is a RemoteFailure.

On the board (ROOT is the inventory's ``root``, default ``~/.edgedeploy``)::

    ROOT/agent/edgedeploy-agent.pyz   replaced when its content hash differs from ours
    ROOT/store/                       the agent's store (device/store.py): where uploads and
                                      eval data go there, the agent says (State.incoming/.data)

(A little past 400 lines: the two ways to reach the agent — the resident socket and a batch
process — with their fallback from one to the other, which is one decision read in one place.)
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import secrets
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..device import protocol
from ..device.protocol import CONTROL, UPLOAD
from ..errors import BoardError, EdgeDeployError, RemoteFailure, Unreachable, from_message
from ..targets import Board
from .transport import Stream, Transport, open_transport, shell_join

AGENT_CACHE = Path(os.environ.get("EDGEDEPLOY_CACHE", "~/.cache/edgedeploy")).expanduser()
HELLO_TIMEOUT = 5.0
CHUNK = 1 << 18

Progress = Callable[[int, int], None]
A = TypeVar("A")


def local_agent() -> dict:
    """Build (once per content) the zipapp this host would send; its identity and path."""
    from ..device.ship import build_zipapp, content_hash, source_files

    h = content_hash(source_files())
    path = AGENT_CACHE / "agent" / f"edgedeploy-agent-{h[:16]}.pyz"
    if not path.exists():
        build_zipapp(path)
    return {"content_hash": h, "path": path}


def _store_note(board: Board) -> Path:
    key = json.dumps([board.name, board.host, board.port, board.user, board.root])
    return AGENT_CACHE / "boards" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".store")


def remembered_store(board: Board) -> str | None:
    """The board's absolute store path as its agent last said."""
    try:
        return _store_note(board).read_text().strip() or None
    except OSError:
        return None


def remember_store(board: Board, store: str) -> None:
    from ..device.fsio import write_atomic

    note = _store_note(board)
    try:
        note.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(note, store.encode())
    except OSError:
        pass  # only a speed-up


def within(timeout: float) -> float:
    """Pure: the deadline sent with a store change the host waits TIMEOUT seconds for. Shorter
    by a margin for the link (the agent counts from the line's arrival), so the board drops a
    command before the host stops waiting for it, never after."""
    return max(1.0, timeout - max(1.0, 0.1 * timeout))


def _size(data: Path | bytes) -> int:
    return len(data) if isinstance(data, bytes) else data.stat().st_size


def _send(stream: Stream, data: Path | bytes, progress: Progress | None) -> None:
    size = _size(data)
    if isinstance(data, bytes):
        for i in range(0, size, CHUNK):
            stream.send_bytes(data[i:i + CHUNK])
            if progress:
                progress(min(i + CHUNK, size), size)
        return
    done = 0
    with open(data, "rb") as f:
        while chunk := f.read(CHUNK):
            stream.send_bytes(chunk)
            done += len(chunk)
            if progress:
                progress(done, size)


def _content_hash(state_msg: dict) -> str | None:
    agent = state_msg.get("agent")
    return agent.get("content_hash") if isinstance(agent, dict) else None


def _quiet_close(s: Stream) -> None:
    try:
        s.close()
    except BoardError:
        pass


class AgentLink:
    """One session with a board's agent. ``call`` runs a command; ``state`` is the one call
    that tells a plan everything; ``upload`` sends files; ``close`` ends the session."""

    def __init__(self, board: Board, transport: Transport | None = None, *,
                 accept_new_host_key: bool = False) -> None:
        self.board = board
        self.transport = transport or open_transport(board,
                                                     accept_new_host_key=accept_new_host_key)
        # Commands may use ~/ (the remote shell expands it); SFTP needs the absolute path,
        # learnt from the agent's answer or, before there is an agent, from the shell.
        self.spec_root = board.root.rstrip("/") or "/"
        self._root = None if self.spec_root.startswith("~") else self.spec_root
        self.agent_path = f"{self.spec_root}/agent/edgedeploy-agent.pyz"
        self.store_arg = f"{self.spec_root}/store"
        self.store: str | None = None if self.spec_root.startswith("~") else self.store_arg
        self.last_state: protocol.State | None = None
        self.agent_uploaded = False             # our agent was installed in this session
        self._batch: Stream | None = None       # the session's `batch` process
        self._resident: Stream | None = None    # the board's resident agent (agentd)
        self._resident_tried = False
        self.resident_path = ""                 # its socket, once it served this session

    @property
    def name(self) -> str:
        return self.board.name

    @property
    def root(self) -> str:
        """The inventory's root on the board, absolute."""
        if self._root is None:
            home = self.transport.check(["printf", "%s", "~"]).stdout.strip()
            self._root = (home + self.board.root[1:]).rstrip("/")
        return self._root

    @property
    def resident(self) -> bool:
        """The board's resident agent serves this session."""
        return self._resident is not None

    def close(self) -> None:
        try:
            self._leave_resident()
            self._end_streams()
        finally:
            self.transport.close()

    # -- commands ----------------------------------------------------------------------
    def command(self, *args: Any) -> str:
        """The shell command for an agent call. With no `python` in the inventory, the venv
        `edgedeploy bootstrap` made (ROOT/venv) if there is one, else python3."""
        tail = shell_join([self.agent_path, "--store", self.store_arg, *map(str, args)])
        if self.board.python != "python3":
            return f"{shell_join([self.board.python])} {tail}"
        venv = shell_join([f"{self.spec_root}/venv/bin/python"])
        return f'p={venv}; [ -x "$p" ] || p=python3; exec "$p" {tail}'

    def call(self, *args: Any, timeout: float | None = None,
             payload: Path | bytes | None = None, progress: Progress | None = None) -> dict:
        """Run an agent command; its answer (``ok`` true), or the error it stands for, naming
        the board. PAYLOAD: bytes that follow the command line (the resident ``upload``)."""
        stream, what = self._stream(str(args[0]))
        timeout = timeout or self.board.command_timeout
        argv = [str(x) for x in args]
        if (argv[0] in protocol.CHANGING or "--settled" in argv) and self._agent_is_ours():
            argv = ["--within", f"{within(timeout):.1f}", *argv]
        line = ""
        try:
            stream.send_line(json.dumps(argv))
            if payload is not None:
                _send(stream, payload, progress)
            line = stream.read_line(timeout)
        except Unreachable:
            self._end(stream)
            raise
        try:
            msg = json.loads(line) if line else None
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or "ok" not in msg:
            code, err = self._end(stream)
            raise RemoteFailure(self.name, f"{what} <<< {' '.join(map(str, args))}", code,
                                err or line,
                                hint="the agent crashed or is missing; `edgedeploy push` "
                                     "installs it")
        if not msg["ok"]:
            exit_code = msg.get("exit")
            raise from_message(str(msg.get("code", "error")), str(msg.get("message", "failed")),
                               board=self.name,
                               exit_code=exit_code if isinstance(exit_code, int) else None)
        return msg

    def _agent_is_ours(self) -> bool:
        """The board runs our agent (it knows ``--within``): we installed it, or its last
        state said so. An older agent gets its commands without a deadline."""
        if self.agent_uploaded:
            return True
        return self.last_state is not None and \
            self.last_state.agent.content_hash == local_agent()["content_hash"]

    def ask(self, parse: Callable[[Any], A], *args: Any, **kw: Any) -> A:
        """``call``, the answer parsed by PARSE (a protocol dataclass's ``parse``)."""
        return self.parse(parse, self.call(*args, **kw), str(args[0]))

    def parse(self, parse: Callable[[Any], A], msg: dict, what: str) -> A:
        try:
            return parse(msg)
        except protocol.Malformed as exc:
            raise BoardError(self.name, f"the agent's answer to `{what}` is malformed ({exc})",
                             hint="the board's agent may be another version; "
                                  "`edgedeploy push` installs ours") from exc

    def version_hash(self) -> str | None:
        """The content hash of the board's agent, asked of a process of its own (None: no
        agent runs)."""
        r = self.transport.run(self.command("version"))
        if r.exit_code != 0:
            return None
        for line in reversed(r.stdout.strip().splitlines()):
            try:
                return protocol.AgentId.parse(json.loads(line)).content_hash
            except (ValueError, protocol.Malformed):
                continue
        return None

    def state(self, *, install_agent: bool = True, model: str | None = None) -> protocol.State:
        """The agent's `state` (of MODEL only, if given) in one call. INSTALL_AGENT: a missing
        or different agent is replaced by ours first (``agent_uploaded`` says so after)."""
        ours = local_agent()["content_hash"]
        args = ["state"] + (["--model", model] if model else [])
        msg: dict | None
        try:
            msg = self.call(*args)
        except RemoteFailure:
            if not install_agent:
                raise
            msg = None
        if msg is None or _content_hash(msg) != ours:
            if install_agent:
                self._end_streams()
                self.install_agent(local_agent()["path"])
                self.agent_uploaded = True
                self._resident_tried = False  # an old resident agent quits when asked now
                msg = self.call(*args)
        assert msg is not None
        return self._learn(self.parse(protocol.State.parse, msg, "state"))

    def _learn(self, st: protocol.State) -> protocol.State:
        if self._root is None:
            self._root = posixpath.dirname(st.store.rstrip("/"))
        if st.store != self.store:
            self.store = st.store
            remember_store(self.board, st.store)
        self.last_state = st
        return st

    def install_agent(self, path: Path) -> None:
        """Our zipapp to ROOT/agent/, under a temporary name, then renamed over the old."""
        tmp = f"{self.agent_path}.{secrets.token_hex(4)}.tmp"
        self.transport.mkdir(f"{self.root}/agent")
        self.transport.put(path, self._abs(tmp))
        self.transport.check(["mv", "-f", tmp, self.agent_path])

    def _abs(self, path: str) -> str:
        """A board path under the spec's root, made absolute (SFTP has no ~)."""
        return self.root + path[len(self.spec_root):] if path.startswith(self.spec_root) \
            else path

    # -- files -------------------------------------------------------------------------
    def upload(self, folder: str, files: list[tuple[str, Path | bytes]],
               progress: Progress | None = None) -> int:
        """FILES (relative path, local file or bytes) into FOLDER on the board (a new folder
        inside one the agent named, e.g. State.incoming): through the resident agent when one
        serves the session (no SFTP session), else over SFTP. The bytes sent."""
        total = sum(_size(d) for _, d in files)
        resident = self._resident_agent()
        sent = 0
        made = False
        for rel, data in files:
            base = sent

            def step(done: int, _total: int, base: int = base) -> None:
                if progress:
                    progress(base + done, total)
            try:
                if resident:
                    sent += self.ask(protocol.Uploaded.parse, UPLOAD, folder, rel, _size(data),
                                     payload=data, progress=step).bytes
                    continue
                if not made:
                    self.transport.mkdir(folder)
                    made = True
                if "/" in rel:
                    self.transport.mkdir(posixpath.dirname(f"{folder}/{rel}"))
                sent += self.transport.put(data, f"{folder}/{rel}", step)
            except EdgeDeployError as exc:
                free = self.free_kb(folder.rsplit("/", 1)[0])
                why = exc.message.split(": ", 1)[-1]
                raise BoardError(self.name, f"upload of {rel} failed: {why}" + (
                    f" (the board has {free} KiB free there: disk full?)"
                    if free is not None else ""),
                    hint="the board keeps its active model") from exc
        return sent

    def put_once(self, folder: str, local: Path, name: str) -> str:
        """LOCAL as FOLDER/NAME, sent only when no file of that name is there (NAME names the
        content); its path on the board."""
        remote = f"{folder}/{name}"
        if self.transport.run(["test", "-f", remote]).exit_code != 0:
            self.transport.mkdir(folder)
            tmp = f"{remote}.{secrets.token_hex(4)}.tmp"
            self.transport.put(local, tmp)
            self.transport.check(["mv", "-f", tmp, remote])
        return remote

    def free_kb(self, path: str) -> int | None:
        """Free space under PATH on the board (df), for an error's hint."""
        try:
            r = self.transport.run(["df", "-Pk", path])
            return int(r.stdout.strip().splitlines()[-1].split()[3])
        except (EdgeDeployError, ValueError, IndexError):
            return None

    # -- streams -----------------------------------------------------------------------
    def _stream(self, command: str) -> tuple[Stream, str]:
        if (command in CONTROL or command == UPLOAD) and self._resident_agent():
            assert self._resident is not None
            return self._resident, f"resident agent {self.resident_path}"
        cmd = self.command("batch")
        if self._batch is None:
            self._batch = self.transport.start(cmd)
        return self._batch, cmd

    def _resident_agent(self) -> bool:
        """Connect (once a session) to the board's resident agent, if it has one running."""
        if self._resident is not None:
            return True
        if self._resident_tried or not self.board.resident_agent or \
                not self.transport.forwards_unix:
            return False
        self._resident_tried = True
        store = self.store or remembered_store(self.board)
        if not store:
            return False
        path = f"{store}/{protocol.SOCKET}"
        s = self.transport.connect_unix(path)
        if s is None:
            return False
        try:
            hello: protocol.Hello | None = protocol.Hello.parse(
                json.loads(s.read_line(HELLO_TIMEOUT) or "null"))
        except (ValueError, BoardError):  # protocol.Malformed is a ValueError
            hello = None
        if hello is None or hello.tag != self.board.python:
            _quiet_close(s)  # gone, an old one that saw a new agent and quit, another Python
            return False
        self._resident, self.resident_path = s, path
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
        self.call("agentd", "--stop")

    def keep_resident(self) -> None:
        """A resident agent was started on purpose in this session (e.g. one that also pulls,
        host/pullsetup.py): don't leave another one behind at the end."""
        self._resident_tried = False

    def _leave_resident(self) -> None:
        """At the end of a session that had to start an agent process: leave a resident
        agent behind for the next one (started detached by that process; errors ignored —
        it is only a speed-up)."""
        if self._batch is None or self._resident is not None or not self._resident_tried \
                or not self.board.resident_agent:
            return
        try:
            self.call("agentd", "--detach", "--idle", self.board.resident_idle,
                      "--tag", self.board.python, timeout=2 * HELLO_TIMEOUT)
        except EdgeDeployError:
            pass
