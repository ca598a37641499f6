"""flowtracker's patch registry: every runtime patch installed and undone in one place, with its reason.

The registry's own rules are checked on small classes of this file; what
flowtracker itself patches is checked for real (a running loop monitor, the
four instrumented libraries, the OpenTelemetry bridge), and against the
list in ``docs/architecture.md``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowtracker as ft
from flowtracker._core import patches
from flowtracker._core.patches import active, patch_attribute, patch_hook

ROOT = Path(__file__).resolve().parent.parent


class Client:
    def get(self) -> str:
        return "own"


class Child(Client):
    pass


def targets() -> set[str]:
    return {patch.target for patch in active()}


@pytest.fixture
def client_get() -> Iterator[object]:
    """Client.get as defined; put back after the test whatever it did."""
    own = Client.__dict__["get"]
    yield own
    for patch in active():
        if patch.owner is Client:
            patch.undo()
    Client.get = own  # type: ignore[method-assign]


class TestRegistry:
    def test_patch_and_undo_exactly(self, client_get):
        """A patch replaces the attribute and is listed with its reason; undo puts back the very
        object that was there and unlists it; a second undo does nothing."""
        patch = patch_attribute(Client, "get", lambda self: "patched", reason="a test")
        assert Client().get() == "patched"
        assert patch in active()
        assert (patch.target, patch.reason) == (f"{__name__}.Client.get", "a test")
        assert patch.undo()
        assert Client.__dict__["get"] is client_get
        assert patch not in active()
        assert patch.undo()
        assert Client.__dict__["get"] is client_get

    def test_patching_again_keeps_the_value_from_before_flowtracker(self, client_get):
        """Patching an attribute flowtracker already patched swaps the replacement in one step;
        undoing the second patch puts back the value from before the first."""
        first = patch_attribute(Client, "get", lambda self: "first", reason="a test")
        second = patch_attribute(Client, "get", lambda self: "second", reason="a test")
        assert Client().get() == "second"
        assert not first.installed
        assert [p for p in active() if p.owner is Client] == [second]
        second.undo()
        assert Client.__dict__["get"] is client_get

    def test_undo_leaves_a_later_replacement_and_says_so(self, client_get, caplog):
        """When something else replaced flowtracker's replacement since, undo leaves it in place
        (putting the original back would drop it too), logs it and returns False."""
        patch = patch_attribute(Client, "get", lambda self: "ours", reason="a test")
        theirs = lambda self: "theirs"  # noqa: E731
        Client.get = theirs  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="flowtracker.patches"):
            assert not patch.undo()
        assert Client.__dict__["get"] is theirs
        assert "could not restore" in caplog.text
        assert patch not in active()

    def test_only_an_attribute_of_its_own(self):
        """An inherited attribute is refused (an undo could not put back exactly what was there)."""
        with pytest.raises(AttributeError, match="not an attribute of its own"):
            patch_attribute(Child, "get", lambda self: "x", reason="a test")
        assert "get" not in Child.__dict__
        assert not [p for p in active() if p.owner is Child]

    def test_hook_installed_and_removed(self):
        """A hook (a change made through a library's own API) is installed at once and removed by undo."""
        listeners: list[str] = []
        patch = patch_hook(
            "library.event",
            lambda: listeners.append("ours"),
            lambda: listeners.remove("ours"),
            reason="a test",
        )
        assert listeners == ["ours"]
        assert "library.event" in targets()
        patch.undo()
        patch.undo()
        assert listeners == []
        assert "library.event" not in targets()


class TestWhatFlowtrackerPatches:
    def test_nothing_at_import(self):
        """Importing flowtracker (and its integrations) patches nothing."""
        code = (
            "import flowtracker, flowtracker.aiohttp, flowtracker.asgi, flowtracker.instrumentation\n"
            "from flowtracker._core.patches import active\n"
            "print(active())"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "()"

    async def test_the_loop_monitor_patches_while_it_runs(self):
        """A running monitor: Handle._run and the span's __exit__, each with its reason; none once stopped."""
        before = targets()
        with ft.monitor_event_loop(1.0):
            await asyncio.sleep(0)
            added = {patch.target: patch.reason for patch in active() if patch.target not in before}
        assert set(added) == {"asyncio.events.Handle._run", "flowtracker._core.span.Span.__exit__"}
        assert all("monitor" in reason for reason in added.values())
        assert targets() == before

    def test_instrument_patches_until_uninstrument(self):
        """ft.instrument() patches each library through the registry, with the library in its
        reason; ft.uninstrument() undoes every one of them."""
        before = targets()
        ft.instrument()
        try:
            added = [patch for patch in active() if patch.target not in before]
            named = [re.match(r"ft\.instrument\('(\w+)'\)", patch.reason) for patch in added]
            assert {match.group(1) for match in named if match} == {"httpx", "asyncpg", "redis", "sqlalchemy"}
            assert all(named)
        finally:
            ft.uninstrument()
        assert targets() == before

    def test_docs_list_every_patch(self):
        """docs/architecture.md's "What flowtracker patches, and when" names every patch flowtracker
        makes (its class or module, and the attribute or event), found by making them all."""
        from flowtracker.otel import TracerProvider

        docs = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
        section = docs.split("## What flowtracker patches, and when", 1)[1].split("\n## ", 1)[0]

        async def monitored() -> set[str]:
            with ft.monitor_event_loop(1.0):
                return targets()

        before = targets()
        ft.instrument()
        TracerProvider()
        try:
            made = asyncio.run(monitored()) - before
        finally:
            ft.uninstrument()
            for patch in active():
                if patch.name == "_RUNTIME_CONTEXT":
                    patch.undo()
        assert len(made) > 20
        missing = []
        for target in sorted(made):
            owner, name = target.rsplit(".", 2)[-2:]
            if f"`{name}`" not in section or owner not in section:
                missing.append(target)
        assert missing == []
        assert patches.active() == tuple(p for p in patches.active() if p.target in before)
