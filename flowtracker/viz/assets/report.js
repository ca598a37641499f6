/* flowtracker report: draws the data that flowtracker/viz/_report.py embeds.
 *
 * #ft-data holds JSON (plain, or gzip+base64 when data-encoding="gzip"):
 *   {version: 1, meta: {...}, statuses: ["ok", ...], strings: [...interned names...],
 *    traces: [[trace_id, service, start_ms, wall_ms, status, span_count, root_name, errors, notes, services]],
 *    spans: per trace, in tree order (or null: not loaded, see "Reuse" below):
 *      [[span_id, parent_row, name, offset_ms, duration_ms, status, depth, subtree_size, extra]],
 *    sankey: {nodes: [label], links: [[source, target, total_ms, count]], omitted} (each root flows from
 *      its service, so a single-span trace counts too),
 *    stats: [[name, count, p50, p95, p99, max, total, errors, share(, busy_p50, busy_p95, blocks, blocked_ms,
 *             stalled_ms)]],
 *    stats_omitted}
 * (service, name and root_name index into strings, services is a list of such indices (every service
 *  with a span in the trace, its own first); status into statuses; extra is 0 or
 *  {tags, kind, service, error, events, parent_id, dropped_tags, busy_ms, blocks, stalled_ms,
 *  stalled_dropped, stalls}, blocks being the event_loop.blocked events as [[offset_ms or null,
 *  duration_ms, frames (innermost first), positions of the frames of the user's own code]] and stalls
 *  the event_loop.stalled events as [[offset_ms or null, duration_ms, by_trace_id, by_span_id,
 *  by_name, at]] (null where absent); notes is 0 or {dropped_spans, unfinished_spans, follow_up,
 *  blocks, blocked_ms, stalled_ms, loop_monitor} (or {blocked: true} from a summary that knows no
 *  more); meta.loop is null or {modes, blocks}; the stats rows have the five loop columns only when a
 *  loop monitor watched, and busy_p50/95 are null for names that never ran on the loop or ran on
 *  uvloop). A page that makes its own data may add to meta:
 *  note (shown at the end of the header line), scope (what "where time goes" and the statistics
 *  cover, "all traces" when absent), services (offered by the service filter besides the
 *  traces' own) and partial (true: the traces are a page of more, so every filter is offered).
 *
 * Loop-monitor data: a span's own time on the event loop (busy_ms) is a darker inner bar whose
 * length is busy_ms / duration_ms of the span's bar (its share, not where in time it ran); each
 * event_loop.blocked event is an amber mark at the time and for the length of the block, the row's
 * label and tree node carry a ⚠, and the details panel lists each block with its stack. A span that
 * waited while another span's code held the loop (stalled_ms) has that stretch hatched, a ◷ badge,
 * and in the details panel the guilty span, with a link to it when its trace is in the data.
 *
 * Reuse: window.flowtrackerReport.render(data) draws every view from a data object of the shape
 * above (Python's flowtracker.viz.report_data(traces)); call it again with new data and the open
 * trace stays open if it is still there, and only what changed is redrawn (see render()). The
 * offline report calls it once with #ft-data; a live page (flowtracker.viz.report_page(None,
 * script=...), as `flowtracker serve` serves it) calls it whenever it has new data, and may list
 * traces before it has their spans (spans[i] null): picking one calls flowtrackerReport.onopen(id),
 * and a change of the picker's filters calls flowtrackerReport.onfilter(filters()), if set.
 * flowtrackerReport.adopt(part, intern) re-indexes another data object's traces into the page's
 * strings; flowtrackerReport.matcher() tests a summary row against the picker's filters.
 *
 * Rules: text from traces reaches the screen only through textContent (el() below) or as
 * chart text, never as HTML; no recursion (a trace may nest 10,000 spans deep); aggregate
 * views are drawn once, per-trace views when a trace is picked; nothing but the charts waits
 * for anything: main() draws the rest before the first paint (blobs are inflated synchronously
 * by inflate.js, which precedes this file in the page's script), charts() follows it.
 */
