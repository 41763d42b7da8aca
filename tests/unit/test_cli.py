"""The CLI's own logic, in-process: exit codes, the one-line unexpected error, --help examples
on every subcommand, the old `rollout` spellings, options checked before anything is read."""

from __future__ import annotations

import pytest

from edgedeploy.host import cli
from edgedeploy.host.cli import rollout as rollout_cli

SUBCOMMANDS = [["compile"], ["inspect"], ["push"], ["bench"], ["eval"], ["status"],
               ["rollback"], ["bootstrap"], ["targets"], ["report"], ["rollout"],
               ["rollout", "start"], ["rollout", "status"], ["rollout", "cancel"],
               ["rollout", "resume"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_its_own_examples(words, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([*words, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "examples" in out and f"edgedeploy {' '.join(words)}" in out


@pytest.mark.parametrize("argv, want, note", [
    (["rollout", "m.tflite", "--fleet", "f.toml"], ["rollout", "start", "m.tflite", "--fleet",
                                                     "f.toml"], "rollout start MODEL"),
    (["rollout", "--resume", "ID", "--json"], ["rollout", "resume", "ID", "--json"],
     "rollout resume ID"),
    (["rollout", "--json", "status", "ID"], ["rollout", "status", "--json", "ID"], None),
    (["rollout", "status", "ID"], ["rollout", "status", "ID"], None),
    (["rollout", "start", "m.tflite"], ["rollout", "start", "m.tflite"], None),
    (["push", "m.tflite", "b0"], ["push", "m.tflite", "b0"], None),
])
def test_old_rollout_spellings_still_work(argv, want, note):
    got, said = rollout_cli.legacy(argv)
    assert got == want
    assert (said is None) if note is None else (note in said)


def test_bad_rollout_options_stop_before_anything_is_read(tmp_path, capsys):
    absent = tmp_path / "absent"
    code = cli.main(["rollout", "start", str(absent / "m.tflite"), "--fleet",
                     str(absent / "fleet.toml"), "--journal", str(tmp_path / "j.db"),
                     "--max-failures", "abc"])
    err = capsys.readouterr().err
    assert code == 2 and "--max-failures 'abc'" in err and "fleet.toml" not in err
    assert not (tmp_path / "j.db").exists()


def test_an_edgedeploy_error_is_its_exit_code_and_json(tmp_path, capsys):
    code = cli.main(["rollout", "status", "nope", "--journal", str(tmp_path / "j.db"),
                     "--json"])
    captured = capsys.readouterr()
    assert code == 2 and '"not_found"' in captured.out
    assert captured.err.startswith("edgedeploy rollout status: error: ") and "nope" in captured.err


def test_an_unexpected_error_is_one_line_and_exit_1_traceback_with_debug(monkeypatch, capsys):
    def broken(a):
        raise ZeroDivisionError("boom")
    monkeypatch.setattr(cli.report, "run_report", broken)
    assert cli.main(["report"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected ZeroDivisionError: boom" in err
    assert "--debug" in err
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "report"])
