"""W3C Trace Context: reading ``traceparent``/``tracestate`` and writing them out.

Implements `Trace Context Level 1 <https://www.w3.org/TR/trace-context/>`_,
with Level 2's simplified ``tracestate`` key grammar and its ``random`` flag
(``0x02``), which is passed on unchanged when a trace is continued. Both
middlewares and the aiohttp client use these functions; they work for any
transport that carries headers (a Kafka record, a job queue's metadata).

Incoming, as the specification says:

* header names in any case; ``traceparent`` sent twice, a version that is not
  two lowercase hex digits, version ``ff``, ids that are not lowercase hex or
  are all zeros, or a version ``00`` header of the wrong length: the header is
  ignored and a new trace starts;
* a higher version is parsed for its first four fields, which must be
  followed by the end of the header or a ``-``;
* ``tracestate`` is read only when ``traceparent`` was valid; several headers
  are joined with commas; empty members and surrounding spaces are allowed;
  an invalid key or value, a duplicated key or more than 32 members discard
  the whole ``tracestate`` (``traceparent`` still counts).

Outgoing: ``00-<trace id>-<span id>-<flags>``, flags holding the trace's
sampled decision and the caller's random flag (other bits zero), plus the
``tracestate`` received, unchanged. New traces do not set the random flag.

Example:
    >>> from flowtracker.propagation import extract
    >>> context = extract({"TraceParent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    >>> f"{context.trace_id:032x}", context.sampled
    ('4bf92f3577b34da6a3ce929d0e0e4736', True)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from ._core import Span, SpanContext, current_span, start_root_span

if TYPE_CHECKING:
    from ._pipeline.tracker import Tracker

__all__ = (
    "FLAG_RANDOM",
    "FLAG_SAMPLED",
    "TRACEPARENT",
    "TRACERESPONSE",
    "TRACESTATE",
    "TraceContext",
    "context_from",
    "continue_trace",
    "extract",
    "format_traceparent",
    "inject",
    "parse_traceparent",
    "parse_tracestate",
    "start_from_context",
    "traceresponse",
)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: The response header (Trace Context Level 2) naming the server's span.
TRACERESPONSE = "traceresponse"

FLAG_SAMPLED = 0x01
#: Level 2: the trace id's rightmost 7 bytes are random.
FLAG_RANDOM = 0x02
_KNOWN_FLAGS = FLAG_SAMPLED | FLAG_RANDOM

MAX_TRACESTATE_MEMBERS = 32

_HEX = frozenset("0123456789abcdef")
_OWS = " \t"
# Level 2: a key starts with a lowercase letter or digit, 256 characters at most.
_KEY = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")
# Printable ASCII except "," and "=", 256 characters at most, not ending in a space.
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")

#: Headers as the frameworks hand them over: a mapping (``dict``, aiohttp's
#: ``CIMultiDict``) or ``(name, value)`` pairs (ASGI's ``scope["headers"]``).
Headers: TypeAlias = Mapping[Any, Any] | Iterable[tuple[Any, Any]]

_H = TypeVar("_H", bound=MutableMapping[Any, Any])
_WANTED = (TRACEPARENT, TRACESTATE)


@dataclass(frozen=True)
class TraceContext:
    """A parsed incoming trace context.

    Attributes:
        trace_id: The caller's trace id (128-bit int, never 0).
        parent_id: The caller's span id (64-bit int, never 0).
        flags: ``FLAG_SAMPLED`` and ``FLAG_RANDOM`` bits as received; other bits cleared.
        tracestate: The validated ``tracestate`` members joined by commas, or ``None``.
    """

    trace_id: int
    parent_id: int
    flags: int
    tracestate: str | None = None

    @property
    def sampled(self) -> bool:
        """The caller's sampled flag."""
        return bool(self.flags & FLAG_SAMPLED)

    @property
    def random(self) -> bool:
        """The caller's random flag (Level 2)."""
        return bool(self.flags & FLAG_RANDOM)


def _is_hex(text: str) -> bool:
    return _HEX.issuperset(text)


