"""The README stays true: the fleet.toml reference names every key the loader accepts, its
example loads, and the error for a missing fleet file points at it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgedeploy.errors import InputError
from edgedeploy.targets import _FIELDS, load_fleet

README = Path(__file__).resolve().parents[2] / "README.md"


def _reference() -> str:
    text = README.read_text()
    start = text.index("### fleet.toml reference")
    return text[start:text.index("\n## ", start)]


def test_fleet_reference_names_every_key():
    ref = _reference()
    documented = set(re.findall(r"^\| `(\w+)` \|", ref, re.M))
    assert documented == set(_FIELDS), (set(_FIELDS) - documented, documented - set(_FIELDS))


def test_fleet_reference_example_loads(tmp_path):
    example = re.search(r"```toml\n(.*?)```", _reference(), re.S).group(1)
    (tmp_path / "fleet.toml").write_text(example)
    fleet = load_fleet(tmp_path / "fleet.toml")
    assert fleet.boards["pi-garage"].ssh_config == "~/.ssh/config.fleet"
    assert fleet.boards["phone"].port == 8022
    assert [b.name for b in fleet.select(group="canary")] == ["pi-kitchen", "pi-garage"]


def test_missing_fleet_file_points_at_the_reference(tmp_path):
    with pytest.raises(InputError) as e:
        load_fleet(tmp_path / "nope.toml")
    assert "nope.toml: no such fleet file" in str(e.value)
    assert "fleet.toml reference" in str(e.value) and "--fleet" in str(e.value)


def test_targets_help_names_every_fleet_key():
    """The missing-fleet error sends people to `edgedeploy targets --help` too."""
    import contextlib
    import io

    from edgedeploy.host.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["targets", "--help"])
    text = out.getvalue()
    for key in _FIELDS:
        assert key in text, key
    assert "[boards.pi-kitchen]" in text
