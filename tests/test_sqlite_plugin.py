"""The example plug-in (examples/sqlite_exporter), installed for real and found by entry point."""

from __future__ import annotations

import importlib
import importlib.metadata
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest

import flowtracker as ft
from flowtracker.exporters import exporter_from_url, load_exporter

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sqlite_exporter"
DISTRIBUTION = "flowtracker-sqlite"


def _installed_matches_source() -> bool:
    """True when the installed distribution holds exactly the example's current files."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    for source in (EXAMPLE / "flowtracker_sqlite").glob("*.py"):
        installed = Path(str(dist.locate_file(f"flowtracker_sqlite/{source.name}")))
        if not installed.is_file() or installed.read_bytes() != source.read_bytes():
            return False
    points = {(ep.name, ep.value) for ep in dist.entry_points if ep.group == "flowtracker.exporters"}
    return points == {("sqlite", "flowtracker_sqlite:SQLiteExporter")}


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    """pip-installs the example into this environment (skipped when already current).

    No download: no build isolation (hatchling comes with the test extra), no
    dependencies (flowtracker and aiosqlite are already here), no index.
    """
    if not _installed_matches_source():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
             "--no-index", "--force-reinstall", str(EXAMPLE)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode:
            pytest.fail(f"pip install {EXAMPLE} failed:\n{done.stdout}\n{done.stderr}")
        importlib.invalidate_caches()
        sys.modules.pop("flowtracker_sqlite", None)
    assert _installed_matches_source()


def rows(path: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM spans ORDER BY start_time, span_id")]


def make_traces(count: int) -> None:
    for index in range(count):
        with ft.span("request", index=index), ft.span("db", rows=3, query="SELECT 1"):
            pass


class TestPlugin:
    async def test_load_by_name_writes_one_row_per_span(self, tmp_path: Path) -> None:
        """load_exporter("sqlite", path=...) finds the entry point; each span becomes a row."""
        exporter = load_exporter("sqlite", path=tmp_path / "t.db")
        assert type(exporter).__module__ == "flowtracker_sqlite"
        memory = ft.MemoryExporter()
        async with ft.Tracker(exporters=[exporter, memory], service="orders") as tracker:
            make_traces(3)
        found = rows(tmp_path / "t.db")
        assert len(found) == 6
        assert tracker.stats.exporters["sqlite"].exported == 3
        expected = {(t["trace_id"], s["span_id"]): s for t in memory.traces for s in t["spans"]}
        for row in found:
            span = expected[(row["trace_id"], row["span_id"])]
            assert row["parent_id"] == span.get("parent_id")
            assert row["name"] == span["name"]
            assert (row["start_time"], row["end_time"]) == (span["start_time"], span["end_time"])
            assert row["duration_ms"] == span["duration_ms"]
            assert row["service"] == "orders"
            assert orjson.loads(row["tags"]) == span["tags"]
        children = [row for row in found if row["name"] == "db"]
        assert all(row["parent_id"] for row in children)

    async def test_selected_by_url_in_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """FLOWTRACKER_EXPORTERS=sqlite:///path selects the plug-in through its from_url."""
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", f"sqlite://{tmp_path}/env.db")
        async with ft.Tracker() as tracker:
            make_traces(2)
        assert [type(e).__name__ for e in tracker.exporters] == ["SQLiteExporter"]
        assert len(rows(tmp_path / "env.db")) == 4

    async def test_bare_name_uses_defaults(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bare "sqlite" calls the class with no options: ./flowtracker.db."""
        monkeypatch.chdir(tmp_path)
        exporter = exporter_from_url("sqlite")
        async with ft.Tracker(exporters=[exporter]):
            make_traces(1)
        assert len(rows(tmp_path / "flowtracker.db")) == 2

    def test_listed_among_known_names(self) -> None:
        """An unknown scheme's error message lists installed plug-ins too."""
        with pytest.raises(ValueError, match="sqlite"):
            exporter_from_url("nosuch://x")