def parse_traceparent(value: str) -> TraceContext | None:
    """Parses one ``traceparent`` value; ``None`` when it must be ignored.

    Example:
        >>> parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").sampled
        False
        >>> parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01") is None
        True
    """
    text = value.strip(_OWS)
    if len(text) < 55 or text[2] != "-" or text[35] != "-" or text[52] != "-":
        return None
    version = text[:2]
    if not _is_hex(version) or version == "ff":
        return None
    if version == "00" and len(text) != 55:
        return None
    if len(text) > 55 and text[55] != "-":  # a future version's further fields
        return None
    trace_hex, parent_hex, flags_hex = text[3:35], text[36:52], text[53:55]
    if not (_is_hex(trace_hex) and _is_hex(parent_hex) and _is_hex(flags_hex)):
        return None
    trace_id, parent_id = int(trace_hex, 16), int(parent_hex, 16)
    if trace_id == 0 or parent_id == 0:
        return None
    return TraceContext(trace_id, parent_id, int(flags_hex, 16) & _KNOWN_FLAGS)


def parse_tracestate(values: str | Iterable[str]) -> str | None:
    """Validates ``tracestate`` header values; the joined members, or ``None``.

    ``None`` when there are no members, or when the list is invalid as a whole
    (see the module docstring).

    Example:
        >>> parse_tracestate(["rojo=00f067aa0ba902b7", " , congo=t61rcWkgMzE"])
        'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE'
        >>> parse_tracestate("a=1,a=2") is None
        True
    """
    joined = values if isinstance(values, str) else ",".join(values)
    members: list[str] = []
    keys: set[str] = set()
    for raw in joined.split(","):
        member = raw.strip(_OWS)
        if not member:
            continue
        key, sep, val = member.partition("=")
        if not sep or key in keys or not _KEY.fullmatch(key) or not _VALUE.fullmatch(val):
            return None
        keys.add(key)
        members.append(member)
        if len(members) > MAX_TRACESTATE_MEMBERS:
            return None
    return ",".join(members) if members else None


def _header_values(headers: Headers, wanted: tuple[str, ...]) -> dict[str, list[str]]:
    """Every value of the ``wanted`` (lowercase) header names, names matched in any case."""
    getall = getattr(headers, "getall", None)
    if getall is not None:  # a case-insensitive multidict (aiohttp): no scan of every header
        return {name: [str(value) for value in getall(name, ())] for name in wanted}
    found: dict[str, list[str]] = {name: [] for name in wanted}
    pairs: Iterable[tuple[Any, Any]]
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if isinstance(name, (bytes, bytearray)):
            name = name.decode("latin-1")
        bucket = found.get(str(name).lower())
        if bucket is not None:
            if isinstance(value, (bytes, bytearray)):
                value = value.decode("latin-1")
            bucket.append(str(value))
    return found


def extract(headers: Headers) -> TraceContext | None:
    """The trace context carried by ``headers``, or ``None`` (start a new trace).

    Args:
        headers: A mapping (``dict``, aiohttp's ``request.headers``) or
            ``(name, value)`` pairs of ``str`` or ``bytes`` (ASGI's
            ``scope["headers"]``). Names match in any case.

    Example:
        >>> extract([(b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ...          (b"tracestate", b"congo=t61rcWkgMzE")]).tracestate
        'congo=t61rcWkgMzE'
    """
    found = _header_values(headers, _WANTED)
    parents = found[TRACEPARENT]
    if not parents:  # the common case: a new trace, nothing to parse
        return None
    return context_from(parents, found[TRACESTATE])


def context_from(traceparents: Sequence[str], tracestates: Sequence[str] = ()) -> TraceContext | None:
    """The trace context from every ``traceparent`` and ``tracestate`` value received.

    For integrations that look headers up themselves (aiohttp's
    ``request.headers.getall``): more than one ``traceparent`` is ambiguous
    and starts a new trace.

    Example:
        >>> parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        >>> context_from([parent], ["a=1", "b=2"]).tracestate
        'a=1,b=2'
    """
    if len(traceparents) != 1:  # missing, or duplicated: ambiguous, so a new trace
        return None
    context = parse_traceparent(traceparents[0])
    if context is None or not tracestates:
        return context
    state = parse_tracestate(tracestates)
    if state is None:
        return context
    return TraceContext(context.trace_id, context.parent_id, context.flags, state)


