/*
 * Kiln builder workspace: a dependency-free single-page app served as static
 * files. It talks only to the /admin API (docs/API.md) with a bearer token
 * kept in sessionStorage; everything the model produced is shown as text
 * (never as markup) or inside a sandboxed iframe.
 *
 * Contents:
 *   SSEParser       incremental text/event-stream parser (exported for tests)
 *   backoffDelay    reconnect delay schedule (exported for tests)
 *   ApiError, api   fetch wrapper: auth header, JSON bodies, uniform errors
 *   RunStream       reads one run's stream with fetch(), resumes after drops
 *   errors/notices  dismissable error banner, transient notices
 *   Turn            one run in the conversation: messages and event cards
 *   Workspace       one open app: chat, files, checkpoints, diff, preview,
 *                   publish, undo
 *   views, routing  sign-in, app list, hash routes, start-up
 */

/* ------------------------------------------------------------------ */
/* SSE parsing                                                         */
/* ------------------------------------------------------------------ */

/* A line or an event larger than these is not something Kiln sends: treat
 * the stream as broken rather than growing without bound. */
const SSE_MAX_LINE_CHARS = 4 * 1024 * 1024;
const SSE_MAX_DATA_CHARS = 8 * 1024 * 1024;

export class SSEError extends Error {}

/**
 * Incremental parser for the text/event-stream format (WHATWG HTML, "Server-
 * sent events"): feed it decoded text in arbitrary pieces with push(); it
 * calls onEvent({type, data, id}) at each blank line that ends an event with
 * data, and onComment(text) for comment lines. Lines may end in CRLF, LF or
 * CR, including a CRLF split across two pieces.
 */
export class SSEParser {
  constructor(onEvent, onComment = () => {}) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.pending = '';
    this.skipLeadingLF = false;
    this.atStart = true;
    this.dataLines = [];
    this.dataChars = 0;
    this.eventType = '';
    this.lastEventId = '';
    this.retryMs = null;
  }

  push(text) {
    if (this.atStart && text.length > 0) {
      this.atStart = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let s = this.pending + text;
    let pos = 0;
    if (this.skipLeadingLF && s.length > 0) {
      if (s[0] === '\n') pos = 1;
      this.skipLeadingLF = false;
    }
    for (;;) {
      const cr = s.indexOf('\r', pos);
      const lf = s.indexOf('\n', pos);
      let end;
      if (cr < 0) end = lf;
      else if (lf < 0) end = cr;
      else end = Math.min(cr, lf);
      if (end < 0) break;
      const line = s.slice(pos, end);
      if (s[end] === '\r') {
        if (end + 1 < s.length) {
          pos = s[end + 1] === '\n' ? end + 2 : end + 1;
        } else {
          pos = end + 1;
          this.skipLeadingLF = true; // the LF of this CRLF may come in the next piece
        }
      } else {
        pos = end + 1;
      }
      this.line(line);
    }
    this.pending = s.slice(pos);
    if (this.pending.length > SSE_MAX_LINE_CHARS) {
      throw new SSEError('event stream line too long');
    }
  }

  line(line) {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line[0] === ':') {
      this.onComment(line.slice(1).trimStart());
      return;
    }
    const colon = line.indexOf(':');
    let field = line;
    let value = '';
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
    }
    switch (field) {
      case 'event':
        this.eventType = value;
        break;
      case 'data':
        this.dataChars += value.length + 1;
        if (this.dataChars > SSE_MAX_DATA_CHARS) throw new SSEError('event stream event too large');
        this.dataLines.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retryMs = Number(value);
        break;
      default:
        break; // unknown fields are ignored, as the format requires
    }
  }

  dispatch() {
    const type = this.eventType || 'message';
    this.eventType = '';
    if (this.dataLines.length === 0) return;
    const data = this.dataLines.join('\n');
    this.dataLines = [];
    this.dataChars = 0;
    this.onEvent({ type, data, id: this.lastEventId });
  }
}

/** Delay before reconnect attempt n (1, 2, ...): 0.5 s doubling to 4 s, ±25 % jitter. */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(4000, 250 * 2 ** Math.min(Math.max(attempt, 1), 5));
  return Math.round(base * (0.75 + 0.5 * random()));
}

const TERMINAL_EVENT_TYPES = new Set(['run.completed', 'run.failed']);
const TERMINAL_RUN_STATUSES = new Set(['completed', 'failed', 'cancelled']);
const ACTIVE_RUN_STATUSES = new Set(['queued', 'running']);

/* Only start the app in a browser: Node imports this module to test the
 * parser. */
const IN_BROWSER = typeof window !== 'undefined' && typeof document !== 'undefined';

/* ------------------------------------------------------------------ */
/* API access                                                          */
/* ------------------------------------------------------------------ */

const TOKEN_KEY = 'kiln.token';
const STREAM_IDLE_MS = 45000; // keep-alives come every 15 s; silence this long means a dead link

export class ApiError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.extra = extra;
  }
}

let authToken = '';

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${authToken}`, ...extra };
}

function networkError(err) {
  if (err instanceof ApiError) return err;
  if (err && err.name === 'AbortError') return err;
  const detail = err && err.message ? err.message : String(err);
  return new ApiError(0, 'network_error', `Could not reach the Kiln server (${detail}). Check your connection; the page retries what it can.`);
}

async function errorFromResponse(res) {
  let text = '';
  try {
    text = await res.text();
  } catch {
    /* the body is gone: report the status alone */
  }
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.code === 'string') {
      const extra = { ...body.error };
      delete extra.code;
      delete extra.message;
      return new ApiError(res.status, body.error.code, String(body.error.message ?? ''), extra);
    }
  } catch {
    /* not JSON: nginx's own error pages land here */
  }
  const reason = res.status >= 500
    ? 'the server or its gateway is unavailable'
    : 'the server answered without an error description';
  return new ApiError(res.status, `http_${res.status}`, `HTTP ${res.status} ${res.statusText || ''}: ${reason}.`.replace(/\s+:/, ':'));
}

/**
 * Calls the API. body (if given) is sent as JSON. Returns the parsed JSON
 * answer (null for 204), or the Response itself with {raw:true}. Throws
 * ApiError for every failure, network ones included (code network_error);
 * a 401 also signs out, except while signing in ({signingIn:true}).
 */
async function api(method, path, body, { signal, raw = false, signingIn = false } = {}) {
  const init = { method, headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store', signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw networkError(err);
  }
  if (!res.ok) {
    const err = await errorFromResponse(res);
    if (err.status === 401 && !signingIn) onUnauthorized(err);
    throw err;
  }
  if (raw) return res;
  if (res.status === 204) return null;
  let text;
  try {
    text = await res.text();
  } catch (err) {
    throw networkError(err);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(res.status, 'bad_response', `The server's answer to ${method} ${path} is not JSON.`);
  }
}

function isRetryableStatus(status) {
  return status === 0 || status === 408 || status === 425 || status === 429 || status >= 500;
}

/* Paths from the API (stream_url, events_url) are used only when they stay
 * on this origin's /admin tree, so the token never goes anywhere else. */
function sameOriginAdminPath(p, fallback) {
  return typeof p === 'string' && /^\/admin\/[^\s]*$/.test(p) && !p.startsWith('//') ? p : fallback;
}

