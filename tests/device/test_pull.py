"""One pull poll (device/pull.py) in both board envs against a real S3 object store (SeaweedFS),
with bundles and desired states the host signed with a real SSH key: install + gates + report,
gate failure, tampered objects, replay and downgrade, a cut download resumed, the store down."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgedeploy.device import desired as dz
from edgedeploy.device import trust
from edgedeploy.device.s3 import Credentials, Location, S3Client
from edgedeploy.host.bucket import Bucket, desired_after
from edgedeploy.host.bundle import Bundle, load_bundle
from edgedeploy.host.signing import sign_bundle

from tests.conftest import board_pythons
from tests.objectstore import objectstore_signal

from .conftest import RUNTIMES, store_state

pytestmark = pytest.mark.board

@dataclass
class PullBoard:
    """A board's store driven by `edgedeploy-agent pull` (the zipapp, in a board env)."""
    python: str
    pyz: Path
    store: Path
    name: str
    creds: Path
    loc: Location
    cohort: str = "all"

    def poll(self, *, ok: bool = True, allow_downgrade: bool = False, timeout: float = 10,
             env: dict | None = None) -> dict:
        argv = [self.python, str(self.pyz), "--store", str(self.store), "pull",
                "--source", self.loc.url(), "--board", self.name, "--cohort", self.cohort,
                "--credentials", str(self.creds), "--timeout", str(timeout)] + \
            (["--allow-downgrade"] if allow_downgrade else [])
        p = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                           env={"PATH": "/usr/bin:/bin", "HOME": str(self.store.parent),
                                **(env or {})})
        if env and "EDGEDEPLOY_AGENT_CRASH_AT" in env:
            return {"rc": p.returncode}
        try:
            out = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AssertionError(f"pull printed no JSON (rc {p.returncode}):\n{p.stdout}\n"
                                 f"{p.stderr}")
        assert out["ok"] == ok and (p.returncode == 0) == ok, (p.returncode, out, p.stderr)
        return out

    def current(self, model: str = "digits") -> str | None:
        from edgedeploy.device.store import Store

        return Store(self.store).pointer(model).current


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True)
    return path


@pytest.fixture
def setup(request, objectstore, agent_pyz, tmp_path):
    """(a board that trusts alice, the controller's Bucket signing as alice), on a fresh
    prefix of the session's store."""
    runtime = request.param
    pythons = board_pythons()
    if runtime not in pythons:
        pytest.fail(f"board env for {runtime} missing: run the tests through scripts/test")
    key = keygen(tmp_path / "alice", "alice@ci")
    loc = Location(objectstore["endpoint"], objectstore["bucket"],
                   f"t-{secrets.token_hex(4)}")
    store = tmp_path / "board" / "store"
    trust.write_signers(store, [trust.signer_line(key.with_suffix(".pub").read_text())])
    creds = tmp_path / "board" / "s3.json"
    creds.write_text(json.dumps(objectstore["boards"]["b0"]))
    board = PullBoard(pythons[runtime], agent_pyz, store, "b0", creds, loc)
    c = objectstore["controller"]
    with Bucket(loc, Credentials(c["access_key"], c["secret_key"]), signing_key=key) as bucket:
        yield board, bucket


def publish(bucket: Bucket, bundle: Bundle, *, boards=None, cohort="all", **target_kw):
    pub = bucket.publish_bundle(bundle)
    t = dz.Target(model=bundle.name, version=bundle.version, sha256=pub.sha256, size=pub.size,
                  bundle=pub.key, release=bundle.manifest.release, **target_kw)
    doc = desired_after(bucket.desired(cohort), cohort, t, boards, now=time.time())
    bucket.put_desired(doc)
    return pub, t, doc


def signed(path: Path, key: Path, release: int, gate: Path | None = None) -> Bundle:
    b = load_bundle(path)
    if gate is not None:
        b = b.with_files({"gate.npz": gate})
    return sign_bundle(b, key, release=release)


both = pytest.mark.parametrize("setup", RUNTIMES, indirect=True)


