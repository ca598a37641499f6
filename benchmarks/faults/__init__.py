"""The fault suite: real servers and processes meet real faults; nothing may be lost silently.

Run ``./dev faults`` (or ``python -m benchmarks.faults``; ``--quick``,
``--scenario NAME``, ``--list``). Each scenario starts real servers on
loopback (uvicorn, gunicorn with uvicorn's and aiohttp's workers,
``web.run_app``) or a script, causes one fault (a signal under load, a
``--preload`` fork, an exporter outage, a hostile header byte, a full disk,
threads at full speed, a root outliving ``max_trace_age``), and prints one row: requests, traces written,
dropped (as the tracker counted them), lost (must be 0), shutdown time and a
verdict. The method is described in ``docs/reliability.md``.

Example:
    python -m benchmarks.faults --quick --scenario outage-webhook
"""
