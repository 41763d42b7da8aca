"""OpenSSH known_hosts, read and decided on here (paramiko's own reader dies on lines it cannot
parse, and knows neither ``@revoked`` nor ``@cert-authority``).

Format (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"), one entry a line; blank lines and ``#``
comments are skipped::

    [@revoked|@cert-authority] PATTERNS KEYTYPE BASE64KEY [COMMENT]

PATTERNS is a comma-separated list: host names or addresses, ``[host]:port`` for a port other
than 22, wildcards ``*`` and ``?``, a leading ``!`` to negate, or a hashed name
``|1|SALT|HMAC-SHA1`` (HashKnownHosts). The base64 blob starts with its own key type (an SSH
string), which must be KEYTYPE.

What we do with it, as OpenSSH does:

* a line that cannot be parsed (too few fields, an unknown ``@marker``, bad base64, a blob whose
  type is not KEYTYPE, a malformed hashed name) is an error naming the file and the line — never
  silently skipped, never a traceback;
* a well-formed line of a key type this host cannot check (e.g. ``sk-ssh-ed25519@openssh.com``)
  is skipped: it can only ever refuse a connection, never admit one;
* ``@revoked``: that key is refused for the hosts it names, even if another line trusts it and
  even with accept-new;
* ``@cert-authority``: host certificates are not checked here; such a line is skipped with one
  warning naming file and line (the board's own key must then be listed to connect).

:func:`verdict` is the pure decision (known / unknown / changed / revoked); :func:`append`
records a key (accept-new) atomically: the whole file is rewritten to a temporary file beside
it, newline-safe, fsync'd and renamed over it, under a lock on its folder.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import re
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError

MARKERS = ("@revoked", "@cert-authority")


@dataclass(frozen=True)
class Entry:
    lineno: int
    marker: str | None       # None, "@revoked" or "@cert-authority"
    patterns: tuple[str, ...]
    keytype: str
    key: str                 # base64, as written

    @property
    def blob(self) -> bytes:
        return base64.b64decode(self.key)


def host_field(host: str, port: int) -> str:
    """The name a host is known by: ``host``, or ``[host]:port`` for a port other than 22."""
    return host if port == 22 else f"[{host}]:{port}"


def _blob_type(blob: bytes) -> str | None:
    if len(blob) < 4:
        return None
    (n,) = struct.unpack(">I", blob[:4])
    if n > len(blob) - 4 or n > 128:
        return None
    try:
        return blob[4:4 + n].decode("ascii")
    except UnicodeDecodeError:
        return None


def _bad(path: str, lineno: int, why: str) -> InputError:
    return InputError(f"{path} line {lineno}: {why}",
                      hint="fix or delete that line (ssh-keygen -R HOST removes a host's lines)")


def _check_hashed(pattern: str) -> bool:
    parts = pattern.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        return len(base64.b64decode(parts[2], validate=True)) > 0 and \
            len(base64.b64decode(parts[3], validate=True)) == 20
    except binascii.Error:
        return False


def parse(text: str, path: str) -> list[Entry]:
    """Every entry of a known_hosts file; an InputError naming PATH and the line for a line
    that cannot be parsed."""
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = None
        if fields[0].startswith("@"):
            if fields[0] not in MARKERS:
                raise _bad(path, lineno, f"unknown marker {fields[0]!r} (known: "
                                         f"{', '.join(MARKERS)})")
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3:
            raise _bad(path, lineno, "expected [MARKER] HOSTS KEYTYPE BASE64KEY")
        pats, keytype, key = fields[0], fields[1], fields[2]
        patterns = tuple(pats.split(","))
        if any(not p for p in patterns):
            raise _bad(path, lineno, f"empty host pattern in {pats!r}")
        for p in patterns:
            if p.startswith("|") and not _check_hashed(p):
                raise _bad(path, lineno, f"malformed hashed host name {p[:20]!r}…")
        try:
            blob = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(path, lineno, f"the {keytype} key is not valid base64") from None
        inner = _blob_type(blob)
        if inner != keytype:
            raise _bad(path, lineno, f"the key says it is {inner!r}, the line says "
                                     f"{keytype!r}")
        out.append(Entry(lineno, marker, patterns, keytype, key))
    return out


def _wild(pattern: str, name: str) -> bool:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, flags=re.IGNORECASE | re.DOTALL) is not None


def _one(pattern: str, name: str) -> bool:
    if pattern.startswith("|"):
        _, _, salt, digest = pattern.split("|")
        mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(mac, base64.b64decode(digest))
    return _wild(pattern, name)


def matches(entry: Entry, name: str) -> bool:
    """OpenSSH's match_hostname: some positive pattern matches NAME and no negated one does."""
    hit = False
    for p in entry.patterns:
        if p.startswith("!"):
            if _one(p[1:], name):
                return False
        elif _one(p, name):
            hit = True
    return hit


