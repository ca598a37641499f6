"""The wire format: schema, times, and odd values that must never break export."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowtracker as ft
from flowtracker._core.clock import format_rfc3339, parse_rfc3339
from flowtracker._wire import encode as _wire

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


class TestSchema:
    async def test_times_are_rfc3339_utc_and_duration_float_ms(self, tracker, memory):
        """start/end are RFC 3339 UTC with microseconds; duration_ms is a float from a monotonic clock."""
        before = datetime.now(timezone.utc)
        async with ft.span("root"):
            pass
        await tracker.flush()
        span = memory.traces[0]["spans"][0]
        assert RFC3339.match(span["start_time"])
        assert RFC3339.match(span["end_time"])
        start = datetime.fromisoformat(span["start_time"].replace("Z", "+00:00"))
        assert abs((start - before).total_seconds()) < 5
        assert isinstance(span["duration_ms"], float)
        assert span["duration_ms"] >= 0

    def test_rfc3339_round_trip(self):
        """Formatting and parsing wall-clock nanoseconds round-trips to the microsecond."""
        ns = 1_795_168_800_123_456_000
        assert format_rfc3339(ns) == "2026-11-20T10:00:00.123456Z"
        assert parse_rfc3339(format_rfc3339(ns)) == ns
        assert parse_rfc3339("2026-11-20T11:00:00.5+01:00") == 1_795_168_800_500_000_000


class TestOddValues:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ({3, 1, 2}, [1, 2, 3]),
            (frozenset({"b", "a"}), ["a", "b"]),
            (b"caf\xc3\xa9", "café"),
            (b"\xff", "\\xff"),
            (float("nan"), None),
            (float("inf"), None),
            (1 << 70, str(1 << 70)),
            ((1, "a"), [1, "a"]),
            (Unprintable(), f"<unprintable {Unprintable.__module__}.Unprintable>"),
        ],
    )
    def test_safe_value(self, value, expected):
        """Values orjson rejects get a readable stand-in."""
        assert _wire.safe_value(value) == expected

    def test_recursive_containers(self):
        """A list that contains itself encodes (cut at a depth), never recursing forever."""
        loop: list = [1]
        loop.append(loop)
        encoded = _wire.encode(_wire.safe_tags({"loop": loop}))
        assert b"nested too deep" in encoded

    def test_long_strings_truncated_and_marked(self):
        """Strings over the limit (4096 by default) are cut and say how much was cut."""
        tags = _wire.safe_tags({"big": "x" * 4106})
        assert tags["big"].endswith("…[truncated 10 chars]")
        assert len(tags["big"]) < 4096 + 40

    def test_non_string_keys_and_names(self):
        """Non-string tag keys go through str(); empty or non-string span names get a fallback."""
        assert _wire.safe_tags({1: "a", (2, 3): "b", None: "c"}) == {"1": "a", "(2, 3)": "b", "None": "c"}
        assert _wire.safe_name("") == "<unnamed>"
        assert _wire.safe_name(42) == "42"

    async def test_a_span_full_of_odd_values_exports(self, tracker, memory):
        """A span with every kind of odd tag, key and name still exports, whole."""
        loop: dict = {}
        loop["self"] = loop
        async with ft.span(12345, weird=Unprintable(), loop=loop, nan=math.nan) as s:  # type: ignore[arg-type]
            s.set_tag(7, b"\x00bytes")  # type: ignore[arg-type]
            with pytest.raises(RuntimeError), ft.span(""):
                raise RuntimeError(Unprintable())
        await tracker.flush()
        root, child = memory.traces[0]["spans"]
        assert root["name"] == "12345"
        assert root["tags"]["weird"].startswith("<unprintable")
        assert root["tags"]["nan"] is None
        assert root["tags"]["7"] == "\x00bytes"
        assert child["name"] == "<unnamed>"
        assert child["error"]["type"] == "RuntimeError"

    @settings(max_examples=200, deadline=None)
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
            lambda inner: (
                st.lists(inner)
                | st.dictionaries(st.text() | st.integers(), inner)
                | st.frozensets(st.integers())
                | st.tuples(inner, inner)
            ),
            max_leaves=30,
        )
    )
    def test_any_value_encodes(self, value):
        """Any mix of JSON-ish and odd values encodes to valid JSON."""
        import orjson

        orjson.loads(_wire.encode(_wire.safe_tags({"v": value, 3: value})))


class TestTagFastPath:
    """``safe_tags`` hands plain tags on uncopied; it must export exactly what the cleaning path does."""

    @settings(max_examples=300, deadline=None)
    @given(
        st.dictionaries(
            st.one_of(st.text(max_size=12), st.sampled_from(["password", "db.token", "rows", "user"])),
            st.one_of(
                st.text(max_size=40),
                st.booleans(),
                st.none(),
                st.integers(min_value=-(1 << 70), max_value=1 << 70),
                st.floats(allow_nan=True, allow_infinity=True),
                st.binary(max_size=8),
            ),
            max_size=6,
        )
    )
    def test_fast_and_cleaning_paths_agree(self, tags: dict[str, object]) -> None:
        """For any tags, the returned mapping equals the cleaning path's, twice (verdicts cached)."""
        from flowtracker._wire.policy import ExportPolicy

        policy = ExportPolicy(max_string=16)
        expected = _wire.encode(_wire._cleaned_tags(tags, ExportPolicy(max_string=16)))
        assert _wire.encode(_wire.safe_tags(tags, policy)) == expected
        assert _wire.encode(_wire.safe_tags(tags, policy)) == expected  # now from the verdict cache

    def test_plain_tags_are_not_copied(self) -> None:
        """Known, non-secret keys with plain values come back as the same dict."""
        tags = {"rows": 3, "db.system": "postgres", "hit": True, "ratio": 0.5, "none": None}
        _wire.safe_tags(tags)  # learns the verdicts
        assert _wire.safe_tags(tags) is tags


