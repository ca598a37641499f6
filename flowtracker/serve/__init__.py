"""``flowtracker serve``: watch traces live. OTLP in over HTTP and gRPC, a SQLite store, a JSON API.

One module per job:

============  ==============================================================
``command``   the process: options, start-up lines, signals, shutdown
``app``       the aiohttp application on ``--port`` (and its loopback guard)
``receiver``  OTLP in: ``POST /v1/traces`` and gRPC ``TraceService/Export``
``ingest``    bodies and files to store rows, off the event loop, with limits
``rows``      wire-format spans as the rows of the ``spans`` table
``store``     SQLite: the writer thread that batches, the reader threads
``schema``    the tables, the schema version, opening a file safely
``queries``   the trace list with its filters, one trace
``api``       ``GET /api/traces``, ``GET /api/traces/{id}``, ``GET /api/live``
``feed``      the live feed (Server-Sent Events)
``page``      ``GET /``: the live page (the report's views) and the two routes that feed it
============  ==============================================================

The OTLP mapping itself lives in the wire layer (``flowtracker._wire.otlp``),
where the OTLP exporter uses it the other way round. ``docs/serve.md`` tells
the whole story.

Example:
    >>> from flowtracker.serve.command import Options
    >>> Options().port, Options().grpc_port
    (4318, 4317)
"""

from __future__ import annotations
