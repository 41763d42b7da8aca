"""The one exception tree of edgedeploy. Host and device both raise from it.

::

    EdgeDeployError                 exit 1   root; ``str(e)`` is the one line a user reads
    ├── InputError                  exit 2   bad file or argument: names the file and what was expected
    │   └── ModelLoadFailed         exit 2   the runtime cannot load a .tflite (corrupt, missing op)
    ├── CompileError                exit 1   the converter or a training step failed
    │   └── QuantizationError       exit 1   an op cannot be made integer-only (names the ops)
    ├── EnvironmentProblem          exit 3   something the machine lacks (a package, a tool)
    │   └── DelegateMissing         exit 3   a delegate (Edge TPU) asked for does not load
    ├── StoreError                  exit 1   the board's model store refused or failed an operation
    │   ├── NotFound                exit 2   no such model / version in the store
    │   ├── Conflict                exit 4   a version that exists with other content; the active one;
    │   │                                    the store locked by another process (names its PID)
    │   ├── Expired                 exit 1   the host gave up on the command (deadline, hung up)
    │   │                                    before the agent could act: nothing was done
    │   ├── HashMismatch            exit 1   a file's sha256 differs from its manifest
    │   ├── DeltaRefused            exit 1   a delta cannot rebuild the model here (corrupt, a base
    │   │                                    the board lacks, a result whose sha256 differs)
    │   ├── UnsafeBundle            exit 2   absolute path, "..", a link or special file in a bundle
    │   ├── SignatureRefused        exit 1   unsigned, badly signed or unknown signer (board has signers)
    │   └── DowngradeRefused        exit 1   a release lower than the board has activated
    ├── RunFailure                  exit 1   the model loaded but could not be measured as asked
    │   └── SilentCpuFallback       exit 1   an Edge TPU model whose delegate took no op
    ├── JournalError                exit 1   the rollout journal refused a write or a file
    ├── BoardError                  exit 1   something on or on the way to a board (names it)
    │   ├── Unreachable             exit 5   connect refused / timed out / link cut
    │   ├── HostKeyRefused          exit 6   unknown or changed SSH host key
    │   ├── AuthFailed              exit 6   the board refused our key
    │   ├── RemoteFailure           exit 1   a command on the board failed (command, code, stderr)
    │   ├── Incompatible            exit 1   the model or agent does not fit the board
    │   └── AgentError              exit *   the agent answered with an error (its own code)
    └── ObjectStoreError            exit 1   an S3 request failed (names bucket, key, HTTP status)
        ├── ObjectStoreUnreachable  exit 5   connect refused / timed out / HTTP 5xx or 429
        └── ObjectMissing           exit 2   no such object or bucket

Errors from TensorFlow, the TFLite runtime and the file system are translated into these at the
boundary, so the CLI maps any of them to an exit code without knowing where they came from.
This module is stdlib-only: it ships to boards inside the agent.
"""

from __future__ import annotations


class EdgeDeployError(Exception):
    """Root of every error edgedeploy raises on purpose."""

    exit_code = 1
    code = "error"
    board: str | None = None  # the board it happened on, when one did

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


class ModelLoadFailed(InputError):
    """The TFLite runtime cannot load a model: truncated, not a flatbuffer, or an op it lacks."""

    code = "model_load_failed"


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


class DelegateMissing(EnvironmentProblem):
    """A delegate asked for (Edge TPU, XNNPACK) does not load on this machine."""

    code = "delegate_missing"


class StoreError(EdgeDeployError):
    """The model store on a board refused or failed an operation; the store is unchanged."""

    code = "store_error"


class NotFound(StoreError):
    exit_code = 2
    code = "not_found"


class Conflict(StoreError):
    exit_code = 4
    code = "conflict"


class Expired(StoreError):
    """A command the host gave up on (its deadline passed, or its client hung up) before the
    agent could act on it: dropped, nothing was done."""

    code = "expired"


