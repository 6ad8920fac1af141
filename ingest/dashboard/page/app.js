// Sluice live dashboard: plain browser JavaScript, no build step. Everything it shows arrives over
// the WebSocket /dashboard/stream (an `init` frame, then one `tick` frame per second); it never
// polls. Event data is untrusted: it only ever goes into the DOM as textContent.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const SERIES_SECONDS = 15 * 60;
  const state = {
    tail: [],
    tailSize: 200,
    breakdown: 'today',
    last: null,
    paused: false,
    data: [[], [], [], [], []],
    chart: null,
  };

  const nf = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const nf1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
  const num = (x) => (x === null || x === undefined || Number.isNaN(x) ? '–' : nf.format(x));
  const rate = (x) => (x === null || x === undefined ? '–' : x < 10 ? nf1.format(x) : nf.format(x));
  const pct = (x) => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(x < 0.1 ? 2 : 1)} %`);
  const secs = (x) => {
    if (x === null || x === undefined) return '–';
    if (x < 120) return `${nf1.format(x)} s`;
    if (x < 7200) return `${nf1.format(x / 60)} min`;
    return `${nf1.format(x / 3600)} h`;
  };
  const hhmm = (ms) => new Date(ms).toISOString().slice(11, 16);

  function set(el, value, text) {
    if (!el) return;
    el.dataset.value = value === null || value === undefined ? '' : String(value);
    el.textContent = text;
  }

  // ── chart ────────────────────────────────────────────────────────────────────────────────
  function makeChart() {
    const el = $('chart');
    const width = Math.max(280, el.clientWidth);
    const opts = {
      width,
      height: 220,
      scales: { x: { time: true } },
      axes: [{ stroke: 'currentColor' }, { stroke: 'currentColor', size: 56 }],
      series: [
        {},
        { label: 'acked/s', stroke: '#3b82f6', width: 2 },
        { label: 'processed/s', stroke: '#10b981', width: 2 },
        { label: 'committed/s', stroke: '#f59e0b', width: 1.5 },
        { label: 'invalid/s', stroke: '#ef4444', width: 1.5 },
      ],
    };
    state.chart = new uPlot(opts, state.data, el);
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(() => state.chart.setSize({ width: Math.max(280, el.clientWidth), height: 220 })).observe(el);
    }
  }

  function setSeries(s) {
    state.data = [s.t.slice(), s.acked.slice(), s.processed.slice(), s.committed.slice(), s.invalid.slice()];
    drawChart();
  }

  function addPoint(p) {
    const d = state.data;
    d[0].push(p.t);
    d[1].push(p.acked);
    d[2].push(p.processed);
    d[3].push(p.committed);
    d[4].push(p.invalid);
    const from = p.t - SERIES_SECONDS;
    let drop = 0;
    while (drop < d[0].length && d[0][drop] < from) drop++;
    if (drop > 0) for (const a of d) a.splice(0, drop);
    drawChart();
  }

  function drawChart() {
    if (!state.chart) return;
    state.chart.setData(state.data);
    $('chart').dataset.points = String(state.data[0].length);
  }

  // ── panels ───────────────────────────────────────────────────────────────────────────────
  function renderPipeline(f) {
    const e = f.engine;
    set($('rate-acked'), f.point.acked, rate(f.point.acked));
    set($('rate-processed'), f.point.processed, rate(f.point.processed));
    set($('rate-committed'), f.point.committed, rate(f.point.committed));
    set($('backlog'), e ? e.backlogEvents : null, e ? num(e.backlogEvents) : '–');
    set($('watermark-lag'), e ? e.watermarkLagSeconds : null, e ? secs(e.watermarkLagSeconds) : '–');
    set($('checkpoint-age'), e ? e.lastCheckpointAgeSeconds : null, e ? secs(e.lastCheckpointAgeSeconds) : '–');
    const t = f.totals;
    set($('total-acked'), t.acked, num(t.acked));
    set($('total-processed'), t.processed, num(t.processed));
    set($('total-committed'), t.committed, num(t.committed));
    set($('total-accepted'), t.accepted, num(t.accepted));
    set($('total-rejected'), t.rejected, num(t.rejected));
  }

  function renderWindow(id, w, engineHour) {
    const root = $(id);
    const field = (name) => root.querySelector(`[data-field="${name}"]`);
    field('start').textContent = id === 'w-hour' ? `${hhmm(w.start)}–${hhmm(w.start + 3600000)}` : new Date(w.start).toISOString().slice(0, 10);
    // The current hour's events, users, sessions and CTR are the engine's own (as in /v1/live) when it has this hour open.
    const eng = engineHour && Date.parse(engineHour.windowStart) === w.start ? engineHour : null;
    const events = eng ? eng.events : w.events;
    set(field('events'), events, num(events));
    const users = eng ? eng.activeUsers : w.activeUsers;
    set(field('activeUsers'), users, eng ? num(users) : `≈ ${num(users)}`);
    set(field('sessions'), w.sessions, num(w.sessions));
    set(field('screenViews'), w.screenViews, num(w.screenViews));
    set(field('installs'), w.installs, num(w.installs));
    const ctr = eng ? eng.notificationCtr : w.notificationCtr;
    set(field('notificationCtr'), ctr, pct(ctr));
    set(field('bounceRate'), w.bounceRate, w.bounceRate === null ? 'n/a' : pct(w.bounceRate));
  }

  function renderBreakdown(f) {
    const w = f.windows[state.breakdown];
    for (const dim of ['device_type', 'app_version', 'country']) {
      const body = $(`bd-${dim}`).tBodies[0];
      const rows = w.breakdown[dim];
      const total = rows.reduce((s, r) => s + r[1], 0) || 1;
      body.replaceChildren(
        ...rows.map(([value, n]) => {
          const tr = document.createElement('tr');
          const name = document.createElement('td');
          name.textContent = value;
          const count = document.createElement('td');
          count.textContent = num(n);
          count.dataset.value = String(n);
          const bar = document.createElement('td');
          bar.className = 'bar';
          const fill = document.createElement('span');
          fill.style.width = `${Math.round((n / total) * 100)}%`;
          bar.append(fill);
          tr.append(name, count, bar);
          return tr;
        }),
      );
    }
  }

  const QUALITY = [
    ['invalid', 'invalidRate', 'invalid_rate'],
    ['late', 'lateRate', 'late_rate'],
    ['duplicate', 'duplicateRate', 'duplicate_rate'],
    ['too_late', 'tooLateRate', 'too_late_rate'],
  ];

  function renderQuality(f) {
    $('q-window').textContent = `last ${f.quality.windowSeconds} s, ${num(f.quality.received)} events received`;
    for (const [id, key, rule] of QUALITY) {
      const card = $(`q-${id}`);
      const v = f.quality[key];
      set(card.querySelector('.value'), v, pct(v));
      const r = f.rules.find((x) => x.name === rule);
      card.querySelector('.hint').textContent = r ? `alert above ${pct(r.threshold)}` : '';
      card.classList.toggle('bad', Boolean(r && r.firing));
    }
    const body = $('rejects').tBodies[0];
    body.replaceChildren(
      ...f.quality.rejectedByCode.map((r) => {
        const tr = document.createElement('tr');
        tr.dataset.code = r.code;
        for (const [text, value] of [
          [r.code, null],
          [num(r.window), r.window],
          [num(r.total), r.total],
        ]) {
          const td = document.createElement('td');
          td.textContent = text;
          if (value !== null) td.dataset.value = String(value);
          tr.append(td);
        }
        return tr;
      }),
    );
  }

  function renderAlerts(f) {
    const box = $('alerts');
    box.replaceChildren(
      ...f.alerts.map((a) => {
        const div = document.createElement('div');
        div.className = 'alert';
        div.dataset.alert = a.name;
        const b = document.createElement('b');
        b.textContent = a.name.replace(/_/g, ' ');
        const span = document.createElement('span');
        span.textContent = ` ${a.message} — since ${new Date(a.since).toISOString().slice(11, 19)} UTC`;
        div.append(b, span);
        return div;
      }),
    );
  }

  // ── tail ─────────────────────────────────────────────────────────────────────────────────
  function addTail(entries, replace) {
    if (replace) state.tail = [];
    for (const e of entries) state.tail.push(e);
    if (state.tail.length > state.tailSize) state.tail.splice(0, state.tail.length - state.tailSize);
  }

  function renderTail() {
    if (state.paused) return;
    const type = $('f-type').value.trim();
    const user = $('f-user').value.trim();
    const rows = [];
    const types = new Set();
    for (let i = state.tail.length - 1; i >= 0; i--) {
      const e = state.tail[i];
      types.add(e.type);
      if (type && e.type !== type) continue;
      if (user && !e.user.includes(user)) continue;
      const tr = document.createElement('tr');
      tr.dataset.type = e.type;
      tr.dataset.user = e.user;
      for (const text of [new Date(e.eventTime).toISOString().slice(11, 23), e.type, e.user, e.device ?? '', e.version ?? '', e.country ?? '', e.properties ?? '']) {
        const td = document.createElement('td');
        td.textContent = text;
        tr.append(td);
      }
      rows.push(tr);
    }
    $('tail').tBodies[0].replaceChildren(...rows);
    const list = $('types');
    if (list.childElementCount !== types.size) {
      list.replaceChildren(
        ...[...types].sort().map((t) => {
          const o = document.createElement('option');
          o.value = t;
          return o;
        }),
      );
    }
  }

  // ── frames ───────────────────────────────────────────────────────────────────────────────
  function render(f) {
    state.last = f;
    renderPipeline(f);
    const eh = f.engine ? f.engine.currentHour : null;
    renderWindow('w-hour', f.windows.hour, eh);
    renderWindow('w-today', f.windows.today, null);
    const since = f.windows.today.sessionsSince;
    $('eng-note').textContent =
      'Current-hour events, users, sessions and CTR are the engine’s (deduplicated, as in /v1/live); installs, screen views and today’s users (≈, HyperLogLog) are counted at ingest before deduplication. ' +
      (since ? `Today’s sessions are counted since this server started (${hhmm(since)} UTC). ` : '') +
      'Today’s bounce rate is the engine’s, over today’s sessions that have closed (as gold daily_metrics); the hour has none.';
    renderBreakdown(f);
    renderQuality(f);
    renderAlerts(f);
    renderTail();
    // An engine that has not reported yet (recovering after a start): the figures below are not its own yet.
    const starting = f.hasEngine && f.engine === null;
    $('status').dataset.state = starting ? 'starting' : 'live';
    $('status-text').textContent = `${starting ? 'engine starting — figures not in yet' : 'live'} · ${new Date(f.time).toISOString().slice(11, 19)} UTC · ${f.clients} viewer${f.clients === 1 ? '' : 's'}`;
    document.body.dataset.seq = String(f.seq);
  }

  function onFrame(f) {
    if (f.kind === 'init') {
      state.tailSize = f.config.tailSize;
      setSeries(f.series);
      addTail(f.tail, true);
    } else {
      if (f.seq !== (state.last ? state.last.seq + 1 : f.seq)) {
        // A gap (e.g. the tab slept): ask for the whole state again.
        send({ type: 'resync' });
      }
      addPoint(f.point);
      addTail(f.tail, false);
    }
    render(f);
  }

  let socket = null;
  let retryMs = 500;
  function send(msg) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(msg));
  }

  function connect() {
    const status = $('status');
    socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/dashboard/stream`);
    socket.onopen = () => {
      retryMs = 500;
      status.dataset.state = 'live';
    };
    socket.onmessage = (m) => {
      try {
        onFrame(JSON.parse(m.data));
      } catch (err) {
        console.error('bad frame', err);
      }
    };
    socket.onclose = () => {
      status.dataset.state = 'down';
      $('status-text').textContent = `disconnected — retrying in ${Math.round(retryMs / 1000)} s`;
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  }

  function init() {
    makeChart();
    $('bd-today').onclick = () => pick('today');
    $('bd-hour').onclick = () => pick('hour');
    $('f-type').oninput = renderTail;
    $('f-user').oninput = renderTail;
    $('f-pause').onclick = () => {
      state.paused = !state.paused;
      $('f-pause').setAttribute('aria-pressed', String(state.paused));
      $('f-pause').textContent = state.paused ? 'resume' : 'pause';
      renderTail();
    };
    connect();
  }

  function pick(which) {
    state.breakdown = which;
    $('bd-today').setAttribute('aria-pressed', String(which === 'today'));
    $('bd-hour').setAttribute('aria-pressed', String(which === 'hour'));
    if (state.last) renderBreakdown(state.last);
  }

  init();
})();
