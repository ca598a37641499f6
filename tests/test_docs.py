"""The docs stay true: every test that README.md and SECURITY.md name as proof exists."""

from __future__ import annotations

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