def escaped(raw: bytes) -> str:
    """``raw`` decoded as aiohttp, os.fsdecode and sys.argv do: bad bytes become lone surrogates."""
    return raw.decode("utf-8", "surrogateescape")


class TestHostileStrings:
    """Lone surrogates (what ``surrogateescape`` makes of bad bytes) are escaped wherever a string goes."""

    def test_surrogateescape_bytes_become_their_byte_and_others_their_code_point(self) -> None:
        """U+DC80..U+DCFF read as the byte they stand for (``\\xff``), others as ``\\udXXX``."""
        assert _wire.encodable_text(escaped(b"curl/\xff")) == "curl/\\xff"
        assert _wire.encodable_text("a\ud800b\udc00") == "a\\ud800b\\udc00"
        assert _wire.encodable_text("caf\u00e9 \U0001f600") == "caf\u00e9 \U0001f600"

    def test_valid_text_and_dicts_are_not_copied(self) -> None:
        """The common case costs no copy: valid text and an encodable dict come back as they are."""
        text = "plain text, caf\u00e9"
        assert _wire.encodable_text(text) is text
        data = {"a": [1, "b"]}
        assert _wire.encoded(data)[0] is data

    async def test_every_string_of_a_trace_is_escaped(self) -> None:
        """Name, tag key and value, event name and attribute, error message, service: exported, escaped."""
        bad = escaped(b"\xff")
        memory = ft.MemoryExporter()
        async with ft.Tracker(exporters=[memory], service=f"svc{bad}") as tracker:
            span = ft.start_span(f"GET /{bad}", **{f"key{bad}": f"value{bad}"})
            span.add_event(f"event{bad}", **{f"attr{bad}": [f"item{bad}", {f"k{bad}": bad}]})
            with pytest.raises(ValueError, match="message"), span:
                raise ValueError(f"message{bad}")
        assert tracker.stats.exporters["memory"].exported == 1
        trace = memory.traces[0]
        record = memory.records[0]
        assert record.to_dict() == trace == orjson.loads(record.to_json())
        span_dict = trace["spans"][0]
        assert trace["service"] == "svc\\xff"
        assert span_dict["name"] == "GET /\\xff"
        assert span_dict["tags"] == {"key\\xff": "value\\xff"}
        assert span_dict["events"][0]["name"] == "event\\xff"
        assert span_dict["events"][0]["attributes"] == {"attr\\xff": ["item\\xff", {"k\\xff": "\\xff"}]}
        assert span_dict["error"]["message"] == "message\\xff"

    def test_odd_values_holding_surrogates_are_escaped(self) -> None:
        """Surrogates inside sets, tuples, non-string keys and str() of objects are escaped too."""
        bad = escaped(b"\xfe")

        class Named:
            def __str__(self) -> str:
                return f"named{bad}"

        tags = _wire.safe_tags({"set": {bad}, "tuple": (bad,), 3: Named(), "obj": Named()})
        assert orjson.loads(_wire.encode(tags)) == {
            "set": ["\\xfe"],
            "tuple": ["\\xfe"],
            "3": "named\\xfe",
            "obj": "named\\xfe",
        }

    def test_a_value_whose_own_methods_raise_becomes_its_text(self) -> None:
        """A list subclass whose ``__getitem__`` raises costs only itself: its str() stands in."""

        class Hostile(list):  # type: ignore[type-arg]
            def __getitem__(self, index: object) -> object:
                raise RuntimeError("no items")

        assert _wire.safe_value(Hostile([1, 2])) == "[1, 2]"

    @settings(max_examples=200, deadline=None)
    @given(
        st.text(alphabet=st.characters(exclude_categories=()), min_size=1, max_size=40),
        st.dictionaries(
            st.text(alphabet=st.characters(exclude_categories=()), max_size=8),
            st.text(alphabet=st.characters(exclude_categories=()), max_size=20) | st.integers(),
            max_size=4,
        ),
    )
    def test_any_unicode_string_exports(self, name: str, tags: dict[str, object]) -> None:
        """Any code points, surrogates included, in names and tags: the trace exports as valid UTF-8 JSON."""
        from flowtracker.testing import capture_traces

        with capture_traces(service=name) as traces, ft.span(name, **tags):  # type: ignore[arg-type]
            pass
        assert len(traces) == 1
        text = json.dumps(traces[0], ensure_ascii=False)
        text.encode("utf-8")  # strict: raises on any surrogate left
        assert traces[0]["spans"][0]["name"] == _wire.encodable_text(name)
        assert traces[0]["service"] == _wire.encodable_text(name)


