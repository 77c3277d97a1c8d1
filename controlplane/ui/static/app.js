// The praas dashboard. It reads the control plane's REST API with fetch()
// and follows GET /v1/events as a server-sent event stream (read through
// fetch, so the key goes in a header, never in a URL); the lists are read
// again every few seconds as well, quickly while the stream is down.
'use strict';

(() => {
  const TOKEN_KEY = 'praas.token';
  const POLL_LIVE_MS = 10000; // the stream brings changes; this catches other replicas'
  const POLL_DOWN_MS = 3000;
  const MAX_EVENTS = 200;
  const MAX_SAMPLES = 60;
  const SWAP_TYPES = new Set(['process.swapped_out', 'process.swapped_in', 'process.restored',
    'process.failed', 'process.taken_over']);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    apps: [],                 // from GET /v1/apps
    procs: new Map(),         // app → processes
    usage: new Map(),         // app → GET /v1/apps/{app}/usage answer, where served
    usageServed: true,        // false once the route answered 404
    samples: new Map(),       // app → [{t, invocations}] for the rate chart
    events: [],               // newest last
    lastSeq: 0,
    streamUp: false,
    following: false,         // follow() runs
    polling: false,           // poll() runs
  };

  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {}

  // --- API -----------------------------------------------------------------

  async function api(path, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    const resp = await fetch(path, Object.assign({}, opts, { headers, cache: 'no-store', credentials: 'omit' }));
    if (resp.status === 401) {
      askForKey(state.token ? 'The key was refused.' : '');
      throw new AuthError('unauthenticated');
    }
    return resp;
  }

  async function getJSON(path) {
    const resp = await api(path);
    if (!resp.ok) {
      let msg = resp.status + ' ' + resp.statusText;
      try { msg = (await resp.json()).error || msg; } catch (_) { /* not JSON */ }
      const err = new Error(path + ': ' + msg);
      err.status = resp.status;
      throw err;
    }
    return resp.json();
  }

  const enc = encodeURIComponent;

  // --- key -----------------------------------------------------------------

  function askForKey(why) {
    state.streamUp = false;
    $('main').hidden = true;
    $('login').hidden = false;
    $('forget').hidden = true;
    $('login-error').textContent = why || '';
    $('key').focus();
  }

  function onLogin(ev) {
    ev.preventDefault();
    state.token = $('key').value.trim();
    $('key').value = '';
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $('login').hidden = true;
    start();
  }

  function forgetKey() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    location.reload();
  }

  // --- reading the lists -----------------------------------------------------

  async function refreshAll() {
    try {
      const [{ apps }] = await Promise.all([getJSON('/v1/apps'), refreshPlatform()]);
      state.apps = apps;
      const names = new Set(apps.map((a) => a.name));
      for (const name of [...state.procs.keys()]) {
        if (!names.has(name)) { state.procs.delete(name); state.usage.delete(name); state.samples.delete(name); }
      }
      await Promise.all(apps.map((a) => refreshApp(a.name, false)));
      showError('');
      showMain();
      render();
    } catch (err) {
      if (!(err instanceof AuthError)) showError(err.message);
    }
  }

  async function refreshApp(name, draw = true) {
    try {
      const { processes } = await getJSON('/v1/apps/' + enc(name) + '/processes');
      state.procs.set(name, processes);
      sample(name, processes);
      if (state.usageServed) {
        try {
          state.usage.set(name, await getJSON('/v1/apps/' + enc(name) + '/usage'));
        } catch (err) {
          if (err.status === 404 && /no route/.test(err.message)) state.usageServed = false;
        }
      }
    } catch (err) {
      if (err.status === 404) state.procs.delete(name); // deleted meanwhile
      else throw err;
    }
    if (draw) render();
  }

  async function refreshPlatform() {
    try {
      renderPlatform(await getJSON('/v1/status'));
    } catch (err) {
      if (err instanceof AuthError) throw err;
      renderPlatform(null, err.message);
    }
  }

  // sample keeps the app's total invocations over time, for the rate chart.
  function sample(name, processes) {
    const total = processes.reduce((n, p) => n + ((p.usage && p.usage.invocations) || 0), 0);
    const s = state.samples.get(name) || [];
    s.push({ t: Date.now(), invocations: total });
    if (s.length > MAX_SAMPLES) s.shift();
    state.samples.set(name, s);
  }

  // --- events ------------------------------------------------------------------

  async function loadEvents() {
    try {
      const { events } = await getJSON('/v1/events?limit=' + MAX_EVENTS);
      state.events = events;
      if (events.length) state.lastSeq = events[events.length - 1].seq;
      renderEvents();
    } catch (err) {
      if (!(err instanceof AuthError)) showError(err.message);
    }
  }

  // follow reads the event stream for as long as the page is open, and
  // reconnects (catching up with Last-Event-ID) when it breaks.
  async function follow() {
    let backoff = 1000;
    for (;;) {
      try {
        const headers = { Accept: 'text/event-stream' };
        if (state.lastSeq) headers['Last-Event-ID'] = String(state.lastSeq);
        const resp = await api('/v1/events', { headers });
        if (!resp.ok || !resp.body) throw new Error('event stream: ' + resp.status);
        setStream(true);
        backoff = 1000;
        await readSSE(resp.body, onEvent);
      } catch (err) {
        if (err instanceof AuthError) return;
      }
      setStream(false);
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 15000);
    }
  }

  // readSSE parses a text/event-stream body: blocks separated by a blank
  // line, "id:" and "data:" fields, ":" comments.
  async function readSSE(body, handle) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (data.length) {
          try { handle(JSON.parse(data.join('\n'))); } catch (_) { /* not an event of ours */ }
        }
      }
    }
  }

  const refreshTimers = new Map();

  function onEvent(e) {
    state.lastSeq = Math.max(state.lastSeq, e.seq || 0);
    state.events.push(e);
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
    // Show the new status at once; the record follows shortly.
    if (e.pid && e.status) {
      const procs = state.procs.get(e.app);
      const p = procs && procs.find((q) => q.pid === e.pid);
      if (p) {
        p.status = e.status;
        if (e.generation) p.generation = Math.max(p.generation || 0, e.generation);
        if (e.status !== 'active') {
          // What only a running process has goes with it.
          p.address = '';
          delete p.state_bytes;
          delete p.mailbox_messages;
          delete p.mailbox_bytes;
        }
        if (e.type === 'process.swapped_out' && e.bytes) p.snapshot_bytes = e.bytes;
      }
    }
    render();
    renderEvents();
    const key = e.type.startsWith('app.') ? '' : e.app;
    if (!refreshTimers.has(key)) {
      refreshTimers.set(key, setTimeout(() => {
        refreshTimers.delete(key);
        (key === '' ? refreshAll() : refreshApp(key).catch(() => {})).then(() => refreshPlatform().catch(() => {}));
      }, 250));
    }
  }

  function setStream(up) {
    state.streamUp = up;
    document.body.dataset.stream = up ? 'live' : 'polling';
    $('stream').textContent = up ? 'live' : 'polling';
  }

  async function poll() {
    for (;;) {
      await sleep(state.streamUp ? POLL_LIVE_MS : POLL_DOWN_MS);
      if (!$('login').hidden) continue;
      await refreshAll();
    }
  }

  // --- rendering -----------------------------------------------------------------

  // h makes an element: h('td', {class: 'num'}, 'text', child, ...).
  function h(tag, attrs, ...children) {
    const el = tag.startsWith('svg:')
      ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('data-')) el.dataset[k.slice(5).replace(/-(.)/g, (_, c) => c.toUpperCase())] = v;
      else el.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function showMain() {
    $('main').hidden = false;
    $('login').hidden = true;
    $('forget').hidden = !state.token;
  }

  function showError(msg) {
    $('error').hidden = !msg;
    $('error').textContent = msg;
  }

  function renderPlatform(st, err) {
    const el = $('platform');
    if (!st) {
      el.replaceChildren(h('span', { class: 'bad' }, 'status unavailable: ' + err));
      return;
    }
    const live = st.replicas.filter((r) => r.live).length;
    const byStatus = Object.entries(st.processes).sort().map(([k, v]) => v + ' ' + k).join(', ');
    const storeSpan = (name, s) => !s.configured
      ? h('span', {}, name + ': none')
      : h('span', { class: s.healthy ? 'good' : 'bad', title: s.error || fmtDuration(s.latency_ns) },
        name + ': ' + (s.healthy ? 'ok' : 'unhealthy'));
    el.replaceChildren(
      h('span', { title: st.replicas.map((r) => r.id + ' ' + r.url + (r.live ? '' : ' (expired)')).join('\n') },
        live + ' control plane' + (live === 1 ? '' : 's')),
      h('span', {}, st.apps + ' app' + (st.apps === 1 ? '' : 's')),
      h('span', {}, st.total_processes + ' process' + (st.total_processes === 1 ? '' : 'es') + (byStatus ? ' (' + byStatus + ')' : '')),
      storeSpan('metadata', st.metadata_store),
      storeSpan('swap', st.swap_store),
      h('span', { title: 'replica ' + st.replica }, 'version ' + st.version));
  }

  function render() {
    const apps = state.apps;
    $('apps-count').textContent = '(' + apps.length + ')';
    if (!apps.length) {
      $('apps').replaceChildren(h('p', { class: 'empty' }, 'No applications yet: praas app create NAME'));
      return;
    }
    $('apps').replaceChildren(...apps.map(renderApp));
  }

  function renderApp(app) {
    const procs = state.procs.get(app.name) || [];
    const counts = {};
    for (const p of procs) counts[p.status] = (counts[p.status] || 0) + 1;
    const summary = Object.entries(counts).sort().map(([k, v]) => v + ' ' + k).join(', ');
    return h('article', { class: 'app', 'data-app': app.name },
      h('div', { class: 'app-head' },
        h('h3', {}, app.name),
        h('span', { class: 'meta' }, 'image ' + app.image),
        h('span', { class: 'meta' }, procs.length + ' process' + (procs.length === 1 ? '' : 'es') + (summary ? ': ' + summary : ''))),
      renderUsage(state.usage.get(app.name)),
      procs.length ? renderProcesses(app.name, procs) : h('p', { class: 'empty' }, 'No processes.'),
      procs.length ? renderCharts(app.name, procs) : null);
  }

  // renderUsage is the app's billed usage since its creation, from
  // GET /v1/apps/{app}/usage (absent from control planes without it).
  function renderUsage(u) {
    if (!u || !u.totals) return null;
    const t = u.totals;
    const item = (label, value) => h('span', { class: 'usage-item' }, h('span', { class: 'label' }, label), ' ', value);
    return h('div', { class: 'usage', title: 'billed usage since the app was created (GET /v1/apps/{app}/usage)' },
      item('invocations', fmtCount(t.invocations || 0)),
      item('compute', fmtDuration(t.compute_ns || 0)),
      item('state', fmtGiBs(t.state_gib_seconds || 0)),
      item('in / out', fmtBytes(t.bytes_in || 0) + ' / ' + fmtBytes(t.bytes_out || 0)),
      item('swap held', fmtBytes(t.swap_bytes_held || 0)),
      item('swap', fmtGiBs(t.swap_gib_seconds || 0)));
  }

  // usageRows are the per-process figures the charts draw: the usage
  // route's when the control plane serves it, else the records' counters.
  function usageRows(app, procs) {
    const u = state.usage.get(app);
    if (u && Array.isArray(u.processes)) {
      return u.processes.map((r) => ({ pid: r.pid, invocations: r.invocations || 0, busy: r.compute_ns || 0 }));
    }
    return procs.map((p) => ({ pid: p.pid, invocations: (p.usage && p.usage.invocations) || 0, busy: (p.usage && p.usage.busy_ns) || 0 }));
  }

  function renderProcesses(app, procs) {
    const head = h('tr', {},
      h('th', {}, 'PID'), h('th', {}, 'Status'), h('th', {}, 'Address'), h('th', { class: 'num' }, 'Gen.'),
      h('th', { class: 'num' }, 'State'), h('th', { class: 'num' }, 'Mailbox'), h('th', {}, 'Last activity'),
      h('th', { class: 'num' }, 'Invocations'), h('th', { class: 'num' }, 'Busy'), h('th', { class: 'num' }, 'In / out'));
    const rows = procs.map((p) => {
      const u = p.usage || {};
      return h('tr', { 'data-pid': p.pid, 'data-status': p.status },
        h('td', {}, p.pid),
        h('td', {}, h('span', { class: 'status status-' + p.status }, p.status)),
        h('td', { class: 'addr' }, p.address || '–'),
        h('td', { class: 'num' }, p.generation || 0),
        h('td', { class: 'num', title: stateTitle(p) }, fmtBytesOrDash(stateBytes(p))),
        h('td', { class: 'num', title: typeof p.mailbox_bytes === 'number' ? fmtBytes(p.mailbox_bytes) : '' }, mailboxDepth(p)),
        h('td', { title: p.last_active || '' }, fmtAgo(p.last_active)),
        h('td', { class: 'num' }, fmtCount(u.invocations || 0)),
        h('td', { class: 'num' }, fmtDuration(u.busy_ns || 0)),
        h('td', { class: 'num' }, fmtBytes(u.bytes_in || 0) + ' / ' + fmtBytes(u.bytes_out || 0)));
    });
    return h('div', { class: 'table-wrap' }, h('table', {}, h('thead', {}, head), h('tbody', {}, rows)));
  }

  // The state's size as the record has it: a size the process reports, or
  // that of its last snapshot.
  function stateBytes(p) {
    if (typeof p.state_bytes === 'number') return p.state_bytes;
    if (typeof p.snapshot_bytes === 'number') return p.snapshot_bytes;
    return null;
  }

  function stateTitle(p) {
    return typeof p.state_bytes === 'number' ? 'state size (keys and values)' : 'size of the last snapshot';
  }

  // mailboxDepth is the unread messages of an active process, as its owner
  // replica reports them.
  function mailboxDepth(p) {
    return typeof p.mailbox_messages === 'number' ? fmtCount(p.mailbox_messages) : '–';
  }

  // --- charts (inline SVG) ----------------------------------------------------------

  function renderCharts(app, procs) {
    const rows = usageRows(app, procs);
    return h('div', { class: 'charts' },
      barChart('Invocations per process', rows.map((r) => [r.pid, r.invocations]), fmtCount, 'bar'),
      barChart('Compute time per process', rows.map((r) => [r.pid, r.busy]), fmtDuration, 'bar-busy'),
      rateChart(state.samples.get(app) || []));
  }

  function barChart(title, data, fmt, cls) {
    const shown = data.slice(0, 24);
    const pitch = 44;
    const w = Math.max(160, shown.length * pitch + 10), hgt = 110, base = 90;
    const max = Math.max(1, ...shown.map(([, v]) => v));
    const svg = h('svg:svg', { width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: 'img', 'aria-label': title });
    svg.append(h('svg:line', { class: 'axis', x1: 0, y1: base, x2: w, y2: base }));
    shown.forEach(([label, v], i) => {
      const bh = Math.round((v / max) * 70), x = 8 + i * pitch;
      svg.append(h('svg:rect', { class: cls, x: x + 4, y: base - bh, width: 24, height: Math.max(bh, v > 0 ? 1 : 0) },
        h('svg:title', {}, label + ': ' + fmt(v))));
      svg.append(h('svg:text', { x: x + 16, y: base - bh - 3, 'text-anchor': 'middle' }, fmt(v)));
      svg.append(h('svg:text', { x: x + 16, y: base + 13, 'text-anchor': 'middle' }, label.length > 7 ? label.slice(0, 6) + '…' : label));
    });
    return h('figure', { class: 'chart' }, h('h3', {}, title + (data.length > shown.length ? ' (first 24)' : '')), svg);
  }

  function rateChart(samples) {
    const w = 220, hgt = 110, base = 90;
    const rates = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = (samples[i].t - samples[i - 1].t) / 1000;
      const dn = samples[i].invocations - samples[i - 1].invocations;
      if (dt > 0) rates.push(Math.max(0, dn / dt));
    }
    const svg = h('svg:svg', { width: w, height: hgt, viewBox: `0 0 ${w} ${hgt}`, role: 'img', 'aria-label': 'invocations per second' });
    svg.append(h('svg:line', { class: 'axis', x1: 0, y1: base, x2: w, y2: base }));
    if (rates.length >= 2) {
      const max = Math.max(1e-9, ...rates);
      const pts = rates.map((r, i) => `${(i / (rates.length - 1)) * (w - 10) + 5},${base - (r / max) * 70}`);
      svg.append(h('svg:polyline', { class: 'line', points: pts.join(' ') }));
      svg.append(h('svg:text', { x: 5, y: 12 }, 'max ' + max.toFixed(max < 10 ? 2 : 0) + '/s'));
      svg.append(h('svg:text', { x: w - 5, y: 12, 'text-anchor': 'end' }, 'now ' + rates[rates.length - 1].toFixed(2) + '/s'));
    } else {
      svg.append(h('svg:text', { x: w / 2, y: base / 2, 'text-anchor': 'middle' }, 'collecting…'));
    }
    return h('figure', { class: 'chart' }, h('h3', {}, 'Invocations per second (since this page opened)'), svg);
  }

  // --- event lists ----------------------------------------------------------------------

  function renderEvents() {
    const newest = state.events.slice().reverse();
    const swaps = newest.filter((e) => SWAP_TYPES.has(e.type)).slice(0, 50);
    $('swaps').replaceChildren(...(swaps.length ? swaps.map(eventItem) : [h('li', { class: 'none' }, 'None yet.')]));
    $('events').replaceChildren(...(newest.length ? newest.slice(0, 100).map(eventItem) : [h('li', { class: 'none' }, 'None yet.')]));
  }

  function eventItem(e) {
    const cls = e.type === 'process.failed' ? 'ev-failed' : SWAP_TYPES.has(e.type) ? 'ev-swap' : '';
    const details = [];
    if (e.generation) details.push('gen ' + e.generation);
    if (e.bytes) details.push(fmtBytes(e.bytes));
    if (e.duration_ns) details.push(fmtDuration(e.duration_ns));
    return h('li', { class: cls, 'data-type': e.type, 'data-app': e.app, 'data-pid': e.pid || '' },
      h('span', { class: 'when', title: e.time + ' on ' + e.replica }, fmtTime(e.time)),
      h('span', { class: 'type' }, e.type.replace(/^(app|process)\./, '').replace('_', ' ')),
      ' ', e.app + (e.pid ? '/' + e.pid : ''),
      details.length ? ' (' + details.join(', ') + ')' : '',
      e.reason ? h('span', { class: 'reason' }, e.reason) : null);
  }

  // --- formatting ---------------------------------------------------------------------------

  function fmtBytes(n) {
    if (n < 1024) return n + ' B';
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let v = n, i = -1;
    do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
    return v.toFixed(v < 10 ? 1 : 0) + ' ' + units[i];
  }

  function fmtBytesOrDash(n) { return n === null ? '–' : fmtBytes(n); }

  function fmtCount(n) { return n.toLocaleString('en-US'); }

  function fmtGiBs(v) {
    if (!v) return '0 GiB·s';
    return (v < 0.01 ? v.toExponential(1) : v.toFixed(v < 10 ? 2 : 0)) + ' GiB·s';
  }

  function fmtDuration(ns) {
    if (!ns) return '0';
    const ms = ns / 1e6;
    if (ms < 1) return (ns / 1e3).toFixed(0) + ' µs';
    if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + ' ms';
    const s = ms / 1000;
    if (s < 120) return s.toFixed(s < 10 ? 2 : 1) + ' s';
    return (s / 60).toFixed(1) + ' min';
  }

  function fmtAgo(iso) {
    const t = Date.parse(iso || '');
    if (!t || t < Date.parse('2000-01-01T00:00:00Z')) return '–';
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return new Date(t).toISOString().slice(0, 10);
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? '' : d.toLocaleTimeString('en-GB', { hour12: false });
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // --- start -------------------------------------------------------------------------------------

  async function start() {
    await refreshAll();
    if (!$('login').hidden) return; // the key was refused: wait for another
    if (!state.following) {
      state.following = true;
      await loadEvents();
      follow().finally(() => { state.following = false; });
    }
    if (!state.polling) {
      state.polling = true;
      poll();
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', onLogin);
    $('forget').addEventListener('click', forgetKey);
    $('refresh').addEventListener('click', () => refreshAll());
    start();
  });
})();
