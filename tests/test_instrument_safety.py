"""The instrumentations' safety net: a bug in flowtracker's own code is counted, logged once, swallowed."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from flowtracker.instrumentation import _safety


class TestGuard:
    """``guard(library)`` around an instrumentation's bookkeeping."""

    def test_an_exception_is_swallowed_and_counted(self) -> None:
        """An Exception inside the guard does not escape; the library's failure count goes up."""
        before = _safety.failures.get("t-count", 0)
        with _safety.guard("t-count"):
            raise KeyError("bookkeeping bug")
        with _safety.guard("t-count"):
            raise ValueError("another")
        assert _safety.failures["t-count"] == before + 2

    def test_logged_once_per_library(self, caplog: pytest.LogCaptureFixture) -> None:
        """The first failure of a library is logged with its traceback; later ones only counted."""
        caplog.set_level(logging.ERROR, logger="flowtracker.instrumentation")
        for _ in range(3):
            with _safety.guard("t-once"):
                raise RuntimeError("boom")
        records = [r for r in caplog.records if "t-once" in r.getMessage()]
        assert len(records) == 1
        assert records[0].exc_info is not None
        assert records[0].exc_info[0] is RuntimeError
        assert _safety.failures["t-once"] == 3

    def test_cancellation_and_keyboard_interrupt_pass_through(self) -> None:
        """BaseExceptions that are not errors (cancellation, Ctrl-C) are never swallowed."""
        with pytest.raises(asyncio.CancelledError), _safety.guard("t-base"):
            raise asyncio.CancelledError
        with pytest.raises(KeyboardInterrupt), _safety.guard("t-base"):
            raise KeyboardInterrupt
        assert "t-base" not in _safety.failures

    def test_no_exception_counts_nothing(self) -> None:
        """A clean block leaves the counter alone."""
        with _safety.guard("t-clean"):
            pass
        assert "t-clean" not in _safety.failures

    def test_counts_are_exact_across_threads(self) -> None:
        """Failures reported from many threads at once are all counted."""

        def fail() -> None:
            for _ in range(200):
                _safety.report_failure("t-threads", RuntimeError("x"))

        workers = [threading.Thread(target=fail) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert _safety.failures["t-threads"] == 800
