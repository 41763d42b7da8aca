"""Signing on the host with the SSH key people already have: OpenSSH's ``ssh-keygen -Y sign``
(SSHSIG, as git signs commits), checked on boards with ``ssh-keygen -Y verify`` against their
allowed signers (device/trust.py). No crypto package on either side.

The key is the fleet file's ``signing_key``: a private key file, or a ``.pub`` file whose
private key ssh-agent holds (``ssh-add`` it; $SSH_AUTH_SOCK is passed on). ssh-keygen runs with
no terminal, so a passphrase-protected key that is not in the agent fails at once with a clear
error instead of prompting.

What is signed:

* a bundle: the bytes of its manifest (which holds every file's sha256, and now a ``release``
  number), namespace ``edgedeploy-bundle``; the signature travels as
  ``NAME.MODE.manifest.json.sig`` beside the manifest;
* a desired-state document (pull mode), namespace ``edgedeploy-desired``.

The release number (anti-downgrade on boards) is, in order: the one asked for (``--release``),
the one the manifest already has, the manifest's ``created`` time in epoch seconds (so signing
the same bundle twice gives the same release — and, for Ed25519 and RSA keys, whose signatures
are deterministic, the same bytes), else now.
"""

from __future__ import annotations

import calendar
import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from ..device.trust import NS_BUNDLE
from ..errors import EnvironmentProblem, InputError
from .bundle import Bundle

SIGN_TIMEOUT = 60.0


def sign(data: bytes, key: str | os.PathLike, namespace: str) -> str:
    """The armored SSH signature of DATA by KEY in NAMESPACE."""
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise EnvironmentProblem("ssh-keygen is not on PATH: cannot sign",
                                 hint="install OpenSSH's client (apt install openssh-client)")
    path = Path(key).expanduser()
    if not path.is_file():
        raise InputError(f"signing key {path}: no such file",
                         hint="signing_key in the fleet file names a private key, or its .pub "
                              "when ssh-agent holds the private key")
    try:
        p = subprocess.run([exe, "-Y", "sign", "-q", "-f", str(path), "-n", namespace],
                           input=data, capture_output=True, timeout=SIGN_TIMEOUT,
                           start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentProblem(f"ssh-keygen -Y sign with {path} did not finish in "
                                 f"{SIGN_TIMEOUT:.0f} s") from exc
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0 or "-----BEGIN SSH SIGNATURE-----" not in out:
        why = (p.stderr.decode(errors="replace").strip().splitlines() or
               [f"exit {p.returncode}"])[-1]
        hint = ("a key with a passphrase must be in ssh-agent (ssh-add KEY), and signing_key "
                "then names KEY.pub" if path.suffix != ".pub" else
                "the private key of this .pub must be in ssh-agent (ssh-add -l lists them)")
        raise InputError(f"cannot sign with {path}: {why}", hint=hint)
    return out


def release_for(created: str, existing: int | None, asked: int | None = None) -> int:
    """Pure: the release number a bundle is signed with (module docstring)."""
    if asked is not None:
        if asked < 0:
            raise InputError(f"--release {asked}: a release number is ≥ 0")
        return asked
    if existing is not None:
        return existing
    try:
        return calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    except (ValueError, TypeError):
        return int(time.time())


def sign_bundle(bundle: Bundle, key: str | os.PathLike, release: int | None = None) -> Bundle:
    """BUNDLE with a release number in its manifest and the manifest's signature."""
    m = replace(bundle.manifest,
                release=release_for(bundle.manifest.created, bundle.manifest.release, release))
    signed = replace(bundle, manifest=m, signature=None)
    return replace(signed, signature=sign(signed.manifest_bytes(), key, NS_BUNDLE))


def public_key(key: str | os.PathLike) -> Path | None:
    """The .pub of a signing key (the key itself when it is one), if it is there."""
    path = Path(key).expanduser()
    pub = path if path.suffix == ".pub" else path.with_name(path.name + ".pub")
    return pub if pub.is_file() else None


def signed_by(data: bytes, signature: str | None, key: str | os.PathLike,
              namespace: str) -> bool | None:
    """Whether SIGNATURE over DATA is KEY's (None: KEY's public half is not at hand to tell).
    The controller checks a document it wrote before building on it."""
    import tempfile

    pub = public_key(key)
    exe = shutil.which("ssh-keygen")
    if pub is None or exe is None:
        return None
    if not signature:
        return False
    parts = pub.read_text().split()
    with tempfile.TemporaryDirectory(prefix="edgedeploy-verify-") as tmp:
        allowed = Path(tmp) / "allowed_signers"
        allowed.write_text(f'controller namespaces="{namespace}" {parts[0]} {parts[1]}\n')
        sig = Path(tmp) / "doc.sig"
        sig.write_text(signature)
        p = subprocess.run([exe, "-Y", "verify", "-f", str(allowed), "-I", "controller", "-n",
                            namespace, "-s", str(sig)], input=data, capture_output=True,
                           timeout=SIGN_TIMEOUT, start_new_session=True)
    return p.returncode == 0
