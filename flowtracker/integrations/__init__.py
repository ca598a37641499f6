"""What the integrations share, below the public integration modules.

The public modules (``flowtracker.aiohttp``, ``flowtracker.asgi``,
``flowtracker.propagation``, ``flowtracker.log_correlation``) keep their short
import paths; what they have in common lives here: the HTTP-server layer both
middlewares stand on (:mod:`~flowtracker.integrations.http_server`), the
app's startup and shutdown (:mod:`~flowtracker.integrations.lifecycle`, with
:mod:`~flowtracker.integrations.stop_signals` for servers that run no hooks),
and ``@traced`` (:mod:`~flowtracker.integrations.traced`). Integrations make
spans only through the core's internal API (:mod:`flowtracker._core`).
"""
