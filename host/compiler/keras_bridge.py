"""Move a Keras 3 model to Keras 2 (tf_keras) — config, then weights — for TF-MOT.

tensorflow-model-optimization (QAT, pruning, clustering) wraps only tf_keras models, while TF
2.21's default ``tf.keras`` is Keras 3. ``to_tf_keras(model)`` rebuilds a Keras 3 Sequential or
functional model in tf_keras from its config and copies the weights layer by layer; a layer that
can't move (no tf_keras class of that name, a Keras 3-only setting, weights of another shape)
raises InputError naming it. The rebuilt model must give the same outputs as the original on a
random batch (checked), so a silent difference can't slip through.

The config translation is pure (``config_to_keras2``) and tested as a table:

- nested objects ``{"module", "class_name", "config", "registered_name"}`` → ``{"class_name",
  "config"}``; a ``DTypePolicy`` → its name;
- ``InputLayer``: ``batch_shape`` → ``batch_input_shape``; ``optional: false`` dropped;
- functional ``inbound_nodes``: ``[{"args": [keras tensors …], "kwargs": {…}}]`` →
  ``[[[layer, node, tensor, kwargs], …]]``;
- settings Keras 2 doesn't have are dropped when they hold their off value (``None``, ``False``:
  e.g. ``quantization_config``, ``lora_rank``) and refused otherwise;
- a model nested in the model is refused (tf_keras can loop forever rebuilding one, and TF-MOT's
  ``quantize_model`` refuses them too): flatten it first.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from ...errors import InputError

_OFF = (None, False)
# Keras 3 initializer / regularizer / constraint settings that have no Keras 2 spelling and no
# effect on a model whose weights are copied over.
_IGNORED_NESTED = {"input_axes", "output_axes"}


class CannotMove(Exception):
    """A layer that can't be rebuilt in tf_keras: (layer name, why)."""

    def __init__(self, layer: str, why: str) -> None:
        super().__init__(f"layer {layer!r}: {why}")
        self.layer, self.why = layer, why


def _is_object(d: Any) -> bool:
    return isinstance(d, dict) and "class_name" in d and "config" in d


