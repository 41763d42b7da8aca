"""The attacks and faults a fleet tool must survive (issue 12), one named test per threat in the
style of TUF's attack suite: what an attacker or an unlucky operator does, and what must (and
must not) happen. Against the real sshd boards of scripts/fleet wherever a board is involved;
both board envs where the board's Python matters. The README's reliability table lists them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
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
    """A TCP port on loopback that is not SSH: it answers like a web server, or says nothing, or
    says its reply (an SSH banner) and then nothing (hold)."""

    def __init__(self, reply: bytes | None, hold: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.reply, self.hold, self.stop = reply, hold, threading.Event()
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
            if self.reply is not None and not self.hold:
                c.close()
            else:
                self.conns.append(c)  # hold it open, silent (after its reply, if any)

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


def test_a_port_that_stalls_after_its_ssh_banner_is_one_line_and_exit_5(fleet, tmp_path):
    """paramiko gives up waiting for the negotiation silently; its later "No existing session"
    (and, under load, a silent port's too: the race of its two timeouts) is one clear line."""
    srv = _FakeServer(b"SSH-2.0-OpenSSH_9.2p1 stalled\r\n", hold=True)
    try:
        inv = _one_board(fleet, tmp_path / "stall.toml", "stall", host="127.0.0.1",
                         port=srv.port, connect_timeout=1)
        p = ed("status", "stall", "--fleet", inv, db=tmp_path / "r.db")
    finally:
        srv.close()
    assert p.returncode == 5
    line = _one_line(p)
    assert "stall" in line and f"127.0.0.1:{srv.port}" in line
    assert "handshake did not finish in time" in line and "No existing session" not in line


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
        assert not list((root / "store" / "incoming").iterdir())  # ROOT/store: the store
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


# -- the board's store, lost answers, rollouts (on the restructured board link) ----------------
def _board_copy(fleet: Path, dest: Path, src: str, name: str, **fields) -> Path:
    """A fleet file with the simulated fleet's defaults and one board NAME: board SRC's sshd
    and Python, FIELDS overridden (e.g. a fresh root)."""
    text = fleet.read_text()
    head = text.split("[boards.")[0]
    body = text.split(f"[boards.{src}]")[1].split("[boards.")[0]
    board = {k.strip(): v.strip() for k, v in
             (ln.split("=", 1) for ln in body.strip().splitlines() if "=" in ln)}
    board.update({k: json.dumps(v) for k, v in fields.items()})
    dest.write_text(head + f"[boards.{name}]\n" + "".join(f"{k} = {v}\n"
                                                          for k, v in board.items()))
    return dest


def _version(model: Path) -> str:
    return json.loads(model.with_name(model.name[:-len(".tflite")] +
                                      ".manifest.json").read_text())["version"]


def _current(root: Path) -> str | None:
    try:
        return json.loads((root / "store" / "models" / "digits" / "current.json")
                          .read_text())["current"]
    except FileNotFoundError:
        return None


@pytest.mark.slow
@pytest.mark.parametrize("src", ["b0", "b1"])
def test_a_store_locked_on_the_board_is_named_and_nothing_changes(fleet, models, tmp_path, src):
    """A local process on the board holds the store lock: the rollback is refused at once
    with the holder's PID (exit 4) — not "unreachable" after the timeout and then applied
    when the lock frees, as before."""
    import fcntl

    root = tmp_path / "root"
    inv = _board_copy(fleet, tmp_path / "f.toml", src, "locked", root=str(root),
                      command_timeout=8)
    db = tmp_path / "r.db"
    ed_json("push", models["float32"], "locked", "--fleet", inv, db=db)
    ed_json("push", models["int8"], "locked", "--fleet", inv, db=db)
    fd = os.open(root / "store" / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        p = ed("rollback", "locked", "digits", "--fleet", inv, db=db)
        assert p.returncode == 4, p.stderr
        assert f"locked by PID {os.getpid()}" in _one_line(p)
    finally:
        os.close(fd)
    time.sleep(2.0)
    assert _current(root) == _version(models["int8"])  # and it does not act later


def _veth(fleet: Path, board: str) -> str | None:
    state = json.loads((fleet.parent / "fleet-state.json").read_text())
    return next((b.get("veth") for b in state["boards"] if b["name"] == board), None)


def _link(dev: str, up: bool) -> None:
    subprocess.run(["ip", "link", "set", dev, "up" if up else "down"], check=True)


@pytest.mark.parametrize("src, restored", [("b0", True), ("b1", False)],
                         ids=["link-back-litert", "link-stays-down-tflrt"])
@pytest.mark.slow
def test_a_link_cut_during_install_reports_the_truth(fleet, models, tmp_path, src, restored):
    """The link is cut while the board installs and activates (the agent pauses just after the
    switch, so the answer is still on its way). Before: "the agent crashed" (exit 1) while the
    board ran the new version. Now the host reconnects and reads the board: the push happened
    (exit 0, with a note) — or, if the board stays cut off, exit 5 with its last known version."""
    veth = _veth(fleet, src)
    if not veth:
        pytest.skip("the simulated fleet runs without network namespaces here")
    root = tmp_path / "root"
    inv = _board_copy(fleet, tmp_path / "f.toml", src, "cut", root=str(root),
                      command_timeout=4, connect_timeout=2)
    db = tmp_path / "r.db"
    ed_json("push", models["float32"], "cut", "--fleet", inv, db=db)
    real = inv.read_text().split("python = ")[1].split("\n")[0].strip('"')
    wrapper = tmp_path / "slow-python"
    wrapper.write_text(f"#!/bin/sh\nEDGEDEPLOY_AGENT_PAUSE_AT=activate:switched:6 "
                       f"exec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    inv.write_text(inv.read_text().replace(f'python = "{real}"', f'python = "{wrapper}"'))
    new, old = _version(models["int8"]), _version(models["float32"])
    push = subprocess.Popen([sys.executable, "-m", "edgedeploy.host.cli", "push",
                             str(models["int8"]), "cut", "--fleet", str(inv), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "EDGEDEPLOY_RESULTS": str(db)})
    try:
        deadline = time.monotonic() + 120
        while _current(root) != new:  # the board switched; its answer is held back 6 s
            assert time.monotonic() < deadline and push.poll() is None, push.communicate()
            time.sleep(0.05)
        _link(veth, False)
        if restored:
            time.sleep(3)
            _link(veth, True)
        out, err = push.communicate(timeout=120)
    finally:
        _link(veth, True)
        if push.poll() is None:
            push.kill()
    if restored:
        assert push.returncode == 0, err
        r = json.loads(out)
        assert (r["current"], r["previous"]) == (new, old)
        assert "was lost" in r["note"] and "it happened" in r["note"]
    else:
        assert push.returncode == 5, err
        line = err.strip().splitlines()[-1]
        assert "unknown" in line and f"last known version of digits there is {old}" in line
    assert _current(root) == new  # what the board really did


def _fresh_roots(fleet: Path, dest: Path, tmp_path: Path, **fields) -> Path:
    """The session fleet with a fresh root for every board (and FIELDS for each)."""
    text = fleet.read_text()
    out = []
    for line in text.splitlines():
        if line.startswith("[boards."):
            name = line[len("[boards."):-1]
            out.append(line)
            out.append(f'root = "{tmp_path / ("root-" + name)}"')
            out += [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
        elif not line.startswith("root = "):
            out.append(line)
    dest.write_text("\n".join(out) + "\n")
    return dest


def _rollout(*args, db: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgedeploy.host.cli", "rollout", "start",
                             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "EDGEDEPLOY_RESULTS": str(db)})


def test_two_rollouts_started_at_once_only_one_runs(fleet, models, tmp_path):
    """Before, both ran: the check and the journal insert were separate, with the preflight
    in between. Now the check-and-insert is one transaction: one runs, the other is exit 4."""
    inv = _fresh_roots(fleet, tmp_path / "f.toml", tmp_path)
    journal = tmp_path / "rollouts.db"
    procs = [_rollout(models["int8"], "--fleet", inv, "--journal", journal, "--json",
                      db=tmp_path / "r.db") for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 4], outs
    refused = next(err for p, (out, err) in zip(procs, outs) if p.returncode == 4)
    assert "is running on" in refused or "is unfinished on" in refused
    import sqlite3
    assert sqlite3.connect(journal).execute("SELECT count(*) FROM rollouts").fetchone()[0] == 1


@pytest.mark.slow
def test_a_push_during_a_rollout_is_refused_unless_forced(fleet, models, tmp_path):
    """Before, a push during a rollout was overwritten silently: the rollout marked the board
    committed with a version it no longer ran. Now the push is refused (exit 4) unless
    --force, which the journal records; the rollout reads the board again before committing
    and leaves the pushed version (superseded)."""
    import sqlite3

    inv = _fresh_roots(fleet, tmp_path / "f.toml", tmp_path)
    # b0 (the canary) measures its gate slowly: 30 s after its bench, no store lock held
    # (the window for the pushes below, whatever the machine's load; a long bench was not)
    text = inv.read_text()
    real = text.split("[boards.b0]")[1].split("python = ")[1].split("\n")[0].strip('"')
    wrapper = tmp_path / "slow-gate-python"
    wrapper.write_text(f"#!/bin/sh\nEDGEDEPLOY_AGENT_PAUSE_AT=bench:measured:30 "
                       f"exec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    inv.write_text(text.replace(f'python = "{real}"', f'python = "{wrapper}"', 1))
    journal = tmp_path / "rollouts.db"
    db = tmp_path / "r.db"
    ed_json("push", models["float32"], "b0", "b1", "--fleet", inv, db=db)
    ro = _rollout(models["int8"], "--fleet", inv, "--journal", journal, "--canary", "1",
                  "--gate", "p99_ms<=100000", "--bench-runs", "100", "--json", db=db)
    try:
        deadline = time.monotonic() + 300
        while True:  # b0 (the canary) activated: its gate is being measured now
            assert time.monotonic() < deadline and ro.poll() is None, ro.communicate()
            try:  # the journal may exist before its tables do (being created)
                row = sqlite3.connect(f"file:{journal}?mode=ro", uri=True).execute(
                    "SELECT state FROM boards WHERE board = 'b0'").fetchone()
            except sqlite3.OperationalError:
                row = None
            if row and row[0] == "activated":
                break
            time.sleep(0.1)
        p = ed("push", models["float32"], "b0", "--fleet", inv, "--journal", journal, db=db)
        assert p.returncode == 4 and "--force" in _one_line(p) and "rollout" in p.stderr
        forced = ed_json("push", models["float32"], "b0", "--fleet", inv, "--journal", journal,
                         "--force", db=db)
        assert forced["current"] == _version(models["float32"])
        out, err = ro.communicate(timeout=600)
    finally:
        if ro.poll() is None:
            ro.kill()
    rep = json.loads(out)
    by = {b["board"]: b for b in rep["boards"]}
    assert by["b0"]["state"] == "superseded", rep
    assert [f["board"] for f in rep["forced"]] == ["b0"]
    assert _current(tmp_path / "root-b0") == _version(models["float32"])  # left as pushed


def test_bad_rollout_options_change_nothing(fleet, models, tmp_path):
    """`--max-failures abc` raised a bare ValueError mid-rollout and left the journal
    "running"; `--resume` failed the same way. Every option is checked before anything is
    touched, on resume too."""
    from edgedeploy.host.bundle import load_bundle
    from edgedeploy.host.fleet import Journal, Options

    inv = _fresh_roots(fleet, tmp_path / "f.toml", tmp_path)
    journal = tmp_path / "rollouts.db"
    p = ed("rollout", "start", models["int8"], "--fleet", inv, "--journal", journal,
           "--max-failures", "abc", db=tmp_path / "r.db")
    assert p.returncode == 2 and "--max-failures 'abc'" in _one_line(p)
    assert not (tmp_path / "root-b0").exists() and not (tmp_path / "root-b1").exists()
    j = Journal(journal)  # a rollout an older edgedeploy journalled with a bad option
    j.create("old-1", load_bundle(models["int8"]), str(models["int8"]), str(inv),
             Options(max_failures="abc"), [["b0"], ["b1"]], {})
    j._db().execute("UPDATE rollouts SET pid = 4194304")  # its process is gone
    p = ed("rollout", "resume", "old-1", "--journal", journal, db=tmp_path / "r.db")
    assert p.returncode == 2 and "--max-failures 'abc'" in _one_line(p)
    assert j.rollout("old-1").state.value == "running"
    assert {b.state.value for b in j.boards("old-1")} == {"pending"}
    assert not (tmp_path / "root-b0").exists()


def test_an_unreachable_board_in_a_rollouts_preflight_is_exit_5(fleet, models, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    inv = _fresh_roots(fleet, tmp_path / "f.toml", tmp_path)
    inv.write_text(inv.read_text() + f'\n[boards.gone]\nhost = "127.0.0.1"\nport = {free}\n'
                                     f'connect_timeout = 3\n')
    p = ed("rollout", "start", models["int8"], "--fleet", inv, "--journal",
           tmp_path / "j.db", db=tmp_path / "r.db")
    assert p.returncode == 5
    line = _one_line(p)
    assert line.count("gone:") == 1 and "can't be reached" in line and "cannot connect" in line


@pytest.mark.slow
def test_a_gated_rollout_with_the_default_root(user_fleet, models, tmp_path):
    """root = "~/.edgedeploy" (the default): the gate's data was looked for at a path with a
    `~` no shell expanded ("gate not measured"); the agent now says where things are. On an
    unprivileged user's boards, both envs."""
    p = ed("rollout", "start", models["int8"], "--fleet", user_fleet, "--journal",
           tmp_path / "j.db", "--gate-data", models["test"], "--gate", "accuracy>=0.5",
           "--json", db=tmp_path / "r.db")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    rep = json.loads(p.stdout)
    assert rep["state"] == "succeeded"
    assert {b["board"]: b["state"] for b in rep["boards"]} == {"b0": "committed",
                                                               "b1": "committed"}
    assert all(b["figures"]["accuracy"] >= 0.5 for b in rep["boards"])
