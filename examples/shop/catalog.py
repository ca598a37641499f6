"""What both shop services share: settings, the schema, the queries, and the slow report.

The two shops (``fastapi_app.py`` and ``aiohttp_app.py``) differ only in their
web framework. Everything they do to PostgreSQL, Redis and the inventory
service is here, so the traces of the two have the same shape:

* ``product()``: the Redis cache first (``GET``); on a miss, SQLAlchemy on
  asyncpg (``SELECT products``), then the cache is filled (``SET``);
* ``place_order()``: plain asyncpg in a transaction (``INSERT orders``);
* ``build_report()``: deliberately blocks the event loop, the mistake the loop
  monitor is there to catch.

Settings come from the environment: ``DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/shop``), ``REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) and ``INVENTORY_URL`` (default
``http://127.0.0.1:8001``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import redis.asyncio as redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import flowtracker as ft

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/shop")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
INVENTORY_URL = os.environ.get("INVENTORY_URL", "http://127.0.0.1:8001")

SCHEMA = [
    # Several workers may start at once: one creates the tables, the others wait for it.
    "SELECT pg_advisory_xact_lock(20260)",
    """CREATE TABLE IF NOT EXISTS products (
         id integer PRIMARY KEY, name text NOT NULL, price_cents integer NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS orders (
         id serial PRIMARY KEY, product_id integer NOT NULL REFERENCES products (id),
         quantity integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now())""",
    """INSERT INTO products (id, name, price_cents)
       VALUES (1, 'Desk lamp', 2500), (2, 'Notebook', 1200), (3, 'Mug', 800)
       ON CONFLICT (id) DO NOTHING""",
]

SELECT_PRODUCT = "SELECT id, name, price_cents FROM products WHERE id = :id"
INSERT_ORDER = "INSERT INTO orders (product_id, quantity) VALUES ($1, $2) RETURNING id"
ORDERS_PER_PRODUCT = "SELECT product_id, sum(quantity) AS sold FROM orders GROUP BY product_id"


@dataclass
class Clients:
    """One of each client, opened at start-up and closed at shutdown."""

    engine: AsyncEngine  # SQLAlchemy on asyncpg
    pool: asyncpg.Pool  # plain asyncpg
    cache: redis.Redis
    http: httpx.AsyncClient

    @classmethod
    async def open(cls) -> Clients:
        pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=5)
        async with pool.acquire() as connection, connection.transaction():
            for statement in SCHEMA:
                await connection.execute(statement)
        engine = create_async_engine(DATABASE_URL.replace("postgresql://", "postgresql+asyncpg://", 1))
        async with engine.connect():  # SQLAlchemy's first-connection queries, here rather than in a request
            pass
        return cls(engine, pool, redis.Redis.from_url(REDIS_URL), httpx.AsyncClient(base_url=INVENTORY_URL))

    async def close(self) -> None:
        await self.http.aclose()
        await self.cache.aclose()
        await self.engine.dispose()
        await self.pool.close()


async def product(clients: Clients, product_id: int) -> dict[str, Any] | None:
    """The product with its stock: from the cache or PostgreSQL, then the inventory service."""
    async with ft.span("load product", product_id=product_id):
        key = f"product:{product_id}"
        cached = await clients.cache.get(key)
        if cached is not None:
            found: dict[str, Any] = json.loads(cached)
        else:
            async with clients.engine.connect() as connection:
                row = (await connection.execute(text(SELECT_PRODUCT), {"id": product_id})).one_or_none()
            if row is None:
                return None
            found = dict(row._mapping)
            await clients.cache.set(key, json.dumps(found), ex=60)
    response = await clients.http.get(f"/stock/{product_id}")
    response.raise_for_status()
    return {**found, "stock": response.json()["stock"]}


async def place_order(clients: Clients, product_id: int, quantity: int) -> int:
    """Records an order with plain asyncpg and returns its id."""
    async with clients.pool.acquire() as connection, connection.transaction():
        order_id: int = await connection.fetchval(INSERT_ORDER, product_id, quantity)
    ft.add_tag("order.id", order_id)
    return order_id


async def report(clients: Clients) -> dict[str, Any]:
    """Units sold per product, through the slow report builder."""
    async with clients.engine.connect() as connection:
        rows = [dict(row._mapping) for row in await connection.execute(text(ORDERS_PER_PRODUCT))]
    return build_report(rows)


@ft.traced
def build_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Deliberately slow, and run on the event loop: nothing else is served while it works.

    The sleep stands for CPU-bound work (rendering a PDF, a large json.dumps).
    The loop monitor records it as an ``event_loop.blocked`` event on this
    span, with the stack that points here. The fix would be
    ``await asyncio.to_thread(build_report, rows)``.
    """
    time.sleep(0.3)
    return {"products": len(rows), "units": sum(int(row["sold"]) for row in rows)}
