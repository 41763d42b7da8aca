"""Data matched to a model's inputs and outputs by name; error figures; random bench inputs;
the tflite import's mode rules; the Keras 3 → Keras 2 config translation. Pure functions."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgedeploy.device.bench import random_array
from edgedeploy.device.evaluate import Port, error_stats, match, pick_output
from edgedeploy.errors import InputError


def _ports(*names: str) -> list[Port]:
    return [Port(k, f"serving_default_{k}:0", {"index": i, "shape": [1, 2], "dtype": "float32"})
            for i, k in enumerate(names)]


@pytest.mark.parametrize("keys,names,single,want", [
    (["x", "y"], ["image"], "x", {"image": "x"}),                 # one input: x
    (["image", "y"], ["image"], "x", {"image": "image"}),         # or its name
    (["pixels", "y"], ["image"], "x", {"image": "pixels"}),       # or the only array
    (["a", "b", "y"], ["b", "a"], "x", {"a": "a", "b": "b"}),      # by name, whatever order
    (["serving_default_a:0", "b"], ["a", "b"], "x",
     {"a": "serving_default_a:0", "b": "b"}),                     # the tensor name works too
    (["outputs"], ["probs"], "outputs", {"probs": "outputs"}),
    (["x", "y", "outputs"], ["image"], "x", {"image": "x"}),       # a gate file
])
def test_match(keys, names, single, want):
    assert match(keys, _ports(*names), "d.npz", single=single, what="input") == want


@pytest.mark.parametrize("keys,names,needle", [
    (["a", "y"], ["a", "b"], "no array for input 'b'"),
    (["p", "q"], ["image"], "no array for input 'image'"),
    ([], ["image"], "it has none"),
])
def test_match_refuses_naming_file_and_inputs(keys, names, needle):
    with pytest.raises(InputError) as e:
        match(keys, _ports(*names), "data.npz", single="x", what="input")
    assert needle in str(e.value) and "data.npz" in str(e.value)


def test_pick_output():
    outs = _ports("cls", "box")
    assert pick_output(outs, "box", labels=True, source="d").key == "box"
    assert pick_output(outs, None, labels=False, source="d") is None
    assert pick_output(outs[:1], None, labels=True, source="d").key == "cls"
    with pytest.raises(InputError, match="--output NAME"):
        pick_output(outs, None, labels=True, source="d")
    with pytest.raises(InputError, match="outputs are cls, box"):
        pick_output(outs, "nope", labels=False, source="d")


def test_error_stats():
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], np.float32)
    same = error_stats("o", ref.copy(), ref)
    assert same.max_abs_error == 0 and same.mean_abs_error == 0 and same.cosine == pytest.approx(1)
    out = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 0.0]], np.float32)  # first orthogonal
    e = error_stats("o", out, ref)
    assert e.max_abs_error == 1.0 and e.mean_abs_error == pytest.approx(2 / 6)
    assert e.cosine == pytest.approx((0 + 1 + 1) / 3)
    with pytest.raises(InputError, match="output 'o'"):
        error_stats("o", out[:2], ref)


@pytest.mark.parametrize("dtype,quantized,lo,hi", [
    ("float32", False, 0.0, 1.0), ("float16", False, 0.0, 1.0),
    ("int8", True, -128, 127), ("uint8", True, 0, 255), ("int16", True, -32768, 32767),
    ("int32", False, 0, 1), ("int64", False, 0, 1),
    ("int64", True, np.iinfo(np.int64).min, np.iinfo(np.int64).max),   # no overflow
])
def test_random_array(dtype, quantized, lo, hi):
    a = random_array(dtype, [1, 64, 8], quantized=quantized, rng=np.random.default_rng(0))
    assert a.dtype == np.dtype(dtype) and a.shape == (1, 64, 8)
    assert a.min() >= lo and a.max() <= hi


def test_random_array_bool():
    a = random_array("bool", [4], quantized=False, rng=np.random.default_rng(0))
    assert a.dtype == np.bool_


# -- the Keras 3 → Keras 2 config translation ----------------------------------------------------

def _accepts(cls):
    known = {"Dense": {"units", "activation", "use_bias", "kernel_initializer", "name",
                       "trainable", "dtype", "bias_initializer"},
             "InputLayer": {"batch_input_shape", "dtype", "sparse", "ragged", "name"},
             "Add": {"name", "trainable", "dtype"}}
    from edgedeploy.host.compiler.keras_bridge import CannotMove
    if cls not in known:
        raise CannotMove(cls, f"tf_keras has no layer class {cls}")
    return known[cls]


def _kt(name):
    return {"class_name": "__keras_tensor__", "config": {"shape": [None, 4], "dtype": "float32",
                                                          "keras_history": [name, 0, 0]}}


K3_DENSE = {"module": "keras.layers", "class_name": "Dense", "name": "d", "registered_name": None,
            "config": {"name": "d", "trainable": True, "units": 4, "activation": "relu",
                       "use_bias": True, "quantization_config": None, "lora_rank": None,
                       "dtype": {"module": "keras", "class_name": "DTypePolicy",
                                 "config": {"name": "float32"}, "registered_name": None},
                       "kernel_initializer": {"module": "keras.initializers",
                                              "class_name": "GlorotUniform",
                                              "config": {"seed": None, "input_axes": None},
                                              "registered_name": None}},
            "inbound_nodes": [{"args": [_kt("in")], "kwargs": {}}]}


def test_layer_config_translation():
    from edgedeploy.host.compiler.keras_bridge import layer_config

    got = layer_config(K3_DENSE, _accepts)
    assert got["class_name"] == "Dense" and got["name"] == "d"
    cfg = got["config"]
    assert cfg["dtype"] == "float32"
    assert cfg["kernel_initializer"] == {"class_name": "GlorotUniform", "config": {"seed": None}}
    assert "quantization_config" not in cfg and "lora_rank" not in cfg
    assert got["inbound_nodes"] == [[["in", 0, 0, {}]]]


def test_input_layer_and_merge_nodes():
    from edgedeploy.host.compiler.keras_bridge import config_to_keras2

    cfg = {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "in", "config": {"batch_shape": [None, 4],
                                                               "dtype": "float32", "name": "in",
                                                               "optional": False},
         "inbound_nodes": []},
        {"class_name": "Add", "name": "add", "config": {"name": "add"},
         "inbound_nodes": [{"args": [[_kt("in"), _kt("in")]], "kwargs": {"mask": None}}]}],
        "input_layers": [["in", 0, 0]], "output_layers": ["add", 0, 0]}
    got = config_to_keras2(cfg, _accepts, sequential=False)
    assert got["layers"][0]["config"] == {"batch_input_shape": [None, 4], "dtype": "float32",
                                          "name": "in"}
    assert got["layers"][1]["inbound_nodes"] == [[["in", 0, 0, {}], ["in", 0, 0, {}]]]
    assert got["output_layers"] == [["add", 0, 0]]


@pytest.mark.parametrize("entry,needle", [
    ({**K3_DENSE, "config": {**K3_DENSE["config"], "lora_rank": 4}}, "lora_rank=4"),
    ({"class_name": "Sin", "name": "sin", "config": {}}, "no layer class Sin"),
    ({"class_name": "Sequential", "name": "inner", "config": {"layers": []}}, "nested"),
    ({**K3_DENSE, "inbound_nodes": [{"args": [_kt("in"), 3.0], "kwargs": {}}]}, "non-tensor"),
])
def test_layers_that_cannot_move_are_named(entry, needle):
    from edgedeploy.host.compiler.keras_bridge import CannotMove, layer_config

    with pytest.raises(CannotMove) as e:
        layer_config(entry, _accepts)
    assert needle in str(e.value) and repr(e.value.layer) in str(e.value)


def test_eval_line_shows_errors_per_output_and_the_users_file():
    from edgedeploy.device.protocol import Eval
    from edgedeploy.host.cli.render import eval_line

    r = {"model": {"name": "lm", "version": "abc", "mode": "float16"}, "samples": 40,
         "data": "frames.npz", "reference": "host.npz", "outputs": ["cls", "landmarks"],
         "output": None, "top1": None, "agreement": None,
         "errors": [{"output": "cls", "max_abs_error": 0.00012, "mean_abs_error": 1e-5,
                     "cosine": 0.999999},
                    {"output": "landmarks", "max_abs_error": 0.0031, "mean_abs_error": 4e-4,
                     "cosine": 0.99998}]}
    line = eval_line("b0", Eval.parse(r))
    assert line.startswith("b0: lm abc (float16) on 40 samples of frames.npz vs host.npz: ")
    assert "cls: max err 0.00012, mean 1e-05, cosine 0.999999" in line
    assert "landmarks: max err 0.0031" in line and "top-1" not in line
    r.update(top1=0.95, output="cls", errors=None, reference=None,
             agreement={"top1_agreement": 1.0, "samples": 40, "mean_abs_error": 0.0,
                        "max_abs_error": 0.0})
    line = eval_line("b0", Eval.parse(r))
    # "95.00%" here, "95.00 %" once main's fleet-wide verbs format percentages: either reads
    assert re.search(r"top-1 \(cls\) 95\.00 ?%", line) and re.search(r"agreement 100\.00 ?%", line)