(function () {
  'use strict';
  const COLORS = {ok: '#3b82f6', error: '#dc2626', cancelled: '#d97706', unfinished: '#9333ea'};
  const LIST_LIMIT = 300;      // rows shown in the trace picker
  const VISIBLE_ROWS = 30;     // waterfall rows in view; a scroll bar for the rest
  const SVG_LIMIT = 1500;      // above this many spans the waterfall draws on a canvas
  const INDENT_LIMIT = 40;     // deeper rows stop indenting and show their depth
  let D = null;
  let S = [];
  let current = -1;
  let traceNames = [];
  let gantt = null;
  let ganttRenderer = '';
  let tree = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);  // strings become text nodes
    }
    return node;
  }

  function fmtMs(ms) {
    if (!isFinite(ms)) return '?';
    if (ms < 1) return ms.toFixed(3) + ' ms';
    if (ms < 1000) return ms.toFixed(1) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(2) + ' s';
    return Math.floor(ms / 60000) + 'm ' + ((ms % 60000) / 1000).toFixed(1) + 's';
  }

  // Milliseconds as a bare number, for the statistics table, whose heading gives the unit once (a
  // unit in every cell would push its last columns out of view).
  const MS_SMALL = new Intl.NumberFormat('en-US', {minimumFractionDigits: 3, maximumFractionDigits: 3});
  const MS = new Intl.NumberFormat('en-US', {minimumFractionDigits: 1, maximumFractionDigits: 1});
  function fmtMsBare(ms) {
    if (!isFinite(ms)) return '?';
    return (ms < 1 ? MS_SMALL : MS).format(ms);
  }

  function fmtTime(epochMs) {
    if (epochMs === null || !isFinite(epochMs)) return '?';
    const whole = Math.floor(epochMs);
    const date = new Date(whole);
    if (isNaN(date.getTime())) return '?';
    const micros = Math.min(999, Math.round((epochMs - whole) * 1000));
    return date.toISOString().replace('Z', String(micros).padStart(3, '0') + 'Z');
  }

  function pct(part, whole) {
    if (!(whole > 0)) return '';
    const value = 100 * part / whole;
    return value > 0 && value < 1 ? '<1%' : Math.round(value) + '%';
  }

  // "1 span", "2 spans": every count the page prints goes through here.
  function count(n, singular, plural) {
    return n + ' ' + (n === 1 ? singular : (plural || singular + 's'));
  }

  function text(value) {
    if (typeof value === 'string') return value;
    try { return JSON.stringify(value); } catch (error) { return String(value); }
  }

  function cut(value, length) {
    return value.length > length ? value.slice(0, length - 1) + '…' : value;
  }

  // The times a span row's code blocked the event loop:
  // [{offset (ms from the trace start), duration, frames, own (the user's frames), first (the innermost of them or -1)}].
  function blocksOf(r) {
    const blocks = r[8] && Array.isArray(r[8].blocks) ? r[8].blocks : [];
    return blocks.map((b) => ({offset: b[0] === null ? r[3] : b[0], duration: b[1], frames: b[2],
                               own: new Set(b[3]), first: b[3].length ? b[3][0] : -1}));
  }

  // The times a span row waited while another span's code held the loop:
  // [{offset, duration, trace (the guilty trace's id or null), span, name, at}].
  function stallsOf(r) {
    const stalls = r[8] && Array.isArray(r[8].stalls) ? r[8].stalls : [];
    return stalls.map((s) => ({offset: s[0] === null ? r[3] : s[0], duration: s[1], trace: s[2], span: s[3],
                               name: s[4], at: s[5]}));
  }

  function stalledOf(r) {
    const stalled = r[8] ? r[8].stalled_ms : undefined;
    return typeof stalled === 'number' && isFinite(stalled) ? stalled : null;
  }

  // "◷ stalled 300.4 ms by GET /report › render_pdf (app.py:107)": the longest stall's culprit (the
  // terminal tree's ⧗ is missing from common fonts; ◷ is in DejaVu's).
  function stalledText(r) {
    const stalled = stalledOf(r);
    if (stalled === null) return '';
    const stalls = stallsOf(r).sort((a, b) => b.duration - a.duration);
    let line = '◷ stalled ' + fmtMs(stalled);
    if (stalls.length) {
      line += stalls[0].name ? ' by ' + stalls[0].name : ' by code outside spans';
      if (stalls[0].at) line += ' (' + shortLine(stalls[0].at) + ')';
    }
    return line;
  }

  // "/srv/app/app.py:107 in render_pdf" -> "app.py:107"
  function shortLine(frame) {
    const location = frame.includes(' in ') ? frame.slice(0, frame.lastIndexOf(' in ')) : frame;
    return location.split(/[\/\\]/).pop();
  }

  function busyOf(r) {
    const busy = r[8] ? r[8].busy_ms : undefined;
    return typeof busy === 'number' && isFinite(busy) ? busy : null;
  }

  function blocksText(blocks) {
    const total = blocks.reduce((sum, block) => sum + block.duration, 0);
    return '⚠ blocked the loop ' + fmtMs(total) + (blocks.length > 1 ? ' (' + count(blocks.length, 'block') + ')' : '');
  }

  function readBlob(id) {
    // Synchronous on purpose (see inflate.js): the first paint must not wait for anything.
    const node = $(id);
    if (node.dataset.encoding !== 'gzip') return node.textContent;
    const binary = atob(node.textContent.trim());
    const bytes = new Uint8Array(binary.length);
    for (let k = 0; k < binary.length; k++) bytes[k] = binary.charCodeAt(k);
    return new TextDecoder().decode(flowtrackerGunzip(bytes));
  }

  function loadLibrary() {
    if (window.echarts) return;
    const script = document.createElement('script');
    script.textContent = readBlob('ft-lib');
    document.head.append(script);  // an inline script runs as it is inserted
    if (!window.echarts) throw new Error('The embedded chart library did not load.');
  }

  // ---- header ---------------------------------------------------------------------------
  function drawSummary() {
    const m = D.meta;
    const parts = [count(m.traces, 'trace'), count(m.spans, 'span')];
    if (m.first !== null && m.first !== undefined) parts.push(fmtTime(m.first) + ' → ' + fmtTime(m.last));
    if (m.skipped) parts.push(count(m.skipped, 'input line') + ' skipped');
    if (m.loop) {
      parts.push('loop monitor: ' + (m.loop.modes.length ? m.loop.modes.join(', ') : 'off') + ', ' +
                 (m.loop.blocks ? count(m.loop.blocks, 'loop block') : 'no loop blocks'));
    }
    parts.push('flowtracker ' + m.flowtracker);
    if (m.note) parts.push(m.note);
    $('summary').textContent = parts.join(' · ');
    for (const id of ['sankey-scope', 'stats-scope']) $(id).textContent = m.scope || 'all traces';
  }

  // ---- picker ---------------------------------------------------------------------------
  function servicesOf(t) { return Array.isArray(t[9]) ? t[9] : (t[1] >= 0 ? [t[1]] : []); }

  // notes.blocks counts the blocks; a summary that only knows the trace blocked says blocked: true.
  function blockedTrace(t) { return Boolean(t[8] && (t[8].blocks || t[8].blocked)); }

  // A trace with a span that waited while other code blocked the loop (event_loop.stalled).
  function stalledTrace(t) { return Boolean(t[8] && t[8].stalled_ms); }

  // The picker's filters, as the controls hold them.
  function filters() {
    const least = parseFloat($('min-duration').value);
    return {name: $('search').value.trim(), service: $('service-filter').value, status: $('status-filter').value,
            min_duration_ms: isFinite(least) && least > 0 ? least : null, blocked: $('blocked-filter').checked,
            stalled: $('stalled-filter').checked};
  }

  // A test of one trace summary against the filters `f`: its status, length, whether it blocked the
  // loop or was stalled by other code, whether a span of it is from the service, and whether the search is in its trace id or in
  // a name of it (every span's name, or only the root's while the trace's spans are not loaded).
  function matcher(f) {
    const query = f.name.toLowerCase();
    const hits = query ? S.map((name) => name.toLowerCase().includes(query)) : null;
    const service = f.service ? S.indexOf(f.service) : -1;
    return (t, names) => {
      if (f.status && D.statuses[t[4]] !== f.status) return false;
      if (f.min_duration_ms !== null && !(t[3] >= f.min_duration_ms)) return false;
      if (f.blocked && !blockedTrace(t)) return false;
      if (f.stalled && !stalledTrace(t)) return false;
      if (f.service && (service < 0 || !servicesOf(t).includes(service))) return false;
      if (!hits || t[0].toLowerCase().includes(query)) return true;
      if (!names) return t[6] >= 0 && hits[t[6]] === true;
      for (const name of names) { if (hits[name]) return true; }
      return false;
    };
  }

  function matching() {
    const test = matcher(filters());
    const out = [];
    for (let i = 0; i < D.traces.length; i++) {
      if (test(D.traces[i], traceNames[i])) out.push(i);
    }
    const T = D.traces;
    const order = {
      slowest: (a, b) => T[b][3] - T[a][3],
      newest: (a, b) => T[b][2] - T[a][2],
      oldest: (a, b) => T[a][2] - T[b][2],
      spans: (a, b) => T[b][5] - T[a][5],
      name: (a, b) => rootName(a).localeCompare(rootName(b)),
    }[$('sort').value] || ((a, b) => a - b);
    out.sort((a, b) => order(a, b) || a - b);
    return out;
  }

  // The service filter offers every service of the data (meta.services, or those of the traces),
  // shown once there are two; the one picked stays offered even when no trace has it now. The
  // "blocked the loop" box shows once a trace blocked it (always, for data that is a page of more:
  // meta.partial). The choices survive render() with new data.
  function placeFilters() {
    const select = $('service-filter');
    const picked = select.value;
    const names = new Set(Array.isArray(D.meta.services) ? D.meta.services : []);
    for (const t of D.traces) for (const index of servicesOf(t)) names.add(S[index]);
    if (picked) names.add(picked);
    const sorted = [...names].sort();
    const shown = [...select.options].slice(1).map((option) => option.value);
    if (shown.length !== sorted.length || shown.some((name, k) => name !== sorted[k])) {
      const option = (label, value) => { const node = el('option', null, label); node.value = value; return node; };
      select.replaceChildren(option('any', ''), ...sorted.map((name) => option(name, name)));
      select.value = picked;
    }
    $('service-field').hidden = sorted.length < 2;
    const blocked = $('blocked-filter');
    $('blocked-field').hidden = !(D.meta.partial || blocked.checked || D.traces.some(blockedTrace));
    const stalled = $('stalled-filter');
    $('stalled-field').hidden = !(D.meta.partial || stalled.checked || D.traces.some(stalledTrace));
  }

  function rootName(i) { const index = D.traces[i][6]; return index >= 0 ? S[index] : '(no spans)'; }

  // List entries are kept by trace id and reused while their text is the same, so a list redrawn
  // as traces arrive keeps the element under the pointer (a click on it is not lost) and its hover.
  let entries = new Map();

  function listEntry(i, reuse) {
    const t = D.traces[i];
    const status = D.statuses[t[4]];
    const services = servicesOf(t).map((index) => S[index]);
    const sub = [t[0].slice(0, 12), services.length ? services.join(' + ') : null, count(t[5], 'span'),
                 status !== 'ok' ? status : null, blockedTrace(t) ? '⚠ blocked the loop' : null,
                 stalledTrace(t) ? '◷ stalled ' + fmtMs(t[8].stalled_ms) : null,
                 fmtTime(t[2])].filter(Boolean).join(' · ');
    const name = rootName(i);
    const duration = fmtMs(t[3]);
    const key = [status, name, duration, sub].join('\n');
    let entry = reuse ? entries.get(t[0]) : undefined;
    if (!entry || entry.key !== key) {
      const button = el('button', null, el('span', 'dot s-' + status), el('span', 'name', name),
                        el('span', 'dur', duration), el('span', 'sub', sub));
      button.type = 'button';
      button.dataset.traceId = t[0];
      button.title = name;
      entry = {key: key, item: el('li', null, button), button: button};
    }
    entry.button.dataset.index = String(i);
    entry.button.setAttribute('aria-current', i === current ? 'true' : 'false');
    return entry;
  }

  function drawList() {
    const found = matching();
    const kept = new Map();
    const items = [];
    for (const i of found.slice(0, LIST_LIMIT)) {
      const id = D.traces[i][0];
      const entry = listEntry(i, !kept.has(id));  // a trace id twice in the data: two entries
      if (!kept.has(id)) kept.set(id, entry);
      items.push(entry.item);
    }
    entries = kept;
    const list = $('trace-list');
    const same = list.children.length === items.length && items.every((item, k) => list.children[k] === item);
    if (!same) list.replaceChildren(...items);
    let note = found.length + ' of ' + count(D.traces.length, 'trace');
    if (found.length > LIST_LIMIT) note += ' · first ' + LIST_LIMIT + ' shown, refine the search';
    $('match-count').textContent = note;
    return found;
  }

  // Opens the trace with id `traceId` and shows its span `spanId` (the guilty one of a stall).
  function openSpan(traceId, spanId) {
    const i = D.traces.findIndex((t) => t[0] === traceId);
    if (i < 0) return;
    select(i);
    if (!D.spans[i]) return;  // a live page loads the trace's spans first: its waterfall opens then
    const row = D.spans[i].findIndex((r) => r[0] === spanId);
    if (row >= 0) showDetails(i, row);
  }

  function markCurrent() {
    for (const button of $('trace-list').querySelectorAll('button')) {
      button.setAttribute('aria-current', Number(button.dataset.index) === current ? 'true' : 'false');
    }
  }

  // ---- one trace ------------------------------------------------------------------------
  function drawTraceHeader(i) {
    const t = D.traces[i];
    $('trace-view').dataset.traceId = t[0];
    $('trace-title').textContent = rootName(i);
    const notes = t[8] || {};
    const services = servicesOf(t).map((index) => S[index]);
    const meta = ['trace ' + t[0], services.length ? (services.length > 1 ? 'services ' : 'service ') + services.join(', ') : null,
                  fmtTime(t[2]), fmtMs(t[3]), count(t[5], 'span'), D.statuses[t[4]],
                  t[7] ? count(t[7], 'error') : null, notes.dropped_spans ? count(notes.dropped_spans, 'span') + ' dropped' : null,
                  notes.unfinished_spans ? notes.unfinished_spans + ' unfinished' : null,
                  notes.follow_up ? 'follow-up record' : null,
                  notes.blocks ? '⚠ ' + count(notes.blocks, 'loop block') + ' (' + fmtMs(notes.blocked_ms) + ')'
                    : (notes.blocked ? '⚠ blocked the loop' : null),
                  notes.stalled_ms ? '◷ stalled ' + fmtMs(notes.stalled_ms) + ' by other code' : null,
                  notes.loop_monitor ? 'loop monitor: ' + notes.loop_monitor : null];
    $('trace-meta').textContent = meta.filter(Boolean).join(' · ');
  }

  // A trace whose spans are not in the data (null: a live page loads them when asked) is shown by
  // its summary until they come: flowtrackerReport.onopen(trace_id) asks for them, and the page
  // calls render() again with them.
  function select(i) {
    if (i < 0 || i >= D.traces.length) return;
    current = i;
    markCurrent();
    drawTraceHeader(i);
    $('details').replaceChildren(el('p', 'muted', 'Hover or click a span.'));
    const view = $('trace-view');
    if (D.spans[i]) {
      delete view.dataset.loading;
      drawGantt(i);
      drawTree(i);
      return;
    }
    view.dataset.loading = 'true';
    tree = null;
    if (gantt) gantt.clear();
    $('gantt').style.height = '';
    $('tree').replaceChildren(el('p', 'muted small', 'Loading the spans…'));
    const api = window.flowtrackerReport;
    if (api.onopen) api.onopen(D.traces[i][0]);
  }

  function spanDetails(i, row, limit) {
    const rows = D.spans[i];
    const r = rows[row];
    const extra = r[8] || {};
    const start = D.traces[i][2] + r[3];
    const box = el('div', 'tip');
    box.append(el('p', 'name', S[r[2]]));
    const list = el('dl');
    const add = (key, value) => { list.append(el('dt', null, key), el('dd', null, value)); };
    add('status', D.statuses[r[5]]);
    add('duration', fmtMs(r[4]) + (rows[0] && rows[0][4] > 0 ? ' (' + pct(r[4], D.traces[i][3]) + ' of the trace)' : ''));
    if (r[1] >= 0) add('share of parent', pct(r[4], rows[r[1]][4]) || '–');
    add('start', fmtTime(start) + ' (+' + fmtMs(r[3]) + ')');
    add('end', fmtTime(start + r[4]));
    const busy = busyOf(r);
    if (busy !== null) add('busy', fmtMs(busy) + ' on the event loop' + (r[4] > 0 ? ' (' + pct(busy, r[4]) + ' of the span)' : ''));
    const stalled = stalledOf(r);
    if (stalled !== null) add('stalled', fmtMs(stalled) + ' waiting while other code held the loop' + (r[4] > 0 ? ' (' + pct(stalled, r[4]) + ' of the span)' : ''));
    add('span id', r[0]);
    if (extra.parent_id !== undefined) add('parent id', text(extra.parent_id) + (r[1] < 0 ? ' (not in this trace)' : ''));
    if (extra.kind) add('kind', text(extra.kind));
    if (extra.service !== undefined) add('service', text(extra.service));
    if (extra.error) add('error', [extra.error.type, extra.error.message].filter((part) => part !== undefined).map(text).join(': '));
    if (extra.dropped_tags) add('dropped tags', text(extra.dropped_tags));
    const tags = extra.tags ? Object.entries(extra.tags) : [];
    for (const [key, value] of tags.slice(0, limit)) add(key, cut(text(value), 500));
    if (tags.length > limit) add('…', count(tags.length - limit, 'more tag') + ' (click the span)');
    const blocks = blocksOf(r);
    for (const block of blocks.slice(0, limit)) {
      // The block's start is its loop step's start, which may come a moment before the span's own.
      const offset = block.offset < 0 ? 'the span\'s start' : '+' + fmtMs(block.offset);
      add('blocked the loop', '⚠ ' + fmtMs(block.duration) + ' from ' + offset +
          (block.first >= 0 ? ' at ' + block.frames[block.first] : ''));
      // Innermost frame first, the user's own innermost frame in bold, library frames muted; a
      // tooltip keeps the top of the stack down to the user's frame, the panel all of it.
      const keep = limit === Infinity ? block.frames.length : Math.max(3, block.first + 1);
      const stack = el('div', 'stack');
      block.frames.slice(0, keep).forEach((frame, k) => {
        stack.append(el('div', k === block.first ? 'frame first' : (block.own.has(k) ? 'frame own' : 'frame lib'), frame));
      });
      if (block.frames.length > keep) stack.append(el('div', 'frame lib', '… ' + count(block.frames.length - keep, 'more frame')));
      list.append(el('dt', null, 'stack'), el('dd', null, stack));
    }
    for (const stall of stallsOf(r).slice(0, limit)) {
      // The guilty span, and a link to it when its trace is in this report.
      const line = el('span', null, '◷ ' + fmtMs(stall.duration) + ' from +' + fmtMs(stall.offset) + ' by ' +
                      (stall.name || 'code outside spans') + (stall.at ? ' at ' + stall.at : ''));
      const target = stall.trace ? D.traces.findIndex((t) => t[0] === stall.trace) : -1;
      if (target >= 0 && limit === Infinity) {
        const link = el('button', 'stall-link', 'open the guilty trace');
        link.type = 'button';
        link.dataset.traceId = stall.trace;
        link.dataset.spanId = stall.span || '';
        line.append(' ', link);
      }
      add('stalled by', line);
    }
    if (extra.stalled_dropped) add('…', count(extra.stalled_dropped, 'shorter stall') + ' not listed');
    const events = Array.isArray(extra.events) ? extra.events : [];
    for (const event of events.slice(0, limit)) {
      const attributes = event && event.attributes ? ' ' + cut(text(event.attributes), 300) : '';
      add('event', text(event && event.name) + ' @ ' + text(event && event.time) + attributes);
    }
    if (events.length > limit) add('…', count(events.length - limit, 'more event'));
    box.append(list);
    return box;
  }

  function showDetails(i, row) {
    if (i !== current || !D.spans[i] || row < 0 || row >= D.spans[i].length) return;
    $('details').replaceChildren(spanDetails(i, row, Infinity));
    if (tree) {
      for (const node of tree.box.querySelectorAll('.node.active')) node.classList.remove('active');
      tree.nodes[row].classList.add('active');
    }
  }

  function rowLabel(rows, row, blocked) {
    const r = rows[row];
    if (!r) return '';
    const depth = r[6];
    const pad = '\u00a0'.repeat(Math.min(depth, INDENT_LIMIT / 2) * 2);
    return pad + (depth > INDENT_LIMIT / 2 ? '[' + depth + '] ' : '') + (blocked[row] ? '⚠ ' : '') + S[r[2]];
  }

  // The waterfall's label column: as wide as its widest label (the name with its indent), up to 40% of
  // the chart, so names are cut only when the chart has no room for them (the tooltip has them whole).
  let measure = null;
  function textWidth(value) {
    if (!measure) {
      measure = document.createElement('canvas').getContext('2d');
      measure.font = '12px sans-serif';  // echarts' axis label font
    }
    return measure.measureText(value).width;
  }

  function labelColumn(rows, blocked, width) {
    let widest = 0;
    for (let k = 0; k < Math.min(rows.length, SVG_LIMIT); k++) widest = Math.max(widest, textWidth(rowLabel(rows, k, blocked)));
    return Math.round(Math.max(120, Math.min(widest + 6, width * 0.4)));
  }

  function drawGantt(i) {
    const rows = D.spans[i];
    const box = $('gantt');
    const renderer = rows.length <= SVG_LIMIT ? 'svg' : 'canvas';
    if (gantt && ganttRenderer !== renderer) { gantt.dispose(); gantt = null; }
    const shown = Math.max(1, Math.min(rows.length, VISIBLE_ROWS));
    box.style.height = (shown * 24 + 80) + 'px';
    box.dataset.renderer = renderer;
    box.dataset.rows = String(rows.length);
    if (!window.echarts) return;  // sized now, drawn when the charts follow the first paint (main)
    if (!gantt) {
      gantt = echarts.init(box, null, {renderer: renderer});
      ganttRenderer = renderer;
      gantt.on('click', (p) => showDetails(current, p.value[0]));
    } else {
      gantt.resize();
    }
    let end = D.traces[i][3];
    const data = new Array(rows.length);
    const blocked = new Array(rows.length);
    const stalled = new Array(rows.length);
    for (let k = 0; k < rows.length; k++) {
      const r = rows[k];
      const busy = busyOf(r);
      // [row, start, end, status, busy share (-1: none)]
      data[k] = [k, r[3], r[3] + r[4], r[5], busy === null ? -1 : (r[4] > 0 ? Math.min(1, busy / r[4]) : 0)];
      blocked[k] = r[8] && r[8].blocks ? blocksOf(r) : null;
      stalled[k] = r[8] && r[8].stalls ? stallsOf(r) : null;
      if (r[3] + r[4] > end) end = r[3] + r[4];
    }
    const stroke = box.dataset.barStroke;
    const busyFill = box.dataset.busyFill;
    const blockFill = box.dataset.blockFill;
    const blockStroke = box.dataset.blockStroke;
    const stallFill = box.dataset.stallFill;
    const stallStroke = box.dataset.stallStroke;
    const statuses = D.statuses;
    const zoom = [
      {type: 'inside', xAxisIndex: 0, filterMode: 'weakFilter', zoomOnMouseWheel: 'ctrl', moveOnMouseWheel: false},
      {type: 'slider', xAxisIndex: 0, filterMode: 'weakFilter', height: 16, bottom: 6,
       labelFormatter: (value) => fmtMs(value)},
    ];
    if (rows.length > VISIBLE_ROWS) {
      zoom.push({type: 'slider', yAxisIndex: 0, filterMode: 'weakFilter', startValue: 0, endValue: VISIBLE_ROWS - 1,
                 width: 14, right: 8, showDetail: false, zoomLock: true, brushSelect: false});
      zoom.push({type: 'inside', yAxisIndex: 0, filterMode: 'weakFilter', zoomOnMouseWheel: false, moveOnMouseWheel: true});
    }
    const labels = labelColumn(rows, blocked, box.clientWidth);
    const grid = {left: labels + 14, right: rows.length > VISIBLE_ROWS ? 36 : 16, top: 8, bottom: 52};
    // The trace's end is always labelled; a round tick too close to it goes unlabelled rather than
    // being printed against it ("25.0 ms26.8 ms"): 16 px at least between the two (echarts, which
    // would hide overlapping labels itself, may hide the end one).
    const axisEnd = end || 1;
    const msPerPx = axisEnd / Math.max(1, box.clientWidth - grid.left - grid.right);
    const endHalf = textWidth(fmtMs(axisEnd)) / 2;
    const tickLabel = (value) => {
      const textual = fmtMs(value);
      if (value === axisEnd) return textual;
      return (axisEnd - value) / msPerPx < endHalf + textWidth(textual) / 2 + 16 ? '' : textual;
    };
    gantt.setOption({
      animation: false,
      grid: grid,
      tooltip: {trigger: 'item', confine: true, enterable: false,
                formatter: (p) => spanDetails(current, p.value[0], 12)},
      xAxis: {type: 'value', min: 0, max: axisEnd,
              // textMargin keeps 12 px between the other labels
              axisLabel: {formatter: tickLabel, showMaxLabel: true, hideOverlap: true,
                          textMargin: [0, 6]},
              splitLine: {lineStyle: {color: '#eef0f3'}}},
      yAxis: {type: 'category', inverse: true, data: data.map((item) => String(item[0])),
              axisTick: {show: false}, axisLine: {show: false},
              axisLabel: {formatter: (value) => rowLabel(rows, Number(value), blocked), width: labels, overflow: 'truncate',
                          align: 'left', margin: labels + 6, color: '#374151'}},
      dataZoom: zoom,
      series: [{
        type: 'custom',
        encode: {x: [1, 2], y: 0},
        data: data,
        renderItem: (params, api) => {
          const row = api.value(0);
          const from = api.coord([api.value(1), row]);
          const to = api.coord([api.value(2), row]);
          const height = api.size([0, 1])[1] * 0.62;
          const clip = {x: params.coordSys.x, y: params.coordSys.y, width: params.coordSys.width, height: params.coordSys.height};
          const width = Math.max(to[0] - from[0], 1);
          const shape = echarts.graphic.clipRectByRect({x: from[0], y: from[1] - height / 2, width: width, height: height}, clip);
          if (!shape) return null;
          const bar = {type: 'rect', shape: shape,
                       style: {fill: COLORS[statuses[api.value(3)]] || COLORS.ok, stroke: stroke, lineWidth: 0.5}};
          const share = api.value(4);
          const marks = blocked[row];
          const waits = stalled[row];
          if (share < 0 && !marks && !waits) return bar;
          const children = [bar];
          if (share > 0) {
            const inner = echarts.graphic.clipRectByRect(
              {x: from[0], y: from[1] - height * 0.22, width: Math.max(width * share, 1), height: height * 0.44}, clip);
            if (inner) children.push({type: 'rect', shape: inner, style: {fill: busyFill, opacity: 0.55}});
          }
          for (const block of marks || []) {
            const left = api.coord([block.offset, row])[0];
            const right = api.coord([block.offset + block.duration, row])[0];
            // an outline over the time the loop was held, so the busy shading inside stays visible
            const mark = echarts.graphic.clipRectByRect(
              {x: left, y: from[1] - height / 2 - 3, width: Math.max(right - left, 2), height: height + 6}, clip);
            if (mark) {
              children.push({type: 'rect', shape: mark,
                             style: {fill: blockFill, fillOpacity: 0.2, stroke: blockStroke, lineWidth: 2}});
            }
          }
          for (const stall of waits || []) {
            // hatched over the time this span waited while other code held the loop
            const left = api.coord([stall.offset, row])[0];
            const right = api.coord([stall.offset + stall.duration, row])[0];
            const top = from[1] - height / 2;
            const area = {x: left, y: top, width: Math.max(right - left, 2), height: height};
            const shade = echarts.graphic.clipRectByRect(area, clip);
            if (!shade) continue;
            children.push({type: 'rect', shape: shade, style: {fill: stallFill, opacity: 0.18}});
            for (let x = area.x - height; x < area.x + area.width; x += 6) {
              const points = echarts.graphic.clipPointsByRect([[x, top + height], [x + height, top]], shade);
              if (points && points.length === 2) {
                children.push({type: 'line', shape: {x1: points[0][0], y1: points[0][1], x2: points[1][0], y2: points[1][1]},
                               style: {stroke: stallStroke, lineWidth: 1}});
              }
            }
          }
          return {type: 'group', children: children};
        },
      }],
    }, true);
  }

  function drawTree(i) {
    const rows = D.spans[i];
    const box = $('tree');
    const nodes = new Array(rows.length);
    const items = document.createDocumentFragment();
    for (let k = 0; k < rows.length; k++) {
      const r = rows[k];
      const depth = r[6];
      const node = el('div', 'node');
      node.setAttribute('role', 'treeitem');
      node.setAttribute('aria-level', String(depth + 1));
      node.dataset.row = String(k);
      node.style.paddingLeft = (Math.min(depth, INDENT_LIMIT) * 14 + 4) + 'px';
      if (r[7] > 1) {
        const toggle = el('button', 'toggle', '▾');
        toggle.type = 'button';
        toggle.title = 'collapse / expand';
        node.setAttribute('aria-expanded', 'true');
        node.append(toggle);
      } else {
        node.append(el('span', 'toggle'));
      }
      if (depth > INDENT_LIMIT) node.append(el('span', 'depth', '[' + depth + ']'));
      // The name never gives way to the tags: it keeps its width (and wraps only when the row
      // cannot hold it alone); the tags take what is left and are cut first (see report.css).
      const label = el('span', 'label', S[r[2]]);
      label.title = S[r[2]];
      node.append(label, el('span', 'dur', fmtMs(r[4])));
      if (r[1] >= 0) node.append(el('span', 'share', pct(r[4], rows[r[1]][4])));
      const busy = busyOf(r);
      if (busy !== null) node.append(el('span', 'busy', 'busy ' + fmtMs(busy)));
      const blocks = blocksOf(r);
      if (blocks.length) node.append(el('span', 'badge b-blocked', blocksText(blocks)));
      const waited = stalledText(r);
      if (waited) node.append(el('span', 'badge b-stalled', waited));
      const status = D.statuses[r[5]];
      if (status !== 'ok') node.append(el('span', 'badge b-' + status, status));
      if (r[8] && r[8].service !== undefined) node.append(el('span', 'service', text(r[8].service)));
      const tags = r[8] && r[8].tags ? Object.entries(r[8].tags) : [];
      if (tags.length) {
        const shown = tags.slice(0, 8).map(([key, value]) => key + '=' + cut(text(value), 60)).join(' ');
        const more = tags.length > 8 ? ' … ' + count(tags.length - 8, 'more tag') : '';
        const tagsNode = el('span', 'tags', shown + more);
        tagsNode.title = tags.map(([key, value]) => key + '=' + cut(text(value), 200)).join('\n');
        node.append(tagsNode);
      }
      nodes[k] = node;
      items.append(node);
    }
    box.replaceChildren(items);
    tree = {box: box, rows: rows, nodes: nodes, collapsed: new Uint8Array(rows.length)};
  }

  function toggleRow(row) {
    tree.collapsed[row] ^= 1;
    const {rows, nodes, collapsed} = tree;
    nodes[row].setAttribute('aria-expanded', collapsed[row] ? 'false' : 'true');
    nodes[row].querySelector('.toggle').textContent = collapsed[row] ? '▸' : '▾';
    let hideUntil = -1;
    for (let k = 0; k < rows.length; k++) {
      const hidden = k < hideUntil;
      nodes[k].hidden = hidden;
      if (!hidden && collapsed[k]) hideUntil = Math.max(hideUntil, k + rows[k][7]);
    }
  }

  // ---- aggregates -----------------------------------------------------------------------
  function placeSankey() {
    // The note and the chart's height come with the first paint, so nothing moves when the chart follows.
    const sankey = D.sankey;
    const box = $('sankey');
    const note = [];
    if (!sankey.links.length) {
      $('sankey-note').textContent = D.traces.length ? 'No spans in these traces.' : 'No traces yet.';
      box.style.display = 'none';
      return;
    }
    box.style.display = '';
    if (sankey.omitted) note.push('The ' + sankey.links.length + ' heaviest links are drawn; ' + sankey.omitted + ' lighter ' + (sankey.omitted === 1 ? 'one is' : 'ones are') + ' left out.');
    if (sankey.nodes.some((label) => label.includes(' · '))) note.push('Recursive names are split by depth (name · depth).');
    $('sankey-note').textContent = note.join(' ');
    box.style.height = Math.max(260, Math.min(900, sankey.nodes.length * 24)) + 'px';
    box.dataset.links = String(sankey.links.length);
  }

  const SANKEY_LEFT = 8;     // px left of the first column
  const SANKEY_RIGHT = 180;  // px right of the last column, for its labels
  const SANKEY_NODE = 20;    // px, echarts' node width

  function sankeyLabelWidth() {
    // A label ends before the next column's nodes. With nodeAlign 'left', echarts puts a node in
    // the column of its longest chain of parents; the links have no cycle (see _sankey.py).
    const column = new Array(D.sankey.nodes.length).fill(0);
    for (let pass = 0, moved = true; moved && pass < column.length; pass++) {
      moved = false;
      for (const [source, target] of D.sankey.links) {
        if (column[target] <= column[source]) { column[target] = column[source] + 1; moved = true; }
      }
    }
    const last = column.reduce((a, b) => Math.max(a, b), 0);
    const step = ($('sankey').clientWidth - SANKEY_LEFT - SANKEY_RIGHT - SANKEY_NODE) / Math.max(1, last);
    return Math.max(40, Math.min(SANKEY_RIGHT - 12, step - SANKEY_NODE - 12));
  }

  function drawSankey() {
    const sankey = D.sankey;
    const box = $('sankey');
    const previous = echarts.getInstanceByDom(box);
    if (previous) previous.dispose();  // render() again: the renderer may change with the data
    if (!sankey.links.length) return;
    const chart = echarts.init(box, null, {renderer: sankey.links.length <= 400 ? 'svg' : 'canvas'});
    const opacity = Number(box.dataset.linkOpacity);
    const labels = sankey.nodes;
    chart.setOption({
      animation: false,
      tooltip: {trigger: 'item', confine: true, formatter: (p) => {
        if (p.dataType === 'edge') {
          const link = sankey.links[p.dataIndex];
          return el('div', 'tip', el('p', 'name', labels[link[0]] + ' → ' + labels[link[1]]),
                    el('div', null, fmtMs(link[2]) + ' in total over ' + count(link[3], 'span') + ' (mean ' + fmtMs(link[2] / link[3]) + ')'));
        }
        return el('div', 'tip', el('p', 'name', labels[Number(p.name.slice(1))]), el('div', null, fmtMs(p.value) + ' in total'));
      }},
      series: [{
        type: 'sankey', left: SANKEY_LEFT, right: SANKEY_RIGHT, top: 8, bottom: 8, nodeWidth: SANKEY_NODE,
        nodeGap: 10, draggable: false,
        nodeAlign: 'left',  // each node in the column of its depth (the default puts every leaf far right)
        emphasis: {focus: 'adjacency'},
        data: labels.map((label, k) => ({name: 'n' + k})),
        links: sankey.links.map((link) => ({source: 'n' + link[0], target: 'n' + link[1], value: Math.max(link[2], 1e-6)})),
        label: {formatter: (p) => cut(labels[Number(p.name.slice(1))], 200), color: '#1f2937',
                width: sankeyLabelWidth(), overflow: 'truncate', ellipsis: '…'},  // the whole name is in the tooltip
        lineStyle: {color: 'gradient', opacity: opacity, curveness: 0.5},
      }],
    });
    return chart;
  }

  function drawStats() {
    const table = $('stats');
    const head = el('tr', null);
    const loop = D.stats.some((row) => row.length > 9);
    const titles = ['name', 'count', 'p50', 'p95', 'p99', 'max', 'total', 'errors', 'share'];
    if (loop) titles.push('busy p50', 'busy p95', 'blocks', 'blocked', 'stalled');
    for (const title of titles) head.append(el('th', null, title));
    const body = el('tbody', null);
    for (const row of D.stats) {
      const tr = el('tr', null);
      const name = el('td', null, row[0]);
      name.title = row[0];
      tr.append(name, el('td', null, String(row[1])));
      for (const value of row.slice(2, 7)) tr.append(el('td', null, fmtMsBare(value)));
      tr.append(el('td', null, pct(row[7], row[1]) || '0%'), el('td', null, pct(row[8], 1) || '0%'));
      if (loop) {
        for (const value of [row[9], row[10]]) tr.append(el('td', null, value === null || value === undefined ? '–' : fmtMsBare(value)));
        const blocks = row[11] || 0;
        tr.append(el('td', blocks ? 'blocked' : null, String(blocks)), el('td', null, blocks ? fmtMsBare(row[12]) : '–'));
        tr.append(el('td', null, row[13] ? fmtMsBare(row[13]) : '–'));
      }
      body.append(tr);
    }
    table.replaceChildren(el('thead', null, head), body);
    $('stats-note').textContent = D.stats_omitted ? count(D.stats_omitted, 'more span name') + ' not shown.' : '';
  }

  // ---- wiring ---------------------------------------------------------------------------
  function wire() {
    // A change of filters redraws the list here and tells a live page (flowtrackerReport.onfilter),
    // which may fetch the traces that match from its server.
    const changed = () => {
      if (!D) return;
      drawList();
      const api = window.flowtrackerReport;
      if (api.onfilter) api.onfilter(filters());
    };
    let timer = 0;
    const typed = () => { clearTimeout(timer); timer = setTimeout(changed, 120); };
    $('search').addEventListener('input', typed);
    $('min-duration').addEventListener('input', typed);
    for (const id of ['service-filter', 'status-filter', 'blocked-filter', 'stalled-filter']) $(id).addEventListener('change', changed);
    $('sort').addEventListener('change', () => { if (D) drawList(); });
    $('details').addEventListener('click', (event) => {
      const link = event.target.closest('.stall-link');
      if (link) openSpan(link.dataset.traceId, link.dataset.spanId);
    });
    $('trace-list').addEventListener('click', (event) => {
      const button = event.target.closest('button');
      if (button) select(Number(button.dataset.index));
    });
    $('tree').addEventListener('click', (event) => {
      const node = event.target.closest('.node');
      if (!node) return;
      if (event.target.closest('.toggle') && event.target.closest('button')) toggleRow(Number(node.dataset.row));
      else showDetails(current, Number(node.dataset.row));
    });
    $('tree').addEventListener('mouseover', (event) => {
      const node = event.target.closest('.node');
      if (node) showDetails(current, Number(node.dataset.row));
    });
    let resizeTimer = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        if (!window.echarts) return;
        for (const id of ['gantt', 'sankey']) {
          const chart = echarts.getInstanceByDom($(id));
          if (chart) chart.resize();
        }
        const sankey = echarts.getInstanceByDom($('sankey'));
        if (sankey) sankey.setOption({series: [{label: {width: sankeyLabelWidth()}}]});
      }, 100);
    });
  }

  function fail(error) {
    const box = $('fatal');
    box.hidden = false;
    box.textContent = 'The report could not be drawn: ' + (error && error.message ? error.message : String(error));
    document.body.dataset.ready = 'error';
    throw error;  // and on the console
  }

  // Draws every view from `data` (see the top of this file); the open trace stays open if it is
  // still there, with the span its details showed. Called again, it redraws only what changed: the
  // open trace when its span rows are another array, "where time goes" and the statistics when
  // data.sankey or data.stats is another object (a live page keeps the ones it did not refetch).
  // The charts are drawn too once the charting library is loaded (charts() below).
  function render(data) {
    const before = D;
    const open = before && current >= 0 ? before.traces[current][0] : null;
    const openRows = open === null ? null : before.spans[current];
    const active = tree ? tree.box.querySelector('.node.active') : null;
    const activeSpan = active && openRows ? openRows[Number(active.dataset.row)][0] : null;
    D = data;
    S = D.strings;
    traceNames = D.spans.map((rows) => {
      if (!rows) return null;
      const names = new Set();
      for (const r of rows) names.add(r[2]);
      return names;
    });
    const kept = open === null ? -1 : D.traces.findIndex((t) => t[0] === open);
    current = kept;
    drawSummary();
    placeFilters();
    const found = drawList();
    if (!before || D.sankey !== before.sankey) {
      placeSankey();
      if (window.echarts) drawSankey();
    }
    if (!before || D.stats !== before.stats) drawStats();
    if (kept >= 0 && D.spans[kept] === openRows) {
      drawTraceHeader(kept);  // the same spans: only its summary may have changed
    } else if (kept >= 0) {
      select(kept);
      const row = activeSpan === null || !D.spans[kept] ? -1 : D.spans[kept].findIndex((r) => r[0] === activeSpan);
      if (row >= 0) showDetails(kept, row);
    } else {
      tree = null;
      if (found.length) select(found[0]);
      else clearTrace();
    }
    window.flowtrackerReport.data = D;
    startCharts();
  }

  function clearTrace() {
    current = -1;
    delete $('trace-view').dataset.traceId;
    delete $('trace-view').dataset.loading;
    $('trace-title').textContent = 'No traces';
    $('trace-meta').textContent = '';
    $('tree').replaceChildren();
    $('details').replaceChildren(el('p', 'muted', 'Hover or click a span.'));
    if (gantt) gantt.clear();
  }

  // The traces of `part` (a data object, say of one trace) as [{trace, spans}] whose string indices
  // are re-made by `intern(string) -> index` for another data object's strings: how a live page
  // joins traces it loads one by one into the data it renders.
  function adopt(part, intern) {
    const map = part.strings.map(intern);
    const at = (index) => (index >= 0 ? map[index] : index);
    return part.traces.map((t, k) => {
      const trace = t.slice();
      trace[1] = at(t[1]);
      trace[6] = at(t[6]);
      if (Array.isArray(t[9])) trace[9] = t[9].map(at);
      const spans = part.spans[k].map((r) => { const row = r.slice(); row[2] = map[r[2]]; return row; });
      return {trace: trace, spans: spans};
    });
  }

  // The first paint: everything but the charts, drawn while this script runs (it is the last
  // element of the page), so the browser's first frame, and a plain headless screenshot, shows the
  // trace list, the selected trace's tree and the statistics. A page without #ft-data (a live page)
  // waits for its own script to call render().
  function main() {
    window.flowtrackerReport = {
      render: render, select: select, adopt: adopt, filters: filters,
      matcher: () => matcher(filters()),
      current: () => (D && current >= 0 ? D.traces[current][0] : null),
      data: null, onopen: null, onfilter: null,
    };
    wire();
    if ($('ft-data')) {
      render(JSON.parse(readBlob('ft-data')));
    } else {
      $('summary').textContent = 'Waiting for traces…';
      setTimeout(startCharts, 1000);  // no render() yet: start the library anyway, data will come
    }
  }

  // The charts start in the frame after the first render's (the report's is drawn by main(); a live
  // page's first list comes later, and is not kept waiting for the library's start).
  let chartsStarted = false;
  function startCharts() {
    if (chartsStarted) return;
    chartsStarted = true;
    requestAnimationFrame(() => setTimeout(() => { try { charts(); } catch (error) { fail(error); } }, 0));
  }

  // The charts follow the first paint: unpacking and starting the 1 MB charting library is the
  // slow part, so it waits for the frame after the one that shows the rest.
  function charts() {
    loadLibrary();
    if (D) {
      drawSankey();
      if (current >= 0 && D.spans[current]) drawGantt(current);
    }
    document.body.dataset.ready = 'true';
  }

  try { main(); } catch (error) { fail(error); }
})();
