"""Whom a board trusts, and which releases it takes. Standard library + OpenSSH's ssh-keygen
(on every board this tool supports, Termux included): no crypto package on the board.

Signatures are OpenSSH's SSHSIG (``ssh-keygen -Y sign``), the format git signs commits with,
over the exact bytes of a bundle's manifest (which holds every file's sha256) or of a
desired-state document. Two namespaces keep one from passing for the other::

    edgedeploy-bundle    a bundle's manifest         (NAME.MODE.manifest.json.sig beside it)
    edgedeploy-desired   a pull-mode desired state   (inside its envelope, device/desired.py)

Files under the store (STORE/trust/, written whole or not at all)::

    allowed_signers   OpenSSH's format, one trusted key a line, limited to our namespaces:
                      alice@ci namespaces="edgedeploy-bundle,edgedeploy-desired" ssh-ed25519 AAAA…
    releases.json     {"NAME": {"highest": 1764000000, "version": "3f2a…", "updated": "…Z"}}
                      the highest release each model has ever been activated at

A board whose allowed_signers names at least one key refuses an unsigned bundle, a signature
that does not verify, and a key it does not list (SignatureRefused); a board with none takes
anything, as before (the push path's default). Anti-downgrade (:func:`release_verdict`, pure):
a release lower than the highest ever activated is refused (DowngradeRefused) unless the
command allows a downgrade or the version is the one the store keeps as ``previous`` (a
rollback); a replayed old signed bundle is therefore refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DowngradeRefused, EnvironmentProblem, InputError, SignatureRefused

NS_BUNDLE = "edgedeploy-bundle"
NS_DESIRED = "edgedeploy-desired"
NAMESPACES = (NS_BUNDLE, NS_DESIRED)
TRUST_DIR = "trust"
SIGNERS = "allowed_signers"
LEDGER = "releases.json"
SIG_SUFFIX = ".sig"
KEYGEN_TIMEOUT = 30.0
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
              "sk-ecdsa-sha2-nistp256@openssh.com")


@dataclass(frozen=True)
class Verified:
    signer: str        # the principal allowed_signers names for the key
    key: str           # "ED25519 key SHA256:…" as ssh-keygen says it


def trust_dir(store_root: str | os.PathLike) -> Path:
    return Path(store_root) / TRUST_DIR


def signers_file(store_root: str | os.PathLike) -> Path:
    return trust_dir(store_root) / SIGNERS


def signer_entries(store_root: str | os.PathLike) -> list[str]:
    """The allowed_signers lines (no comments, no blanks); [] when the board has none."""
    try:
        text = signers_file(store_root).read_text()
    except FileNotFoundError:
        return []
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def requires_signature(store_root: str | os.PathLike) -> bool:
    return bool(signer_entries(store_root))


# -- allowed_signers (pure) ---------------------------------------------------------------------
def signer_line(public_key: str, principal: str | None = None) -> str:
    """Pure: the allowed_signers line for an OpenSSH public key (``TYPE BASE64 [COMMENT]``),
    limited to edgedeploy's namespaces; PRINCIPAL defaults to the key's comment."""
    parts = public_key.strip().split()
    if len(parts) < 2 or parts[0] not in _KEY_TYPES or not re.fullmatch(r"[A-Za-z0-9+/=]+",
                                                                           parts[1]):
        raise InputError(f"{public_key.strip()[:40]!r}…: not an OpenSSH public key",
                         hint="give the .pub file, e.g. ~/.ssh/id_ed25519.pub")
    name = principal or (parts[2] if len(parts) > 2 else "") or "edgedeploy"
    if not re.fullmatch(r"[A-Za-z0-9@._+-]{1,64}", name):
        raise InputError(f"signer name {name!r}: use letters, digits and @._+- (64 at most)")
    return f'{name} namespaces="{",".join(NAMESPACES)}" {parts[0]} {parts[1]}'


def merge_signers(existing: list[str], new: list[str]) -> list[str]:
    """Pure: EXISTING plus NEW, one line per key (a key given again replaces its line)."""
    def key_of(line: str) -> str:
        return " ".join(line.split()[-2:])
    out = {key_of(ln): ln for ln in existing}
    for ln in new:
        out[key_of(ln)] = ln
    return list(out.values())


def write_signers(store_root: str | os.PathLike, lines: list[str]) -> Path:
    from .fsio import write_atomic

    d = trust_dir(store_root)
    d.mkdir(parents=True, exist_ok=True)
    path = d / SIGNERS
    write_atomic(path, ("".join(ln + "\n" for ln in lines)).encode())
    return path


# -- verification (ssh-keygen) ------------------------------------------------------------------
def _keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise EnvironmentProblem("ssh-keygen is not on this board's PATH: signatures can't be "
                                 "checked", hint="install OpenSSH's client (openssh-client; "
                                                 "Termux: pkg install openssh)")
    return exe


def _run(argv: list[str], data: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=data, capture_output=True, timeout=KEYGEN_TIMEOUT,
                              start_new_session=True)  # no tty: never a passphrase prompt
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentProblem(f"`{' '.join(argv[:3])}` did not finish in "
                                 f"{KEYGEN_TIMEOUT:.0f} s") from exc


def verify(data: bytes, signature: str | bytes | None, store_root: str | os.PathLike,
           namespace: str, what: str) -> Verified | None:
    """Check SIGNATURE over DATA against the board's allowed signers. None when the board has
    no signers (and so takes anything); SignatureRefused (naming WHAT) when it has some and the
    signature is missing, does not verify, or is by a key it doesn't list."""
    if not requires_signature(store_root):
        return None
    allowed = signers_file(store_root)
    if not signature:
        raise SignatureRefused(f"{what}: unsigned, and this board takes only what its allowed "
                               f"signers signed ({allowed})",
                               hint="sign it: set signing_key in the fleet file")
    sig = signature if isinstance(signature, bytes) else signature.encode()
    if b"-----BEGIN SSH SIGNATURE-----" not in sig:
        raise SignatureRefused(f"{what}: the signature is not an SSH signature")
    exe = _keygen()
    with tempfile.NamedTemporaryFile(prefix="edgedeploy-", suffix=SIG_SUFFIX) as f:
        f.write(sig)
        f.flush()
        found = _run([exe, "-Y", "find-principals", "-s", f.name, "-f", str(allowed)])
        principals = [p for p in found.stdout.decode(errors="replace").split() if p]
        if found.returncode != 0 or not principals:
            raise SignatureRefused(f"{what}: signed by a key this board does not trust",
                                   hint=f"add the signer with `edgedeploy trust BOARD --signer "
                                        f"KEY.pub` ({allowed})")
        last = ""
        for principal in principals:
            r = _run([exe, "-Y", "verify", "-f", str(allowed), "-I", principal, "-n", namespace,
                      "-s", f.name], data)
            if r.returncode == 0:
                said = r.stdout.decode(errors="replace").strip()
                m = re.search(r"with (\S+ key \S+)", said)
                return Verified(principal, m.group(1) if m else "")
            last = (r.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
    raise SignatureRefused(f"{what}: the signature does not verify"
                           + (f" ({last})" if last else ""),
                           hint="the signed content was changed after signing, or signed for "
                                "another purpose")


# -- releases -----------------------------------------------------------------------------------
def release_verdict(name: str, version: str, release: int | None, *, highest: int | None,
                    previous: str | None, allow_downgrade: bool = False) -> str | None:
    """Pure: why model NAME at VERSION/RELEASE must not be activated (None: it may). HIGHEST:
    the highest release this board has activated for NAME; PREVIOUS: the version the store
    keeps to roll back to."""
    if highest is None or allow_downgrade:
        return None
    if release is None:
        return (f"model {name} version {version} carries no release number, and this board "
                f"has run release {highest}")
    if release >= highest:
        return None
    if version == previous:
        return None  # a rollback to the kept previous version
    return (f"model {name} version {version} is release {release}, lower than release "
            f"{highest} this board has run")


def check_release(store_root: str | os.PathLike, name: str, version: str, release: int | None,
                  *, previous: str | None, allow_downgrade: bool = False) -> None:
    why = release_verdict(name, version, release, highest=highest_release(store_root, name),
                          previous=previous, allow_downgrade=allow_downgrade)
    if why:
        raise DowngradeRefused(why, hint="a deliberate downgrade needs --allow-downgrade")


def _ledger(store_root: str | os.PathLike) -> dict:
    try:
        data = json.loads((trust_dir(store_root) / LEDGER).read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable: treated as empty, rewritten whole at the next activation


def highest_release(store_root: str | os.PathLike, name: str) -> int | None:
    entry = _ledger(store_root).get(name)
    h = entry.get("highest") if isinstance(entry, dict) else None
    return h if isinstance(h, int) else None


def record_activation(store_root: str | os.PathLike, name: str, version: str,
                      release: int | None) -> None:
    """After NAME@VERSION became current: the ledger's highest release only ever rises.
    Call under the store lock."""
    if release is None:
        return
    from .fsio import write_atomic

    data = _ledger(store_root)
    highest = highest_release(store_root, name)
    if highest is not None and highest >= release:
        return
    data[name] = {"highest": release, "version": version,
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    d = trust_dir(store_root)
    d.mkdir(parents=True, exist_ok=True)
    write_atomic(d / LEDGER, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
