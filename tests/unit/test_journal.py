"""The rollout journal (versioned schema, migration from the unversioned file, the board-state
transition table) and Options.validate: pure or SQLite-in-a-temp-folder, fast."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from edgedeploy.errors import InputError, JournalError
from edgedeploy.host.fleet import BoardState, Journal, Options
from edgedeploy.host.fleet.journal import SCHEMA_VERSION, TRANSITIONS

# the schema every journal had before it was versioned (user_version 0), with a rollout in it
OLD = """
CREATE TABLE rollouts (
  id TEXT PRIMARY KEY, model TEXT, version TEXT, bundle TEXT, fleet TEXT, options TEXT,
  plan TEXT, state TEXT, pid INTEGER, host TEXT, created REAL, updated REAL, message TEXT);
CREATE TABLE boards (
  rollout TEXT, board TEXT, wave INTEGER, state TEXT, old TEXT, new TEXT, figures TEXT,
  old_figures TEXT, error TEXT, updated REAL, PRIMARY KEY (rollout, board));
CREATE TABLE events (rollout TEXT, ts REAL, board TEXT, state TEXT, detail TEXT);
INSERT INTO rollouts VALUES ('r1', 'digits', 'v2', '/m.tflite', '/fleet.toml',
  '{"canary": "1", "waves": "100%", "max_failures": "0"}', '[["b0"], ["b1"]]', 'running',
  0, 'elsewhere', 1.0, 2.0, NULL);
INSERT INTO boards VALUES ('r1', 'b0', 0, 'committed', 'v1', 'v2', '{"accuracy": 0.98}', NULL,
  NULL, 2.0);
INSERT INTO boards VALUES ('r1', 'b1', 1, 'activating', 'v1', 'v2', NULL, NULL, NULL, 2.0);
INSERT INTO events VALUES ('r1', 2.0, 'b0', 'committed', NULL);
"""


def test_an_unversioned_journal_is_migrated_and_reads_back(tmp_path):
    path = tmp_path / "rollouts.db"
    with sqlite3.connect(path) as c:
        c.executescript(OLD)
    j = Journal(path)
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "events_by_rollout" in indexes
    r = j.rollout("r1")
    assert (r.state, r.plan, r.options.max_failures, r.options.parallel) == \
        ("running", [["b0"], ["b1"]], "0", 16)
    b0, b1 = j.boards("r1")
    assert (b0.state, b0.figures, b1.state) == (BoardState.COMMITTED, {"accuracy": 0.98},
                                                BoardState.ACTIVATING)
    j.set_board("r1", "b1", BoardState.ACTIVATED)       # and it takes writes
    assert Journal(path).board("r1", "b1").state == BoardState.ACTIVATED  # reopened: no-op


def test_a_journal_from_a_newer_edgedeploy_is_refused(tmp_path):
    path = tmp_path / "rollouts.db"
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(JournalError, match="newer"):
        Journal(path)


def test_set_board_enforces_the_transition_table(tmp_path):
    path = tmp_path / "rollouts.db"
    with sqlite3.connect(path) as c:
        c.executescript(OLD)
    j = Journal(path)
    assert set(TRANSITIONS) == set(BoardState)
    with pytest.raises(JournalError, match="b0 cannot go from committed to staging"):
        j.set_board("r1", "b0", BoardState.STAGING)
    assert j.board("r1", "b0").state == BoardState.COMMITTED       # nothing written
    assert [e.state for e in j.events("r1")] == [BoardState.COMMITTED]
    j.set_board("r1", "b0", BoardState.ROLLING_BACK, error="abort")
    j.set_board("r1", "b0", BoardState.ROLLED_BACK, error="abort")
    for state in BoardState:                                       # rolled_back is final
        with pytest.raises(JournalError):
            j.set_board("r1", "b0", state)


@pytest.mark.parametrize("options, words", [
    (Options(max_failures="abc"), "--max-failures 'abc'"),
    (Options(max_failures="120%"), "--max-failures '120%'"),
    (Options(waves="10%,abc"), "--waves 'abc'"),
    (Options(waves="10%,,100%"), "--waves ''"),
    (Options(canary="-1"), "--canary '-1'"),
    (Options(gates=["speed>=3"]), "unknown metric 'speed'"),
    (Options(gates=["accuracy>=0.9"]), "need --gate-data"),
    (Options(max_accuracy_drop=1.0), "--max-accuracy-drop needs --gate-data"),
    (Options(max_latency_increase=-5.0), "--max-latency-increase -5.0"),
    (Options(parallel=0), "--parallel 0"),
    (Options(retries=-1), "--retries -1"),
    (Options(timeout=0), "--timeout 0"),
    (Options(gate_data="/nonexistent/gate.npz"), "no such gate data file"),
])
def test_bad_options_are_refused_by_validate(options, words):
    with pytest.raises(InputError) as err:
        options.validate()
    assert words in str(err.value) and err.value.exit_code == 2


def test_gate_data_is_checked_by_validate(tmp_path):
    np.savez(tmp_path / "xy.npz", x=np.zeros((2, 4), np.float32), y=np.zeros(2))
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 4), np.float32))
    Options(gates=["accuracy>=0.9"], gate_data=str(tmp_path / "xy.npz")).validate()
    with pytest.raises(InputError, match="lacks y"):
        Options(gate_data=str(tmp_path / "x.npz")).validate()
    with pytest.raises(InputError, match="reference outputs"):
        Options(gates=["agreement>=0.9"], gate_data=str(tmp_path / "xy.npz")).validate()
    Options(canary="5%", waves="exp", max_failures="0").validate()
