"""``GET /``: a PLACEHOLDER page, to be replaced by the live view of the report's renderer.

It only proves the API and the live feed end to end: it lists the traces of
``GET /api/traces`` as text and adds those the feed announces. Every value
goes in through ``textContent``, never as HTML, and nothing is loaded from
outside the machine (the Content-Security-Policy says so to the browser too).

Example:
    >>> b"placeholder" in PAGE
    True
"""

from __future__ import annotations

from aiohttp import web

__all__ = ("PAGE", "page")

#: What the page may load: only itself and this server's API.
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"

PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flowtracker serve</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}li{font-family:monospace}</style></head>
<body>
<h1>flowtracker serve</h1>
<p><em>A placeholder page: the live trace view comes here. The JSON API is at
<code>/api/traces</code>, the live feed at <code>/api/live</code>.</em></p>
<ul id="traces"></ul>
<script>
"use strict";
const list = document.getElementById("traces");
const rows = new Map();
function show(t) {
  let row = rows.get(t.trace_id);
  if (!row) { row = document.createElement("li"); rows.set(t.trace_id, row); list.prepend(row); }
  row.textContent = `${t.start_time}  ${t.trace_id}  ${t.service}  ${t.name}  ` +
    `${t.duration_ms.toFixed(3)} ms  ${t.span_count} spans  ${t.status}${t.blocked ? "  blocked" : ""}`;
}
async function load() {
  const answer = await (await fetch("/api/traces")).json();
  list.replaceChildren(); rows.clear();
  answer.traces.reverse().forEach(show);
}
const live = new EventSource("/api/live");
live.addEventListener("trace", (event) => show(JSON.parse(event.data)));
live.addEventListener("reset", load);
load();
</script>
</body></html>
"""


async def page(request: web.Request) -> web.Response:
    """The placeholder page."""
    return web.Response(
        body=PAGE, content_type="text/html", charset="utf-8", headers={"Content-Security-Policy": CSP}
    )
