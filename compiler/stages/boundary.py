"""The stage boundary: where a pass's own exceptions become the CLI's exit codes.

Passes raise `passes.errors.PassInputError` (the model or data is unusable) or
`PassOptionError` (the options contradict each other); a stage runs passes
inside `pass_errors()`, which turns them into `InvalidInput` (exit 4) and
`UsageError` (exit 2) with the same one-line message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from compiler.ground.errors import InvalidInput, UsageError
from passes.errors import PassInputError, PassOptionError


@contextmanager
def pass_errors() -> Iterator[None]:
    """Re-raise pass errors as the contract's exit-code errors (message unchanged)."""
    try:
        yield
    except PassOptionError as e:
        raise UsageError(str(e)) from None
    except PassInputError as e:
        raise InvalidInput(str(e)) from None
