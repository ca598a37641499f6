"""The ``flowtracker`` command: inputs, every subcommand, exit codes, TTY-only colour and progress.

Most tests call ``flowtracker.cli.run`` in-process; those about real standard
streams (pipes, terminals, ``python -m``) run the command in a subprocess.
"""

from __future__ import annotations

import gzip
import io
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowtracker import cli

GOLDEN = Path(__file__).parent / "golden"
TRACES = str(GOLDEN / "traces.jsonl")


def flowtracker(
    *args: str, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Runs ``python -m flowtracker ARGS`` in a subprocess."""
    env = {**os.environ, "NO_COLOR": "", "FORCE_COLOR": ""}
    return subprocess.run(
        [sys.executable, "-m", "flowtracker", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class TestTree:
    """``flowtracker tree``."""

    def test_prints_the_golden_tree(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Every trace's tree, follow-ups merged, without colour when stdout is not a terminal."""
        assert cli.run(["tree", TRACES]) == cli.EXIT_OK
        assert capsys.readouterr().out == (GOLDEN / "tree.txt").read_text(encoding="utf-8")

    def test_trace_prefix_and_slowest(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``--trace`` picks by id prefix; ``--slowest N`` keeps the N slowest, slowest first."""
        assert cli.run(["tree", TRACES, "--trace", "0AF7"]) == cli.EXIT_OK
        assert capsys.readouterr().out.startswith("trace 0af7651916cd43dd8448eb211c80319c")
        assert cli.run(["tree", TRACES, "--slowest", "2", "--no-tags"]) == cli.EXIT_OK
        headers = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trace ")]
        assert [header.split()[1][:4] for header in headers] == ["4bf9", "0af7"]

    def test_unknown_trace_id_exits_1(self, capsys: pytest.CaptureFixture[str]) -> None:
        """No trace with that id: a message and exit code 1."""
        assert cli.run(["tree", TRACES, "--trace", "ffff"]) == cli.EXIT_NO_TRACES
        assert "no trace id starts with 'ffff'" in capsys.readouterr().err

    def test_colour_forced_and_refused(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``--color always`` colours even into a pipe; ``never`` never does."""
        cli.run(["tree", TRACES, "--color", "always"])
        assert capsys.readouterr().out == (GOLDEN / "tree_color.txt").read_text(encoding="utf-8")
        cli.run(["tree", TRACES, "--color", "never"])
        assert "\x1b[" not in capsys.readouterr().out

    def test_colour_only_on_a_terminal(self, tmp_path: Path) -> None:
        """With ``--color auto`` a real terminal gets ANSI colours, a pipe gets plain text, NO_COLOR wins."""
        piped = flowtracker("tree", TRACES)
        assert piped.returncode == 0
        assert b"\x1b[" not in piped.stdout
        assert b"\x1b[31m" in _run_in_terminal(["tree", TRACES], {})
        assert b"\x1b[31m" not in _run_in_terminal(["tree", TRACES], {"NO_COLOR": "1"})


def _run_in_terminal(args: list[str], env: dict[str, str]) -> bytes:
    """The command's stdout when stdout is a pseudo-terminal."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowtracker", *args],
            stdout=follower,
            stderr=subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "", "FORCE_COLOR": "", "TERM": "xterm", **env},
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
        assert process.stderr is not None
        process.stderr.close()
        assert process.returncode == 0
        return b"".join(chunks)
    finally:
        os.close(leader)


class TestInput:
    """Files, stdin, logs with FLOW_LOG: lines, gzip, and the errors."""

    def test_docker_logs_on_stdin(self) -> None:
        """``docker logs app | flowtracker tree -``: FLOW_LOG lines anywhere are read, the rest counted."""
        lines = [b"2026-11-20T10:00:00Z app starting"]
        for line in (GOLDEN / "traces.jsonl").read_bytes().splitlines():
            lines.append(b"2026-11-20T10:00:01Z INFO FLOW_LOG: " + line)
        lines.append(b"FLOW_LOG: {truncated")
        result = flowtracker("tree", "-", "--trace", "4bf9", stdin=b"\n".join(lines) + b"\n")
        assert result.returncode == 0
        assert "send receipt email" in result.stdout.decode()
        assert b"1 other line skipped, 1 broken trace line" in result.stderr

    def test_piped_stdin_is_the_default(self) -> None:
        """Without a FILE, piped standard input is read."""
        result = flowtracker("stats", stdin=(GOLDEN / "traces.jsonl").read_bytes())
        assert result.returncode == 0
        assert result.stdout.startswith(b"name ")

    def test_no_input_on_a_terminal_is_a_usage_error(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Nothing named and stdin a terminal: exit 2 with a hint, instead of waiting for typing."""
        monkeypatch.setattr(sys, "stdin", _Terminal())
        assert cli.run(["tree"]) == cli.EXIT_USAGE
        assert "no input" in capsys.readouterr().err

    def test_several_files_and_gzip(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Several inputs are read in order; gzip ones are unpacked."""
        packed = tmp_path / "more.jsonl.gz"
        packed.write_bytes(
            gzip.compress(b'{"trace_id": "ee", "spans": [{"span_id": "1", "name": "extra"}]}\n')
        )
        assert cli.run(["tree", TRACES, str(packed), "--trace", "ee"]) == cli.EXIT_OK
        assert "extra" in capsys.readouterr().out

    def test_missing_file_exits_3(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unreadable input: its name, the reason, exit 3."""
        assert cli.run(["tree", str(tmp_path / "nope.jsonl")]) == cli.EXIT_INPUT
        assert "cannot read" in capsys.readouterr().err

    def test_directory_exits_3(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A directory is not a trace file."""
        assert cli.run(["stats", str(tmp_path)]) == cli.EXIT_INPUT
        assert "Is a directory" in capsys.readouterr().err

    def test_no_traces_exits_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A log without trace lines: exit 1 and the skipped count."""
        log = tmp_path / "app.log"
        log.write_text("hello\nworld\n")
        assert cli.run(["tree", str(log)]) == cli.EXIT_NO_TRACES
        err = capsys.readouterr().err
        assert "2 other lines skipped" in err
        assert "no traces found" in err

    def test_usage_errors_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Unknown commands, bad options and bad numbers exit 2."""
        assert cli.run(["bogus"]) == cli.EXIT_USAGE
        assert cli.run(["convert", TRACES, "--to", "png"]) == cli.EXIT_USAGE
        assert cli.run(["tree", TRACES, "--slowest", "0"]) == cli.EXIT_USAGE
        assert cli.run(["--version"]) == cli.EXIT_OK
        assert "flowtracker" in capsys.readouterr().out

    def test_progress_bar_only_on_a_terminal(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A terminal's stderr gets a progress bar, cleared at the end; a pipe's never does."""
        big = tmp_path / "big.jsonl"
        line = (GOLDEN / "traces.jsonl").read_bytes().splitlines()[0]
        big.write_bytes((line + b"\n") * 5000)
        monkeypatch.setattr(cli._Progress, "delay", 0.0)
        assert cli.run(["stats", str(big)]) == cli.EXIT_OK
        assert "reading" not in capsys.readouterr().err
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert cli.run(["stats", str(big)]) == cli.EXIT_OK
        assert "reading █" in terminal.getvalue()
        assert terminal.getvalue().endswith("\r\x1b[K")

    def test_reader_leaving_early_is_not_an_error(self, tmp_path: Path) -> None:
        """``flowtracker tree big | head -1``: exit 0, no traceback."""
        big = tmp_path / "big.jsonl"
        big.write_bytes((GOLDEN / "traces.jsonl").read_bytes() * 500)
        process = subprocess.Popen(
            [sys.executable, "-m", "flowtracker", "tree", str(big), "--no-merge"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.readline()
        process.stdout.close()
        assert process.wait(timeout=60) == 0
        assert b"Traceback" not in process.stderr.read()
        process.stderr.close()


class TestReport:
    """``flowtracker report``."""

    def test_writes_one_offline_page(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The page is written where asked, self-contained, with the input's data."""
        out = tmp_path / "report.html"
        assert cli.run(["report", TRACES, "-o", str(out)]) == cli.EXIT_OK
        page = out.read_text(encoding="utf-8")
        assert page.startswith("<!doctype html>")
        assert "default-src 'none'" in page
        assert 'src="http' not in page
        assert f"wrote {out}" in capsys.readouterr().err

    def test_plain_to_stdout(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``-o -`` writes to stdout; ``--no-compress`` embeds readable JSON."""
        assert cli.run(["report", TRACES, "-o", "-", "--no-compress", "--title", "Mine"]) == cli.EXIT_OK
        page = capsys.readouterr().out
        assert "<title>Mine</title>" in page
        assert "4bf92f3577b34da6a3ce929d0e0e4736" in page

    def test_unwritable_output_exits_4(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An output in a missing directory: exit 4."""
        assert cli.run(["report", TRACES, "-o", str(tmp_path / "no" / "r.html")]) == cli.EXIT_OUTPUT
        assert "cannot write" in capsys.readouterr().err


class TestConvert:
    """``flowtracker convert --to ...``."""

    def test_sankey_and_mermaid_match_the_golden_files(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The CLI writes exactly what the viz functions do."""
        assert cli.run(["convert", TRACES, "--to", "sankey"]) == cli.EXIT_OK
        assert capsys.readouterr().out == (GOLDEN / "sankey.txt").read_text(encoding="utf-8")
        assert cli.run(["convert", TRACES, "--to", "mermaid"]) == cli.EXIT_OK
        assert capsys.readouterr().out == (GOLDEN / "mermaid.md").read_text(encoding="utf-8")

    def test_sankey_per_span_with_tags(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``--per-span --tag KEY`` writes the Go exporter's lines with tag labels."""
        assert cli.run(["convert", TRACES, "--to", "sankey", "--per-span", "--tag", "currency"]) == 0
        assert "GET / [50.25] Process Payment (currency:USD)" in capsys.readouterr().out.splitlines()

    def test_chrome_to_a_file(self, tmp_path: Path) -> None:
        """Chrome Trace Event JSON with one complete event per span."""
        out = tmp_path / "trace.json"
        assert cli.run(["convert", TRACES, "--to", "chrome", "-o", str(out)]) == cli.EXIT_OK
        events = orjson.loads(out.read_bytes())["traceEvents"]
        assert sum(1 for event in events if event["ph"] == "X") == 17

    def test_otlp_json_is_a_valid_export_request(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The OTLP JSON parses as an ExportTraceServiceRequest; records keep their own service."""
        from google.protobuf import json_format
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        assert cli.run(["convert", TRACES, "--to", "otlp-json"]) == cli.EXIT_OK
        request = json_format.Parse(capsys.readouterr().out, ExportTraceServiceRequest())
        services = {
            attribute.value.string_value
            for resource in request.resource_spans
            for attribute in resource.resource.attributes
            if attribute.key == "service.name"
        }
        assert services == {"orders", "shipping"}
        spans = [
            span
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        assert len(spans) == 17

    def test_otlp_json_service_override(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``--service`` names every record's service."""
        assert cli.run(["convert", TRACES, "--to", "otlp-json", "--service", "checkout"]) == 0
        body: dict[str, Any] = orjson.loads(capsys.readouterr().out)
        names = {
            attribute["value"]["stringValue"]
            for resource in body["resourceSpans"]
            for attribute in resource["resource"]["attributes"]
            if attribute["key"] == "service.name"
        }
        assert names == {"checkout"}


class TestStats:
    """``flowtracker stats``."""

    def test_table_matches_golden(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The default table, biggest total first."""
        assert cli.run(["stats", TRACES]) == cli.EXIT_OK
        assert capsys.readouterr().out == (GOLDEN / "stats.txt").read_text(encoding="utf-8")

    def test_json_sorted_and_limited(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``--json --sort count --limit 1`` gives the most frequent name."""
        assert cli.run(["stats", TRACES, "--json", "--sort", "count", "--limit", "1"]) == cli.EXIT_OK
        rows = orjson.loads(capsys.readouterr().out)
        assert [(row["name"], row["count"]) for row in rows] == [("fib", 3)]

    def test_loop_columns_and_sort_by_blocks(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Loop-monitor traces add the loop columns; ``--sort blocks`` puts the blocking spans first."""
        loop_traces = str(GOLDEN / "loop_traces.jsonl")
        assert cli.run(["stats", loop_traces]) == cli.EXIT_OK
        assert capsys.readouterr().out == (GOLDEN / "loop_stats.txt").read_text(encoding="utf-8")
        assert cli.run(["stats", loop_traces, "--json", "--sort", "blocks", "--limit", "2"]) == cli.EXIT_OK
        rows = orjson.loads(capsys.readouterr().out)
        assert [(row["name"], row["blocks"], row["blocked_ms"]) for row in rows] == [
            ("fetch rates", 2, 256.125),
            ("render_pdf", 1, 300.412),
        ]

    def test_sort_by_busy_without_loop_data(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``--sort busy`` on traces without monitor data keeps every row (all count as 0), then by name."""
        assert cli.run(["stats", TRACES, "--json", "--sort", "busy"]) == cli.EXIT_OK
        rows = orjson.loads(capsys.readouterr().out)
        assert [row["name"] for row in rows] == sorted(row["name"] for row in rows)


class TestEntryPoints:
    """``python -m flowtracker``, end to end (the demo command: tests/test_demo.py)."""

    def test_module_entry_point(self) -> None:
        """``python -m flowtracker --version`` works."""
        result = flowtracker("--version")
        assert result.returncode == 0
        assert result.stdout.startswith(b"flowtracker ")
