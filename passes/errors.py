"""What a pass raises when it cannot do what it was asked.

Passes know nothing of exit codes or command lines: they say *what* is wrong
(the model or its data, or the options they were given) and the stage that
called them turns that into the CLI's exit code (`compiler/stages`).
"""

from __future__ import annotations


class PassError(Exception):
    """A pass refused its input; the message is one line that says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class PassInputError(PassError):
    """The model or the data given to the pass is unusable (corrupt, wrong shape, empty)."""


class PassOptionError(PassError, ValueError):
    """The options given to the pass contradict each other or name unknown things."""