def trusted(entries: list[Entry], name: str) -> list[Entry]:
    """The plain entries for NAME whose key is not revoked for it."""
    revoked = {e.key for e in entries if e.marker == "@revoked" and matches(e, name)}
    return [e for e in entries if e.marker is None and matches(e, name)
            and e.key not in revoked]


def verdict(entries: list[Entry], name: str, keytype: str, key: str) -> str:
    """Pure: what the server's key (KEYTYPE, base64 KEY) is for host NAME —
    "revoked", "known", "changed" (the host is listed with other keys) or "unknown"."""
    if any(e.marker == "@revoked" and e.key == key and matches(e, name) for e in entries):
        return "revoked"
    mine = trusted(entries, name)
    if any(e.key == key for e in mine):
        return "known"
    return "changed" if mine else "unknown"


_warned: set[tuple[str, int]] = set()
_warn_lock = threading.Lock()


def warnings_for(entries: list[Entry], path: str) -> list[str]:
    """One line per ``@cert-authority`` entry (said once per process and line)."""
    out = []
    with _warn_lock:
        for e in entries:
            if e.marker == "@cert-authority" and (path, e.lineno) not in _warned:
                _warned.add((path, e.lineno))
                out.append(f"edgedeploy: warning: {path} line {e.lineno}: @cert-authority "
                           f"lines are not supported (host certificates are not checked): "
                           f"skipped; list the board's own key to connect to it")
    return out


def load(path: Path) -> list[Entry]:
    """The entries of PATH ([] if there is no such file); warnings go to stderr once."""
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") \
            from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    entries = parse(text, str(path))
    for w in warnings_for(entries, str(path)):
        print(w, file=sys.stderr, flush=True)
    return entries


_append_lock = threading.Lock()


def append(path: Path, line: str) -> None:
    """Add LINE to PATH: under an flock on its folder (other processes) and a lock here
    (other threads), read the file, add a newline if it lacks its last one, write all to a
    temporary file beside it, fsync, rename over it, fsync the folder. A symlinked PATH is
    written where it points. The file keeps its mode (0644 when new)."""
    if "\n" in line or "\r" in line:
        raise InputError(f"{path}: refusing to record a line with a line break in it")
    real = Path(os.path.realpath(path))
    real.parent.mkdir(parents=True, exist_ok=True)
    with _append_lock:
        dfd = os.open(real.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(dfd, fcntl.LOCK_EX)
            try:
                old = real.read_bytes()
                mode = real.stat().st_mode & 0o777
            except FileNotFoundError:
                old, mode = b"", 0o644
            if old and not old.endswith(b"\n"):
                old += b"\n"
            fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(old + line.encode() + b"\n")
                    f.flush()
                    os.fchmod(f.fileno(), mode)
                    os.fsync(f.fileno())
                os.replace(tmp, real)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            os.fsync(dfd)
        finally:
            os.close(dfd)  # releases the flock
