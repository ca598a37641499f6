"""Property: random nesting across tasks and threads always yields one well-formed tree per trace."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowtracker as ft

MODES = ("inline", "task", "gather", "to_thread", "fire_and_forget", "raw_thread")


@dataclass
class Node:
    mode: str
    children: list[Node] = field(default_factory=list)


def nodes(depth: int = 0) -> st.SearchStrategy[Node]:
    if depth >= 4:
        return st.builds(Node, st.sampled_from(MODES), st.just([]))
    return st.builds(
        Node, st.sampled_from(MODES), st.lists(st.deferred(lambda: nodes(depth + 1)), max_size=3)
    )


def count(node: Node) -> int:
    return 1 + sum(count(child) for child in node.children)


def run_sync(node: Node, name: str) -> None:
    """Inside a thread: every child runs inline or in another raw thread."""
    with ft.span(name):
        for index, child in enumerate(node.children):
            child_name = f"{name}.{index}"
            if child.mode == "raw_thread":
                worker = threading.Thread(target=ft.bind(run_sync), args=(child, child_name))
                worker.start()
                worker.join()
            else:
                run_sync(child, child_name)


async def run_async(node: Node, name: str, background: list[asyncio.Task[None]]) -> None:
    async with ft.span(name):
        for index, child in enumerate(node.children):
            child_name = f"{name}.{index}"
            if child.mode == "inline":
                await run_async(child, child_name, background)
            elif child.mode == "task":
                await asyncio.create_task(run_async(child, child_name, background))
            elif child.mode == "gather":
                await asyncio.gather(run_async(child, child_name, background))
            elif child.mode == "fire_and_forget":
                background.append(asyncio.create_task(run_async(child, child_name, background)))
            else:  # to_thread, raw_thread: the subtree runs in a thread
                await asyncio.to_thread(run_sync, child, child_name)


class TestTreesAreWellFormed:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(nodes(), min_size=1, max_size=4))
    def test_random_nesting(self, roots: list[Node]) -> None:
        """Concurrent random trees across tasks/threads: each trace is one tree with exactly its spans."""
        memory = ft.MemoryExporter()

        async def main() -> None:
            async with ft.Tracker(exporters=[memory]) as tracker:
                background: list[asyncio.Task[None]] = []
                await asyncio.gather(*(run_async(root, f"r{i}", background) for i, root in enumerate(roots)))
                while background:
                    await background.pop()
                await tracker.flush()
            stats = tracker.stats
            assert stats.traces_dropped == 0
            assert stats.spans_dropped == 0

        asyncio.run(main())
        by_trace: dict[str, list[dict]] = defaultdict(list)
        for trace in memory.traces:
            by_trace[trace["trace_id"]].extend(trace["spans"])
        assert len(by_trace) == len(roots)
        for spans in by_trace.values():
            ids = {s["span_id"] for s in spans}
            assert len(ids) == len(spans)
            roots_here = [s for s in spans if "parent_id" not in s]
            assert len(roots_here) == 1
            root_name = roots_here[0]["name"]
            assert len(spans) == count(roots[int(root_name[1:])])
            by_id = {s["span_id"]: s for s in spans}
            for span in spans:
                if span is roots_here[0]:
                    continue
                parent = by_id[span["parent_id"]]
                assert span["name"].rsplit(".", 1)[0] == parent["name"]
                assert span["status"] == "ok"
