"""W3C Trace Context: parsing, validation, pass-through and formatting."""

from __future__ import annotations

import re

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from test_aiohttp import serve
from web_helpers import fetch

import flowtracker as ft
from flowtracker._core import SpanContext
from flowtracker.aiohttp import client_trace_config, middleware
from flowtracker.propagation import (
    FLAG_RANDOM,
    FLAG_SAMPLED,
    TraceContext,
    continue_trace,
    extract,
    format_traceparent,
    inject,
    parse_traceparent,
    parse_tracestate,
    traceparent_bytes,
    traceparent_of,
    traceresponse,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"


class TestTraceparent:
    def test_valid_sampled_and_unsampled(self):
        """A version 00 header gives the trace id, parent id and sampled flag."""
        sampled = parse_traceparent(VALID)
        assert sampled == TraceContext(int(TRACE, 16), int(PARENT, 16), FLAG_SAMPLED)
        assert sampled.sampled
        assert not sampled.random
        assert parse_traceparent(f"00-{TRACE}-{PARENT}-00").sampled is False

    def test_version_ff_is_forbidden(self):
        """Version ff is invalid."""
        assert parse_traceparent(f"ff-{TRACE}-{PARENT}-01") is None

    def test_version_00_must_be_exactly_55_characters(self):
        """A version 00 header with anything after the flags is invalid."""
        assert parse_traceparent(VALID + "-extra") is None
        assert parse_traceparent(VALID[:-1]) is None

    def test_higher_version_is_parsed_for_its_known_fields(self):
        """A future version is read for its first four fields when a '-' follows them."""
        context = parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like")
        assert context is not None
        assert context.trace_id == int(TRACE, 16)
        assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01") is not None
        assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01.what-the-future") is None

    def test_version_must_be_two_lowercase_hex_digits(self):
        """A version that is not two lowercase hex digits restarts the trace."""
        for version in ("0x", "AA", "-0", " 0"):
            assert parse_traceparent(f"{version}-{TRACE}-{PARENT}-01") is None

    def test_uppercase_or_foreign_characters_are_invalid(self):
        """Ids and flags must be lowercase hex."""
        assert parse_traceparent(f"00-{TRACE.upper()}-{PARENT}-01") is None
        assert parse_traceparent(f"00-{TRACE}-{PARENT.upper()}-01") is None
        assert parse_traceparent(f"00-{TRACE}-{PARENT}-0G") is None
        assert parse_traceparent(f"00-{TRACE[:-1]}.-{PARENT}-01") is None
        assert parse_traceparent(f"00-{TRACE}-{PARENT[:-1]}_-01") is None

    def test_all_zero_ids_are_invalid(self):
        """An all-zero trace id or parent id is invalid."""
        assert parse_traceparent(f"00-{'0' * 32}-{PARENT}-01") is None
        assert parse_traceparent(f"00-{TRACE}-{'0' * 16}-01") is None

    def test_wrong_delimiters_are_invalid(self):
        """Fields must be separated by single dashes at the fixed positions."""
        assert parse_traceparent(f"00_{TRACE}-{PARENT}-01") is None
        assert parse_traceparent(f"00-{TRACE}_{PARENT}-01") is None
        assert parse_traceparent(f"00-{TRACE}-{PARENT}_01") is None

    def test_surrounding_whitespace_is_ignored(self):
        """Optional whitespace around the value is trimmed."""
        assert parse_traceparent(f" \t{VALID} \t") is not None

    def test_unknown_flags_are_cleared_and_random_kept(self):
        """Only the sampled and random bits survive; others are zeroed."""
        context = parse_traceparent(f"00-{TRACE}-{PARENT}-ff")
        assert context is not None
        assert context.flags == FLAG_SAMPLED | FLAG_RANDOM
        assert parse_traceparent(f"00-{TRACE}-{PARENT}-02").random


class TestHeaderForms:
    @pytest.mark.parametrize(("sampled", "random", "flags"), [(True, False, "01"), (False, False, "00"),
                                                              (True, True, "03"), (False, True, "02")])
    def test_bytes_and_str_forms_name_the_same_span(self, sampled, random, flags):
        """`traceparent_bytes` (what ASGI servers take) and `traceparent_of` (the str for header
        maps) write the same W3C value for every sampled/random combination, ids zero-padded,
        equal to `format_traceparent` of the same ids and flags."""
        context = SpanContext(0x4BF9, 0xB7AD, sampled, random, None)
        expected = f"00-{'0' * 28}4bf9-{'0' * 12}b7ad-{flags}"
        assert traceparent_of(context) == expected
        assert traceparent_bytes(context) == expected.encode("ascii")
        assert format_traceparent(0x4BF9, 0xB7AD, int(flags, 16)) == expected
        assert parse_traceparent(expected) == TraceContext(0x4BF9, 0xB7AD, int(flags, 16))


class TestTracestate:
    def test_multiple_headers_are_joined_and_empty_members_skipped(self):
        """Several headers combine in order; empty members and OWS are dropped."""
        assert parse_tracestate(["rojo=1, ,", "\tcongo=2 "]) == "rojo=1,congo=2"

    def test_empty_header_means_no_tracestate(self):
        """An empty or blank header is accepted and carries nothing."""
        assert parse_tracestate("") is None
        assert parse_tracestate(" , ,\t") is None

    def test_at_most_32_members(self):
        """32 members pass; 33 discard the list."""
        members = [f"k{i}=v" for i in range(33)]
        assert parse_tracestate(",".join(members[:32])) == ",".join(members[:32])
        assert parse_tracestate(",".join(members)) is None


class TestDuplicatedTracestateKeys:
    """W3C test suite `test_tracestate_duplicated_keys` (strict level 2), and Level 2's
    "Mutating the tracestate Field": a list with a repeated key is inherited, and a vendor
    MAY discard the duplicates it did not generate. We keep the left-most entry."""

    def test_same_key_same_value_in_one_header(self):
        """`foo=1,foo=1` is inherited as `foo=1`."""
        assert parse_tracestate("foo=1,foo=1") == "foo=1"

    def test_same_key_different_values_in_one_header(self):
        """`foo=1,foo=2` is inherited with the left-most entry, `foo=1`."""
        assert parse_tracestate("foo=1,foo=2") == "foo=1"

    def test_repeats_across_headers_are_one_list(self):
        """Two `tracestate` headers are joined first, so `foo=1` + `foo=2` behave like `foo=1,foo=2`."""
        assert parse_tracestate(["foo=1", "foo=1"]) == "foo=1"
        assert parse_tracestate(["foo=1", "foo=2"]) == "foo=1"

    def test_other_members_keep_their_order(self):
        """Only the later repeats go; every other member stays where it was."""
        assert parse_tracestate("rojo=1,foo=1, congo=2,foo=3,rojo=4,baz=5") == "rojo=1,foo=1,congo=2,baz=5"

    def test_an_invalid_member_still_discards_the_list(self):
        """A repeat does not excuse a bad key or value elsewhere: the whole list goes."""
        assert parse_tracestate("foo=1,foo=2,Bar=3") is None
        assert parse_tracestate("foo=1,foo=a=b") is None

    def test_the_member_limit_counts_the_list_as_received(self):
        """33 members are too many even when one of them repeats a key."""
        members = [f"k{i}=v" for i in range(32)]
        assert parse_tracestate(",".join([*members, "k0=v"])) is None
        assert parse_tracestate(",".join([*members[:31], "k0=v"])) == ",".join(members[:31])

    def test_traceparent_is_continued_with_the_inherited_tracestate(self):
        """extract: the trace continues, and the context carries the de-duplicated list."""
        context = extract([("traceparent", f"00-{TRACE}-{PARENT}-00"), ("tracestate", "foo=1,foo=2")])
        assert context is not None
        assert context.trace_id == int(TRACE, 16)
        assert context.tracestate == "foo=1"

    def test_level2_key_grammar(self):
        """Keys start with a lowercase letter or digit, use a-z0-9_-*/@, 256 chars at most."""
        assert parse_tracestate("1vendor=x") == "1vendor=x"
        assert parse_tracestate("tenant@system=x") == "tenant@system=x"
        assert parse_tracestate("a_-*/@9=x") == "a_-*/@9=x"
        assert parse_tracestate("k" * 256 + "=x") is not None
        for bad in ("k" * 257, "Vendor", "_vendor", "@vendor", "ven dor", ""):
            assert parse_tracestate(f"{bad}=x") is None, bad

    def test_value_grammar(self):
        """Values are printable ASCII without ',' or '=', 256 chars at most, no trailing space."""
        assert parse_tracestate("k=" + "v" * 256) is not None
        assert parse_tracestate("k=" + "v" * 257) is None
        assert parse_tracestate("k= leading space kept") == "k= leading space kept"
        assert parse_tracestate("k=trailing   ") == "k=trailing"
        for bad in ("a=b", "tab\there", "é", "", " "):
            assert parse_tracestate(f"k={bad}") is None, bad

    def test_member_without_equals_is_invalid(self):
        """A member must be key=value."""
        assert parse_tracestate("rojo=1,congo") is None


class TestDuplicatedKeysEndToEnd:
    """The W3C suite's set-up on loopback: a request with duplicated `tracestate` keys reaches
    a real aiohttp service (flowtracker's middleware), which calls the next service with
    aiohttp's client; the next service must receive the trace and the inherited tracestate."""

    @pytest.mark.parametrize(
        "tracestates",
        [["foo=1,foo=1"], ["foo=1,foo=2"], ["foo=1", "foo=1"], ["foo=1", "foo=2"]],
        ids=["same-value", "different-values", "two-headers-same", "two-headers-different"],
    )
    async def test_next_service_receives_one_foo_in_the_same_trace(self, tracker, tracestates):
        """Trace id continued, parent is the client span, tracestate is `foo=1` (left-most kept)."""
        seen: list[tuple[str, str]] = []

        async def next_service(request: web.Request) -> web.Response:
            seen.extend((name.lower(), value) for name, value in request.headers.items())
            return web.Response(text="ok")

        b_app = web.Application()
        b_app.router.add_post("/callback", next_service)
        async with serve(b_app) as b_url:

            async def service(request: web.Request) -> web.Response:
                async with (
                    aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session,
                    session.post(b_url + "/callback") as response,
                ):
                    return web.Response(text=await response.text())

            a_app = web.Application(middlewares=[middleware(tracker)])
            a_app.router.add_post("/test", service)
            headers = [("traceparent", f"00-{TRACE}-{PARENT}-00")]
            headers += [("tracestate", value) for value in tracestates]
            async with serve(a_app) as a_url:
                status, _, body = await fetch(a_url + "/test", "POST", headers=headers)
        assert (status, body) == (200, b"ok")
        traceparents = [value for name, value in seen if name == "traceparent"]
        assert len(traceparents) == 1
        version, trace_id, parent_id, flags = traceparents[0].split("-")
        assert (version, trace_id, flags) == ("00", TRACE, "00")
        assert parent_id != PARENT
        assert [value for name, value in seen if name == "tracestate"] == ["foo=1"]


class TestExtract:
    def test_header_names_match_in_any_case(self):
        """TraceParent / TRACESTATE are found like their lowercase forms."""
        context = extract({"TraceParent": VALID, "TRACESTATE": "rojo=1"})
        assert context is not None
        assert context.tracestate == "rojo=1"

    def test_asgi_byte_pairs(self):
        """ASGI's list of (bytes, bytes) headers works."""
        context = extract([(b"traceparent", VALID.encode()), (b"tracestate", b"congo=t61rcWkgMzE")])
        assert context is not None
        assert context.parent_id == int(PARENT, 16)

    def test_case_insensitive_multidicts_are_read_with_getall(self):
        """aiohttp's CIMultiDict: any case, repeated tracestate headers joined, duplicates still ambiguous."""
        headers = CIMultiDict([("TraceParent", VALID), ("TRACESTATE", "a=1"), ("tracestate", "b=2")])
        context = extract(headers)
        assert context is not None
        assert context.tracestate == "a=1,b=2"
        headers.add("traceparent", VALID)
        assert extract(headers) is None
        assert extract(CIMultiDict([("tracestate", "a=1")])) is None

    def test_duplicated_traceparent_starts_a_new_trace(self):
        """Two traceparent headers are ambiguous: ignored."""
        assert extract([("traceparent", VALID), ("Traceparent", VALID)]) is None

    def test_missing_traceparent(self):
        """No traceparent, no context (even with a tracestate)."""
        assert extract({"tracestate": "rojo=1"}) is None

    def test_invalid_tracestate_keeps_traceparent(self):
        """A bad tracestate is dropped; the traceparent still counts."""
        context = extract({"traceparent": VALID, "tracestate": "foo=1,FOO=2"})
        assert context is not None
        assert context.trace_id == int(TRACE, 16)
        assert context.tracestate is None


class TestOutgoing:
    def test_format_traceparent(self):
        """Outgoing headers are version 00, lowercase, with only known flags."""
        assert format_traceparent(1, 2, 0xFF) == f"00-{1:032x}-{2:016x}-03"

    async def test_inject_names_the_span_and_its_sampled_decision(self, tracker):
        """inject writes the current span's id and flag 01 for a new, recorded trace."""
        async with ft.span("call") as call:
            headers = inject({"Traceparent": "stale", "x": "1"})
        assert headers == {"x": "1", "traceparent": f"00-{call.trace_id}-{call.span_id_hex}-01"}

    def test_inject_without_a_span_leaves_headers_alone(self):
        """Outside any span nothing is written."""
        assert inject({"a": "b"}) == {"a": "b"}

    async def test_continued_trace_passes_tracestate_and_random_flag_on(self, tracker, memory):
        """A continued trace keeps the trace id; outgoing calls carry its tracestate and random flag."""
        incoming = {"traceparent": f"00-{TRACE}-{PARENT}-03", "tracestate": "rojo=00f067aa0ba902b7,congo=t61"}
        with continue_trace("GET /", incoming) as root:
            async with ft.span("client") as client:
                headers = inject({})
        assert root.trace_id == TRACE
        assert root.parent_id == int(PARENT, 16)
        assert root.kind == "server"
        assert headers == {
            "traceparent": f"00-{TRACE}-{client.span_id_hex}-03",
            "tracestate": "rojo=00f067aa0ba902b7,congo=t61",
        }
        assert traceresponse(root) == f"00-{TRACE}-{root.span_id_hex}-03"
        await tracker.flush()
        assert memory.traces[0]["spans"][0]["parent_id"] == PARENT

    async def test_random_flag_without_tracestate(self, tracker):
        """The random flag is passed on even when no tracestate came in, and no tracestate goes out."""
        with continue_trace("GET /", {"traceparent": f"00-{TRACE}-{PARENT}-02"}) as root:
            headers = inject({})
        assert headers == {"traceparent": f"00-{TRACE}-{root.span_id_hex}-02"}

    async def test_unsampled_caller_is_honoured(self, tracker, memory):
        """Flag 00: nothing is recorded, and calls go out with flag 00 in the same trace."""
        with continue_trace("GET /", {"traceparent": f"00-{TRACE}-{PARENT}-00"}):
            headers = inject({})
        await tracker.flush()
        assert memory.traces == []
        assert headers["traceparent"].startswith(f"00-{TRACE}-")
        assert headers["traceparent"].endswith("-00")

    async def test_invalid_header_starts_a_new_trace(self, tracker):
        """A malformed traceparent gives a fresh trace with no remote parent."""
        with continue_trace("GET /", {"traceparent": f"00-{TRACE}-{PARENT}-0"}) as root:
            pass
        assert root.trace_id != TRACE
        assert root.parent_id is None


# -- fuzzing: the parser against an independent reading of the grammar ------------------

_ORACLE = re.compile(
    r"(?P<v>[0-9a-f]{2})-(?P<t>[0-9a-f]{32})-(?P<p>[0-9a-f]{16})-(?P<f>[0-9a-f]{2})(?P<rest>.*)", re.S
)


def oracle_traceparent(value: str) -> bool:
    match = _ORACLE.fullmatch(value.strip(" \t"))
    if match is None or match["v"] == "ff":
        return False
    if match["v"] == "00" and match["rest"]:
        return False
    if match["rest"] and not match["rest"].startswith("-"):
        return False
    return int(match["t"], 16) != 0 and int(match["p"], 16) != 0


_near_valid = st.lists(st.sampled_from("0123456789abcdefABF-x \t"), min_size=50, max_size=60).map("".join)


def _mutations(valid: str) -> st.SearchStrategy[str]:
    return st.tuples(st.integers(0, len(valid) - 1), st.sampled_from("0fA-. \tz")).map(
        lambda change: valid[: change[0]] + change[1] + valid[change[0] + 1 :]
    )


class TestFuzz:
    @settings(max_examples=400, deadline=None)
    @given(
        st.one_of(
            st.text(max_size=80), _near_valid, _mutations(VALID), _mutations(f"cc-{TRACE}-{PARENT}-01-x")
        )
    )
    def test_traceparent_agrees_with_the_grammar(self, value):
        """Any string is accepted exactly when the specification's grammar accepts it, and never raises."""
        assert (parse_traceparent(value) is not None) == oracle_traceparent(value)

    @settings(max_examples=200, deadline=None)
    @given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255))
    def test_formatted_headers_round_trip(self, trace_id, span_id, flags):
        """What we send, we (and any conforming peer) read back."""
        context = parse_traceparent(format_traceparent(trace_id, span_id, flags))
        assert context == TraceContext(trace_id, span_id, flags & (FLAG_SAMPLED | FLAG_RANDOM))

    _keys = st.one_of(
        st.from_regex(r"[a-z0-9][a-z0-9_\-*/@]{0,20}", fullmatch=True),
        st.text(min_size=0, max_size=6),
        st.sampled_from(["foo", "bar"]),  # repeats, so duplicated keys are exercised often
    )
    _values = st.one_of(st.from_regex(r"[!-+\--<>-~]{1,12}", fullmatch=True), st.text(max_size=6))

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.tuples(_keys, _values), max_size=34), st.sampled_from(["", " ", "\t", " , "]))
    def test_tracestate_agrees_with_the_grammar(self, members, padding):
        """A list is kept (in order, each key's first entry) exactly when every member is valid and <= 32."""
        header = ",".join(f"{padding}{key}={value}" for key, value in members)
        received = [m.strip(" \t") for m in header.split(",") if m.strip(" \t")]
        member_ok = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}=[ -+\--<>-~]{0,255}[!-+\--<>-~]")
        valid = 0 < len(received) <= 32 and all(member_ok.fullmatch(m) for m in received)
        first_per_key: dict[str, str] = {}
        for member in received:
            first_per_key.setdefault(member.split("=", 1)[0], member)
        assert parse_tracestate(header) == (",".join(first_per_key.values()) if valid else None)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["traceparent", "TraceParent", "tracestate", "x"]), st.text())))
    def test_extract_never_raises(self, headers):
        """Arbitrary header lists give a context or None, never an exception."""
        result = extract(headers)
        assert result is None or result.trace_id != 0
