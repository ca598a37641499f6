"""Running a scenario in a fresh interpreter: the default tracker and fork() are per process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_python(code: str, *, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` (dedented) with this worktree's flowtracker, bounded by ``timeout``.

    ``FLOWTRACKER_EXPORTERS`` is not inherited: pass it in ``env`` to set it.
    """
    environment = {k: v for k, v in os.environ.items() if k != "FLOWTRACKER_EXPORTERS"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )
