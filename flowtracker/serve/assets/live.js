/* flowtracker serve: the live page. It runs after the report's renderer (report.js) and feeds it
 * (window.flowtrackerReport) from this server; window.flowtrackerServe holds the page's settings:
 * {limit, statuses, flowtracker}.
 *
 * * The list: GET /api/traces with the picker's filters (the newest `limit`), then every trace of
 *   the live feed (GET /api/live, Server-Sent Events) that passes them; newest first, at most
 *   `limit` (and the open trace). The filters also apply to the listed traces at once, here.
 * * A picked trace: GET /page/traces/{id}, the trace as the report's rows; loaded again when the
 *   feed says it changed (late spans), while the rows it had stay on screen.
 * * "Where time goes" and the statistics: GET /page/aggregates with the filters, over the newest
 *   traces that match, again at most every AGGREGATES_EVERY ms while traces arrive.
 *
 * Everything from the server reaches the screen through the renderer, as text. Nothing here
 * writes HTML.
 */
(function () {
  'use strict';
  const R = window.flowtrackerReport;
  const settings = window.flowtrackerServe;
  const DRAW_AFTER = 25;            // ms: feed events that come together are drawn together
  const AGGREGATES_EVERY = 2000;    // ms between two loads of the aggregates while traces arrive
  const AGGREGATES_AFTER = 500;     // ms after a trace arrived: its row is drawn first
  const LOADED_KEPT = 50;           // traces whose span rows stay loaded (the open one, recent picks)
  const EMPTY = {sankey: {nodes: [], links: [], omitted: 0}, stats: [], stats_omitted: 0, traces: 0, spans: 0};

  const strings = [];               // the data's strings: only ever appended to
  const stringIndex = new Map();
  let summaries = new Map();        // trace_id -> summary (GET /api/traces' shape): the list
  const loaded = new Map();         // trace_id -> {trace, spans} in the report's shape, oldest first
  const loading = new Map();        // trace_id -> whether to load it again once this load ends
  const services = new Set();       // every service seen, for the service filter
  const arrivals = [];              // feed summaries not drawn yet
  let aggregates = EMPTY;
  let pending = null;               // feed summaries that came while the list was being fetched
  let listRequest = 0;
  let listed = false;               // the first list has come
  let live = false;
  let trouble = '';
  let drawTimer = 0;

  function intern(value) {
    const key = typeof value === 'string' ? value : String(value);
    let index = stringIndex.get(key);
    if (index === undefined) {
      index = strings.length;
      strings.push(key);
      stringIndex.set(key, index);
    }
    return index;
  }

  // "2026-11-20T10:00:00.123456Z" as epoch milliseconds, microseconds kept.
  function epochMs(text) {
    const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$/.exec(text);
    if (!match) return Date.parse(text);
    return Date.parse(match[1] + 'Z') + Number((match[2] || '').padEnd(6, '0').slice(0, 6)) / 1000;
  }

  // A summary of GET /api/traces as the report's summary row. Its errors and loop blocks are
  // known once the trace's spans are loaded; until then the row says only whether it blocked.
  function rowOf(summary) {
    const done = loaded.get(summary.trace_id);
    const status = settings.statuses.indexOf(summary.status);
    const others = summary.services.filter((name) => name !== summary.service);  // its own first, as the report's
    return [summary.trace_id, summary.service === null ? -1 : intern(summary.service), epochMs(summary.start_time),
            summary.duration_ms, status < 0 ? 0 : status, summary.span_count,
            summary.name === null ? -1 : intern(summary.name), done ? done.trace[7] : 0,
            done ? done.trace[8] : (summary.blocked ? {blocked: true} : 0),
            (summary.service === null ? others : [summary.service, ...others]).map(intern)];
  }

  function plural(n, noun) { return n + ' ' + noun + (n === 1 ? '' : 's'); }

  // The data the renderer draws: the listed traces newest first, the loaded ones with their rows.
  function assemble() {
    const open = R.current();
    const rows = [...summaries.values()].map(rowOf).sort((a, b) => b[2] - a[2]);
    const kept = rows.filter((t, k) => k < settings.limit || t[0] === open);
    if (kept.length < rows.length) summaries = new Map(kept.map((t) => [t[0], summaries.get(t[0])]));
    let spans = 0;
    let first = null;
    let last = null;
    for (const t of kept) {
      spans += t[5];
      first = first === null ? t[2] : Math.min(first, t[2]);
      last = last === null ? t[2] + t[3] : Math.max(last, t[2] + t[3]);
    }
    const scope = aggregates.traces ? 'the newest ' + plural(aggregates.traces, 'trace') + ' that match' : 'the traces that match';
    return {
      version: 1,
      meta: {title: 'flowtracker serve', flowtracker: settings.flowtracker, traces: kept.length, spans: spans,
             first: first, last: last, skipped: 0, scope: scope, services: [...services], partial: true,
             note: trouble || (live ? 'live' : 'connecting…')},
      statuses: settings.statuses,
      strings: strings,
      traces: kept,
      spans: kept.map((t) => (loaded.has(t[0]) ? loaded.get(t[0]).spans : null)),
      sankey: aggregates.sankey,
      stats: aggregates.stats,
      stats_omitted: aggregates.stats_omitted,
    };
  }

  function draw() {
    clearTimeout(drawTimer);
    drawTimer = 0;
    if (!listed) return;  // the first list draws first (and the charting library starts after it)
    takeArrivals();
    R.render(assemble());
  }

  function drawSoon() {
    if (!drawTimer) drawTimer = setTimeout(draw, DRAW_AFTER);
  }

  function seen(summary) {
    for (const name of summary.services) services.add(name);
  }

  // ---- the list ------------------------------------------------------------------------
  function query() {
    const f = R.filters();
    const params = new URLSearchParams();
    if (f.name) params.set('name', f.name);
    if (f.service) params.set('service', f.service);
    if (f.status) params.set('status', f.status);
    if (f.min_duration_ms !== null) params.set('min_duration_ms', String(f.min_duration_ms));
    if (f.blocked) params.set('blocked', 'true');
    params.set('limit', String(settings.limit));
    return params.toString();
  }

  async function getJson(url) {
    const response = await fetch(url, {headers: {Accept: 'application/json'}});
    if (!response.ok) throw new Error(url + ' answered ' + response.status);
    return response.json();
  }

  async function list() {
    const asked = ++listRequest;
    pending = new Map();
    let answer;
    try {
      answer = await getJson('/api/traces?' + query());
    } catch (error) {
      if (asked === listRequest) { trouble = 'the server did not answer; retrying'; drawSoon(); setTimeout(list, 2000); }
      return;
    }
    if (asked !== listRequest) return;  // the filters changed meanwhile: a newer answer comes
    trouble = '';
    const open = R.current();
    const next = new Map();
    for (const summary of answer.traces) { next.set(summary.trace_id, summary); seen(summary); }
    if (open !== null && summaries.has(open) && !next.has(open)) next.set(open, summaries.get(open));
    summaries = next;
    arrivals.push(...pending.values());  // what the feed said while the answer was on its way
    pending = null;
    listed = true;
    draw();
    refreshAggregates(true);
  }

  // ---- the feed ------------------------------------------------------------------------
  function takeArrivals() {
    if (!arrivals.length) return;
    const batch = arrivals.splice(0, arrivals.length);
    const open = R.current();
    const rows = batch.map(rowOf);  // interns their strings before the matcher is made
    const matches = R.matcher();
    batch.forEach((summary, k) => {
      const id = summary.trace_id;
      seen(summary);
      if (summaries.has(id) || matches(rows[k], null)) summaries.set(id, summary);
      if (id === open) load(id);  // late spans: the rows on screen stay until the new ones come
      else loaded.delete(id);
    });
  }

  function listen() {
    const feed = new EventSource('/api/live');
    let dropped = false;
    feed.addEventListener('open', () => {
      live = true;
      if (dropped) list();  // what came while the feed was down
      else drawSoon();
    });
    feed.addEventListener('error', () => { live = false; dropped = true; drawSoon(); });
    feed.addEventListener('trace', (event) => {
      const summary = JSON.parse(event.data);
      if (pending) pending.set(summary.trace_id, summary);
      arrivals.push(summary);
      drawSoon();
      refreshAggregates(false);
    });
    feed.addEventListener('reset', () => list());  // the feed fell behind: updates were dropped
  }

  // ---- one trace -----------------------------------------------------------------------
  async function load(id) {
    if (loading.has(id)) { loading.set(id, true); return; }
    loading.set(id, false);
    try {
      const response = await fetch('/page/traces/' + id, {headers: {Accept: 'application/json'}});
      if (response.status === 404) {  // evicted from the store
        summaries.delete(id);
        loaded.delete(id);
      } else if (response.ok) {
        const [one] = R.adopt(await response.json(), intern);
        loaded.delete(id);
        loaded.set(id, one);
        for (const old of loaded.keys()) {
          if (loaded.size <= LOADED_KEPT) break;
          if (old !== R.current()) loaded.delete(old);
        }
      }
      draw();
    } catch (error) {
      trouble = 'a trace did not load: ' + error.message;
      drawSoon();
    } finally {
      const again = loading.get(id);
      loading.delete(id);
      if (again) load(id);
    }
  }

  // ---- where time goes, statistics -----------------------------------------------------
  let aggregatesTimer = 0;
  let aggregatesOut = false;
  let aggregatesStale = false;
  let aggregatesAt = 0;

  function refreshAggregates(now) {
    if (now) aggregatesAt = 0;
    aggregatesStale = true;
    if (aggregatesOut) return;
    if (now) clearTimeout(aggregatesTimer);
    else if (aggregatesTimer) return;
    const wait = Math.max(now ? 0 : AGGREGATES_AFTER, aggregatesAt + AGGREGATES_EVERY - Date.now());
    aggregatesTimer = setTimeout(loadAggregates, wait);
  }

  async function loadAggregates() {
    aggregatesTimer = 0;
    aggregatesStale = false;
    aggregatesOut = true;
    aggregatesAt = Date.now();
    try {
      aggregates = await getJson('/page/aggregates?' + query());
      drawSoon();
    } catch (error) {
      aggregatesStale = true;  // tried again after the pause
    } finally {
      aggregatesOut = false;
      if (aggregatesStale) refreshAggregates(false);
    }
  }

  // ---- start ---------------------------------------------------------------------------
  document.getElementById('search').placeholder = 'trace name';
  document.getElementById('sort').value = 'newest';
  R.onopen = load;
  R.onfilter = list;
  list();
  listen();
})();
