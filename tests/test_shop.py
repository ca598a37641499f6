"""examples/shop/ run as its README says: real uvicorn and aiohttp processes on real PostgreSQL and Redis.

The FastAPI shop (under uvicorn) and the aiohttp shop (``web.run_app``) each
serve the same routes, call the inventory service (a second uvicorn process)
over httpx, and export to a JSON Lines file through ``FLOWTRACKER_EXPORTERS``.
Each is stopped with Ctrl-C, then its traces are read back and checked: span
names, their nesting, the SQL statements, the Redis and httpx client spans,
the inventory service's record joined by trace id, and the blocked-loop event
on the deliberately blocking endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from asyncio.subprocess import PIPE
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio
from redis_server import redis_url  # noqa: F401  (the session's Redis)

from tests.postgres_server import PostgresServer, free_port, postgres  # noqa: F401

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"


@dataclass
class Service:
    """A service process of the example, and where its traces go."""

    process: asyncio.subprocess.Process
    url: str
    traces: Path
    output: list[bytes] = field(default_factory=list)

    async def stop(self) -> list[dict[str, Any]]:
        """Ctrl-C, as a user stops it; then the traces it flushed on the way out."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.output[:] = await asyncio.wait_for(self.process.communicate(), 60)
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode == 0, self.output
        return [json.loads(line) for line in self.traces.read_text().splitlines()]


async def start(command: list[str], env: dict[str, str], traces: Path, port: int) -> Service:
    """Starts ``command`` in examples/shop with traces going to ``traces``; returns once it answers."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=SHOP, env={**env, "FLOWTRACKER_EXPORTERS": traces.as_uri()}, stdout=PIPE, stderr=PIPE
    )
    service = Service(process, f"http://127.0.0.1:{port}", traces)
    async with aiohttp.ClientSession() as client:
        for _ in range(600):
            if process.returncode is not None:
                raise AssertionError(f"{command} exited: {await process.communicate()}")
            try:
                async with client.get(service.url + "/health"):
                    return service
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError(f"{command} never answered: {await process.communicate()}")


def uvicorn(module: str, port: int) -> list[str]:
    """The README's uvicorn command (asyncio's own loop, which the loop monitor watches)."""
    return [sys.executable, "-m", "uvicorn", f"{module}:app", "--port", str(port), "--loop", "asyncio",
            "--log-level", "warning"]  # fmt: skip


async def fresh_state(postgres: PostgresServer, redis_url: str, database: str) -> str:  # noqa: F811
    """An empty database (the shop creates its tables) and no cached product; the database's URL."""
    connection = await asyncpg.connect(postgres.dsn)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {database}")
        await connection.execute(f"CREATE DATABASE {database}")
    finally:
        await connection.close()
    cache = redis.asyncio.Redis.from_url(redis_url)
    try:
        await cache.delete("product:2")
    finally:
        await cache.aclose()
    return postgres.dsn.rsplit("/", 1)[0] + "/" + database


@dataclass
class Run:
    """What one shop did: its trace records by root span name, and the inventory's."""

    shop: dict[str, list[dict[str, Any]]]
    inventory: list[dict[str, Any]]
    answers: dict[str, Any]