def strictly_valid(data: object) -> None:
    """Every string in ``data`` is valid Unicode: strict UTF-8 encoding of its JSON raises otherwise."""
    json.dumps(data, ensure_ascii=False).encode("utf-8")


class Kept:
    """An exporter that keeps the records untouched (MemoryExporter encodes them to JSON first)."""

    name = "kept"

    def __init__(self) -> None:
        self.records: list[ft.Trace] = []

    async def export(self, traces: list[ft.Trace]) -> None:
        self.records.extend(traces)

    async def aclose(self) -> None:
        pass


class TestValidAsBuilt:
    """``Trace.to_dict()`` is valid as the encoder builds it, with no JSON pass over it."""

    async def test_to_dict_is_valid_before_any_json_is_made(self) -> None:
        """A trace with lone surrogates in its name, tags, event, error and service: to_dict() on a
        fresh record (to_json never called) is strictly valid, and to_json() agrees with it."""
        bad = escaped(b"\xff")
        memory = Kept()
        async with ft.Tracker(exporters=[memory], service=f"svc{bad}"):
            span = ft.start_span(f"GET /{bad}", **{f"key{bad}": f"value{bad}", "plain": "café"})
            span.add_event(f"event{bad}", attr=bad)
            with pytest.raises(ValueError, match="message"), span:
                raise ValueError(f"message{bad}")
        record = memory.records[0]
        data = record.to_dict()
        strictly_valid(data)
        assert data["spans"][0]["tags"] == {"key\\xff": "value\\xff", "plain": "café"}
        assert orjson.loads(record.to_json()) == data

    def test_a_raw_key_is_escaped_after_its_escaped_spelling_was_exported(self) -> None:
        """The tag fast path trusts keys it has seen; ``key\\xff`` written out as text first, then
        the same key holding a real lone surrogate: the second is still escaped, not passed on;
        and a value holding one under the known key is escaped too."""
        from flowtracker._wire.policy import ExportPolicy

        policy = ExportPolicy()
        bad = escaped(b"\xff")
        assert _wire.safe_tags({"key\\xff": 1}, policy) == {"key\\xff": 1}
        assert _wire.safe_tags({"key\\xff": 1}, policy) == {"key\\xff": 1}  # known now
        cleaned = _wire.safe_tags({f"key{bad}": 1}, policy)
        assert cleaned == {"key\\xff": 1}
        strictly_valid(cleaned)
        assert _wire.safe_tags({"key\\xff": f"value{bad}"}, policy) == {"key\\xff": "value\\xff"}

    def test_keys_are_escaped_with_redaction_off(self) -> None:
        """redact_keys=() turns the secret check off, not the key check: a key holding a lone
        surrogate is escaped, twice in a row."""
        from flowtracker._wire.policy import ExportPolicy

        policy = ExportPolicy(redact_keys=())
        bad = escaped(b"\xfe")
        for _ in range(2):
            cleaned = _wire.safe_tags({f"k{bad}": "v", "password": "x"}, policy)
            assert cleaned == {"k\\xfe": "v", "password": "x"}

    async def test_kind_and_error_type_are_escaped(self) -> None:
        """The rare fields are checked too: a span kind and an exception class name holding lone
        surrogates come out escaped."""
        bad = escaped(b"\xfd")
        hostile = type("Error", (Exception,), {})
        # A class statement refuses such names; setting them afterwards does not.
        hostile.__module__, hostile.__qualname__ = f"mod{bad}", f"Error{bad}"
        memory = Kept()
        async with ft.Tracker(exporters=[memory]):
            root = ft.start_root_span("job", kind=f"server{bad}")
            with pytest.raises(hostile), root:
                raise hostile("boom")
        data = memory.records[0].to_dict()
        strictly_valid(data)
        span = data["spans"][0]
        assert span["kind"] == "server\\xfd"
        assert span["error"]["type"] == "mod\\xfd.Error\\xfd"

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.dictionaries(
                st.text(alphabet=st.characters(exclude_categories=()), max_size=6),
                st.text(alphabet=st.characters(exclude_categories=()), max_size=10) | st.integers(),
                max_size=3,
            ),
            min_size=1,
            max_size=4,
        )
    )
    def test_any_run_of_tags_is_valid_as_built(self, runs: list[dict[str, object]]) -> None:
        """Any tags, surrogates included, through one policy span after span (its cache warming up):
        each result is strictly valid and equals what encoding the cleaned copy gives."""
        from flowtracker._wire.policy import ExportPolicy

        policy = ExportPolicy()
        for tags in runs:
            out = _wire.safe_tags(tags, policy)
            strictly_valid(dict(out))
            assert orjson.loads(_wire.encode(out)) == orjson.loads(
                _wire.encode(_wire._cleaned_tags(tags, ExportPolicy()))
            )
