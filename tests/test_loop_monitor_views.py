"""What the monitor recorded, as the ``flowtracker`` command shows it: tree and stats of a real run.

A real run on each kind of loop (one request renders a PDF with a blocking
call while another awaits), exported to a file, then read by the command
line as a user would (``flowtracker tree``, ``flowtracker stats --json``).
"""


from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from loop_helpers import (  # noqa: F401  (nothing_left_patched: an autouse fixture)
    HELPERS_FILE,
    line_in,
    nothing_left_patched,
    recorded_run,
)

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
LOOPS: dict[str, tuple[Runner, str]] = {"asyncio": (asyncio.run, "full"), "uvloop": (uvloop.run, "blocks")}


def command(*args: str) -> str:
    """``flowtracker ARGS`` as a user runs it; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "flowtracker", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(params=sorted(LOOPS))
def loop_kind(request: pytest.FixtureRequest) -> str:
    """The kind of loop the run is on: ``asyncio`` or ``uvloop``."""
    return str(request.param)


class TestTree:
    def test_the_stalled_query_names_its_culprit_and_headers_say_what_was_watched(
        self, loop_kind: str, tmp_path: Path
    ) -> None:
        """``flowtracker tree``: the waiting query reads ``⧗ stalled … by GET /report › render_pdf
        (file:line)``; each header says the monitor's mode and its block count."""
        run, mode = LOOPS[loop_kind]
        path = tmp_path / "traces.jsonl"
        recorded_run(path, run)
        text = command("tree", str(path), "--no-tags")
        line = f"{HELPERS_FILE.name}:{line_in(HELPERS_FILE, 'renders the PDF')}"
        stalled = rf"⧗ stalled \d+\.\d ms by GET /report › render_pdf \({line}\)"
        assert re.search(rf"└─ SELECT users  .*  {stalled}", text)
        blocks = [block.splitlines() for block in text.split("\n\n")]
        headers = {lines[1].split("  ")[0]: lines[0] for lines in blocks}
        assert headers["GET /report"].endswith(f"loop monitor: {mode}, 1 block")
        assert headers["GET /users"].endswith(f"loop monitor: {mode}, no blocks")
        assert ("busy " in text) is (mode == "full")


class TestStats:
    def test_stalled_per_name_and_loop_columns_for_a_watched_run(
        self, loop_kind: str, tmp_path: Path
    ) -> None:
        """``flowtracker stats``: the query's name has the stalled time, the guilty one the block;
        the table has the loop columns (busy only where it was recorded); ``--sort stalled`` works."""
        run, mode = LOOPS[loop_kind]
        path = tmp_path / "traces.jsonl"
        stats = recorded_run(path, run)
        rows = {row["name"]: row for row in json.loads(command("stats", str(path), "--json"))}
        assert rows["SELECT users"]["stalled_ms"] >= stats.max_block_ms - 0.01
        assert (rows["render_pdf"]["blocks"], rows["render_pdf"]["stalled_ms"]) == (1, 0.0)
        assert ("busy_p50_ms" in rows["render_pdf"]) is (mode == "full")
        table = command("stats", str(path), "--sort", "stalled").splitlines()
        assert table[0].split()[-1] == "stalled"
        assert table[1].startswith("SELECT users")
