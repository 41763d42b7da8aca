"""known_hosts read and decided on as OpenSSH does: tables of lines and verdicts, and the
accept-new write (atomic, newline-safe, several writers at once)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import threading

import pytest

from edgedeploy.errors import InputError
from edgedeploy.host.transport import known_hosts as kh


def _key(kind: str = "ssh-ed25519", seed: int = 1) -> str:
    t = kind.encode()
    body = hashlib.sha256(bytes([seed])).digest()
    return base64.b64encode(struct.pack(">I", len(t)) + t + struct.pack(">I", 32) + body).decode()


A, B, C = _key(seed=1), _key(seed=2), _key(seed=3)
RSA = _key("ssh-rsa", 4)


def _hashed(name: str, salt: bytes = b"0123456789abcdef0123") -> str:
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"


@pytest.mark.parametrize("line, why", [
    ("10.0.0.2 ssh-ed25519", "expected [MARKER] HOSTS KEYTYPE BASE64KEY"),
    (f"10.0.0.2 ssh-ed25519 {A[:-3]}", "not valid base64"),        # the glued line
    (f"10.0.0.2 ssh-ed25519 {A}10.0.0.6 ssh-ed25519 {B}", "not valid base64"),
    (f"10.0.0.2 ssh-rsa {A}", "the key says it is 'ssh-ed25519'"),
    (f"@trusted 10.0.0.2 ssh-ed25519 {A}", "unknown marker '@trusted'"),
    (f"@revoked ssh-ed25519 {A}", "expected [MARKER]"),
    (f"|1|bad|salt ssh-ed25519 {A}", "malformed hashed host name"),
    (f"a,,b ssh-ed25519 {A}", "empty host pattern"),
])
def test_an_unparsable_line_names_the_file_and_line(line, why):
    text = f"# comment\n\n10.0.0.9 ssh-ed25519 {C}\n{line}\n"
    with pytest.raises(InputError) as err:
        kh.parse(text, "/x/known_hosts")
    assert str(err.value).startswith("/x/known_hosts line 4: ") and why in str(err.value)


def test_parses_markers_patterns_and_skips_comments():
    text = (f"# c\n@revoked * ssh-ed25519 {B}\n@cert-authority *.lan ssh-ed25519 {C}\n"
            f"[10.0.0.2]:2222,pi ssh-ed25519 {A} a comment\n"
            f"10.0.0.3 sk-ssh-ed25519@openssh.com {_key('sk-ssh-ed25519@openssh.com')}\n")
    e = kh.parse(text, "k")
    assert [(x.lineno, x.marker, x.patterns) for x in e] == [
        (2, "@revoked", ("*",)), (3, "@cert-authority", ("*.lan",)),
        (4, None, ("[10.0.0.2]:2222", "pi")), (5, None, ("10.0.0.3",))]


ENTRIES = kh.parse(f"""
10.0.0.2 ssh-ed25519 {A}
[10.0.0.2]:2222 ssh-ed25519 {B}
10.0.0.* ssh-rsa {RSA}
*.lan,!evil.lan ssh-ed25519 {C}
{_hashed("pi-kitchen")} ssh-ed25519 {B}
10.0.0.7 ssh-ed25519 {A}
10.0.0.7 ssh-ed25519 {B}
@revoked 10.0.0.7 ssh-ed25519 {B}
@revoked * ssh-ed25519 {_key(seed=9)}
@cert-authority * ssh-ed25519 {C}
""", "k")


@pytest.mark.parametrize("name, key, want", [
    ("10.0.0.2", A, "known"),
    ("10.0.0.2", B, "changed"),            # B is the key of port 2222, not of 22
    ("[10.0.0.2]:2222", B, "known"),
    ("[10.0.0.2]:2222", A, "changed"),
    ("10.0.0.5", RSA, "known"),            # wildcard
    ("10.0.0.5", A, "changed"),
    ("10.1.0.5", A, "unknown"),
    ("cam.lan", C, "known"),
    ("CAM.LAN", C, "known"),               # host names match without case
    ("evil.lan", C, "unknown"),            # negated
    ("pi-kitchen", B, "known"),            # hashed name
    ("pi-kitchen2", B, "unknown"),
    ("10.0.0.7", A, "known"),
    ("10.0.0.7", B, "revoked"),            # listed, and revoked: refused
    ("10.9.9.9", _key(seed=9), "revoked"),  # revoked everywhere, even when unknown
    ("anything", C, "unknown"),            # a CA key is no host key
])
def test_verdict(name, key, want):
    assert kh.verdict(ENTRIES, name, "ssh-ed25519", key) == want


def test_trusted_leaves_out_revoked_and_markers():
    assert [e.key for e in kh.trusted(ENTRIES, "10.0.0.7")] == [RSA, A]  # B: revoked
    assert kh.trusted(ENTRIES, "anything") == []


@pytest.mark.parametrize("host, port, want", [
    ("10.0.0.2", 22, "10.0.0.2"), ("10.0.0.2", 2222, "[10.0.0.2]:2222")])
def test_host_field(host, port, want):
    assert kh.host_field(host, port) == want


def test_cert_authority_warns_once_per_line(capsys, tmp_path):
    p = tmp_path / "known_hosts"
    p.write_text(f"@cert-authority * ssh-ed25519 {C}\n10.0.0.2 ssh-ed25519 {A}\n")
    assert len(kh.load(p)) == 2 and len(kh.load(p)) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"{p} line 1: @cert-authority" in err[0] and "skipped" in err[0]


def test_append_is_newline_safe_atomic_and_keeps_the_mode(tmp_path):
    p = tmp_path / "ssh" / "known_hosts"
    p.parent.mkdir()
    p.write_text(f"10.0.0.6 ssh-ed25519 {B}")  # no trailing newline (hand-edited)
    os.chmod(p, 0o600)
    ino = p.stat().st_ino
    kh.append(p, f"10.0.0.2 ssh-ed25519 {A}")
    assert p.read_text() == f"10.0.0.6 ssh-ed25519 {B}\n10.0.0.2 ssh-ed25519 {A}\n"
    assert p.stat().st_mode & 0o777 == 0o600 and p.stat().st_ino != ino  # renamed over
    assert sorted(x.name for x in p.parent.iterdir()) == ["known_hosts"]  # no temp left
    assert [e.key for e in kh.parse(p.read_text(), str(p))] == [B, A]
    with pytest.raises(InputError):
        kh.append(p, f"10.0.0.3 ssh-ed25519 {A}\n@revoked * ssh-ed25519 {B}")


def test_append_through_a_symlink_writes_its_target(tmp_path):
    real = tmp_path / "dotfiles" / "known_hosts"
    real.parent.mkdir()
    real.write_text("")
    link = tmp_path / "known_hosts"
    link.symlink_to(real)
    kh.append(link, f"10.0.0.2 ssh-ed25519 {A}")
    assert link.is_symlink() and real.read_text() == f"10.0.0.2 ssh-ed25519 {A}\n"


def test_many_writers_lose_no_line(tmp_path):
    p = tmp_path / "known_hosts"
    lines = [f"10.0.{i}.2 ssh-ed25519 {_key(seed=i)}" for i in range(40)]
    threads = [threading.Thread(target=kh.append, args=(p, ln)) for ln in lines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.read_text().splitlines()) == sorted(lines)
