"""Host compiler: Keras / SavedModel → TFLite in every mode, Edge TPU compile and preflight.

The only package of edgedeploy that imports TensorFlow, and only inside the functions that
convert or train (``convert.py``, ``training.py``): ``inspect`` and the preflight need none.
"""

from .modes import MODES, Training
from .pipeline import CompileOptions, CompileReport, ModeResult, compile_model

__all__ = ["MODES", "Training", "CompileOptions", "CompileReport", "ModeResult", "compile_model"]
