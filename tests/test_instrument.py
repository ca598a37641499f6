"""The registry behind ft.instrument() / ft.uninstrument(), and the wrapper every patched call runs in."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.client

import flowtracker as ft
from flowtracker.instrumentation import SUPPORTED, _safety
from flowtracker.instrumentation._patch import Patches, async_wrapper, sync_wrapper

HTTPX_OWN = httpx.HTTPTransport.__dict__["handle_request"]
REDIS_OWN = redis.client.Redis.__dict__["execute_command"]


def run_python(code: str) -> str:
    """Runs ``code`` in a fresh interpreter (this worktree's flowtracker) and returns its stdout."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.fixture
def restored() -> Any:
    """Every library uninstrumented after the test."""
    yield
    ft.uninstrument()


@pytest.mark.usefixtures("restored")
class TestInstrument:
    def test_no_names_instruments_every_installed_library(self):
        """ft.instrument() covers every supported library that is installed, and says which."""
        installed = [name for name in SUPPORTED if importlib.util.find_spec(name) is not None]
        assert ft.instrument() == installed
        assert "httpx" in installed
        assert "redis" in installed
        assert httpx.HTTPTransport.__dict__["handle_request"].__wrapped__ is HTTPX_OWN
        assert redis.client.Redis.__dict__["execute_command"].__wrapped__ is REDIS_OWN

    def test_twice_returns_the_same_list_and_wraps_once(self):
        """Instrumenting twice returns the same list and leaves a single wrapper around the library's own."""
        first = ft.instrument("redis", "httpx", "redis")
        assert first == ["redis", "httpx"]
        assert ft.instrument("redis", "httpx") == first
        assert ft.instrument() == ft.instrument()
        wrapper = httpx.HTTPTransport.__dict__["handle_request"]
        assert wrapper.__wrapped__ is HTTPX_OWN
        assert not hasattr(HTTPX_OWN, "__wrapped__")

    def test_unknown_name_lists_the_supported_ones_and_installs_nothing(self):
        """An unknown name raises ValueError naming every supported library, before anything is wrapped."""
        with pytest.raises(ValueError, match="'mongo'") as raised:
            ft.instrument("httpx", "mongo")
        for name in SUPPORTED:
            assert repr(name) in str(raised.value)
        assert httpx.HTTPTransport.__dict__["handle_request"] is HTTPX_OWN
        with pytest.raises(ValueError, match="supported libraries"):
            ft.uninstrument("requests")

    def test_aiohttp_points_to_its_middleware_and_client_hook(self):
        """``instrument("aiohttp")`` says aiohttp is traced by flowtracker.aiohttp: the middleware (or
        ``setup``) for the server, ``client_trace_config()`` for client sessions."""
        with pytest.raises(ValueError, match="cannot instrument 'aiohttp'") as raised:
            ft.instrument("aiohttp")
        message = str(raised.value)
        assert "flowtracker.aiohttp.middleware()" in message
        assert "setup(app)" in message
        assert "trace_configs=[flowtracker.aiohttp.client_trace_config()]" in message

    def test_asgi_frameworks_point_to_the_middleware(self):
        """FastAPI, Starlette (any case) point to ``FlowTrackerMiddleware``, once for both."""
        with pytest.raises(ValueError, match="cannot instrument 'FastAPI', 'starlette'") as raised:
            ft.instrument("FastAPI", "starlette")
        message = str(raised.value)
        assert message.count("app.add_middleware(flowtracker.asgi.FlowTrackerMiddleware)") == 1

    @pytest.mark.parametrize(
        ("typed", "meant"),
        [("Redis", "redis"), ("asyncpq", "asyncpg"), ("sqlalchemi", "sqlalchemy"), ("httpxx", "httpx")],
    )
    def test_a_near_miss_suggests_the_closest_supported_name(self, typed, meant):
        """A misspelt or mis-cased name is answered with the closest supported one (difflib)."""
        with pytest.raises(ValueError, match=rf"'{typed}' \(did you mean '{meant}'\?\)"):
            ft.instrument(typed)

    def test_a_name_like_none_gets_no_suggestion(self):
        """A name close to nothing supported gets no guess, only the list; a non-string name too."""
        with pytest.raises(ValueError, match="cannot instrument 'mongo'") as raised:
            ft.instrument("mongo")
        assert "did you mean" not in str(raised.value)
        with pytest.raises(ValueError, match="cannot instrument 3"):
            ft.instrument(3)  # type: ignore[arg-type]

    def test_absent_library_skipped_or_named_with_its_pip_install(self):
        """Without redis, ft.instrument() skips it; naming it raises ImportError with its pip install."""
        out = run_python(
            """
            import sys
            sys.modules["redis"] = None  # what an interpreter without redis-py sees
            import flowtracker as ft
            covered = ft.instrument()
            print("redis" in covered, "httpx" in covered)
            ft.uninstrument()
            import httpx
            own = httpx.HTTPTransport.__dict__["handle_request"]
            try:
                ft.instrument("httpx", "redis")
            except ImportError as exc:
                print(type(exc).__name__, exc.name, "Fix: pip install 'flowtracker[redis]'" in str(exc))
            print(httpx.HTTPTransport.__dict__["handle_request"] is own)  # httpx left alone
            """
        )
        assert out.splitlines() == ["False True", "ImportError redis True", "True"]


@pytest.mark.usefixtures("restored")
class TestUninstrument:
    def test_restores_the_library_functions_exactly(self):
        """ft.uninstrument(name) puts back the very function objects the library defined."""
        ft.instrument("httpx", "redis")
        ft.uninstrument("httpx")
        assert httpx.HTTPTransport.__dict__["handle_request"] is HTTPX_OWN
        assert redis.client.Redis.__dict__["execute_command"] is not REDIS_OWN
        ft.uninstrument()
        assert redis.client.Redis.__dict__["execute_command"] is REDIS_OWN
        ft.uninstrument()  # again: nothing to undo, no error

    def test_never_imports_a_library(self):
        """Importing flowtracker and uninstrumenting everything imports none of the instrumented libraries."""
        out = run_python(
            """
            import sys
            import flowtracker as ft
            ft.uninstrument()
            ft.uninstrument("redis", "httpx")
            import flowtracker.instrumentation.redis
            print(callable(ft.instrument), sorted(
                {m.split(".")[0] for m in sys.modules} & {"httpx", "redis", "asyncpg", "sqlalchemy"}))
            """
        )
        assert out == "True []"

    def test_concurrent_calls_from_threads_stay_consistent(self):
        """Threads instrumenting and uninstrumenting at once never wrap twice nor lose the library's own."""
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def churn() -> None:
            try:
                barrier.wait()
                for _ in range(200):
                    ft.instrument("httpx", "redis")
                    ft.uninstrument("httpx")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=churn) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert redis.client.Redis.__dict__["execute_command"].__wrapped__ is REDIS_OWN
        ft.instrument("httpx")
        assert httpx.HTTPTransport.__dict__["handle_request"].__wrapped__ is HTTPX_OWN
        ft.uninstrument()
        assert httpx.HTTPTransport.__dict__["handle_request"] is HTTPX_OWN
        assert redis.client.Redis.__dict__["execute_command"] is REDIS_OWN