async def exercise(kind: str, postgres: PostgresServer, redis_url: str, folder: Path) -> Run:  # noqa: F811
    """Runs the inventory and one shop as the README says, sends the shop the README's requests, stops
    both with Ctrl-C and returns their traces."""
    shop_dsn = await fresh_state(postgres, redis_url, f"shop_{kind}")
    inventory_port, port = free_port(), free_port()
    served_at = folder / "inventory.jsonl"
    inventory = await start(uvicorn("inventory", inventory_port), dict(os.environ), served_at, inventory_port)
    env = {**os.environ, "DATABASE_URL": shop_dsn, "REDIS_URL": redis_url, "INVENTORY_URL": inventory.url}
    command = (
        uvicorn("fastapi_app", port)
        if kind == "fastapi"
        else [sys.executable, "aiohttp_app.py", "--port", str(port)]
    )
    answers: dict[str, Any] = {}
    try:
        shop = await start(command, env, folder / f"{kind}.jsonl", port)
        try:
            async with aiohttp.ClientSession(shop.url) as client:
                # product 2 is fetched twice: a cache miss (PostgreSQL), then a hit (Redis only)
                for number, path in enumerate(["/products/2", "/products/2"]):
                    async with client.get(path) as response:
                        answers[f"product {number}"] = (response.status, await response.json())
                async with client.post("/orders", json={"product_id": 2, "quantity": 3}) as response:
                    answers["order"] = (response.status, await response.json())
                async with client.get("/report") as response:
                    answers["report"] = (response.status, await response.json())
                async with client.get("/health") as response:
                    answers["health"] = response.status
        finally:
            records = await shop.stop()
    finally:
        served = await inventory.stop()
    by_root: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_root.setdefault(root_of(record)["name"], []).append(record)
    return Run(by_root, served, answers)


