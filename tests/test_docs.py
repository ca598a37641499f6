"""The docs stay true: every test that README.md and SECURITY.md name as proof exists."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_ID = re.compile(r"`(tests/test_\w+\.py(?:::\w+(?:::\w+)?)?)`")


class TestNamedProofs:
    def test_every_named_test_exists(self):
        """Each `tests/...::Class::test` cited in README.md or SECURITY.md is collected by pytest."""
        texts = [(ROOT / doc).read_text() for doc in ("README.md", "SECURITY.md")]
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