class Store:
    """A stand-in library class: the wrapper's behaviour does not depend on which library it wraps."""

    def get(self, key: str) -> str:
        return lookup(key)

    async def aget(self, key: str) -> str:
        return lookup(key)

    async def abulk(self, key: str) -> str:
        """Makes an instrumented call of its own, as asyncpg's copy_to_table does."""
        return await self.aget(key)


def lookup(key: str) -> str:
    if key == "missing":
        raise KeyError(key)
    return key.upper()


def span_start(store: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from flowtracker._core import start_child

    if args[0] == "bad-start":
        raise RuntimeError("start failed")
    return start_child(f"GET {args[0]}", kind="client")


def span_end(span: Any, result: Any) -> None:
    if result == "BAD-END":
        raise RuntimeError("end failed")
    span.finish()


@pytest.fixture
def store() -> Any:
    """Store.get and Store.aget wrapped as an instrumentation would wrap them; restored afterwards."""
    patches = Patches("store", "a client span per get")
    patches.wrap(Store, "get", sync_wrapper("store", span_start, span_end))
    patches.wrap(Store, "aget", async_wrapper("store", span_start, span_end))
    patches.wrap(Store, "abulk", async_wrapper("store", span_start, span_end, current=True))
    yield Store()
    patches.restore()


class TestWrapper:
    async def test_result_and_exception_unchanged(self, tracker, memory, store):
        """The wrapped call returns the original's result and raises the original's very exception."""
        async with ft.span("job"):
            assert store.get("a") == "A"
            assert await store.aget("b") == "B"
            with pytest.raises(KeyError) as raised:
                store.get("missing")
        assert raised.value.args == ("missing",)
        await tracker.flush()
        spans = [s for s in memory.traces[0]["spans"] if s.get("kind") == "client"]
        assert [(s["name"], s["status"]) for s in spans] == [
            ("GET a", "ok"),
            ("GET b", "ok"),
            ("GET missing", "error"),
        ]

    async def test_current_span_during_the_call_makes_inner_calls_children(self, tracker, memory, store):
        """With current=True the call's span is current while the original runs: an instrumented
        call it makes is its child, and after it the caller's span is current again."""
        async with ft.span("job") as job:
            assert await store.abulk("c") == "C"
            assert ft.current_span() is job
            with pytest.raises(KeyError):
                await store.abulk("missing")
            assert ft.current_span() is job
        await tracker.flush()
        spans = memory.traces[0]["spans"]
        by_id = {s["span_id"]: s for s in spans}

        def parent(span: dict[str, Any]) -> dict[str, Any]:
            return by_id.get(span.get("parent_id", ""), {})

        path = [
            (parent(parent(s))["name"], parent(s)["name"], s["name"], s["status"])
            for s in spans
            if "name" in parent(parent(s))
        ]
        assert path == [("job", "GET c", "GET c", "ok"), ("job", "GET missing", "GET missing", "error")]

    def test_no_current_span_calls_nothing_of_ours(self, store):
        """Outside a span the original runs directly: start is never called (its failure would count)."""
        before = _safety.failures.get("store", 0)
        assert store.get("bad-start") == "BAD-START"
        assert _safety.failures.get("store", 0) == before

    async def test_own_failures_counted_logged_once_call_unaffected(self, tracker, memory, store, caplog):
        """A failing start or end is counted and logged once; the user's call returns its result anyway."""
        before = _safety.failures.get("store", 0)
        with caplog.at_level(logging.ERROR, logger="flowtracker.instrumentation"):
            async with ft.span("job"):
                assert store.get("bad-start") == "BAD-START"
                assert store.get("bad-end") == "BAD-END"
                assert await store.aget("bad-end") == "BAD-END"
        assert _safety.failures["store"] == before + 3
        logged = [r for r in caplog.records if "store instrumentation failed" in r.getMessage()]
        assert len(logged) == (1 if before == 0 else 0)

    def test_restore_leaves_a_later_wrapper_in_place(self, caplog):
        """When another tool wrapped the method after us, restore() keeps its wrapper and says so."""

        class Client:
            def get(self) -> str:
                return "own"

        patches = Patches("client", "a client span per get")
        patches.wrap(Client, "get", lambda original: lambda self: original(self))
        theirs = lambda self: "theirs"  # noqa: E731
        Client.get = theirs  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="flowtracker.patches"):
            patches.restore()
        assert Client.__dict__["get"] is theirs
        assert "could not restore" in caplog.text


class TestOneMechanism:
    def test_every_instrumentation_changes_its_library_through_patches(self):
        """Each supported library's module makes and undoes its changes through one Patches object
        (the shared wrapper and the patch registry behind it), never by its own means."""
        for name in SUPPORTED:
            module = importlib.import_module(f"flowtracker.instrumentation.{name}")
            source = Path(module.__file__ or "").read_text(encoding="utf-8")
            assert isinstance(vars(module)["_patches"], Patches), name
            assert source.count("Patches(") == 1, name
            for own_means in ("setattr(", "patch_attribute", "patch_hook", "event.listen(Engine"):
                assert own_means not in source, (name, own_means)
