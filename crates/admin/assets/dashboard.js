// Isthmus dashboard: reads the admin server's JSON endpoints and draws them. No libraries:
// the DOM is built with textContent only (configuration text is never parsed as HTML), and
// the charts are drawn on <canvas>.
'use strict';

(function () {
  const SUMMARY_EVERY_MS = 1000;
  const CLUSTERS_EVERY_MS = 2000;
  const HIDDEN_EVERY_MS = 5000;
  const WINDOW_MS = 120000;
  const MAX_LINES = 6;

  const state = {
    generation: null,
    summary: null,
    colors: new Map(),
    latencyOf: 'all',
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      e.append(kid instanceof Node ? kid : String(kid));
    }
    return e;
  }

  function replace(id, ...nodes) {
    const target = $(id);
    if (target) target.replaceChildren(...nodes);
  }

  async function getJson(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 5000);
    try {
      const r = await fetch(path, { cache: 'no-store', signal: ctl.signal });
      if (!r.ok) throw new Error(path + ' answered ' + r.status);
      return await r.json();
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- formatting ----

  function num(v, unit) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    const a = Math.abs(v);
    const s = a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : a === 0 ? '0' : v.toPrecision(2);
    return unit ? s + ' ' + unit : s;
  }

  // Axis labels: no trailing zeros (50, 2.5, 0.25).
  function tick(v) {
    return String(Number(v.toPrecision(3)));
  }

  function pct(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    return (v * 100).toFixed(v >= 0.1 || v === 0 ? 0 : 1) + ' %';
  }

  function basename(path) {
    const s = String(path || '');
    const i = s.lastIndexOf('/');
    return i >= 0 ? s.slice(i + 1) : s;
  }

  function where(file, line) {
    return el('span', { class: 'mono', title: file + ':' + line }, basename(file) + ':' + line);
  }

  function badge(text, kind, title) {
    return el('span', { class: 'badge ' + (kind || ''), title: title || null }, text);
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#555';
  }

  function colorOf(destination) {
    if (destination === 'all') return cssVar('--series-all');
    if (!state.colors.has(destination)) state.colors.set(destination, (state.colors.size % MAX_LINES) + 1);
    return cssVar('--series-' + state.colors.get(destination));
  }

  // ---- charts ----

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // lines: [{color, width, dash, points: [[t, v|null]]}]
  function drawChart(canvas, lines, opts) {
    if (!canvas || !canvas.getContext) return;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const pad = { l: 46, r: 8, t: 8, b: 18 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const end = opts.end;
    const start = end - WINDOW_MS;
    let top = 0;
    for (const line of lines) for (const [, v] of line.points) if (v !== null && v > top) top = v;
    const yMax = opts.yMax || niceMax(top);
    const x = (t) => pad.l + ((t - start) / WINDOW_MS) * pw;
    const y = (v) => pad.t + ph - (Math.min(v, yMax) / yMax) * ph;

    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.setLineDash([]);
    ctx.strokeStyle = cssVar('--chart-grid');
    ctx.fillStyle = cssVar('--chart-axis');
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const v = (yMax * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.l, yy);
      ctx.lineTo(w - pad.r, yy);
      ctx.stroke();
      ctx.fillText(opts.fmt(v), pad.l - 6, yy);
    }
    ctx.textBaseline = 'top';
    const ticks = [[start, '−2 min'], [start + WINDOW_MS / 2, '−1 min'], [end, 'now']];
    ticks.forEach(([t, label], i) => {
      ctx.textAlign = i === 0 ? 'left' : i === ticks.length - 1 ? 'right' : 'center';
      ctx.fillText(label, x(t), h - pad.b + 4);
    });

    let drawn = 0;
    for (const line of lines) {
      ctx.strokeStyle = line.color;
      ctx.lineWidth = line.width || 2;
      ctx.setLineDash(line.dash || []);
      ctx.lineJoin = 'round';
      ctx.beginPath();
      let pen = false;
      for (const [t, v] of line.points) {
        if (t < start || v === null || v === undefined) {
          pen = false;
          continue;
        }
        if (pen) ctx.lineTo(x(t), y(v));
        else ctx.moveTo(x(t), y(v));
        pen = true;
        drawn++;
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
    if (drawn === 0 || opts.message) {
      ctx.fillStyle = cssVar('--chart-axis');
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText(opts.message || 'collecting samples…', pad.l + pw / 2, pad.t + ph / 2);
    }
  }

  function legend(id, items) {
    replace(id, ...items.map((it) => el('li', null,
      el('span', { class: 'swatch ' + (it.style || ''), style: null, 'aria-hidden': 'true', 'data-color': it.color }),
      el('span', { class: 'name', title: it.label }, it.label),
      it.value !== undefined ? el('span', { class: 'mono' }, it.value) : null)));
    // Colours are set through the CSSOM, which the page's content security policy allows.
    for (const s of document.querySelectorAll('#' + id + ' .swatch')) s.style.borderTopColor = s.dataset.color;
  }

  function latest(series) {
    const p = series.points;
    return p.length ? p[p.length - 1] : null;
  }

  // The series drawn: `all`, then the busiest destinations.
  function shown(summary) {
    const all = summary.series.filter((s) => s.destination === 'all');
    const rest = summary.series
      .filter((s) => s.destination !== 'all')
      .sort((a, b) => b.requests_total - a.requests_total)
      .slice(0, MAX_LINES);
    return all.concat(rest);
  }

  function renderCharts(summary) {
    const end = summary.series.reduce((m, s) => Math.max(m, s.points.length ? s.points[s.points.length - 1].t : 0), 0) || Date.now();
    const series = shown(summary);
    const lineOf = (s, key) => ({
      color: colorOf(s.destination),
      width: s.destination === 'all' ? 2.5 : 1.75,
      dash: s.destination === 'all' ? [] : null,
      points: s.points.map((p) => [p.t, p[key]]),
    });
    drawChart($('chart-rps'), series.map((s) => lineOf(s, 'rps')), { end, fmt: tick });
    // A few percent of errors must stay visible: the scale follows the worst series.
    const worst = series.reduce((m, s) => s.points.reduce((n, p) => Math.max(n, p.error_rate || 0), m), 0);
    const errMax = Math.min(1, niceMax(Math.max(worst, 0.05)));
    drawChart($('chart-errors'), series.map((s) => lineOf(s, 'error_rate')), { end, yMax: errMax, fmt: (v) => tick(v * 100) + '%' });
    legend('legend-rps', series.map((s) => ({ label: s.destination, color: colorOf(s.destination), value: num(latest(s) && latest(s).rps) })));
    legend('legend-errors', series.map((s) => ({ label: s.destination, color: colorOf(s.destination), value: pct(latest(s) && latest(s).error_rate) })));

    const all = summary.series.find((s) => s.destination === 'all');
    const now = all && latest(all);
    const rps = now ? now.rps : 0;
    const out = $('rps-now');
    out.dataset.value = String(rps);
    out.textContent = num(rps, 'req/s');
    const errOut = $('errors-now');
    errOut.dataset.value = now && now.error_rate !== null ? String(now.error_rate) : '';
    errOut.textContent = now ? pct(now.error_rate) : '–';
    renderLatency(summary, end);
    renderDestinations(summary);
  }

  function renderLatency(summary, end) {
    const select = $('latency-of');
    const names = summary.series.map((s) => s.destination);
    const have = Array.from(select.options).map((o) => o.value);
    if (names.join('\n') !== have.join('\n')) {
      select.replaceChildren(...names.map((n) => el('option', { value: n }, n === 'all' ? 'all destinations' : n)));
      if (!names.includes(state.latencyOf)) state.latencyOf = 'all';
      select.value = state.latencyOf;
    }
    const s = summary.series.find((x) => x.destination === state.latencyOf) || summary.series[0];
    const out = $('latency-now');
    if (!summary.latency_histogram || !s) {
      drawChart($('chart-latency'), [], { end, fmt: tick, message: 'no latency histogram exposed' });
      legend('legend-latency', []);
      out.dataset.value = '';
      out.textContent = 'n/a';
      return;
    }
    const styles = [['p50', [], ''], ['p90', [6, 4], 'dash'], ['p99', [2, 3], 'dot']];
    const color = colorOf(s.destination);
    drawChart($('chart-latency'), styles.map(([k, dash]) => ({ color, dash, width: 2, points: s.points.map((p) => [p.t, p[k]]) })), { end, fmt: tick });
    const now = latest(s);
    legend('legend-latency', styles.map(([k, , style]) => ({ label: k, color, style, value: num(now && now[k], 'ms') })));
    out.dataset.value = now && now.p50 !== null ? String(now.p50) : '';
    out.textContent = now && now.p50 !== null ? 'p50 ' + num(now.p50, 'ms') : '–';
  }

  function renderDestinations(summary) {
    const rows = summary.series.map((s) => {
      const p = latest(s) || {};
      return el('tr', null,
        el('td', null, el('span', { class: 'mono' }, s.destination)),
        el('td', { class: 'num' }, num(p.rps)),
        el('td', { class: 'num' }, pct(p.error_rate)),
        el('td', { class: 'num' }, num(p.p50)),
        el('td', { class: 'num' }, num(p.p90)),
        el('td', { class: 'num' }, num(p.p99)),
        el('td', { class: 'num' }, num(s.requests_total)));
    });
    const body = $('destinations').tBodies[0];
    if (body) body.replaceChildren(...rows);
  }

  // ---- header ----

  function renderHeader(summary) {
    $('generation').textContent = String(summary.generation);
    $('connections').textContent = summary.active_connections === undefined ? '–' : String(Math.round(summary.active_connections));
    const st = $('state');
    st.textContent = summary.ready ? 'ready' : 'not ready';
    st.className = 'pill ' + (summary.ready ? 'ok' : 'bad');
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  }

  function online() {
    const b = $('banner');
    b.hidden = true;
    b.textContent = '';
  }

  function offline(err) {
    const b = $('banner');
    b.hidden = false;
    b.textContent = 'Cannot reach the admin server (' + (err && err.message ? err.message : 'no answer') + '); retrying.';
    const st = $('state');
    st.textContent = 'unreachable';
    st.className = 'pill bad';
  }

  // ---- routes ----

  function routeTable(routes) {
    return el('table', { class: 'grid' },
      el('thead', null, el('tr', null,
        el('th', { scope: 'col', class: 'num' }, '#'),
        el('th', { scope: 'col' }, 'match'),
        el('th', { scope: 'col' }, 'action'),
        el('th', { scope: 'col' }, 'from'))),
      el('tbody', null, routes.map((r) => el('tr', null,
        el('td', { class: 'num' }, String(r.index)),
        el('td', null, el('code', null, r.match || r.sni_hosts && r.sni_hosts.join(', ') || 'any')),
        el('td', null, el('code', null, r.action)),
        el('td', null, el('span', { title: r.source.resource + ' ' + r.source.field }, r.virtual_service + (r.name ? ' "' + r.name + '"' : '')), ' ', where(r.source.file, r.source.line))))));
  }

  function hostBlocks(hosts, open) {
    return hosts.map((vh) => el('details', { class: 'host', open: open ? 'open' : null, 'data-host': vh.domain },
      el('summary', null, vh.domain, ' ', el('span', { class: 'muted' }, '(' + vh.routes.length + (vh.routes.length === 1 ? ' route)' : ' routes)')),
        vh.https_redirect ? [' ', badge('redirects to https', 'note')] : null),
      vh.routes.length ? routeTable(vh.routes)
        : el('p', { class: 'muted' }, vh.https_redirect ? 'every request is redirected to https' : 'no routes: answers 404')));
  }

  function renderRoutes(table, listeners) {
    const cards = [];
    const hostCount = table.ports.reduce((n, p) => n + (p.virtual_hosts || []).length, 0);
    const open = hostCount <= 6;
    for (const p of table.ports) {
      const bound = listeners[String(p.port)];
      cards.push(el('div', { class: 'card' },
        el('h3', null, 'Port ' + p.port, badge(p.protocol, 'note'),
          bound ? el('span', { class: 'sub' }, 'bound ' + bound) : badge('not bound', 'bad')),
        el('div', { class: 'sub' }, 'Gateway servers: ' + (p.servers.join(', ') || 'none')),
        hostBlocks(p.virtual_hosts || [], open),
        (p.chains || []).map((c) => el('div', null,
          el('div', { class: 'sub' }, 'TLS server ' + c.server + ' · SNI ' + (c.server_names.join(', ') || '*') + ' · ' + c.tls_mode),
          hostBlocks(c.virtual_hosts || [], open),
          (c.tls || []).length ? routeTable(c.tls) : null,
          (c.tcp || []).length ? routeTable(c.tcp) : null)),
        (p.tcp || []).length ? routeTable(p.tcp) : null));
    }
    if (!cards.length) cards.push(el('p', { class: 'muted' }, 'No listeners: no Gateway selects this instance yet.'));
    replace('routes', ...cards);
  }

  // ---- clusters ----

  function health(e) {
    if (e.health === 'ejected') return badge('⚠ ejected ' + Math.ceil(e.ejected_for_ms / 1000) + ' s', 'warn', 'outlier detection: back in ' + e.ejected_for_ms + ' ms');
    if (e.health === 'unhealthy') return badge('✕ failing health check', 'bad');
    return badge('✓ healthy', 'ok');
  }

  function limit(count, max) {
    return count + '/' + (max >= 4294967295 ? '∞' : max);
  }

  function renderClusters(data) {
    const list = data.clusters.slice().sort((a, b) => (a.service + a.port + a.name).localeCompare(b.service + b.port + b.name));
    const cards = list.map((c) => {
      const cb = c.circuit_breakers;
      const healthy = c.endpoints.filter((e) => e.health === 'healthy').length;
      return el('div', { class: 'card', 'data-cluster': c.name },
        el('h3', null, c.service + ':' + c.port + (c.subset ? ' (' + c.subset + ')' : ''),
          badge(c.load_balancer, 'note', 'load balancer'),
          c.outlier_detection ? badge('outlier detection', 'note') : null,
          c.health_checks ? badge('health checks', 'note') : null,
          badge(healthy + '/' + c.endpoints.length + ' healthy', healthy === c.endpoints.length && healthy > 0 ? 'ok' : 'warn')),
        el('div', { class: 'sub mono' }, c.name),
        el('div', { class: 'sub' }, 'circuit breakers: connections ' + limit(cb.connections, cb.max_connections) +
          ' · pending ' + limit(cb.pending, cb.max_pending_requests) + ' · requests ' + limit(cb.requests, cb.max_requests) +
          ' · retries ' + limit(cb.retries, cb.max_retries)),
        c.endpoints.length ? el('table', { class: 'grid' },
          el('thead', null, el('tr', null,
            el('th', { scope: 'col' }, 'endpoint'), el('th', { scope: 'col', class: 'num' }, 'weight'),
            el('th', { scope: 'col', class: 'num' }, 'priority'), el('th', { scope: 'col' }, 'health'),
            el('th', { scope: 'col', class: 'num' }, 'active'))),
          el('tbody', null, c.endpoints.map((e) => el('tr', { 'data-health': e.health },
            el('td', null, el('span', { class: 'mono' }, e.address)),
            el('td', { class: 'num' }, String(e.weight)),
            el('td', { class: 'num' }, String(e.priority)),
            el('td', null, health(e)),
            el('td', { class: 'num' }, String(e.active_requests))))))
          : el('p', { class: 'muted' }, 'no endpoints (yet): requests answer 503'));
    });
    if (!cards.length) cards.push(el('p', { class: 'muted' }, 'No upstream clusters.'));
    replace('clusters', ...cards);
  }

  // ---- diagnostics and resources ----

  function severity(s) {
    return badge(s, s === 'error' ? 'bad' : s === 'warning' ? 'warn' : 'note');
  }

  function renderDiagnostics(list) {
    const errors = list.filter((d) => d.severity === 'error').length;
    const warnings = list.filter((d) => d.severity === 'warning').length;
    const count = (n, what) => n + ' ' + what + (n === 1 ? '' : 's');
    $('diagnostics-count').textContent = list.length
      ? [count(errors, 'error'), count(warnings, 'warning'), count(list.length - errors - warnings, 'note')].join(', ')
      : '';
    if (!list.length) {
      replace('diagnostics', el('p', null, badge('✓ clean', 'ok'), ' Every resource applies without a diagnostic.'));
      return;
    }
    replace('diagnostics', el('table', { class: 'grid' },
      el('thead', null, el('tr', null,
        el('th', { scope: 'col' }, 'severity'), el('th', { scope: 'col' }, 'where'),
        el('th', { scope: 'col' }, 'resource'), el('th', { scope: 'col' }, 'field'), el('th', { scope: 'col' }, 'message'))),
      el('tbody', null, list.map((d) => el('tr', null,
        el('td', null, severity(d.severity)),
        el('td', null, where(d.file, d.line)),
        el('td', null, d.resource),
        el('td', null, el('code', null, d.field)),
        el('td', null, d.message))))));
  }

  function renderResources(list) {
    $('resources-count').textContent = '(' + list.length + ')';
    replace('resources', el('table', { class: 'grid' },
      el('thead', null, el('tr', null,
        el('th', { scope: 'col' }, 'kind'), el('th', { scope: 'col' }, 'namespace/name'),
        el('th', { scope: 'col' }, 'where'), el('th', { scope: 'col' }, 'version'),
        el('th', { scope: 'col', class: 'num' }, 'since generation'))),
      el('tbody', null, list.map((r) => el('tr', null,
        el('td', null, r.kind), el('td', null, r.namespace + '/' + r.name),
        el('td', null, where(r.file, r.line)), el('td', null, el('code', null, r.version)),
        el('td', { class: 'num' }, String(r.generation)))))));
  }

  // ---- polling ----

  async function loadStructure() {
    const [routes, listeners, dump] = await Promise.all([getJson('/routes'), getJson('/listeners'), getJson('/config_dump')]);
    renderRoutes(routes, listeners);
    renderDiagnostics(dump.diagnostic_details || []);
    renderResources(dump.resources || []);
  }

  function later(fn, ms) {
    setTimeout(fn, document.hidden ? HIDDEN_EVERY_MS : ms);
  }

  async function pollSummary() {
    try {
      const s = await getJson('/stats/summary');
      state.summary = s;
      online();
      renderHeader(s);
      renderCharts(s);
      if (s.generation !== state.generation) {
        await loadStructure();
        state.generation = s.generation;
      }
      document.body.dataset.loaded = 'true';
    } catch (err) {
      offline(err);
    }
    later(pollSummary, SUMMARY_EVERY_MS);
  }

  async function pollClusters() {
    try {
      renderClusters(await getJson('/clusters'));
    } catch (err) {
      offline(err);
    }
    later(pollClusters, CLUSTERS_EVERY_MS);
  }

  function start() {
    $('latency-of').addEventListener('change', (ev) => {
      state.latencyOf = ev.target.value;
      if (state.summary) renderCharts(state.summary);
    });
    let pending = false;
    window.addEventListener('resize', () => {
      if (pending || !state.summary) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        renderCharts(state.summary);
      });
    });
    pollSummary();
    pollClusters();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
