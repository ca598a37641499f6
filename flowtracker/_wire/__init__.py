"""The wire: one JSON encoding of a finished trace, and what it is built from.

``encode.py`` (the encoding and its odd-value fallback), ``policy.py``
(redaction and truncation), ``record.py`` (the finished ``Trace``),
``completion.py`` (hooks told of each finished trace as its record is built:
the loop monitor's stalled time), ``names.py`` (the names flowtracker gives
what it records by itself) and ``frames.py`` (which lines of a recorded stack
are the user's own code). Import
what you need from those modules: this package's namespace is empty, so the
loop monitor's import of ``names`` loads no encoder.
"""