@pytest.fixture(scope="module", params=["fastapi", "aiohttp"])
def run(
    request: pytest.FixtureRequest,
    postgres: PostgresServer,  # noqa: F811
    redis_url: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    """One shop (FastAPI under uvicorn, or aiohttp's web.run_app), exercised and stopped, once per module."""
    return asyncio.run(exercise(request.param, postgres, redis_url, tmp_path_factory.mktemp(request.param)))


def root_of(record: dict[str, Any]) -> dict[str, Any]:
    ids = {span["span_id"] for span in record["spans"]}
    (root,) = [span for span in record["spans"] if span.get("parent_id") not in ids]
    return root


def children(record: dict[str, Any], parent: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans whose parent is ``parent``, by start time."""
    found = [span for span in record["spans"] if span.get("parent_id") == parent["span_id"]]
    return sorted(found, key=lambda span: span["start_time"])


def named(record: dict[str, Any], name: str) -> dict[str, Any]:
    (span,) = [span for span in record["spans"] if span["name"] == name]
    return span


@pytest.mark.slow
class TestShop:
    """Both shops, as a user runs them, traced end to end."""

    def test_answers_and_one_trace_per_traced_request(self, run: Run) -> None:
        """The routes answer as documented; each request but /health is one trace of service ``shop``."""
        assert run.answers["product 0"] == (
            200, {"id": 2, "name": "Notebook", "price_cents": 1200, "stock": 40}
        )  # fmt: skip
        assert run.answers["product 1"] == run.answers["product 0"]
        assert run.answers["order"][0] == 201
        assert run.answers["report"] == (200, {"products": 1, "units": 3})
        assert run.answers["health"] == 200
        assert {name: len(records) for name, records in run.shop.items()} == {
            "GET /products/{product_id}": 2,
            "POST /orders": 1,
            "GET /report": 1,
        }
        assert {record["service"] for records in run.shop.values() for record in records} == {"shop"}

    def test_cache_miss_reads_postgres_through_sqlalchemy_then_fills_redis(self, run: Run) -> None:
        """A miss: ``load product`` holds the Redis ``GET``, the SQLAlchemy ``SELECT products`` (its
        statement with a placeholder, never the value) and the Redis ``SET``; then the httpx call."""
        miss, hit = run.shop["GET /products/{product_id}"]
        root = root_of(miss)
        assert root["kind"] == "server"
        assert root["tags"]["http.status_code"] == 200
        assert [span["name"] for span in children(miss, root)] == [
            "load product",
            f"HTTP GET 127.0.0.1:{run_port(miss)}/stock/2",
        ]
        load = named(miss, "load product")
        # SQLAlchemy's own round trips (BEGIN, ROLLBACK on returning the connection) come along
        inside = [span["name"] for span in children(miss, load)]
        assert inside[0] == "GET"
        assert inside[-1] == "SET"
        assert inside.count("SELECT products") == 1
        assert set(inside) <= {"GET", "BEGIN", "SELECT products", "ROLLBACK", "SET"}, inside
        select = named(miss, "SELECT products")
        assert select["kind"] == "client"
        assert select["tags"]["db.system"] == "postgresql"
        assert select["tags"]["db.statement"] == "SELECT id, name, price_cents FROM products WHERE id = $1"
        get, cache_set = named(miss, "GET"), named(miss, "SET")
        assert get["tags"]["db.system"] == cache_set["tags"]["db.system"] == "redis"
        assert get["tags"]["db.statement"] == "GET product:2"
        assert cache_set["tags"]["db.statement"].startswith("SET product:2 ?")
        assert [span["name"] for span in children(hit, named(hit, "load product"))] == ["GET"]

    def test_httpx_call_continues_into_the_inventory_service(self, run: Run) -> None:
        """The httpx client span carries the call; the inventory service's record has the same trace id
        and its root is a child of that span (the ``traceparent`` header)."""
        assert len(run.inventory) == 2  # the two stock calls; its /health is not traced
        inventory = {record["trace_id"]: record for record in run.inventory}
        for record in run.shop["GET /products/{product_id}"]:
            (call,) = [span for span in record["spans"] if span["name"].startswith("HTTP GET ")]
            assert call["kind"] == "client"
            assert call["tags"]["http.status_code"] == 200
            assert call["tags"]["http.url"].endswith("/stock/2")
            other = inventory[record["trace_id"]]
            assert other["service"] == "inventory"
            assert root_of(other)["name"] == "GET /stock/{product_id}"
            assert root_of(other)["parent_id"] == call["span_id"]
            assert [span["name"] for span in other["spans"]].count("count stock") == 1

    def test_order_is_written_through_plain_asyncpg(self, run: Run) -> None:
        """``POST /orders``: an asyncpg ``INSERT orders`` span inside the transaction's BEGIN/COMMIT."""
        (record,) = run.shop["POST /orders"]
        insert = named(record, "INSERT orders")
        assert insert["kind"] == "client"
        assert insert["tags"]["db.system"] == "postgresql"
        assert insert["tags"]["db.statement"] == (
            "INSERT INTO orders (product_id, quantity) VALUES ($1, $2) RETURNING id"
        )
        names = [span["name"] for span in children(record, root_of(record))]
        assert names.index("BEGIN") < names.index("INSERT orders") < names.index("COMMIT")
        assert root_of(record)["tags"]["order.id"] == run.answers["order"][1]["order_id"]

    def test_blocking_endpoint_is_marked_with_its_stack(self, run: Run) -> None:
        """``GET /report`` blocked the loop in ``build_report``: that span (and no other) carries the
        ``event_loop.blocked`` event, at least the threshold long, its stack naming catalog.py first;
        every span carries its busy time."""
        (record,) = run.shop["GET /report"]
        blocked = [
            (span["name"], event)
            for span in record["spans"]
            for event in span.get("events", ())
            if event["name"] == "event_loop.blocked"
        ]
        assert [name for name, _ in blocked] == ["build_report"]
        attributes = blocked[0][1]["attributes"]
        assert attributes["duration_ms"] >= 100
        assert "catalog.py" in attributes["stack"].splitlines()[0]
        assert "in build_report" in attributes["stack"].splitlines()[0]
        assert named(record, "build_report")["busy_ms"] >= attributes["duration_ms"] - 1
        assert all("busy_ms" in span for records in run.shop.values() for r in records for span in r["spans"])
        for records in (run.shop["GET /products/{product_id}"], run.shop["POST /orders"]):
            for other in records:
                assert not any(
                    event["name"] == "event_loop.blocked"
                    for span in other["spans"]
                    for event in span.get("events", ())
                )


def run_port(record: dict[str, Any]) -> str:
    """The inventory's port, as the httpx span names it."""
    (call,) = [span for span in record["spans"] if span["name"].startswith("HTTP GET ")]
    return str(call["tags"]["http.url"].split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
