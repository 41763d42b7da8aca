"""Pull mode's pure decisions as tables: what a board does per model, anti-downgrade, the
desired state the controller writes next, backoff, staleness, document validation."""

import json

import pytest

from edgedeploy.device import desired as dz
from edgedeploy.device.pullloop import next_delay
from edgedeploy.device.trust import merge_signers, release_verdict, signer_line
from edgedeploy.errors import InputError
from edgedeploy.host.bucket import desired_after, next_serial, stale

SHA = "a" * 64


def target(version="v2", **kw) -> dz.Target:
    base = dict(model="digits", version=version, sha256=SHA, size=10,
                bundle=dz.bundle_key(SHA), release=200)
    base.update(kw)
    return dz.Target(**base)


@pytest.mark.parametrize("current, previous, installed, last, action", [
    ("v2", "v1", {"v1", "v2"}, None, "none"),                        # runs it already
    ("v1", None, {"v1"}, None, "install"),                           # new version
    (None, None, set(), None, "install"),                            # first model
    ("v1", None, {"v1", "v2"}, None, "activate"),                    # installed, not active
    ("v3", "v2", {"v2", "v3"}, None, "rollback"),                    # back to kept previous
    ("v1", None, {"v1", "v2"},                                       # gate failed here before
     {"target": target().digest(), "outcome": "gate_failed"}, "skip"),
    ("v1", None, {"v1"},                                             # refused here before
     {"target": target().digest(), "outcome": "refused"}, "skip"),
    ("v1", None, {"v1"},                                             # failed: try again
     {"target": target().digest(), "outcome": "failed"}, "install"),
    ("v1", None, {"v1", "v2"},                                       # another rollout retries
     {"target": target(rollout="r1").digest(), "outcome": "gate_failed"}, "activate"),
    ("v1", None, {"v1"},                                             # ... so does a downgrade
     {"target": target().digest(), "outcome": "refused"}, "install"),  # allowed now
])
def test_plan_model(current, previous, installed, last, action):
    t = target(allow_downgrade=True) if action == "install" and last and \
        last["outcome"] == "refused" else target()
    assert dz.plan_model(t, current, previous, installed, last).action == action


def test_a_gated_target_is_measured_even_when_it_is_the_kept_previous():
    """As an SSH rollout measures a version the board already holds: gates are the rollout's
    word, not skipped because the board ran that version before (only an ungated target, e.g.
    a publish of the old version, goes straight back)."""
    gated = target(gates=("p99_ms<=50",))
    assert dz.plan_model(gated, "v3", "v2", {"v2", "v3"}, None).action == "activate"
    assert dz.plan_model(target(max_latency_increase=10.0), "v3", "v2", {"v2", "v3"},
                         None).action == "activate"
    assert dz.plan_model(target(), "v3", "v2", {"v2", "v3"}, None).action == "rollback"


def test_target_digest_ignores_the_board_list():
    assert target(boards=("b1",)).digest() == target(boards=("*",)).digest()
    assert target(gates=("p50_ms<=2",)).digest() != target().digest()


@pytest.mark.parametrize("release, highest, previous, allow, ok", [
    (200, None, None, False, True),       # nothing run yet
    (200, 100, None, False, True),        # upgrade
    (200, 200, None, False, True),        # same release
    (100, 200, None, False, False),       # downgrade: a replayed old bundle
    (100, 200, "v2", False, True),        # ... the kept previous version: a rollback
    (100, 200, None, True, True),         # --allow-downgrade
    (None, 200, None, False, False),      # no release number once releases were run
    (None, None, None, False, True),
])
def test_release_verdict(release, highest, previous, allow, ok):
    why = release_verdict("digits", "v2", release, highest=highest, previous=previous,
                          allow_downgrade=allow)
    assert (why is None) == ok, why


