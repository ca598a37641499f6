"""flowtracker's side-by-side benchmarks (issue 6); see ``benchmarks/README.md``.

Run ``python -m benchmarks [suite ...] [--quick]``; suites are ``span``,
``request``, ``pipeline``, ``scale`` and ``profile``. Each prints Markdown
tables and writes JSON under ``benchmarks/results/``.

Example:
    python -m benchmarks span --quick
"""
