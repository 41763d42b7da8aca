"""Regenerate tests/support/tiny/*.tflite (needs TensorFlow; the files are committed):

    python -m tests.support.make_tiny

Two float32 models of one Dense layer (4 inputs → 3 classes, no bias): ``good`` is the identity
on the first three inputs (top-1 = argmax(x[:3])), ``bad`` its negative (top-1 = argmin). With
gate data whose label is argmax(x[:3]), good scores 1.0 and bad close to 0: a gate that must
pass and one that must fail, measured by the real runtime in milliseconds."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent / "tiny"


def main() -> None:
    import numpy as np
    import tensorflow as tf

    HERE.mkdir(exist_ok=True)
    for name, sign in (("good", 1.0), ("bad", -1.0)):
        w = np.zeros((4, 3), np.float32)
        w[0, 0] = w[1, 1] = w[2, 2] = sign

        weights = tf.Variable(w)

        class Tiny(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
            def __call__(self, x):
                return tf.nn.softmax(tf.matmul(x, weights))

        m = Tiny()
        conv = tf.lite.TFLiteConverter.from_concrete_functions(
            [m.__call__.get_concrete_function()], m)
        (HERE / f"{name}.tflite").write_bytes(conv.convert())
    print("wrote", sorted(p.name for p in HERE.iterdir()))


if __name__ == "__main__":
    main()
