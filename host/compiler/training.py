"""Training-time optimizations with tensorflow-model-optimization, each a short fine-tune.

- QAT: ``quantize_model`` wraps the model with fake-quant nodes; the converter then emits int8
  with the learned ranges.
- pruning: ``prune_low_magnitude`` at constant SPARSITY, fine-tuned, then ``strip_pruning``
  (zeros compress well: compare the gzip size).
- clustering: ``cluster_weights`` into K centroids (k-means++ init), fine-tuned, then
  ``strip_clustering`` (K distinct values per weight tensor also compress well).

TF-MOT wraps tf_keras (Keras 2) models only: a Keras 3 model is moved across first
(keras_bridge.py; a layer that can't move is named). The fine-tune uses the model's own loss when
it was saved compiled, else sparse categorical cross-entropy (on probabilities or logits,
whichever the outputs are).
"""

from __future__ import annotations

import numpy as np

from ...errors import CompileError, EnvironmentProblem
from .convert import import_tf
from .data import Labelled
from .modes import Training
from .source import SourceModel, _first_line


def _tfmot():
    import_tf()
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as exc:
        raise EnvironmentProblem("tensorflow-model-optimization is not installed",
                                 hint="pip install 'edgedeploy[host]'") from exc
    return tfmot


def _feed(src: SourceModel, data: Labelled):
    """The inputs as Keras takes them: one array, or a list in the model's input order."""
    xs = [data.x[t.name] for t in src.inputs]
    return xs[0] if len(xs) == 1 else xs


def _loss(model, x):
    import tf_keras as keras

    loss = getattr(model, "loss", None)
    if loss:
        return loss
    first = x[:8] if not isinstance(x, list) else [a[:8] for a in x]
    out = model.predict(first, verbose=0)
    probs = bool(np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not probs)


def _clone(model):
    import tf_keras as keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def keras_accuracy(model, data: Labelled, src: SourceModel) -> float:
    """Top-1 accuracy of a Keras model on labelled data (the fine-tune check without --eval)."""
    assert data.y is not None
    out = np.asarray(model.predict(_feed(src, data), verbose=0))
    return float(np.mean(np.argmax(out.reshape(len(out), -1), axis=1) == data.y))


def optimize(src: SourceModel, training: Training, data: Labelled,
             *, learning_rate: float = 1e-4, batch_size: int = 32):
    """The fine-tuned, stripped tf_keras model ready for the converter."""
    tfmot = _tfmot()
    import tf_keras as keras

    x, y = _feed(src, data), data.y
    original = src.tf_keras()
    base = _clone(original)
    loss = _loss(original, x)
    try:
        if training.qat:
            model = tfmot.quantization.keras.quantize_model(base)
            callbacks = []
        elif training.prune is not None:
            steps = max(1, int(np.ceil(len(data) / batch_size)))
            schedule = tfmot.sparsity.keras.ConstantSparsity(training.prune, begin_step=0,
                                                             frequency=steps)
            model = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule)
            callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
        elif training.cluster is not None:
            init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
            model = tfmot.clustering.keras.cluster_weights(
                base, number_of_clusters=training.cluster, cluster_centroids_init=init)
            callbacks = []
        else:
            return base
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                      metrics=["accuracy"])
        model.fit(x, y, epochs=training.epochs, batch_size=batch_size, verbose=0,
                  callbacks=callbacks, shuffle=True)
        if training.prune is not None:
            model = tfmot.sparsity.keras.strip_pruning(model)
        elif training.cluster is not None:
            model = tfmot.clustering.keras.strip_clustering(model)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CompileError(f"{src.path}: {training.tag} fine-tuning failed: {_first_line(exc)}",
                           hint="tensorflow-model-optimization supports Sequential and "
                                "functional Keras 2 models with built-in layers") from exc
    return model
