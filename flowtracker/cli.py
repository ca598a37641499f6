"""The ``flowtracker`` command: look at traces from files and logs (also ``python -m flowtracker``).

Commands::

    flowtracker tree    FILE... [--trace ID] [--slowest N] [--tag KEY]...
    flowtracker report  FILE... [-o report.html] [--title T] [--no-compress]
    flowtracker convert FILE... --to chrome|sankey|mermaid|otlp-json [-o OUT]
    flowtracker stats   FILE... [--sort total|count|p50|p95|p99|max|errors|busy|blocks|stalled|name] [--json]
    flowtracker demo    [--requests N] [--serve] [--raw] [--traces traces.jsonl] [--report report.html]
    flowtracker serve   [FILE...] [--host 127.0.0.1] [--port 4318] [--grpc-port 4317] [--no-grpc]
                        [--db PATH] [--max-traces N] [--open]

Input: JSON Lines files (``FileExporter``), raw logs where trace lines carry
``FLOW_LOG:`` anywhere in the line (``docker logs app | flowtracker tree -``),
gzip (recognised by content), several files, ``-`` for standard input (also
the default when input is piped). Other lines are skipped and counted on
standard error. Records with the same trace id (follow-ups, one record per
service) are merged into one trace unless ``--no-merge``.

Exit codes, for scripts:

====  ==========================================================
0     success (also when the reader of the output went away, ``| head``)
1     no traces in the input, or no trace matched ``--trace``
2     usage error (unknown option, missing input on a terminal; ``serve``: a port in use)
3     an input cannot be read (missing, no permission, broken gzip)
4     the output cannot be written (``serve``: the store file is refused)
5     a needed optional dependency is missing (``demo`` needs the ``demo`` extra, ``serve`` the ``serve`` one)
130   interrupted (Ctrl-C)
====  ==========================================================

Colour (``tree``) and the progress bar appear on terminals only; ``NO_COLOR``
turns colour off, ``--color always`` forces it.

Example:
    >>> from flowtracker.cli import run
    >>> run(["tree", "/nonexistent/traces.jsonl"])  # says why on stderr
    3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

import orjson

from ._graph.model import TraceTree, plural
from ._wire.encode import encode
from .viz import (
    InputError,
    chrome_trace,
    merge_traces,
    mermaid_text,
    read_traces,
    render_report,
    sankeymatic_text,
    span_stats,
    stats_table,
    tree_text,
)

EXIT_OK = 0
EXIT_NO_TRACES = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_OUTPUT = 4
EXIT_MISSING = 5
EXIT_INTERRUPTED = 130

PROG = "flowtracker"


class _Failure(Exception):
    """Ends the command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def run(argv: Sequence[str]) -> int:
    """Runs the command line ``argv`` (without the program name); returns the exit code.

    Example:
        >>> run(["--version"])  # doctest: +ELLIPSIS
        flowtracker ...
        0
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit:  # --help, --version, usage errors: argparse has printed them
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except _Failure as failure:
        _note(str(failure))
        return failure.code
    except InputError as error:
        _note(str(error))
        return EXIT_INPUT
    except KeyboardInterrupt:
        _note("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader left (``| head``): not an error. Point stdout at /dev/null so
        # the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


# ---- arguments -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from ._core.version import package_version

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look at flowtracker traces: execution trees, an offline HTML report, conversions.",
        epilog="Exit codes: 0 ok, 1 no traces, 2 usage, 3 unreadable input, 4 unwritable output, "
        "5 missing dependency, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    tree = commands.add_parser("tree", help="print execution trees", description="Print execution trees.")
    _inputs(tree)
    tree.add_argument("--trace", metavar="ID", help="only the trace(s) whose id starts with ID")
    tree.add_argument("--slowest", metavar="N", type=_positive, help="only the N slowest, slowest first")
    tree.add_argument("--tag", metavar="KEY", action="append", help="show only these tags (repeatable)")
    tree.add_argument("--no-tags", action="store_true", help="show no tags")
    tree.add_argument("--color", choices=("auto", "always", "never"), default="auto", help="default: auto")
    tree.set_defaults(handler=_tree)

    report = commands.add_parser(
        "report", help="write the offline HTML report", description="Write one self-contained HTML report."
    )
    _inputs(report)
    report.add_argument("-o", "--output", default="report.html", help="default: report.html; - for stdout")
    report.add_argument("--title", default="flowtracker report")
    report.add_argument(
        "--no-compress", action="store_true", help="embed plain JSON and script (bigger, for old browsers)"
    )
    report.add_argument("--max-links", type=_positive, default=300, help="Sankey links drawn (default 300)")
    report.set_defaults(handler=_report)

    convert = commands.add_parser(
        "convert", help="convert to other formats", description="Convert traces to another format."
    )
    _inputs(convert)
    convert.add_argument(
        "--to", required=True, choices=("chrome", "sankey", "mermaid", "otlp-json"), help="the output format"
    )
    convert.add_argument("-o", "--output", default="-", help="default: - (stdout)")
    convert.add_argument("--direction", choices=("TD", "LR"), default="TD", help="mermaid: graph direction")
    convert.add_argument(
        "--per-span", action="store_true", help="sankey: a line per span (as the Go exporter), not aggregated"
    )
    convert.add_argument("--tag", metavar="KEY", action="append", help="sankey/mermaid: tags in labels")
    convert.add_argument("--all-tags", action="store_true", help="sankey/mermaid: all tags in labels")
    convert.add_argument("--service", help="otlp-json: service.name for every trace")
    convert.set_defaults(handler=_convert)

    stats = commands.add_parser(
        "stats", help="statistics per span name", description="Count, percentiles, errors, share per name."
    )
    _inputs(stats)
    stats.add_argument(
        "--sort",
        choices=("total", "count", "p50", "p95", "p99", "max", "errors", "busy", "blocks", "stalled", "name"),
        default="total",
        help=(
            "busy: p95 of the own time on the event loop; blocks: times a span blocked the loop; "
            "stalled: time spans waited while another span blocked it"
        ),
    )
    stats.add_argument("--limit", type=_positive, help="only the first N rows")
    stats.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    stats.set_defaults(handler=_stats)

    demo = commands.add_parser(
        "demo",
        help="run the demo app, trace a few requests, show them, write traces.jsonl and report.html",
        description="Serve the demo order flow, send it requests, print the tree of the first request "
        "and a line per request, and write this run's traces.jsonl and report.html.",
    )
    demo.add_argument("--requests", type=_count, default=3, help="requests sent (default 3)")
    demo.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=0, help="default: any free port")
    demo.add_argument("--raw", action="store_true", help="also print the FLOW_LOG: line of each trace record")
    demo.add_argument("--traces", default="traces.jsonl", help="JSON Lines, replaced (default traces.jsonl)")
    demo.add_argument("--report", default="report.html", help="HTML report (default report.html)")
    demo.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    demo.set_defaults(handler=_demo)

    serve = commands.add_parser(
        "serve",
        help="watch traces live: OTLP in (HTTP and gRPC), a local page, a JSON API",
        description="Receive traces over OTLP from flowtracker or any OpenTelemetry SDK, keep them in "
        "a SQLite store and show them live. Stops on Ctrl-C or SIGTERM.",
    )
    serve.add_argument("files", nargs="*", metavar="FILE", help="JSON Lines (gzip too) loaded at start")
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    serve.add_argument(
        "--port", type=_port, default=4318, help="OTLP/HTTP, the page and the API (default 4318)"
    )
    serve.add_argument("--grpc-port", type=_port, default=4317, help="OTLP/gRPC (default 4317)")
    serve.add_argument("--no-grpc", action="store_true", help="no OTLP/gRPC")
    serve.add_argument(
        "--db", metavar="PATH", help="the store (default: in your data directory; :memory: keeps nothing)"
    )
    serve.add_argument(
        "--max-traces", metavar="N", type=_positive, default=10_000, help="newest traces kept (default 10000)"
    )
    serve.add_argument("--open", action="store_true", help="open the page in a browser")
    serve.set_defaults(handler=_serve)
    return parser


def _inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="FILE",
        help="JSON Lines or log files, gzip too; - for stdin (the default when piped)",
    )
    parser.add_argument("--no-merge", action="store_true", help="keep records with the same trace id apart")
    parser.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


# ---- input ---------------------------------------------------------------------------------


def _load(args: argparse.Namespace, *, merge: bool = True) -> tuple[list[dict[str, Any]], int]:
    """The traces of the command's inputs, and how many input lines were skipped."""
    sources: list[str] = list(args.inputs)
    if not sources:
        if sys.stdin is None or sys.stdin.isatty():
            raise _Failure("no input: name a file, or - for standard input (see --help)", EXIT_USAGE)
        sources = ["-"]
    progress = None if args.no_progress or not _isatty(sys.stderr) else _Progress(sys.stderr)
    try:
        result = read_traces(sources, progress=progress)
    finally:
        if progress is not None:
            progress.finish()
    traces = merge_traces(result.traces) if merge and not args.no_merge else result.traces
    if not args.quiet and (result.skipped or result.invalid):
        parts = [f"{len(result.traces)} trace record{'s' if len(result.traces) != 1 else ''}"]
        parts.append(f"{result.skipped} other line{'s' if result.skipped != 1 else ''} skipped")
        if result.invalid:
            parts.append(f"{result.invalid} broken trace line{'s' if result.invalid != 1 else ''}")
        _note(f"read {result.lines} line{'s' if result.lines != 1 else ''}: " + ", ".join(parts))
    if not traces:
        raise _Failure(
            "no traces found in the input (looked for JSON Lines and FLOW_LOG: lines)", EXIT_NO_TRACES
        )
    return traces, result.skipped + result.invalid


