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

Every string exported is valid Unicode. Python strings may hold lone
surrogates, which UTF-8 (and so JSON, protobuf and Kafka) cannot carry:
aiohttp decodes header bytes with ``surrogateescape``, and so do
``os.fsdecode``, ``sys.argv`` and ``os.environ``. Each lone surrogate is
escaped as text, in span names, tag keys and values, event names and
attributes, error messages and the service name: U+DC80–U+DCFF (the stand-in
``surrogateescape`` makes for an undecodable byte) becomes ``\\xNN``, that
byte, so ``b"curl/\\xff"`` received in a header reads ``curl/\\xff``; any other
surrogate becomes ``\\uXXXX``. The wire dict is made valid as it is built,
so it needs no second pass: a string is looked at only when it is not ASCII
(``str.isascii()``, a flag CPython keeps on every string), tag keys once per
key and policy (the policy's verdict cache holds only keys already escaped),
and the rare fields (kind, error, events) always. :func:`encoded` still walks
and escapes anything orjson refuses, for dicts built elsewhere. A trace that
still cannot be encoded costs only itself (see :mod:`flowtracker._wire.batch`).

Example:
    >>> from flowtracker._wire.encode import safe_value
    >>> safe_value({3, 1, 2})
    [1, 2, 3]
    >>> safe_value(b"caf\\xc3\\xa9")
    'café'
    >>> print(encodable_text(b"curl/\\xff".decode("utf-8", "surrogateescape")))
    curl/\\xff
"""

from __future__ import annotations

import math
import re
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
_SURROGATE = re.compile("[\ud800-\udfff]")
# Deeper than any trace dict (tags are cut at 32 levels by safe_value): only a
# cyclic structure passed to encode() reaches it.
_MAX_DEPTH = 64


def encode(obj: Any) -> bytes:
    """Compact JSON bytes; values orjson cannot encode are replaced, not fatal."""
    return encoded(obj)[1]


def encoded(obj: Any) -> tuple[Any, bytes]:
    """``obj`` made encodable, and its compact JSON bytes.

    ``obj`` itself when orjson takes it as it is (the common case: no copy, no
    walk); else :func:`encodable` of it.

    Example:
        >>> encoded({"ua": "curl/\\udcff"})
        ({'ua': 'curl/\\\\xff'}, b'{"ua":"curl/\\\\\\\\xff"}')
    """
    try:
        return obj, orjson.dumps(obj, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        clean = encodable(obj)
        return clean, orjson.dumps(clean, option=_OPTIONS)


def encodable(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` that orjson always encodes: strings and keys escaped, odd values replaced.

    Dicts, lists and strings are walked as they are (no cut, no limit: a
    trace's dict was already bounded when it was built); anything else goes
    through :func:`safe_value`.
    """
    kind = type(value)
    if kind is str:
        return encodable_text(value)
    if _depth < _MAX_DEPTH:
        if kind is dict:
            return {
                encodable_text(key if type(key) is str else safe_str(key)): encodable(item, _depth + 1)
                for key, item in value.items()
            }
        if kind is list or kind is tuple:
            return [encodable(item, _depth + 1) for item in value]
    return safe_value(value)


def encodable_text(text: str) -> str:
    """``text`` with each lone surrogate escaped (see the module docstring); else ``text`` itself."""
    if text.isascii():  # O(1): CPython keeps the flag on every string
        return text
    return _SURROGATE.sub(_escape_surrogate, text)


def _escape_surrogate(match: re.Match[str]) -> str:
    point = ord(match.group())
    if 0xDC80 <= point <= 0xDCFF:  # surrogateescape's stand-in for the byte point - 0xDC00
        return f"\\x{point - 0xDC00:02x}"
    return f"\\u{point:04x}"


def trace_to_dict(trace: Trace, policy: ExportPolicy = DEFAULT_POLICY) -> dict[str, Any]:
    """The JSON-ready dict of a finished trace."""
    anchor = _clock.wall_anchor_ns
    now = _clock.now_ns() if trace.unfinished else 0
    out: dict[str, Any] = {"trace_id": trace.trace_id}
    service = trace.service
    if service is not None:
        out["service"] = service if type(service) is str and service.isascii() else safe_str(service)
    out["spans"] = [span_to_dict(span, anchor, now, policy) for span in trace.spans]
    if trace.dropped_spans:
        out["dropped_spans"] = trace.dropped_spans
    if trace.follow_up:
        out["follow_up"] = True
    if trace.unfinished:
        out["unfinished_spans"] = trace.unfinished
    spans = trace.spans
    if spans:
        first = spans[0]
        root_extras = (first.root or first).extras  # the root carries its trace's rare fields
        if root_extras is not None and root_extras.loop_monitor is not None:
            out["loop_monitor"] = root_extras.loop_monitor
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
    if type(name) is not str or not 0 < len(name) <= policy.max_string or not name.isascii():
        name = safe_name(name, policy)
    start_time, end_time = _clock.format_pair(anchor + start, anchor + end)
    # One dict literal per shape (key order is the output's): cheaper than
    # building it key by key, and export runs once per span. Ids go through
    # int.to_bytes().hex(), about twice as fast as a 16-digit format spec.
    parent = span.parent
    parent_id = parent.span_id if parent is not None else None if extras is None else extras.remote_parent_id
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
        out["kind"] = safe_name(kind, policy)
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
        out["error"] = {"type": encodable_text(_type_name(error)), "message": safe_str(error, policy)}
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

    The common span's tags (string keys known not to be secret, short ASCII
    strings, bools, finite floats, 64-bit ints) are returned as they are, not
    copied: export runs this once per span. A key is known once
    :func:`_cleaned_tags` has escaped it and asked the policy about it (its
    verdict cache holds only keys that are valid text), so a key with lone
    surrogates never passes here.
    """
    limit = policy.max_string
    verdicts = policy.secret_cache
    for key, value in tags.items():
        kind = type(value)
        if (
            type(key) is not str
            or verdicts.get(key) is not False
            or not (
                (kind is str and len(value) <= limit and value.isascii())
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
    for key, value in tags.items():
        key = encodable_text(key) if type(key) is str else safe_str(key, policy)
        if policy.is_secret(key):  # also what lets the next span's key take the fast path
            out[key] = REDACTED
            policy.redacted += 1
        elif type(value) is str:
            out[key] = _truncate(encodable_text(value), policy)
        elif type(value) in _NATIVE and not (type(value) is float and not math.isfinite(value)):
            out[key] = value if type(value) is not int or -(1 << 63) <= value < 1 << 64 else str(value)
        else:
            out[key] = safe_value(value, policy)
    return out


def safe_value(value: Any, policy: ExportPolicy = DEFAULT_POLICY, _depth: int = 0) -> Any:
    """A JSON-encodable stand-in for any value (containers kept, odd values as text).

    Never raises: a value whose own methods raise (a list subclass whose
    ``__getitem__`` fails, say) becomes its text.
    """
    try:
        return _stand_in(value, policy, _depth)
    except Exception:
        return safe_str(value, policy)


def _stand_in(value: Any, policy: ExportPolicy, _depth: int) -> Any:
    if _depth > 32:
        return "…[nested too deep]"
    kind = type(value)
    if kind is str:
        return _truncate(encodable_text(value), policy)
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
            (encodable_text(k) if type(k) is str else safe_str(k, policy)): safe_value(v, policy, _depth + 1)
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
    """``str(value)`` (valid Unicode), or a stand-in when ``__str__``/``__repr__`` raise."""
    try:
        text = str(value)
    except Exception:
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {_type_name(value)}>"
    return _truncate(encodable_text(text), policy)


def safe_name(name: Any, policy: ExportPolicy = DEFAULT_POLICY) -> str:
    """A span/event name as exported: valid text, never empty, at most ``max_string``."""
    text = encodable_text(name) if type(name) is str else safe_str(name, policy)
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
