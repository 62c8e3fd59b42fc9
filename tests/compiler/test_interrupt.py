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