class _Progress:
    """A one-line progress bar on a terminal's stderr, shown only when reading takes a while."""

    #: Seconds of reading before the bar appears (small inputs never show one).
    delay = 0.3

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.started < self.delay or now - self.last < 0.1:
            return
        self.last = now
        if total > 0:
            fraction = min(done / total, 1.0)
            bar = "█" * int(fraction * 30)
            text = f"\rreading {bar:<30} {fraction:4.0%}  {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        else:
            text = f"\rreading… {done / 1e6:.1f} MB"
        self.stream.write(text)
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# ---- output --------------------------------------------------------------------------------


def _write(path: str, text: str | bytes) -> None:
    """Writes the whole output to ``path`` (``-``: stdout)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if path == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        with open(path, "wb") as file:
            file.write(data)
    except OSError as error:
        raise _Failure(f"cannot write {path!r}: {error.strerror or error}", EXIT_OUTPUT) from error


def _note(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr closed: nowhere left to say it
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _isatty(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return _isatty(sys.stdout) and os.environ.get("TERM") != "dumb"


# ---- commands ------------------------------------------------------------------------------


def _tree(args: argparse.Namespace) -> int:
    traces, _ = _load(args)
    if args.trace:
        wanted = args.trace.lower()
        traces = [trace for trace in traces if str(trace.get("trace_id", "")).lower().startswith(wanted)]
        if not traces:
            raise _Failure(f"no trace id starts with {args.trace!r}", EXIT_NO_TRACES)
    if args.slowest:
        walls = {id(trace): TraceTree(trace).wall_ms() for trace in traces}
        traces = sorted(traces, key=lambda trace: -walls[id(trace)])[: args.slowest]
    tags = () if args.no_tags else args.tag
    color = _use_color(args.color)
    out = sys.stdout
    for number, trace in enumerate(traces):
        if number:
            out.write("\n")
        out.write(tree_text(trace, color=color, tags=tags) + "\n")
    out.flush()
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    traces, skipped = _load(args)
    page = render_report(
        traces,
        title=args.title,
        compress=not args.no_compress,
        skipped_lines=skipped,
        max_sankey_links=args.max_links,
    )
    _write(args.output, page)
    if not args.quiet and args.output != "-":
        size = len(page.encode("utf-8"))
        count = plural(len(traces), "trace")
        _note(f"wrote {args.output} ({count}, {size / 1e6:.1f} MB); open it in a browser")
    return EXIT_OK


def _convert(args: argparse.Namespace) -> int:
    # OTLP keeps one record per service (each is its own resource); the others merge by trace id.
    traces, _ = _load(args, merge=args.to != "otlp-json")
    tags = args.tag or ()
    output: str | bytes
    if args.to == "chrome":
        output = encode(chrome_trace(traces)) + b"\n"
    elif args.to == "sankey":
        aggregate = not args.per_span
        output = sankeymatic_text(traces, aggregate=aggregate, include_tags=tags, all_tags=args.all_tags)
    elif args.to == "mermaid":
        output = mermaid_text(traces, direction=args.direction, include_tags=tags, all_tags=args.all_tags)
    else:
        from ._wire.otlp import otlp_request_dict

        output = encode(otlp_request_dict(traces, service=args.service)) + b"\n"
    _write(args.output, output)
    return EXIT_OK


_SORT_KEYS = {
    "total": "total_ms",
    "count": "count",
    "p50": "p50_ms",
    "p95": "p95_ms",
    "p99": "p99_ms",
    "max": "max_ms",
    "errors": "error_rate",
    "busy": "busy_p95_ms",
    "blocks": "blocks",
    "stalled": "stalled_ms",
}


def _stats(args: argparse.Namespace) -> int:
    traces, _ = _load(args)
    rows = span_stats(traces)
    if args.sort == "name":
        rows.sort(key=lambda row: row["name"])
    else:
        key = _SORT_KEYS[args.sort]
        # the loop keys are absent without loop-monitor data: those rows sort as 0
        rows.sort(key=lambda row: (-float(row.get(key, 0)), row["name"]))  # type: ignore[arg-type]
    if args.limit:
        rows = rows[: args.limit]
    if args.json:
        _write("-", orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        _write("-", stats_table(rows) + "\n")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    import asyncio
    import io

    try:
        from .demo import closing_text, overview_text, run_demo
    except ImportError as error:
        raise _Failure(
            f"the demo needs aiohttp, httpx, SQLAlchemy and aiosqlite ({error}); "
            "pip install 'flowtracker[demo]'",
            EXIT_MISSING,
        ) from error
    # The FLOW_LOG: lines are held back until the readable overview is out: they fill a terminal.
    raw = io.StringIO() if args.raw else None
    demo = run_demo(
        args.requests,
        serve=args.serve,
        host=args.host,
        port=args.port,
        traces_path=args.traces,
        console=False if raw is None else raw,
    )
    try:
        records = asyncio.run(demo)
    except OSError as error:
        if error.filename != args.traces:  # not ours to explain (a port in use, ...)
            raise
        raise _Failure(f"cannot write {args.traces!r}: {error.strerror or error}", EXIT_OUTPUT) from error
    if not records:
        raise _Failure("the demo produced no traces", EXIT_NO_TRACES)
    traces = merge_traces(records)
    _write(args.report, render_report(traces, title="flowtracker demo"))
    print(overview_text(records, color=_use_color(args.color)), flush=True)
    if raw is not None:
        print(
            f"\nThe {plural(len(records), 'trace record')} (one per service and request), "
            "as ConsoleExporter logs them:",
            flush=True,
        )
        _write("-", raw.getvalue())
    closing = closing_text(records, traces_path=args.traces, report_path=args.report)
    with contextlib.suppress(OSError, ValueError):  # stderr closed: nowhere left to say it
        print(f"\n{closing}", file=sys.stderr, flush=True)
    return EXIT_OK


_SERVE_EXIT = {"port": EXIT_USAGE, "input": EXIT_INPUT, "store": EXIT_OUTPUT, "missing": EXIT_MISSING}


def _serve(args: argparse.Namespace) -> int:
    from .serve.command import Options, ServeError, run

    options = Options(
        files=list(args.files),
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        grpc=not args.no_grpc,
        db=args.db,
        max_traces=args.max_traces,
        open_browser=args.open,
    )
    try:
        run(options)
    except ServeError as error:
        raise _Failure(str(error), _SERVE_EXIT[error.kind]) from None
    return EXIT_OK
