"""The attacks and faults a fleet tool must survive (issue 12), one named test per threat in the
style of TUF's attack suite: what an attacker or an unlucky operator does, and what must (and
must not) happen. Against the real sshd boards of scripts/fleet wherever a board is involved;
both board envs where the board's Python matters. The README's reliability table lists them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

from edgedeploy.device.agentd import running_pid
from edgedeploy.device.manifest import sha256_file

from .conftest import ed, ed_json
from .test_push import _one_board

pytestmark = pytest.mark.board


# -- host keys -------------------------------------------------------------------------------
def _keys(fleet: Path) -> dict[str, str]:
    """Board name → its line in the fleet's known_hosts (scripts/fleet writes them in order)."""
    lines = (fleet.parent / "known_hosts").read_text().splitlines()
    return {f"b{i}": line for i, line in enumerate(lines)}


def _with_known_hosts(fleet: Path, tmp_path: Path, text: str) -> tuple[Path, Path]:
    """A copy of the fleet file whose boards use TMP_PATH/known_hosts holding TEXT."""
    kh = tmp_path / "known_hosts"
    kh.write_text(text)
    inv = tmp_path / "fleet.toml"
    inv.write_text(fleet.read_text().replace(str(fleet.parent / "known_hosts"), str(kh)))
    return inv, kh


def _one_line(p) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{p.stderr}"
    return lines[0]


def test_accept_new_after_a_known_hosts_line_without_newline(fleet, tmp_path):
    """A hand-edited known_hosts lacks its last newline; --accept-new-host-key must not glue the
    new line onto it (which broke every later command for every board)."""
    keys = _keys(fleet)
    inv, kh = _with_known_hosts(fleet, tmp_path, keys["b1"])  # no trailing newline
    p = ed("status", "b0", "--fleet", inv, "--accept-new-host-key", db=tmp_path / "r.db")
    assert p.returncode == 0, p.stderr
    assert kh.read_text() == keys["b1"] + "\n" + keys["b0"] + "\n"
    assert not list(tmp_path.glob(".known_hosts*"))  # no temporary file left
    for board in ("b0", "b1"):
        p = ed("status", board, "--fleet", inv, db=tmp_path / "r.db")
        assert p.returncode == 0, p.stderr


def test_an_unparsable_known_hosts_line_is_exit_6_naming_file_and_line(fleet, tmp_path):
    keys = _keys(fleet)
    broken = keys["b1"][:-5] + keys["b0"]  # the glued line the old accept-new wrote
    inv, kh = _with_known_hosts(fleet, tmp_path, f"{keys['b0']}\n{broken}\n")
    p = ed("status", "b0", "--fleet", inv, db=tmp_path / "r.db")
    assert p.returncode == 6
    line = _one_line(p)
    assert f"{kh} line 2" in line and "b0" in line and "Traceback" not in p.stderr


def test_a_revoked_host_key_is_refused(fleet, tmp_path):
    keys = _keys(fleet)
    _, ktype, kb64 = keys["b0"].split()
    inv, kh = _with_known_hosts(fleet, tmp_path,
                                f"{keys['b0']}\n@revoked * {ktype} {kb64}\n")
    p = ed("status", "b0", "--fleet", inv, db=tmp_path / "r.db")
    assert p.returncode == 6 and "REVOKED" in _one_line(p)
    # revoked and not otherwise listed: accept-new must not record it either
    kh.write_text(f"@revoked * {ktype} {kb64}\n")
    p = ed("status", "b0", "--fleet", inv, "--accept-new-host-key", db=tmp_path / "r.db")
    assert p.returncode == 6 and "REVOKED" in _one_line(p)
    assert kh.read_text() == f"@revoked * {ktype} {kb64}\n"
    # another board's key is not touched by it
    kh.write_text(f"@revoked * {ktype} {kb64}\n{keys['b1']}\n")
    assert ed("status", "b1", "--fleet", inv, db=tmp_path / "r.db").returncode == 0


def test_a_cert_authority_line_is_skipped_with_a_warning(fleet, tmp_path):
    keys = _keys(fleet)
    _, ktype, kb64 = keys["b1"].split()
    inv, kh = _with_known_hosts(fleet, tmp_path,
                                f"@cert-authority *.example.org {ktype} {kb64}\n{keys['b0']}\n")
    p = ed("status", "b0", "--fleet", inv, db=tmp_path / "r.db")
    assert p.returncode == 0, p.stderr
    warning = _one_line(p)
    assert f"{kh} line 1" in warning and "@cert-authority" in warning and "skipped" in warning


