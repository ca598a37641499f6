"""Clock and id sources, and the one place tests swap them.

The span hot path reads one monotonic clock (``time.monotonic_ns``) per event
and turns readings into wall-clock times only at export, by adding an anchor
taken once (``wall_anchor_ns``). One clock read per event keeps the hot path
cheap, and durations stay immune to wall-clock jumps (NTP, DST).

Ids are plain ints from ``random.getrandbits`` (the C Mersenne Twister: fast,
atomic under the GIL, reseeded after ``fork``) and formatted as lowercase hex
only at export.

Example:
    >>> from flowtracker._core import clock
    >>> reading = clock.now_ns()
    >>> clock.format_rfc3339(clock.wall_anchor_ns + reading).endswith("Z")
    True
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

#: Reads the monotonic clock, in nanoseconds. Swapped by ``flowtracker.testing``.
now_ns: Callable[[], int] = time.monotonic_ns

#: Wall-clock nanoseconds at monotonic reading zero.
wall_anchor_ns: int = time.time_ns() - time.monotonic_ns()

#: Returns a random int of the given number of bits. Swapped by ``flowtracker.testing``.
random_bits: Callable[[int], int] = random.getrandbits

_listeners: list[Callable[[], None]] = []


def on_change(listener: Callable[[], None]) -> None:
    """Calls ``listener`` whenever the clock or id source is swapped.

    The span module keeps its own references to ``now_ns`` and
    ``random_bits`` (a global lookup is cheaper than an attribute lookup on
    the hot path), so it registers here to refresh them.
    """
    _listeners.append(listener)


def install(
    clock: Callable[[], int] | None = None,
    ids: Callable[[int], int] | None = None,
    anchor_ns: int | None = None,
) -> tuple[Callable[[], int], Callable[[int], int], int]:
    """Swaps the clock and/or id source; returns the previous three values."""
    global now_ns, random_bits, wall_anchor_ns
    previous = (now_ns, random_bits, wall_anchor_ns)
    if clock is not None:
        now_ns = clock
    if ids is not None:
        random_bits = ids
    if anchor_ns is not None:
        wall_anchor_ns = anchor_ns
    for listener in _listeners:
        listener()
    return previous


_second_cache: tuple[int, str] = (-1, "")


def format_rfc3339(wall_ns: int) -> str:
    """Formats wall-clock nanoseconds as RFC 3339 UTC with microseconds.

    Example:
        >>> format_rfc3339(1_795_168_800_000_000_000)
        '2026-11-20T10:00:00.000000Z'
    """
    return format_pair(wall_ns, wall_ns)[0]


def format_pair(start_ns: int, end_ns: int) -> tuple[str, str]:
    """Both ends of a span as RFC 3339 UTC with microseconds (one call, one cache).

    The ``YYYY-MM-DDTHH:MM:SS`` part is cached per second (spans of a trace
    mostly share it); the microseconds are zero-padded as ``str(10**6 + us)[1:]``,
    which is about a third cheaper than a ``:06d`` format spec. Export formats
    two times per span, so this is the encoder's busiest helper.

    Example:
        >>> format_pair(1_795_168_800_000_000_000, 1_795_168_800_500_000_000)
        ('2026-11-20T10:00:00.000000Z', '2026-11-20T10:00:00.500000Z')
    """
    global _second_cache
    cached_second, prefix = _second_cache
    start_s = start_ns // 1_000_000_000
    if start_s != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start_s))
        _second_cache = (start_s, prefix)
    start_text = f"{prefix}.{str(1_000_000 + start_ns % 1_000_000_000 // 1000)[1:]}Z"
    if end_ns // 1_000_000_000 != start_s:
        end_s = end_ns // 1_000_000_000
        end_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(end_s))
        return start_text, f"{end_prefix}.{str(1_000_000 + end_ns % 1_000_000_000 // 1000)[1:]}Z"
    return start_text, f"{prefix}.{str(1_000_000 + end_ns % 1_000_000_000 // 1000)[1:]}Z"


def parse_rfc3339(text: str) -> int:
    """Parses what :func:`format_rfc3339` writes back into wall-clock nanoseconds.

    Also accepts an offset instead of ``Z`` and fewer fraction digits.

    Example:
        >>> parse_rfc3339("2026-11-20T10:00:00.000001Z")
        1795168800000001000
    """
    from datetime import datetime, timezone

    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    fraction_ns = 0
    head, dot, tail = value.partition(".")
    if dot:
        digits = ""
        for index, char in enumerate(tail):
            if not char.isdigit():
                value = head + tail[index:]
                break
            digits += char
        else:
            value = head
        fraction_ns = int((digits + "000000000")[:9])
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000 + fraction_ns
