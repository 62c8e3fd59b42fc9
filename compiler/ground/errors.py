"""Errors that map to the exit codes of the design contract.

Library code raises these; only the CLI turns them into a one-line message and
an exit code, so no user ever sees a traceback for a problem they can fix.
"""

from __future__ import annotations


class EdgecError(Exception):
    """Base class: `exit_code` is what the CLI returns, the message is one line."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class UsageError(EdgecError):
    """The command line asks for something that does not make sense (exit 2)."""

    exit_code = 2


class GateFailed(EdgecError):
    """A budget (size, latency, accuracy) was not met (exit 3)."""

    exit_code = 3


class InvalidInput(EdgecError):
    """The model or data is corrupt, unsafe or of the wrong shape (exit 4)."""

    exit_code = 4


class TargetUnavailable(EdgecError):
    """The target cannot run here: no GPU, TensorRT not installed (exit 5)."""

    exit_code = 5


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
