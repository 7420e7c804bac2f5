/* Warden operator page: asks for the API key once (localStorage: shared by this browser's
   tabs, kept across reloads until "Forget key"; never in a URL), reads and acts through
   the JSON API with X-API-Key / X-Tenant-ID headers, and renders with DOM calls only
   (textContent, never innerHTML): run inputs and outputs are untrusted data. Every time
   is written with its date and time zone. */
(() => {
  'use strict';
  const KEY = 'warden.apiKey', TENANT = 'warden.tenant';
  const FINAL = new Set(['succeeded', 'failed', 'denied', 'cancelled', 'timed_out']);
  // glyphs every DejaVu/Liberation install has; the status word always follows them
  const ICON = {retry_scheduled: '↻', pending: '○', running: '▶', waiting: '‖', blocked: '‖', succeeded: '✓', approved: '✓',
    failed: '✗', rejected: '✗', denied: '⊘', deny: '⊘', cancelled: '⊗', superseded: '↻',
    timed_out: '◷', expired: '◷', skipped: '↷', allow: '✓', allow_with_constraints: '✓',
    require_approval: '‖'};
  const $ = (sel) => document.querySelector(sel);

  // ------------------------------------------------------------------ DOM helpers
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    return fill(el, attrs, kids);
  }
  function svg(tag, attrs, ...kids) {
    return fill(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, kids);
  }
  function fill(el, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k === 'cls' ? 'class' : k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid !== null && kid !== undefined && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }
  const dash = () => h('span', {cls: 'muted', 'aria-label': 'none'}, '—');
  function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
  function rows(tbody, list, render, empty) {
    tbody.replaceChildren(...(list.length ? list.map(render)
      : [h('tr', {cls: 'empty'}, h('td', {colspan: 20}, empty))]));
  }
  const td = (...kids) => h('td', {}, ...kids);

  // ------------------------------------------------------------------ formatting
  function badge(status, extra) {
    return h('span', {cls: `status s-${status}`},
      h('span', {'aria-hidden': 'true'}, ICON[status] || '•'), status, extra ? ` · ${extra}` : '');
  }
  /* A pending approval is someone's to-do: drawn like a waiting step. */
  const approvalBadge = (status) => {
    const b = badge(status); if (status === 'pending') b.classList.add('s-asks'); return b;
  };
  /* "Type: message" of an error document, the whole document behind it. */
  function errorText(err, said) {  // said: the server's one line for it (a step's note)
    if (!err) return dash();
    const text = err.message || err.reason;
    if (!text && !said) return json(err, 'error');
    const line = said || `${err.type ? `${err.type}: ` : ''}${text}`;
    return h('details', {}, h('summary', {cls: 'err'}, line.length > 140 ? line.slice(0, 139) + '…' : line),
      h('pre', {}, JSON.stringify(err, null, 2)));
  }
  function copyButton(value, what) {
    const b = h('button', {type: 'button', cls: 'copy', title: `Copy ${what}`, 'aria-label': `Copy ${what}`}, 'copy');
    b.addEventListener('click', async () => {
      try { await navigator.clipboard.writeText(value); } catch (e) {
        const t = h('textarea', {}, value); document.body.append(t); t.select();
        document.execCommand('copy'); t.remove();
      }
      b.textContent = 'copied'; setTimeout(() => { b.textContent = 'copy'; }, 1500);
    });
    return b;
  }
  function shortId(full, n = 8) { return full.length > n + 1 ? full.slice(0, n) + '…' : full; }
  // a for_each step's items (counts, then each with its attempts) and a workflow step's
  // child runs (docs/operating.md#for_each-items-and-child-runs)
  function flowCell(s) {
    const parts = [];
    if (s.items) {
      const counts = Object.entries(s.items.by_status).map(([k, n]) => `${n} ${k}`).join(', ');
      parts.push(h('details', {cls: 'small items'}, h('summary', {}, `${s.items.total} items: ${counts}`),
        h('ul', {}, s.items.list.map((i) => h('li', {}, `[${i.item_index}] `, badge(i.status),
          ` attempts ${i.attempts} `, i.job_id ? h('code', {}, jobLabel(i.job_id)) : null,
          i.child_run_id ? h('a', {href: `/ui/runs/${i.child_run_id}`}, shortId(i.child_run_id)) : null,
          i.error ? h('div', {cls: 'error'}, i.error) : null)))));
    }
    if (s.children && !s.items) {
      parts.push(h('div', {cls: 'small children'}, 'child run ', s.children.map((c, i) => [i ? ', ' : '',
        h('a', {href: `/ui/runs/${c.run_id}`}, shortId(c.run_id)), ' ', badge(c.status)])));
    }
    return parts;
  }
  function jobLabel(jobId) {  // run_id:step@attempt -> step@attempt
    const i = jobId.lastIndexOf(':'); return i > 0 ? jobId.slice(i + 1) : jobId;
  }
  function ident(full, what, {href, short, copy = true} = {}) {
    if (!full) return dash();
    const code = h('code', {title: full}, short || shortId(full));
    return h('span', {cls: 'ident'}, href ? h('a', {href}, code) : code, copy ? copyButton(full, what) : null);
  }
  const pad = (n) => String(n).padStart(2, '0');
  /* The browser's zone at that instant as an offset: "UTC", "UTC+01:00", "UTC-05:00". */
  function zone(d) {
    const off = -d.getTimezoneOffset();
    if (!off) return 'UTC';
    const a = Math.abs(off);
    return `UTC${off > 0 ? '+' : '-'}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
  }
  /* "2026-12-06 14:05:09 UTC+01:00": date, time and zone, always. */
  function clock(d) {
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone(d)}`;
  }
  const zoneName = () => Intl.DateTimeFormat().resolvedOptions().timeZone || zone(new Date());
  function span(ms) {
    const s = Math.abs(ms) / 1000, f = Math.floor;
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s < 10 ? s.toFixed(1) : f(s)} s`;
    if (s < 3600) return `${f(s / 60)} min ${f(s % 60)} s`;
    if (s < 86400) return `${f(s / 3600)} h ${f((s % 3600) / 60)} min`;
    return `${f(s / 86400)} d ${f((s % 86400) / 3600)} h`;
  }
  function relative(iso) {
    const ms = new Date(iso) - Date.now();
    return ms > 0 ? `in ${span(ms)}` : `${span(ms)} ago`;
  }
  function when(iso, {rel = true, only = false} = {}) {
    if (!iso) return dash();
    const d = new Date(iso);
    const title = `${d.toISOString()} (${zoneName()}: ${clock(d)})`;
    const [day, ...rest] = clock(d).split(' ');
    const stamp = [h('span', {cls: 'nw'}, day), ' ', h('span', {cls: 'nw'}, rest.join(' '))];
    if (only) return h('time', {datetime: iso, title}, stamp, h('div', {cls: 'small muted'}, relative(iso)));
    return h('time', {datetime: iso, title}, stamp, rel ? h('span', {cls: 'muted'}, ` (${relative(iso)})`) : null);
  }
  function took(start, end) {
    if (!start) return dash();
    const ms = (end ? new Date(end) : new Date()) - new Date(start);
    return end ? span(ms) : h('span', {}, span(ms), h('span', {cls: 'muted'}, ' so far'));
  }
  function json(value, label = 'show') {
    if (value === null || value === undefined) return dash();
    const text = JSON.stringify(value, null, 2);
    const flat = JSON.stringify(value);
    if (flat.length <= 60) return h('code', {}, flat);
    return h('details', {}, h('summary', {}, `${label} (${flat.length} chars)`), h('pre', {}, text));
  }
  /* One line of an event's scalar fields (the telling ones first, hashes shortened); the
     whole data behind it when there is more. */
  const FIRST = ['decision', 'rule', 'stage', 'status', 'topic', 'reason'];
  function brief(data) {
    if (!data || typeof data !== 'object') return json(data);
    const keys = Object.keys(data).filter((k) => k !== 'decision_id')
      .sort((a, b) => (FIRST.indexOf(a) + 1 || 99) - (FIRST.indexOf(b) + 1 || 99));
    const scalar = keys.filter((k) => data[k] !== null && typeof data[k] !== 'object');
    if (!keys.length) return dash();
    const line = scalar.map((k) => `${k}=${/hash$/.test(k) ? shortId(String(data[k]), 10) : data[k]}`).join('  ');
    const shown = line.length > 110 ? line.slice(0, 109) + '…' : line;
    if (shown === line && scalar.length === keys.length && !/hash$/m.test(keys.join('\n'))) return h('span', {cls: 'small'}, line);
    return h('details', {}, h('summary', {}, shown || 'data'), h('pre', {}, JSON.stringify(data, null, 2)));
  }
  /* Constraints and the like: one key=value a line (nested values as compact JSON). */
  function kv(obj) {
    if (!obj || typeof obj !== 'object' || !Object.keys(obj).length) return dash();
    return h('span', {}, Object.entries(obj).map(([k, v]) =>
      h('span', {cls: 'kv'}, `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`)));
  }
  const block = (title, value) => h('div', {}, h('h3', {}, title),
    value === undefined || value === null ? dash() : h('pre', {}, JSON.stringify(value, null, 2)));
  function summary(dl, pairs) {
    dl.replaceChildren(...pairs.filter(Boolean).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  // ------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, doc) {
      super(doc.detail || doc.title || `HTTP ${status}`);
      this.status = status; this.doc = doc;
    }
  }
  const tenant = () => localStorage.getItem(TENANT) || 'default';
  /* Who the key is (GET /whoami), once per page load: the page greys out what it may not do. */
  let me = null;
  const can = (role) => !!me && (me.roles.includes(role) || me.roles.includes('admin'));
  /* The server stopped answering: one banner says so (the demo's server stops with its run),
     the loops keep their last data, and a probe clears the banner once it answers again. */
  let gone = null;
  function serverGone(e) {
    if (gone) return;
    gone = {since: new Date(), probe: null};
    const el = $('#server-state');
    const demo = document.body.dataset.servedBy === 'demo';
    el.replaceChildren(...(demo ? [
      h('p', {}, h('strong', {}, 'The server stopped (the demo ended). '),
        `Since ${clock(gone.since)} `, h('code', {}, 'warden demo'), ' no longer serves this page: it stops once its run has ended (or on Ctrl-C). ' +
        'Its terminal shows how the run ended and its timeline; what this page shows is the last state it read.'),
      h('p', {cls: 'small'}, 'Start ', h('code', {}, 'warden demo'), ' again to go on; this page notices when it answers.')]
      : [h('p', {}, h('strong', {}, 'The server stopped answering'), ` at ${clock(gone.since)} (${e.message}).`),
        h('p', {cls: 'small'}, 'What this page shows is the last state it read; it asks again every 5 s and goes on when the server is back.')]));
    el.hidden = false;
    const probe = async () => {
      try { await fetch('/healthz', {cache: 'no-store', credentials: 'omit'}); } catch (err) {
        gone.probe = setTimeout(probe, 5000); return;
      }
      serverBack();
    };
    gone.probe = setTimeout(probe, 5000);
  }
  function serverBack() {
    if (!gone) return;
    clearTimeout(gone.probe); gone = null;
    $('#server-state').hidden = true;
  }
  async function api(path, {method = 'GET', body} = {}) {
    const key = localStorage.getItem(KEY);
    if (!key) { signIn(); throw new ApiError(401, {detail: 'sign in first'}); }
    const headers = {'X-API-Key': key, 'X-Tenant-ID': tenant(), Accept: 'application/json'};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {method, headers, credentials: 'omit', cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body)});
    } catch (e) {
      serverGone(e);
      throw new ApiError(0, {title: 'No answer', detail: 'the server stopped answering'});
    }
    serverBack();
    const doc = await res.json().catch(() => ({}));
    if (res.status === 401) { signIn(doc.detail); }
    if (!res.ok) throw new ApiError(res.status, doc);
    return doc;
  }
  function pageError(err) {
    const el = $('#page-error');
    if (!err) { el.hidden = true; return; }
    setText(el, err instanceof ApiError ? `${err.doc.title || 'Error'}: ${err.message}` : String(err));
    el.hidden = false;
  }
  /* Calls fn now and then every ms while it returns true; errors are shown and retried,
     but a 401 stops the loop (the sign-in form is back). The returned function runs fn
     at once (after the call in flight, if any). */
  function every(ms, fn) {
    let timer = null, busy = false, queued = false;
    const tick = async () => {
      if (busy) { queued = true; return; }
      clearTimeout(timer); busy = true;
      let again = true;
      try { again = (await fn()) !== false; pageError(null); } catch (e) {
        pageError(e.status === 401 || e.status === 0 ? null : e);  // 0: the server banner says it
        // a refused or unknown request will not start working by itself: stop asking
        if (e instanceof ApiError && e.status >= 400 && e.status < 500 && ![408, 409, 429].includes(e.status)) again = false;
      }
      busy = false;
      if (queued) { queued = false; tick(); } else if (again) timer = setTimeout(tick, document.hidden ? ms * 4 : ms);
    };
    tick();
    return tick;
  }

  // ------------------------------------------------------------------ sign-in
  function signIn(message) {
    localStorage.removeItem(KEY);
    $('#content').hidden = true; $('#who').hidden = true; $('#sign-in').hidden = false;
    setText($('#sign-in-error'), message ? `Not accepted: ${message}` : '');
    $('#sign-in-tenant').value = tenant();
    $('#sign-in-key').focus();
  }
  function signedIn() {
    const key = localStorage.getItem(KEY);
    $('#sign-in').hidden = true; $('#content').hidden = false; $('#who').hidden = false;
    setText($('#who-tenant'), tenant());
    setText($('#who-key'), key.split('_').slice(0, 2).join('_'));  // wdn_<key_id>: not secret
  }
  async function whoami() {
    me = await api('/api/v1/whoami');
    setText($('#who-name'), me.principal);
    setText($('#who-roles'), `(${me.roles.join(', ')})`);
    return me;
  }
  function setupSignIn(start) {
    $('#sign-in-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      localStorage.setItem(KEY, $('#sign-in-key').value.trim());
      localStorage.setItem(TENANT, $('#sign-in-tenant').value.trim() || 'default');
      try {
        await whoami();
      } catch (e) {
        if (e.status !== 401) { localStorage.removeItem(KEY); setText($('#sign-in-error'), `Not accepted: ${e.message}`); }
        return;
      }
      $('#sign-in-key').value = '';
      signedIn(); start(); $('#main').focus();
    });
    $('#sign-out').addEventListener('click', () => { localStorage.removeItem(KEY); location.reload(); });
    // another tab forgot the key, or signed in: follow it
    window.addEventListener('storage', (ev) => {
      if (ev.key === KEY && !ev.newValue) signIn('the key was forgotten (in another tab)');
      else if (ev.key === KEY && ev.newValue && !$('#sign-in').hidden) location.reload();
    });
  }
  async function approvalCount() {
    try {
      const doc = await api('/api/v1/approvals?status=pending&limit=100');
      const n = doc.items.length;
      const el = $('#approval-count');
      setText(el, n ? `${n}${doc.next_cursor ? '+' : ''}` : ''); el.hidden = !n;
      el.setAttribute('aria-label', `${n} pending`);
    } catch (e) { return false; }  // no approver role: no count
    return true;
  }

  let refreshCount = () => {};

  // ------------------------------------------------------------------ runs list
  /* A time the operator typed: with a zone (Z, +01:00) as given; "2026-12-06 14:00" or
     "2026-12-06" in the browser's zone, sent as UTC. Anything else goes as typed, and the
     server's 400 names it. */
  function typedTime(value) {
    const v = value.trim();
    const m = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?$/.exec(v);
    if (!m) return v;
    const d = new Date(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0));
    return Number.isNaN(d.getTime()) ? v : d.toISOString();
  }
  /* The API's query for the page's search: the URL keeps what the operator typed. */
  function runQuery(q) {
    const params = new URLSearchParams();
    for (const k of ['status', 'denied_by', 'workflow_id', 'idempotency_key']) if (q.get(k)) params.set(k, q.get(k).trim());
    const id = (q.get('id_prefix') || '').trim();
    if (id) params.set('id_prefix', id);
    for (const k of ['created_after', 'created_before']) if (q.get(k)) params.set(k, typedTime(q.get(k)));
    for (const [k, v] of q) if (k.startsWith('input.')) params.append(k, v);
    const match = (q.get('match') || '').trim();
    if (match) {
      const i = match.indexOf('=');
      // "incident_id=INC-1" (or "input.incident_id=INC-1")
      const field = i > 0 ? match.slice(0, i).trim() : match;
      if (i <= 0) throw new ApiError(400, {detail: `input field: write field=value (e.g. incident_id=INC-7781), not ${JSON.stringify(match.slice(0, 40))}`, errors: [{field: 'match'}], local: true});
      params.append(field.startsWith('input.') ? field : `input.${field}`, match.slice(i + 1).trim());
    }
    return params;
  }
  const SEARCH_INPUT = {id_prefix: '#s-id', workflow_id: '#s-workflow', idempotency_key: '#s-key',
    created_after: '#s-after', created_before: '#s-before'};
  function runsPage() {
    const q = new URLSearchParams(location.search);
    setText($('#s-zone-name'), `${zoneName()}, ${zone(new Date())}`);
    $('#runs-search').addEventListener('submit', (ev) => {  // a clean URL: no empty fields
      ev.preventDefault();
      const out = new URLSearchParams();
      for (const [k, v] of new FormData(ev.target)) if (String(v).trim()) out.set(k, String(v).trim());
      location.assign(`/ui${out.toString() ? `?${out}` : ''}`);
    });
    const cursors = [null];  // cursor of each page shown so far
    let next = null;
    const refused = (e) => {  // a 400 is the search's fault: say which field, keep no stale rows
      const fields = (e.doc.errors || []).map((x) => x.field);
      for (const [name, sel] of Object.entries(SEARCH_INPUT)) {
        const bad = fields.includes(name);
        $(sel).toggleAttribute('aria-invalid', bad);
      }
      $('#s-match').toggleAttribute('aria-invalid', fields.some((f) => f && (f === 'match' || f.startsWith('input.'))));
      const el = $('#runs-error');
      el.replaceChildren(h('strong', {}, e.doc.local ? 'This search cannot be sent: ' : 'The server refused this search: '), e.message);
      el.hidden = false;
      rows($('#runs-table tbody'), [], null, 'No runs shown: the search above was refused.');
      setText($('#runs-live'), '');
      $('#runs-older').disabled = true;
    };
    const load = async () => {
      let doc;
      try {
        const params = runQuery(q);
        params.set('limit', '50');
        const cursor = cursors[cursors.length - 1];
        if (cursor) params.set('cursor', cursor);
        doc = await api(`/api/v1/workflow-runs?${params}`);
      } catch (e) {
        if (e.status === 400) { refused(e); return false; }
        throw e;
      }
      $('#runs-error').hidden = true;
      next = doc.next_cursor;
      rows($('#runs-table tbody'), doc.items, (r) => h('tr', {},
        td(badge(r.status, r.denied_by === 'approval' ? 'rejected' : r.denied_by === 'policy' ? 'by policy' : ''),
          r.summary && r.status !== 'succeeded' ? h('div', {cls: 'small muted', title: r.summary},
            r.summary.length > 80 ? r.summary.slice(0, 79) + '…' : r.summary) : null),
        td(ident(r.run_id, 'run id', {href: `/ui/runs/${r.run_id}`}),
          r.rerun_of ? h('div', {cls: 'small muted'}, 'rerun of ', h('a', {href: `/ui/runs/${r.rerun_of}`}, shortId(r.rerun_of))) : null),
        td(h('code', {}, r.workflow_id), h('span', {cls: 'muted'}, ` ${r.workflow_version}`)),
        td(r.created_by), td(when(r.created_at)), td(took(r.started_at || r.created_at, r.finished_at))),
      'No runs match.');
      setText($('#runs-live'), `${doc.items.length} run${doc.items.length === 1 ? '' : 's'} shown` +
        (cursors.length > 1 ? ` (page ${cursors.length})` : '') + `, updated ${clock(new Date())}`);
      $('#runs-older').disabled = !next; $('#runs-newest').disabled = cursors.length === 1;
      return true;
    };
    let force = true;
    const refresh = every(5000, async () => {
      if (force || (cursors.length === 1 && $('#auto-refresh').checked)) { force = false; return load(); }
      return true;
    });
    $('#runs-older').addEventListener('click', () => { cursors.push(next); force = true; refresh(); });
    $('#runs-newest').addEventListener('click', () => { cursors.length = 1; force = true; refresh(); });
    $('#auto-refresh').addEventListener('change', refresh);
  }

  // ------------------------------------------------------------------ DAG
  /* Layered drawing: column = longest path from a root; rows ordered by parents' rows. */
  function dag(steps, onPick) {
    const W = 150, H = 64, GX = 40, GY = 18, P = 10;
    const byId = new Map(steps.map((s) => [s.step_id, s]));
    const depth = new Map();
    const depthOf = (id, seen = new Set()) => {
      if (depth.has(id)) return depth.get(id);
      if (seen.has(id)) return 0; seen.add(id);
      const deps = byId.get(id).depends_on.filter((d) => byId.has(d));
      const d = deps.length ? Math.max(...deps.map((x) => depthOf(x, seen) + 1)) : 0;
      depth.set(id, d); return d;
    };
    const layers = [];
    steps.forEach((s) => { const d = depthOf(s.step_id); (layers[d] = layers[d] || []).push(s); });
    const row = new Map();
    layers.forEach((layer) => {
      const bary = (s) => { const r = s.depends_on.filter((d) => row.has(d)).map((d) => row.get(d));
        return r.length ? r.reduce((a, b) => a + b, 0) / r.length : 0; };
      layer.map((s, i) => [s, bary(s), i]).sort((a, b) => a[1] - b[1] || a[2] - b[2])
        .forEach(([s], i) => row.set(s.step_id, i));
    });
    const tallest = Math.max(...layers.map((l) => l.length));
    const pos = new Map();
    layers.forEach((layer, d) => layer.forEach((s) => {
      const off = (tallest - layer.length) * (H + GY) / 2;
      pos.set(s.step_id, [P + d * (W + GX), P + off + row.get(s.step_id) * (H + GY)]);
    }));
    const width = P * 2 + layers.length * W + (layers.length - 1) * GX;
    const height = P * 2 + tallest * H + (tallest - 1) * GY;
    const counts = {};
    steps.forEach((s) => { counts[s.status] = (counts[s.status] || 0) + 1; });
    const said = Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(', ');
    const root = svg('svg', {role: 'img', width, height, viewBox: `0 0 ${width} ${height}`,
      'aria-labelledby': 'dag-title dag-desc'},
    svg('title', {id: 'dag-title'}, `Step graph: ${steps.length} steps`),
    svg('desc', {id: 'dag-desc'}, `${said}. The steps table below lists each step, its status and what it depends on.`),
    svg('defs', {}, svg('marker', {id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7,
      markerHeight: 7, orient: 'auto-start-reverse'}, svg('path', {d: 'M0,0 L10,5 L0,10 z'}))));
    for (const s of steps) {
      const [x2, y2] = pos.get(s.step_id);
      for (const d of s.depends_on.filter((x) => pos.has(x))) {
        const [x1, y1] = pos.get(d);
        const ax = x1 + W, ay = y1 + H / 2, bx = x2 - 2, by = y2 + H / 2, mid = (bx - ax) / 2;
        const done = byId.get(d).status === 'succeeded';
        root.append(svg('path', {cls: `edge ${done ? 'done' : 'open'}`, 'marker-end': 'url(#arrow)',
          d: `M${ax},${ay} C${ax + mid},${ay} ${bx - mid},${by} ${bx},${by}`}));
      }
    }
    for (const s of steps) {
      const [x, y] = pos.get(s.step_id);
      const name = s.step_id.length > 17 ? s.step_id.slice(0, 16) + '…' : s.step_id;
      const extra = s.attempts > 1 ? ` · ${s.attempts} attempts` : '';
      const third = s.type + (s.attempts > 1 ? ` · ${s.attempts} attempts` : '');
      const now = s.state || s.status;
      const g = svg('g', {cls: `node s-${now} t-${s.type}`, 'data-step': s.step_id,
        'data-status': s.status, 'data-state': now, transform: `translate(${x},${y})`},
      svg('title', {}, `${s.step_id} (${s.type}): ${now}${s.note ? ` (${s.note})` : ''}${extra}`),
      svg('rect', {width: W, height: H, rx: s.type === 'notify' ? H / 2 : s.type === 'approval' ? 2 : 7}),
      svg('text', {x: 10, y: 20, cls: 'id'}, name),
      svg('text', {x: 10, y: 39, cls: 'st'}, `${ICON[now] || '•'} ${now.replace('_', ' ')}`),
      svg('text', {x: 10, y: 55, cls: 'ty'}, third));
      g.addEventListener('click', () => onPick(s.step_id));
      root.append(g);
    }
    return root;
  }

  // ------------------------------------------------------------------ run page
  function runPage(runId) {
    let lastSeq = 0, more = false, decisionsDirty = true, lastStatus = null;
    let reruns = null, rerunsOf = null;  // the runs that rerun this one, read once it ended
    let shownRun = null;
    const fillRerunSteps = (run) => {
      const select = $('#rerun-from');
      const ids = run.steps.map((st) => st.step_id);
      if ([...select.options].map((o) => o.value).join() === ids.join()) return;
      const first = run.steps.find((st) => !['succeeded', 'skipped'].includes(st.status)) || run.steps[0];
      select.replaceChildren(...run.steps.map((st) => h('option', {value: st.step_id, selected: first && st.step_id === first.step_id},
        `${st.step_id} (${st.status})`)));
    };
    const pick = (stepId) => {
      const tr = document.getElementById(`step-${stepId}`);
      document.querySelectorAll('.picked').forEach((el) => el.classList.remove('picked'));
      if (tr) { tr.classList.add('picked'); tr.scrollIntoView({block: 'center'}); tr.focus(); }
    };
    const renderRun = (run) => {
      $('#run-status').replaceChildren(badge(run.status));
      $('#run-title').replaceChildren(h('code', {title: run.run_id}, shortId(run.run_id)), copyButton(run.run_id, 'run id'));
      document.title = `Run ${shortId(run.run_id)} · ${run.status} · Warden`;
      $('#run-cancel').hidden = FINAL.has(run.status) || !can('operator');
      $('#run-rerun').hidden = !FINAL.has(run.status) || !can('operator');
      if (FINAL.has(run.status)) $('#act-cancel').hidden = true;
      fillRerunSteps(run);
      summary($('#run-summary'), [
        ['Workflow', h('span', {}, h('code', {}, run.workflow_id), ` version ${run.workflow_version}`)],
        ['Started by', run.created_by],
        ['Created', when(run.created_at)],
        ['Finished', run.finished_at ? h('span', {}, when(run.finished_at), ` after ${span(new Date(run.finished_at) - new Date(run.created_at))}`) : 'not yet'],
        run.idempotency_key && ['Idempotency key', h('code', {}, run.idempotency_key)],
        run.rerun_of && ['Rerun of', ident(run.rerun_of, 'run id', {href: `/ui/runs/${run.rerun_of}`})],
        run.parent_run_id && ['Child of', h('span', {}, ident(run.parent_run_id, 'run id', {href: `/ui/runs/${run.parent_run_id}`}),
          ` step ${run.parent_step_id}`, run.parent_item_index !== null ? `, item ${run.parent_item_index}` : '')],
        run.children && run.children.length && ['Child runs', h('span', {id: 'run-children'}, run.children.map((c, i) => [i ? ', ' : '',
          h('a', {href: `/ui/runs/${c.run_id}`}, shortId(c.run_id)), ' ', badge(c.status),
          ` ${c.step_id}${c.item_index !== null ? `[${c.item_index}]` : ''}`]))],
        ['Reruns', h('span', {id: 'run-reruns'}, reruns === null ? dash() : reruns.length
          ? reruns.map((r, i) => [i ? ', ' : '', h('a', {href: `/ui/runs/${r.run_id}`}, shortId(r.run_id)), ' ', badge(r.status)])
          : h('span', {cls: 'muted'}, 'none'))],
      ]);
      renderLive(run);
      $('#dag').replaceChildren(dag(run.steps, pick));
      rows($('#steps-table tbody'), run.steps, (s) => h('tr', {id: `step-${s.step_id}`, tabindex: -1},
        td(h('code', {}, s.step_id)), td(s.type),
        td(badge(s.status), s.retry_at ? h('div', {cls: 'small muted'}, 'next attempt ', when(s.retry_at)) : null),
        td(s.state && s.state !== s.status ? badge(s.state) : '', s.note && !s.error
          ? h('div', {cls: `small note${/no live worker/.test(s.note) ? ' error' : ''}`}, s.note) : (s.state === s.status && !s.items && !s.children ? dash() : ''),
          flowCell(s)),
        h('td', {cls: 'num'}, s.attempts),
        td(s.depends_on.length ? s.depends_on.map((d, i) => [i ? ', ' : '', h('code', {}, d)]) : dash()),
        td(when(s.started_at, {rel: false})), td(took(s.started_at, s.finished_at)),
        td(s.error ? errorText(s.error, s.note) : json(s.output, 'output'))), 'No steps.');
      const aps = run.approvals;
      $('#approvals-empty').hidden = aps.length > 0;
      $('#run-approvals').hidden = !aps.length;
      rows($('#run-approvals tbody'), aps, (a) => h('tr', {},
        td(h('code', {}, a.step_id), a.kind === 'policy' ? h('div', {cls: 'small muted'}, 'asked by policy') : null),
        td(approvalBadge(a.status)), td(a.requested_by), td(when(a.requested_at, {rel: false})),
        td(a.decided_by || dash()), td(when(a.decided_at, {rel: false})), td(a.reason || dash()),
        td(ident(a.job_hash, 'job hash', {short: shortId(a.job_hash, 12)})),
        td(ident(a.policy_snapshot_hash, 'snapshot hash', {short: shortId(a.policy_snapshot_hash || '', 12)})),
        td(h('a', {href: `/ui/approvals/${a.approval_id}`}, a.status === 'pending' ? 'Review and decide' : 'Details'))), '');
      $('#attempts-empty').hidden = run.jobs.length > 0;
      $('#attempts-table').hidden = !run.jobs.length;
      rows($('#attempts-table tbody'), run.jobs, (j) => h('tr', {},
        td(ident(j.job_id, 'job id', {short: jobLabel(j.job_id)}), h('div', {cls: 'small muted'}, j.topic)),
        td(badge(j.status), j.status === 'pending' && new Date(j.available_at) > Date.now()
          ? h('div', {cls: 'small muted'}, 'claimable ', when(j.available_at)) : null),
        td(j.worker || dash()), td(when(j.created_at, {rel: false})), td(when(j.started_at, {rel: false})),
        td(took(j.started_at, j.finished_at)), td(errorText(j.error)),
        td(json(j.checkpoint, 'checkpoint'))), '');
      $('#run-io').replaceChildren(block('Input', run.input), block('Output', run.output),
        run.error ? block('Error', run.error) : '');
    };
    const renderLive = (run) => {
      const live = $('#run-live');
      const waiting = run.approvals.filter((a) => a.status === 'pending');
      let cls = 'info', parts;
      if (run.status === 'waiting' && waiting.length) {
        cls = 'warn';
        parts = waiting.map((a) => h('p', {}, h('strong', {}, 'Waiting for approval'), ' of step ',
          h('code', {}, a.step_id), ' (requested ', when(a.requested_at), a.expires_at ? [', expires ', when(a.expires_at)] : '',
          '). ', h('a', {href: `/ui/approvals/${a.approval_id}`}, 'Review and decide')));
      } else {
        cls = run.status === 'succeeded' ? 'good' : FINAL.has(run.status) ? 'bad'
          : run.steps.some((s) => s.note && /no live worker/.test(s.note)) ? 'warn' : 'info';
        const [head, ...rest] = (run.summary || run.status).split(': ');
        parts = [h('p', {}, h('strong', {}, head), rest.length ? `: ${rest.join(': ')}` : '',
          run.status === 'succeeded' ? ` after ${span(new Date(run.finished_at) - new Date(run.created_at))}.` : '')];
      }
      const next = h('div', {}, ...parts);
      if (live.textContent !== next.textContent) { live.className = `callout ${cls}`; live.replaceChildren(...parts); }
    };
    const loadEvents = async () => {
      const doc = await api(`/api/v1/workflow-runs/${runId}/timeline?limit=200&cursor=${lastSeq}`);
      const tbody = $('#timeline-table tbody');
      for (const e of doc.items) {
        if (e.kind === 'policy.decision') decisionsDirty = true;
        tbody.append(h('tr', {},
          h('td', {cls: 'num'}, e.seq), td(when(e.at, {rel: false})), td(h('code', {}, e.kind)),
          td(e.step_id ? h('code', {}, e.step_id) : dash()), h('td', {cls: 'num'}, e.attempt ?? ''),
          td(e.actor || dash()), td(brief(e.data))));
        lastSeq = e.seq;
      }
      more = doc.next_cursor !== null;
      $('#timeline-more').hidden = !more;
      setText($('#timeline-live'), `${lastSeq} event${lastSeq === 1 ? '' : 's'} loaded` +
        (more ? '; more below the last one' : '; up to date') +
        (doc.items.length ? `, last: ${doc.items[doc.items.length - 1].kind}` : ''));
    };
    const loadDecisions = async () => {
      decisionsDirty = false;  // set again by any decision event that arrives meanwhile
      const doc = await api(`/ui/api/runs/${runId}/decisions`);
      rows($('#decisions-table tbody'), doc.items, (d) => h('tr', {},
        td(d.stage), td(h('code', {}, d.job_id ? jobLabel(d.job_id) : d.step_id)),
        td(badge(d.decision)), td(d.rule ? h('code', {}, d.rule) : h('span', {cls: 'muted'}, 'default')),
        td(d.reason || dash()), td(kv(d.constraints)),
        td(ident(d.snapshot_hash, 'snapshot hash', {short: shortId(d.snapshot_hash || '', 12)})),
        td(when(d.at, {rel: false}))), 'No policy decisions yet.');
    };
    let seen = '';
    every(2000, async () => {
      const run = await api(`/api/v1/workflow-runs/${runId}`);
      shownRun = run;
      if (FINAL.has(run.status) && rerunsOf !== run.status) {  // reruns start from ended runs only
        rerunsOf = run.status;
        reruns = (await api(`/api/v1/workflow-runs?rerun_of=${runId}&limit=20`)).items;
      }
      const now = JSON.stringify([run, reruns]);
      if (now !== seen) renderRun(run); else renderLive(run);  // keep opened details open
      seen = now;
      // new events only when the operator has read to the end; decisions when they changed
      await Promise.all([more ? null : loadEvents(), decisionsDirty ? loadDecisions() : null]);
      if (decisionsDirty) await loadDecisions();
      lastStatus = run.status;
      return !FINAL.has(run.status);
    });
    $('#timeline-more').addEventListener('click', () => loadEvents().catch(pageError));
    // Cancel: say what stops, ask for a reason, then confirm.
    $('#run-cancel').addEventListener('click', () => {
      const run = shownRun;
      const active = run.steps.filter((st) => !FINAL.has(st.status) && !['skipped', 'pending'].includes(st.status));
      const later = run.steps.filter((st) => st.status === 'pending');
      $('#cancel-plan').replaceChildren(
        h('p', {}, active.length ? ['Stops now: ', active.map((st, i) => [i ? ', ' : '', h('code', {}, st.step_id), ` (${st.state || st.status})`]),
          '. Running jobs are told to stop at their next heartbeat.'] : 'No step is running.'),
        later.length ? h('p', {}, 'Never run: ', later.map((st, i) => [i ? ', ' : '', h('code', {}, st.step_id)]), '.') : '',
        h('p', {cls: 'small muted'}, 'The run ends cancelled; a rerun can start it again later.'));
      setText($('#cancel-error'), '');
      $('#act-cancel').hidden = false; $('#act-rerun').hidden = true;
      $('#cancel-reason').focus();
    });
    $('#cancel-close').addEventListener('click', () => { $('#act-cancel').hidden = true; $('#run-cancel').focus(); });
    $('#cancel-go').addEventListener('click', async () => {
      const reason = $('#cancel-reason').value.trim() || null;
      try {
        await api(`/api/v1/workflow-runs/${runId}/cancel`, {method: 'POST', body: {reason}});
      } catch (e) { setText($('#cancel-error'), `Refused (${e.status || 'no answer'}): ${e.message}`); return; }
      $('#act-cancel').hidden = true;
      location.reload();
    });
    // Rerun: the dry-run plan first, then "Start the rerun".
    let planned = null;
    const showPlan = (plan) => {
      const decision = (sid) => plan.decisions[sid];
      $('#rerun-plan-out').replaceChildren(
        h('h3', {}, `Plan: rerun from `, h('code', {}, plan.from_step)),
        h('p', {}, h('strong', {}, 'Reused'), ' (outputs carried over): ', plan.reused.length
          ? plan.reused.map((r, i) => [i ? ', ' : '', h('code', {}, r.step_id)]) : 'none'),
        h('table', {cls: 'grid', id: 'rerun-plan-table'},
          h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Runs again'), h('th', {scope: 'col'}, 'Policy now'),
            h('th', {scope: 'col'}, 'Rule'), h('th', {scope: 'col'}, 'Reason'))),
          h('tbody', {}, plan.to_run.map((sid) => {
            const d = decision(sid);
            const asks = plan.approvals_needed.includes(sid);
            return h('tr', {}, td(h('code', {}, sid), plan.flow && plan.flow[sid] ? h('div', {cls: 'small muted'}, plan.flow[sid]) : null),
              td(d ? badge(d.decision) : asks ? badge('waiting', 'approval step') : h('span', {cls: 'muted'}, 'no policy check')),
              td(d ? (d.rule ? h('code', {}, d.rule) : h('span', {cls: 'muted'}, 'default')) : dash()),
              td(d ? d.reason : dash()));
          }))),
        h('p', {}, plan.approvals_needed.length ? ['Needs approval: ', plan.approvals_needed.map((a, i) => [i ? ', ' : '', h('code', {}, a)]), '.']
          : 'Needs no approval.'));
      $('#rerun-go').hidden = false;
    };
    $('#run-rerun').addEventListener('click', () => {
      $('#act-rerun').hidden = false; $('#act-cancel').hidden = true;
      $('#rerun-plan-out').replaceChildren(); $('#rerun-go').hidden = true; setText($('#rerun-error'), '');
      $('#rerun-from').focus();
    });
    $('#rerun-from').addEventListener('change', () => { planned = null; $('#rerun-go').hidden = true; $('#rerun-plan-out').replaceChildren(); });
    $('#rerun-close').addEventListener('click', () => { $('#act-rerun').hidden = true; $('#run-rerun').focus(); });
    $('#rerun-plan').addEventListener('click', async () => {
      setText($('#rerun-error'), '');
      const from = $('#rerun-from').value;
      try {
        planned = await api(`/api/v1/workflow-runs/${runId}/rerun`, {method: 'POST', body: {from_step: from, dry_run: true}});
      } catch (e) { setText($('#rerun-error'), `Refused (${e.status || 'no answer'}): ${e.message}`); return; }
      showPlan(planned);
      $('#rerun-go').focus();
    });
    $('#rerun-go').addEventListener('click', async () => {
      if (!planned) return;
      let started;
      try {
        started = await api(`/api/v1/workflow-runs/${runId}/rerun`, {method: 'POST', body: {from_step: planned.from_step}});
      } catch (e) { setText($('#rerun-error'), `Refused (${e.status || 'no answer'}): ${e.message}`); return; }
      location.assign(`/ui/runs/${started.run_id}`);
    });
    return () => lastStatus;
  }

  // ------------------------------------------------------------------ approvals list
  function approvalsPage() {
    const q = new URLSearchParams(location.search);
    const status = q.has('status') ? q.get('status') : 'pending';
    let cursor = null;
    const tbody = $('#approvals-table tbody');
    const row = (a) => h('tr', {},
      td(approvalBadge(a.status)),
      td(h('code', {}, a.step_id), h('div', {cls: 'small'}, 'run ', ident(a.run_id, 'run id', {href: `/ui/runs/${a.run_id}`})),
        a.status === 'pending' && me && a.requested_by === me.principal
          ? h('div', {cls: 'small own'}, 'your run: another approver decides') : null,
        a.workflow_id ? h('div', {cls: 'small muted'}, `${a.workflow_id}@${a.workflow_version} · run ${a.run_status}`) : null),
      td(h('div', {cls: 'lets-run'}, a.summary || dash())),
      td(a.kind === 'step' ? 'approval step' : ['policy', a.topic ? h('div', {cls: 'small muted'}, h('code', {}, a.topic)) : null]),
      td(when(a.requested_at, {only: true}), h('div', {cls: 'small muted'}, `run started by ${a.requested_by}`)),
      td(a.status === 'pending' && a.expires_at ? when(a.expires_at, {only: true}) : dash()),
      td(h('div', {cls: 'small'}, 'job ', ident(a.job_hash, 'job hash', {short: shortId(a.job_hash, 10)})),
        h('div', {cls: 'small'}, 'policy ', a.policy_snapshot_hash ? ident(a.policy_snapshot_hash, 'snapshot hash', {short: shortId(a.policy_snapshot_hash, 10)}) : 'none')),
      td(a.decided_by ? h('span', {}, h('strong', {}, a.decided_by), ' ', when(a.decided_at, {only: true}),
        a.reason ? h('div', {cls: 'small muted quote'}, a.reason) : '') : dash()),
      td(h('a', {href: `/ui/approvals/${a.approval_id}`, 'aria-label': `${a.status === 'pending' ? 'Review' : 'Details of'} approval of ${a.step_id}, run ${shortId(a.run_id)}`},
        a.status === 'pending' ? 'Review' : 'Details')));
    const load = async (append) => {
      const params = new URLSearchParams({limit: '100'});
      if (status) params.set('status', status);
      if (append && cursor) params.set('cursor', cursor);
      const doc = await api(`/api/v1/approvals?${params}`);
      cursor = doc.next_cursor;
      if (append) tbody.append(...doc.items.map(row));
      else rows(tbody, doc.items, row, status === 'pending' ? 'Nothing waits for a decision.' : 'No approvals match.');
      $('#approvals-more').hidden = !cursor;
      setText($('#approvals-live'), `${tbody.querySelectorAll('tr:not(.empty)').length} ${status || ''} approval(s), updated ${clock(new Date())}`);
      return true;
    };
    every(5000, () => (cursor ? true : load(false)));
    $('#approvals-more').addEventListener('click', () => load(true).catch(pageError));
  }

  // ------------------------------------------------------------------ one approval
  function approvalPage(id) {
    let shown = null;
    const render = (ap, plan) => {
      shown = ap;
      $('#approval-status').replaceChildren(approvalBadge(ap.status));
      const wf = plan.run.workflow_name || plan.run.workflow_id;
      $('#approval-title').replaceChildren(...(ap.status === 'pending'
        ? ['Approve ', h('code', {}, ap.step_id), ` of ${wf}?`] : ['Approval of ', h('code', {}, ap.step_id), ` in ${wf}`]));
      document.title = `Approval ${ap.step_id} · ${ap.status} · Warden`;
      const stale = plan.active_snapshot_hash !== ap.policy_snapshot_hash;
      summary($('#approval-bound'), [
        ['Run', h('span', {}, ident(ap.run_id, 'run id', {href: `/ui/runs/${ap.run_id}`}), ' ',
          h('code', {}, plan.run.workflow_id), ` ${plan.run.workflow_version} · `, badge(plan.run.status))],
        ['Step', h('span', {}, h('code', {}, ap.step_id), ap.kind === 'step' ? ' (an approval step)'
          : [' — a job on topic ', h('code', {}, plan.covers.topic), ', held by policy'])],
        ['Job hash', h('span', {}, h('code', {cls: 'full', id: 'job-hash'}, ap.job_hash), copyButton(ap.job_hash, 'job hash'),
          h('div', {cls: 'small ' + (plan.job_hash_matches ? 'muted' : 'error')}, plan.job_hash_matches
            ? '✓ recomputed by the server from the values shown below: they are exactly what it binds'
            : '✗ the values below no longer hash to this job hash: do not approve; reload'))],
        ['Policy snapshot', ap.policy_snapshot_hash ? h('span', {}, h('code', {cls: 'full'}, ap.policy_snapshot_hash),
          copyButton(ap.policy_snapshot_hash, 'snapshot hash'), stale ? h('div', {cls: 'small error'},
            'no longer the active snapshot: the step will be judged again under the new policy') : h('div', {cls: 'small muted'}, 'the active snapshot'))
          : h('span', {cls: 'muted'}, 'none (no policy was active)')],
        ['Requested', h('span', {}, when(ap.requested_at), ' for the run started by ', h('strong', {}, ap.requested_by))],
        ['Cannot decide', h('span', {}, (ap.barred || []).map((p, i) => [i ? ', ' : '', h('strong', {}, p)]),
          h('div', {cls: 'small muted'}, 'they started this run or a run it reruns'))],
        ['Expires', ap.expires_at ? when(ap.expires_at) : 'never'],
        ap.decided_by && ['Decided', h('span', {}, badge(ap.status), ' by ', h('strong', {}, ap.decided_by), ' ', when(ap.decided_at))],
        ap.reason && ['Reason', ap.reason],
      ]);
      const asked = plan.asked_by;
      $('#approval-asked').replaceChildren(asked.kind === 'step'
        ? h('p', {}, 'Workflow ', h('code', {}, asked.workflow_id), ` ${asked.workflow_version} has an approval step `,
          h('code', {}, asked.step_id), plan.gate.depends_on.length ? [' after ', plan.gate.depends_on.map((d, i) => [i ? ', ' : '', h('code', {}, d)])] : '',
          ': a person who started no run of its rerun chain must approve before the next steps run.')
        : asked.decision ? h('p', {}, 'Policy rule ', h('code', {}, asked.decision.rule || '(default)'), ' decided ',
          badge(asked.decision.decision), ` at ${asked.decision.stage}: ${asked.decision.reason} (snapshot `,
          ident(asked.decision.snapshot_hash, 'snapshot hash', {short: shortId(asked.decision.snapshot_hash || '', 12)}), ').')
          : h('p', {}, 'A policy decision asked for it (its decision row was not found).'));
      const c = plan.covers;
      $('#approval-covers').replaceChildren(
        block(c.topic ? 'Rendered input' : 'Run input', c.input),
        ...Object.entries(c.upstream || {}).map(([k, v]) => block(`Output of ${k}`, v)),
        c.constraints && Object.keys(c.constraints).length ? block('Constraints', c.constraints) : '');
      $('#approval-then').replaceChildren(...(plan.then.length ? plan.then.map((s) => h('div', {cls: 'later'},
        h('h3', {}, h('code', {}, s.step_id), h('span', {cls: 'muted small'}, s.type + (s.topic ? ` · ${s.topic}` : '')), s.status ? badge(s.status) : ''),
        s.decision ? h('p', {cls: 'small'}, 'Policy at submit: ', badge(s.decision.decision), ' by rule ',
          h('code', {}, s.decision.rule || '(default)'), ` — ${s.decision.reason}`,
          s.decision.constraints && Object.keys(s.decision.constraints).length ? [' · constraints: ', Object.entries(s.decision.constraints).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')] : '') : '',
        s.type === 'job' ? (s.input !== null ? h('div', {}, h('p', {cls: 'small muted'}, 'Input, rendered from the values above:'), h('pre', {}, JSON.stringify(s.input, null, 2)))
          : h('p', {cls: 'small muted'}, s.input_note || '')) : '',
        s.message ? h('p', {cls: 'small'}, 'Message: ', s.message) : ''))
        : [h('p', {cls: 'muted'}, 'Nothing depends on this step.')]));
      const pending = ap.status === 'pending';
      $('#decide-form').hidden = !pending;
      const why = !me ? '' : ap.requested_by === me.principal
        ? `You started this run (as ${me.principal}), and nobody may decide the approvals of their own run: another approver must decide it.`
        : !can('approver') ? `This key (${me.principal}) has no approver role: it can read this approval, not decide it.` : '';
      $('#decide-form').querySelectorAll('button, textarea').forEach((el) => { el.disabled = !!why; });
      setText($('#decide-why'), why);
      $('#decide-why').hidden = !why;
      setText($('#decide-hash'), ap.job_hash);
      $('#approval-outcome').replaceChildren(pending ? '' : h('p', {}, 'This approval is ', badge(ap.status),
        ap.decided_by ? [' — decided by ', h('strong', {}, ap.decided_by), ' ', when(ap.decided_at)] : '', '. ',
        h('a', {href: `/ui/runs/${ap.run_id}`}, 'Open the run')));
      const live = $('#approval-live');
      const outcome = {approved: 'the run goes on', rejected: 'the run ends denied',
        expired: 'the run ended timed_out', superseded: 'a newer approval replaced it after a policy change'}[ap.status] || '';
      const text = pending ? `Waiting for a decision; requested for the run started by ${ap.requested_by}.`
        : `${ap.status[0].toUpperCase()}${ap.status.slice(1)}${ap.decided_by ? ` by ${ap.decided_by}` : ''}: ${outcome}.`;
      if (live.textContent !== text) { live.className = `callout ${pending ? 'warn' : ap.status === 'approved' ? 'good' : 'bad'}`; live.textContent = text; }
      return pending;
    };
    /* Once decided, the page follows the run to its end: what the decision led to. */
    let following = false;
    const follow = (runId) => {
      if (following) return;
      following = true;
      every(2000, async () => {
        const run = await api(`/api/v1/workflow-runs/${runId}`);
        const el = $('#approval-run');
        const said = run.summary && run.summary.toLowerCase() !== run.status.replace('_', ' ') ? ` ${run.summary}` : '';
        el.replaceChildren('The run now: ', badge(run.status), said, ' · ',
          h('a', {href: `/ui/runs/${runId}`}, 'open it'));
        el.hidden = false;
        return !FINAL.has(run.status);
      });
    };
    const load = async () => {
      const [ap, plan] = await Promise.all([api(`/api/v1/approvals/${id}`), api(`/ui/api/approvals/${id}/plan`)]);
      if (ap.status !== 'pending') follow(ap.run_id);
      if (shown && shown.status === ap.status && shown.job_hash === ap.job_hash) return ap.status === 'pending';
      return render(ap, plan);
    };
    every(5000, load);
    $('#decide-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const verdict = ev.submitter ? ev.submitter.value : 'approve';
      const reason = $('#decide-reason').value.trim();
      const err = $('#decide-error');
      if (verdict === 'reject' && !reason) { setText(err, 'Write a reason to reject.'); $('#decide-reason').focus(); return; }
      const buttons = ev.target.querySelectorAll('button');
      buttons.forEach((b) => { b.disabled = true; });
      let failure = null;
      try {
        await api(`/api/v1/approvals/${id}/${verdict}`, {method: 'POST', body: {reason: reason || null, job_hash: shown.job_hash}});
      } catch (e) { failure = e; }
      buttons.forEach((b) => { b.disabled = !$('#decide-why').hidden; });
      setText(err, !failure ? '' : failure.status === 409 && /job hash/.test(failure.message)
        ? `Refused: what would run changed since this page loaded. Review it again. (${failure.message})`
        : `Refused (${failure.status || 'no answer'}): ${failure.message}`);
      shown = null;  // show what the server holds now, whatever happened
      await load().catch(pageError);
      if (!failure) { $('#approval-live').focus(); refreshCount(); }
    });
  }

  // ------------------------------------------------------------------ workers and queues
  function workersPage() {
    const topics = (list) => list.map((t, i) => [i ? ' ' : '', h('code', {cls: 'topic'}, t)]);
    const load = async () => {
      const all = $('#workers-all').checked;
      const [workers, queues] = await Promise.all([
        api(`/api/v1/workers${all ? '?all=true' : ''}`), api('/api/v1/queues')]);
      rows($('#queues-table tbody'), queues.items, (q) => h('tr', {cls: q.unattended ? 'unattended' : '', 'data-topic': q.topic},
        td(h('code', {}, q.topic), q.unattended ? h('div', {cls: 'small error'}, `pending: no live worker polls topic ${q.topic}`) : null),
        h('td', {cls: 'num'}, q.depth), h('td', {cls: 'num'}, q.ready),
        td(q.oldest_age_s === null ? dash() : span(q.oldest_age_s * 1000)),
        h('td', {cls: 'num'}, q.running), h('td', {cls: 'num'}, q.claimed_last_minute),
        td(h('strong', {}, String(q.live_workers)), q.workers.length ? h('div', {cls: 'small muted'}, q.workers.join(', ')) : null)),
      'No topic has work or a live worker.');
      rows($('#workers-table tbody'), workers.items, (w) => h('tr', {'data-worker': w.name},
        td(h('strong', {}, w.name), h('div', {cls: 'small muted'}, h('code', {}, shortId(w.worker_id)))),
        td(h('span', {cls: `status w-${w.state}`}, h('span', {'aria-hidden': 'true'}, {live: '●', dead: '✗', stopped: '■'}[w.state] || '•'), w.state)),
        td(w.host || dash(), w.pid ? h('span', {cls: 'muted'}, ` / ${w.pid}`) : ''),
        td(topics(w.topics)),
        h('td', {cls: 'num'}, `${w.jobs_in_flight ?? 0} / ${w.concurrency ?? '?'}`),
        td(w.version || dash()), td(when(w.started_at)),
        td(when(w.last_seen_at), w.stopped_at ? h('div', {cls: 'small muted'}, 'stopped ', when(w.stopped_at, {rel: false})) : null)),
      all ? 'No worker registered in the last day.' : 'No live worker: nothing takes jobs now.');
      setText($('#fleet-live'), `updated ${clock(new Date())}`);
      return true;
    };
    const refresh = every(5000, load);
    $('#workers-all').addEventListener('change', refresh);
  }

  // ------------------------------------------------------------------ start
  document.addEventListener('DOMContentLoaded', () => {
    const body = document.body;
    const start = () => {
      refreshCount = every(15000, approvalCount);
      if (body.dataset.servedBy === 'demo') {  // the demo stops serving with its run: notice it
        const watch = async () => {
          try { await fetch('/healthz', {cache: 'no-store', credentials: 'omit'}); serverBack(); } catch (e) { serverGone(e); }
          setTimeout(watch, 3000);
        };
        setTimeout(watch, 3000);
      }
      if (body.dataset.page === 'runs') runsPage();
      else if (body.dataset.page === 'run') runPage(body.dataset.runId);
      else if (body.dataset.page === 'approvals') approvalsPage();
      else if (body.dataset.page === 'approval') approvalPage(body.dataset.approvalId);
      else if (body.dataset.page === 'workers') workersPage();
    };
    setupSignIn(start);
    if (localStorage.getItem(KEY)) {
      signedIn();
      whoami().then(start, (e) => { if (e.status !== 401) { pageError(e); start(); } });
    } else signIn();
  });
})();
