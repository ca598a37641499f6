"""Reading traces back: JSON Lines files, raw logs with ``FLOW_LOG:`` lines, gzip, stdin.

A line is a trace when it is a JSON object with ``trace_id`` and a ``spans``
list, either on its own (a ``FileExporter`` line) or after ``FLOW_LOG:``
anywhere in the line (a ``ConsoleExporter`` line inside any log format, e.g.
``docker logs`` output with timestamps in front). A JSON array of traces on
one line (a webhook batch) counts too. Every other line is skipped and
counted; a ``FLOW_LOG:`` line whose JSON is broken is counted as invalid.
Gzip input is recognised by its magic bytes, whatever the file is called.

Example:
    >>> import io
    >>> log = io.BytesIO(b'boot\\n2026 INFO FLOW_LOG: {"trace_id": "ab", "spans": []}\\n')
    >>> result = read_traces([log])
    >>> len(result.traces), result.skipped
    (1, 1)
"""

from __future__ import annotations

import gzip
import io
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Union, cast

import orjson

from .._graph.model import id_key

#: What a source may be: a path, ``"-"`` for stdin, or an open binary stream.
Source = Union[str, "os.PathLike[str]", IO[bytes]]

MARKER = b"FLOW_LOG:"


@dataclass
class ReadResult:
    """What :func:`read_traces` found.

    Attributes:
        traces: The trace dicts, in input order.
        lines: Lines read in all.
        skipped: Lines that were not traces (log noise, blank lines).
        invalid: Lines that looked like traces (``FLOW_LOG:``, or a JSON
            object with ``spans``) but did not parse as one.
    """

    traces: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    skipped: int = 0
    invalid: int = 0


class InputError(Exception):
    """An input cannot be read (missing, unreadable, corrupt gzip); names the input."""


def is_trace(value: Any) -> bool:
    """True for a dict shaped like a wire-format trace (``trace_id`` and a ``spans`` list).

    Example:
        >>> is_trace({"trace_id": "ab", "spans": []}), is_trace({"spans": []})
        (True, False)
    """
    return (
        isinstance(value, dict)
        and isinstance(value.get("trace_id"), str)
        and isinstance(value.get("spans"), list)
        and all(isinstance(span, dict) for span in value["spans"])
    )


def parse_line(line: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The traces on one line, and whether the line looked like trace data.

    Example:
        >>> parse_line(b'x FLOW_LOG: {"trace_id": "ab", "spans": []}')
        ([{'trace_id': 'ab', 'spans': []}], True)
        >>> parse_line(b"hello")
        ([], False)
    """
    at = line.find(MARKER)
    if at >= 0:
        payload = line[at + len(MARKER) :].strip()
        marked = True
    else:
        payload = line.strip()
        if not payload or payload[:1] not in (b"{", b"["):
            return [], False
        marked = False
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        # a log line that merely starts with "{" is noise; one marked FLOW_LOG: is broken data
        return [], marked or b'"spans"' in payload
    if is_trace(value):
        return [value], True
    if isinstance(value, list) and value and all(is_trace(item) for item in value):
        return list(value), True
    return [], marked or (isinstance(value, dict) and "spans" in value)


def read_traces(
    sources: Iterable[Source],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ReadResult:
    """Reads every trace from ``sources`` (see the module docstring).

    Args:
        sources: Paths, ``"-"`` for standard input, or binary streams.
        progress: Called now and then with ``(bytes_done, bytes_total)``
            (total 0 when unknown, e.g. for stdin).

    Raises:
        InputError: when a source cannot be opened or read (the message names it).
    """
    result = ReadResult()
    streams = list(sources)
    total = sum(_size(source) for source in streams)
    done = 0
    for source in streams:
        name = _display_name(source)
        try:
            with _open(source) as (stream, position):
                consumed = 0  # bytes of lines, for streams that cannot tell their position
                for count, line in enumerate(stream, 1):
                    consumed += len(line)
                    result.lines += 1
                    traces, looked_like = parse_line(line)
                    if traces:
                        result.traces.extend(traces)
                    elif looked_like:
                        result.invalid += 1
                    else:
                        result.skipped += 1
                    if progress is not None and count % 2048 == 0:
                        progress(done + (position() or consumed), total)
                done += _size(source)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            raise InputError(f"cannot read {name}: {_reason(error)}") from error
    if progress is not None:
        progress(total, total)
    return result


class _Opened:
    """Opens a source, unwraps gzip, and reports how far reading has got."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.raw: IO[bytes] | None = None
        self.owned = False

    def __enter__(self) -> tuple[IO[bytes], Callable[[], int]]:
        source = self.source
        if isinstance(source, (str, os.PathLike)):
            if os.fspath(source) == "-":
                raw: IO[bytes] = sys.stdin.buffer
            else:
                raw = open(source, "rb")  # closed in __exit__
                self.owned = True
        else:
            raw = source
        self.raw = raw
        buffered: Any = raw if hasattr(raw, "peek") else io.BufferedReader(cast(Any, raw))
        head = buffered.peek(2)[:2]
        stream: IO[bytes] = (
            cast(IO[bytes], gzip.GzipFile(fileobj=buffered)) if head == b"\x1f\x8b" else buffered
        )

        def position() -> int:
            try:
                return raw.tell() if self.owned else 0
            except (OSError, ValueError):
                return 0

        return stream, position

    def __exit__(self, *exc: object) -> None:
        if self.owned and self.raw is not None:
            self.raw.close()


def _open(source: Source) -> _Opened:
    return _Opened(source)


def _size(source: Source) -> int:
    if isinstance(source, (str, os.PathLike)) and os.fspath(source) != "-":
        try:
            return os.path.getsize(source)
        except OSError:
            return 0
    return 0


def _display_name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return "standard input" if path == "-" else repr(path)
    return repr(getattr(source, "name", "<stream>"))


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, EOFError):
        return "the gzip data ends early (truncated file?)"
    return str(error) or type(error).__name__