function encodePath(path) {
  return String(path).split('/').map(encodeURIComponent).join('/');
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/* ------------------------------------------------------------------ */
/* Run stream                                                          */
/* ------------------------------------------------------------------ */

/**
 * Follows one run's event stream until its terminal event. Reads
 * GET .../stream with fetch() (EventSource cannot send Authorization),
 * resumes after a drop with Last-Event-ID and ?after=N, and — when a stream
 * ends early although the run is over — fetches what is left from the
 * events route. Duplicate suppression is the receiver's job (by seq).
 *
 * opts: streamUrl, eventsUrl, runUrl,
 *       lastSeq()            highest seq the receiver has applied
 *       onEnvelope(env)      each event envelope, in order
 *       onState(state, err)  'connecting' | 'live' | 'reconnecting' | 'idle'
 *       onDone(run|null)     terminal event seen (or run found over)
 *       onFatal(err)         gave up (4xx that retrying cannot fix)
 *       onBadEvent(err)      an event whose data was not JSON
 */
class RunStream {
  constructor(opts) {
    this.o = opts;
    this.stopped = false;
    this.done = false;
    this.connectedOnce = false;
    this.attempt = 0;
    this.ctrl = null;
    this.wait = new AbortController();
  }

  start() {
    this.loop().catch((err) => {
      if (!this.stopped) this.o.onFatal(err);
    });
    return this;
  }

  stop() {
    this.stopped = true;
    this.ctrl?.abort();
    this.wait.abort();
  }

  async loop() {
    while (!this.stopped && !this.done) {
      this.o.onState(this.connectedOnce ? 'reconnecting' : 'connecting');
      let failure = null;
      let endedCleanly = false;
      try {
        await this.readOnce();
        endedCleanly = true;
      } catch (err) {
        failure = err;
      }
      if (this.stopped || this.done) break;
      if (failure instanceof ApiError && !isRetryableStatus(failure.status)) {
        this.o.onFatal(failure);
        break;
      }
      if (endedCleanly || failure instanceof SSEError) {
        /* The server closed the stream before the terminal event: the run
         * may have ended while we were away; ask it instead of spinning. */
        try {
          if (await this.catchUpIfOver()) break;
        } catch (err) {
          if (err instanceof ApiError && !isRetryableStatus(err.status)) {
            this.o.onFatal(err);
            break;
          }
        }
      }
      this.attempt += 1;
      this.o.onState('reconnecting', failure);
      await sleep(backoffDelay(this.attempt), this.wait.signal);
    }
    if (!this.stopped) this.o.onState('idle');
  }

  async readOnce() {
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    const after = this.o.lastSeq();
    const headers = authHeaders({ Accept: 'text/event-stream' });
    if (after > 0) headers['Last-Event-ID'] = String(after);
    let idleTimer = 0;
    const arm = () => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => ctrl.abort(), STREAM_IDLE_MS);
    };
    try {
      arm();
      let res;
      try {
        res = await fetch(`${this.o.streamUrl}?after=${after}`, { headers, signal: ctrl.signal, cache: 'no-store' });
      } catch (err) {
        throw networkError(err);
      }
      if (!res.ok) {
        const err = await errorFromResponse(res);
        if (err.status === 401) onUnauthorized(err);
        throw err;
      }
      const ctype = (res.headers.get('Content-Type') || '').toLowerCase();
      if (!ctype.startsWith('text/event-stream')) {
        throw new ApiError(res.status, 'bad_stream', `The run stream answered with ${ctype || 'no content type'} instead of text/event-stream.`);
      }
      this.connectedOnce = true;
      this.o.onState('live');
      const reader = res.body.getReader();
      const decoder = new TextDecoder('utf-8');
      const parser = new SSEParser((ev) => this.dispatch(ev));
      try {
        for (;;) {
          let chunk;
          try {
            chunk = await reader.read();
          } catch (err) {
            throw networkError(err);
          }
          if (chunk.done) break;
          arm();
          this.attempt = 0;
          parser.push(decoder.decode(chunk.value, { stream: true }));
          if (this.done || this.stopped) break;
        }
      } finally {
        reader.cancel().catch(() => {});
      }
    } finally {
      clearTimeout(idleTimer);
      ctrl.abort();
    }
  }

  dispatch(ev) {
    if (this.done || this.stopped) return;
    let env;
    try {
      env = JSON.parse(ev.data);
    } catch {
      this.o.onBadEvent(new ApiError(0, 'bad_event', `A stream event (id ${ev.id || '?'}) was not valid JSON; it was skipped.`));
      return;
    }
    if (!env || typeof env !== 'object') return;
    if (typeof env.type !== 'string') env.type = ev.type;
    if (!Number.isSafeInteger(env.seq)) {
      const n = Number(ev.id);
      if (Number.isSafeInteger(n) && n > 0) env.seq = n;
    }
    this.deliver(env);
  }

  deliver(env) {
    this.o.onEnvelope(env);
    if (TERMINAL_EVENT_TYPES.has(env.type)) {
      this.done = true;
      this.o.onDone(null);
    }
  }

  async catchUpIfOver() {
    const run = await api('GET', this.o.runUrl);
    if (!TERMINAL_RUN_STATUSES.has(run.status)) return false;
    for (let page = 0; page < 200 && !this.done && !this.stopped; page++) {
      const after = this.o.lastSeq();
      const res = await api('GET', `${this.o.eventsUrl}?after=${after}&limit=100`);
      const items = Array.isArray(res.items) ? res.items : [];
      for (const env of items) {
        if (this.done) break;
        this.deliver(env);
      }
      if (items.length === 0) break;
    }
    if (!this.done) {
      this.done = true;
      this.o.onDone(run);
    }
    return true;
  }
}

/* ------------------------------------------------------------------ */
/* DOM helpers                                                         */
/* ------------------------------------------------------------------ */

/** Builds an element. Strings become text nodes (never markup). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'value' || k === 'disabled' || k === 'hidden' || k === 'selected') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

/* True when nothing visible has the keyboard focus: the focused control was
 * hidden (a view switch, the run bar going away) or disabled while its
 * action runs, and the browser fell back to the body. */
function focusLost() {
  const el = document.activeElement;
  return !el || el === document.body || el.getClientRects().length === 0 || el.disabled === true;
}

/* Gives the focus to el when it has gone nowhere, so a keyboard user goes
 * on from the control they used instead of from the top of the page. */
function refocus(el) {
  if (el && !el.disabled && focusLost()) el.focus();
}

/* Replaces the children of a list that refreshes on its own (a run's
 * events, a tab opening): when the focus was on a control inside it, the
 * redrawn twin of that control (same keyAttr on its item, same data-testid)
 * gets the focus back. Without this a refresh that lands while a keyboard
 * user is in the list drops them onto the page body. */
function replaceKeepingFocus(list, keyAttr, ...children) {
  const el = document.activeElement;
  const inside = el && el !== list && list.contains(el);
  const key = inside ? el.closest(`[${keyAttr}]`)?.getAttribute(keyAttr) : null;
  const role = inside ? el.getAttribute('data-testid') : null;
  list.replaceChildren(...children);
  if (key === null || key === undefined || !role) return;
  for (const twin of list.querySelectorAll(`[data-testid="${CSS.escape(role)}"]`)) {
    if (twin.closest(`[${keyAttr}]`)?.getAttribute(keyAttr) === key) {
      refocus(twin);
      return;
    }
  }
}

const timeFmt = IN_BROWSER ? new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : null;
const relFmt = IN_BROWSER ? new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' }) : null;

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return timeFmt.format(d);
}

function relativeTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const s = Math.round((d.getTime() - Date.now()) / 1000);
  const a = Math.abs(s);
  if (a < 45) return relFmt.format(s, 'second');
  if (a < 2700) return relFmt.format(Math.round(s / 60), 'minute');
  if (a < 86400 * 1.5) return relFmt.format(Math.round(s / 3600), 'hour');
  if (a < 86400 * 30) return relFmt.format(Math.round(s / 86400), 'day');
  return formatTime(iso);
}

function timeEl(iso, attrs = {}) {
  return h('time', { datetime: iso, title: formatTime(iso), ...attrs }, relativeTime(iso));
}

