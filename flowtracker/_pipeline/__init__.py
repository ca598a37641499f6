"""The pipeline: whole traces out of ended spans, and one bounded lane per exporter.

The only layer that knows anyio. ``Tracker`` (``tracker.py``) decides when a
trace is complete and hands it to the lanes (``lane.py``); the ``Exporter``
protocol (``exporter.py``), statistics (``stats.py``), tail sampling
(``sampling.py``) and the thread hand-off for blocking exporters
(``executor.py``) sit beside it. Import what you need from those modules:
this package's namespace is empty, so importing one of them imports no other.
"""
