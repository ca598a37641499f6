"""The wire format: one JSON object per trace (the README's "Output" section).

Everything about encoding lives here: ids to hex, monotonic readings to RFC 3339
UTC, durations to float milliseconds, and the fallback for odd tag values.
Encoding happens in exporter lanes, never on the request path.

Secret-looking tag keys have their values redacted and long strings are cut
according to the tracker's :class:`~flowtracker._policy.ExportPolicy`.

Odd values never break export. orjson encodes the common types natively; a
value it rejects (a set, bytes, an int over 64 bits, a recursive container,
an object whose ``__repr__`` raises, ...) is replaced by a readable stand-in,
tag by tag, so one bad tag costs only itself. NaN and infinities become
``null`` (JSON has no such numbers). Non-string tag keys go through ``str``.
Strings longer than the policy's ``max_string`` (4096 characters by
default) are cut and marked with ``…[truncated N chars]``.

Example:
    >>> from flowtracker._wire.encode import safe_value
    >>> safe_value({3, 1, 2})
    [1, 2, 3]
    >>> safe_value(b"caf\\xc3\\xa9")
    'café'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from .._core import clock as _clock
from .policy import DEFAULT_POLICY, REDACTED, ExportPolicy

if TYPE_CHECKING:
    from .._core.span import Span
    from .record import Trace

_OPTIONS = orjson.OPT_NON_STR_KEYS
_NATIVE = (str, int, float, bool, type(None))


def encode(obj: Any) -> bytes:
    """Compact JSON bytes; values orjson cannot encode are replaced, not fatal."""
    try:
        return orjson.dumps(obj, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(safe_value(obj), option=_OPTIONS)


def trace_to_dict(trace: Trace, policy: ExportPolicy = DEFAULT_POLICY) -> dict[str, Any]:
    """The JSON-ready dict of a finished trace."""
    anchor = _clock.wall_anchor_ns
    now = _clock.now_ns() if trace.unfinished else 0
    out: dict[str, Any] = {"trace_id": trace.trace_id}
    if trace.service is not None:
        out["service"] = trace.service
    out["spans"] = [span_to_dict(span, anchor, now, policy) for span in trace.spans]
    if trace.dropped_spans:
        out["dropped_spans"] = trace.dropped_spans
    if trace.follow_up:
        out["follow_up"] = True
    if trace.unfinished:
        out["unfinished_spans"] = trace.unfinished
    spans = trace.spans
    state = spans[0].trace_state if spans else None
    if state is not None and state.loop_monitor is not None:
        out["loop_monitor"] = state.loop_monitor
    return out


def span_to_dict(span: Span, anchor: int, now: int, policy: ExportPolicy = DEFAULT_POLICY) -> dict[str, Any]:
    """The JSON-ready dict of one span (``now`` stands in for a missing end)."""
    start = span.start_ns
    end = span.end_ns
    extras = span.extras
    status = "ok" if extras is None else extras.status
    if end is None:
        end = max(now, start)
        status = "unfinished"
    name = span.name
    if type(name) is not str or not 0 < len(name) <= policy.max_string:
        name = safe_name(name, policy)
    start_time, end_time = _clock.format_pair(anchor + start, anchor + end)
    # One dict literal per shape (key order is the output's): cheaper than
    # building it key by key, and export runs once per span. Ids go through
    # int.to_bytes().hex(), about twice as fast as a 16-digit format spec.
    parent = span.parent
    parent_id = parent.span_id if parent is not None else span.trace_state.remote_parent_id  # type: ignore[union-attr]
    out: dict[str, Any]
    if parent_id is None:
        out = {
            "span_id": span.span_id.to_bytes(8, "big").hex(),
            "name": name,
            "start_time": start_time,
            "end_time": end_time,
            "duration_ms": (end - start) / 1e6,
            "status": status,
        }
    else:
        out = {
            "span_id": span.span_id.to_bytes(8, "big").hex(),
            "parent_id": parent_id.to_bytes(8, "big").hex(),
            "name": name,
            "start_time": start_time,
            "end_time": end_time,
            "duration_ms": (end - start) / 1e6,
            "status": status,
        }
    tags = span.tags
    if extras is None:  # the common span: no kind, error, events or dropped tags
        if tags:
            out["tags"] = safe_tags(tags, policy)
        return out
    # Each field of SpanExtras (flowtracker._core.extras), read by name; a
    # field at its default writes nothing.
    kind = extras.kind
    if kind != "internal":
        out["kind"] = kind
    busy = extras.busy_ns
    if busy is not None:  # set only while an event-loop monitor watched this span's loop
        out["busy_ms"] = busy / 1e6
    stalled = extras.stalled_ns
    if stalled is not None:  # set at completion when another span's code blocked the loop meanwhile
        out["stalled_ms"] = stalled / 1e6
        if extras.stalled_dropped:  # event_loop.stalled events past the kept ones
            out["stalled_dropped"] = extras.stalled_dropped
    if tags:
        out["tags"] = safe_tags(tags, policy)
    dropped = extras.dropped_tags
    if dropped:
        out["dropped_tags"] = dropped
    error = extras.error
    if error is not None:
        out["error"] = {"type": _type_name(error), "message": safe_str(error, policy)}
    events = extras.events
    if events:
        out["events"] = [
            _event_to_dict(name, anchor + at, attributes, policy) for name, at, attributes in events
        ]
    return out


def _event_to_dict(
    name: Any, wall_ns: int, attributes: dict[str, Any], policy: ExportPolicy
) -> dict[str, Any]:
    event: dict[str, Any] = {"name": safe_name(name, policy), "time": _clock.format_rfc3339(wall_ns)}
    if attributes:
        event["attributes"] = safe_tags(attributes, policy)
    return event


def safe_tags(tags: Mapping[Any, Any], policy: ExportPolicy = DEFAULT_POLICY) -> Mapping[str, Any]:
    """Tags with string keys, secrets redacted, and values that always encode.

    The common span's tags (string keys known not to be secret, short strings,
    bools, finite floats, 64-bit ints) are returned as they are, not copied:
    export runs this once per span.
    """
    limit = policy.max_string
    verdicts = policy.secret_cache if policy.redact_keys else None
    for key, value in tags.items():
        kind = type(value)
        if (
            type(key) is not str
            or (verdicts is not None and verdicts.get(key) is not False)
            or not (
                (kind is str and len(value) <= limit)
                or kind is bool
                or value is None
                or (kind is int and -(1 << 63) <= value < 1 << 64)
                or (kind is float and math.isfinite(value))
            )
        ):
            return _cleaned_tags(tags, policy)
    return tags


def _cleaned_tags(tags: Mapping[Any, Any], policy: ExportPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    redact = policy.redact_keys
    for key, value in tags.items():
        if type(key) is not str:
            key = safe_str(key, policy)
        if redact and policy.is_secret(key):
            out[key] = REDACTED
            policy.redacted += 1
        elif type(value) is str:
            out[key] = value if len(value) <= policy.max_string else _truncate(value, policy)
        elif type(value) in _NATIVE and not (type(value) is float and not math.isfinite(value)):
            out[key] = value if type(value) is not int or -(1 << 63) <= value < 1 << 64 else str(value)
        else:
            out[key] = safe_value(value, policy)
    return out


def safe_value(value: Any, policy: ExportPolicy = DEFAULT_POLICY, _depth: int = 0) -> Any:
    """A JSON-encodable stand-in for any value (containers kept, odd values as text)."""
    if _depth > 32:
        return "…[nested too deep]"
    kind = type(value)
    if kind is str:
        return _truncate(value, policy)
    if kind is bool or value is None:
        return value
    if kind is int:
        return value if -(1 << 63) <= value < 1 << 64 else str(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _truncate(bytes(value).decode("utf-8", "backslashreplace"), policy)
    if isinstance(value, Mapping):
        try:
            items = list(value.items())
        except Exception:
            return safe_str(value, policy)
        return {
            (k if type(k) is str else safe_str(k, policy)): safe_value(v, policy, _depth + 1)
            for k, v in items[:1000]
        }
    if isinstance(value, (list, tuple)):
        return [safe_value(item, policy, _depth + 1) for item in value[:1000]]
    if isinstance(value, (set, frozenset)):
        items = [safe_value(item, policy, _depth + 1) for item in list(value)[:1000]]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, (int, float)):  # bool/int/float subclasses, e.g. IntEnum
        return safe_value(int(value) if isinstance(value, int) else float(value), policy, _depth)
    try:
        orjson.dumps(value)  # datetimes, dataclasses, UUIDs, enums: orjson knows them
    except Exception:
        return safe_str(value, policy)
    return value


def safe_str(value: Any, policy: ExportPolicy = DEFAULT_POLICY) -> str:
    """``str(value)``, or a stand-in when ``__str__``/``__repr__`` raise."""
    try:
        text = str(value)
    except Exception:
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {_type_name(value)}>"
    return _truncate(text, policy)


def safe_name(name: Any, policy: ExportPolicy = DEFAULT_POLICY) -> str:
    """A span/event name as exported: text, never empty, at most ``max_string``."""
    text = name if type(name) is str else safe_str(name, policy)
    return _truncate(text, policy) if text else "<unnamed>"


def _truncate(text: str, policy: ExportPolicy) -> str:
    limit = policy.max_string
    if len(text) <= limit:
        return text
    policy.truncated += 1
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