export function formatDuration(ms) {
  if (!Number.isFinite(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function formatBytes(n) {
  if (!Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

function pathsOf(list) {
  if (!Array.isArray(list)) return [];
  return list.map((x) => (typeof x === 'string' ? x : x && typeof x.path === 'string' ? x.path : String(x)));
}

function clip(s, n) {
  s = String(s);
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

function randomId() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b); // randomUUID needs a secure context; this does not
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/* ------------------------------------------------------------------ */
/* Errors and notices                                                  */
/* ------------------------------------------------------------------ */

const shownErrors = new Map(); // key -> {el, count}

/** Shows an error in the banner: its code, message and where it happened. */
function showError(err, context = '') {
  if (err && err.name === 'AbortError') return;
  const code = err instanceof ApiError ? err.code : 'client_error';
  const message = err instanceof ApiError ? err.message : (err && err.message) || String(err);
  /* One outage fails every request at once: show it once, with a count. */
  if (code === 'network_error') context = 'Connection';
  const key = `${code}\u0000${message}\u0000${context}`;
  const box = $('errors');
  const seen = shownErrors.get(key);
  if (seen) {
    seen.count += 1;
    seen.countEl.textContent = ` ×${seen.count}`;
    box.append(seen.el); // move to the end, where new ones go
    return;
  }
  const countEl = h('span', { class: 'err-count' });
  const extras = [];
  if (err instanceof ApiError) {
    if (err.extra.field) extras.push(`field: ${err.extra.field}`);
    if (err.extra.run_id) extras.push(`run: #${err.extra.run_id}`);
    if (err.status) extras.push(`HTTP ${err.status}`);
  }
  const el = h('div', { class: 'err', 'data-testid': 'error-item', 'data-code': code },
    h('div', { class: 'err-text' },
      context ? h('span', { class: 'err-context' }, `${context}: `) : null,
      h('code', { class: 'err-code', 'data-testid': 'error-code' }, code),
      ' ',
      h('span', { class: 'err-message', 'data-testid': 'error-message' }, message),
      extras.length ? h('span', { class: 'err-extra' }, ` (${extras.join(', ')})`) : null,
      countEl),
    h('button', {
      type: 'button', class: 'ghost small', 'data-testid': 'error-dismiss', 'aria-label': `Dismiss error ${code}`,
      onclick: () => {
        el.remove();
        shownErrors.delete(key);
        box.hidden = box.childElementCount === 0;
      },
    }, 'Dismiss'));
  shownErrors.set(key, { el, count: 1, countEl });
  box.append(el);
  box.hidden = false;
  while (box.childElementCount > 6) {
    const first = box.firstElementChild;
    for (const [k, v] of shownErrors) if (v.el === first) shownErrors.delete(k);
    first.remove();
  }
}

function clearErrors() {
  shownErrors.clear();
  $('errors').replaceChildren();
  $('errors').hidden = true;
}

let noticeTimer = 0;
function notice(text) {
  const el = $('notice');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 7000);
}

/* Takes a notice down before its time, when what it said no longer holds. */
function clearNotice() {
  clearTimeout(noticeTimer);
  $('notice').hidden = true;
}

function setConnection(state) {
  const el = $('conn');
  const labels = { idle: 'Idle', connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' };
  el.dataset.state = state;
  el.querySelector('.conn-label').textContent = labels[state] || state;
}

/* ------------------------------------------------------------------ */
/* One run in the conversation                                         */
/* ------------------------------------------------------------------ */

const MAX_MESSAGE_CHARS = 2 * 1024 * 1024;

/** A card in the timeline with an expandable list of its raw events. */
function makeCard(kind, testid, attrs = {}) {
  const envs = [];
  const head = h('div', { class: 'ev-head' });
  const detail = h('div', { class: 'ev-detail' });
  const rawList = h('div', { class: 'ev-raw-list' });
  const summary = h('summary', {}, 'Raw event');
  const raw = h('details', { class: 'ev-raw', 'data-testid': 'event-payload' }, summary, rawList);
  const el = h('article', { class: `ev ev-${kind}`, 'data-testid': testid, 'data-seqs': '', ...attrs }, head, detail, raw);
  const renderRaw = () => {
    rawList.replaceChildren(...envs.map((env) => h('pre', { class: 'json', 'data-testid': 'event-json' }, JSON.stringify(env, null, 2))));
  };
  raw.addEventListener('toggle', () => { if (raw.open) renderRaw(); });
  return {
    el, head, detail,
    addRaw(env) {
      envs.push(env);
      el.dataset.seqs = envs.map((e) => e.seq).join(' ');
      summary.textContent = envs.length > 1 ? `Raw events (${envs.length})` : 'Raw event';
      if (raw.open) renderRaw();
    },
  };
}

function badge(text, kind) {
  return h('span', { class: `badge badge-${kind}` }, text);
}

function toolArgument(args) {
  if (!args || typeof args !== 'object') return '';
  for (const k of ['path', 'command', 'cmd', 'query', 'pattern', 'url', 'name']) {
    if (typeof args[k] === 'string') return args[k];
    if (Array.isArray(args[k])) return args[k].join(' ');
  }
  for (const v of Object.values(args)) if (typeof v === 'string') return v;
  return '';
}

class Turn {
  constructor(ws, run) {
    this.ws = ws;
    this.runId = run.id;
    this.run = run;
    this.status = run.status;
    this.lastSeq = 0;
    this.messages = new Map();
    this.tools = new Map();
    this.finished = false;
    this.statusEl = h('span', { class: 'turn-status' });
    this.el = h('section', { class: 'turn', 'data-testid': 'run', 'data-run-id': run.id, 'data-status': run.status, 'aria-label': `Run ${run.id}` },
      h('header', { class: 'turn-meta' },
        h('span', {}, `Run #${run.id}`),
        run.created_at ? timeEl(run.created_at) : null,
        this.statusEl),
      this.userEl = h('div', { class: 'msg user', 'data-testid': 'user-message' }, run.input || ''),
      this.body = h('div', { class: 'turn-body' }));
    this.setStatus(run.status);
  }

  setStatus(status) {
    if (!status) return;
    this.status = status;
    this.el.dataset.status = status;
    this.statusEl.replaceChildren(badge(status, status));
  }

  /** Applies one event envelope; returns false for one already applied. */
  apply(env) {
    if (Number.isSafeInteger(env.seq)) {
      if (env.seq <= this.lastSeq) return false;
      this.lastSeq = env.seq;
    }
    const p = env.payload && typeof env.payload === 'object' ? env.payload : {};
    if (this.status === 'queued' && env.type !== 'run.accepted') this.setStatus('running');
    switch (env.type) {
      case 'run.accepted':
        if (!this.userEl.textContent && typeof p.input === 'string') this.userEl.textContent = p.input;
        break;
      case 'assistant.delta':
        this.delta(p);
        break;
      case 'tool.started':
      case 'tool.completed':
      case 'tool.failed':
        this.tool(env, p);
        break;
      case 'revision.created':
        this.revision(env, p);
        break;
      case 'checkpoint.created':
        this.checkpoint(env, p);
        break;
      case 'run.completed':
      case 'run.failed':
        this.outcome(env, p);
        break;
      default:
        this.generic(env);
        break;
    }
    this.ws.scrollTimeline();
    return true;
  }

  delta(p) {
    const idx = Number.isSafeInteger(p.message_index) ? p.message_index : 0;
    let m = this.messages.get(idx);
    if (!m) {
      const text = document.createTextNode('');
      const el = h('div', { class: 'msg assistant', 'data-testid': 'assistant-message', 'data-message-index': idx },
        h('div', { class: 'msg-text' }, text));
      if (!this.finished) el.classList.add('streaming');
      this.body.append(el);
      m = { el, text };
      this.messages.set(idx, m);
    }
    if (p.restart === true) m.text.data = '';
    if (typeof p.text === 'string' && m.text.length < MAX_MESSAGE_CHARS) m.text.appendData(p.text);
  }

  tool(env, p) {
    const id = p.call_id !== undefined ? String(p.call_id) : `seq-${env.seq}`;
    let card = this.tools.get(id);
    if (!card) {
      card = makeCard('tool', 'tool-card', { 'data-call-id': id, 'data-tool': String(p.tool ?? '') });
      card.nameEl = h('span', { class: 'ev-title mono' }, String(p.tool ?? 'tool'));
      card.argEl = h('code', { class: 'ev-arg' });
      card.metaEl = h('span', { class: 'ev-meta', 'data-testid': 'tool-duration' });
      card.badgeEl = h('span', { class: 'ev-badge' });
      card.head.append(h('span', { class: 'ev-icon', 'aria-hidden': 'true' }), card.nameEl, card.argEl, card.metaEl, card.badgeEl);
      this.tools.set(id, card);
      this.body.append(card.el);
    }
    card.addRaw(env);
    if (env.type === 'tool.started') {
      const arg = toolArgument(p.arguments);
      if (arg) {
        card.argEl.textContent = clip(arg, 90);
        card.argEl.title = clip(arg, 2000);
      }
      if (!card.el.dataset.status) this.setToolStatus(card, this.finished ? 'unknown' : 'running');
      return;
    }
    if (p.tool) card.nameEl.textContent = String(p.tool);
    if (Number.isFinite(p.duration_ms)) {
      card.metaEl.textContent = formatDuration(p.duration_ms);
      card.metaEl.title = `took ${p.duration_ms} ms`;
    }
    if (env.type === 'tool.completed') {
      this.setToolStatus(card, 'completed');
      card.detail.replaceChildren(h('p', { class: 'ev-summary', 'data-testid': 'tool-summary' }, String(p.summary ?? '')));
    } else {
      this.setToolStatus(card, 'failed');
      const e = p.error && typeof p.error === 'object' ? p.error : {};
      card.detail.replaceChildren(h('p', { class: 'ev-error' },
        h('code', {}, String(e.code ?? 'error')), ' ', String(e.message ?? '')));
    }
  }

  setToolStatus(card, status) {
    card.el.dataset.status = status;
    const labels = { running: 'running', completed: 'done', failed: 'failed', unknown: 'no result' };
    card.badgeEl.replaceChildren(badge(labels[status] || status, status));
  }

  revision(env, p) {
    const added = pathsOf(p.added);
    const changed = pathsOf(p.changed);
    const deleted = pathsOf(p.deleted);
    const card = makeCard('revision', 'revision-card', { 'data-revision-id': String(p.revision_id ?? '') });
    card.head.append(h('span', { class: 'ev-icon', 'aria-hidden': 'true' }),
      h('span', { class: 'ev-title' }, `Revision #${p.revision_id ?? '?'}`),
      h('span', { class: 'counts' },
        h('span', { class: 'count-add', 'data-testid': 'count-added' }, `+${added.length} added`),
        h('span', { class: 'count-chg', 'data-testid': 'count-changed' }, `~${changed.length} changed`),
        h('span', { class: 'count-del', 'data-testid': 'count-deleted' }, `−${deleted.length} deleted`)));
    const lines = [];
    for (const [list, cls, sign] of [[added, 'add', '+'], [changed, 'chg', '~'], [deleted, 'del', '−']]) {
      for (const path of list.slice(0, 50)) lines.push(h('li', { class: `path-${cls}` }, `${sign} ${path}`));
    }
    if (lines.length) card.detail.append(h('ul', { class: 'path-list mono' }, lines));
    card.addRaw(env);
    this.body.append(card.el);
  }

  checkpoint(env, p) {
    const card = makeCard('checkpoint', 'checkpoint-card', { 'data-checkpoint-id': String(p.checkpoint_id ?? '') });
    card.head.append(h('span', { class: 'ev-icon', 'aria-hidden': 'true' }),
      h('span', { class: 'ev-title' }, `Checkpoint #${p.checkpoint_id ?? '?'}`),
      p.label ? h('span', { class: 'ev-arg' }, String(p.label)) : null);
    if (p.summary) card.detail.append(h('p', { class: 'ev-summary' }, String(p.summary)));
    card.addRaw(env);
    this.body.append(card.el);
  }

  outcome(env, p) {
    const status = env.type === 'run.completed' ? 'completed' : (p.status === 'cancelled' ? 'cancelled' : 'failed');
    const card = makeCard('outcome', 'run-outcome', { 'data-status': status });
    const titles = { completed: 'Run completed', failed: 'Run failed', cancelled: 'Run cancelled' };
    const facts = [];
    if (status === 'completed') {
      if (Number.isFinite(p.steps)) facts.push(plural(p.steps, 'step'));
      if (p.usage && Number.isFinite(p.usage.total_tokens)) facts.push(`${p.usage.total_tokens.toLocaleString()} tokens`);
      facts.push(p.changed ? `files changed${p.revision_id ? ` (revision #${p.revision_id})` : ''}` : 'no file changes');
    }
    card.head.append(h('span', { class: 'ev-icon', 'aria-hidden': 'true' }),
      h('span', { class: 'ev-title' }, titles[status]),
      facts.length ? h('span', { class: 'ev-meta' }, facts.join(' · ')) : null,
      h('span', { class: 'ev-badge' }, badge(status, status)));
    if (status !== 'completed') {
      const e = p.error && typeof p.error === 'object' ? p.error : {};
      card.detail.append(h('p', { class: 'ev-error', 'data-testid': 'run-error' },
        h('code', {}, String(e.code ?? status)), ' ', String(e.message ?? '')));
      const changedFiles = pathsOf(p.changed_files);
      if (changedFiles.length) {
        card.detail.append(h('p', { class: 'small-text muted' }, `Files changed before it stopped: ${changedFiles.slice(0, 20).join(', ')}${changedFiles.length > 20 ? ', …' : ''}`));
      }
    }
    card.addRaw(env);
    this.body.append(card.el);
    this.finish(status);
  }

  generic(env) {
    const card = makeCard('other', 'event-card', { 'data-type': String(env.type) });
    card.head.append(h('span', { class: 'ev-icon', 'aria-hidden': 'true' }), h('span', { class: 'ev-title mono' }, String(env.type)));
    card.addRaw(env);
    this.body.append(card.el);
  }

  /** Marks the run over: stops the streaming caret and any "running" tool. */
  finish(status) {
    if (status) this.setStatus(status);
    if (this.finished) return;
    this.finished = true;
    for (const m of this.messages.values()) m.el.classList.remove('streaming');
    for (const card of this.tools.values()) {
      if (card.el.dataset.status === 'running') this.setToolStatus(card, 'unknown');
    }
  }
}

/* ------------------------------------------------------------------ */
/* Workspace: one open app                                             */
/* ------------------------------------------------------------------ */

const HISTORY_RUNS = 5;
const VIEWER_MAX_CHARS = 400000;
const DIFF_MAX_LINES = 4000;

let ws = null; // the open Workspace, if any

class Workspace {
  constructor(appId) {
    this.appId = appId;
    this.base = `/admin/apps/${appId}`;
    this.agent = `${this.base}/coding-agent`;
    this.app = null;
    this.closed = false;
    this.abort = new AbortController();
    this.turns = new Map();
    this.activeTurn = null;
    this.stream = null;
    this.draftRevisionId = null;
    this.draftFiles = [];
    this.checkpoints = [];
    this.checkpointsCursor = null;
    this.selectedPath = '';
    this.viewerUrl = '';
    this.refreshTimer = 0;
    this.busy = new Set(); // actions in flight, to keep buttons honest
    this.cancelling = false;
    this.sending = false;
    this.previewLoads = 0;
    this.pendingRefresh = null;
    this.scrollPending = false;
    this.live = null;    // the published version visitors see: {url, revision_id}
    this.viewerSeq = 0;  // the newest file load; older answers are dropped
    this.revertSeq = 0;  // likewise for the revert form's file list
  }

  /* Calls the API unless this workspace was closed meanwhile. */
  async call(method, path, body) {
    if (this.closed) throw new DOMException('closed', 'AbortError');
    const out = await api(method, path, body, { signal: this.abort.signal });
    if (this.closed) throw new DOMException('closed', 'AbortError');
    return out;
  }

  close() {
    this.closed = true;
    this.abort.abort();
    this.stream?.stop();
    this.stream = null;
    clearTimeout(this.refreshTimer);
    if (this.viewerUrl) URL.revokeObjectURL(this.viewerUrl);
    setConnection('idle');
  }

  async open() {
    resetWorkspaceDom();
    this.updateControls();
    try {
      this.app = await this.call('GET', this.base);
    } catch (err) {
      showError(err, 'Opening the app');
      $('ws-title').textContent = 'App not available';
      return;
    }
    this.renderAppHeader();
    this.draftRevisionId = this.app.draft_revision_id ?? null;
    await Promise.all([
      this.loadDraft(this.draftRevisionId).then(() => this.loadPreview()),
      this.loadCheckpoints(),
      this.loadRuns(),
    ]);
    if (this.app.publish_url && this.app.published_revision_id) {
      this.live = { url: this.app.publish_url, revision_id: this.app.published_revision_id };
      showPublished(this.live, 'Live at');
    }
  }

  renderAppHeader() {
    const app = this.app;
    $('ws-title').textContent = app.name || app.slug || `App ${app.id}`;
    $('ws-slug').textContent = app.slug ? `/${app.slug}` : '';
    document.title = `${app.name || app.slug} · Kiln`;
    setCrumbs([{ label: 'Apps', href: '#/' }, { label: app.name || app.slug }]);
  }

  /* ---- runs and the timeline ---- */

  async loadRuns() {
    let runs;
    try {
      const page = await this.call('GET', `${this.agent}/runs?limit=${HISTORY_RUNS}`);
      runs = Array.isArray(page.items) ? page.items : [];
    } catch (err) {
      showError(err, 'Loading runs');
      return;
    }
    runs.reverse(); // oldest first, as a conversation reads
    const timeline = $('timeline');
    for (const run of runs) {
      const turn = new Turn(this, run);
      this.turns.set(run.id, turn);
      timeline.append(turn.el);
    }
    $('timeline-empty').hidden = runs.length > 0;
    const activeId = this.app.active_run_id ?? runs.find((r) => ACTIVE_RUN_STATUSES.has(r.status))?.id ?? null;
    const history = [];
    for (const run of runs) {
      const turn = this.turns.get(run.id);
      if (run.id === activeId || ACTIVE_RUN_STATUSES.has(run.status)) {
        if (!this.activeTurn) this.attach(turn);
      } else {
        history.push(turn);
      }
    }
    if (activeId !== null && !this.turns.has(activeId)) {
      try {
        const run = await this.call('GET', `${this.agent}/runs/${activeId}`);
        if (!this.turns.has(run.id)) this.addTurn(run);
        if (!this.activeTurn) this.attach(this.turns.get(run.id));
      } catch (err) {
        showError(err, 'Loading the active run');
      }
    }
    for (const turn of history) {
      try {
        await this.loadHistory(turn);
      } catch (err) {
        if (err.name !== 'AbortError') showError(err, `Loading the events of run #${turn.runId}`);
      }
    }
    this.scrollTimeline(true);
    this.updateControls();
  }

  async loadHistory(turn) {
    const url = sameOriginAdminPath(turn.run.events_url, `${this.agent}/runs/${turn.runId}/events`);
    for (let page = 0; page < 200 && !turn.finished; page++) {
      const res = await this.call('GET', `${url}?after=${turn.lastSeq}&limit=100`);
      const items = Array.isArray(res.items) ? res.items : [];
      for (const env of items) turn.apply(env);
      if (items.length === 0) break;
    }
    turn.finish(turn.run.status);
  }

  addTurn(run) {
    const turn = new Turn(this, run);
    this.turns.set(run.id, turn);
    $('timeline-empty').hidden = true;
    $('timeline').append(turn.el);
    this.scrollTimeline(true);
    return turn;
  }

  /** Follows the live stream of a run from its first event. */
  attach(turn) {
    this.stream?.stop();
    this.activeTurn = turn;
    this.cancelling = false;
    const run = turn.run;
    const stream = new RunStream({
      streamUrl: sameOriginAdminPath(run.stream_url, `${this.agent}/runs/${run.id}/stream`),
      eventsUrl: sameOriginAdminPath(run.events_url, `${this.agent}/runs/${run.id}/events`),
      runUrl: `${this.agent}/runs/${run.id}`,
      lastSeq: () => turn.lastSeq,
      onEnvelope: (env) => {
        if (turn.apply(env)) this.onLiveEvent(env);
      },
      onState: (state) => {
        if (this.stream === stream && !this.closed) setConnection(state);
      },
      onDone: (finalRun) => {
        if (finalRun && !turn.finished) turn.finish(finalRun.status);
        this.runEnded(turn);
      },
      onFatal: (err) => {
        showError(err, `Following run #${run.id}`);
        turn.finish(turn.status);
        this.runEnded(turn);
      },
      onBadEvent: (err) => showError(err, `Run #${run.id}`),
    });
    this.stream = stream;
    stream.start();
    this.updateControls();
  }

  onLiveEvent(env) {
    this.updateRunBar();
    if (env.type === 'revision.created') {
      const rid = env.payload && env.payload.revision_id;
      if (Number.isSafeInteger(rid)) this.draftRevisionId = rid;
      this.scheduleRefresh({ draft: true });
    } else if (env.type === 'checkpoint.created') {
      this.scheduleRefresh({ checkpoints: true });
    }
  }

  runEnded(turn) {
    if (this.activeTurn !== turn) return;
    this.activeTurn = null;
    this.stream = null;
    this.cancelling = false;
    if (!this.closed) setConnection('idle');
    this.updateControls();
    if (!this.closed) refocus($('chat-input'));
    this.scheduleRefresh({ app: true, draft: true, checkpoints: true });
  }

  scrollTimeline(force = false) {
    const tl = $('timeline');
    const nearBottom = tl.scrollHeight - tl.scrollTop - tl.clientHeight < 120;
    if (!force && !nearBottom) return;
    if (this.scrollPending) return;
    this.scrollPending = true;
    requestAnimationFrame(() => {
      this.scrollPending = false;
      tl.scrollTop = tl.scrollHeight;
    });
  }

  async send(text) {
    const input = text.trim();
    if (!input || this.sending) return;
    if (this.activeTurn) {
      showError(new ApiError(0, 'run_active', 'Wait for the current run to finish, or cancel it, before sending another message.'), 'Sending');
      return;
    }
    this.sending = true;
    this.updateControls();
    const body = { input, client_request_id: randomId() };
    let run = null;
    try {
      /* A network failure may hide a run that was created: retrying with the
       * same client_request_id returns that run instead of a second one. */
      for (let attempt = 0; ; attempt++) {
        try {
          run = await this.call('POST', `${this.agent}/runs`, body);
          break;
        } catch (err) {
          if (err.code === 'network_error' && attempt < 2) {
            await sleep(800 * (attempt + 1), this.abort.signal);
            continue;
          }
          throw err;
        }
      }
    } catch (err) {
      this.sending = false;
      this.updateControls();
      if (err.name === 'AbortError') return;
      refocus($('chat-input'));
      showError(err, 'Sending the message');
      if (err.code === 'run_active' && Number.isSafeInteger(err.extra.run_id) && !this.activeTurn) {
        this.followRun(err.extra.run_id);
      }
      return;
    }
    this.sending = false;
    $('chat-input').value = '';
    refocus($('chat-input'));
    const turn = this.turns.get(run.id) || this.addTurn(run);
    if (TERMINAL_RUN_STATUSES.has(run.status)) {
      this.loadHistory(turn).catch((err) => showError(err, `Loading run #${run.id}`));
    } else if (this.activeTurn !== turn) {
      this.attach(turn);
    }
    this.updateControls();
  }

  async followRun(runId) {
    try {
      const run = await this.call('GET', `${this.agent}/runs/${runId}`);
      const turn = this.turns.get(run.id) || this.addTurn(run);
      if (ACTIVE_RUN_STATUSES.has(run.status) && !this.activeTurn) this.attach(turn);
    } catch (err) {
      showError(err, `Loading run #${runId}`);
    }
  }

  async cancel() {
    const turn = this.activeTurn;
    if (!turn || this.cancelling) return;
    this.cancelling = true;
    this.updateControls();
    try {
      await this.call('POST', `${this.agent}/runs/${turn.runId}/cancel`, { mode: 'keep' });
      notice(`Cancelling run #${turn.runId}…`);
    } catch (err) {
      this.cancelling = false;
      this.updateControls();
      showError(err, `Cancelling run #${turn.runId}`);
    }
  }

  updateRunBar() {
    const bar = $('run-bar');
    const turn = this.activeTurn;
    bar.hidden = !turn;
    if (!turn) {
      bar.dataset.status = '';
      return;
    }
    bar.dataset.status = turn.status;
    const running = [...turn.tools.values()].filter((c) => c.el.dataset.status === 'running').length;
    let text = turn.status === 'queued' ? `Run #${turn.runId} is queued…` : `Run #${turn.runId} is working…`;
    if (running) text += ` (${plural(running, 'tool')} running)`;
    if (this.cancelling) text = `Cancelling run #${turn.runId}…`;
    $('run-bar-text').textContent = text;
  }

  /** Enables and disables actions to match what the API would accept. */
  updateControls() {
    const active = !!this.activeTurn;
    $('send').disabled = active || this.sending;
    $('send').textContent = this.sending ? 'Sending…' : 'Send';
    $('cancel-run').disabled = !active || this.cancelling;
    $('cancel-run').textContent = this.cancelling ? 'Cancelling…' : 'Cancel run';
    $('undo').disabled = active || this.busy.has('restore') || this.turns.size === 0;
    $('publish').disabled = this.busy.has('publish') || !this.draftRevisionId;
    $('revert-form').querySelector('button[type=submit]').disabled = active || this.busy.has('restore');
    for (const b of document.querySelectorAll('#checkpoint-list [data-testid="restore-button"]')) {
      b.disabled = active || this.busy.has('restore');
    }
    $('chat-help').textContent = active
      ? 'A run is in progress: you can send the next message when it ends.'
      : 'Enter sends · Shift+Enter adds a line';
    this.updateRunBar();
  }

  /* Batches the refreshes that a burst of events asks for. */
  scheduleRefresh(what) {
    this.pendingRefresh = { ...(this.pendingRefresh || {}), ...what };
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.runRefresh(), 250);
  }

  async runRefresh() {
    const what = this.pendingRefresh || {};
    this.pendingRefresh = null;
    if (this.closed) return;
    if (what.app) {
      try {
        this.app = await this.call('GET', this.base);
        this.renderAppHeader();
        if (this.app.draft_revision_id) this.draftRevisionId = this.app.draft_revision_id;
      } catch (err) {
        showError(err, 'Refreshing the app');
      }
    }
    const jobs = [];
    if (what.draft) jobs.push(this.loadDraft(this.draftRevisionId).then(() => this.loadPreview()));
    if (what.checkpoints) jobs.push(this.loadCheckpoints());
    await Promise.all(jobs);
  }

  /* ---- draft files ---- */

  async loadDraft(revisionId) {
    if (!revisionId) {
      this.draftFiles = [];
      this.renderTree();
      return;
    }
    try {
      const rev = await this.call('GET', `${this.base}/revisions/${revisionId}`);
      if (this.draftRevisionId !== revisionId && this.draftRevisionId !== null) {
        return; // a newer revision arrived meanwhile; its own load wins
      }
      this.draftRevisionId = rev.id;
      this.draftFiles = Array.isArray(rev.files) ? rev.files.filter((f) => f && typeof f.path === 'string') : [];
      this.draftFiles.sort((a, b) => a.path.localeCompare(b.path));
      $('draft-info').textContent = `Draft revision #${rev.id} · ${plural(this.draftFiles.length, 'file')} · ${formatBytes(rev.total_size ?? this.draftFiles.reduce((n, f) => n + (f.size || 0), 0))}`;
      this.renderTree();
      this.updateControls();
      if (this.selectedPath) {
        if (this.draftFiles.some((f) => f.path === this.selectedPath)) await this.openFile(this.selectedPath);
        else this.showViewerMessage(this.selectedPath, 'This file is not in the current draft any more.');
      }
      this.refreshRevertFiles();
    } catch (err) {
      if (err.name !== 'AbortError') showError(err, `Loading draft revision #${revisionId}`);
    }
  }

  renderTree() {
    const tree = $('file-tree');
    if (this.draftFiles.length === 0) {
      tree.replaceChildren(h('p', { class: 'muted empty' }, 'No files in the draft yet.'));
      $('draft-info').textContent = this.draftRevisionId ? `Draft revision #${this.draftRevisionId} · empty` : 'No draft yet';
      return;
    }
    /* Build nested folders from the flat, sorted path list. */
    const root = { dirs: new Map(), files: [] };
    for (const f of this.draftFiles) {
      const parts = f.path.split('/');
      let node = root;
      for (const dir of parts.slice(0, -1)) {
        if (!node.dirs.has(dir)) node.dirs.set(dir, { dirs: new Map(), files: [] });
        node = node.dirs.get(dir);
      }
      node.files.push({ name: parts[parts.length - 1], file: f });
    }
    const renderNode = (node, depth) => {
      const items = [];
      for (const [name, child] of [...node.dirs.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
        items.push(h('li', { class: 'tree-dir' },
          h('details', { open: true }, h('summary', { class: 'mono' }, `${name}/`), renderNode(child, depth + 1))));
      }
      for (const { name, file } of node.files) {
        const selected = file.path === this.selectedPath;
        items.push(h('li', {},
          h('button', {
            type: 'button', class: 'tree-file mono', 'data-testid': 'file-item', 'data-path': file.path,
            'aria-current': selected ? 'true' : null, title: `${file.path} · ${formatBytes(file.size)}`,
            onclick: () => this.openFile(file.path),
          }, name, h('span', { class: 'tree-size' }, formatBytes(file.size)))));
      }
      return h('ul', { class: depth === 0 ? 'tree' : 'tree-sub' }, items);
    };
    replaceKeepingFocus(tree, 'data-path', renderNode(root, 0));
  }

  showViewerMessage(path, message) {
    $('viewer-path').textContent = path || 'No file selected';
    $('viewer-meta').textContent = '';
    const v = $('file-viewer');
    v.dataset.path = path || '';
    v.replaceChildren(h('p', { class: 'muted empty' }, message));
  }

  async openFile(path) {
    this.selectedPath = path;
    for (const b of document.querySelectorAll('#file-tree [data-testid="file-item"]')) {
      if (b.dataset.path === path) b.setAttribute('aria-current', 'true');
      else b.removeAttribute('aria-current');
    }
    const rid = this.draftRevisionId;
    const viewer = $('file-viewer');
    viewer.setAttribute('aria-busy', 'true');
    const seqNo = ++this.viewerSeq;
    try {
      const res = await api('GET', `${this.base}/revisions/${rid}/files/${encodePath(path)}`, undefined, { signal: this.abort.signal, raw: true });
      const ctype = (res.headers.get('Content-Type') || 'application/octet-stream').toLowerCase();
      const blob = await res.blob();
      if (this.closed || seqNo !== this.viewerSeq) return;
      const info = this.draftFiles.find((f) => f.path === path);
      $('viewer-path').textContent = path;
      $('viewer-meta').textContent = `${formatBytes(blob.size)} · ${ctype.split(';')[0]} · revision #${rid}`;
      viewer.dataset.path = path;
      if (this.viewerUrl) {
        URL.revokeObjectURL(this.viewerUrl);
        this.viewerUrl = '';
      }
      const textual = /^text\/|json|javascript|xml|svg|csv|markdown|x-sh|yaml|toml/.test(ctype) || isProbablyText(await blob.slice(0, 4096).arrayBuffer());
      if (ctype.startsWith('image/') && !ctype.includes('svg')) {
        this.viewerUrl = URL.createObjectURL(blob);
        viewer.replaceChildren(h('img', { class: 'viewer-img', src: this.viewerUrl, alt: `Image ${path}` }));
      } else if (textual) {
        let text = await blob.text();
        let note = null;
        if (text.length > VIEWER_MAX_CHARS) {
          text = text.slice(0, VIEWER_MAX_CHARS);
          note = h('p', { class: 'muted small-text' }, `Showing the first ${formatBytes(VIEWER_MAX_CHARS)} only.`);
        }
        viewer.replaceChildren(...[h('pre', { class: 'code', 'data-testid': 'file-content' }, h('code', {}, text)), note].filter(Boolean));
      } else {
        viewer.replaceChildren(h('p', { class: 'muted empty' }, `Binary file (${formatBytes(info ? info.size : blob.size)}): not shown.`));
      }
    } catch (err) {
      if (err.name !== 'AbortError') showError(err, `Opening ${path}`);
    } finally {
      viewer.removeAttribute('aria-busy');
    }
  }

  /* ---- preview ---- */

  async loadPreview() {
    const frame = $('preview');
    const empty = $('preview-empty');
    const open = $('preview-open');
    if (this.draftFiles.length === 0) {
      frame.hidden = true;
      frame.removeAttribute('src');
      empty.hidden = false;
      open.hidden = true;
      return;
    }
    try {
      const res = await this.call('GET', `${this.base}/preview`);
      const url = typeof res.url === 'string' ? res.url : '';
      if (!/^(\/(?!\/)|https?:\/\/)/.test(url)) {
        throw new ApiError(0, 'bad_response', 'The preview route answered without a usable URL.');
      }
      this.previewLoads += 1;
      frame.dataset.loads = String(this.previewLoads);
      frame.dataset.revisionId = String(this.draftRevisionId ?? '');
      /* Setting src navigates even when the URL did not change, so the frame
       * always shows the newest draft. */
      frame.src = url;
      frame.hidden = false;
      empty.hidden = true;
      open.href = url;
      open.hidden = false;
    } catch (err) {
      if (err.name !== 'AbortError') showError(err, 'Loading the preview');
    }
  }

  /* ---- checkpoints, restore, undo, revert ---- */

  async loadCheckpoints(more = false) {
    try {
      const cursor = more && this.checkpointsCursor ? `&cursor=${encodeURIComponent(this.checkpointsCursor)}` : '';
      const page = await this.call('GET', `${this.agent}/checkpoints?limit=50${cursor}`);
      const items = Array.isArray(page.items) ? page.items : [];
      this.checkpoints = more ? [...this.checkpoints, ...items] : items;
      this.checkpointsCursor = page.next_cursor || null;
      this.renderCheckpoints();
    } catch (err) {
      if (err.name !== 'AbortError') showError(err, 'Loading checkpoints');
    }
  }

  renderCheckpoints() {
    const list = $('checkpoint-list');
    const current = this.draftRevisionId ?? this.app?.draft_revision_id ?? null;
    if (this.checkpoints.length === 0) {
      list.replaceChildren(h('li', { class: 'muted empty' }, 'No checkpoints yet. The first run creates one.'));
    } else {
      replaceKeepingFocus(list, 'data-checkpoint-id', ...this.checkpoints.map((cp) => {
        const isCurrent = cp.revision_id === current;
        return h('li', {
          class: 'cp', 'data-testid': 'checkpoint-item', 'data-checkpoint-id': cp.id, 'data-type': cp.type,
          'data-revision-id': cp.revision_id, 'data-run-id': cp.run_id ?? '',
        },
        h('div', { class: 'cp-main' },
          h('div', { class: 'cp-title' },
            h('span', { class: 'cp-label' }, checkpointTitle(cp)),
            badge(cp.type, `type-${cp.type}`),
            isCurrent ? badge('current', 'current') : null),
          h('div', { class: 'cp-meta muted small-text' },
            `#${cp.id} · revision #${cp.revision_id}${cp.run_id ? ` · run #${cp.run_id}` : ''} · ${plural(cp.file_count ?? 0, 'file')} · `,
            cp.created_at ? timeEl(cp.created_at, { 'data-testid': 'checkpoint-time' }) : ''),
          cp.summary ? h('div', { class: 'cp-summary small-text' }, String(cp.summary)) : null),
        h('button', {
          type: 'button', class: 'small', 'data-testid': 'restore-button', 'aria-label': `Restore checkpoint #${cp.id} ${checkpointTitle(cp)}`,
          onclick: () => this.confirmRestore(cp),
        }, 'Restore'));
      }));
    }
    $('checkpoints-more').hidden = !this.checkpointsCursor;
    for (const sel of [$('revert-checkpoint'), $('diff-from')]) {
      const keep = sel.value;
      sel.replaceChildren(...this.checkpoints.map(checkpointOption));
      if (keep && this.checkpoints.some((c) => String(c.id) === keep)) sel.value = keep;
    }
    const to = $('diff-to');
    const keepTo = to.value;
    to.replaceChildren(h('option', { value: 'draft' }, 'the current draft'), ...this.checkpoints.map(checkpointOption));
    to.value = keepTo && [...to.options].some((o) => o.value === keepTo) ? keepTo : 'draft';
    this.refreshRevertFiles();
    this.updateControls();
  }

  async confirmRestore(cp) {
    if (this.busy.has('restore')) return;
    this.busy.add('restore');
    this.updateControls();
    try {
      const dry = await this.call('POST', `${this.agent}/checkpoints/${cp.id}/restore`, { dry_run: true });
      const added = pathsOf(dry.added);
      const changed = pathsOf(dry.changed);
      const deleted = pathsOf(dry.deleted);
      const ok = await askRestore(cp, added, changed, deleted);
      if (!ok) return;
      await this.restore(cp, `Restored checkpoint #${cp.id}`);
    } catch (err) {
      if (err.name !== 'AbortError') showError(err, `Restoring checkpoint #${cp.id}`);
      if (err.code === 'revision_moved') this.afterDraftChange();
    } finally {
      this.busy.delete('restore');
      this.updateControls();
      /* the list was redrawn meanwhile: find the checkpoint's new button */
      refocus(document.querySelector(`#checkpoint-list [data-checkpoint-id="${cp.id}"] [data-testid="restore-button"]`));
    }
  }

  /* Restores cp, guarded by the draft revision this page shows. */
  async restore(cp, message) {
    const body = { dry_run: false };
    if (this.draftRevisionId) body.expected_revision_id = this.draftRevisionId;
    const res = await this.call('POST', `${this.agent}/checkpoints/${cp.id}/restore`, body);
    const n = pathsOf(res.added).length + pathsOf(res.changed).length + pathsOf(res.deleted).length;
    if (res.revision && Number.isSafeInteger(res.revision.id)) this.draftRevisionId = res.revision.id;
    notice(`${message}: ${plural(n, 'file')} changed.`);
    await this.afterDraftChange();
  }

  async afterDraftChange() {
    try {
      this.app = await this.call('GET', this.base);
      if (this.app.draft_revision_id) this.draftRevisionId = this.app.draft_revision_id;
    } catch (err) {
      if (err.name !== 'AbortError') showError(err, 'Refreshing the app');
    }
    await Promise.all([
      this.loadDraft(this.draftRevisionId).then(() => this.loadPreview()),
      this.loadCheckpoints(),
    ]);
    this.updateControls();
  }

  /** Finds the checkpoint that was current before the newest run. */
  async undoTarget() {
    const runs = await this.call('GET', `${this.agent}/runs?limit=1`);
    const last = Array.isArray(runs.items) ? runs.items[0] : null;
    if (!last) return { reason: 'There is no run to undo.' };
    if (ACTIVE_RUN_STATUSES.has(last.status)) return { reason: `Run #${last.id} is still active: cancel it first.` };
    /* Collect enough checkpoints to find the one we need. */
    let cps = [];
    let cursor = null;
    for (let page = 0; page < 10; page++) {
      const q = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
      const res = await this.call('GET', `${this.agent}/checkpoints?limit=100${q}`);
      cps = cps.concat(Array.isArray(res.items) ? res.items : []);
      cursor = res.next_cursor || null;
      const found = last.base_revision_id != null && cps.some((c) => c.revision_id === last.base_revision_id);
      if (!cursor || found) break;
    }
    if (last.base_revision_id != null) {
      const cp = cps.find((c) => c.revision_id === last.base_revision_id);
      if (cp) return { cp, run: last };
    }
    /* No base revision to match: the checkpoint just before the newest
     * automatic one is the state the last run started from. */
    const newestAuto = cps.findIndex((c) => c.type === 'auto');
    if (newestAuto >= 0 && newestAuto + 1 < cps.length) return { cp: cps[newestAuto + 1], run: last };
    return { reason: `No checkpoint from before run #${last.id} exists (it started from an empty app).` };
  }

  async undo() {
    if (this.busy.has('restore') || this.activeTurn) return;
    this.busy.add('restore');
    this.updateControls();
    try {
      const target = await this.undoTarget();
      if (!target.cp) {
        notice(target.reason);
        return;
      }
      if (target.cp.revision_id === this.draftRevisionId) {
        notice(`Nothing to undo: the draft already matches checkpoint #${target.cp.id}, from before run #${target.run.id}.`);
        return;
      }
      await this.restore(target.cp, `Undid run #${target.run.id} (restored checkpoint #${target.cp.id})`);
    } catch (err) {
      if (err.name !== 'AbortError') showError(err, 'Undoing the last run');
      if (err.code === 'revision_moved') this.afterDraftChange();
    } finally {
      this.busy.delete('restore');
      this.updateControls();
      refocus($('undo'));
    }
  }

  async refreshRevertFiles() {
    const sel = $('revert-checkpoint');
    const fileSel = $('revert-file');
    const cpId = sel.value;
    if (!cpId) {
      fileSel.replaceChildren(h('option', { value: '' }, 'No checkpoint selected'));
      return;
    }
    const seqNo = ++this.revertSeq;
    let cpFiles = [];
    try {
      const cp = await this.call('GET', `${this.agent}/checkpoints/${cpId}`);
      cpFiles = pathsOf(cp.files);
    } catch (err) {
      if (err.name !== 'AbortError') showError(err, `Loading checkpoint #${cpId}`);
      return;
    }
    if (seqNo !== this.revertSeq) return;
    const inCp = new Set(cpFiles);
    const all = [...new Set([...cpFiles, ...this.draftFiles.map((f) => f.path)])].sort((a, b) => a.localeCompare(b));
    const keep = fileSel.value;
    fileSel.replaceChildren(...all.map((p) => h('option', { value: p },
      inCp.has(p) ? p : `${p} (not in the checkpoint: reverting deletes it)`)));
    if (keep && all.includes(keep)) fileSel.value = keep;
  }

  async revertFile() {
    const cpId = $('revert-checkpoint').value;
    const path = $('revert-file').value;
    const out = $('revert-result');
    if (!cpId || !path) {
      out.textContent = 'Choose a checkpoint and a file first.';
      return;
    }
    if (this.busy.has('restore')) return;
    this.busy.add('restore');
    this.updateControls();
    out.textContent = `Reverting ${path}…`;
    try {
      const res = await this.call('POST', `${this.agent}/checkpoints/${cpId}/revert-file`, { path });
      if (res.revision && Number.isSafeInteger(res.revision.id)) this.draftRevisionId = res.revision.id;
      out.textContent = res.action === 'deleted'
        ? `${path} was deleted: it is not in checkpoint #${cpId}.`
        : `${path} was restored from checkpoint #${cpId}.`;
      out.dataset.action = String(res.action ?? '');
      await this.afterDraftChange();
    } catch (err) {
      out.textContent = '';
      if (err.name !== 'AbortError') showError(err, `Reverting ${path}`);
    } finally {
      this.busy.delete('restore');
      this.updateControls();
      refocus($('revert-form').querySelector('button[type=submit]'));
    }
  }

  /* ---- diff and publish ---- */

  async showDiff() {
    const from = $('diff-from').value;
    const to = $('diff-to').value || 'draft';
    const view = $('diff-view');
    if (!from) {
      view.replaceChildren(h('p', { class: 'muted empty' }, 'There are no checkpoints to compare yet.'));
      return;
    }
    view.setAttribute('aria-busy', 'true');
    try {
      const d = await this.call('GET', `${this.agent}/checkpoints/${from}/diff/${encodeURIComponent(to)}`);
      renderDiff(view, d, from, to);
    } catch (err) {
      if (err.name !== 'AbortError') showError(err, 'Loading the diff');
    } finally {
      view.removeAttribute('aria-busy');
    }
  }

  async publish() {
    if (this.busy.has('publish')) return;
    this.busy.add('publish');
    this.updateControls();
    const box = $('publish-status');
    clearNotice(); // an earlier "Published." must not stand beside this attempt's outcome
    box.hidden = false;
    box.dataset.state = 'publishing';
    box.replaceChildren(h('span', { class: 'spinner', 'aria-hidden': 'true' }), ` Building and publishing revision #${this.draftRevisionId}…`);
    $('publish').textContent = 'Publishing…';
    try {
      const body = this.draftRevisionId ? { revision_id: this.draftRevisionId } : {};
      const res = await this.call('POST', `${this.base}/publish`, body);
      const pub = res && res.publish ? res.publish : {};
      this.live = pub;
      showPublished(pub, 'Published at');
      notice('Published.');
    } catch (err) {
      if (err.name === 'AbortError') return;
      box.dataset.state = 'failed';
      const parts = err.code === 'build_failed'
        ? [h('p', { class: 'pub-fail', 'data-testid': 'publish-error' }, h('code', {}, err.code), ' ', err.message || 'The build failed.'),
          h('details', { open: true }, h('summary', {}, 'Build log'),
            h('pre', { class: 'build-log', 'data-testid': 'publish-log' }, String(err.extra.log ?? '(no log)')))]
        : [h('p', { class: 'pub-fail', 'data-testid': 'publish-error' }, 'Publishing failed: ', h('code', {}, err.code), ' ', err.message)];
      box.replaceChildren(...parts, liveNote(this.live));
      if (err.code !== 'build_failed') showError(err, 'Publishing');
    } finally {
      $('publish').textContent = 'Publish';
      this.busy.delete('publish');
      this.updateControls();
      refocus($('publish'));
    }
  }
}

function isProbablyText(buf) {
  const bytes = new Uint8Array(buf);
  for (const b of bytes) if (b === 0) return false;
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes.length === 4096 ? bytes.slice(0, 4090) : bytes);
    return true;
  } catch {
    return false;
  }
}

/* ---- checkpoints ---- */

function checkpointTitle(cp) {
  return cp.label ? String(cp.label) : `Checkpoint #${cp.id}`;
}

function checkpointOption(cp) {
  const when = cp.created_at ? ` · ${formatTime(cp.created_at)}` : '';
  return h('option', { value: String(cp.id) }, `#${cp.id} ${clip(checkpointTitle(cp), 50)} (${cp.type})${when}`);
}

/**
 * Asks before a restore, showing what the dry run said it would do.
 * Resolves true when the user confirms.
 */
function askRestore(cp, added, changed, deleted) {
  const dialog = $('restore-dialog');
  $('restore-title').textContent = `Restore checkpoint #${cp.id}?`;
  const list = (paths, cls, sign) => paths.slice(0, 30).map((p) => h('li', { class: `path-${cls}` }, `${sign} ${p}`));
  const total = added.length + changed.length + deleted.length;
  $('restore-body').replaceChildren(
    h('p', {}, h('strong', {}, checkpointTitle(cp)), ` (${cp.type}${cp.created_at ? `, ${formatTime(cp.created_at)}` : ''}) becomes the draft again.`),
    h('p', { class: 'counts', 'data-testid': 'restore-counts', 'data-added': added.length, 'data-changed': changed.length, 'data-deleted': deleted.length },
      h('span', { class: 'count-add' }, `${added.length} added`), ' · ',
      h('span', { class: 'count-chg' }, `${changed.length} changed`), ' · ',
      h('span', { class: 'count-del' }, `${deleted.length} deleted`)),
    total === 0
      ? h('p', { class: 'muted' }, 'The draft already matches this checkpoint; restoring changes no file.')
      : h('ul', { class: 'path-list mono' }, list(added, 'add', '+'), list(changed, 'chg', '~'), list(deleted, 'del', '−')),
    h('p', { class: 'muted small-text' }, 'Restoring records a new checkpoint, so it can be undone too.'));
  return new Promise((resolve) => {
    dialog.returnValue = '';
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    dialog.querySelector('[data-testid="restore-cancel"]').focus();
  });
}

/* ---- diff ---- */

function diffLineClass(line) {
  if (line.startsWith('+++') || line.startsWith('---')) return 'meta';
  if (line.startsWith('@@')) return 'hunk';
  if (line.startsWith('+')) return 'add';
  if (line.startsWith('-')) return 'del';
  if (line.startsWith('\\')) return 'meta';
  return 'ctx';
}

function renderDiff(view, d, from, to) {
  const added = pathsOf(d.added);
  const removed = pathsOf(d.removed);
  const changed = Array.isArray(d.changed) ? d.changed.filter((c) => c && typeof c === 'object') : [];
  const target = to === 'draft' ? 'the current draft' : `checkpoint #${to}`;
  const parts = [h('p', { class: 'diff-summary', 'data-testid': 'diff-summary' },
    `Checkpoint #${from} → ${target}: `,
    h('span', { class: 'count-add' }, `${added.length} added`), ' · ',
    h('span', { class: 'count-del' }, `${removed.length} removed`), ' · ',
    h('span', { class: 'count-chg' }, `${changed.length} changed`))];
  if (!added.length && !removed.length && !changed.length) {
    parts.push(h('p', { class: 'muted empty' }, 'No differences.'));
  }
  for (const path of added) {
    parts.push(h('section', { class: 'diff-file diff-file-added', 'data-testid': 'diff-file', 'data-path': path, 'data-kind': 'added' },
      h('h4', { class: 'mono' }, badge('added', 'add'), ' ', path)));
  }
  for (const path of removed) {
    parts.push(h('section', { class: 'diff-file diff-file-removed', 'data-testid': 'diff-file', 'data-path': path, 'data-kind': 'removed' },
      h('h4', { class: 'mono' }, badge('removed', 'del'), ' ', path)));
  }
  for (const c of changed) {
    const path = String(c.path ?? '?');
    const section = h('section', { class: 'diff-file', 'data-testid': 'diff-file', 'data-path': path, 'data-kind': 'changed' },
      h('h4', { class: 'mono' }, badge('changed', 'chg'), ' ', path));
    if (c.binary) {
      section.append(h('p', { class: 'muted small-text' }, 'Binary file: contents differ.'));
    } else {
      const lines = String(c.diff ?? '').split(/\r?\n/);
      if (lines.length && lines[lines.length - 1] === '') lines.pop();
      const shown = lines.slice(0, DIFF_MAX_LINES);
      section.append(h('pre', { class: 'diff-body' }, shown.map((line) => h('span', { class: `dl dl-${diffLineClass(line)}` }, line, '\n'))));
      if (c.truncated || lines.length > DIFF_MAX_LINES) {
        section.append(h('p', { class: 'muted small-text' }, 'The diff is truncated.'));
      }
    }
    parts.push(section);
  }
  view.replaceChildren(...parts);
  view.dataset.from = String(from);
  view.dataset.to = String(to);
}

/* ---- publish ---- */

/* A published site's URL as a link to a new tab, when it is one. */
function publishLink(url, testid) {
  url = String(url ?? '');
  const safe = /^https?:\/\//.test(url) || url.startsWith('/');
  return safe ? h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', 'data-testid': testid }, url) : h('code', {}, url);
}

function showPublished(pub, prefix) {
  const box = $('publish-status');
  box.hidden = false;
  box.dataset.state = 'published';
  box.replaceChildren(h('span', { class: 'pub-ok' }, prefix, ' '), publishLink(pub.url, 'publish-url'),
    h('span', { class: 'muted' }, pub.revision_id ? ` (revision #${pub.revision_id}${pub.built === false ? ', already built' : ''})` : ''));
}

/* After a failed publish: what visitors see meanwhile. */
function liveNote(live) {
  if (!live || !live.url) return h('p', { class: 'muted small-text', 'data-testid': 'publish-live' }, 'Nothing of this app is published yet.');
  return h('p', { class: 'small-text', 'data-testid': 'publish-live' }, 'The live site is unchanged: ',
    publishLink(live.url, 'publish-live-url'), live.revision_id ? ` (revision #${live.revision_id})` : '');
}

/* Resets the workspace DOM to its empty state before an app opens. */
function resetWorkspaceDom() {
  $('ws-title').textContent = 'Loading…';
  $('ws-slug').textContent = '';
  $('timeline').replaceChildren(h('p', { id: 'timeline-empty', class: 'muted empty' },
    "Describe what you want to build. The agent's messages and every file change appear here as it works."));
  $('file-tree').replaceChildren();
  $('draft-info').textContent = '';
  $('viewer-path').textContent = 'No file selected';
  $('viewer-meta').textContent = '';
  $('file-viewer').replaceChildren(h('p', { class: 'muted empty' }, 'Choose a file to read it.'));
  $('file-viewer').dataset.path = '';
  $('checkpoint-list').replaceChildren();
  $('revert-result').textContent = '';
  $('diff-view').replaceChildren(h('p', { class: 'muted empty' }, 'Choose a checkpoint to see what changed since.'));
  const frame = $('preview');
  frame.removeAttribute('src');
  frame.hidden = true;
  $('preview-empty').hidden = false;
  $('preview-open').hidden = true;
  const pub = $('publish-status');
  pub.hidden = true;
  pub.dataset.state = 'idle';
  pub.replaceChildren();
  $('run-bar').hidden = true;
  $('chat-input').value = '';
  selectTab('tab-files', false);
}

/* ------------------------------------------------------------------ */
/* Views and routing                                                   */
/* ------------------------------------------------------------------ */

let appsCursor = null;

function showView(name) {
  for (const v of ['signin', 'apps', 'workspace']) $(`view-${v}`).hidden = v !== name;
  document.body.dataset.view = name;
  $('sign-out').hidden = name === 'signin';
}

function setCrumbs(items) {
  $('crumbs').replaceChildren(...items.map((it, i) => h('li', {},
    it.href && i < items.length - 1 ? h('a', { href: it.href }, it.label) : h('span', { 'aria-current': 'page' }, it.label))));
}

function onUnauthorized(err) {
  if (!authToken) return;
  signOut();
  showError(err, 'Signed out');
}

function signOut() {
  authToken = '';
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage may be disabled; nothing to remove then */
  }
  if (ws) {
    ws.close();
    ws = null;
  }
  route();
}

async function signIn(token) {
  authToken = token;
  try {
    await api('GET', '/admin/apps?limit=1', undefined, { signingIn: true });
  } catch (err) {
    authToken = '';
    showError(err, 'Signing in');
    return false;
  }
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch (err) {
    showError(new ApiError(0, 'storage_unavailable', `The token cannot be kept for this tab (${err.message}); you will need to sign in again after a reload.`));
  }
  clearErrors();
  return true;
}

function route() {
  const hash = location.hash || '#/';
  const m = /^#\/apps\/([0-9]{1,15})\/?$/.exec(hash);
  if (!authToken) {
    if (ws) {
      ws.close();
      ws = null;
    }
    showView('signin');
    setCrumbs([]);
    document.title = 'Sign in · Kiln';
    $('token-input').focus();
    return;
  }
  if (m) {
    const id = Number(m[1]);
    if (ws && ws.appId === id && !ws.closed) return;
    if (ws) ws.close();
    showView('workspace');
    refocus($('chat-input'));
    ws = new Workspace(id);
    ws.open();
    return;
  }
  if (ws) {
    ws.close();
    ws = null;
  }
  showView('apps');
  setCrumbs([{ label: 'Apps' }]);
  document.title = 'Apps · Kiln';
  refocus($('main')); // after setCrumbs: the breadcrumb just used is gone
  loadApps(false);
}

async function loadApps(more) {
  const list = $('app-list');
  list.setAttribute('aria-busy', 'true');
  try {
    const q = more && appsCursor ? `&cursor=${encodeURIComponent(appsCursor)}` : '';
    const page = await api('GET', `/admin/apps?limit=50${q}`);
    const items = Array.isArray(page.items) ? page.items : [];
    appsCursor = page.next_cursor || null;
    const rows = items.map((app) => h('li', {},
      h('a', { class: 'app-item', href: `#/apps/${app.id}`, 'data-testid': 'app-item', 'data-app-id': app.id, 'data-slug': app.slug },
        h('span', { class: 'app-name' }, app.name || app.slug),
        h('span', { class: 'app-slug mono muted' }, app.slug),
        h('span', { class: 'app-badges' },
          app.active_run_id ? badge('running', 'running') : null,
          app.published_revision_id ? badge('published', 'completed') : badge('draft', 'type-manual')),
        app.updated_at ? h('span', { class: 'app-time muted small-text' }, 'updated ', timeEl(app.updated_at)) : null)));
    if (more) list.append(...rows);
    else list.replaceChildren(...rows);
    $('apps-empty').hidden = list.childElementCount > 0;
    $('apps-more').hidden = !appsCursor;
  } catch (err) {
    showError(err, 'Loading apps');
  } finally {
    list.setAttribute('aria-busy', 'false');
  }
}

function slugify(name) {
  return name.toLowerCase().normalize('NFKD').replace(/[\u0300-\u036f]/g, '')
    .replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 63).replace(/-+$/, '');
}

async function createApp(form) {
  const nameEl = $('create-app-name');
  const slugEl = $('create-app-slug');
  const name = nameEl.value.trim();
  const slug = slugEl.value.trim();
  nameEl.removeAttribute('aria-invalid');
  slugEl.removeAttribute('aria-invalid');
  if (!name) {
    nameEl.setAttribute('aria-invalid', 'true');
    showError(new ApiError(0, 'missing_field', 'Give the app a name.', { field: 'name' }), 'Creating an app');
    nameEl.focus();
    return;
  }
  const submit = form.querySelector('button[type=submit]');
  submit.disabled = true;
  try {
    const app = await api('POST', '/admin/apps', { name, slug });
    form.reset();
    delete slugEl.dataset.edited;
    location.hash = `#/apps/${app.id}`;
  } catch (err) {
    const field = err.extra && err.extra.field;
    if (field === 'slug' || err.code === 'conflict') slugEl.setAttribute('aria-invalid', 'true');
    if (field === 'name') nameEl.setAttribute('aria-invalid', 'true');
    showError(err, 'Creating an app');
    /* straight to the field to fix, with its text selected */
    const bad = slugEl.getAttribute('aria-invalid') ? slugEl : nameEl.getAttribute('aria-invalid') ? nameEl : null;
    if (bad) {
      bad.focus();
      bad.select();
    }
  } finally {
    submit.disabled = false;
    refocus(submit);
  }
}

/* Tabs: arrow keys move between them, as the ARIA tabs pattern expects. */
function selectTab(id, focus = true) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const on = tab.id === id;
    tab.setAttribute('aria-selected', on ? 'true' : 'false');
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute('aria-controls')).hidden = !on;
    if (on && focus) tab.focus();
  }
}

