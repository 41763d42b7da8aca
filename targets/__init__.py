"""Board profiles (TOML data in ``profiles/``) and the user's inventory (``fleet.toml``).

A profile says what a kind of board is: arch, Python, runtime preference, delegate, the model
format it needs (``edgetpu`` for Coral), where the store lives and default threads.

``fleet.toml``::

    signing_key = "~/.ssh/id_ed25519"   # sign bundles (push, publish) and desired states;
                                  # a .pub when ssh-agent holds the private key (optional)
    [pull]                        # pull mode (optional)
    store = "s3://fleet-bucket/prod"
    endpoint = "https://s3.example:9000"  # default: AWS (or $AWS_ENDPOINT_URL)
    poll_every = 60               # what the boards poll at: status --via's staleness

    [defaults]                    # any board field; boards override
    user = "pi"
    key = "~/.ssh/id_ed25519"
    known_hosts = "~/.ssh/known_hosts"

    [boards.pi-kitchen]
    host = "192.168.1.40"         # an address, a name, or a ~/.ssh/config Host alias
    port = 22
    profile = "rpi-aarch64"
    tags = ["camera"]
    groups = ["canary"]
    python = "/home/pi/venv/bin/python"   # default: python3
    root = "~/.edgedeploy"        # agent + store on the board (default: the profile's)
    resident_agent = true         # keep an agent on the board between sessions (see below)
    resident_idle = 900           # seconds it waits for the next session before quitting
    cohort = "kitchen"            # pull mode: the desired-state document it follows ("all")

The resident agent (``edgedeploy-agent agentd``, started detached by the first session that
needs it) saves every later session the board-side Python start-up: the deployer reaches it
through SSH stream-local forwarding. ``resident_agent = false`` turns it off; sshd must allow
stream-local forwarding (OpenSSH's default) for it to be used.

Everything is checked when the file is read: an unknown profile, a board without a host, two
boards at one address, a field of the wrong type — an InputError naming the file and the board.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    arch: tuple[str, ...]          # empty: any
    python: str                    # a specifier such as ">=3.9,<3.13"
    runtimes: tuple[str, ...]      # preference order
    delegate: str                  # xnnpack | edgetpu | none
    model_format: str              # tflite | edgetpu
    store: str
    threads: int
    port: int = 22
    os_python: str = ""           # the OS's python3 ("3.11"), "" = ask the board
    os_glibc: str = ""            # "2.36"; "" = not glibc (Android) or ask the board
    os_numpy: str = ""            # numpy the OS ships (python3-numpy), "" = none / ask
    bootstrap: str = "wheelhouse"  # wheelhouse | termux (pkg install) | vendor (Coral apt)

    def python_ok(self, version: str) -> bool:
        have = _version_tuple(version)
        for part in filter(None, (p.strip() for p in self.python.split(","))):
            op = part.rstrip("0123456789.")
            want = _version_tuple(part[len(op):])
            n = len(want)
            cmp = (have[:n] > want) - (have[:n] < want)
            if not {">=": cmp >= 0, ">": cmp > 0, "<": cmp < 0, "<=": cmp <= 0,
                    "==": cmp == 0}.get(op.strip(), False):
                return False
        return True


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for p in v.strip().split("."):
        digits = "".join(c for c in p if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name: str) -> Profile:
    path = PROFILE_DIR / f"{name}.toml"
    if not path.is_file():
        raise InputError(f"unknown board profile {name!r}",
                         hint=f"profiles: {', '.join(profile_names())}")
    d = tomllib.loads(path.read_text())
    return Profile(name=d["name"], description=d["description"], arch=tuple(d["arch"]),
                   python=d["python"], runtimes=tuple(d["runtimes"]), delegate=d["delegate"],
                   model_format=d["model_format"], store=d["store"], threads=int(d["threads"]),
                   port=int(d.get("port", 22)), os_python=str(d.get("os_python", "")),
                   os_glibc=str(d.get("os_glibc", "")), os_numpy=str(d.get("os_numpy", "")),
                   bootstrap=str(d.get("bootstrap", "wheelhouse")))


@dataclass
class Board:
    name: str
    host: str
    profile: Profile
    user: str | None = None
    port: int | None = None
    key: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None
    python: str = "python3"
    root: str = "~/.edgedeploy"
    transport: str = "ssh"          # ssh | local
    tags: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    connect_timeout: float = 10.0
    command_timeout: float = 300.0
    resident_agent: bool = True     # keep an agent process on the board between sessions
    resident_idle: float = 900.0    # ... that quits after this many idle seconds (0: never)
    cohort: str = "all"             # pull mode: the desired-state document it follows

    @property
    def address(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port or 22}"


_FIELDS: dict[str, type | tuple[type, ...]] = {"host": str, "user": str, "port": int, "key": str, "known_hosts": str,
           "ssh_config": str, "python": str, "root": str, "transport": str, "profile": str,
           "tags": list, "groups": list, "connect_timeout": (int, float),
           "command_timeout": (int, float), "resident_agent": bool,
           "resident_idle": (int, float), "cohort": str}


@dataclass(frozen=True)
class PullSettings:
    """The fleet file's ``[pull]`` table: where pull mode's object store is."""
    store: str | None = None        # s3://BUCKET/PREFIX (or http(s)://HOST:PORT/BUCKET/PREFIX)
    endpoint: str | None = None     # the S3 endpoint for an s3:// store (default: AWS)
    poll_every: float = 60.0        # what the boards were set up with (staleness)


@dataclass
class Fleet:
    path: Path | None
    boards: dict[str, Board]
    signing_key: str | None = None  # top-level `signing_key`: bundles and desired states
    pull: PullSettings = field(default_factory=PullSettings)

    def select(self, names: list[str] | None = None, group: str | None = None,
               tag: str | None = None) -> list[Board]:
        chosen = list(self.boards.values())
        if names:
            missing = [n for n in names if n not in self.boards]
            if missing:
                raise InputError(f"{self.path}: no board named {', '.join(missing)}",
                                 hint=f"boards: {', '.join(self.boards) or 'none'}")
            chosen = [self.boards[n] for n in names]
        if group:
            chosen = [b for b in chosen if group in b.groups]
        if tag:
            chosen = [b for b in chosen if tag in b.tags]
        return chosen

    def get(self, name: str) -> Board:
        return self.select([name])[0]


def local_board() -> Board:
    """The embedded ``local`` target: this machine, no SSH."""
    return Board(name="local", host="localhost", profile=load_profile("local"),
                 transport="local", python=_sys_python(), root="~/.edgedeploy")


def _sys_python() -> str:
    import sys

    return sys.executable


def load_fleet(path: str | Path) -> Fleet:
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such fleet file",
                         hint="write one (every key, with an example: the README's \"fleet.toml "
                              "reference\" or `edgedeploy targets --help`), or point at one "
                              "with --fleet FILE / $EDGEDEPLOY_FLEET")
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc}); a board defined twice shows up "
                         f"here too") from exc
    defaults = data.get("defaults", {})
    boards_raw = data.get("boards")
    unknown_top = set(data) - {"defaults", "boards", "signing_key", "pull"}
    if unknown_top:
        raise InputError(f"{path}: unknown section(s) {', '.join(sorted(unknown_top))}",
                         hint="use signing_key, [pull], [defaults] and [boards.NAME]")
    signing_key = data.get("signing_key")
    if signing_key is not None and (not isinstance(signing_key, str) or not signing_key):
        raise InputError(f"{path}: signing_key = {signing_key!r}: expected a key file's path")
    pull = _pull_settings(path, data.get("pull", {}))
    if not isinstance(boards_raw, dict) or not boards_raw:
        raise InputError(f"{path}: no [boards.NAME] sections")
    boards: dict[str, Board] = {}
    seen_addr: dict[tuple, str] = {}
    for name, raw in boards_raw.items():
        where = f"{path}: board {name}"
        if not isinstance(raw, dict):
            raise InputError(f"{where}: expected a table")
        merged: dict[str, Any] = {**defaults, **raw}
        for k, v in merged.items():
            if k not in _FIELDS:
                raise InputError(f"{where}: unknown field {k!r}",
                                 hint=f"fields: {', '.join(sorted(_FIELDS))}")
            if not isinstance(v, _FIELDS[k]):
                raise InputError(f"{where}: {k} = {v!r} has the wrong type")
        cohort = merged.get("cohort", "all")
        if not cohort or not all(c.isalnum() or c in "._-" for c in cohort) \
                or cohort.startswith("."):
            raise InputError(f"{where}: cohort {cohort!r}: use letters, digits, '.', '_', '-'")
        if "host" not in merged and merged.get("transport", "ssh") == "ssh":
            raise InputError(f"{where}: no host")
        try:
            profile = load_profile(merged.pop("profile", "local"))
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        merged.setdefault("root", profile.store)
        board = Board(name=name, profile=profile, host=merged.pop("host", "localhost"),
                      **{k: v for k, v in merged.items()})
        key = (board.host, board.port or profile.port, board.user)
        if board.transport == "ssh" and key in seen_addr:
            raise InputError(f"{where}: same host, port and user as board {seen_addr[key]}",
                             hint="each board appears once")
        seen_addr[key] = name
        if board.port is None and profile.port != 22:
            board.port = profile.port
        boards[name] = board
    signer = str((path.parent / Path(signing_key).expanduser())) if signing_key else None
    return Fleet(path, boards, signer, pull)


def _pull_settings(path: Path, raw: object) -> PullSettings:
    if not isinstance(raw, dict):
        raise InputError(f"{path}: [pull] must be a table")
    kinds: dict[str, type | tuple[type, ...]] = {"store": str, "endpoint": str,
                                                 "poll_every": (int, float)}
    for k, v in raw.items():
        if k not in kinds:
            raise InputError(f"{path}: [pull] unknown field {k!r}",
                             hint=f"fields: {', '.join(kinds)}")
        if not isinstance(v, kinds[k]) or isinstance(v, bool):
            raise InputError(f"{path}: [pull] {k} = {v!r} has the wrong type")
    every = float(raw.get("poll_every", 60.0))
    if not every > 0:
        raise InputError(f"{path}: [pull] poll_every = {every}: expected seconds > 0")
    return PullSettings(raw.get("store"), raw.get("endpoint"), every)


def this_arch() -> str:
    return platform.machine()
