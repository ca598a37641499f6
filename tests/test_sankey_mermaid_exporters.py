"""SankeyExporter and MermaidExporter: the Go library's text formats, from a real Tracker.

Traces are recorded with deterministic ids and a fake clock, exported by a
running Tracker to a stream or a file, and the text is compared literally.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

import flowtracker as ft
from flowtracker.exporters import exporter_from_url
from flowtracker.testing import FakeClock, sequential_ids, use_clock, use_ids


async def record_demo_flow(*exporters: ft.Exporter, name: str = "Process Payment") -> None:
    """Runs the Go README's order flow once under a tracker exporting to ``exporters``."""
    clock = FakeClock(step_ms=0)
    with use_ids(sequential_ids()), use_clock(clock):
        async with ft.Tracker(exporters=list(exporters), service="orders"), ft.span("GET /"):
            async with ft.span(name, currency="USD"):
                clock.advance(50)
            async with ft.span("DB: Select User", **{"db.query": "SELECT * FROM users"}):
                clock.advance(120)
            async with ft.span("HTTP: Shipping Service"):
                async with ft.span("Calculate Weight"):
                    clock.advance(10)
                clock.advance(200)


class TestSankeyExporter:
    """SankeyMATIC lines per trace."""

    async def test_go_format_to_a_stream(self) -> None:
        """One ``parent [ms] child`` line per non-root span, in span order."""
        out = io.StringIO()
        await record_demo_flow(ft.SankeyExporter(out))
        assert out.getvalue() == (
            "GET / [50] Process Payment\n"
            "GET / [120] DB: Select User\n"
            "GET / [210] HTTP: Shipping Service\n"
            "HTTP: Shipping Service [10] Calculate Weight\n"
        )

    async def test_tags_in_labels_and_markers(self) -> None:
        """Selected tags extend labels as `` (k:v)``; markers frame the trace as comments."""
        out = io.StringIO()
        await record_demo_flow(ft.SankeyExporter(out, include_tags=["currency"], markers=True))
        lines = out.getvalue().splitlines()
        assert lines[0] == "' ----- START SANKEY DATA (trace id: 00000000000000000000000000000001) -----"
        assert lines[1] == "GET / [50] Process Payment (currency:USD)"
        assert lines[-1].startswith("' ----- END SANKEY DATA")

    async def test_hostile_name_still_one_valid_flow(self) -> None:
        """A name with brackets, a colour-like word and a comment start stays one parseable flow."""
        out = io.StringIO()
        await record_demo_flow(ft.SankeyExporter(out), name="// pay [5] #ff0000\nnow")
        line = out.getvalue().splitlines()[0]
        match = re.fullmatch(r"(.+)\[([\d\s.+-]+)\](.+)", line)
        assert match is not None
        assert match.group(2) == "50"
        assert match.group(3).strip() == "∕/ pay (5) ＃ff0000 now"

    async def test_appends_to_a_file_from_a_url(self, tmp_path: Path) -> None:
        """``sankey:///path.txt`` appends to that file, across tracker runs."""
        path = tmp_path / "flows.txt"
        exporter = exporter_from_url(f"sankey://{path}")
        assert isinstance(exporter, ft.SankeyExporter)
        await record_demo_flow(exporter)
        await record_demo_flow(exporter_from_url(f"sankey://{path}?tag=currency&tags=x;y"))
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 8
        assert lines[4] == "GET / [50] Process Payment (currency:USD)"

    def test_both_from_the_environment_variable(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """FLOWTRACKER_EXPORTERS can name both, with several tags, despite its comma separator."""
        from flowtracker.exporters import exporters_from_env

        value = f"sankey://{tmp_path}/f.txt?tag=currency&tag=db.system,mermaid://{tmp_path}/f.md?direction=LR"
        monkeypatch.setenv("FLOWTRACKER_EXPORTERS", value)
        sankey, mermaid = exporters_from_env()
        assert isinstance(sankey, ft.SankeyExporter)
        assert sankey.include_tags == ("currency", "db.system")
        assert isinstance(mermaid, ft.MermaidExporter)
        assert mermaid.direction == "LR"

    def test_url_options(self) -> None:
        """URL query options map to constructor options; no path means stdout."""
        exporter = ft.SankeyExporter.from_url("sankey://?all_tags=1&markers=yes")
        assert exporter.all_tags
        assert exporter.markers
        assert exporter._sink.path is None


class TestMermaidExporter:
    """Mermaid flowcharts per trace."""

    async def test_go_format_to_a_stream(self) -> None:
        """A fenced block, ``graph TD``, one labelled edge per child, span ids as node ids."""
        out = io.StringIO()
        await record_demo_flow(ft.MermaidExporter(out))
        assert out.getvalue() == (
            "```mermaid\n"
            "graph TD\n"
            '    N0000000000000002["GET /"] -->|50ms| N0000000000000003["Process Payment"]\n'
            '    N0000000000000002["GET /"] -->|120ms| N0000000000000004["DB: Select User"]\n'
            '    N0000000000000002["GET /"] -->|210ms| N0000000000000005["HTTP: Shipping Service"]\n'
            '    N0000000000000005["HTTP: Shipping Service"] -->|10ms| '
            'N0000000000000006["Calculate Weight"]\n'
            "```\n"
        )

    async def test_hostile_name_is_escaped(self) -> None:
        """Quotes, tags and ``#`` become entity codes; the label stays one quoted string."""
        out = io.StringIO()
        await record_demo_flow(
            ft.MermaidExporter(out, direction="LR"), name='<img src=x onerror=alert(1)> "#1"'
        )
        text = out.getvalue()
        assert "graph LR" in text
        assert '["#lt;img src=x onerror=alert(1)#gt; #quot;#35;1#quot;"]' in text
        assert "<img" not in text

    async def test_appends_to_a_file_from_a_url(self, tmp_path: Path) -> None:
        """``mermaid:///path.md?direction=LR`` appends LR blocks to that file."""
        path = tmp_path / "flows.md"
        exporter = exporter_from_url(f"mermaid://{path}?direction=LR")
        assert isinstance(exporter, ft.MermaidExporter)
        await record_demo_flow(exporter)
        text = path.read_text(encoding="utf-8")
        assert text.startswith("```mermaid\ngraph LR\n")
        assert text.count("-->") == 4

    def test_bad_direction_fails_at_start_up(self) -> None:
        """An unknown direction is a clear error when the exporter is configured."""
        with pytest.raises(ValueError, match="TD or LR"):
            ft.MermaidExporter.from_url("mermaid:///tmp/x.md?direction=up")
