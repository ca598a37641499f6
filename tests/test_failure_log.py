"""How a lane reports its exporter's failures: summaries at most once per interval, and recovery once."""

from __future__ import annotations

import logging

import pytest

from flowtracker._pipeline.failure_log import FailureLog


class Clock:
    """A hand-moved monotonic clock, in seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captures what the ``flowtracker`` logger writes during the test."""
    caplog.set_level(logging.WARNING, logger="flowtracker")
    return caplog


class TestFailureLog:
    def test_first_failure_at_once_then_one_summary_per_interval(
        self, log_lines: pytest.LogCaptureFixture
    ) -> None:
        """The first failure is logged at once; later ones are summed and written once the interval
        has passed, with the traces and batches since the last line and the last error."""
        clock = Clock()
        log = FailureLog("otlp", interval=60.0, clock=clock)
        log.failure(512, "DeliveryError('down')")
        for seconds in (10, 20, 30):
            clock.now += seconds
            log.failure(100, f"DeliveryError('down {seconds}')")
        assert log_lines.messages == [
            "exporter otlp failed: DeliveryError('down'); 512 traces failed",
            "exporter otlp: 300 traces failed in the last 60 s (3 batches);"
            " last error: DeliveryError('down 30')",
        ]

    def test_recovery_said_once_with_the_counts(self, log_lines: pytest.LogCaptureFixture) -> None:
        """The first success after failures says so once, with everything that failed meanwhile;
        later successes say nothing, and a new failure is logged at once again."""
        clock = Clock()
        log = FailureLog("webhook", interval=60.0, clock=clock)
        log.failure(10, "E1")
        log.failure(5, "E2")
        log.success()
        log.success()
        log.failure(1, "E3")
        assert log_lines.messages == [
            "exporter webhook failed: E1; 10 traces failed",
            "exporter webhook recovered: exporting again after 15 failed traces (5 since the last message)",
            "exporter webhook failed: E3; 1 traces failed",
        ]

    def test_healthy_exporter_logs_nothing(self, log_lines: pytest.LogCaptureFixture) -> None:
        """Successes without failures write nothing."""
        log = FailureLog("file")
        for _ in range(1000):
            log.success()
        assert log_lines.messages == []
