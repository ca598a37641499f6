"""The serve store (real SQLite files) and a fuzz test over the OTLP decoders."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import protobuf_body, wire_span

from flowtracker._wire.otlp import otlp_request_dict, span_records, traces_from_request
from flowtracker._wire.otlp_proto import BodyError, parse_request
from flowtracker._wire.policy import ExportPolicy
from flowtracker.serve import schema
from flowtracker.serve.ingest import BodyTooLarge, gunzip
from flowtracker.serve.queries import SUMMARY_COLUMNS, Filters, get_trace, list_traces
from flowtracker.serve.rows import rows_of, span_dict
from flowtracker.serve.schema import StoreRefused, open_database
from flowtracker.serve.store import Store, StoreBusy


def trace(number: int, spans: int = 3, service: str = "svc") -> dict[str, Any]:
    """Trace ``number`` starts ``number`` ms into the day: higher numbers are newer."""
    root = wire_span(f"{number:08x}{0:08x}", f"t{number}", start_us=number * 1000, ms=2)
    children = [
        wire_span(f"{number:08x}{n:08x}", "child", root["span_id"], start_us=number * 1000 + n)
        for n in range(1, spans)
    ]
    return {"trace_id": f"{number:032x}", "service": service, "spans": [root, *children]}


async def store_traces(store: Store, traces: list[dict[str, Any]]) -> None:
    rows, bad = rows_of(traces)
    assert bad == 0
    await store.write(rows)


async def listed(store: Store, **filters: Any) -> list[str]:
    found = await store.query(list_traces, Filters(**{"limit": 1000, **filters}))
    return [summary["name"] for summary in found]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestStore:
    async def test_a_restart_keeps_the_store(self, tmp_path: Path) -> None:
        """Traces written, the store closed and opened again: the same traces, spans and summaries."""
        path = str(tmp_path / "s.db")
        store = Store(path)
        store.open()
        await store_traces(store, [trace(1), trace(2)])
        store.close()
        again = Store(path)
        again.open()
        try:
            assert await listed(again) == ["t2", "t1"]
            body = await again.query(get_trace, f"{1:032x}")
            assert len(orjson.loads(body)["spans"]) == 3
            assert again.trace_count == 2
        finally:
            again.close()

    async def test_one_trace_from_a_file_and_over_otlp_reads_back_whole(self, tmp_path: Path) -> None:
        """Spans kept as wire JSON (a file) and as ``Span`` messages (OTLP) in one trace read back alike.

        Each reads back as the span it was, with its service, in start order.
        """
        store = Store(str(tmp_path / "s.db"))
        store.open()
        try:
            whole = trace(1, spans=4)
            from_file = {**whole, "spans": whole["spans"][:2]}
            over_otlp = {**whole, "service": "api", "spans": whole["spans"][2:]}
            await store_traces(store, [from_file])
            records = span_records(parse_request(protobuf_body([over_otlp]), "application/x-protobuf"))
            assert {record[9][:1] for record in records.records} == {b"\x0a"}  # kept as Span messages
            await store.write(records.records)
            body = await store.query(get_trace, f"{1:032x}")
            assert body is not None
            expected = [{**span, "service": "svc"} for span in from_file["spans"]]
            expected += [{**span, "service": "api"} for span in over_otlp["spans"]]
            assert orjson.loads(body)["spans"] == expected
        finally:
            store.close()

    async def test_two_servers_on_one_file_keep_their_traces_apart(self, tmp_path: Path) -> None:
        """Two stores writing one file in turns (two ``serve``s on the default ``--db``) never share a number.

        Each trace reads back with its own spans only, and the numbers are unique.
        """
        path = str(tmp_path / "s.db")
        first, second = Store(path), Store(path)
        first.open()
        second.open()
        try:
            for number in range(1, 9):
                await store_traces(first if number % 2 else second, [trace(number, spans=number)])
            for number in range(1, 9):
                body = await first.query(get_trace, f"{number:032x}")
                assert body is not None
                owners = [span["span_id"][:8] for span in orjson.loads(body)["spans"]]
                assert owners == [f"{number:08x}"] * number
        finally:
            first.close()
            second.close()
        with contextlib.closing(sqlite3.connect(path)) as connection:
            assert sorted(row[0] for row in connection.execute("SELECT seq FROM traces")) == list(range(1, 9))

    async def test_max_traces_evicts_the_oldest_whole_traces(self, tmp_path: Path) -> None:
        """Past ``max_traces`` the oldest traces (by start time) go, all their spans, after a restart too."""
        path = str(tmp_path / "s.db")
        store = Store(path, max_traces=10)
        store.open()
        await store_traces(
            store, [trace(n) for n in range(30, 10, -1)]
        )  # newest first: eviction is by start time
        await store_traces(store, [trace(n) for n in range(1, 5)])  # older than all: gone at once
        store.close()
        store = Store(path, max_traces=10)
        store.open()
        try:
            await store_traces(store, [trace(31)])
            assert await listed(store) == [f"t{n}" for n in range(31, 21, -1)]
            spans = await store.query(lambda c: c.execute("SELECT count(*) FROM spans").fetchone()[0])
            assert spans == 30
        finally:
            store.close()

    async def test_memory_store_keeps_nothing(self) -> None:
        """``:memory:`` lives in a temporary file that is gone after close."""
        store = Store(":memory:")
        store.open()
        await store_traces(store, [trace(1)])
        file = Path(store._file)
        assert file.exists()  # noqa: ASYNC240 - a local stat, in a test
        store.close()
        assert not file.parent.exists()

    async def test_ingest_never_waits_on_a_query(self, tmp_path: Path) -> None:
        """A reader holding a read transaction open does not hold up a write (WAL)."""
        store = Store(str(tmp_path / "s.db"))
        store.open()
        reader = sqlite3.connect(str(tmp_path / "s.db"))
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM spans").fetchone()  # a snapshot held open
            await asyncio.wait_for(store_traces(store, [trace(1)]), 5)
            assert await listed(store) == ["t1"]
        finally:
            reader.close()
            store.close()

    async def test_a_full_queue_is_busy_not_unbounded(self, tmp_path: Path) -> None:
        """Past ``max_pending`` queued spans, a write is refused at once (the receivers answer 503)."""
        path = str(tmp_path / "s.db")
        store = Store(path, max_pending=5)
        store.open()
        blocker = sqlite3.connect(path, timeout=0)
        try:
            blocker.execute("BEGIN EXCLUSIVE")  # the writer waits for this lock
            first = store.submit(rows_of([trace(1)])[0])
            while store.pending:  # noqa: ASYNC110 - the writer takes it, then waits for the lock
                await asyncio.sleep(0.01)
            second = store.submit(rows_of([trace(2)])[0])
            with pytest.raises(StoreBusy):
                store.submit(rows_of([trace(3)])[0])
            blocker.execute("ROLLBACK")
            await asyncio.wrap_future(first)
            await asyncio.wrap_future(second)
            assert await listed(store) == ["t2", "t1"]
        finally:
            blocker.close()
            store.close()

    async def test_name_filter_reads_the_same_through_every_path(self, tmp_path: Path) -> None:
        """``name`` gives the same answer whether few names match (by name), many do, or none does.

        600 traces with a name each (more names match than are looked up one
        by one, so each trace's name is tested on the walk), 30 sharing a rare
        one (read through the name index), and a needle no name holds.
        """
        store = Store(str(tmp_path / "s.db"))
        store.open()
        try:
            traces = [trace(n) for n in range(1, 601)]
            for number in range(601, 631):
                rare = trace(number)
                rare["spans"][0]["name"] = "GET /Rare"
                traces.append(rare)
            await store_traces(store, traces)
            names = [f"t{n}" for n in range(600, 0, -1)]
            assert await listed(store, name="t5") == [name for name in names if "t5" in name]
            assert await listed(store, name="T5") == [name for name in names if "t5" in name]
            assert await listed(store, name="rare") == ["GET /Rare"] * 30
            assert await listed(store, name="RARE", limit=3) == ["GET /Rare"] * 3
            assert await listed(store, name="nothing") == []
        finally:
            store.close()

    async def test_eviction_forgets_names_no_trace_has(self, tmp_path: Path) -> None:
        """An evicted trace's name leaves the name list when no kept trace has it."""
        store = Store(str(tmp_path / "s.db"), max_traces=2)
        store.open()
        try:
            await store_traces(store, [trace(1), trace(2), trace(3)])
            names = await store.query(lambda c: sorted(row[0] for row in c.execute("SELECT name FROM names")))
            assert names == ["t2", "t3"]
            assert await listed(store, name="t1") == []
        finally:
            store.close()

    def test_unstorable_spans_are_counted(self) -> None:
        """A span without a valid id, name, status or time is counted, not stored; its siblings are."""
        good = wire_span("a" * 16, "good")
        bad = [{**good, "span_id": "x"}, {**good, "name": 3}, {**good, "status": "weird"},
               {**good, "start_time": "yesterday"}, "not a span",
               {**good, "parent_id": "0" * 16}]  # fmt: skip
        rows, skipped = rows_of(
            [{"trace_id": "1" * 32, "spans": [good, *bad]}, {"trace_id": "nope", "spans": [good]}]
        )
        assert (len(rows), skipped) == (1, 7)


#: What schema 1 had beyond schema 2: four span indexes that no query read.
V1_SPAN_INDEXES = ("spans_service", "spans_start", "spans_name", "spans_status")
#: The spans table of schemas 1 and 2: keyed by trace id, bodies always wire JSON.
V2_SPANS = """
CREATE TABLE spans (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT, service TEXT NOT NULL, name TEXT NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, status TEXT NOT NULL, blocked INTEGER NOT NULL,
    body BLOB NOT NULL, extra BLOB, UNIQUE (trace_id, span_id))
"""
#: The traces table of schemas 1 and 2: no ``seq``.
V2_TRACES = """
CREATE TABLE traces (
    trace_id TEXT PRIMARY KEY, name TEXT NOT NULL, service TEXT NOT NULL, services TEXT NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, span_count INTEGER NOT NULL, status TEXT NOT NULL,
    blocked INTEGER NOT NULL, extra BLOB) WITHOUT ROWID
"""


def make_v1_store(path: Path) -> None:
    """An empty store as flowtracker's schema 1 wrote it."""
    open_database(str(path)).close()
    downgrade_to_v1(path)


def downgrade_to_v2(path: Path) -> None:
    """Turns a store of JSON Lines spans into what schema 2 wrote: spans keyed by trace id, no ``seq``."""
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("ALTER TABLE spans RENAME TO spans_3")
        connection.execute(V2_SPANS)
        connection.execute(
            "INSERT INTO spans SELECT traces.trace_id, span_id, parent_id, spans_3.service, spans_3.name, "
            "spans_3.start_ns, spans_3.end_ns, spans_3.status, spans_3.blocked, body, spans_3.extra "
            "FROM spans_3 JOIN traces ON traces.seq = spans_3.trace_seq"
        )
        connection.execute("DROP TABLE spans_3")
        connection.execute("ALTER TABLE traces RENAME TO traces_3")
        connection.execute(V2_TRACES)
        connection.execute(f"INSERT INTO traces SELECT {SUMMARY_COLUMNS}, extra FROM traces_3")
        connection.execute("DROP TABLE traces_3")
        connection.execute("CREATE INDEX traces_list ON traces (start_ns, status, blocked, end_ns, name)")
        connection.execute("CREATE INDEX traces_name ON traces (name, start_ns)")
        connection.execute("PRAGMA user_version = 2")


def downgrade_to_v1(path: Path) -> None:
    """Turns a store into what schema 1 wrote: schema 2 plus four span indexes."""
    downgrade_to_v2(path)
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        for index, column in zip(V1_SPAN_INDEXES, ("service", "start_ns", "name", "status"), strict=True):
            connection.execute(f"CREATE INDEX {index} ON spans ({column})")
        connection.execute("PRAGMA user_version = 1")


def index_names(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


class TestSchema:
    def test_newer_schema_refused_untouched(self, tmp_path: Path) -> None:
        """A store written by a newer flowtracker is refused, naming the versions; the file is unchanged."""
        path = tmp_path / "s.db"
        make_v1_store(path)
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute("PRAGMA user_version = 7")
        before = digest(path)
        with pytest.raises(StoreRefused, match=r"newer flowtracker .*schema 7"):
            open_database(str(path))
        assert digest(path) == before

    def test_foreign_and_garbage_files_refused_untouched(self, tmp_path: Path) -> None:
        """Another application's SQLite file, and a file that is not SQLite, are refused unchanged."""
        foreign = tmp_path / "other.db"
        with contextlib.closing(sqlite3.connect(foreign)) as connection:
            connection.execute("CREATE TABLE notes (text TEXT)")
        garbage = tmp_path / "garbage.db"
        garbage.write_bytes(b"hello, not a database" * 100)
        for path, words in ((foreign, "another application"), (garbage, "not a SQLite database")):
            before = digest(path)
            with pytest.raises(StoreRefused, match=words):
                open_database(str(path))
            assert digest(path) == before

    @pytest.mark.parametrize("version", [1, 2])
    async def test_older_store_migrated_with_its_traces(self, tmp_path: Path, version: int) -> None:
        """A store written by schema 1 or 2 opens as schema 3, its traces kept and numbered.

        Schema 1's unused span indexes are dropped; spans come to name their
        trace by ``traces.seq``. The traces are read back through the list and
        by id, new spans join a stored trace, and a new trace gets a number of
        its own, so the migrated file works as a new one does.
        """
        path = tmp_path / "s.db"
        store = Store(str(path))
        store.open()
        await store_traces(store, [trace(1), trace(2), trace(3, spans=2)])
        store.close()
        (downgrade_to_v1 if version == 1 else downgrade_to_v2)(path)
        assert bool(set(V1_SPAN_INDEXES) & index_names(path)) == (version == 1)

        store = Store(str(path))
        store.open()
        try:
            assert not set(V1_SPAN_INDEXES) & index_names(path)
            assert await listed(store) == ["t3", "t2", "t1"]
            late = {**trace(1, spans=5), "spans": trace(1, spans=5)["spans"][3:]}
            await store_traces(store, [late, trace(4)])
            counts = {}
            for number in (1, 2, 3, 4):
                body = await store.query(get_trace, f"{number:032x}")
                assert body is not None
                counts[number] = len(orjson.loads(body)["spans"])
            assert counts == {1: 5, 2: 3, 3: 2, 4: 3}
            assert await listed(store) == ["t4", "t3", "t2", "t1"]
        finally:
            store.close()
        with contextlib.closing(sqlite3.connect(path)) as connection:
            assert connection.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 3
            seqs = [row[0] for row in connection.execute("SELECT seq FROM traces ORDER BY start_ns")]
            assert seqs == [1, 2, 3, 4]

    def test_older_schema_migrated_or_refused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """An older store is migrated in one transaction; a failed or unknown migration leaves it be."""
        path = tmp_path / "s.db"
        open_database(str(path)).close()
        current = schema.SCHEMA_VERSION
        monkeypatch.setattr(schema, "SCHEMA_VERSION", current + 1)
        before = digest(path)
        with pytest.raises(StoreRefused, match=f"schema {current}, which this flowtracker cannot migrate"):
            open_database(str(path))
        assert digest(path) == before

        def broken(connection: sqlite3.Connection) -> None:
            connection.execute("ALTER TABLE traces ADD COLUMN note TEXT")
            raise RuntimeError("migration bug")

        monkeypatch.setitem(schema.MIGRATIONS, current, broken)
        with pytest.raises(RuntimeError, match="migration bug"):
            open_database(str(path))
        with contextlib.closing(sqlite3.connect(path)) as connection:
            assert connection.execute("PRAGMA user_version").fetchone()[0] == current
            assert "note" not in [row[1] for row in connection.execute("PRAGMA table_info(traces)")]

        monkeypatch.setitem(
            schema.MIGRATIONS, current, lambda c: c.execute("ALTER TABLE traces ADD COLUMN note TEXT")
        )
        connection = open_database(str(path))
        assert connection.execute("PRAGMA user_version").fetchone()[0] == current + 1
        assert "note" in [row[1] for row in connection.execute("PRAGMA table_info(traces)")]
        connection.close()


class TestFuzz:
    """Whatever arrives, the decoders answer with a body error or traces: never anything else."""

    policy = ExportPolicy(redact_keys=(), max_string=64)
    valid = protobuf_body([trace(1, spans=4)])

    def decode(self, body: bytes, content_type: str) -> None:
        try:
            message = parse_request(body, content_type)
        except BodyError:
            return
        decoded = traces_from_request(message, self.policy)
        rows, _ = rows_of(decoded.traces)
        assert len(rows) <= decoded.spans
        records = span_records(message, self.policy)  # what ingest stores
        assert len(records.records) == decoded.spans
        assert records.rejected == decoded.rejected
        for record in records.records:  # and every body it keeps reads back as a wire span
            assert span_dict(record[9], record[3])["span_id"] == record[1]

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=400))
    def test_random_bytes(self, body: bytes) -> None:
        """Random bytes as protobuf, as JSON and as gzip are a BodyError or decode cleanly."""
        self.decode(body, "application/x-protobuf")
        self.decode(body, "application/json")
        with contextlib.suppress(BodyError, BodyTooLarge):
            gunzip(body, 1 << 20)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_mutated_valid_protobuf(self, data: st.DataObject) -> None:
        """A valid request with bytes flipped, cut or inserted still never breaks the decoder."""
        body = bytearray(self.valid)
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, len(body) - 1))
            action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
            if action == "flip":
                body[at] ^= data.draw(st.integers(1, 255))
            elif action == "cut":
                del body[at:]
                if not body:
                    break
            else:
                body[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        self.decode(bytes(body), "application/x-protobuf")

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
        | st.sampled_from(["a" * 32, "b" * 16, "zz", "0" * 32]),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
            st.sampled_from(["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "parentSpanId",
                             "links", "attributes", "key", "value", "stringValue", "intValue", "kvlistValue",
                             "arrayValue", "values", "name", "kind", "status", "code", "events",
                             "startTimeUnixNano", "resource"]),
            inner, max_size=4),
        max_leaves=30,
    ))  # fmt: skip
    def test_json_shaped_like_otlp(self, value: Any) -> None:
        """JSON with OTLP's field names in any arrangement is a BodyError or decodes cleanly."""
        for shaped in (value, {"resourceSpans": [value]}):  # stdlib json: big ints and NaN get through
            self.decode(json.dumps(shaped).encode(), "application/json")

    def test_the_json_fuzz_reaches_the_decoder(self) -> None:
        """The JSON path does decode a real request (so the fuzz above is not all rejections)."""
        body = orjson.dumps(otlp_request_dict([trace(1)]))
        assert traces_from_request(parse_request(body, "application/json")).spans == 3
