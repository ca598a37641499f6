"""Where time goes, as Sankey links: parent span name → child span name, weighted by duration.

This is the Go library's weighting: every non-root span is one flow from its
parent to itself, worth the child's ``duration_ms``; spans with the same
label merge into one node. A span whose parent is not in the trace (a remote
parent, a dropped span) flows from ``Unknown``, as in Go.

:func:`sankeymatic_text` writes those flows in SankeyMATIC's input language
(``Source [amount] Target`` per line, https://sankeymatic.com/build/), with
labels escaped so that any span name parses as itself: brackets, a word that
starts with ``#`` (SankeyMATIC reads it as a colour), a leading ``'`` or
``//`` (a comment) or ``:`` (a node line) are replaced by look-alikes.

:func:`sankey_graph` prepares the same aggregate for drawing: diagrams need
a graph without cycles, and recursion (``fib`` → ``fib``) makes one, so the
names on a cycle are split by depth (``fib · 3``). Only the heaviest links are
kept, so the picture stays readable and fast for any input.

Example:
    >>> trace = {"trace_id": "t", "spans": [
    ...     {"span_id": "a", "name": "GET /", "duration_ms": 200.0},
    ...     {"span_id": "b", "parent_id": "a", "name": "db", "duration_ms": 50.0}]}
    >>> print(sankeymatic_text([trace]), end="")
    GET / [50] db
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypedDict

from .model import TraceDict, TraceTree, as_tree, id_key, number, span_name, tags_of, trace_id_of

#: The label of a parent that is not in the trace (the Go library's word).
UNKNOWN = "Unknown"


class SankeyLink(TypedDict):
    """One aggregated flow: total ``value`` ms over ``count`` child spans."""

    source: str
    target: str
    value: float
    count: int


def span_label(span: Mapping[str, Any], include_tags: Collection[str] = (), all_tags: bool = False) -> str:
    """The node label of a span: its name, plus `` (k:v, k2:v2)`` for selected tags (Go's format).

    Example:
        >>> span_label({"name": "pay", "tags": {"currency": "USD", "n": 2}}, include_tags=["currency"])
        'pay (currency:USD)'
    """
    name = span_name(span)
    if not include_tags and not all_tags:
        return name
    tags = tags_of(span)
    keys = sorted(tags, key=str) if all_tags else [key for key in include_tags if key in tags]
    if not keys:
        return name
    return f"{name} ({', '.join(f'{key}:{_tag_text(tags[key])}' for key in keys)})"


def _tag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def sankey_links(
    traces: Iterable[TraceDict], *, include_tags: Collection[str] = (), all_tags: bool = False
) -> list[SankeyLink]:
    """Flows aggregated over ``traces`` by (parent label, child label), in first-seen order.

    Args:
        traces: Wire-format trace dicts.
        include_tags: Tag keys appended to labels (Go's ``IncludeTags``).
        all_tags: Append every tag, keys sorted (Go's ``IncludeAllTags``).

    Example:
        >>> trace = {"trace_id": "t", "spans": [{"span_id": "a", "name": "root", "duration_ms": 9.0},
        ...     {"span_id": "b", "parent_id": "a", "name": "db", "duration_ms": 2.0},
        ...     {"span_id": "c", "parent_id": "a", "name": "db", "duration_ms": 3.0}]}
        >>> sankey_links([trace])
        [{'source': 'root', 'target': 'db', 'value': 5.0, 'count': 2}]
    """
    links: dict[tuple[str, str], SankeyLink] = {}
    for trace in traces:
        for source, target, value in _flows(trace, include_tags, all_tags):
            link = links.get((source, target))
            if link is None:
                links[(source, target)] = {"source": source, "target": target, "value": value, "count": 1}
            else:
                link["value"] += value
                link["count"] += 1
    return list(links.values())


def _flows(
    trace: TraceDict, include_tags: Collection[str], all_tags: bool
) -> Iterable[tuple[str, str, float]]:
    """``(parent label, child label, child ms)`` per non-root span of one trace, in trace order."""
    tree = TraceTree(trace)
    parents = tree.parent_of()
    labels = [span_label(span, include_tags, all_tags) for span in tree.spans]
    for index, span in enumerate(tree.spans):
        parent = parents[index]
        if parent >= 0:
            yield labels[parent], labels[index], tree.duration(index)
        elif _has_remote_parent(span):
            yield UNKNOWN, labels[index], tree.duration(index)


def _has_remote_parent(span: Mapping[str, Any]) -> bool:
    """A root that names a parent (not itself): the parent is elsewhere, ``Unknown`` here."""
    parent = span.get("parent_id")
    return parent is not None and id_key(parent) != id_key(span.get("span_id"))


_HASH_WORD = re.compile(r"(^|\s)#")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def sankeymatic_label(label: str) -> str:
    """``label`` made safe for a SankeyMATIC flow line (see the module docstring).

    Example:
        >>> sankeymatic_label("// GET [1] #x")
        '∕/ GET (1) ＃x'
    """
    text = _CONTROL.sub(" ", label).replace("[", "(").replace("]", ")")
    text = _HASH_WORD.sub(lambda match: match.group(1) + "＃", text).strip()
    if not text:
        return "<unnamed>"
    if text.startswith("'"):
        text = "’" + text[1:]
    elif text.startswith("/"):
        text = "∕" + text[1:]  # a look-alike on purpose: "//" starts a comment
    elif text.startswith(":"):
        text = "∶" + text[1:]  # a look-alike on purpose: ":" starts a node line
    if text.startswith("move "):
        text = "Move " + text[5:]  # "move X ..., y" is SankeyMATIC's node-moving command
    return text


def sankeymatic_text(
    traces: Iterable[TraceDict],
    *,
    aggregate: bool = True,
    include_tags: Collection[str] = (),
    all_tags: bool = False,
    markers: bool = False,
) -> str:
    """SankeyMATIC input for ``traces``.

    Args:
        traces: Wire-format trace dicts.
        aggregate: One line per (parent label, child label) with the summed
            duration (default); ``False`` writes one line per child span, like
            the Go exporter.
        include_tags: Tag keys appended to labels.
        all_tags: Append every tag.
        markers: Without ``aggregate``, frame each trace with Go's
            ``START SANKEY DATA`` / ``END SANKEY DATA`` lines, written as
            SankeyMATIC comments so the text still parses.

    Returns:
        The lines, each ending with a newline.
    """
    lines: list[str] = []
    if aggregate:
        for link in sankey_links(traces, include_tags=include_tags, all_tags=all_tags):
            lines.append(_line(link["source"], link["value"], link["target"]))
    else:
        for trace in traces:
            if markers:
                lines.append(f"' ----- START SANKEY DATA (trace id: {_comment(trace_id_of(trace))}) -----")
            for source, target, value in _flows(trace, include_tags, all_tags):
                lines.append(_line(source, value, target))
            if markers:
                lines.append(f"' ----- END SANKEY DATA (trace id: {_comment(trace_id_of(trace))}) -----")
    return "".join(line + "\n" for line in lines)


def _line(source: str, value: float, target: str) -> str:
    return f"{sankeymatic_label(source)} [{number(value)}] {sankeymatic_label(target)}"


def _comment(text: str) -> str:
    return _CONTROL.sub(" ", text)


class SankeyGraph(TypedDict):
    """A cycle-free Sankey graph ready to draw (see :func:`sankey_graph`)."""

    nodes: list[str]
    links: list[tuple[int, int, float, int]]
    omitted: int


def sankey_graph(
    traces: Iterable[TraceDict | TraceTree],
    *,
    max_links: int = 300,
    root_source: Callable[[TraceDict, Mapping[str, Any]], str] | None = None,
) -> SankeyGraph:
    """The aggregate flows as a drawable graph: node labels and ``(source, target, ms, count)`` links.

    Names on a cycle (recursion) are split by depth, so the graph has no
    cycle. At most ``max_links`` links are kept, the heaviest; ``omitted``
    counts the rest. With ``root_source``, each root that has no remote
    parent flows too, from the node ``root_source(trace, root)`` names (a
    service, say), worth the root's duration: so a trace of a single span
    counts, and each root's whole time shows, not only its children's.

    Example:
        >>> trace = {"trace_id": "t", "spans": [{"span_id": "a", "name": "fib", "duration_ms": 3.0},
        ...     {"span_id": "b", "parent_id": "a", "name": "fib", "duration_ms": 2.0}]}
        >>> sankey_graph([trace])
        {'nodes': ['fib · 0', 'fib · 1'], 'links': [(0, 1, 2.0, 1)], 'omitted': 0}
        >>> sankey_graph([trace], root_source=lambda trace, root: "all traces")["links"]
        [(0, 1, 3.0, 1), (1, 2, 2.0, 1)]
    """
    # (parent name, child name, child depth) -> [ms, count]
    edges: dict[tuple[str, str, int], list[float]] = {}
    for trace in traces:
        tree = as_tree(trace)
        spans = tree.spans
        parents = tree.parent_of()
        for index, depth in tree.preorder():
            parent = parents[index]
            if parent >= 0:
                source = tree.name(parent)
            elif _has_remote_parent(spans[index]):
                source = UNKNOWN
            elif root_source is not None:
                source = root_source(tree.trace, spans[index])
            else:
                continue
            key = (source, tree.name(index), depth)
            entry = edges.get(key)
            if entry is None:
                edges[key] = [tree.duration(index), 1.0]
            else:
                entry[0] += tree.duration(index)
                entry[1] += 1.0
    cyclic = _names_on_cycles({(source, target) for source, target, _ in edges})
    merged: dict[tuple[str, str], list[float]] = {}
    for (source, target, depth), (value, count) in edges.items():
        source_key = f"{source} · {depth - 1}" if source in cyclic else source
        target_key = f"{target} · {depth}" if target in cyclic else target
        entry = merged.get((source_key, target_key))
        if entry is None:
            merged[(source_key, target_key)] = [value, count]
        else:
            entry[0] += value
            entry[1] += count
    ranked = sorted(merged.items(), key=lambda item: -item[1][0])
    kept = ranked[:max_links] if max_links >= 0 else ranked
    numbers: dict[str, int] = {}
    links: list[tuple[int, int, float, int]] = []
    for (source, target), (value, count) in kept:
        links.append(
            (
                numbers.setdefault(source, len(numbers)),
                numbers.setdefault(target, len(numbers)),
                value,
                int(count),
            )
        )
    return {"nodes": list(numbers), "links": links, "omitted": len(ranked) - len(kept)}


def _names_on_cycles(edges: set[tuple[str, str]]) -> set[str]:
    """Names in a strongly connected component with a cycle (Tarjan's algorithm, iteratively)."""
    graph: dict[str, list[str]] = {}
    for source, target in edges:
        graph.setdefault(source, []).append(target)
        graph.setdefault(target, [])
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cyclic: set[str] = set()
    for start in graph:
        if start in order:
            continue
        work = [(start, 0)]
        while work:
            node, edge = work.pop()
            if edge == 0:
                order[node] = low[node] = len(order)
                stack.append(node)
                on_stack.add(node)
            targets = graph[node]
            if edge < len(targets):
                work.append((node, edge + 1))
                target = targets[edge]
                if target not in order:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], order[target])
                continue
            if low[node] == order[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or (node, node) in edges:
                    cyclic.update(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return cyclic
