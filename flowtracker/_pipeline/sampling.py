"""Tail sampling: decide on the whole finished trace, which only whole-trace
assembly makes possible.

Head sampling (``Tracker(sample_rate=...)``) decides at the root, before
anything is known; tail sampling sees the outcome. ``keep_errors_and_slow``
keeps every trace with an error or slower than a threshold and a share of the
rest — the traces worth looking at, at a fraction of the volume.

Example:
    >>> import flowtracker as ft
    >>> tracker = ft.Tracker(exporters=[], tail_sampler=ft.keep_errors_and_slow(500, rate=0.05))
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .._wire.record import Trace


def keep_errors_and_slow(slower_than_ms: float, rate: float = 0.0) -> Callable[[Trace], bool]:
    """A tail sampler: keep errors, keep traces slower than ``slower_than_ms``, keep ``rate`` of the rest.

    "Slower" is the longest span of the trace (its root, for a request).

    Args:
        slower_than_ms: Traces with a span at least this long are kept.
        rate: Share (0..1) of the remaining traces kept at random.

    Example:
        >>> sampler = keep_errors_and_slow(250, rate=0.1)
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be between 0 and 1, got {rate!r}")
    threshold_ns = int(slower_than_ms * 1_000_000)
    draw = random.random

    def sampler(trace: Trace) -> bool:
        for span in trace.spans:
            if span.status == "error":
                return True
            end = span.end_ns
            if end is not None and end - span.start_ns >= threshold_ns:
                return True
        return rate > 0.0 and draw() < rate

    return sampler
