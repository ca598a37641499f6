"""The fault suite (``./dev faults``) keeps working: one scenario end to end, and its arithmetic.

The suite itself lives in ``benchmarks/faults/`` and is run by hand before
and after reliability work (``docs/reliability.md``); these tests only make
sure it cannot rot. The scenario run here, an exporter outage, passes on the
code as it is; the scenarios that show open faults are not asserted here
(each fault has its own test).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.faults._count import Counted, Written, read_json_lines
from benchmarks.faults._row import judge

ROOT = Path(__file__).resolve().parent.parent


def run_suite(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks.faults ARGS`` from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.faults", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def table_row(output: str, scenario: str) -> list[str]:
    """The cells of ``scenario``'s row in the printed Markdown table."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == scenario:
            return cells
    raise AssertionError(f"no row for {scenario} in:\n{output}")


class TestFaultSuite:
    @pytest.mark.slow
    def test_exporter_outage_scenario_runs_and_passes(self, tmp_path: Path) -> None:
        """``--quick --scenario outage-webhook --strict`` starts a real aiohttp server, takes its
        webhook receiver down for 2 s mid-load, stops the server with SIGTERM and prints a row
        where every request was answered and traced, nothing lost or corrupt, verdict PASS; the
        recorded file names the command."""
        record = tmp_path / "faults.md"
        done = run_suite("--quick", "--scenario", "outage-webhook", "--strict", "--record", str(record))
        assert done.returncode == 0, done.stdout + done.stderr
        _, requests, answered, written, dropped, lost, dup, corrupt, shutdown, _, verdict = table_row(
            done.stdout, "outage-webhook"
        )
        assert int(requests.replace(",", "")) >= 200
        assert answered == written == requests
        assert (dropped, lost, dup, corrupt, verdict) == ("0", "0", "0", "0", "PASS")
        assert float(shutdown) > 0
        assert "--scenario outage-webhook" in record.read_text()

    def test_long_lived_root_scenario_runs_and_passes(self) -> None:
        """``--scenario long-lived-root --strict`` runs a script whose root outlives
        ``max_trace_age`` five times over: every one of its 600 children arrives once, the root
        once unfinished, the rest in follow-up records that the tracker counted."""
        done = run_suite("--scenario", "long-lived-root", "--strict", timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        row = table_row(done.stdout, "long-lived-root")
        made, _, written, dropped, lost, dup, corrupt, _, _, verdict = row[1:]
        assert (made, written, dropped, lost, dup, corrupt) == ("600", "600", "0", "0", "0", "0")
        assert verdict == "PASS"
        assert "1 record(s) with spans unfinished" in done.stdout

    def test_unknown_scenario_is_refused_with_the_known_names(self) -> None:
        """A misspelt scenario stops the run before anything starts, listing the names it knows."""
        done = run_suite("--scenario", "outage-webhok", timeout=30)
        assert done.returncode == 2
        assert "unknown scenario outage-webhok" in done.stderr
        assert "outage-webhook" in done.stderr


class TestCounting:
    def test_glued_line_is_corrupt_and_its_traces_are_lost(self, tmp_path: Path) -> None:
        """A JSON Lines file where a partial line was glued to the next batch (the full-disk
        fault) counts one corrupt line; both requests on it are missing, and with no counter
        explaining them they are lost."""
        traces = tmp_path / "traces.jsonl"
        traces.write_bytes(
            b'{"trace_id": "1", "spans": [{"tags": {"req": 0}}]}\n'
            b'{"trace_id": "2", "spans": [{"tags": {"re{"trace_id": "3", "spans": [{"tags": {"req": 2}}]}\n'
            b'{"trace_id": "4", "spans": [{"tags": {"req": 3}}]}\n'
        )
        written = read_json_lines(traces)
        assert (written.records, written.corrupt, written.numbers) == (2, 1, {0, 3})
        row = judge("disk", sent=4, answered={0, 1, 2, 3}, written=written, counted=Counted(), shutdown_s=0.1)
        assert (row.written, row.lost, row.corrupt) == (2, 2, 1)
        assert row.verdict == "FAIL: lost 2; 1 corrupt"

    def test_children_of_a_long_lived_root_count_span_by_span(self) -> None:
        """Counting by span, every span tagged ``req`` counts wherever it arrives, follow-up
        records included, and a child that arrives twice is a duplicate; follow-up and
        unfinished records are counted apart."""
        written = Written(by_span=True)
        written.add_trace({"spans": [{"name": "consume"}, {"tags": {"req": 0}}], "unfinished_spans": 1})
        written.add_trace({"follow_up": True, "spans": [{"tags": {"req": 1}}, {"tags": {"req": 2}}]})
        written.add_trace({"follow_up": True, "spans": [{"tags": {"req": 2}}]})
        assert (written.records, written.follow_ups, written.unfinished) == (3, 2, 1)
        assert (written.numbers, written.duplicates) == ({0, 1, 2}, 1)

    def test_counted_drops_explain_missing_traces_but_not_miscounts(self) -> None:
        """Missing traces the tracker counted as dropped are not lost; a final count that says more
        traces completed than were made is reported as a miscount (the thread hand-over fault)."""
        written = Written()
        for number in range(8):
            written.add_trace({"trace_id": str(number), "spans": [{"tags": {"req": number}}]})
        counted = Counted()
        counted.add(
            {
                "when": "exit",
                "handled": 10,
                "stats": {
                    "completed": 12,
                    "lanes": {"file": {"exported": 8, "failed": 0, "dropped": 4, "queued": 0}},
                },
            }
        )
        row = judge("threads", sent=10, answered=set(range(10)), written=written, counted=counted,
                    shutdown_s=None, must_deliver=False)  # fmt: skip
        assert (row.written, row.dropped, row.lost) == (8, 4, 0)
        assert row.verdict == "FAIL: stats: completed 12 of 10 made"
