"""The first exporters: console, file, memory, logging; URL and entry-point lookup."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import stat
import sys
import threading

import pytest

import flowtracker as ft
from flowtracker.exporters import exporter_from_url, exporters_from_env, load_exporter


async def one_trace(tracker: ft.Tracker, name: str = "root", **tags: object) -> None:
    with ft.start_root_span(name, dict(tags), tracker=tracker), ft.span("child"):
        pass


class TestConsoleExporter:
    async def test_one_flow_log_line_per_trace_on_current_stdout(self, capsys):
        """Each trace is exactly one `FLOW_LOG: <compact json>` line on sys.stdout as it is at write time."""
        async with ft.Tracker(exporters=[ft.ConsoleExporter()]) as tracker:
            for i in range(3):
                await one_trace(tracker, i=i)
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 3
        for i, line in enumerate(lines):
            assert line.startswith("FLOW_LOG: {")
            payload = line[len("FLOW_LOG: ") :]
            assert " " not in payload.replace("FLOW_LOG: ", "")  # compact
            trace = json.loads(payload)
            assert trace["spans"][0]["tags"] == {"i": i}

    async def test_prefix_and_stream_configurable(self):
        """Prefix and stream can be changed."""
        out = io.StringIO()
        async with ft.Tracker(exporters=[ft.ConsoleExporter(prefix="T> ", stream=out)]) as tracker:
            await one_trace(tracker)
        assert out.getvalue().startswith("T> {")
        assert out.getvalue().count("\n") == 1


class TestFileExporter:
    async def test_json_lines_appended(self, tmp_path):
        """Traces are appended as JSON Lines; a second tracker appends after the first."""
        path = tmp_path / "traces.jsonl"
        for _ in range(2):
            async with ft.Tracker(exporters=[ft.FileExporter(path)]) as tracker:
                for i in range(5):
                    await one_trace(tracker, i=i)
        lines = path.read_text().splitlines()
        assert len(lines) == 10
        assert [json.loads(line)["spans"][0]["tags"]["i"] for line in lines] == list(range(5)) * 2

    async def test_new_file_is_private(self, tmp_path):
        """A new trace file is created with mode 0o600 (traces may hold user data)."""
        path = tmp_path / "traces.jsonl"
        async with ft.Tracker(exporters=[ft.FileExporter(path)]) as tracker:
            await one_trace(tracker)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_concurrent_trackers_never_interleave(self, tmp_path):
        """Four trackers in four threads appending big traces to one file: every line is whole."""
        path = tmp_path / "shared.jsonl"

        def writer(n: int) -> None:
            with ft.Tracker(exporters=[ft.FileExporter(path)], max_batch=7) as tracker:
                for i in range(150):
                    with ft.start_root_span(
                        "root", {"writer": n, "i": i, "pad": "x" * 5000}, tracker=tracker
                    ):
                        for _ in range(3):
                            with ft.span("child", pad="y" * 3000):
                                pass

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lines = path.read_bytes().split(b"\n")
        assert lines[-1] == b""
        traces = [json.loads(line) for line in lines[:-1]]
        assert len(traces) == 600
        assert sorted((t["spans"][0]["tags"]["writer"], t["spans"][0]["tags"]["i"]) for t in traces) == [
            (n, i) for n in range(4) for i in range(150)
        ]

    async def test_rotation_by_size(self, tmp_path):
        """With max_bytes the file rotates to .1, .2 ... and keeps backup_count files."""
        path = tmp_path / "r.jsonl"
        exporter = ft.FileExporter(path, max_bytes=2000, backup_count=2)
        async with ft.Tracker(exporters=[exporter], max_batch=1) as tracker:
            for i in range(40):
                await one_trace(tracker, i=i)
                await tracker.flush()
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
        for name in files:
            size = (tmp_path / name).stat().st_size
            assert 0 < size <= 2000
            for line in (tmp_path / name).read_text().splitlines():
                json.loads(line)
        newest = [json.loads(x)["spans"][0]["tags"]["i"] for x in path.read_text().splitlines()]
        assert newest[-1] == 39


class TestFilePaths:
    """A FileExporter's path is checked when it is made, and named when it is wrong."""

    async def test_tilde_is_the_home_folder(self, tmp_path, monkeypatch):
        """``~/x.jsonl``, as an argument, a bare path or a ``file://~/`` URL, is a file in $HOME."""
        monkeypatch.setenv("HOME", str(tmp_path))
        for given in (
            ft.FileExporter("~/a.jsonl"),
            exporter_from_url("~/b.jsonl"),
            exporter_from_url("file://~/c.jsonl"),
        ):
            assert given.path.parent == tmp_path
            async with ft.Tracker(exporters=[given]) as tracker:
                await one_trace(tracker)
            assert tracker.stats.exporters["file"].exported == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "c.jsonl"]

    def test_missing_folder_fails_at_construction_naming_it(self, tmp_path):
        """A missing folder raises FileNotFoundError at once, naming the path and the folder; none is made."""
        target = tmp_path / "missing-dir" / "t.jsonl"
        with pytest.raises(
            FileNotFoundError, match=r"FileExporter\('.*missing-dir/t\.jsonl'\): the folder .*"
        ):
            ft.FileExporter(target)
        with pytest.raises(FileNotFoundError, match="missing-dir"):
            exporter_from_url(f"file://{target}")
        with pytest.raises(FileNotFoundError, match="missing-dir"):
            ft.Tracker(exporters=[f"file://{target}"])
        assert not target.parent.exists()

    def test_missing_folder_in_the_environment(self, tmp_path, monkeypatch):
        """Through FLOWTRACKER_EXPORTERS: ``Tracker()`` raises naming the path; a tracker that falls
        back (the default tracker's way) says why in ``stats.config_error``."""
        target = tmp_path / "nope" / "t.jsonl"
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", f"file://{target}")
        with pytest.raises(FileNotFoundError, match="nope"):
            ft.Tracker()
        fallback = ft.Tracker(on_config_error="fallback")
        assert str(target.parent) in (fallback.stats.config_error or "")

    def test_a_folder_or_a_file_in_place_of_the_folder(self, tmp_path):
        """A path that is a folder, or whose folder is a file, raises at construction, naming it."""
        with pytest.raises(IsADirectoryError, match="is a folder"):
            ft.FileExporter(tmp_path)
        plain = tmp_path / "plain.txt"
        plain.write_text("")
        with pytest.raises(NotADirectoryError, match=r"plain\.txt is not a folder"):
            ft.FileExporter(plain / "t.jsonl")

    def test_sankey_and_mermaid_files_are_checked_too(self, tmp_path):
        """The Sankey and Mermaid exporters' file targets follow the same rules."""
        with pytest.raises(FileNotFoundError, match=r"SankeyExporter\("):
            ft.SankeyExporter(tmp_path / "nope" / "f.txt")
        with pytest.raises(FileNotFoundError, match=r"MermaidExporter\("):
            exporter_from_url(f"mermaid://{tmp_path}/nope/f.md")


