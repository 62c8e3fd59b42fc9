"""Ctrl-C that cannot be lost.

Python turns SIGINT into KeyboardInterrupt at the next bytecode, but native
code that calls back into Python (torch's tracer, onnxruntime callbacks) can
swallow it, and the run then finishes and publishes as if nothing happened
(seen once in CI: exit 0 after a SIGINT). `guard()` installs a handler that
also *records* the signal; the pipeline calls `check()` before it publishes
anything, and the CLI checks again on the way out, so an interrupted run always
ends with exit 130 and no output.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_INTERRUPTED = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _INTERRUPTED.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Record SIGINT for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _INTERRUPTED.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupted() -> bool:
    return _INTERRUPTED.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived, even one that was swallowed."""
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt


def settle() -> None:
    """After a real Ctrl-C, ignore further SIGINTs while the CLI says so and exits.

    Native thread pools can hand the same Ctrl-C back to Python a second time; raised
    after the CLI printed its line, that KeyboardInterrupt went unhandled and Python
    exited by the signal (status -2) instead of 130. Only a recorded signal does this,
    so in-process callers that raise KeyboardInterrupt themselves keep their handler.
    """
    if _INTERRUPTED.is_set() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def exit_now(code: int) -> None:
    """End the process with `code` after a real Ctrl-C, skipping the interpreter's exit.

    When the KeyboardInterrupt was raised inside Python code that a native library ran
    through `PyRun_*` (pybind11's eval does), CPython records it as unhandled and, at
    exit, kills itself with SIGINT, whatever `sys.exit` asked: the CLI printed its line
    and the shell saw status -2 instead of 130 (the flaky SIGINT test). Every output is
    already cleaned up by then; the streams are flushed here.
    """
    import os
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
