"""@traced on functions, coroutines, generators and async generators."""

from __future__ import annotations

import pytest

import flowtracker as ft


@ft.traced
def add(a: int, b: int) -> int:
    return a + b


@ft.traced("custom.name", layer="db")
async def fetch(uid: int) -> dict:
    ft.add_tag("uid", uid)
    return {"id": uid}


@ft.traced
def numbers(n: int):
    for i in range(n):
        with ft.span(f"item-{i}"):
            pass
        yield i


@ft.traced
async def anumbers(n: int):
    for i in range(n):
        async with ft.span(f"item-{i}"):
            pass
        yield i


def names(memory: ft.MemoryExporter) -> list[str]:
    return [s["name"] for t in memory.traces for s in t["spans"]]


class TestFunctions:
    async def test_sync_function_named_after_qualname(self, tracker, memory):
        """Bare @traced names the span after the function's qualified name and returns its value."""
        assert add(1, 2) == 3
        await tracker.flush()
        assert names(memory) == ["add"]
        assert add.__name__ == "add"  # functools.wraps

    async def test_async_function_with_name_and_tags(self, tracker, memory):
        """@traced("name", **tags) names the span and tags it; add_tag inside reaches it."""
        assert await fetch(7) == {"id": 7}
        await tracker.flush()
        span = memory.traces[0]["spans"][0]
        assert span["name"] == "custom.name"
        assert span["tags"] == {"layer": "db", "uid": 7}

    async def test_decorator_tags_are_not_shared_between_calls(self, tracker, memory):
        """Each call gets its own tag dict: tags added in one call don't leak into the next."""
        await fetch(1)
        await fetch(2)
        await tracker.flush()
        assert [t["spans"][0]["tags"]["uid"] for t in memory.traces] == [1, 2]

    async def test_exception_propagates_and_marks_error(self, tracker, memory):
        """An exception in a traced function propagates and marks the span error."""

        @ft.traced
        def boom() -> None:
            raise KeyError("k")

        with pytest.raises(KeyError):
            boom()
        await tracker.flush()
        assert memory.traces[0]["spans"][0]["status"] == "error"

    def test_rejects_non_string_name(self):
        """@traced(123) is a clear TypeError, not a confusing failure later."""
        with pytest.raises(TypeError, match="span name"):
            ft.traced(123)  # type: ignore[call-overload]


class TestGenerators:
    async def test_generator_span_covers_iteration(self, tracker, memory):
        """The generator's span covers the whole iteration; spans inside are its children."""
        async with ft.span("consumer") as consumer:
            for _ in numbers(3):
                assert ft.current_span() is consumer  # not the generator's span
        await tracker.flush()
        by_name = {s["name"]: s for s in memory.traces[0]["spans"]}
        gen_span = by_name["numbers"]
        assert gen_span["parent_id"] == by_name["consumer"]["span_id"]
        for i in range(3):
            assert by_name[f"item-{i}"]["parent_id"] == gen_span["span_id"]

    async def test_generator_closed_early_ends_span(self, tracker, memory):
        """Breaking out of a traced generator ends its span (status ok)."""
        for value in numbers(10):
            if value == 1:
                break
        await tracker.flush()
        by_name = {s["name"]: s for s in memory.traces[0]["spans"]}
        assert by_name["numbers"]["status"] == "ok"
        assert "item-5" not in by_name

    async def test_generator_send_and_throw(self, tracker, memory):
        """send() and throw() reach the wrapped generator."""

        @ft.traced
        def echo():
            received = []
            try:
                while True:
                    received.append((yield len(received)))
            except ValueError:
                yield received

        gen = echo()
        assert next(gen) == 0
        assert gen.send("a") == 1
        assert gen.throw(ValueError()) == ["a"]
        gen.close()
        await tracker.flush()
        assert names(memory) == ["TestGenerators.test_generator_send_and_throw.echo"]

    async def test_async_generator(self, tracker, memory):
        """Async generators: span covers the iteration, children link, early close ends it."""
        collected = [value async for value in anumbers(2)]
        assert collected == [0, 1]
        agen = anumbers(5)
        assert await agen.__anext__() == 0
        await agen.aclose()
        await tracker.flush()
        first, second = memory.traces
        by_name = {s["name"]: s for s in first["spans"]}
        assert by_name["item-1"]["parent_id"] == by_name["anumbers"]["span_id"]
        assert [s["name"] for s in second["spans"]] == ["anumbers", "item-0"]

    async def test_generator_error_marks_span(self, tracker, memory):
        """An exception raised inside a traced generator marks its span error."""

        @ft.traced
        def failing():
            yield 1
            raise RuntimeError("gen failed")

        with pytest.raises(RuntimeError):
            list(failing())
        await tracker.flush()
        span = memory.traces[0]["spans"][0]
        assert span["status"] == "error"
        assert span["error"]["message"] == "gen failed"