def test_for_board_explicit_beats_star():
    d = dz.Desired("all", 1, (target("v1", boards=("*",)), target("v2", boards=("b1",)),
                              target("x", model="other", boards=("b2",))))
    assert d.for_board("b1")["digits"].version == "v2"
    assert d.for_board("b0")["digits"].version == "v1"
    assert set(d.for_board("b2")) == {"digits", "other"}


def _doc(targets) -> dz.Desired:
    return dz.Desired("all", 5, tuple(targets))


@pytest.mark.parametrize("before, boards, want", [
    ([], None, {"*": "v2"}),
    ([target("v1", boards=("*",))], ["b0"], {"*": "v1", "b0": "v2"}),
    ([target("v1", boards=("*",)), target("v2", boards=("b0",))], ["b1", "b2"],
     {"*": "v1", "b0": "v2", "b1": "v2", "b2": "v2"}),
    ([target("v1", boards=("*",)), target("v2", boards=("b0", "b1"))], None, {"*": "v2"}),
])
def test_desired_after_moves_boards(before, boards, want):
    doc = desired_after(_doc(before), "all", target("v2"), boards, now=10.0)
    got = {b: t.version for t in doc.targets for b in t.boards}
    assert got == want
    assert doc.serial > 5
    dz.Desired.from_json(doc.to_json(), "roundtrip")  # still one target per board


def test_desired_after_abort_puts_boards_back():
    before = _doc([target("v1", boards=("*",), release=100),
                   target("v2", boards=("b0", "b1", "b2"))])
    doc = desired_after(before, "all", target("v1", boards=("*",), release=100), ["b0", "b1"],
                        now=10.0)
    got = {b: t.version for t in doc.targets for b in t.boards}
    assert got == {"*": "v1", "b0": "v1", "b1": "v1", "b2": "v2"}


def test_desired_without_takes_boards_off():
    from edgedeploy.host.bucket import desired_without

    before = _doc([target("v1", boards=("*",)), target("v2", boards=("b0", "b1"))])
    doc = desired_without(before, "all", "digits", "v2", ["b0"], now=10.0)
    assert {b: t.version for t in doc.targets for b in t.boards} == {"*": "v1", "b1": "v2"}
    doc = desired_without(doc, "all", "digits", "v2", ["b1"], now=11.0)
    assert [t.boards for t in doc.targets] == [("*",)]


def test_serial_always_rises():
    assert next_serial(None, 1.5) == 1_500_000
    assert next_serial(2_000_000, 1.5) == 2_000_001


@pytest.mark.parametrize("every, failures, rand, lo, hi", [
    (5, 0, 0.9, 5, 5), (5, 1, 0.0, 7.5, 7.5), (5, 1, 0.999, 12.4, 12.5),
    (5, 3, 0.5, 40, 40), (5, 50, 0.5, 160, 160), (60, 50, 0.5, 600, 600),
    (1, 50, 0.5, 32, 32), (900, 2, 0.5, 900, 900),
])
def test_backoff(every, failures, rand, lo, hi):
    assert lo <= next_delay(every, failures, rand) <= hi


def test_stale():
    s = dz.Status("b0", "all", "", ts=100.0, poll_every=5.0)
    assert stale(s, 110.0) == (10.0, False)
    assert stale(s, 116.0) == (16.0, True)


@pytest.mark.parametrize("mutate", [
    lambda t: t.update(sha256="xyz"),
    lambda t: t.update(bundle="bundles/other.tar"),
    lambda t: t.update(model="../etc"),
    lambda t: t.update(boards=[]),
    lambda t: t.pop("version"),
])
def test_target_validation(mutate):
    raw = target().to_dict()
    mutate(raw)
    text = json.dumps({"schema": 1, "cohort": "all", "serial": 1, "targets": [raw]})
    with pytest.raises(InputError):
        dz.Desired.from_json(text, "doc")


def test_two_targets_for_one_board_refused():
    text = json.dumps({"schema": 1, "cohort": "all", "serial": 1,
                       "targets": [target("v1").to_dict(), target("v2").to_dict()]})
    with pytest.raises(InputError, match="two targets"):
        dz.Desired.from_json(text, "doc")


