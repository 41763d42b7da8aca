"""Board side of edgedeploy: stdlib + numpy + one TFLite runtime. Never TensorFlow.

Nothing here imports from ``edgedeploy.host``; the runtime is imported only in ``runtime.py``,
and only when an interpreter is made.
"""

__all__ = ["runtime", "evaluate", "bench"]
