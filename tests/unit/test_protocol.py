"""The wire's typed answers (device/protocol.py) and the error mapping at the host's link:
tables of cases, plus one real `state` answer from the agent run in-process."""

from __future__ import annotations

import json

import pytest

from edgedeploy import errors
from edgedeploy.device import protocol
from edgedeploy.device.agent import batch, build_parser
from edgedeploy.device.store import Store


def test_a_real_state_answer_parses_and_finds_models(tmp_path):
    out: list[str] = []
    store = tmp_path / "store"
    batch(build_parser(), ["--store", str(store)], Store(store),
          lines=[json.dumps(["state"]) + "\n"], write=out.append)
    st = protocol.State.parse(json.loads(out[0]))
    assert st.store == str(store) and st.incoming == str(store / "incoming")
    assert st.data == str(store / "data") and st.models == ()
    assert st.model("digits") is None and st.info.runtime and st.agent.content_hash


@pytest.mark.parametrize("cls, msg, words", [
    (protocol.State, {"agent": {"agent": "0.1", "content_hash": "h"}, "store": "/s",
                      "models": []}, "no 'info'"),
    (protocol.ModelEntry, {"name": "m", "current": 3}, "'current' is a int"),
    (protocol.Bench, {"model": {}, "runtime": {"name": "litert"}, "threads": 1,
                      "load_ms": 1, "peak_rss_bytes": 1, "timing": {"p50_ms": 1}},
     "no 'p90_ms'"),
    (protocol.Installed, {"name": "m", "version": "v", "path": "/p", "bytes": 1,
                          "already_present": "no"}, "'already_present' is a str"),
    (protocol.Hello, {"agentd": 2, "pid": 1}, "hello version 2"),
    (protocol.Switched, [], "expected an object"),
])
def test_malformed_answers_say_what_is_wrong(cls, msg, words):
    with pytest.raises(protocol.Malformed, match=words):
        cls.parse(msg)


def test_entries_and_versions():
    e = protocol.ModelEntry.parse({"name": "m", "current": "v2", "previous": "v1", "versions": [
        {"version": "v1"}, {"version": "v2", "mode": "int8", "size": 10},
        {"version": "v3", "error": "unreadable manifest"}]})
    assert e.has("v2") and e.has("v1") and not e.has("v3") and not e.has("v4")
    listing = protocol.Listing.parse({"models": [e.raw]})
    assert listing.model("m") == e and listing.model("x") is None
    b = protocol.Eval.parse({"model": {"name": "m"}, "samples": 3, "top1": 1,
                             "agreement": {"top1_agreement": 0.5}})
    assert (b.top1, b.agreement) == (1.0, 0.5)


@pytest.mark.parametrize("code, cls, exit_code", [
    ("conflict", errors.Conflict, 4), ("not_found", errors.NotFound, 2),
    ("hash_mismatch", errors.HashMismatch, 1), ("bad_input", errors.InputError, 2),
    ("environment", errors.EnvironmentProblem, 3), ("not_here", errors.AgentError, 2),
])
def test_agent_errors_come_back_as_themselves_naming_the_board(code, cls, exit_code):
    err = errors.from_message(code, "model m version v is active", board="b7", exit_code=2)
    assert type(err) is cls and err.exit_code == exit_code and err.board == "b7"
    assert str(err).startswith("b7: model m version v is active") and err.code == code
