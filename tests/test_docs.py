"""The docs stay true: every test that README.md, SECURITY.md and docs/reliability.md name as proof exists."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_ID = re.compile(r"`(tests/test_\w+\.py(?:::\w+(?:::\w+)?)?)`")


class TestNamedProofs:
    def test_every_named_test_exists(self):
        """Each `tests/...::Class::test` cited in README.md, SECURITY.md or docs/reliability.md is
        collected by pytest."""
        texts = [(ROOT / doc).read_text() for doc in ("README.md", "SECURITY.md", "docs/reliability.md")]
        ids = sorted({match for text in texts for match in TEST_ID.findall(text)})
        assert len(ids) >= 15, ids
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


class TestQuickstart:
    def test_readme_quickstart_runs(self, tmp_path):
        """The README's quickstart, run as written, prints one FLOW_LOG trace and writes traces.jsonl."""
        readme = (ROOT / "README.md").read_text()
        section = readme.split("## Quickstart", 1)[1]
        code = section.split("```python\n", 1)[1].split("```", 1)[0]
        env = {k: v for k, v in os.environ.items() if k != "FLOWTRACKER_EXPORTERS"}
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, check=False
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("FLOW_LOG: {")
        trace = json.loads((tmp_path / "traces.jsonl").read_text())
        assert trace["service"] == "orders"
        assert {s["name"] for s in trace["spans"]} == {"GET /users/{id}", "load_user", "FetchFromDB"}


def _extras() -> dict[str, list[str]]:
    """pyproject.toml's extras (``tomllib``, or its backport ``tomli`` on Python 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["optional-dependencies"])


#: Extras for working on flowtracker, not for using it (not in README's table, nor in ``all``).
DEVELOPMENT = {"test", "lint", "bench"}


def _readme_extras() -> dict[str, str]:
    """README's "Extras" table: extra → its "pulls in" cell."""
    section = (ROOT / "README.md").read_text().split("\n## Extras\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    return {cells[0].strip("| `"): cells[2].rstrip(" |") for cells in rows}


class TestExtras:
    def test_readme_table_names_every_extra_and_what_it_pulls_in(self):
        """README's table has a row for each extra a user installs and no other; each row's "pulls in"
        names every package the extra requires."""
        extras = {name: requires for name, requires in _extras().items() if name not in DEVELOPMENT}
        table = _readme_extras()
        assert set(table) == set(extras) - {"all"}
        for name, requires in extras.items():
            if name == "all":
                continue
            for requirement in requires:
                package = re.split(r"[\[<>=;~! ]", requirement, maxsplit=1)[0].lower()
                assert package in table[name].lower(), (name, package, table[name])

    def test_every_extra_brings_something_and_all_brings_every_one(self):
        """No extra is empty, and ``flowtracker[all]`` is every extra a user installs."""
        extras = _extras()
        assert all(extras.values()), [name for name, requires in extras.items() if not requires]
        (everything,) = extras["all"]
        named = everything.removeprefix("flowtracker[").removesuffix("]").split(",")
        assert sorted(named) == sorted(set(extras) - DEVELOPMENT - {"all"})


def _first_screen_snippet(framework: str) -> str:
    """The README's lines for ``framework`` ("ASGI" or "aiohttp") under "Trace your service"."""
    section = (ROOT / "README.md").read_text().split("## Trace your service", 1)[1].split("\n## ", 1)[0]
    after = section.split("FastAPI, Starlette, any ASGI app:" if framework == "ASGI" else "\naiohttp:", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: An app around the README's lines (the snippet goes where ``{snippet}`` is), one templated route.
APPS = {
    "ASGI": (
        "from fastapi import FastAPI\napp = FastAPI()\n{snippet}\n"
        "@app.get('/orders/{{order_id}}')\nasync def order(order_id: int) -> dict:\n    return {{}}\n"
        "import uvicorn\n"
        "uvicorn.run(app, host='127.0.0.1', port={port}, loop='asyncio', log_level='warning')\n"
    ),
    "aiohttp": (
        "from aiohttp import web\napp = web.Application()\n{snippet}\n"
        "async def order(request):\n    return web.json_response({{}})\n"
        "app.router.add_get('/orders/{{order_id}}', order)\n"
        "web.run_app(app, host='127.0.0.1', port={port}, print=None)\n"
    ),
}


class TestFirstScreen:
    @pytest.mark.parametrize("framework", ["ASGI", "aiohttp"])
    def test_the_lines_for_your_service_trace_it(self, framework, tmp_path):
        """README's "Trace your service" lines, as written, in a FastAPI app under uvicorn and in an
        aiohttp app under ``web.run_app``: a request is one trace, named after its route, of service
        ``shop``, written where ``FLOWTRACKER_EXPORTERS`` says (as "See it" shows)."""
        port = _free_port()
        (tmp_path / "app.py").write_text(
            APPS[framework].format(snippet=_first_screen_snippet(framework), port=port)
        )
        traces = tmp_path / "traces.jsonl"
        env = {**os.environ, "FLOWTRACKER_EXPORTERS": traces.as_uri()}
        process = subprocess.Popen([sys.executable, "app.py"], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
        try:
            for _ in range(300):
                assert process.poll() is None, process.communicate()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/orders/7", timeout=5) as response:
                        assert response.status == 200
                    break
                except urllib.error.URLError:
                    time.sleep(0.05)
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, stderr
        (trace,) = [json.loads(line) for line in traces.read_text().splitlines()]
        assert trace["service"] == "shop"
        assert trace["spans"][0]["name"] == "GET /orders/{order_id}"