def _nested(obj: Any) -> Any:
    """Keras 3 serialized objects (initializers, regularizers, …) in Keras 2 spelling."""
    if isinstance(obj, list):
        return [_nested(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if _is_object(obj):
        if obj["class_name"] in ("DTypePolicy", "FloatDTypePolicy") and \
                isinstance(obj["config"], dict):
            return obj["config"].get("name", "float32")
        cfg = obj["config"]
        if isinstance(cfg, dict):
            cfg = {k: _nested(v) for k, v in cfg.items()
                   if not (k in _IGNORED_NESTED and v in _OFF)}
        return {"class_name": obj["class_name"], "config": cfg}
    return {k: _nested(v) for k, v in obj.items()}


def _tensor_history(x: Any, out: list) -> None:
    if isinstance(x, dict) and x.get("class_name") == "__keras_tensor__":
        out.append(list(x["config"]["keras_history"]))
    elif isinstance(x, (list, tuple)):
        for y in x:
            _tensor_history(y, out)
    else:
        raise ValueError(f"a non-tensor call argument {x!r}")


def _inbound(layer: str, nodes: list) -> list:
    out = []
    for node in nodes:
        if isinstance(node, list):  # already Keras 2 spelling
            out.append(node)
            continue
        kwargs = {k: v for k, v in (node.get("kwargs") or {}).items() if v is not None}
        if any(isinstance(v, dict) and v.get("class_name") == "__keras_tensor__"
               for v in kwargs.values()):
            raise CannotMove(layer, "it takes a tensor as a keyword argument")
        hist: list = []
        try:
            _tensor_history(node.get("args", []), hist)
        except ValueError as exc:
            raise CannotMove(layer, f"it is called with {exc}") from None
        out.append([[h[0], h[1], h[2], dict(kwargs)] for h in hist])
    return out


def layer_config(entry: dict, accepts) -> dict:
    """One layer entry of a Keras 3 model config in Keras 2 spelling. ACCEPTS(class_name) →
    (set of keyword names the tf_keras class takes, or None when it takes any); CannotMove when
    the class is unknown or a setting can't be expressed."""
    cls = entry["class_name"]
    name = entry.get("name") or entry.get("config", {}).get("name") or cls
    if cls in ("Sequential", "Functional", "Model"):
        # tf_keras loops forever rebuilding some nested models from config, and TF-MOT's
        # quantize_model refuses a model inside a model anyway
        raise CannotMove(name, "a model nested inside the model; flatten it into one "
                               "Sequential or functional model")
    else:
        allowed = accepts(cls)
        cfg = _nested(dict(entry.get("config") or {}))
        if cls == "InputLayer":
            if "batch_shape" in cfg:
                cfg["batch_input_shape"] = cfg.pop("batch_shape")
            if cfg.get("optional") in _OFF:
                cfg.pop("optional", None)
        if allowed is not None:
            for key in [k for k in cfg if k not in allowed]:
                if cfg[key] in _OFF:
                    del cfg[key]
                else:
                    raise CannotMove(name, f"{cls} setting {key}={cfg[key]!r} has no Keras 2 "
                                           f"equivalent")
        new = {"class_name": cls, "config": cfg, "name": name}
    if "inbound_nodes" in entry:
        new["inbound_nodes"] = _inbound(name, entry["inbound_nodes"])
    return new


def _io_layers(v: Any) -> list:
    if isinstance(v, list) and len(v) == 3 and isinstance(v[0], str):
        return [v]
    return [list(x) for x in v]


def config_to_keras2(cfg: dict, accepts, *, sequential: bool) -> dict:
    """A Keras 3 Sequential/functional ``get_config()`` in the spelling tf_keras reads."""
    out: dict = {"name": cfg.get("name", "model"),
                 "layers": [layer_config(e, accepts) for e in cfg.get("layers", [])]}
    if not sequential:
        out["input_layers"] = _io_layers(cfg["input_layers"])
        out["output_layers"] = _io_layers(cfg["output_layers"])
    return out


def _accepts_factory(tf_keras: Any) -> Callable[[str], "set[str] | None"]:
    base = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape",
            "batch_input_shape", "batch_size", "weights", "activity_regularizer", "autocast",
            "implementation"}
    cache: dict[str, set[str] | None] = {}

    def accepts(cls: str):
        if cls in cache:
            return cache[cls]
        klass = getattr(tf_keras.layers, cls, None)
        if klass is None or not isinstance(klass, type):
            raise CannotMove(cls, f"tf_keras has no layer class {cls}")
        names: set[str] = set()
        for k in klass.__mro__:  # subclasses pass **kwargs on to their bases
            init = k.__dict__.get("__init__")
            if init is not None:
                names |= {p for p in inspect.signature(init).parameters
                          if p not in ("self", "args", "kwargs")}
        cache[cls] = names | base
        return cache[cls]
    return accepts


def _pairs(src, dst):
    """(name, keras 3 layer, tf_keras layer), matched by name."""
    by_name = {layer.name: layer for layer in src.layers}
    for layer in dst.layers:
        other = by_name.get(layer.name)
        if other is None:
            raise CannotMove(layer.name, "no layer of that name in the Keras 3 model")
        yield layer.name, other, layer


def to_tf_keras(model, *, check_samples: int = 4, path: str = "model"):
    """The Keras 3 MODEL rebuilt in tf_keras with its weights; InputError naming the layer that
    can't move."""
    import tf_keras

    cls = type(model).__name__
    sequential = cls == "Sequential"
    if cls not in ("Sequential", "Functional") and not getattr(model, "_is_graph_network", True):
        raise InputError(f"{path}: a subclassed Keras 3 model ({cls}) has no config to move to "
                         f"tf_keras, which training-time optimization needs",
                         hint="build it as a Sequential or functional model, or compile "
                              "without --qat/--prune/--cluster")
    try:
        cfg = config_to_keras2(model.get_config(), _accepts_factory(tf_keras),
                               sequential=sequential)
    except CannotMove as exc:
        raise InputError(f"{path}: {exc} — training-time optimization needs the model in "
                         f"tf_keras (Keras 2)", hint="replace that layer, or compile without "
                                                     "--qat/--prune/--cluster") from None
    try:
        if sequential:
            new = tf_keras.Sequential.from_config(cfg)
        else:
            new = tf_keras.Model.from_config(cfg)
    except Exception as exc:  # tf_keras names the layer it failed on in its message
        raise InputError(f"{path}: tf_keras cannot rebuild this Keras 3 model: "
                         f"{str(exc).splitlines()[0][:300]}",
                         hint="training-time optimization needs Keras 2 layers") from exc
    try:
        for label, k3, k2 in _pairs(model, new):
            w3 = k3.get_weights()
            shapes2 = [tuple(w.shape) for w in k2.get_weights()]
            if [tuple(w.shape) for w in w3] != shapes2:
                raise CannotMove(label, f"weights of shapes {[tuple(w.shape) for w in w3]} "
                                        f"don't fit tf_keras' {shapes2}")
            k2.set_weights(w3)
    except CannotMove as exc:
        raise InputError(f"{path}: {exc}", hint="training-time optimization needs the model in "
                                                "tf_keras (Keras 2)") from None
    _check_same(model, new, path, check_samples)
    return new


def _check_same(k3, k2, path: str, n: int) -> None:
    rng = np.random.default_rng(0)
    xs = []
    for t in k3.inputs:
        shape = [n] + [int(d) if d is not None else 1 for d in t.shape[1:]]
        dt = np.dtype(str(t.dtype).replace("tf.", ""))
        xs.append(rng.random(shape).astype(dt) if dt.kind == "f" else np.zeros(shape, dt))
    feed = xs if len(xs) > 1 else xs[0]
    a = k3.predict(feed, verbose=0)
    b = k2.predict(feed, verbose=0)
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    for i, (u, v) in enumerate(zip(a, b)):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        tol = 1e-4 * max(1.0, float(np.abs(u).max()))
        if u.shape != v.shape or float(np.abs(u - v).max()) > tol:
            raise InputError(f"{path}: rebuilt in tf_keras, output {i} differs from the Keras 3 "
                             f"model (max abs difference "
                             f"{float(np.abs(u - v).max()) if u.shape == v.shape else 'shape'})",
                             hint="a layer behaves differently in Keras 2; compile without "
                                  "--qat/--prune/--cluster")
