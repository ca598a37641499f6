"""The execution tree as a Mermaid flowchart, in the Go library's format.

One fenced ```` ```mermaid ```` block per trace, ``graph TD`` (or ``LR``), one
edge per child span labelled with the child's duration::

    N<parent id>["<parent label>"] -->|<ms>ms| N<child id>["<child label>"]

A trace of a single span gets its node alone, so no block is empty. Labels are
always quoted, and the characters that could end or change a quoted label are
written as Mermaid entity codes (``"`` → ``#quot;``, ``<`` → ``#lt;``,
``#`` → ``#35;``, ...), so any span name renders as itself, as text. Node ids
are ``N`` plus the span id when it is plain hex-like text and unique in the
trace, else ``S`` plus the span's position.

Example:
    >>> trace = {"trace_id": "t", "spans": [
    ...     {"span_id": "a1", "name": "GET /", "duration_ms": 200.0},
    ...     {"span_id": "b2", "parent_id": "a1", "name": 'say "hi"', "duration_ms": 50.0}]}
    >>> print(mermaid_text([trace]))
    ```mermaid
    graph TD
        Na1["GET /"] -->|50ms| Nb2["say #quot;hi#quot;"]
    ```
    <BLANKLINE>
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Literal

from .model import TraceDict, TraceTree, number
from .sankey import span_label

_ID = re.compile(r"[0-9A-Za-z_]{1,64}")
_ENTITIES = {
    "#": "#35;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "`": "#96;",
}
_SPECIAL = re.compile(r'[#"<>&`]|[\x00-\x1f\x7f-\x9f\u2028\u2029]')


def mermaid_label(label: str) -> str:
    """``label`` for inside a quoted Mermaid label (entity codes; control characters as spaces).

    Example:
        >>> mermaid_label('<img src=x onerror="alert(1)">')
        '#lt;img src=x onerror=#quot;alert(1)#quot;#gt;'
    """
    return _SPECIAL.sub(lambda match: _ENTITIES.get(match.group(), " "), label)


def mermaid_text(
    traces: Iterable[TraceDict],
    *,
    direction: Literal["TD", "LR"] = "TD",
    include_tags: Collection[str] = (),
    all_tags: bool = False,
) -> str:
    """One Mermaid flowchart block per trace (see the module docstring).

    Args:
        traces: Wire-format trace dicts.
        direction: ``"TD"`` (top-down, default) or ``"LR"``.
        include_tags: Tag keys appended to labels, as in the Sankey labels.
        all_tags: Append every tag.
    """
    if direction not in ("TD", "LR"):
        raise ValueError(f"direction must be 'TD' or 'LR', not {direction!r}")
    out: list[str] = []
    for trace in traces:
        out.append(_block(TraceTree(trace), direction, include_tags, all_tags))
    return "".join(out)


def _block(tree: TraceTree, direction: str, include_tags: Collection[str], all_tags: bool) -> str:
    spans = tree.spans
    raw_ids = [span.get("span_id") for span in spans]
    counts = Counter(value for value in raw_ids if isinstance(value, str))
    node_ids = [
        f"N{value}" if isinstance(value, str) and counts[value] == 1 and _ID.fullmatch(value) else f"S{index}"
        for index, value in enumerate(raw_ids)
    ]
    labels = [
        f'{node_ids[index]}["{mermaid_label(span_label(span, include_tags, all_tags))}"]'
        for index, span in enumerate(spans)
    ]
    lines = ["```mermaid", f"graph {direction}"]
    parents = tree.parent_of()
    for index, _depth in tree.preorder():
        parent = parents[index]
        if parent >= 0:
            lines.append(f"    {labels[parent]} -->|{number(tree.duration(index))}ms| {labels[index]}")
        elif not tree.children[index]:
            lines.append(f"    {labels[index]}")  # a lone span: its node, so it still shows
    lines.append("```")
    return "".join(line + "\n" for line in lines)
