"""The wire: one JSON encoding of a finished trace, and what it is built from.

``encode.py`` (the encoding and its odd-value fallback), ``policy.py``
(redaction and truncation), ``record.py`` (the finished ``Trace``) and
``names.py`` (the names flowtracker gives what it records by itself). Import
what you need from those modules: this package's namespace is empty, so the
loop monitor's import of ``names`` loads no encoder.
"""
