"""Exporters from URLs, the environment and entry points.

``exporter_from_url`` maps a URL's scheme to a factory in :data:`SCHEMES`;
a bare word names a built-in (``console``, ``logging``) or an entry point in
the ``flowtracker.exporters`` group. ``FLOWTRACKER_EXPORTERS`` holds a
comma-separated list of such URLs and is read by the default tracker and by
any ``Tracker(exporters=None)``. Unknown schemes fail at start-up with a
message that lists the known ones.

An entry point names a callable (usually the exporter class):
``load_exporter(name, **options)`` calls it with the options, a bare ``name``
in a URL list calls it with none, and ``name://...`` calls its ``from_url(url)``.

Example:
    >>> exporter_from_url("file:///tmp/traces.jsonl").path.name
    'traces.jsonl'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from ._base import Exporter

#: The environment variable the default tracker reads.
ENV_VAR = "FLOWTRACKER_EXPORTERS"

#: URL scheme to factory(url) -> exporter. Integrations add their schemes here.
SCHEMES: dict[str, Callable[[str], Exporter]] = {}

ENTRY_POINT_GROUP = "flowtracker.exporters"


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
    if parts.netloc and parts.netloc != "localhost":
        path = parts.netloc + path  # file://relative/path.jsonl
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


def load_exporter(name: str, **options: Any) -> Exporter:
    """Instantiates the exporter registered as ``name`` in the entry-point group.

    Example:
        >>> load_exporter("sqlite", path="traces.db")  # doctest: +SKIP
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


def resolve_exporters(exporters: Iterable[Any] | None) -> list[Exporter]:
    """What ``Tracker(exporters=...)`` holds: ``None`` reads ``FLOWTRACKER_EXPORTERS``
    (console when unset); otherwise the exporters as given.

    Example:
        >>> [type(e).__name__ for e in resolve_exporters(None)]  # doctest: +SKIP
        ['ConsoleExporter']
    """
    if exporters is None:
        return exporters_from_env()
    return list(exporters)