@both
def test_poll_installs_gates_activates_and_reports(setup, models, tmp_path):
    board, bucket = setup
    key = Path(bucket.signing_key)
    b = signed(models["int8"], key, 100, gate=models["test"])
    pub, _, doc = publish(bucket, b, gates=("accuracy>=0.5", "p99_ms<=1000"))
    assert pub.uploaded == pub.size
    assert bucket.publish_bundle(b).uploaded == 0  # content-addressed: nothing sent again

    r = board.poll()
    assert r["actions"] == {"digits": "activated"} and r["reported"]
    res = r["status"]["results"]["digits"]
    assert res["outcome"] == "committed" and res["serial"] == doc.serial
    assert res["figures"]["accuracy"] > 0.5 and res["figures"]["p99_ms"] > 0
    assert board.current() == b.version
    assert r["status"]["downloaded_bytes"] == pub.size and r["status"]["signers"] == 1
    st = bucket.statuses()["b0"]
    assert st.models["digits"]["current"] == b.version and st.models["digits"]["release"] == 100

    again = board.poll()
    assert again["not_modified"] and again["actions"] == {"digits": "none"}
    assert again["status"]["downloaded_bytes"] == 0


@both
def test_gate_failure_keeps_the_old_version(setup, models):
    board, bucket = setup
    key = Path(bucket.signing_key)
    first = signed(models["int8"], key, 100)
    publish(bucket, first)
    board.poll()
    second = signed(models["float32"], key, 200)
    publish(bucket, second, gates=("p50_ms<=0.000001",))
    r = board.poll()
    res = r["status"]["results"]["digits"]
    assert r["actions"] == {"digits": "gate failed"} and res["outcome"] == "gate_failed"
    assert "p50_ms<=1e-06: measured" in res["error"]
    assert board.current() == first.version  # never activated
    assert board.poll()["actions"]["digits"].startswith("skip: gate_failed")


@both
def test_gated_return_to_the_kept_previous_version_is_measured(setup, models):
    """A rollout's gates hold for a version the board ran before, as over SSH."""
    board, bucket = setup
    key = Path(bucket.signing_key)
    first = signed(models["int8"], key, 100)
    second = signed(models["float32"], key, 200)
    for b in (first, second):
        publish(bucket, b)
        board.poll()
    assert board.current() == second.version
    publish(bucket, first, gates=("p50_ms<=0.000001",))
    res = board.poll()["status"]["results"]["digits"]
    assert res["outcome"] == "gate_failed" and res["figures"]["p50_ms"] > 0
    assert board.current() == second.version  # kept: the gate failed
    publish(bucket, first, gates=("p99_ms<=100000",))
    res = board.poll()["status"]["results"]["digits"]
    assert res["outcome"] == "committed" and res["figures"]["p99_ms"] > 0
    assert board.current() == first.version