def merge_traces(traces: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records with the same ``trace_id`` joined into one trace (follow-ups, retries).

    Spans are concatenated in order; a span id already seen in that trace is
    dropped (the same record read twice). The first record's other fields win,
    but for ``service`` when the records come from several services (one
    trace across two services, each writing its part): then every span keeps
    its record's service as its own ``service``, and the trace's is the one
    of the service that holds the root.

    Example:
        >>> merged = merge_traces([
        ...     {"trace_id": "ab", "spans": [{"span_id": "1", "name": "root"}]},
        ...     {"trace_id": "ab", "follow_up": True,
        ...      "spans": [{"span_id": "2", "parent_id": "1", "name": "late"}]}])
        >>> [span["name"] for span in merged[0]["spans"]], len(merged)
        (['root', 'late'], 1)
    """
    out: dict[str, dict[str, Any]] = {}
    seen: dict[str, set[Any]] = {}
    # per trace: the service of each of its spans (by position), kept only while records disagree
    services: dict[str, list[Any]] = {}
    for trace in traces:
        trace_id = str(trace.get("trace_id"))
        spans = [span for span in trace.get("spans") or () if isinstance(span, Mapping)]
        first = out.get(trace_id)
        if first is None:
            out[trace_id] = {**trace, "spans": list(spans)}
            ids = seen[trace_id] = set()
            for span in spans:
                ids.add(id_key(span.get("span_id")))
            continue
        ids = seen[trace_id]
        owners = services.get(trace_id)
        if owners is None and trace.get("service") != first.get("service"):
            owners = services[trace_id] = [first.get("service")] * len(first["spans"])
        for span in spans:
            span_id = id_key(span.get("span_id"))
            if span_id not in ids:
                ids.add(span_id)
                first["spans"].append(span)
                if owners is not None:
                    owners.append(trace.get("service"))
        first.pop("follow_up", None)
    for trace_id, owners in services.items():
        _own_services(out[trace_id], owners)
    return list(out.values())


def _own_services(trace: dict[str, Any], owners: list[Any]) -> None:
    """Each span of a trace joined from several services' records gets its record's service
    (unless it names its own); the trace gets its root's."""
    spans = trace["spans"]
    for index, (span, service) in enumerate(zip(spans, owners, strict=True)):
        if service is not None and "service" not in span:
            spans[index] = {**span, "service": service}
    ids = {id_key(span.get("span_id")) for span in spans}
    for span in spans:
        if id_key(span.get("parent_id")) not in ids and span.get("service") is not None:
            trace["service"] = span["service"]
            break