class TestMemoryAndLogging:
    async def test_memory_exporter_holds_wire_dicts_and_records(self, tracker, memory):
        """MemoryExporter keeps each trace as a wire-format dict and as a Trace record."""
        await one_trace(tracker)
        await tracker.flush()
        assert memory.traces[0]["trace_id"] == memory.records[0].trace_id
        assert json.loads(memory.records[0].to_json()) == memory.traces[0]
        memory.clear()
        assert memory.traces == []
        assert memory.records == []

    async def test_logging_exporter_readable_and_structured(self, caplog):
        """LoggingExporter logs a readable summary with the trace as structured data (not base64)."""
        caplog.set_level(logging.INFO, logger="flowtracker.traces")
        async with ft.Tracker(exporters=[ft.LoggingExporter()]) as tracker:
            await one_trace(tracker, "GET /orders")
            with pytest.raises(ValueError, match="x"), ft.start_root_span("broken", tracker=tracker):
                raise ValueError("x")
        ok, failed = caplog.records
        assert ok.levelno == logging.INFO
        assert "GET /orders ok" in ok.getMessage()
        assert "2 spans" in ok.getMessage()
        assert ok.flowtracker_trace["spans"][1]["name"] == "child"
        assert failed.levelno == logging.ERROR


class TestConfiguration:
    def test_urls(self, tmp_path):
        """console, file:// URLs, bare .jsonl paths and logging map to their exporters."""
        assert isinstance(exporter_from_url("console"), ft.ConsoleExporter)
        assert isinstance(exporter_from_url("logging"), ft.LoggingExporter)
        file_exporter = exporter_from_url(f"file://{tmp_path}/a%20b.jsonl")
        assert isinstance(file_exporter, ft.FileExporter)
        assert str(file_exporter.path) == f"{tmp_path}/a b.jsonl"
        assert isinstance(exporter_from_url("traces.jsonl"), ft.FileExporter)

    def test_env_list(self, monkeypatch):
        """FLOWTRACKER_EXPORTERS is a comma-separated list; `none` means no exporter."""
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", "console, logging")
        assert [type(e).__name__ for e in exporters_from_env()] == ["ConsoleExporter", "LoggingExporter"]
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", "none")
        assert exporters_from_env() == []

    def test_entry_point_plugin(self, tmp_path, monkeypatch):
        """A third-party exporter registered in the flowtracker.exporters group is found by name."""
        package = tmp_path / "ftplugin_demo.py"
        package.write_text(
            "class Demo:\n"
            "    def __init__(self, level=1): self.level = level\n"
            "    @classmethod\n"
            "    def from_url(cls, url): return cls(level=int(url.rsplit('/', 1)[1]))\n"
            "    async def export(self, traces): pass\n"
            "    async def aclose(self): pass\n"
        )
        dist = tmp_path / "ftplugin_demo-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ftplugin-demo\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text("[flowtracker.exporters]\ndemo = ftplugin_demo:Demo\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        try:
            assert load_exporter("demo", level=5).level == 5  # type: ignore[attr-defined]
            assert exporter_from_url("demo").level == 1  # type: ignore[attr-defined]
            assert exporter_from_url("demo://x/7").level == 7  # type: ignore[attr-defined]
            with pytest.raises(ValueError, match="no exporter named 'nope'"):
                load_exporter("nope")
        finally:
            sys.modules.pop("ftplugin_demo", None)


class TestThirdPartyProtocol:
    async def test_any_object_with_export_and_aclose_works(self):
        """No base class needed: a plain object with export/aclose is an Exporter."""

        class Plain:
            def __init__(self) -> None:
                self.seen: list[str] = []

            async def export(self, traces):
                self.seen.extend(t.trace_id for t in traces)
                await asyncio.sleep(0)

            async def aclose(self) -> None:
                pass

        plain = Plain()
        assert isinstance(plain, ft.Exporter)
        async with ft.Tracker(exporters=[plain]) as tracker:
            await one_trace(tracker)
        assert len(plain.seen) == 1
        assert tracker.stats.exporters["Plain"].exported == 1
