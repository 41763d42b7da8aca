"""The one exception tree of edgedeploy. Host and device both raise from it.

::

    EdgeDeployError                 exit 1   root; ``str(e)`` is the one line a user reads
    ├── InputError                  exit 2   bad file or argument: names the file and what was expected
    ├── CompileError                exit 1   the converter or a training step failed
    │   └── QuantizationError       exit 1   an op cannot be made integer-only (names the ops)
    └── EnvironmentProblem          exit 3   something the machine lacks (a package, a tool)

Errors from TensorFlow, the TFLite runtime and the file system are translated into these at the
boundary, so the CLI maps any of them to an exit code without knowing where they came from.
This module is stdlib-only: it ships to boards inside the agent.
"""

from __future__ import annotations


class EdgeDeployError(Exception):
    """Root of every error edgedeploy raises on purpose."""

    exit_code = 1
    code = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self)}


class InputError(EdgeDeployError):
    """A file or argument the user gave is missing, corrupt or of the wrong shape."""

    exit_code = 2
    code = "bad_input"


class CompileError(EdgeDeployError):
    """The TFLite converter, a training step or the Edge TPU compiler failed."""

    code = "compile_failed"


class QuantizationError(CompileError):
    """Full-integer quantization was asked for but some ops stay float."""

    code = "not_integer_only"

    def __init__(self, message: str, ops: list[str], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.ops = ops


class EnvironmentProblem(EdgeDeployError):
    """This machine lacks something the command needs (a package, a tool, a permission)."""

    exit_code = 3
    code = "environment"
