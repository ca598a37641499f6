"""Exporters from URLs, the environment and entry points.

``exporter_from_url`` maps a URL's scheme to a factory in :data:`SCHEMES`;
a bare word names a built-in (``console``, ``logging``) or an entry point in
the ``flowtracker.exporters`` group. ``FLOWTRACKER_EXPORTERS`` holds a
comma-separated list of such URLs and is read by the default tracker and by
any ``Tracker(exporters=None)``. Unknown schemes, unknown query keys and a
``file://`` URL with a host part fail at start-up with a message that lists
what is accepted.

:func:`resolve_exporters` is what a :class:`~flowtracker.Tracker` calls: it
reads strings as URLs, rejects objects that are no exporter, and, for the
trackers flowtracker makes on its own (the default tracker, the middlewares'),
falls back to the console exporter instead of raising, naming the mistake once.

An entry point names a callable (usually the exporter class):
``load_exporter(name, **options)`` calls it with the options, a bare ``name``
in a URL list calls it with none, and ``name://...`` calls its ``from_url(url)``.

Example:
    >>> exporter_from_url("file:///tmp/traces.jsonl").path.name
    'traces.jsonl'
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .._pipeline.tracker import OnConfigError
from ._base import Exporter

#: The environment variable the default tracker reads.
ENV_VAR = "FLOWTRACKER_EXPORTERS"

#: URL scheme to factory(url) -> exporter. Integrations add their schemes here.
SCHEMES: dict[str, Callable[[str], Exporter]] = {}

ENTRY_POINT_GROUP = "flowtracker.exporters"

#: What a tracker does with a configuration mistake: raise it, or fall back.

_TEXT_KEYS = frozenset({"tag", "tags", "all_tags"})

#: Query keys each built-in scheme reads. ``None``: the query is not checked
#: (a webhook's query belongs to the target URL; Kafka takes any producer option).
QUERY_KEYS: dict[str, frozenset[str] | None] = {
    "console": frozenset(),
    "stdout": frozenset(),
    "logging": frozenset(),
    "file": frozenset(),
    "http": None,
    "https": None,
    "kafka": None,
    "otlp": frozenset({"encoding", "compression", "service", "timeout"}),
    "otlp+http": frozenset({"encoding", "compression", "service", "timeout"}),
    "otlp+https": frozenset({"encoding", "compression", "service", "timeout"}),
    "sankey": _TEXT_KEYS | {"markers"},
    "mermaid": _TEXT_KEYS | {"direction"},
}

#: Schemes whose URL names a local file: a host part there is a mistake.
_LOCAL_PATH_SCHEMES = frozenset({"file", "sankey", "mermaid"})


def _console(url: str) -> Exporter:
    from .console import ConsoleExporter

    return ConsoleExporter()


def _logging(url: str) -> Exporter:
    from .logging import LoggingExporter

    return LoggingExporter()


def _file(url: str) -> Exporter:
    from .file import FileExporter

    parts = urlsplit(url)
    path = unquote(parts.path if parts.scheme == "file" else url)
    if not path:
        raise ValueError(f"no path in exporter URL {url!r}")
    return FileExporter(path)


def _lazy(module: str, cls: str, extra: str | None = None) -> Callable[[str], Exporter]:
    """A factory that imports ``cls`` from ``module`` and calls its ``from_url``.

    A missing optional dependency fails with the extra that brings it.
    """

    def factory(url: str) -> Exporter:
        from importlib import import_module

        try:
            loaded = import_module(module, __package__)
        except ModuleNotFoundError as error:
            if extra is None or (error.name or "").startswith("flowtracker"):
                raise
            raise ModuleNotFoundError(
                f"{cls} needs {error.name}: pip install 'flowtracker[{extra}]'", name=error.name
            ) from error
        exporter: Exporter = getattr(loaded, cls).from_url(url)
        return exporter

    return factory


SCHEMES.update(
    {
        "console": _console,
        "stdout": _console,
        "logging": _logging,
        "file": _file,
        "http": _lazy(".webhook", "WebhookExporter", "aiohttp"),
        "https": _lazy(".webhook", "WebhookExporter", "aiohttp"),
        "kafka": _lazy(".kafka", "KafkaExporter", "kafka"),
        "otlp": _lazy(".otlp", "OTLPExporter", "otlp"),
        "otlp+http": _lazy(".otlp", "OTLPExporter", "otlp"),
        "otlp+https": _lazy(".otlp", "OTLPExporter", "otlp"),
        "sankey": _lazy(".sankey", "SankeyExporter"),
        "mermaid": _lazy(".mermaid", "MermaidExporter"),
    }
)


def exporter_from_url(url: str) -> Exporter:
    """Builds an exporter from a URL or name (see the module docstring).

    Raises:
        ValueError: for an unknown scheme or name, naming the known ones.
    """
    text = url.strip()
    scheme = text.split(":", 1)[0].lower() if ":" in text else text.lower()
    factory = SCHEMES.get(scheme)
    if factory is not None:
        _check_url(text, scheme)
        return factory(text)
    if text.endswith((".jsonl", ".json", ".log")) and ":" not in text:
        return _file(text)
    found = _entry_point(scheme)
    if found is not None:
        if text.lower() == scheme:  # a bare name: the factory's defaults
            exporter: Exporter = found()
        elif hasattr(found, "from_url"):
            exporter = found.from_url(text)
        else:
            raise ValueError(f"exporter {scheme!r} takes no URL (it has no from_url); use its bare name")
        return exporter
    from importlib.metadata import entry_points

    known = ", ".join(sorted(set(SCHEMES) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}))
    raise ValueError(f"unknown flowtracker exporter {url!r}; known schemes and names: {known}")


def _check_url(url: str, scheme: str) -> None:
    """Rejects the URL quirks that would otherwise hide a mistake.

    ``file://tmp/x.jsonl`` has the host ``tmp`` (a slash is probably missing),
    and an unknown query key (``?tga=currency``) would be ignored.
    """
    parts = urlsplit(url)
    if scheme in _LOCAL_PATH_SCHEMES and parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"exporter URL {url!r} has a host part ({parts.netloc!r}); a {scheme}:// URL names a "
            f"local path: write {scheme}:///{parts.netloc}{parts.path} for an absolute path "
            f"(three slashes), or the bare path for a relative one"
        )
    known = QUERY_KEYS.get(scheme)
    if known is None:
        return
    unknown = sorted({key for key, _ in parse_qsl(parts.query, keep_blank_values=True)} - known)
    if unknown:
        accepted = ", ".join(sorted(known)) if known else "none"
        raise ValueError(
            f"unknown option {', '.join(map(repr, unknown))} in exporter URL {url!r}; "
            f"{scheme}:// URLs take: {accepted}"
        )


def resolve_exporters(
    exporters: Iterable[Exporter | str] | None, on_error: OnConfigError = "raise"
) -> tuple[list[Exporter], str | None]:
    """The exporters a tracker gets, and the configuration mistake it fell back from.

    ``None`` reads ``FLOWTRACKER_EXPORTERS``; a string is an exporter URL (as
    :func:`exporter_from_url` reads it); anything else must have ``export``
    and ``aclose`` methods. With ``on_error="raise"`` a mistake raises here, at
    start-up. With ``"fallback"`` it is named once on stderr and through
    ``logging`` (the bad value, what is accepted, how to fix it), and one
    :class:`~flowtracker.ConsoleExporter` takes its place, so no trace is lost.

    Raises:
        ValueError: an unknown scheme or query key, or a bad ``on_error``.
        TypeError: an object that is no exporter.

    Example:
        >>> exporters, error = resolve_exporters(["console", "file:///tmp/traces.jsonl"])
        >>> [type(e).__name__ for e in exporters], error
        (['ConsoleExporter', 'FileExporter'], None)
    """
    if on_error not in ("raise", "fallback"):
        raise ValueError(f"on_config_error must be 'raise' or 'fallback', got {on_error!r}")
    try:
        return _build(exporters), None
    except Exception as error:
        # Tracing must never take the host down: a tracker flowtracker made on
        # its own (no line of user code to point at) keeps tracing to stdout.
        if on_error == "raise":
            raise
        from .console import ConsoleExporter

        message = _fallback_message(exporters, error)
        _report_once(message)
        return [ConsoleExporter()], message


def _build(exporters: Iterable[Exporter | str] | None) -> list[Exporter]:
    if exporters is None:
        return exporters_from_env()
    if isinstance(exporters, (str, bytes)):
        raise TypeError(f"exporters= takes a list of exporters or URLs; got one string {exporters!r}")
    built: list[Exporter] = []
    for item in exporters:
        if isinstance(item, str):
            built.append(exporter_from_url(item))
        elif isinstance(item, Exporter):
            built.append(item)
        else:
            raise TypeError(
                f"{item!r} ({type(item).__name__}) is not a flowtracker exporter: it needs "
                f"async export(traces) and aclose() methods; or pass an exporter URL such as 'console'"
            )
    return built


def _fallback_message(exporters: Iterable[Exporter | str] | None, error: Exception) -> str:
    if exporters is None:
        where = f"{ENV_VAR}={os.environ.get(ENV_VAR, '')!r}"
        fix = (
            f"set {ENV_VAR} to a comma-separated list of exporter URLs "
            "(e.g. 'console,file:///var/log/traces.jsonl'; see docs/exporters.md) or unset it"
        )
    else:
        where = f"exporters={exporters!r}"
        fix = "pass exporter objects or exporter URLs such as 'console'"
    return (
        f"flowtracker: ignoring {where}: {error}. To fix it, {fix}. "
        "Until then traces go to the console exporter (FLOW_LOG lines on stdout)."
    )


_reported: set[str] = set()
_reported_lock = threading.Lock()


def _report_once(message: str) -> None:
    """Names a configuration mistake once per process, on stderr and through ``logging``."""
    with _reported_lock:
        if message in _reported:  # the default tracker and a middleware's may both fall back
            return
        _reported.add(message)
    logger = logging.getLogger("flowtracker")
    if not _logging_reaches_stderr(logger):
        print(message, file=sys.stderr, flush=True)
    logger.error(message)


def _logging_reaches_stderr(logger: logging.Logger) -> bool:
    """True when ``logger.error`` alone already writes to stderr (so once is enough)."""
    if not logger.isEnabledFor(logging.ERROR):
        return False
    if not logger.hasHandlers():
        return logging.lastResort is not None  # Python's last-resort handler: stderr
    node: logging.Logger | None = logger
    while node is not None:
        for handler in node.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
                return True
        node = node.parent if node.propagate else None
    return False


def load_exporter(name: str, **options: Any) -> Exporter:
    """Instantiates the exporter registered as ``name`` in the entry-point group.

    ``load_exporter("sqlite", path="traces.db")`` calls the factory a plug-in
    registered as ``sqlite`` with ``path="traces.db"``.

    Example:
        >>> load_exporter("no-such-plugin")
        Traceback (most recent call last):
        ValueError: no exporter named 'no-such-plugin' in entry-point group 'flowtracker.exporters'
    """
    factory = _entry_point(name)
    if factory is None:
        raise ValueError(f"no exporter named {name!r} in entry-point group {ENTRY_POINT_GROUP!r}")
    exporter: Exporter = factory(**options)
    return exporter


def _entry_point(name: str) -> Any:
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == name:
            return point.load()
    return None


def exporters_from_env(default: str = "console") -> list[Exporter]:
    """Exporters named in ``FLOWTRACKER_EXPORTERS`` (``default`` when unset or empty).

    The value ``none`` means no exporters at all.
    """
    raw = os.environ.get(ENV_VAR, "").strip() or default
    if raw.lower() == "none":
        return []
    return [exporter_from_url(item) for item in split_urls(raw)]


def split_urls(raw: str) -> list[str]:
    """Splits a comma-separated exporter list, keeping commas that belong to a URL.

    A piece that does not start a new exporter (no ``://``, not a known name
    or file) continues the previous one, so a Kafka URL may list several
    brokers.

    Example:
        >>> split_urls("console, kafka://k1:9092,k2:9092/traces,otlp://collector")
        ['console', 'kafka://k1:9092,k2:9092/traces', 'otlp://collector']
    """
    items: list[str] = []
    for piece in raw.split(","):
        text = piece.strip()
        if not text:
            continue
        if items and not _starts_exporter(text):
            items[-1] += "," + text
        else:
            items.append(text)
    return items


def _starts_exporter(text: str) -> bool:
    if "://" in text or text.lower() in SCHEMES:
        return True
    if text.endswith((".jsonl", ".json", ".log")) and ":" not in text:
        return True
    from importlib.metadata import entry_points

    return any(point.name == text.lower() for point in entry_points(group=ENTRY_POINT_GROUP))
