// heliosburn's management page: the live traffic, one exchange in detail, the
// recordings and the modules, all read from the management API this page came from.
//
// Everything shown from traffic is attacker-controlled text: it reaches the DOM through
// textContent and attributes only, never as markup (the page's Content-Security-Policy
// forbids inline script as a second wall).
'use strict';

(() => {
  /** Rows the live table keeps: the oldest go first. */
  const MAX_ROWS = 500;
  /** Exchanges per page of a recording's traffic. */
  const PAGE = 50;
  /** Bytes of a body shown at most (the rest is summed up). */
  const SHOW_TEXT = 256 * 1024;
  const SHOW_HEX = 16 * 1024;
  /** How often the modules and the recordings are read again while shown. */
  const REFRESH_MS = 2000;
  const TOKEN_KEY = 'heliosburn.token';

  const $ = (id) => document.getElementById(id);

  /** An element with a class and children (strings become text nodes, never markup). */
  function el(tag, cls, ...children) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function button(text, onClick, cls) {
    const b = el('button', cls, text);
    b.type = 'button';
    b.addEventListener('click', onClick);
    return b;
  }

  // ---- formatting ----------------------------------------------------------------

  /** RFC 3339 with up to microseconds → µs since the epoch (Date keeps milliseconds). */
  function micros(ts) {
    if (typeof ts !== 'string') return NaN;
    const m = /^(.*T\d\d:\d\d:\d\d)(?:[.,](\d+))?(Z|[+-]\d\d:?\d\d)?$/i.exec(ts);
    if (!m) return NaN;
    const ms = Date.parse(m[1] + (m[3] || 'Z'));
    const frac = ((m[2] || '') + '000000').slice(0, 6);
    return ms * 1000 + Number(frac);
  }

  const pad = (n, w) => String(n).padStart(w, '0');

  function clock(ts) {
    const us = micros(ts);
    if (Number.isNaN(us)) return '';
    const d = new Date(Math.floor(us / 1000));
    return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${pad(d.getMilliseconds(), 3)}`;
  }

  function dateTime(ts) {
    const us = micros(ts);
    if (Number.isNaN(us)) return ts ? String(ts) : '';
    const d = new Date(Math.floor(us / 1000));
    return `${d.getFullYear()}-${pad(d.getMonth() + 1, 2)}-${pad(d.getDate(), 2)} ${clock(ts).slice(0, 8)}`;
  }

  function duration(msg) {
    const a = micros(msg.request && msg.request.createdAt);
    const b = micros(msg.response && msg.response.createdAt);
    if (Number.isNaN(a) || Number.isNaN(b)) return '';
    const ms = (b - a) / 1000;
    if (ms < 10) return `${ms.toFixed(2)} ms`;
    if (ms < 1000) return `${ms.toFixed(0)} ms`;
    return `${(ms / 1000).toFixed(2)} s`;
  }

  function bytes(n) {
    if (typeof n !== 'number') return '';
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
    return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
  }

  /** The first value of a header in the `{name: [values]}` shape. */
  function header(headers, name) {
    if (!headers) return '';
    const v = headers[name] || headers[name.toLowerCase()];
    return Array.isArray(v) && v.length ? String(v[0]) : '';
  }

  // ---- the API -------------------------------------------------------------------

  let token = sessionStorage.getItem(TOKEN_KEY) || '';

  function authHeaders(extra) {
    const h = Object.assign({}, extra);
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }

  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  async function readError(resp) {
    const text = await resp.text().catch(() => '');
    try {
      const j = JSON.parse(text);
      if (j && typeof j.error === 'string') return [j.error, j];
      return [text || `${resp.status} ${resp.statusText}`, j];
    } catch {
      return [text || `${resp.status} ${resp.statusText}`, null];
    }
  }

  /** A call to the API: JSON back, or an ApiError with the API's own words. */
  async function api(method, path, body) {
    const init = { method, headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' };
    if (method !== 'GET') {
      // The guard takes state changes as JSON only (and from this origin).
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body || {});
    }
    const resp = await fetch(path, init);
    if (resp.status === 401) {
      askToken();
      throw new ApiError(401, 'the management API needs its token');
    }
    if (!resp.ok) {
      const [message, data] = await readError(resp);
      throw new ApiError(resp.status, message, data);
    }
    if (resp.status === 204) return null;
    return resp.json();
  }

  function say(text, kind) {
    const m = $('message');
    m.textContent = text;
    m.dataset.kind = kind || 'error';
    m.hidden = !text;
    clearTimeout(say.timer);
    if (text) say.timer = setTimeout(() => { m.hidden = true; }, kind === 'info' ? 4000 : 10000);
  }

  function askToken() {
    const form = $('token-form');
    if (!form.hidden) return;
    form.hidden = false;
    $('token-input').focus();
  }

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const given = $('token-input').value.trim();
    // A header carries printable ASCII only: anything else could never be sent.
    if (!/^[\x21-\x7e]+$/.test(given)) {
      say('A token is printable ASCII with no spaces: check what you pasted.');
      return;
    }
    token = given;
    $('token-input').value = '';
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token-form').hidden = true;
    say('');
    openStream();
    refreshShown();
  });

  // ---- views ---------------------------------------------------------------------

  const views = ['live', 'recordings', 'modules'];
  let view = 'live';

  function showView(name) {
    view = name;
    for (const v of views) {
      $(`tab-${v}`).setAttribute('aria-selected', String(v === name));
      $(`view-${v}`).hidden = v !== name;
    }
    refreshShown();
  }

  for (const v of views) {
    $(`tab-${v}`).addEventListener('click', () => showView(v));
    $(`tab-${v}`).addEventListener('keydown', (e) => {
      if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
      const i = views.indexOf(v) + (e.key === 'ArrowRight' ? 1 : views.length - 1);
      const next = views[i % views.length];
      showView(next);
      $(`tab-${next}`).focus();
    });
  }

  function refreshShown() {
    if (view === 'recordings') refreshRecordings();
    if (view === 'modules') refreshModules();
  }

  setInterval(() => {
    if (document.hidden) return;
    refreshShown();
  }, REFRESH_MS);

  // ---- a table of exchanges, shared by the live view and a recording's traffic --------

  let rowIds = 0;

  /** Fills a row's cells from a message (the live window's or a stored document). */
  function fillRow(tr, msg) {
    const q = msg.request || {};
    const r = msg.response;
    const status = r ? r.statusCode : '';
    const cells = tr.children;
    cells[0].textContent = clock(q.createdAt);
    cells[1].textContent = q.method || '';
    cells[2].textContent = q.uri || q.path || '';
    cells[2].title = q.uri || '';
    cells[3].textContent = header(q.headers, 'host');
    cells[3].title = cells[3].textContent;
    cells[4].textContent = status;
    cells[4].className = status ? `s${String(status)[0]}` : '';
    cells[5].textContent = duration(msg);
    cells[6].textContent = q.body ? bytes(q.body.size) : '0 B';
    cells[7].textContent = r && r.body ? bytes(r.body.size) : (r ? '0 B' : '');
  }

  function makeRow(msg) {
    const tr = document.createElement('tr');
    tr.id = `x${++rowIds}`;
    tr.setAttribute('aria-selected', 'false');
    for (const cls of ['', '', 'path', '', '', 'num', 'num', 'num']) {
      const td = document.createElement('td');
      if (cls) td.className = cls;
      tr.append(td);
    }
    fillRow(tr, msg);
    return tr;
  }

  /**
   * Keyboard and mouse for a table of exchanges: one selected row, moved with the
   * arrows or j/k (Home/End), opened with Enter or a click.
   */
  class ExchangeTable {
    constructor(wrap, tbody, lookup) {
      this.wrap = wrap;
      this.tbody = tbody;
      this.lookup = lookup; // tr → message
      this.selected = null;
      tbody.addEventListener('click', (e) => {
        const tr = e.target.closest('tr');
        if (!tr || tr.parentNode !== tbody) return;
        this.select(tr);
        this.open();
      });
      wrap.addEventListener('keydown', (e) => this.key(e));
    }

    key(e) {
      if (e.altKey || e.ctrlKey || e.metaKey) return;
      const rows = this.tbody;
      let next = null;
      switch (e.key) {
        case 'ArrowDown': case 'j':
          next = this.selected && this.selected.isConnected ? this.selected.nextElementSibling : rows.firstElementChild;
          break;
        case 'ArrowUp': case 'k':
          next = this.selected && this.selected.isConnected ? this.selected.previousElementSibling : rows.firstElementChild;
          break;
        case 'Home': next = rows.firstElementChild; break;
        case 'End': next = rows.lastElementChild; break;
        case 'Enter':
          if (this.selected && this.selected.isConnected) {
            e.preventDefault();
            this.open();
          }
          return;
        default: return;
      }
      e.preventDefault();
      if (next) {
        this.select(next);
        if (detailOpen()) this.open();
      }
    }

    select(tr) {
      if (this.selected) {
        this.selected.classList.remove('selected');
        this.selected.setAttribute('aria-selected', 'false');
      }
      this.selected = tr;
      if (!tr) {
        this.wrap.removeAttribute('aria-activedescendant');
        return;
      }
      tr.classList.add('selected');
      tr.setAttribute('aria-selected', 'true');
      this.wrap.setAttribute('aria-activedescendant', tr.id);
      tr.scrollIntoView({ block: 'nearest' });
    }

    open() {
      const msg = this.selected && this.lookup(this.selected);
      if (msg) showDetail(msg, this);
    }
  }

  // ---- the live view ------------------------------------------------------------------

  const live = {
    seen: 0,
    missed: 0,
    paused: false,
    /** Messages come since the last frame, oldest first (at most MAX_ROWS kept). */
    pending: [],
    /** transaction_id → {msg, tr}: the rows shown. */
    rows: new Map(),
    /** Rows whose exchange came again (a WebSocket's messages) while they were shown. */
    dirty: new Set(),
    filter: {},
    frame: 0,
  };

  const liveRows = $('live-rows');
  const liveTable = new ExchangeTable($('live-wrap'), liveRows, (tr) => {
    const row = live.rows.get(tr.dataset.tid);
    return row && row.msg;
  });

  function onExchange(msg) {
    if (!msg || !msg.request) return;
    const tid = String(msg.transaction_id);
    const shown = live.rows.get(tid);
    // An exchange that comes again (a WebSocket's) is seen once.
    if (!shown) live.seen += 1;
    if (shown) {
      // An upgraded WebSocket's exchange again, with its messages so far.
      shown.msg = msg;
      live.dirty.add(tid);
      if (detail.msg && detail.msg.transaction_id === msg.transaction_id && detail.from === liveTable) {
        detail.msg = msg;
        detail.stale = true;
      }
    } else {
      live.pending.push(msg);
      // Never more than a table's worth waiting: what would be pushed out at once is let go.
      if (live.pending.length > 2 * MAX_ROWS) live.pending.splice(0, live.pending.length - MAX_ROWS);
    }
    schedule();
  }

  function schedule() {
    if (!live.frame) live.frame = requestAnimationFrame(flush);
  }

  /** Once a frame: the exchanges come since the last, newest on top, the oldest cut. */
  function flush() {
    live.frame = 0;
    if (!live.paused) {
      for (const tid of live.dirty) {
        const row = live.rows.get(tid);
        if (row) fillRow(row.tr, row.msg);
      }
      live.dirty.clear();
      let batch = live.pending;
      live.pending = [];
      if (batch.length > MAX_ROWS) batch = batch.slice(batch.length - MAX_ROWS);
      if (batch.length) {
        const frag = document.createDocumentFragment();
        for (let i = batch.length - 1; i >= 0; i -= 1) {
          const msg = batch[i];
          const tid = String(msg.transaction_id);
          const known = live.rows.get(tid);
          if (known) {
            // Came twice in one batch: the newer (already placed) wins.
            continue;
          }
          const tr = makeRow(msg);
          tr.dataset.tid = tid;
          live.rows.set(tid, { msg, tr });
          frag.append(tr);
        }
        liveRows.prepend(frag);
        while (live.rows.size > MAX_ROWS) {
          const last = liveRows.lastElementChild;
          if (!last) break;
          live.rows.delete(last.dataset.tid);
          if (liveTable.selected === last) liveTable.select(null);
          last.remove();
        }
        $('live-empty').hidden = live.rows.size > 0;
      }
      if (detail.stale) {
        detail.stale = false;
        renderDetail();
      }
    }
    showCounts();
  }

  function showCounts() {
    const pending = live.paused ? ` · ${live.pending.length} waiting` : '';
    $('counts').textContent =
      `seen ${live.seen} · shown ${live.rows.size} of ${MAX_ROWS} at most · missed ${live.missed}${pending}`;
  }

  function setPaused(paused) {
    live.paused = paused;
    const b = $('pause');
    b.setAttribute('aria-pressed', String(paused));
    b.textContent = paused ? 'Resume' : 'Pause';
    if (conn.state === 'connected' || conn.state === 'paused') {
      setConn(paused ? 'paused' : 'connected');
    }
    schedule();
  }

  $('pause').addEventListener('click', () => setPaused(!live.paused));

  $('clear').addEventListener('click', () => {
    liveRows.replaceChildren();
    live.rows.clear();
    live.dirty.clear();
    live.pending = [];
    live.seen = 0;
    live.missed = 0;
    liveTable.select(null);
    $('live-empty').hidden = false;
    showCounts();
  });

  // ---- the stream ---------------------------------------------------------------------

  const conn = { state: 'connecting', ctl: null, backoff: 500, retry: 0 };

  const CONN_TEXT = {
    connecting: 'connecting…',
    connected: 'live',
    paused: 'live, paused',
    unauthorized: 'needs the token',
  };

  function setConn(state, text) {
    conn.state = state;
    const p = $('conn');
    p.dataset.state = state;
    p.textContent = text || CONN_TEXT[state] || state;
  }

  function filterQuery() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(live.filter)) if (v) q.set(k, v);
    const s = q.toString();
    return s ? `?${s}` : '';
  }

  /** Opens (or reopens) `/traffic/stream` with the filter; reconnects with backoff. */
  async function openStream() {
    if (conn.ctl) conn.ctl.abort();
    clearTimeout(conn.retry);
    const ctl = new AbortController();
    conn.ctl = ctl;
    let connectedAt = 0;
    setConn('connecting');
    try {
      // fetch, not EventSource: EventSource cannot send the Authorization header.
      const resp = await fetch(`/traffic/stream${filterQuery()}`, {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        signal: ctl.signal,
        cache: 'no-store',
      });
      // A newer stream took over meanwhile: this one has nothing more to say.
      if (conn.ctl !== ctl) return;
      if (resp.status === 401) {
        setConn('unauthorized');
        askToken();
        return;
      }
      if (resp.status === 400) {
        const [message] = await readError(resp);
        if (conn.ctl !== ctl) return;
        setConn('error', 'filter refused');
        say(`The filter was refused: ${message}`);
        return;
      }
      if (!resp.ok || !resp.body) {
        const [message] = await readError(resp);
        throw new Error(message);
      }
      setConn(live.paused ? 'paused' : 'connected');
      connectedAt = Date.now();
      await readEvents(resp.body);
      throw new Error('the stream ended');
    } catch (e) {
      if (ctl.signal.aborted || conn.ctl !== ctl) return;
      // A stream that lasted is a fresh start; one cut at once backs off further.
      if (connectedAt && Date.now() - connectedAt > 5000) conn.backoff = 500;
      const wait = conn.backoff * (0.75 + Math.random() / 2);
      conn.backoff = Math.min(conn.backoff * 2, 10000);
      setConn('closed', `disconnected (${e.message}); again in ${Math.round(wait / 100) / 10} s`);
      conn.retry = setTimeout(openStream, wait);
    }
  }

  /** Server-Sent Events from a body: events are blocks ended by an empty line. */
  async function readEvents(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      if (buf.indexOf('\r') >= 0 && !buf.endsWith('\r')) buf = buf.replace(/\r\n?/g, '\n');
      const blocks = buf.split('\n\n');
      buf = blocks.pop();
      for (const block of blocks) dispatch(block);
    }
  }

  function dispatch(block) {
    let name = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line[0] === ':') continue; // a keep-alive comment
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
    }
    if (!data.length) return;
    let parsed;
    try {
      parsed = JSON.parse(data.join('\n'));
    } catch {
      return;
    }
    if (name === 'exchange') onExchange(parsed);
    else if (name === 'missed') {
      live.missed += Number(parsed.missed) || 0;
      schedule();
    }
  }

  // ---- filters --------------------------------------------------------------------------

  const FILTERS = { method: 'f-method', path: 'f-path', status: 'f-status', host: 'f-host' };

  $('filters').addEventListener('submit', (e) => {
    e.preventDefault();
    const f = {};
    for (const [k, id] of Object.entries(FILTERS)) f[k] = $(id).value.trim();
    live.filter = f;
    say('');
    openStream();
  });

  $('f-reset').addEventListener('click', () => {
    for (const id of Object.values(FILTERS)) $(id).value = '';
    live.filter = {};
    say('');
    openStream();
  });

  // ---- the detail of one exchange ---------------------------------------------------------

  const detail = { msg: null, from: null, stale: false };

  function detailOpen() {
    return !$('detail').hidden;
  }

  function showDetail(msg, from) {
    detail.msg = msg;
    detail.from = from;
    $('detail').hidden = false;
    $('main').classList.add('with-detail');
    renderDetail();
  }

  function closeDetail() {
    if (!detailOpen()) return;
    $('detail').hidden = true;
    $('main').classList.remove('with-detail');
    const from = detail.from;
    detail.msg = null;
    detail.from = null;
    if (from && !from.wrap.closest('[hidden]')) from.wrap.focus();
  }

  $('detail-close').addEventListener('click', closeDetail);

  function headersTable(headers) {
    const names = headers ? Object.keys(headers) : [];
    if (!names.length) return el('p', 'note', 'none');
    const t = el('table', 'headers');
    const body = el('tbody');
    for (const name of names) {
      const values = Array.isArray(headers[name]) ? headers[name] : [headers[name]];
      for (const v of values) body.append(el('tr', null, el('td', null, name), el('td', null, String(v))));
    }
    t.append(body);
    return t;
  }

  function decodeBase64(data) {
    try {
      const bin = atob(data);
      const out = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
      return out;
    } catch {
      return new Uint8Array(0);
    }
  }

  function hexDump(b) {
    const lines = [];
    const n = Math.min(b.length, SHOW_HEX);
    for (let off = 0; off < n; off += 16) {
      const row = b.subarray(off, Math.min(off + 16, n));
      let hex = '';
      let text = '';
      for (let i = 0; i < 16; i += 1) {
        if (i < row.length) {
          hex += `${row[i].toString(16).padStart(2, '0')} `;
          text += row[i] >= 0x20 && row[i] < 0x7f ? String.fromCharCode(row[i]) : '.';
        } else {
          hex += '   ';
        }
        if (i === 7) hex += ' ';
      }
      lines.push(`${off.toString(16).padStart(8, '0')}  ${hex} ${text}`);
    }
    return lines.join('\n');
  }

  function looksJson(contentType, text) {
    if (/\bjson\b/i.test(contentType)) return true;
    const t = text.trimStart();
    return t.startsWith('{') || t.startsWith('[');
  }

  /** A body: JSON pretty-printed, text as text, binary as a hex dump; sizes and cuts said. */
  function bodyView(body, headers) {
    const box = document.createDocumentFragment();
    if (!body || (!body.size && !body.data)) {
      box.append(el('p', 'note', 'no body'));
      return box;
    }
    const binary = body.encoding === 'base64';
    const data = typeof body.data === 'string' ? body.data : '';
    const raw = binary ? decodeBase64(data) : null;
    const kept = binary ? raw.length : new TextEncoder().encode(data).length;
    let note = `${bytes(body.size)}${binary ? ', binary' : ''}`;
    if (body.truncated) note += ` — truncated: ${bytes(kept)} of ${bytes(body.size)} kept`;
    const pre = el('pre', binary ? 'hex' : null);
    if (binary) {
      pre.textContent = hexDump(raw);
      if (raw.length > SHOW_HEX) note += ` — the first ${bytes(SHOW_HEX)} shown`;
    } else {
      let text = data;
      if (looksJson(header(headers, 'content-type'), text) && !body.truncated) {
        try {
          text = JSON.stringify(JSON.parse(text), null, 2);
          note += ', JSON';
        } catch {
          // Not JSON after all: shown as it is.
        }
      }
      if (text.length > SHOW_TEXT) {
        note += ` — the first ${bytes(SHOW_TEXT)} shown`;
        text = text.slice(0, SHOW_TEXT);
      }
      pre.textContent = text;
    }
    box.append(el('p', 'note', note));
    if (kept || body.data) box.append(pre);
    return box;
  }

  /** WebSocket messages the detail draws: the last ones (a connection may list 10,000). */
  const WS_SHOWN = 200;

  function wsMessages(all) {
    const t = el('table', 'headers');
    const body = el('tbody');
    const kinds = { 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };
    const list = all.length > WS_SHOWN ? all.slice(-WS_SHOWN) : all;
    if (list.length < all.length) {
      body.append(el('tr', null, el('td', null), el('td', 'note', `${all.length - list.length} earlier messages not shown`)));
    }
    for (const m of list) {
      const dir = m.type === 'send' ? '→ sent' : '← received';
      const d = m.data || {};
      let what;
      if (d.encoding === 'base64') what = hexDump(decodeBase64(d.data || '').subarray(0, 64));
      else what = String(d.data || '');
      if (what.length > 2000) what = `${what.slice(0, 2000)}…`;
      const kind = kinds[m.opcode] || `opcode ${m.opcode}`;
      const info = `${dir} ${kind}, ${bytes(d.size)}${d.truncated ? ' (truncated)' : ''}${m.closeCode ? `, code ${m.closeCode}` : ''}`;
      body.append(el('tr', null, el('td', null, clock(m.time)), el('td', null, el('div', 'note', info), el('pre', null, what))));
    }
    t.append(body);
    return t;
  }

  function renderDetail() {
    const msg = detail.msg;
    if (!msg) return;
    const q = msg.request || {};
    const r = msg.response;
    $('detail-title').textContent = `${q.method || ''} ${q.uri || ''}`;
    const out = [];
    out.push(el('p', 'note', `transaction ${msg.transaction_id || msg.transactionId || ''}`));
    out.push(el('h3', null, 'Request'));
    out.push(el('p', 'line', `${q.method || ''} ${q.uri || ''} ${q.clientProtocol || ''}`));
    out.push(el('p', 'note', dateTime(q.createdAt)));
    out.push(el('h4', null, 'Headers'));
    out.push(headersTable(q.headers));
    out.push(el('h4', null, 'Body'));
    out.push(bodyView(q.body, q.headers));
    out.push(el('h3', null, 'Response'));
    if (!r) {
      out.push(el('p', 'note', 'no response (yet)'));
    } else {
      out.push(el('p', `line s${String(r.statusCode)[0]}`, `${r.clientProtocol || ''} ${r.statusCode} ${r.statusDescription || ''}`));
      out.push(el('p', 'note', `${dateTime(r.createdAt)} · ${duration(msg)} after the request`));
      out.push(el('h4', null, 'Headers'));
      out.push(headersTable(r.headers));
      out.push(el('h4', null, 'Body'));
      out.push(bodyView(r.body, r.headers));
      if (r.trailers) {
        out.push(el('h4', null, 'Trailers'));
        out.push(headersTable(r.trailers));
      }
      if (Array.isArray(r.webSocketMessages)) {
        out.push(el('h3', null, `WebSocket messages (${r.webSocketMessages.length})`));
        out.push(wsMessages(r.webSocketMessages));
      }
    }
    $('detail-body').replaceChildren(...out);
  }

  // ---- recordings -------------------------------------------------------------------------

  const recs = { rows: new Map(), list: [], busy: false };

  function recState(r) {
    if (r.failure) return 'failed';
    if (r.startedAt && !r.stoppedAt) return 'running';
    if (r.stoppedAt) return 'stopped';
    return 'new';
  }

  async function act(what, fn) {
    try {
      await fn();
    } catch (e) {
      if (e.status === 409 && e.body && e.body.busyWith) {
        // 409 busy names the running recording by id: say its name.
        const running = recs.list.find((r) => r.id === e.body.busyWith);
        const name = running ? `"${running.name}"` : e.body.busyWith;
        say(`${what}: the recording ${name} is running; stop it first.`);
      } else if (e.status !== 401) {
        say(`${what}: ${e.message}`);
      }
    }
    refreshRecordings();
  }

  function recordingRow(id) {
    const cells = {
      name: el('td'),
      state: el('td'),
      count: el('td', 'num'),
      created: el('td', 'nowrap'),
      actions: el('td'),
    };
    const rec = () => recs.list.find((r) => r.id === id);
    const label = () => (rec() ? rec().name : id);
    const buttons = {
      start: button('Start', () => act(`Start ${label()}`, async () => {
        await api('POST', `/recording/${encodeURIComponent(id)}/start`);
        say(`Recording "${label()}" started.`, 'info');
      })),
      stop: button('Stop', () => act(`Stop ${label()}`, async () => {
        await api('POST', `/recording/${encodeURIComponent(id)}/stop`);
        say(`Recording "${label()}" stopped.`, 'info');
      })),
      traffic: button('Traffic', () => {
        recTraffic.back = [];
        openRecordingTraffic(id, 0);
      }),
      har: button('Export HAR', () => act(`Export ${label()}`, () => exportHar(id, label()))),
      del: button('Delete', () => {
        const r = rec();
        const n = r ? r.count : 0;
        if (!window.confirm(`Delete the recording "${label()}" and its ${n} exchanges?`)) return;
        act(`Delete ${label()}`, async () => {
          await api('DELETE', `/recording/${encodeURIComponent(id)}`);
          if (recTraffic.id === id) $('rec-traffic').hidden = true;
          say(`Recording "${label()}" deleted.`, 'info');
        });
      }, 'danger'),
    };
    const actions = el('div', 'actions', buttons.start, buttons.stop, buttons.traffic, buttons.har, buttons.del);
    cells.actions.append(actions);
    const tr = el('tr', null, cells.name, cells.state, cells.count, cells.created, cells.actions);
    tr.dataset.id = id;
    return { tr, cells, buttons };
  }

  function fillRecording(row, r) {
    const state = recState(r);
    row.cells.name.replaceChildren(el('div', null, r.name), r.description ? el('div', 'sub', r.description) : '');
    row.cells.state.replaceChildren(el('span', `state-${state}`, state));
    if (r.failure) row.cells.state.append(el('div', 'sub', String(r.failure.reason || '')));
    row.cells.count.textContent = r.count;
    row.cells.created.textContent = dateTime(r.createdAt);
    row.buttons.start.disabled = state === 'running';
    row.buttons.stop.disabled = state !== 'running';
    for (const b of Object.values(row.buttons)) {
      b.setAttribute('aria-label', `${b.textContent}: ${r.name}`);
    }
  }

  async function refreshRecordings() {
    if (recs.busy) return;
    recs.busy = true;
    try {
      const data = await api('GET', '/recording');
      const list = Array.isArray(data && data.recordings) ? data.recordings : [];
      recs.list = list;
      const tbody = $('rec-rows');
      const keep = new Set();
      list.forEach((r, i) => {
        const id = String(r.id);
        keep.add(id);
        let row = recs.rows.get(id);
        if (!row) {
          row = recordingRow(id);
          recs.rows.set(id, row);
        }
        fillRecording(row, r);
        // Rows stay in place (focus with them) unless the order changed.
        if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
      });
      for (const [id, row] of recs.rows) {
        if (!keep.has(id)) {
          row.tr.remove();
          recs.rows.delete(id);
        }
      }
      $('rec-empty').hidden = list.length > 0;
    } catch (e) {
      if (e.status !== 401) say(`Recordings: ${e.message}`);
    } finally {
      recs.busy = false;
    }
  }

  $('rec-create').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('rec-name').value.trim();
    const description = $('rec-desc').value.trim();
    if (!name) return;
    act('Create', async () => {
      const r = await api('POST', '/recording', { name, description });
      $('rec-name').value = '';
      $('rec-desc').value = '';
      say(`Recording "${r.name}" created.`, 'info');
    });
  });

  /** The HAR export, fetched with the token and handed to the browser as a download. */
  async function exportHar(id, name) {
    const resp = await fetch(`/recording/${encodeURIComponent(id)}/har`, { headers: authHeaders(), cache: 'no-store' });
    if (resp.status === 401) {
      askToken();
      throw new ApiError(401, 'the management API needs its token');
    }
    if (!resp.ok) {
      const [message] = await readError(resp);
      throw new ApiError(resp.status, message);
    }
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = `${String(name).replace(/[^A-Za-z0-9._-]+/g, '_') || 'recording'}.har`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- a recording's traffic, a page at a time ----------------------------------------------

  /** `back`: the starts of the pages before this one (a page may end early, at 16 MiB). */
  const recTraffic = { id: null, start: 0, next: null, back: [], docs: new Map() };
  const recRows = $('rec-traffic-rows');
  // The same columns as the live table: its colgroup and head, copied once.
  for (const part of ['colgroup', 'thead']) {
    recRows.before($('live-table').querySelector(part).cloneNode(true));
  }
  const recTable = new ExchangeTable($('rec-wrap'), recRows, (tr) => recTraffic.docs.get(tr.id));

  async function openRecordingTraffic(id, start) {
    try {
      const page = await api('GET', `/recording/${encodeURIComponent(id)}/traffic?start=${start}&offset=${PAGE}`);
      if (recTraffic.id !== id) recTraffic.back = [];
      recTraffic.id = id;
      recTraffic.start = start;
      recTraffic.next = page.next === null || page.next === undefined ? null : page.next;
      recTraffic.docs.clear();
      recTable.select(null);
      const rows = [];
      for (const doc of page.traffic || []) {
        const tr = makeRow(doc);
        recTraffic.docs.set(tr.id, doc);
        rows.push(tr);
      }
      recRows.replaceChildren(...rows);
      const rec = recs.list.find((r) => r.id === id);
      $('rec-traffic-title').textContent = `Traffic of "${rec ? rec.name : id}"`;
      const n = (page.traffic || []).length;
      $('rec-range').textContent = n
        ? `${start + 1}–${start + n} of ${page.count}`
        : `nothing from ${start + 1} (${page.count} in all)`;
      $('rec-prev').disabled = start === 0;
      $('rec-next').disabled = recTraffic.next === null;
      $('rec-traffic').hidden = false;
    } catch (e) {
      if (e.status !== 401) say(`Traffic: ${e.message}`);
    }
  }

  $('rec-prev').addEventListener('click', () => {
    const start = recTraffic.back.pop();
    openRecordingTraffic(recTraffic.id, start === undefined ? 0 : start);
  });
  $('rec-next').addEventListener('click', () => {
    if (recTraffic.next === null) return;
    recTraffic.back.push(recTraffic.start);
    openRecordingTraffic(recTraffic.id, recTraffic.next);
  });
  $('rec-reload').addEventListener('click', () => openRecordingTraffic(recTraffic.id, recTraffic.start));

  // ---- modules --------------------------------------------------------------------------------

  const mods = { rows: new Map(), busy: false };

  /** Counters as `name value`, nested ones with dotted names. */
  function flatCounters(obj, prefix, out) {
    for (const [k, v] of Object.entries(obj || {})) {
      const name = prefix ? `${prefix}.${k}` : k;
      if (v && typeof v === 'object' && !Array.isArray(v)) flatCounters(v, name, out);
      else out.push([name, Array.isArray(v) ? v.join(', ') : String(v)]);
    }
    return out;
  }

  async function refreshModules() {
    if (mods.busy) return;
    mods.busy = true;
    try {
      const data = await api('GET', '/status');
      const list = Array.isArray(data && data.message) ? data.message : [];
      const tbody = $('mod-rows');
      const keep = new Set();
      list.forEach((m, i) => {
        const name = String(m.module);
        keep.add(name);
        let row = mods.rows.get(name);
        if (!row) {
          row = { tr: el('tr', null, el('td'), el('td'), el('td'), el('td'), el('td')) };
          mods.rows.set(name, row);
        }
        const c = row.tr.children;
        c[0].textContent = name;
        c[1].textContent = m.kind || '';
        c[2].replaceChildren(el('span', `state-${m.state}`, m.state || ''));
        c[3].textContent = m.state === 'error' ? String(m.status || '') : dateTime(m.since || m.status);
        c[3].className = m.state === 'error' ? 'state-error' : 'nowrap';
        const counters = el('div', 'counters');
        for (const [k, v] of flatCounters(m.counters, '', [])) counters.append(el('span', null, `${k} `, el('b', null, v)));
        c[4].replaceChildren(counters);
        if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
      });
      for (const [name, row] of mods.rows) {
        if (!keep.has(name)) {
          row.tr.remove();
          mods.rows.delete(name);
        }
      }
      const p = data && data.proxy;
      if (p) {
        const open = p.connections ? p.connections.open : '?';
        $('proxy-info').textContent =
          `Proxy ${p.listening ? 'listening on' : 'stopped, bound to'} ${p.bind} → ${p.upstream} · ${open} connections open`;
      }
    } catch (e) {
      if (e.status !== 401) say(`Modules: ${e.message}`);
    } finally {
      mods.busy = false;
    }
  }

  // ---- keys -----------------------------------------------------------------------------------

  document.addEventListener('keydown', (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const t = e.target;
    const typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement;
    if (e.key === 'Escape') {
      if (typing && t.closest('#filters')) {
        t.blur();
        $('live-wrap').focus();
        return;
      }
      if (detailOpen()) {
        e.preventDefault();
        closeDetail();
      }
      return;
    }
    if (typing) return;
    if (e.key === '/') {
      e.preventDefault();
      showView('live');
      $('f-path').focus();
    } else if (e.key === 'p' && view === 'live') {
      e.preventDefault();
      setPaused(!live.paused);
    }
  });

  // ---- start ----------------------------------------------------------------------------------

  showCounts();
  openStream();
  refreshRecordings();
})();