class HashMismatch(StoreError):
    code = "hash_mismatch"


class DeltaRefused(StoreError):
    """A delta was refused on the board (damaged, built against a version the board doesn't
    hold, or its result's sha256 differs): nothing was installed; send the full file."""

    code = "delta_refused"


class UnsafeBundle(StoreError):
    exit_code = 2
    code = "unsafe_bundle"


class SignatureRefused(StoreError):
    """A board with allowed signers refused a bundle or desired state: unsigned, a signature
    that does not verify, or a signer it does not trust. Nothing changed."""

    code = "signature_refused"


class DowngradeRefused(StoreError):
    """A release number lower than the highest this board has activated for the model."""

    code = "downgrade_refused"


class RunFailure(EdgeDeployError):
    """A model loaded but the measurement asked for cannot be made truthfully."""

    code = "run_failed"


class SilentCpuFallback(RunFailure):
    """An Edge TPU model ran with no op on the Edge TPU: a timing would be a lie."""

    code = "silent_cpu_fallback"


class JournalError(EdgeDeployError):
    """The rollout journal refused: a board state change its table forbids, or a file written
    by a newer edgedeploy."""

    code = "journal_error"


class BoardError(EdgeDeployError):
    """Something went wrong on a board or on the way to it; the message names the board."""

    code = "board_error"

    def __init__(self, board: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{board}: {message}", hint=hint)
        self.board: str = board


class Unreachable(BoardError):
    exit_code = 5
    code = "unreachable"


class HostKeyRefused(BoardError):
    exit_code = 6
    code = "host_key_refused"


class AuthFailed(BoardError):
    exit_code = 6
    code = "auth_failed"


class RemoteFailure(BoardError):
    """A command on the board exited non-zero; carries the command, exit code and stderr."""

    code = "remote_failed"

    def __init__(self, board: str, command: str, exit_code: int | None, stderr: str,
                 *, hint: str | None = None) -> None:
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        super().__init__(board, f"`{command}` exited {exit_code}" + (f": {tail}" if tail else ""),
                         hint=hint)
        self.command, self.remote_exit, self.stderr = command, exit_code, stderr


class Incompatible(BoardError):
    code = "incompatible"


class AgentError(BoardError):
    """The agent on a board answered with a JSON error; keeps its code and exit status."""

    def __init__(self, board: str, code: str, message: str, exit_code: int | None) -> None:
        super().__init__(board, message)
        self.code = code
        self.exit_code = exit_code if exit_code and exit_code > 0 else 1


class ObjectStoreError(EdgeDeployError):
    """An S3 request failed; the message names the bucket, the key and the HTTP status."""

    code = "object_store"


class ObjectStoreUnreachable(ObjectStoreError):
    exit_code = 5
    code = "object_store_unreachable"


class ObjectMissing(ObjectStoreError):
    exit_code = 2
    code = "object_missing"


def _all_subclasses(cls: type[EdgeDeployError]) -> list[type[EdgeDeployError]]:
    out = [cls]
    sub: type[EdgeDeployError]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def from_message(code: str, message: str, *, board: str | None = None,
                 exit_code: int | None = None) -> EdgeDeployError:
    """The error a JSON ``{"code", "message"}`` (from the agent) stands for, same class and exit
    code as where it was raised, its message led by BOARD's name when given (and ``.board``
    set). A code with no class of its own (``not_here``) is an AgentError keeping EXIT_CODE.
    QuantizationError comes back without its op list."""
    skip = (QuantizationError, RemoteFailure, AgentError)
    for cls in _all_subclasses(EdgeDeployError):
        if cls.code != code or cls in skip:
            continue
        if issubclass(cls, BoardError):
            return cls(board or "board", message)
        err = cls(f"{board}: {message}" if board else message)
        err.board = board
        return err
    if board is not None:
        return AgentError(board, code, message, exit_code or 1)
    return EdgeDeployError(message)
