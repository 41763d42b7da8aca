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

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..device.manifest import Manifest, sha256_file
from ..errors import AgentError, BoardError, Incompatible, RemoteFailure
from ..targets import Board
from .bundle import Bundle
from .transport import Transport, open_transport

AGENT_CACHE = Path(os.environ.get("EDGEDEPLOY_CACHE", "~/.cache/edgedeploy")).expanduser()


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

    def to_dict(self) -> dict:
        return asdict(self)


class BoardSession:
    """A connected board: resolved paths, the agent, the operations."""

    def __init__(self, board: Board, transport: Transport | None = None, *,
                 accept_new_host_key: bool = False) -> None:
        self.board = board
        self.t = transport or open_transport(board, accept_new_host_key=accept_new_host_key)
        root = board.root
        if root.startswith("~"):
            home = self.t.check(["printf", "%s", "~"]).stdout.strip()
            root = home + root[1:]
        self.root = root.rstrip("/")
        self.agent_path = f"{self.root}/agent/edgedeploy-agent.pyz"
        self.store = f"{self.root}/store"

    def close(self) -> None:
        self.t.close()

    def __enter__(self) -> "BoardSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the agent ---------------------------------------------------------------------
    def agent(self, *args: Any, timeout: float | None = None, tolerate: tuple = ()) -> dict:
        argv = [self.board.python, self.agent_path, "--store", self.store, *map(str, args)]
        r = self.t.run(argv, timeout=timeout)
        msg = None
        for line in reversed(r.stdout.strip().splitlines()):
            try:
                msg = json.loads(line)
                break
            except ValueError:
                continue
        if not isinstance(msg, dict) or "ok" not in msg:
            raise RemoteFailure(self.board.name, r.command, r.exit_code, r.stderr or r.stdout,
                                hint="the agent crashed or is missing; `edgedeploy push` "
                                     "installs it")
        if not msg["ok"]:
            if msg.get("code") in tolerate:
                return msg
            raise AgentError(self.board.name, msg.get("code", "error"),
                             msg.get("message", "failed"), r.exit_code)
        return msg

    def agent_hash(self) -> str | None:
        r = self.t.run([self.board.python, self.agent_path, "version"])
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])["content_hash"] \
                if r.exit_code == 0 else None
        except (ValueError, IndexError, KeyError):
            return None

    def ensure_agent(self) -> bool:
        """Copy our agent when the board's is missing or different. True if copied."""
        ours = local_agent()
        if self.agent_hash() == ours["content_hash"]:
            return False
        self._upload_agent(ours["path"])
        return True

    def _upload_agent(self, path: Path) -> None:
        tmp = f"{self.agent_path}.{secrets.token_hex(4)}.tmp"
        self.t.check(["mkdir", "-p", f"{self.root}/agent"])
        self.t.put(path, tmp)
        self.t.check(["mv", "-f", tmp, self.agent_path])

    # -- operations --------------------------------------------------------------------
    def push(self, bundle: Bundle, *, activate: bool = True,
             progress: Callable[[int, int], None] | None = None) -> PushResult:
        t0 = time.perf_counter()
        agent_uploaded = self.ensure_agent()
        info = self.agent("info")
        listing = self.agent("list")["models"]
        plan = plan_push(self.board, info, listing, bundle, activate)
        if plan.problems:
            raise Incompatible(self.board.name, "; ".join(plan.problems),
                               hint="nothing was changed on the board")
        sent = 0
        if plan.upload_model:
            sent = self._upload_and_install(bundle, progress)
        current = previous = None
        if activate:
            a = self.agent("activate", bundle.name, bundle.version)
            current, previous = a["current"], a["previous"]
        return PushResult(self.board.name, bundle.name, bundle.version, bundle.manifest.label,
                          sent, agent_uploaded, activate, current, previous,
                          time.perf_counter() - t0)

    def _upload_and_install(self, bundle: Bundle, progress) -> int:
        import tempfile

        incoming = f"{self.root}/incoming/{bundle.version}.{secrets.token_hex(4)}"
        self.t.check(["mkdir", "-p", incoming])
        sent = 0
        total = bundle.size
        try:
            with tempfile.TemporaryDirectory() as tmp:
                mpath = Path(tmp) / bundle.manifest_name
                mpath.write_bytes(bundle.manifest_bytes())
                files = [(mpath, bundle.manifest_name)] + \
                    [(p, rel) for rel, p in bundle.files().items()]
                for local, rel in files:
                    if "/" in rel:
                        self.t.check(["mkdir", "-p", f"{incoming}/{rel.rsplit('/', 1)[0]}"])
                    base = sent

                    def cb(done: int, _total: int, base: int = base) -> None:
                        if progress:
                            progress(base + done, total)
                    try:
                        sent += self.t.put(local, f"{incoming}/{rel}", cb)
                    except BoardError as exc:
                        raise BoardError(self.board.name,
                                         f"upload of {rel} failed: {exc.message.split(': ', 1)[-1]}"
                                         f"{self._disk_hint()}",
                                         hint="the board keeps its active model") from exc
            self.agent("install", incoming)
        finally:
            try:
                self.t.run(["rm", "-rf", incoming])
            except BoardError:
                pass
        return sent

    def _disk_hint(self) -> str:
        r = self.t.run(["df", "-Pk", self.root])
        try:
            free_kb = int(r.stdout.strip().splitlines()[-1].split()[3])
            return f" (the board has {free_kb} KB free under {self.root}: disk full?)"
        except (ValueError, IndexError):
            return ""

    def bench(self, spec: str, *, runs: int = 100, warmup: int = 10, threads: int | None = None,
              delegate: str = "auto", max_seconds: float | None = None) -> dict:
        args = ["bench", spec, "--runs", runs, "--warmup", warmup, "--threads",
                threads or self.board.profile.threads, "--delegate", delegate]
        if max_seconds:
            args += ["--max-seconds", max_seconds]
        return self.agent(*args)

    def put_data(self, path: Path) -> str:
        """Send a data file once per content; its path on the board."""
        digest = sha256_file(path)
        remote = f"{self.root}/data/{digest}{path.suffix}"
        if self.t.run(["test", "-f", remote]).exit_code != 0:
            self.t.check(["mkdir", "-p", f"{self.root}/data"])
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
