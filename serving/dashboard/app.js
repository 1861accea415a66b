/* lambdalake live dashboard: polls the /v1 API of the same process with the read key from the URL.
 *
 * Plain JavaScript, no build step. The chart library (uPlot, from node_modules via /vendor/) is
 * optional: without it every number still shows and the chart data are shown as tables.
 * Every number has a data-testid and its raw API value in data-value, so tests read what is shown.
 */
(function () {
  'use strict';

  const KEY_STORAGE = 'lambdalake.readKey';
  const REFRESH_MS = 3000;
  const FETCH_TIMEOUT_MS = 10000;
  const MINUTE = 60 * 1000;
  const HOUR = 60 * MINUTE;
  const DAY = 24 * HOUR;
  const FUNNEL_STEPS = ['product_view', 'add_to_cart', 'checkout_started', 'purchase'];
  const COLORS = { batch: '#2563eb', speed: '#f59e0b', mixed: '#8b5cf6', unavailable: '#9ca3af' };

  const state = {
    key: null,
    refreshes: 0,
    problems: [],
    lastError: null,
    data: {},
    charts: {},
    vendorMissing: false,
  };
  window.dashboard = state;
  window.addEventListener('error', (event) => { window.__error = String(event.message || event); });

  // --- small helpers ------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  function iso(ms) {
    return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  function shortTime(isoText, withDate) {
    if (!isoText) return '—';
    const text = isoText.replace('T', ' ').replace(/:\d{2}(\.\d+)?Z$/, '');
    return withDate ? text : text.slice(11);
  }

  function fmt(value, decimals) {
    if (value === null || value === undefined || Number.isNaN(value)) return '—';
    const digits = decimals === undefined ? (Number.isInteger(value) ? 0 : 2) : decimals;
    return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  /** Show a number: formatted text, raw value in data-value (empty for null). */
  function setNumber(el, value, decimals) {
    el.textContent = fmt(value, decimals);
    el.dataset.value = value === null || value === undefined ? '' : String(value);
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (name === 'text') node.textContent = value;
      else if (name === 'class') node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function numberCell(testid, value, decimals, tag) {
    const cell = el(tag || 'td', { class: 'num', 'data-testid': testid });
    setNumber(cell, value, decimals);
    return cell;
  }

  // --- the read key -----------------------------------------------------------------------------
  function readKey() {
    const params = new URLSearchParams(location.search);
    const fromUrl = params.get('key');
    if (fromUrl) {
      try { localStorage.setItem(KEY_STORAGE, fromUrl); } catch (_) { /* private mode: URL only */ }
      params.delete('key');  // keep it out of the address bar, history and screenshots
      const rest = params.toString();
      history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
      return fromUrl;
    }
    try { return localStorage.getItem(KEY_STORAGE); } catch (_) { return null; }
  }

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  async function api(path, params) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null) url.searchParams.append(name, value);
    }
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(url, {
        headers: { 'X-Read-Key': state.key, Accept: 'application/json' },
        cache: 'no-store',
        signal: controller.signal,
      });
    } catch (err) {
      throw new ApiError(`${path}: ${err.name === 'AbortError' ? 'timed out' : 'server unreachable'}`, 0);
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = JSON.stringify((await response.json()).detail); } catch (_) { /* not JSON */ }
      throw new ApiError(`${path}: HTTP ${response.status} ${detail}`, response.status);
    }
    return response.json();
  }

  // --- charts (only when the library loaded) ------------------------------------------------------
  function chartWidth(container) {
    return Math.max(280, container.clientWidth || 600);
  }

  const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC');

  function pageViewsChart(container) {
    return new uPlot({
      width: chartWidth(container),
      height: 200,
      tzDate: utc,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [{}, { size: 50 }],
      series: [
        {},
        { label: 'page views', stroke: COLORS.batch, width: 2, fill: 'rgba(37,99,235,0.08)',
          points: { show: true, size: 4 }, spanGaps: false },
      ],
    }, [[], []], container);
  }

  function drawBoundary(u) {
    const chart = state.charts.revenue;
    if (!chart || !chart.boundary) return;
    const [min, max] = [u.scales.x.min, u.scales.x.max];
    const ctx = u.ctx;
    ctx.save();
    // hours the API could not answer: a grey column, so a hole is not read as zero revenue
    for (const x of chart.unavailable) {
      const left = u.valToPos(x - 1800, 'x', true);
      const right = u.valToPos(x + 1800, 'x', true);
      ctx.fillStyle = 'rgba(156,163,175,0.25)';
      ctx.fillRect(left, u.bbox.top, right - left, u.bbox.height);
    }
    if (chart.boundary >= min && chart.boundary <= max) {
      const x = Math.round(u.valToPos(chart.boundary, 'x', true));
      ctx.strokeStyle = '#111827';
      ctx.lineWidth = 2 * uPlot.pxRatio;
      ctx.setLineDash([6 * uPlot.pxRatio, 4 * uPlot.pxRatio]);
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = '#111827';
      ctx.font = `${11 * uPlot.pxRatio}px sans-serif`;
      ctx.textAlign = 'right';
      ctx.fillText('batch ', x, u.bbox.top + 12 * uPlot.pxRatio);
      ctx.textAlign = 'left';
      ctx.fillText(' speed', x, u.bbox.top + 12 * uPlot.pxRatio);
    }
    ctx.restore();
  }

  function revenueChart(container) {
    const compact = (v) => Math.abs(v) >= 1e6 ? `${+(v / 1e6).toFixed(1)}M`
      : Math.abs(v) >= 1e3 ? `${+(v / 1e3).toFixed(1)}k` : `${v}`;
    const bars = uPlot.paths.bars({ size: [0.8, 60], align: 0 });
    const serie = (source) => ({
      label: source, stroke: COLORS[source], fill: COLORS[source], width: 1, paths: bars,
      points: { show: false },
    });
    return new uPlot({
      width: chartWidth(container),
      height: 220,
      tzDate: utc,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: (u, min, max) => [min - 1800, max + 1800] },  // whole first and last bars
        y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] },
      },
      // compact tick labels (12k, 1.5M) so six-figure revenue fits the axis
      axes: [{}, { size: 60, values: (u, ticks) => ticks.map(compact) }],
      series: [{}, serie('batch'), serie('speed'), serie('mixed')],
      hooks: { draw: [drawBoundary] },
    }, [[], [], [], []], container);
  }

  function ensureCharts() {
    if (state.vendorMissing || state.charts.pageViews) return;
    state.charts.pageViews = { plot: pageViewsChart($('chart-page-views')) };
    state.charts.revenue = { plot: revenueChart($('chart-revenue')), boundary: null, unavailable: [] };
    window.addEventListener('resize', () => {
      for (const [name, id] of [['pageViews', 'chart-page-views'], ['revenue', 'chart-revenue']]) {
        const plot = state.charts[name].plot;
        plot.setSize({ width: chartWidth($(id)), height: plot.height });
      }
    });
  }

  // --- panels -------------------------------------------------------------------------------------
  const PANEL_NAMES = {
    status: 'engines', 'panel-active': 'active users', 'panel-page-views': 'page views',
    'panel-revenue': 'revenue', 'panel-top': 'top products', 'panel-funnel': 'funnel', 'panel-alerts': 'alerts',
  };

  function problem(panel, message) {
    state.problems.push(`${PANEL_NAMES[panel] || panel}: ${message}`);
    const node = $(panel);
    if (node) node.classList.add('degraded');
  }

  function noteDegraded(panel, response) {
    for (const reason of response.degraded || []) problem(panel, reason);
  }

  function renderStatus(status) {
    for (const name of ['redis', 'warehouse']) {
      const part = status[name] || {};
      const pill = $(`status-${name}`);
      pill.textContent = `${name} ${part.ok ? 'ok' : 'down'}`;
      pill.className = `pill ${part.ok ? 'ok' : 'bad'}`;
      const error = part.error || `${name} unavailable`;
      if (!part.ok) problem('status', error.includes(name) ? error : `${name}: ${error}`);
    }
    $('watermark').textContent = status.watermark ? shortTime(status.watermark, true) : 'none yet';
    $('watermark').dataset.value = status.watermark || '';
  }

  function renderActiveUsers(active) {
    for (const span of ['5m', '1h', '1d']) setNumber($(`active-${span}`), (active.now || {})[span] ?? null, 0);
    const source = active.source || 'unavailable';
    $('active-source').textContent = source + (active.approximate ? ' ≈' : '');
    $('active-source').className = `badge ${source}`;
    $('active-note').textContent = active.approximate ? 'HyperLogLog estimate (±2%)' : '';
    if (source === 'unavailable') problem('panel-active', 'active users unavailable');
  }

  function renderSeriesTable(tbodyId, prefix, points, decimals) {
    const rows = points.map((p) => el('tr', { 'data-source': p.source, class: p.source }, [
      el('td', { text: shortTime(p.start, prefix === 'revenue') }),
      numberCell(`${prefix}-${p.start}`, p.value, decimals),
      el('td', { 'data-testid': `${prefix}-source-${p.start}`, text: p.source + (p.approximate ? ' ≈' : '') }),
    ]));
    $(tbodyId).replaceChildren(...rows.reverse());  // newest first
  }

  function renderPageViews(series) {
    const points = series.points || [];
    noteDegraded('panel-page-views', series);
    renderSeriesTable('table-page-views', 'page-views', points, 0);
    const last = points.length ? points[points.length - 1] : null;
    const badge = $('page-views-last');
    badge.textContent = '';
    badge.append('this minute ');
    const number = el('b');
    setNumber(number, last ? last.value : null, 0);
    badge.append(number);
    const missing = points.filter((p) => p.source === 'unavailable').length;
    if (missing) problem('panel-page-views', `${missing} minute(s) unavailable`);
    if (state.charts.pageViews) {
      // no data in a minute the speed view covers means nothing happened: zero, not a gap
      const ys = points.map((p) => (p.value === null && p.source !== 'unavailable' ? 0 : p.value));
      state.charts.pageViews.plot.setData([points.map((p) => Date.parse(p.start) / 1000), ys]);
    }
  }

  function renderRevenue(series) {
    const points = series.points || [];
    noteDegraded('panel-revenue', series);
    renderSeriesTable('table-revenue', 'revenue', points, 2);
    const known = points.filter((p) => p.value !== null);
    setNumber($('revenue-total'), known.length ? known.reduce((sum, p) => sum + p.value, 0) : null, 2);
    const missing = points.filter((p) => p.source === 'unavailable').length;
    if (missing) problem('panel-revenue', `${missing} hour(s) unavailable`);
    const chart = state.charts.revenue;
    if (chart) {
      const xs = points.map((p) => Date.parse(p.start) / 1000 + 1800);  // bars centred in their hour
      const only = (source) => points.map((p) => (p.source === source ? p.value : null));
      chart.boundary = series.watermark ? Date.parse(series.watermark) / 1000 + 3600 : null;
      chart.unavailable = xs.filter((_, i) => points[i].source === 'unavailable');
      chart.plot.setData([xs, only('batch'), only('speed'), only('mixed')]);
    }
  }

  function renderTop(tbodyId, prefix, trending) {
    const items = trending.items || [];
    const max = Math.max(1, ...items.map((i) => i.score || 0));
    const rows = items.map((item, i) => el('tr', {}, [
      el('td', { class: 'rank-n', text: String(i + 1) }),
      el('td', { 'data-testid': `${prefix}-${i}-product`, text: item.product_id }),
      el('td', { class: 'bar-cell' }, [el('span', { class: 'bar', style: `width:${(100 * item.score) / max}%` })]),
      numberCell(`${prefix}-${i}-score`, item.score, 0),
    ]));
    if (!rows.length) rows.push(el('tr', {}, [el('td', { class: 'empty', colspan: '4', text: 'nothing in the last 15 min' })]));
    $(tbodyId).replaceChildren(...rows);
    if (trending.source === 'unavailable') problem('panel-top', `trending by ${trending.by} unavailable`);
  }

  function renderFunnel(funnel) {
    const counts = Object.fromEntries((funnel.steps || []).map((s) => [s.step, s.count]));
    const first = counts[FUNNEL_STEPS[0]] || 0;
    const rows = FUNNEL_STEPS.map((step, i) => {
      const count = counts[step] ?? null;
      const previous = i ? counts[FUNNEL_STEPS[i - 1]] : null;
      const rate = i && previous ? count / previous : null;
      const rateCell = el('span', { class: 'rate', 'data-testid': `funnel-${step}-rate` });
      if (rate !== null) { rateCell.textContent = `${fmt(100 * rate, 1)}%`; rateCell.dataset.value = String(rate); }
      const countCell = el('span', { class: 'num', 'data-testid': `funnel-${step}` });
      setNumber(countCell, count, 0);
      return el('div', { class: 'step' }, [
        el('span', { class: 'step-name', text: step }),
        el('span', { class: 'bar-cell' }, [el('span', { class: 'bar', style: `width:${first ? (100 * (count || 0)) / first : 0}%` })]),
        countCell,
        rateCell,
      ]);
    });
    $('funnel').replaceChildren(...rows);
    const sources = funnel.sources || [];
    $('funnel-sources').textContent = sources.join(' + ') || '—';
    noteDegraded('panel-funnel', funnel);
    if (sources.includes('unavailable')) problem('panel-funnel', 'some hours unavailable');
  }

  function renderAlerts(payload) {
    const alerts = payload.alerts || [];
    setNumber($('alerts-count'), alerts.length, 0);
    const items = alerts.map((alert, i) => {
      const amount = el('span', { class: 'num', 'data-testid': `alert-${i}-amount` });
      setNumber(amount, alert.amount ?? null, 2);
      const score = el('span', { class: 'num', 'data-testid': `alert-${i}-score` });
      setNumber(score, alert.score ?? null, 2);
      return el('li', { class: `alert ${alert.type}` }, [
        el('div', { class: 'alert-head' }, [
          el('span', { class: 'time', text: shortTime(alert.ts, true) }),
          el('span', { class: `badge ${alert.type}`, 'data-testid': `alert-${i}-type`, text: alert.type }),
          el('span', { 'data-testid': `alert-${i}-user`, text: alert.user_id || '' }),
          el('span', {}, ['amount ', amount]),
          el('span', {}, ['score ', score]),
        ]),
        el('div', { class: 'reasons', text: (alert.reasons || []).join('; ') }),
      ]);
    });
    if (!items.length) items.push(el('li', { class: 'empty', text: 'no alerts' }));
    $('alerts').replaceChildren(...items);
    noteDegraded('panel-alerts', payload);
  }

  function renderProblems() {
    const list = $('degraded-list');
    list.replaceChildren(...state.problems.map((text) => el('li', { text })));
    $('degraded').hidden = state.problems.length === 0;
  }

  // --- the refresh loop ---------------------------------------------------------------------------
  const PANELS = [
    ['status', () => api('/v1/status'), renderStatus],
    ['panel-active', () => api('/v1/active-users'), renderActiveUsers],
    ['panel-page-views', (now) => {
      const minute = Math.floor(now / MINUTE) * MINUTE;
      return api('/v1/metrics/page_views', { start: iso(minute - 59 * MINUTE), end: iso(minute + MINUTE), granularity: 'minute' });
    }, renderPageViews],
    ['panel-revenue', (now) => {
      const hour = Math.floor(now / HOUR) * HOUR;
      return api('/v1/metrics/revenue', { start: iso(hour - 23 * HOUR), end: iso(hour + HOUR), granularity: 'hour' });
    }, renderRevenue],
    ['panel-top', () => api('/v1/trending', { window: '15m', by: 'views', k: 10 }), (t) => renderTop('top-views', 'top-views', t)],
    ['panel-top', () => api('/v1/trending', { window: '15m', by: 'purchases', k: 10 }), (t) => renderTop('top-purchases', 'top-purchases', t)],
    ['panel-funnel', (now) => {
      const day = Math.floor(now / DAY) * DAY;
      return api('/v1/funnel', { start: iso(day), end: iso(day + DAY) });
    }, renderFunnel],
    ['panel-alerts', () => api('/v1/alerts', { limit: 20 }), renderAlerts],
  ];

  async function refresh() {
    const now = Date.now();
    const results = await Promise.allSettled(PANELS.map(([, load]) => load(now)));
    state.problems = [];
    document.querySelectorAll('.degraded').forEach((node) => node.classList.remove('degraded'));
    let unauthorized = false;
    results.forEach((result, i) => {
      const [panel, , render] = PANELS[i];
      if (result.status === 'rejected') {
        unauthorized = unauthorized || result.reason.status === 401;
        problem(panel, result.reason.message);
        return;
      }
      try {
        render(result.value);
      } catch (err) {  // an answer the page does not understand: say so, keep the other panels
        problem(panel, `cannot show the answer: ${err.message}`);
      }
    });
    if (unauthorized) {  // one message, not one per panel
      state.problems = ['read key rejected (HTTP 401): open the page with ?key=<a valid read key>'];
      $('no-key').hidden = false;
      $('no-key').querySelector('b').textContent = 'Read key rejected.';
    } else {
      $('no-key').hidden = true;
    }
    state.lastError = state.problems.length ? state.problems.join('\n') : null;
    renderProblems();
    state.refreshes += 1;
    state.updatedAt = now;
    $('updated').textContent = new Date(now).toISOString().slice(11, 19) + ' UTC';
  }

  async function loop() {
    try {
      await refresh();
    } catch (err) {
      state.lastError = String(err);
      window.__error = state.lastError;
    }
    setTimeout(loop, REFRESH_MS);
  }

  function start() {
    state.vendorMissing = window.__vendorMissing || typeof window.uPlot !== 'function';
    if (state.vendorMissing) {
      $('vendor-missing').hidden = false;
      for (const id of ['chart-page-views', 'chart-revenue']) {
        $(id).replaceChildren(el('p', { class: 'empty', text: 'chart library missing: the data are in the table below' }));
        $(id).classList.add('missing');
      }
      for (const id of ['data-page-views', 'data-revenue']) $(id).open = true;
    }
    state.key = readKey();
    if (!state.key) {
      $('no-key').hidden = false;
      $('no-key-example').textContent = `${location.origin}/?key=<read key>`;
      $('panels').classList.add('idle');
      window.__ready = true;
      return;
    }
    ensureCharts();
    window.__ready = true;  // started; dashboard.refreshes counts the answers shown since
    loop();
  }

  start();
}());