class _FakeServer:
    """A TCP port on loopback that is not SSH: it answers like a web server, or says nothing."""

    def __init__(self, reply: bytes | None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.reply, self.stop = reply, threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            if self.reply is not None:
                c.sendall(self.reply)
                c.close()
            else:
                self.conns.append(c)  # hold it open, silent

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("reply", [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                                   None], ids=["web-server", "silent"])
def test_a_port_that_is_not_ssh_is_one_line_and_exit_5(fleet, tmp_path, reply):
    srv = _FakeServer(reply)
    try:
        inv = _one_board(fleet, tmp_path / "web.toml", "web", host="127.0.0.1", port=srv.port,
                         connect_timeout=2)
        p = ed("status", "web", "--fleet", inv, db=tmp_path / "r.db")
    finally:
        srv.close()
    assert p.returncode == 5
    line = _one_line(p)
    assert "web" in line and f"127.0.0.1:{srv.port}" in line and "not as an SSH server" in line


def test_an_unknown_host_key_is_one_line_every_time(fleet, tmp_path):
    inv, _ = _with_known_hosts(fleet, tmp_path, "")
    for _ in range(4):  # "Socket exception: Bad file descriptor (9)" came sometimes
        p = ed("status", "b0", "--fleet", inv, db=tmp_path / "r.db")
        assert p.returncode == 6 and "unknown host key" in _one_line(p)


# -- bundles -----------------------------------------------------------------------------------
def _bundle(models, where: Path, gate: bytes | None = None, **manifest) -> Path:
    """A bundle folder with the int8 digits model (and gate.npz with GATE), manifest fields
    overridden by MANIFEST."""
    where.mkdir(parents=True)
    src = models["int8"]
    shutil.copy(src, where / src.name)
    m = json.loads(src.with_name("digits.int8.manifest.json").read_text())
    if gate is not None:
        (where / "gate.npz").write_bytes(gate)
        m["files"] = {"gate.npz": sha256_file(where / "gate.npz")}
    m.update(manifest)
    (where / "digits.int8.manifest.json").write_text(json.dumps(m))
    return where


def _fresh_board(fleet, tmp_path, name: str = "fresh", **fields) -> tuple[Path, Path]:
    """b0's sshd as a board whose root does not exist yet: any action on it creates it."""
    root = tmp_path / "board" / "x" / "root"
    inv = _one_board(fleet, tmp_path / f"{name}.toml", name, root=str(root), **fields)
    return inv, root


@pytest.mark.parametrize("resident", [False, True], ids=["sftp", "resident-agent"])
def test_a_manifest_path_out_of_the_bundle_reads_and_sends_nothing(fleet, models, tmp_path,
                                                                    resident):
    """"files": {"../../../../loot.key": …} made the host read a file outside the bundle and
    write it on the board outside ROOT (SFTP), or send its bytes to the resident agent before
    the board refused. The host refuses it before connecting."""
    loot = tmp_path / "loot.key"
    loot.write_bytes(os.urandom(1 << 20))
    bundle = _bundle(models, tmp_path / "a" / "b" / "c" / "bundle",
                     files={"../../../../loot.key": sha256_file(loot)})
    inv, root = _fresh_board(fleet, tmp_path, resident_agent=resident)
    if resident:  # a live resident agent: count the bytes it reads
        ed_json("push", models["int8"], "fresh", "--fleet", inv, db=tmp_path / "r.db")
        ed_json("status", "fresh", "--fleet", inv, db=tmp_path / "r.db")
        pid = running_pid(str(root / "store"))
        assert pid

        def rchar() -> int:
            io = Path(f"/proc/{pid}/io").read_text()
            return int(io.split("rchar:")[1].split()[0])
        before = rchar()
    p = ed("push", bundle, "fresh", "--fleet", inv, db=tmp_path / "r.db")
    assert p.returncode == 2 and "../../../../loot.key" in _one_line(p)
    assert [x for x in tmp_path.rglob("loot.key")] == [loot]
    if resident:
        assert rchar() - before < 64_000  # not the 1 MB loot
        assert not list((root / "incoming").iterdir())
    else:
        assert not root.exists() and not (tmp_path / "board").exists()  # nothing reached it


def test_a_symlink_out_of_the_bundle_is_refused(fleet, models, tmp_path):
    secret = tmp_path / "secret.npz"
    secret.write_bytes(b"the operator's private data")
    bundle = _bundle(models, tmp_path / "bundle", gate=secret.read_bytes())
    (bundle / "gate.npz").unlink()
    (bundle / "gate.npz").symlink_to(secret)  # the same bytes: only the link gives it away
    inv, root = _fresh_board(fleet, tmp_path)
    p = ed("push", bundle, "fresh", "--fleet", inv, db=tmp_path / "r.db")
    assert p.returncode == 2 and "symbolic link out of the bundle" in _one_line(p)
    assert not root.exists()


def test_an_extra_file_changed_after_its_manifest_is_refused_before_sending(fleet, models,
                                                                            tmp_path):
    bundle = _bundle(models, tmp_path / "bundle", gate=b"gate data")
    (bundle / "gate.npz").write_bytes(b"other gate data")
    inv, root = _fresh_board(fleet, tmp_path)
    p = ed("push", bundle, "fresh", "--fleet", inv, db=tmp_path / "r.db")
    assert p.returncode == 2 and "gate.npz: sha256 differs" in _one_line(p)
    assert not root.exists()


@pytest.mark.parametrize("field, value", [("version", "v1/../../nested"), ("version", ".."),
                                          ("name", "a/b"), ("name", ".hidden")])
def test_a_name_or_version_the_board_refuses_is_refused_before_sending(fleet, models, tmp_path,
                                                                       field, value):
    bundle = _bundle(models, tmp_path / "bundle", **{field: value})
    inv, root = _fresh_board(fleet, tmp_path)
    p = ed("push", bundle, "fresh", "--fleet", inv, db=tmp_path / "r.db")
    assert p.returncode == 2 and "cannot be a store entry" in _one_line(p)
    assert not root.exists()  # no nested incoming/ folders, no agent upload: nothing