@both
def test_tampered_bundle_is_refused_store_unchanged(setup, models):
    board, bucket = setup
    key = Path(bucket.signing_key)
    publish(bucket, signed(models["int8"], key, 100))
    board.poll()
    before = store_state(board.store / "models")
    pub, _, _ = publish(bucket, signed(models["float32"], key, 200))
    raw = bytearray(S3Client(bucket.loc.endpoint, bucket.creds).get(
        bucket.loc.bucket, bucket.loc.key(pub.key)).body)
    raw[len(raw) // 2] ^= 0xFF  # the bucket is not trusted: someone flips a byte
    bucket.client.put(bucket.loc.bucket, bucket.loc.key(pub.key), bytes(raw))
    r = board.poll()
    res = r["status"]["results"]["digits"]
    assert res["outcome"] == "refused" and "sha256" in res["error"]
    assert store_state(board.store / "models") == before


@both
def test_tampered_or_replayed_desired_state_is_refused(setup, models):
    board, bucket = setup
    key = Path(bucket.signing_key)
    first = signed(models["int8"], key, 100)
    _, _, old_doc = publish(bucket, first)
    board.poll()
    old_env = bucket.client.get(bucket.loc.bucket,
                                bucket.loc.key(dz.desired_key("all"))).body
    second = signed(models["float32"], key, 200)
    publish(bucket, second)
    env = json.loads(bucket.client.get(bucket.loc.bucket,
                                       bucket.loc.key(dz.desired_key("all"))).body)
    before = store_state(board.store / "models")
    # tampered: the document says something else than what was signed
    env["document"] = env["document"].replace('"release": 200', '"release": 201')
    bucket.client.put(bucket.loc.bucket, bucket.loc.key(dz.desired_key("all")),
                      json.dumps(env).encode())
    r = board.poll()
    assert "desired state refused" in r["status"]["error"]
    assert "does not verify" in r["status"]["error"]
    assert store_state(board.store / "models") == before and board.current() == first.version
    assert board.poll()["not_modified"]  # the refused document is not fetched again
    # replayed: an old document, validly signed, older serial than one taken
    publish(bucket, second)
    assert board.poll()["actions"] == {"digits": "activated"}
    bucket.client.put(bucket.loc.bucket, bucket.loc.key(dz.desired_key("all")), old_env)
    r = board.poll()
    assert f"serial {old_doc.serial} is older" in r["status"]["error"]
    assert board.current() == second.version


@both
def test_downgrade_refused_rollback_to_previous_allowed(setup, models, tmp_path):
    board, bucket = setup
    key = Path(bucket.signing_key)
    v100 = signed(models["int8"], key, 100, gate=models["test"])
    v200 = signed(models["int8"], key, 200)
    v300 = signed(models["float32"], key, 300)
    for b in (v100, v200, v300):
        publish(bucket, b)
        assert board.poll()["status"]["results"]["digits"]["outcome"] == "committed"
    assert board.current() == v300.version
    publish(bucket, v200)  # the kept previous version: a rollback
    res = board.poll()["status"]["results"]["digits"]
    assert res["outcome"] == "committed" and res["downgrade"] and board.current() == v200.version
    publish(bucket, v100)  # release 100 < 300 ever run, not the previous one: refused
    res = board.poll()["status"]["results"]["digits"]
    assert res["outcome"] == "refused" and "lower than release 300" in res["error"]
    assert board.current() == v200.version
    publish(bucket, v100, allow_downgrade=True)  # a signed, deliberate downgrade
    assert board.poll()["status"]["results"]["digits"]["outcome"] == "committed"
    assert board.current() == v100.version


@both
def test_cut_download_resumes_with_range(setup, models, tmp_path):
    board, bucket = setup
    key = Path(bucket.signing_key)
    b = signed(models["float32"], key, 100)  # ~500 KB: several 64 KB chunks
    pub, _, _ = publish(bucket, b)
    once = tmp_path / "crashed-once"
    r = board.poll(env={"EDGEDEPLOY_AGENT_CRASH_AT": f"pull:chunk@{once}"})
    assert r["rc"] == -9 and once.exists()
    part = board.store / "pull" / "downloads" / f"{pub.sha256}.part"
    had = part.stat().st_size
    assert 0 < had < pub.size and board.current() is None
    r = board.poll()
    assert r["actions"] == {"digits": "activated"}
    assert r["status"]["downloaded_bytes"] == pub.size - had  # only the rest came
    assert not part.exists()


@both
def test_store_down_keeps_the_model(setup, models, objectstore):
    board, bucket = setup
    key = Path(bucket.signing_key)
    b = signed(models["int8"], key, 100)
    publish(bucket, b)
    board.poll()
    before = store_state(board.store / "models")
    d = Path(objectstore["dir"])
    objectstore_signal(d, "pause")
    try:
        t0 = time.monotonic()
        r = board.poll(ok=False, timeout=2)
        assert r["code"] == "object_store_unreachable" and "timed out" in r["message"]
        assert time.monotonic() - t0 < 30
    finally:
        objectstore_signal(d, "resume")
    assert store_state(board.store / "models") == before and board.current() == b.version
    assert board.poll()["actions"] == {"digits": "none"}


@both
def test_board_without_signers_does_not_pull(setup):
    board, _ = setup
    (board.store / "trust" / "allowed_signers").unlink()
    r = board.poll(ok=False)
    assert r["code"] == "signature_refused" and "no allowed signers" in r["message"]


def test_board_credentials_write_only_their_own_status(objectstore):
    from edgedeploy.errors import ObjectStoreError

    k = objectstore["boards"]["b0"]
    c = S3Client(objectstore["endpoint"], Credentials(k["access_key"], k["secret_key"]))
    c.put(objectstore["bucket"], "t-x/status/b0/status.json", b"{}")
    for key in ("t-x/status/b1/status.json", "t-x/desired/all.json", "t-x/bundles/x.tar"):
        with pytest.raises(ObjectStoreError, match="403"):
            c.put(objectstore["bucket"], key, b"{}")


@pytest.mark.parametrize("setup", ["litert"], indirect=True)
def test_saved_config_and_trust_command(setup, agent_pyz):
    board, bucket = setup
    run = [board.python, str(agent_pyz), "--store", str(board.store)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(board.store.parent)}
    key = Path(bucket.signing_key).with_suffix(".pub").read_text().split()
    line = f'bob@ci namespaces="anything" {key[0]} {key[1]}'
    p = subprocess.run([*run, "trust", "--add", line], capture_output=True, text=True, env=env)
    out = json.loads(p.stdout)
    assert out["signers"] == [f'bob@ci namespaces="edgedeploy-bundle,edgedeploy-desired" '
                              f'{key[0]} {key[1]}']  # one line per key; our namespaces only
    p = subprocess.run([*run, "pull", "--source", board.loc.url(), "--board", "b0",
                        "--credentials", str(board.creds), "--save"], capture_output=True,
                       text=True, env=env)
    assert json.loads(p.stdout)["ok"], p.stdout
    saved = json.loads((board.store / "pull" / "config.json").read_text())
    kept = board.store / "pull" / "credentials.json"  # copied into the store, owner-only
    assert saved["board"] == "b0" and saved["credentials"] == str(kept)
    assert kept.read_bytes() == board.creds.read_bytes()
    for f in (kept, board.store / "pull" / "config.json"):
        assert f.stat().st_mode & 0o077 == 0, f
    p = subprocess.run([*run, "pull"], capture_output=True, text=True, env=env)
    assert json.loads(p.stdout)["board"] == "b0"  # the saved settings
    p = subprocess.run([*run, "pull", "--every", "0.2", "--polls", "3"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert json.loads(p.stdout)["failing"] == 0 and p.stderr.count('"poll"') == 3


@both
def test_resident_agent_pulls_every_few_seconds(setup, models, agent_pyz):
    board, bucket = setup
    key = Path(bucket.signing_key)
    run = [board.python, str(agent_pyz), "--store", str(board.store)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(board.store.parent)}
    subprocess.run([*run, "pull", "--source", board.loc.url(), "--board", "b0",
                    "--credentials", str(board.creds), "--timeout", "5", "--save"],
                   capture_output=True, text=True, env=env, check=True)
    started = json.loads(subprocess.run([*run, "agentd", "--detach", "--pull-every", "0.5"],
                                        capture_output=True, text=True, env=env).stdout)
    assert started["ok"] and started["started"], started
    try:
        b = signed(models["int8"], key, 100)
        publish(bucket, b)
        deadline = time.monotonic() + 90
        while board.current() != b.version and time.monotonic() < deadline:
            time.sleep(0.2)
        assert board.current() == b.version
        while time.monotonic() < deadline:  # the report comes at the end of the poll
            st = bucket.statuses().get("b0")
            if st and "digits" in st.results:
                break
            time.sleep(0.2)
        assert st.results["digits"]["outcome"] == "committed" and st.poll_every == 0.5
        log = (board.store / "pull" / "loop.log").read_text()
        assert '"digits": "activated"' in log
    finally:
        stopped = json.loads(subprocess.run([*run, "agentd", "--stop"], capture_output=True,
                                            text=True, env=env).stdout)
    assert stopped["stopped"] == started["pid"]


def test_pull_every_needs_saved_settings(agent):
    agent.store.mkdir(parents=True)
    r = agent("agentd", "--detach", "--pull-every", 5, ok=False)
    assert r["code"] == "bad_input" and "no --source" in r["message"]
