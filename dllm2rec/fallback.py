"""Optimisations that may fail on a user's machine, with the eager path behind them.

A CUDA-graph capture or a ``torch.compile`` can fail where the plain code runs (a driver, too
little memory for the graph's pool, an operation the compiler does not support). A long run must
not die for an optimisation: :func:`attempt` tries the fast path once and, if it raises, runs the
eager one after ONE log line that says what failed and why; :class:`Guarded` does the same for a
function that is called many times (e.g. a compiled training step, whose compilation happens at
its first call) and stays on the eager function for good after the first failure.

The eager path must compute the same result (that is what makes the fast path an optimisation);
tests force the failure on the CPU and compare. A :class:`~dllm2rec.io.UserError` is never
swallowed: it is the user's to fix, on either path.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from dllm2rec.io import UserError


def _print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def reason(what: str, exc: BaseException) -> str:
    """The log line: ``<what> failed (<type>: <first line of the message>); using the eager path``."""
    msg = str(exc).strip().splitlines()
    why = f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__
    return f"{what} failed ({why}); using the eager path"


def attempt(what: str, fast: Callable[[], Any], eager: Callable[[], Any],
            log: Callable[[str], None] = _print_err) -> Any:
    """``fast()``; if it raises (anything but a :class:`UserError`), ``eager()`` after one line
    :func:`reason` sent to ``log`` (stderr by default, which the workflow's job logs keep)."""
    try:
        return fast()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of an optimisation falls back
        log(reason(what, exc))
    return eager()


class Guarded:
    """A callable: ``fast(*args)`` until it first raises, then ``eager(*args)`` (that call and every
    later one) after one log line. ``fell_back`` is the reason, or None while the fast path holds."""

    def __init__(self, what: str, fast: Callable, eager: Callable, log: Callable[[str], None] = _print_err):
        self.what, self.fast, self.eager, self.log = what, fast, eager, log
        self.fell_back: str | None = None

    def __call__(self, *args, **kwargs):
        if self.fell_back is None:
            try:
                return self.fast(*args, **kwargs)
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001
                self.fell_back = reason(self.what, exc)
                self.log(self.fell_back)
        return self.eager(*args, **kwargs)