_FLAGS_HEX = ("00", "01", "02", "03")


def format_traceparent(trace_id: int, span_id: int, flags: int = FLAG_SAMPLED) -> str:
    """A version ``00`` ``traceparent`` value.

    Example:
        >>> format_traceparent(0x4bf92f3577b34da6a3ce929d0e0e4736, 0xb7ad6b7169203331)
        '00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01'
    """
    # From bytes: ``int.to_bytes().hex()`` is about twice as fast as a 32-digit
    # ``format`` of a 128-bit int, and this runs once per traced response.
    trace_hex = trace_id.to_bytes(16, "big").hex()
    return f"00-{trace_hex}-{span_id.to_bytes(8, 'big').hex()}-{_FLAGS_HEX[flags & _KNOWN_FLAGS]}"


def flags_of(context: SpanContext) -> int:
    """The W3C trace flags to send for ``context`` (sampled, and Level 2 random)."""
    flags = FLAG_SAMPLED if context.sampled else 0
    if context.random:
        flags |= FLAG_RANDOM
    return flags


def inject(headers: _H, span: Span | None = None) -> _H:
    """Writes ``traceparent`` (and ``tracestate``) for ``span`` into ``headers``.

    ``span`` defaults to the current span; without one, ``headers`` is left
    as it is. Existing ``traceparent``/``tracestate`` entries, in any case,
    are replaced. Returns ``headers``.

    Example:
        >>> import flowtracker as ft
        >>> with ft.span("call shipping"):
        ...     headers = inject({})
        >>> sorted(headers)
        ['traceparent']
    """
    if span is None:
        span = current_span()
        if span is None:
            return headers
    context = span.span_context()
    if context is None:  # not started, or an exporter's silent span
        return headers
    for key in [key for key in headers if str(key).lower() in (TRACEPARENT, TRACESTATE)]:
        del headers[key]
    headers[TRACEPARENT] = format_traceparent(context.trace_id, context.span_id, flags_of(context))
    if context.tracestate:
        headers[TRACESTATE] = context.tracestate
    return headers


def traceresponse(span: Span) -> str | None:
    """The ``traceresponse`` value naming ``span`` (a server's root), or ``None``.

    Example:
        >>> import flowtracker as ft
        >>> with ft.span("GET /") as root:
        ...     value = traceresponse(root)
        >>> value.startswith("00-") and value.endswith(root.span_id_hex + "-01")
        True
    """
    context = span.span_context()
    if context is None:
        return None
    return format_traceparent(context.trace_id, context.span_id, flags_of(context))


def continue_trace(
    name: str,
    headers: Headers,
    *,
    tags: dict[str, Any] | None = None,
    tracker: Tracker | None = None,
    kind: str = "server",
) -> Span:
    """Starts a root span that continues the trace in ``headers``, or a new trace.

    For integrations of other transports (a queue consumer, a custom server).
    The span is started but not made current: enter it with ``with``.

    Example:
        >>> import flowtracker as ft
        >>> headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        >>> with continue_trace("consume order", headers, kind="consumer") as root:
        ...     root.trace_id, f"{root.parent_id:016x}"
        ('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7')
    """
    return start_from_context(name, extract(headers), tags=tags, tracker=tracker, kind=kind)


def start_from_context(
    name: str,
    context: TraceContext | None,
    *,
    tags: dict[str, Any] | None = None,
    tracker: Tracker | None = None,
    kind: str = "server",
) -> Span:
    """Starts a root span continuing ``context`` (a new trace when ``None``); see :func:`continue_trace`."""
    if context is None:
        return start_root_span(name, tags, tracker=tracker, kind=kind)
    root = start_root_span(
        name,
        tags,
        tracker=tracker,
        trace_id=context.trace_id,
        parent_id=context.parent_id,
        sampled=bool(context.flags & FLAG_SAMPLED),
        tracestate=context.tracestate,
        random_flag=bool(context.flags & FLAG_RANDOM),  # passed on to outgoing calls by inject()
        kind=kind,
    )
    return root
