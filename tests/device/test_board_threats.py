"""Threats to a board's store and resident agent (issue 12), one named test each, with the real
agent in both board envs (no TensorFlow): a local user holding the store lock, commands the
host gave up on acting later, uploads written through links or outside incoming/, leftovers of
cut uploads, a gzip bomb."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.device.conftest import bundle_dir
from tests.device.test_agentd import _Cleanup, _wait


def _two_versions(agent, models, tmp_path) -> tuple[str, str]:
    """digits float32 then int8 installed and activated: (previous, current)."""
    agent.store.mkdir(exist_ok=True)
    a = agent("install", bundle_dir(models["float32"], tmp_path / "b32"), "--activate")
    b = agent("install", bundle_dir(models["int8"], tmp_path / "b8"), "--activate")
    return a["version"], b["version"]


def _pointer(agent) -> dict:
    return json.loads((agent.store / "models" / "digits" / "current.json").read_text())


class _Holder:
    """Another process on the board holding the store lock (flock), as a local user's
    process might, until released."""

    def __init__(self, path: Path, shared: bool = False) -> None:
        code = ("import fcntl, os, sys\n"
                f"fd = os.open({str(path)!r}, os.O_RDONLY)\n"
                f"fcntl.flock(fd, fcntl.{'LOCK_SH' if shared else 'LOCK_EX'})\n"
                "print('held', flush=True)\n"
                "sys.stdin.read()\n")
        self.p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert self.p.stdout is not None and self.p.stdout.readline().strip() == "held"

    def release(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.wait(10)


def test_the_store_lock_is_owner_only_and_its_holder_named(agent, models, tmp_path):
    """A 0644 lock let any local user block every push with a shared flock, until the
    command timeout; now it is 0600, taken with a deadline, and the holder is named."""
    prev, cur = _two_versions(agent, models, tmp_path)
    lock = agent.store / ".lock"
    assert lock.stat().st_mode & 0o777 == 0o600
    os.chmod(lock, 0o644)  # as an older agent left it
    agent("list")
    agent("rollback", "digits")
    assert lock.stat().st_mode & 0o777 == 0o600
    holder = _Holder(lock, shared=True)
    try:
        t0 = time.monotonic()
        r = agent("--within", 1.5, "rollback", "digits", ok=False)
        waited = time.monotonic() - t0
        assert (r["code"], r["_rc"]) == ("conflict", 4)
        assert f"locked by PID {holder.p.pid}" in r["message"], r
        assert waited < 30  # the deadline, not LOCK_WAIT or forever
    finally:
        holder.release()
    assert _pointer(agent)["current"] == prev  # the refused rollback changed nothing


def test_another_local_user_cannot_hold_the_store_lock(agent, models):
    """The store in a folder every user may enter (as a home often is): user `nobody` can no
    longer open the lock to take a shared flock on it."""
    base = Path(tempfile.mkdtemp(prefix="edgedeploy-shared-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        shared = type(agent)(agent.python, agent.pyz, base / "store", agent.runtime)
        shared.store.mkdir()
        os.chmod(shared.store, 0o755)
        shared("install", bundle_dir(models["int8"], base / "bundle"), "--activate")
        nobody = pwd.getpwnam("nobody")
        probe = ("import fcntl, os, sys\n"
                 "try:\n"
                 f"    fd = os.open({str(shared.store / '.lock')!r}, os.O_RDONLY)\n"
                 "    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)\n"
                 "    print('held')\n"
                 "except PermissionError:\n"
                 "    print('refused')\n")

        def as_nobody() -> None:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
        out = subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, text=True,
                             preexec_fn=as_nobody, timeout=30)
        assert out.stdout.strip() == "refused", out
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_command_the_host_gave_up_on_never_acts_later(agent, models, tmp_path):
    """The issue's case: a rollback the host reported as failed switched the board 18 s
    later, when the store lock freed. A command whose client hung up, or whose deadline
    passed, while it waited is dropped after the lock is taken, before anything changes —
    through the resident agent and through `batch`."""
    prev, cur = _two_versions(agent, models, tmp_path)
    cleanup = _Cleanup()
    holder = _Holder(agent.store / ".lock")
    try:
        cleanup.pids.append(agent("agentd", "--detach", "--idle", 60)["pid"])
        sock = agent.store / "agentd.sock"
        _wait(sock.exists, "the socket")
        with socket.socket(socket.AF_UNIX) as s:  # the host asks, then gives up and hangs up
            s.connect(str(sock))
            s.makefile("rb").readline()
            s.sendall(b'["rollback", "digits"]\n')  # no deadline: hanging up is enough
            time.sleep(0.5)
        time.sleep(0.5)
        holder.release()  # the lock frees: the dropped rollback must not act now
        time.sleep(1.5)
        assert _pointer(agent)["current"] == cur
        holder = _Holder(agent.store / ".lock")
        p = subprocess.Popen([agent.python, str(agent.pyz), "--store", str(agent.store),
                              "batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(agent.store.parent)})
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(b'["rollback", "digits"]\n')
        p.stdin.flush()
        time.sleep(0.5)
        p.stdout.close()  # the SSH session that ran it ended: nobody reads the answer
        time.sleep(0.5)
        holder.release()
        p.stdin.close()
        p.wait(30)
        time.sleep(0.5)
        assert _pointer(agent)["current"] == cur
        # a deadline that passes while waiting: the holder is named, nothing changes
        holder = _Holder(agent.store / ".lock")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(sock))
            f = s.makefile("rb")
            f.readline()
            s.sendall(b'["--within", "1", "rollback", "digits"]\n')
            answer = json.loads(f.readline())
        assert answer["code"] == "conflict" and f"PID {holder.p.pid}" in answer["message"]
        holder.release()
        time.sleep(0.5)
        assert _pointer(agent)["current"] == cur
        r = agent("--within", 30, "rollback", "digits")  # nothing in the way: it acts
        assert r["current"] == prev
    finally:
        try:
            holder.release()
        except (ValueError, AssertionError):
            pass
        cleanup()


def _upload(sock_path: Path, folder: str, rel: str, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(sock_path))
        f = s.makefile("rb")
        f.readline()
        s.sendall((json.dumps(["upload", folder, rel, len(data)]) + "\n").encode() + data)
        return json.loads(f.readline())


def test_uploads_go_only_into_a_folder_directly_in_incoming(agent, tmp_path):
    """agentd's upload wrote to any absolute folder the socket's owner could write, and
    followed a symlinked folder inside incoming/."""
    cleanup = _Cleanup()
    outside = tmp_path / "outside"
    outside.mkdir()
    incoming = agent.store / "incoming"
    try:
        agent.store.mkdir()
        cleanup.pids.append(agent("agentd", "--detach", "--idle", 60)["pid"])
        sock = agent.store / "agentd.sock"
        _wait(sock.exists, "the socket")
        refused = {
            "absolute elsewhere": (str(outside / "tok"), "f"),
            "nested": (str(incoming / "a" / "b"), "f"),
            "the store itself": (str(agent.store), "models"),
            "dot-dot token": (str(incoming / ".."), "f"),
            "dot-dot path": (str(incoming / "tok"), "x/../../f"),
        }
        for why, (folder, rel) in refused.items():
            r = _upload(sock, folder, rel, b"payload")
            assert r["code"] == "store_error", (why, r)
        assert not incoming.exists() or not list(incoming.iterdir())  # nothing was made
        incoming.mkdir(exist_ok=True)
        (incoming / "evil").symlink_to(outside)  # planted by someone who can write there
        r = _upload(sock, str(incoming / "evil"), "f", b"payload")
        assert r["code"] == "store_error" and "not followed" in r["message"], r
        (incoming / "tok").mkdir()
        (incoming / "tok" / "sub").symlink_to(outside)
        r = _upload(sock, str(incoming / "tok"), "sub/f", b"payload")
        assert r["code"] == "store_error" and "not followed" in r["message"], r
        assert list(outside.iterdir()) == [] and not (agent.store / "models" / "f").exists()
        r = _upload(sock, str(incoming / "good"), "d/f", b"payload")
        assert r["ok"] and r["bytes"] == 7
        # the connection that made `good` ended without installing it: it is gone
        _wait(lambda: not (incoming / "good").exists(), "the uninstalled upload to go")
    finally:
        cleanup()


def test_stale_incoming_entries_are_swept_under_the_store_lock(agent, models, tmp_path):
    """Uploads cut mid-file and hosts that died mid-staging left incoming/VERSION.RANDOM
    (and nested folders from versions with '/') forever; an upload under way is kept."""
    agent.store.mkdir()
    incoming = agent.store / "incoming"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not the store's")
    old = time.time() - 2 * 3600
    for rel in ("v1.dead/digits.int8.tflite", "v1/nested.x/part", "gone.a1b2/x"):
        (incoming / rel).parent.mkdir(parents=True, exist_ok=True)
        (incoming / rel).write_bytes(b"partial")
    (incoming / "link.c3d4").symlink_to(outside)
    for p in sorted(incoming.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(p, (old, old), follow_symlinks=False)
    (incoming / "busy.e5f6").mkdir()
    (incoming / "busy.e5f6" / "model.tflite").write_bytes(b"being written now")
    agent("install", bundle_dir(models["int8"], tmp_path / "b8"))  # any locked command
    assert sorted(p.name for p in incoming.iterdir()) == ["busy.e5f6"]
    assert (outside / "keep").read_text() == "not the store's"  # the link was not followed


class _Zeros:
    """A file of SIZE zero bytes that is never held in memory (a gzip bomb's member)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return b"\0" * n


def _bomb(dest: Path, model: Path, *, bomb: str, size: int, manifest_first: bool,
          **fields) -> Path:
    """A .tar.gz bundle of MODEL whose member BOMB is SIZE zero bytes (the model itself, or
    another member), the manifest first or last, its fields overridden by FIELDS."""
    import io
    import tarfile

    m = json.loads(model.with_name(model.name[:-len(".tflite")] + ".manifest.json").read_text())
    m.update(fields)
    data = json.dumps(m).encode()

    def add_manifest(tf) -> None:
        ti = tarfile.TarInfo(model.name[:-len(".tflite")] + ".manifest.json")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    with tarfile.open(dest, "w:gz") as tf:
        if manifest_first:
            add_manifest(tf)
        if bomb != model.name:
            tf.add(str(model), arcname=model.name)
        ti = tarfile.TarInfo(bomb)
        ti.size = size
        tf.addfile(ti, _Zeros(size))
        if not manifest_first:
            add_manifest(tf)
    return dest


@pytest.mark.parametrize("case", ["model-member", "unlisted-member", "declared-extra"])
def test_a_gzip_bomb_is_stopped_at_its_declared_size(agent, models, tmp_path, case):
    """A 64 KB .tar.gz whose member unpacks to 64 MB: refused before (or as soon as) more than
    the manifest's size is written. The agent runs with a 16 MB file-size limit (RLIMIT_FSIZE):
    writing the member out, as before, fills it up to the limit and fails with "File too large"
    instead of refusing the bundle for what it is."""
    import resource

    model = models["int8"]
    big = 64 << 20
    bundle = {
        "model-member": lambda: _bomb(tmp_path / "b.tar.gz", model, bomb=model.name, size=big,
                                      manifest_first=False),
        "unlisted-member": lambda: _bomb(tmp_path / "b.tar.gz", model, bomb="junk.bin",
                                         size=big, manifest_first=False),
        "declared-extra": lambda: _bomb(tmp_path / "b.tar.gz", model, bomb="gate.npz", size=big,
                                        manifest_first=True, files={"gate.npz": "0" * 64},
                                        sizes={"gate.npz": 1000}),
    }[case]()
    assert bundle.stat().st_size < 1 << 20
    agent.store.mkdir()

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
    p = subprocess.run([agent.python, str(agent.pyz), "--store", str(agent.store), "install",
                        str(bundle)], capture_output=True, text=True, preexec_fn=limited,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(agent.store.parent)},
                       timeout=300)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr[-500:])
    msg = json.loads(p.stdout)
    assert msg["code"] == "unsafe_bundle" and str(bundle) in msg["message"]
    assert ("not listed" if case == "unlisted-member" else "its manifest says") in msg["message"]
    assert list((agent.store / ".staging").iterdir()) == []
    assert not (agent.store / "models").exists() or not list((agent.store / "models").iterdir())
