"""A Ctrl-C that library code swallows is still honoured (compiler/interrupt.py)."""

from __future__ import annotations

import os
import signal

import pytest

from compiler import interrupt


def test_a_swallowed_sigint_is_still_seen() -> None:
    before = signal.getsignal(signal.SIGINT)
    with interrupt.guard():
        assert not interrupt.interrupted()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # give the handler a bytecode boundary to run at
                pass
        except KeyboardInterrupt:
            pass  # what a careless library does
        assert interrupt.interrupted()
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
    assert signal.getsignal(signal.SIGINT) is before


def test_guard_starts_clean() -> None:
    with interrupt.guard():
        interrupt.check()  # nothing pending from an earlier run
        assert not interrupt.interrupted()


_ERROR_AFTER_SIGINT = """
import os, signal
from compiler.cli import handle_errors

@handle_errors
def run():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # a bytecode boundary for the handler
            pass
    except KeyboardInterrupt:
        pass  # cut an import short; importing again then fails:
    raise ImportError('generic_type: type "GraphOptimizationLevel" is already registered!')

run()
"""


def test_an_error_raised_after_a_sigint_ends_as_the_interrupt() -> None:
    """Seen in CI: a Ctrl-C that cut onnxruntime's import short made the next import fail
    with ImportError, reported as an internal error (exit 1) instead of exit 130."""
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-c", _ERROR_AFTER_SIGINT],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "edgec: error: interrupted; no partial output was left behind"