def test_envelope_roundtrip_and_garbage():
    doc, sig = dz.open_envelope(dz.envelope('{"a": 1}', "SIG"), "x")
    assert (doc, sig) == (b'{"a": 1}', "SIG")
    for raw in (b"nope", b'{"kind": "other", "document": "x"}', b'[]'):
        with pytest.raises(InputError):
            dz.open_envelope(raw, "x")


def test_signer_lines():
    line = signer_line("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey alice@ci")
    assert line == ('alice@ci namespaces="edgedeploy-bundle,edgedeploy-desired" '
                    'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey')
    for bad in ("not a key", "ssh-ed25519", "ssh-dss AAAA x"):
        with pytest.raises(InputError):
            signer_line(bad)
    with pytest.raises(InputError):
        signer_line("ssh-ed25519 AAAA", principal="bad name")
    again = signer_line("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey", principal="bob")
    assert merge_signers([line], [again]) == [again]


def test_rollback_targets():
    back = dz.Target("digits", "v1", "", 0, "", rollback=True)
    assert dz.plan_model(back, "v2", "v1", {"v1", "v2"}, None).action == "rollback"
    assert dz.plan_model(back, "v1", None, {"v1"}, None).action == "none"
    assert dz.plan_model(back, "v2", None, {"v2"}, None).action == "skip"
    raw = {"schema": 1, "cohort": "all", "serial": 1, "targets": [back.to_dict()]}
    assert dz.Desired.from_json(json.dumps(raw), "d").targets[0].rollback
    raw["targets"][0]["gates"] = ["p50_ms<=1"]
    with pytest.raises(InputError, match="rollback target"):
        dz.Desired.from_json(json.dumps(raw), "d")


def _status(serial, current=None, result=None) -> dz.Status:
    return dz.Status("b0", "all", "", 0.0, serial=serial,
                     models={"digits": {"current": current}} if current else {},
                     results={"digits": result} if result else {})


@pytest.mark.parametrize("status, now, state", [
    (None, 5, "waiting"),
    (None, 100, "failed"),                                        # silent past the wait
    (_status(4), 5, "waiting"),                                   # not seen the document yet
    (_status(5, "v1"), 5, "waiting"),                             # seen it, no result yet
    (_status(5, "v2"), 5, "committed"),                           # runs it (e.g. pushed)
    (_status(5, "v2", {"target": target().digest(), "outcome": "committed",
                       "figures": {"p50_ms": 1}}), 5, "committed"),
    (_status(5, "v1", {"target": target().digest(), "outcome": "gate_failed",
                       "error": "gate failed: x"}), 5, "rolled_back"),
    (_status(5, "v1", {"target": target().digest(), "outcome": "refused",
                       "error": "bad"}), 5, "failed"),
    (_status(5, "v1", {"target": target().digest(), "outcome": "failed"}), 5, "waiting"),
    (_status(5, "v1", {"target": target().digest(), "outcome": "failed"}), 100, "failed"),
    (_status(5, "v1", {"target": "other", "outcome": "committed"}), 5, "waiting"),
])
def test_observe(status, now, state):
    from edgedeploy.host.pullwatch import observe

    assert observe(status, target(), 5, since=0.0, now=now, wait=60).state == state


@pytest.mark.parametrize("status, now, state", [
    (_status(7, "v1"), 5, "rolled_back"),
    (_status(6, "v1"), 5, "waiting"),        # an older report, from before the move back
    (_status(7, "v2"), 5, "waiting"),
    (_status(7, "v2"), 100, "stranded"),
    (None, 100, "stranded"),
])
def test_observe_back(status, now, state):
    from edgedeploy.host.pullwatch import observe_back

    assert observe_back(status, "digits", "v1", 7, since=0.0, now=now, wait=60).state == state
