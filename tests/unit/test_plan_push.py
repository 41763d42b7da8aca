"""Push decisions and inventory checks are pure: tables of cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedeploy.device.manifest import Manifest, TensorSpec
from edgedeploy.device.protocol import BoardInfo, ModelEntry
from edgedeploy.errors import InputError
from edgedeploy.host.bundle import Bundle
from edgedeploy.host.deploy import plan_push
from edgedeploy.targets import Board, load_fleet, load_profile, profile_names

INFO = {"arch": "aarch64", "python": "3.11.2", "runtime": "tflite_runtime",
        "store": {"free_bytes": 10_000_000}}


def _bundle(tmp_path: Path, size: int = 1000, etpu: bool = False) -> Bundle:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0" * size)
    m = Manifest(name="digits", version="v2", mode="int8", label="int8", file="m.tflite",
                 sha256="x", size=size, inputs=[TensorSpec("x", 0, [1], "int8")], outputs=[],
                 edgetpu={"compiled": True} if etpu else None)
    return Bundle(m, model)


LISTED = {"name": "digits", "current": "v1", "previous": None,
          "versions": [{"version": "v1"}, {"version": "v2"}]}


@pytest.mark.parametrize("profile, info, listing, size, etpu, upload, problem", [
    ("rpi-aarch64", INFO, None, 1000, False, True, None),
    ("rpi-aarch64", INFO, LISTED, 1000, False, False, None),            # has it: 0 bytes
    ("rpi-aarch64", {**INFO, "arch": "armv7l"}, None, 1000, False, True, "arch armv7l"),
    ("rpi-armv7", {**INFO, "arch": "armv7l", "python": "3.12.1"}, None, 1000, False, True,
     "Python 3.12.1"),
    ("rpi-aarch64", {**INFO, "runtime": None, "runtime_error": "no"}, None, 1000, False, True,
     "no TFLite runtime"),
    ("rpi-armv7", {**INFO, "arch": "armv7l", "runtime": "litert"}, None, 1000, False, True,
     "runtime litert"),
    ("coral-devboard", INFO, None, 1000, False, True, "needs an Edge TPU model"),
    ("coral-devboard", INFO, None, 1000, True, True, None),
    ("rpi-aarch64", INFO, None, 1000, True, True, "compiled for the Edge TPU"),
    ("rpi-aarch64", INFO, None, 6_000_000, False, True, "bytes free"),     # needs 2x
    ("rpi-aarch64", INFO, LISTED, 6_000_000, False, False, None),       # present: no disk need
])
def test_plan_push(tmp_path, profile, info, listing, size, etpu, upload, problem):
    board = Board(name="b", host="h", profile=load_profile(profile))
    entry = ModelEntry.parse(listing) if listing else None
    plan = plan_push(board, BoardInfo.parse(info), entry, _bundle(tmp_path, size, etpu), True)
    assert plan.upload_model is upload
    if problem is None:
        assert plan.problems == []
    else:
        assert any(problem in p for p in plan.problems), plan.problems


def test_profiles_load():
    assert set(profile_names()) >= {"rpi-aarch64", "rpi-armv7", "coral-devboard", "coral-usb",
                                    "android-termux", "local"}
    assert load_profile("android-termux").port == 8022
    assert load_profile("coral-usb").model_format == "edgetpu"


@pytest.mark.parametrize("text, words", [
    ('[boards.a]\nhost = "h"\nprofile = "nope"\n', "unknown board profile 'nope'"),
    ('[boards.a]\nhost = "h"\n[boards.a]\nhost = "i"\n', "not valid TOML"),
    ('[boards.a]\nhost = "h"\n[boards.b]\nhost = "h"\n', "same host, port and user as board a"),
    ('[boards.a]\nport = 22\n', "board a: no host"),
    ('[boards.a]\nhost = "h"\nport = "22"\n', "port = '22' has the wrong type"),
    ('[boards.a]\nhost = "h"\nhostname = "x"\n', "unknown field 'hostname'"),
    ('[defaults]\nuser = "pi"\n', "no [boards.NAME] sections"),
])
def test_bad_fleet_files(tmp_path, text, words):
    f = tmp_path / "fleet.toml"
    f.write_text(text)
    with pytest.raises(InputError) as err:
        load_fleet(f)
    assert words in str(err.value) and str(f) in str(err.value)


def test_fleet_select(tmp_path):
    f = tmp_path / "fleet.toml"
    f.write_text('[defaults]\nuser = "pi"\nprofile = "rpi-aarch64"\n'
                 '[boards.a]\nhost = "h1"\ngroups = ["canary"]\ntags = ["cam"]\n'
                 '[boards.b]\nhost = "h2"\ntags = ["cam"]\n'
                 '[boards.c]\nhost = "h3"\nprofile = "android-termux"\n')
    fleet = load_fleet(f)
    assert [b.name for b in fleet.select(group="canary")] == ["a"]
    assert [b.name for b in fleet.select(tag="cam")] == ["a", "b"]
    assert fleet.get("c").port == 8022 and fleet.get("a").user == "pi"
    with pytest.raises(InputError, match="no board named zz"):
        fleet.get("zz")


def test_wheel_choice_for_a_board():
    from pathlib import Path

    import pytest

    from edgedeploy.errors import InputError
    from edgedeploy.host.bootstrap import choose, parse_wheel, wheel_fits

    names = ["ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_aarch64.whl",
             "ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_x86_64.whl",
             "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
             "numpy-1.26.4-cp39-cp39-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
             "tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_armv7l.whl",
             "protobuf-7.36.2-cp310-abi3-manylinux2014_aarch64.whl",
             "pip-26.3-py3-none-any.whl", "README.txt"]
    wheels = [w for w in (parse_wheel(Path(n)) for n in names) if w]
    assert len(wheels) == 7 and wheels[0].name == "ai-edge-litert"
    rt, fit, system = choose(wheels, ("litert", "tflite_runtime"), "3.11.2", "aarch64")
    assert rt == "litert" and not system
    assert sorted(w.path.name for w in fit) == sorted([names[0], names[2], names[5], names[6]])
    abi3 = parse_wheel(Path(names[5]))
    assert wheel_fits(abi3, "3.12.1", "aarch64") and not wheel_fits(abi3, "3.9.2", "aarch64")
    # armv7 with only tflite-runtime and no numpy for it: refused, saying what to fetch
    with pytest.raises(InputError, match="no runtime for Python 3.11.2 on armv7l"):
        choose(wheels, ("litert", "tflite_runtime"), "3.11.2", "armv7l")
    # ... unless the board's own Python has a numpy 1.x (Debian's python3-numpy) to serve it
    rt, fit, system = choose(wheels, ("litert", "tflite_runtime"), "3.11.2", "armv7l",
                             os_numpy="1.24.2")
    assert rt == "tflite_runtime" and system and [w.path.name for w in fit][0] == names[4]
    with pytest.raises(InputError):  # numpy 2 can't serve tflite-runtime 2.14
        choose(wheels, ("tflite_runtime",), "3.11.2", "armv7l", os_numpy="2.1.0")


REQ_FC12 = {"min_runtime": "2.17.0", "ops": {"CONV_2D": 3, "FULLY_CONNECTED": 12},
            "custom_ops": []}
REQ_ETPU = {"min_runtime": None, "ops": {}, "custom_ops": ["edgetpu-custom-op"]}
TFLRT = {**INFO, "runtimes": {"tflite_runtime": "2.14.0"},
         "delegates": {"edgetpu": {"available": False}}}
LITERT = {**INFO, "runtime": "litert", "runtimes": {"litert": "2.3.0"},
          "delegates": {"edgetpu": {"available": False}}}


@pytest.mark.parametrize("info, requires, problem", [
    (TFLRT, REQ_FC12, "FULLY_CONNECTED version 12 needs a TFLite runtime of TensorFlow 2.17.0"),
    (LITERT, REQ_FC12, None),
    (TFLRT, {**REQ_FC12, "ops": {"CONV_2D": 3}}, None),
    (LITERT, REQ_ETPU, "litert 2.3.0 lacks the custom op 'edgetpu-custom-op'"),
    (TFLRT, {**REQ_FC12, "ops": {}, "custom_ops": ["MyOp"]}, "custom op 'MyOp'"),
    (TFLRT, None, None),                        # nothing known about the model: the probe decides
])
def test_plan_push_flags_what_the_runtime_lacks_before_any_upload(tmp_path, info, requires,
                                                                  problem):
    from dataclasses import replace

    board = Board(name="b", host="h", profile=load_profile("rpi-aarch64"))
    b = _bundle(tmp_path)
    b = Bundle(replace(b.manifest, requires=requires), b.model_path)
    plan = plan_push(board, BoardInfo.parse(info), None, b, True)
    if problem is None:
        assert plan.problems == []
    else:
        assert any(problem in p for p in plan.problems), plan.problems
