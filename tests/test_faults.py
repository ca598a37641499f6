"""Faults the host app must survive: full disks, vanishing directories, overload.

Each test causes the fault for real (a tiny tmpfs that fills up, a directory
made immutable, an exporter that never returns) and checks that the app's
own work carries on and that stats accounts for every trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from doubles import StalledExporter, accounted

import flowtracker as ft


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str = "64k") -> Iterator[Path]:
    """A real, small tmpfs (root); /dev/full where mounting is not allowed."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False)
    try:
        yield path / "traces.jsonl" if mounted.returncode == 0 else Path("/dev/full")
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(path)], check=False)


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """Makes ``directory`` unwritable even for root (ext4 immutable flag), or removes it."""
    immutable = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    if immutable.returncode != 0:
        directory.rmdir()
    try:
        yield
    finally:
        if immutable.returncode == 0:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        else:
            directory.mkdir()


async def request(i: int, tracker: ft.Tracker) -> int:
    """What the host app does: some work inside spans; returns its answer."""
    with ft.start_root_span("GET /work", {"i": i, "pad": "x" * 200}, tracker=tracker):
        async with ft.span("compute"):
            await asyncio.sleep(0)
    return i * 2


class TestFileSystemFaults:
    async def test_full_filesystem(self, tmp_path):
        """Writing onto a full file system fails batches (counted); every request still succeeds."""
        with tiny_filesystem(tmp_path / "small") as target:
            exporter = ft.FileExporter(target)
            async with ft.Tracker(exporters=[exporter], max_batch=10) as tracker:
                answers = [await request(i, tracker) for i in range(400)]
                await tracker.flush()
            stats = tracker.stats
        assert answers == [i * 2 for i in range(400)]
        lane = stats.exporters["file"]
        assert lane.failed > 0
        if target != Path("/dev/full"):
            assert lane.exported > 0  # it filled up mid-run
        accounted(stats)

    async def test_directory_becomes_unwritable_then_recovers(self, tmp_path):
        """The trace file's directory turns unwritable mid-run: failures are counted, then it recovers."""
        directory = tmp_path / "logs"
        directory.mkdir()
        target = directory / "traces.jsonl"
        exporter = ft.FileExporter(target, reopen_interval=0)
        async with ft.Tracker(exporters=[exporter]) as tracker:
            for i in range(5):
                await request(i, tracker)
            await tracker.flush()
            target.unlink()  # e.g. an operator cleaned up; the exporter must start a new file
            with unwritable(directory):
                for i in range(5, 10):
                    assert await request(i, tracker) == i * 2
                await tracker.flush()
                assert tracker.stats.exporters["file"].failed == 5
            for i in range(10, 15):
                await request(i, tracker)
        lines = [json.loads(line) for line in target.read_text().splitlines()]
        assert [t["spans"][0]["tags"]["i"] for t in lines] == list(range(10, 15))
        stats = tracker.stats
        assert stats.exporters["file"].exported == 10
        accounted(stats)


class TestOverload:
    @pytest.mark.slow
    async def test_million_traces_into_a_stalled_exporter(self):
        """1,000,000 traces offered to a stalled exporter: memory stays bounded, every trace counted."""
        stalled = StalledExporter()
        # The stalled batch must not time out while the loop offers the million
        # traces (30 s by default, reached on a loaded machine): this test is
        # about memory and counting, the timeout has tests of its own.
        tracker = ft.Tracker(exporters=[stalled], max_queue=8192, export_timeout=3600)
        await tracker.start()
        samples = []
        for i in range(1_000_000):
            with ft.start_root_span("r", None, tracker=tracker):
                pass
            if i % 1000 == 999:
                await asyncio.sleep(0)  # what a server does between requests
            if i % 100_000 == 99_999:
                samples.append(rss_mb())
        await asyncio.sleep(0.01)
        stats = tracker.stats
        assert stats.traces_completed == 1_000_000
        assert stats.exporters["stalled"].queued <= 8192 + 512  # the lane plus one batch in flight
        # Memory after the first 100,000 traces no longer grows with the traces offered.
        assert max(samples) - samples[0] < 20, samples
        stalled.release.set()
        await tracker.aclose()
        final = tracker.stats
        lane = final.exporters["stalled"]
        assert lane.exported + lane.dropped == 1_000_000
        assert lane.queued == 0
        accounted(final)
