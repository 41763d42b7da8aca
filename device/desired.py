"""Pull mode's documents in the object store, and the pure decisions a board makes from them.
Standard library only: the board parses them (device/pull.py), the host writes them.

Bucket layout under PREFIX::

    bundles/SHA256.tar          a bundle as one tar (model, NAME.MODE.manifest.json, its .sig,
                                gate.npz…), named by the sha256 of its bytes: written once,
                                never changed, so a cut download resumes with a Range GET
    desired/COHORT.json         a cohort's desired state, signed (the envelope below)
    status/BOARD/status.json    a board's last report; a board's credentials may write only
                                under its own status/BOARD/

Envelope (``desired/COHORT.json``); the SSH signature, namespace ``edgedeploy-desired``, is
over the UTF-8 bytes of ``document`` exactly::

    {"schema": 1, "kind": "edgedeploy-desired",
     "document": "<the desired state below, as a JSON string>",
     "signature": "-----BEGIN SSH SIGNATURE-----\\n…" | null}

Desired state (the document)::

    {"schema": 1, "cohort": "kitchen", "serial": 1764000000123456, "issued": "…Z",
     "targets": [{"model": "digits", "version": "3f2a9c1b0d4e", "release": 1764000000,
                  "bundle": "bundles/<sha256>.tar", "sha256": "<sha256>", "size": 140800,
                  "boards": ["*"] | ["b0", "b3"],
                  "gates": ["accuracy>=0.9", "p99_ms<=25"], "max_accuracy_drop": null,
                  "max_latency_increase": null, "bench_runs": 50,
                  "allow_downgrade": false, "rollout": "20261126-101500-ab12" | null,
                  "rollback": false}]}

For each model a board takes the target that names it, else the one for ``"*"`` (at most one
of each per model). A ``rollback`` target (``sha256`` and ``bundle`` empty, no gates) sends
boards back to a version they keep (an aborted rollout): no download, no gates. ``serial`` only rises: a board refuses a document whose serial is lower
than one it has taken (a replayed old document).

Status (``status/BOARD/status.json``), written by the board after a poll::

    {"schema": 1, "board": "b0", "cohort": "kitchen", "time": "…Z", "ts": 1764000000.5,
     "poll_every": 5.0, "serial": 1764000000123456 | null, "agent": "<content hash[:12]>",
     "signers": 1, "models": {"digits": {"current": "3f2a…", "previous": "…" | null,
                                         "release": 1764000000 | null}},
     "results": {"digits": {"version": "3f2a…", "release": …, "sha256": "…",
                            "target": "<Target.digest()>",
                            "outcome": "committed" | "gate_failed" | "refused" | "failed",
                            "figures": {…} | null, "old_figures": {…} | null,
                            "error": null | "…", "serial": …, "rollout": … | null,
                            "downgrade": false, "time": "…Z"}},
     "error": null | "desired state refused: …", "downloaded_bytes": 140800,
     "info": {"arch": "aarch64", "python": "3.11.2", "runtime": "litert" | null,
              "runtime_error": null | "…", "numpy": "1.24.2", "free_bytes": …}}

The controller's preflight checks ``info`` against the board's profile as a push would.

Outcomes: ``committed`` the board runs the target (gates passed, or none asked, or it already
ran it); ``gate_failed`` the gates failed and the old version stayed active; ``refused`` the
signature, release number or content was refused (not retried while the target stays the same:
a new rollout, release or ``allow_downgrade`` is a new target); ``failed`` anything else (retried at the next poll).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..errors import InputError

SCHEMA = 1
ENVELOPE_KIND = "edgedeploy-desired"
OUTCOMES = ("committed", "gate_failed", "refused", "failed")
FINAL_HERE = ("gate_failed", "refused")  # not retried for the same target and rollout


def desired_key(cohort: str) -> str:
    return f"desired/{cohort}.json"


def status_key(board: str) -> str:
    return f"status/{board}/status.json"


def bundle_key(sha256: str) -> str:
    return f"bundles/{sha256}.tar"


def _check_word(kind: str, value: object, where: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or value.startswith(".") \
            or len(value) > 128 or not value.isprintable():
        raise InputError(f"{where}: {kind} {value!r} is not a plain name")
    return value


@dataclass(frozen=True)
class Target:
    model: str
    version: str
    sha256: str
    size: int
    bundle: str
    release: int | None = None
    boards: tuple[str, ...] = ("*",)
    gates: tuple[str, ...] = ()
    max_accuracy_drop: float | None = None
    max_latency_increase: float | None = None
    bench_runs: int = 50
    allow_downgrade: bool = False
    rollout: str | None = None
    rollback: bool = False  # back to VERSION, kept on the board: no bundle, no gates

    @property
    def measures(self) -> bool:
        return bool(self.gates) or self.max_accuracy_drop is not None or \
            self.max_latency_increase is not None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["boards"], d["gates"] = list(self.boards), list(self.gates)
        return d

    def digest(self) -> str:
        """Names what is asked of a board (all but the board list): a result that was final
        here (gate_failed, refused) is not retried while the digest stays the same."""
        import hashlib

        d = self.to_dict()
        d.pop("boards")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: object, where: str) -> "Target":
        if not isinstance(d, dict):
            raise InputError(f"{where}: a target is a JSON object")
        try:
            t = cls(model=_check_word("model", d["model"], where),
                    version=_check_word("version", d["version"], where),
                    sha256=str(d["sha256"]), size=int(d["size"]), bundle=str(d["bundle"]),
                    release=None if d.get("release") is None else int(d["release"]),
                    boards=tuple(_check_word("board", b, where) if b != "*" else b
                                 for b in d.get("boards", ["*"])),
                    gates=tuple(str(g) for g in d.get("gates", [])),
                    max_accuracy_drop=_opt_float(d.get("max_accuracy_drop")),
                    max_latency_increase=_opt_float(d.get("max_latency_increase")),
                    bench_runs=int(d.get("bench_runs", 50)),
                    allow_downgrade=bool(d.get("allow_downgrade", False)),
                    rollout=None if d.get("rollout") is None else str(d["rollout"]),
                    rollback=bool(d.get("rollback", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: malformed target ({type(exc).__name__}: {exc})") from exc
        if t.rollback:
            if t.sha256 or t.bundle or t.measures:
                raise InputError(f"{where}: a rollback target names no bundle and no gates")
            return t
        if len(t.sha256) != 64 or any(c not in "0123456789abcdef" for c in t.sha256):
            raise InputError(f"{where}: target sha256 {t.sha256!r} is not a sha256")
        if t.bundle != bundle_key(t.sha256):
            raise InputError(f"{where}: bundle {t.bundle!r} is not {bundle_key(t.sha256)!r}",
                             hint="bundles are named by their content")
        if t.size < 0 or t.bench_runs < 1 or not t.boards:
            raise InputError(f"{where}: size, bench_runs or boards out of range")
        return t


def _opt_float(v: object) -> float | None:
    return None if v is None else float(v)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Desired:
    cohort: str
    serial: int
    targets: tuple[Target, ...] = ()
    issued: str = ""

    def for_board(self, board: str) -> dict[str, Target]:
        """Pure: model → the target this board must run (named explicitly, else "*")."""
        out: dict[str, Target] = {}
        for t in self.targets:
            if board in t.boards:
                out[t.model] = t
        for t in self.targets:
            if "*" in t.boards and t.model not in out:
                out[t.model] = t
        return out

    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA, "cohort": self.cohort, "serial": self.serial,
                           "issued": self.issued,
                           "targets": [t.to_dict() for t in self.targets]},
                          indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> "Desired":
        try:
            d = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{where}: not JSON ({exc})") from exc
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise InputError(f"{where}: not a desired state of schema {SCHEMA}")
        try:
            serial = int(d["serial"])
            cohort = _check_word("cohort", d["cohort"], where)
            raw = d.get("targets", [])
            if not isinstance(raw, list):
                raise TypeError("targets is not a list")
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: malformed desired state ({exc})") from exc
        targets = tuple(Target.from_dict(t, f"{where} target {i}") for i, t in enumerate(raw))
        seen: set[tuple[str, str]] = set()
        for t in targets:
            for b in t.boards:
                if (t.model, b) in seen:
                    raise InputError(f"{where}: two targets of model {t.model} for board {b}")
                seen.add((t.model, b))
        return cls(cohort, serial, targets, str(d.get("issued", "")))


def envelope(document: str, signature: str | None) -> bytes:
    return (json.dumps({"schema": SCHEMA, "kind": ENVELOPE_KIND, "document": document,
                        "signature": signature}, indent=1) + "\n").encode()


def open_envelope(raw: bytes, where: str) -> tuple[bytes, str | None]:
    """(the document's bytes, the signature or None) — as signed; nothing is trusted yet."""
    try:
        d = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(d, dict) or d.get("kind") != ENVELOPE_KIND or \
            not isinstance(d.get("document"), str):
        raise InputError(f"{where}: not an edgedeploy desired-state envelope")
    sig = d.get("signature")
    return d["document"].encode(), sig if isinstance(sig, str) else None


# -- what a board does about one model (pure) ---------------------------------------------------
@dataclass(frozen=True)
class Step:
    action: str   # none | skip | install | activate | rollback
    reason: str


def plan_model(t: Target, current: str | None, previous: str | None, installed: set[str],
               last: dict | None) -> Step:
    """Pure: what a board does to run target T, given its store (CURRENT, PREVIOUS, INSTALLED
    versions) and its LAST result for the model. Going back to the kept previous version skips
    the gates only when T has none: a gated target is measured, as an SSH rollout measures a
    version the board already holds."""
    if current == t.version:
        return Step("none", f"runs {t.version}")
    if t.rollback:
        if t.version in installed:
            return Step("rollback", f"back to {t.version}, kept here")
        return Step("skip", f"{t.version} is not kept on this board: nothing to go back to")
    if last and last.get("target") == t.digest() and last.get("outcome") in FINAL_HERE:
        return Step("skip", f"{last['outcome']} here before: {last.get('error') or ''}".strip())
    if t.version == previous and t.version in installed and not t.measures:
        return Step("rollback", f"back to the kept previous version {t.version}")
    if t.version in installed:
        return Step("activate", f"{t.version} is installed, not active")
    return Step("install", f"{t.version} is not on this board")


@dataclass
class Status:
    board: str
    cohort: str
    time: str
    ts: float
    poll_every: float | None = None
    serial: int | None = None
    agent: str = ""
    signers: int = 0
    models: dict[str, dict] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)
    error: str | None = None
    downloaded_bytes: int = 0
    info: dict = field(default_factory=dict)  # arch, python, runtime, numpy, free_bytes
    schema: int = SCHEMA

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()

    def digest(self) -> str:
        """What changed, leaving out the clock: a board reports at once when this differs."""
        import hashlib

        d = asdict(self)
        for k in ("time", "ts", "downloaded_bytes"):
            d.pop(k)
        d["info"] = {k: v for k, v in d["info"].items() if k != "free_bytes"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> "Status":
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or d.get("schema") != SCHEMA:
                raise ValueError("not a status of schema 1")
            return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise InputError(f"{where}: unreadable status ({exc})") from exc
