"""edgedeploy: compile TensorFlow models to TFLite, push them to boards, prove they work there.

The import packages map to the repository's top-level folders:
``edgedeploy.host`` (host/), ``edgedeploy.device`` (device/), ``edgedeploy.targets`` (targets/).
"""

__version__ = "0.1.0"