function init() {
  try {
    authToken = sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    authToken = '';
  }

  window.addEventListener('unhandledrejection', (e) => {
    if (e.reason && e.reason.name === 'AbortError') {
      e.preventDefault();
      return;
    }
    showError(e.reason instanceof Error ? e.reason : new Error(String(e.reason)), 'Unexpected problem');
  });

  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('token-input');
    const token = input.value.trim();
    if (!token) {
      input.setAttribute('aria-invalid', 'true');
      showError(new ApiError(0, 'missing_field', 'Paste an API token to sign in.', { field: 'token' }), 'Signing in');
      input.focus();
      return;
    }
    const button = e.target.querySelector('button[type=submit]');
    button.disabled = true;
    const ok = await signIn(token);
    button.disabled = false;
    if (ok) {
      input.value = '';
      input.removeAttribute('aria-invalid');
      route(); // moves the focus into the view it opens
    } else {
      input.setAttribute('aria-invalid', 'true');
      input.select();
    }
  });

  $('sign-out').addEventListener('click', () => {
    clearErrors();
    signOut();
  });

  $('create-app-name').addEventListener('input', (e) => {
    const slugEl = $('create-app-slug');
    if (!slugEl.dataset.edited) slugEl.value = slugify(e.target.value);
  });
  $('create-app-slug').addEventListener('input', (e) => {
    e.target.dataset.edited = e.target.value ? '1' : '';
  });
  $('create-app-form').addEventListener('submit', (e) => {
    e.preventDefault();
    createApp(e.target);
  });
  $('apps-more').addEventListener('click', () => loadApps(true));
  $('apps-refresh').addEventListener('click', () => loadApps(false));

  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    ws?.send($('chat-input').value);
  });
  $('chat-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.altKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      ws?.send(e.target.value);
    }
  });
  $('cancel-run').addEventListener('click', () => ws?.cancel());
  $('undo').addEventListener('click', () => ws?.undo());
  $('publish').addEventListener('click', () => ws?.publish());
  $('files-refresh').addEventListener('click', () => ws?.afterDraftChange());
  $('checkpoints-refresh').addEventListener('click', () => ws?.loadCheckpoints());
  $('checkpoints-more').addEventListener('click', () => ws?.loadCheckpoints(true));
  $('preview-reload').addEventListener('click', () => ws?.loadPreview());
  $('revert-checkpoint').addEventListener('change', () => ws?.refreshRevertFiles());
  $('revert-form').addEventListener('submit', (e) => {
    e.preventDefault();
    ws?.revertFile();
  });
  $('diff-form').addEventListener('submit', (e) => {
    e.preventDefault();
    ws?.showDiff();
  });

  const tabs = [...document.querySelectorAll('[role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener('click', () => selectTab(tab.id));
    tab.addEventListener('keydown', (e) => {
      const i = tabs.indexOf(tab);
      let j = -1;
      if (e.key === 'ArrowRight') j = (i + 1) % tabs.length;
      else if (e.key === 'ArrowLeft') j = (i - 1 + tabs.length) % tabs.length;
      else if (e.key === 'Home') j = 0;
      else if (e.key === 'End') j = tabs.length - 1;
      if (j >= 0) {
        e.preventDefault();
        selectTab(tabs[j].id);
      }
    });
  }

  /* The timeline follows the newest event while it is scrolled to the
   * bottom; keep it there when the window, and so the timeline, changes
   * size, or the newest cards end up below the fold. */
  const timeline = $('timeline');
  let timelinePinned = true;
  let timelineTop = 0;
  timeline.addEventListener('scroll', () => {
    /* Only the reader scrolling back up unpins it: a narrower window makes
     * the cards taller, which moves the bottom away without a scroll. */
    if (timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 120) timelinePinned = true;
    else if (timeline.scrollTop < timelineTop) timelinePinned = false;
    timelineTop = timeline.scrollTop;
  }, { passive: true });
  new ResizeObserver(() => {
    if (timelinePinned) timeline.scrollTop = timeline.scrollHeight;
  }).observe(timeline);

  window.addEventListener('hashchange', route);
  route();
}

if (IN_BROWSER) {
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
}
