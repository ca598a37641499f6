"""OTLP's protobuf messages: bodies to messages and back (needs ``opentelemetry-proto``).

The mapping itself (:mod:`flowtracker._wire.otlp`) builds OTLP/JSON dicts and
reads messages; this module is the glue to the bytes on the wire:

* :func:`request_message`: an OTLP/JSON dict as an ``ExportTraceServiceRequest``.
* :func:`parse_request`: an HTTP body (``application/x-protobuf`` or the OTLP
  JSON encoding) as a message. OTLP/JSON writes trace and span ids in hex,
  while protobuf's own JSON parser reads bytes fields as base64, so the ids
  (of spans and of links) are turned into bytes here first.
* :func:`response_body`: the ``ExportTraceServiceResponse``, with
  ``partial_success`` when spans were rejected.

The message classes are imported on first use, so importing this module
costs nothing when OTLP is never spoken.

Example:
    >>> message = parse_request(b'{"resourceSpans": []}', "application/json")
    >>> message.ByteSize(), response_body(0, "", "application/json")
    (0, b'{}')
"""

from __future__ import annotations

import binascii
import functools
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import orjson

__all__ = (
    "BodyError",
    "parse_request",
    "proto",
    "request_message",
    "response_body",
    "span_message",
    "status_body",
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class BodyError(ValueError):
    """A request body that does not decode as OTLP (the receiver answers 400)."""


@functools.cache
def proto() -> SimpleNamespace:
    """The opentelemetry-proto message classes, imported once, on first use.

    Raises:
        ImportError: when ``opentelemetry-proto`` is not installed.
    """
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
    from opentelemetry.proto.common.v1.common_pb2 import (
        AnyValue,
        ArrayValue,
        InstrumentationScope,
        KeyValue,
        KeyValueList,
    )
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    classes = (
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse, AnyValue,
        ArrayValue, InstrumentationScope, KeyValue, KeyValueList, Resource, ResourceSpans, ScopeSpans,
        Span, Status,
    )  # fmt: skip
    return SimpleNamespace(json_format=json_format, **{cls.__name__: cls for cls in classes})


# ---- dict -> message -------------------------------------------------------------------------


def request_message(request: Mapping[str, Any], *, converted: bool = False) -> Any:
    """An ``ExportTraceServiceRequest`` message from :func:`~flowtracker._wire.otlp.otlp_request_dict`'s dict.

    ``converted``: the request's spans are ``Span`` messages already
    (:func:`span_message`, one trace at a time), not OTLP/JSON span dicts.

    Example:
        >>> from flowtracker._wire.otlp import otlp_request_dict
        >>> request_message(otlp_request_dict([])).ByteSize()
        0
    """
    pb = proto()
    span: Callable[[Any], Any] = _same if converted else functools.partial(_span, pb)
    return pb.ExportTraceServiceRequest(
        resource_spans=[
            pb.ResourceSpans(
                resource=pb.Resource(attributes=_key_values(pb, entry["resource"]["attributes"])),
                scope_spans=[
                    pb.ScopeSpans(
                        scope=pb.InstrumentationScope(**scope["scope"]),
                        spans=[span(item) for item in scope["spans"]],
                    )
                    for scope in entry["scopeSpans"]
                ],
            )
            for entry in request["resourceSpans"]
        ]
    )


def span_message(item: Mapping[str, Any]) -> Any:
    """One ``Span`` message from an OTLP/JSON span dict (:func:`~flowtracker._wire.otlp.otlp_span_dict`)."""
    return _span(proto(), item)


def _same(message: Any) -> Any:
    return message


def _span(pb: Any, item: Mapping[str, Any]) -> Any:
    status = item["status"]
    return pb.Span(
        trace_id=bytes.fromhex(item["traceId"]),
        span_id=bytes.fromhex(item["spanId"]),
        parent_span_id=bytes.fromhex(item.get("parentSpanId", "")),
        name=item["name"],
        kind=item["kind"],
        start_time_unix_nano=int(item["startTimeUnixNano"]),
        end_time_unix_nano=int(item["endTimeUnixNano"]),
        attributes=_key_values(pb, item.get("attributes", ())),
        dropped_attributes_count=item.get("droppedAttributesCount", 0),
        events=[
            pb.Span.Event(
                time_unix_nano=int(event["timeUnixNano"]),
                name=event["name"],
                attributes=_key_values(pb, event.get("attributes", ())),
            )
            for event in item.get("events", ())
        ],
        status=pb.Status(code=status.get("code", 0), message=status.get("message", "")),
    )


def _key_values(pb: Any, items: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [pb.KeyValue(key=item["key"], value=_any_value(pb, item["value"])) for item in items]


def _any_value(pb: Any, value: Mapping[str, Any]) -> Any:
    if "stringValue" in value:
        return pb.AnyValue(string_value=value["stringValue"])
    if "boolValue" in value:
        return pb.AnyValue(bool_value=value["boolValue"])
    if "intValue" in value:
        return pb.AnyValue(int_value=int(value["intValue"]))
    if "doubleValue" in value:
        return pb.AnyValue(double_value=value["doubleValue"])
    if "arrayValue" in value:
        values = [_any_value(pb, item) for item in value["arrayValue"]["values"]]
        return pb.AnyValue(array_value=pb.ArrayValue(values=values))
    if "kvlistValue" in value:
        return pb.AnyValue(
            kvlist_value=pb.KeyValueList(values=_key_values(pb, value["kvlistValue"]["values"]))
        )
    return pb.AnyValue()


# ---- bytes -> message ------------------------------------------------------------------------


def parse_request(body: bytes, content_type: str) -> Any:
    """An ``ExportTraceServiceRequest`` from an OTLP/HTTP body.

    Args:
        body: The (decompressed) body.
        content_type: ``application/x-protobuf`` or ``application/json``.

    Raises:
        BodyError: the body does not decode; the message says where.
    """
    pb = proto()
    message = pb.ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        try:
            message.ParseFromString(body)
        except Exception as error:  # google.protobuf.message.DecodeError, RecursionError
            raise BodyError(f"not an OTLP protobuf ExportTraceServiceRequest: {error}") from None
        return message
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BodyError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise BodyError("not an OTLP JSON ExportTraceServiceRequest: the body is no JSON object")
    _hex_ids_to_base64(data)
    try:
        pb.json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except Exception as error:  # json_format.ParseError, RecursionError
        raise BodyError(f"not an OTLP JSON ExportTraceServiceRequest: {error}") from None
    return message


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    """Rewrites OTLP/JSON's hex ids into the base64 protobuf's JSON parser reads."""
    for r, resource in enumerate(_items(data.get("resourceSpans"))):
        for s, scope in enumerate(_items(resource.get("scopeSpans"))):
            for n, span in enumerate(_items(scope.get("spans"))):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]"
                _convert(span, where)
                for k, link in enumerate(_items(span.get("links"))):
                    _convert(link, f"{where}.links[{k}]")


def _items(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _convert(item: dict[str, Any], where: str) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        value = item.get(key)
        if isinstance(value, str) and value:
            try:
                item[key] = binascii.b2a_base64(bytes.fromhex(value), newline=False).decode()
            except ValueError:
                raise BodyError(f"{where}.{key}: {value[:40]!r} is not hex") from None


# ---- the answer ------------------------------------------------------------------------------


def response_body(rejected: int, error: str, content_type: str) -> bytes:
    """The ``ExportTraceServiceResponse`` body, in the request's encoding.

    Example:
        >>> response_body(2, "span rejected: trace_id is all zeros", "application/json")
        b'{"partialSuccess":{"rejectedSpans":"2","errorMessage":"span rejected: trace_id is all zeros"}}'
    """
    pb = proto()
    response = pb.ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = error
    if content_type == PROTOBUF:
        return response.SerializeToString()  # type: ignore[no-any-return]
    return orjson.dumps(pb.json_format.MessageToDict(response))


def status_body(code: int, message: str, content_type: str) -> bytes:
    """An error answer's body: a ``google.rpc.Status``, as OTLP/HTTP asks for 4xx and 5xx.

    Protobuf by hand (two fields: ``code`` and ``message``), so that no
    googleapis package is needed for it.

    Example:
        >>> status_body(3, "bad", "application/x-protobuf")
        b'\\x08\\x03\\x12\\x03bad'
        >>> status_body(3, "bad", "application/json")
        b'{"code":3,"message":"bad"}'
    """
    if content_type != PROTOBUF:
        return orjson.dumps({"code": code, "message": message})
    text = message.encode("utf-8")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
