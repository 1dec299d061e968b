"""dllm2rec.fallback: the fast path, else the eager one with one log line."""
from __future__ import annotations

import pytest

from dllm2rec import fallback
from dllm2rec.io import UserError


def test_attempt_returns_the_fast_result_or_the_eager_one_with_one_line():
    lines = []
    assert fallback.attempt("x", lambda: 1, lambda: 2, log=lines.append) == 1 and lines == []

    def broken():
        raise NotImplementedError("op aten::foo has no kernel")

    assert fallback.attempt("compile of y", broken, lambda: 2, log=lines.append) == 2
    assert lines == ["compile of y failed (NotImplementedError: op aten::foo has no kernel); using the eager path"]


def test_a_user_error_is_not_swallowed():
    def bad():
        raise UserError("fix your config")

    with pytest.raises(UserError, match="fix your config"):
        fallback.attempt("x", bad, lambda: 2, log=print)


def test_guarded_falls_back_once_and_for_good():
    lines, fast_calls = [], []

    def fast(a, b=0):
        fast_calls.append(a)
        if a >= 2:
            raise RuntimeError("")
        return ("fast", a + b)

    f = fallback.Guarded("step", fast, lambda a, b=0: ("eager", a + b), log=lines.append)
    assert f(1, b=1) == ("fast", 2) and f.fell_back is None
    assert f(2) == ("eager", 2)
    assert f(1) == ("eager", 1)  # the fast path is not tried again
    assert fast_calls == [1, 2] and lines == ["step failed (RuntimeError); using the eager path"] == [f.fell_back]
