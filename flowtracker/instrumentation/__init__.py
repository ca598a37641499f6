"""Automatic spans for the libraries a service spends its time in.

``ft.instrument()`` turns them on for every supported library that is
installed; ``ft.instrument("httpx", "redis")`` for the named ones only;
``ft.uninstrument(...)`` undoes exactly that and puts the libraries' own
functions back. Every span is a child of the current span, kind ``client``;
a call made with no current span starts no trace, so a background job's pool
pings never become traces of their own.

Each supported library has a module here, ``flowtracker.instrumentation.<name>``,
with the same shape (the registry's contract):

* ``LIBRARY``: the library's name, as given to :func:`instrument`;
* ``PIP``: the requirement that installs it, given to ``pip install``
  (``"flowtracker[httpx]"``);
* ``install()``: imports the library (an ``ImportError`` propagates) and wraps
  or hooks it; a second call does nothing;
* ``uninstall()``: restores the library; a second call, or one before any
  ``install()``, does nothing, and it never imports the library.

Importing this package imports none of the libraries: what is installed is
decided with :func:`importlib.util.find_spec`, which does not import them.

Example:
    >>> import flowtracker as ft
    >>> ft.instrument("redis")
    ['redis']
    >>> ft.instrument("redis")  # idempotent: nothing doubles
    ['redis']
    >>> ft.uninstrument()
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import threading
from types import ModuleType

__all__ = ("SUPPORTED", "instrument", "uninstrument")

#: The libraries :func:`instrument` knows, in the order it instruments them.
SUPPORTED: tuple[str, ...] = ("httpx", "asyncpg", "redis", "sqlalchemy")

#: Names people pass to :func:`instrument` that are traced another way: what to use instead.
_TRACED_ELSEWHERE: dict[str, str] = {
    "aiohttp": (
        "aiohttp is traced by flowtracker.aiohttp, not by instrument(): "
        "the server with web.Application(middlewares=[flowtracker.aiohttp.middleware()]) "
        "(or flowtracker.aiohttp.setup(app)), client calls with "
        "aiohttp.ClientSession(trace_configs=[flowtracker.aiohttp.client_trace_config()])"
    ),
    **dict.fromkeys(
        ("asgi", "starlette", "fastapi", "uvicorn"),
        "ASGI apps (Starlette, FastAPI) are traced by a middleware, not by instrument(): "
        "app.add_middleware(flowtracker.asgi.FlowTrackerMiddleware)",
    ),
    "asyncio": (
        "the event loop is watched by flowtracker.monitor_event_loop() "
        "(or the middlewares' monitor_loop=True), not by instrument()"
    ),
}

# One lock for every install and uninstall: two threads instrumenting at once
# must not both see a library unwrapped and wrap it twice.
_lock = threading.Lock()


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def _named(libraries: tuple[str, ...]) -> list[str]:
    """The names given, each once, in order; ``ValueError`` for one not supported."""
    unknown = [name for name in libraries if name not in SUPPORTED]
    if unknown:
        raise ValueError(_unknown_message(unknown))
    return list(dict.fromkeys(libraries))


def _unknown_message(unknown: list[str]) -> str:
    """Each name with the closest supported one, then what traces the libraries that
    :func:`instrument` does not (aiohttp, ASGI apps), then the supported names.

    Example:
        >>> _unknown_message(["Redis", "mongo"]).split(". ")[0]
        "flowtracker cannot instrument 'Redis' (did you mean 'redis'?), 'mongo'"
    """
    named = []
    elsewhere = []
    for name in unknown:
        key = name.lower() if isinstance(name, str) else ""
        if key in _TRACED_ELSEWHERE:
            named.append(repr(name))
            elsewhere.append(_TRACED_ELSEWHERE[key] + ".")
            continue
        close = difflib.get_close_matches(key, SUPPORTED, n=1, cutoff=0.6)
        named.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    supported = f"The supported libraries are {', '.join(map(repr, SUPPORTED))}."
    head = f"flowtracker cannot instrument {', '.join(named)}."
    return " ".join([head, *dict.fromkeys(elsewhere), supported])


def _not_installed(name: str, cause: ImportError | None) -> ImportError:
    reason = "it is not installed" if cause is None else f"it does not import ({cause})"
    return ImportError(
        f"flowtracker cannot instrument {name!r}: {reason}. Fix: pip install '{_module(name).PIP}'",
        name=name,
    )


def _installed() -> list[str]:
    """The supported libraries that are installed (found without importing them)."""
    return [name for name in SUPPORTED if importlib.util.find_spec(name) is not None]


def instrument(*libraries: str) -> list[str]:
    """Turns on automatic spans for ``libraries`` (none given: every supported one installed).

    Idempotent: instrumenting a library twice never doubles its spans.
    Thread-safe.

    Args:
        *libraries: Any of ``"httpx"``, ``"asyncpg"``, ``"redis"``,
            ``"sqlalchemy"``. None: each of them that is installed; the
            absent ones are skipped.

    Returns:
        The names this call covers: those given (each once), or every
        supported library found installed when none were given.

    Raises:
        ValueError: A name is not supported; the message lists those that
            are, suggests the closest, and for a library traced another way
            (``"aiohttp"``, ``"fastapi"``) names the middleware or client
            hook that traces it.
        ImportError: A named library is not installed; the message says
            which ``pip install`` fixes it.

    Example:
        >>> import flowtracker as ft
        >>> ft.instrument("httpx", "redis")
        ['httpx', 'redis']
        >>> ft.uninstrument("httpx", "redis")
    """
    if libraries:
        names = _named(libraries)
        # Every named library is looked for before any is touched: a missing
        # one leaves nothing half done.
        for name in names:
            if importlib.util.find_spec(name) is None:
                raise _not_installed(name, None)
    else:
        names = _installed()
    with _lock:
        for name in names:
            try:
                _module(name).install()
            except ImportError as exc:  # found, but it does not import (a broken install)
                raise _not_installed(name, exc) from exc
    return names


def uninstrument(*libraries: str) -> None:
    """Turns automatic spans off for ``libraries`` (none given: all) and restores their functions.

    Calls already in flight finish as they began; calls made afterwards run
    the library's own code. Uninstrumenting a library that was never
    instrumented does nothing. Thread-safe.

    Raises:
        ValueError: A name is not supported; the message lists those that are.

    Example:
        >>> import flowtracker as ft
        >>> ft.uninstrument("redis")
    """
    names = _named(libraries) if libraries else list(SUPPORTED)
    with _lock:
        for name in names:
            _module(name).uninstall()
