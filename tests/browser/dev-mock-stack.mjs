// Development aid only: an in-memory imitation of the Kiln stack (static page,
// /admin API per docs/API.md, /preview and /sites) for working on the page
// without the C backend. It is NOT a test of the real stack and `npm test`
// never runs it.
//
//   node dev-mock-stack.mjs [port]        (default 18099; token "dev-token")
//   kill -USR1 <pid>   drops every connection and stops listening (like nginx-stop)
//   kill -USR2 <pid>   listens again (like nginx-start)
//
// The pid is written to $MOCK_PIDFILE when set.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import crypto from 'node:crypto';

const here = path.dirname(fileURLToPath(import.meta.url));
const WWW = path.resolve(here, '../../nginx/www');
const PORT = Number(process.argv[2] || process.env.MOCK_PORT || 18099);
const TOKEN = process.env.MOCK_TOKEN || 'dev-token';
const ORIGIN = `http://127.0.0.1:${PORT}`;

const now = () => new Date().toISOString();
const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
let nextId = 1;
const newId = () => nextId++;

const apps = new Map();      // id -> app
const revisions = new Map(); // id -> {id, app_id, parent_id, origin, run_id, checkpoint_id, created_at, files: {path: text}}
const checkpoints = new Map();
const runs = new Map();      // id -> run (+ events, listeners, cancel)
const published = new Map(); // app id -> files

function revisionJson(r, withFiles = true) {
  const files = Object.entries(r.files).sort().map(([p, c]) => ({ path: p, size: Buffer.byteLength(c), sha256: sha(c) }));
  const out = {
    id: r.id, app_id: r.app_id, parent_id: r.parent_id, origin: r.origin, run_id: r.run_id,
    checkpoint_id: r.checkpoint_id, created_at: r.created_at, file_count: files.length,
    total_size: files.reduce((n, f) => n + f.size, 0),
  };
  if (withFiles) out.files = files;
  return out;
}

function cpJson(c, withFiles = false) {
  const r = revisions.get(c.revision_id);
  const out = { ...c, file_count: Object.keys(r.files).length, size: JSON.stringify(r.files).length, sha256: sha(JSON.stringify(r.files)) };
  if (withFiles) out.files = revisionJson(r).files;
  return out;
}

function runJson(r) {
  const { events, listeners, cancelled, ...rest } = r;
  void events; void listeners; void cancelled;
  return rest;
}

function newRevision(app, files, origin, runId = null) {
  const rev = { id: newId(), app_id: app.id, parent_id: app.draft_revision_id, origin, run_id: runId, checkpoint_id: null, created_at: now(), files: { ...files } };
  revisions.set(rev.id, rev);
  app.draft_revision_id = rev.id;
  app.updated_at = now();
  return rev;
}

function newCheckpoint(app, rev, type, label, summary, runId = null) {
  const cp = { id: newId(), app_id: app.id, run_id: runId, revision_id: rev.id, type, label, summary, created_at: now() };
  checkpoints.set(cp.id, cp);
  rev.checkpoint_id = cp.id;
  return cp;
}

function changes(before, after) {
  const added = [], changed = [], deleted = [];
  for (const p of Object.keys(after)) {
    if (!(p in before)) added.push(p);
    else if (before[p] !== after[p]) changed.push(p);
  }
  for (const p of Object.keys(before)) if (!(p in after)) deleted.push(p);
  return { added: added.sort(), changed: changed.sort(), deleted: deleted.sort() };
}

function unified(path_, a, b) {
  const al = a.split('\n'), bl = b.split('\n');
  return `--- a/${path_}\n+++ b/${path_}\n@@ -1,${al.length} +1,${bl.length} @@\n${al.map((l) => `-${l}`).join('\n')}\n${bl.map((l) => `+${l}`).join('\n')}\n`;
}

/* ---- scripted runs ---- */

const SITE = {
  'index.html': '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Mock landing</title>\n<link rel="stylesheet" href="style.css">\n</head>\n<body>\n<h1 id="hero">Hello from the scripted model</h1>\n<p>Built by Kiln.</p>\n<script src="app.js"></script>\n</body>\n</html>\n',
  'style.css': 'body { font-family: system-ui; margin: 3rem; background: #fdf6ec; }\nh1 { color: #b34700; }\n',
  'app.js': "document.querySelector('p').textContent += ' (script ran)';\n",
};

function emit(run, type, payload) {
  const env = { type, run_id: run.id, app_id: run.app_id, seq: run.events.length + 1, ts: now(), payload };
  run.events.push(env);
  for (const l of [...run.listeners]) l(env);
}

const wait = (ms) => new Promise((r) => setTimeout(r, ms));

async function streamText(run, idx, text, pieceMs) {
  const words = text.split(/(?<= )/);
  for (const w of words) {
    if (run.cancelled) return;
    emit(run, 'assistant.delta', { text: w, message_index: idx });
    await wait(pieceMs);
  }
}

async function executeRun(app, run) {
  const slow = run.input.includes('[script:slow]');
  await wait(100);
  run.status = 'running';
  run.started_at = now();
  emit(run, 'run.accepted', { input: run.input, attempt: 1 });
  const base = revisions.get(app.draft_revision_id)?.files || {};
  const files = { ...base };
  let steps = 0;
  try {
    // A restarted first response: the client must drop "Thinking abo".
    emit(run, 'assistant.delta', { text: 'Thinking abo', message_index: 0 });
    await wait(60);
    emit(run, 'assistant.delta', { text: '', message_index: 0, restart: true });
    await streamText(run, 0, "I'll build a small landing page with a heading, some styles and a script. ", slow ? 250 : 40);
    const plan = slow
      ? [['write_file', 'notes.txt', 'slow run notes\n'], ['run_command', null, null], ['write_file', 'index.html', SITE['index.html'].replace('Hello', 'Slowly, hello')], ['read_file', 'index.html', null]]
      : [['write_file', 'index.html', SITE['index.html']], ['write_file', 'style.css', SITE['style.css']], ['write_file', 'app.js', SITE['app.js']], ['read_file', 'missing.txt', null]];
    for (const [tool, p, content] of plan) {
      if (run.cancelled) break;
      const callId = `call_${crypto.randomBytes(4).toString('hex')}`;
      const args = tool === 'run_command' ? { command: 'ls -la' } : { path: p, ...(content ? { content: content.slice(0, 40) } : {}) };
      emit(run, 'tool.started', { call_id: callId, tool, arguments: args });
      const t0 = Date.now();
      await wait(slow ? 1800 : 120);
      if (run.cancelled) break;
      steps++;
      if (tool === 'read_file' && !(p in files)) {
        emit(run, 'tool.failed', { call_id: callId, tool, error: { code: 'not_found', message: `${p} does not exist` }, duration_ms: Date.now() - t0 });
      } else {
        if (content) files[p] = content;
        emit(run, 'tool.completed', { call_id: callId, tool, summary: tool === 'write_file' ? `wrote ${p} (${content.length} bytes)` : `${tool} ok`, duration_ms: Date.now() - t0 });
      }
    }
    if (run.cancelled) {
      run.status = 'cancelled';
      run.finished_at = now();
      run.error = { code: 'cancelled', message: 'The run was cancelled by a user.' };
      emit(run, 'run.failed', { status: 'cancelled', error: run.error, changed_files: [] });
      return;
    }
    const ch = changes(base, files);
    const changed = ch.added.length + ch.changed.length + ch.deleted.length > 0;
    let rev = null, cp = null;
    if (changed) {
      rev = newRevision(app, files, 'run', run.id);
      emit(run, 'revision.created', { revision_id: rev.id, parent_id: rev.parent_id, ...ch });
      cp = newCheckpoint(app, rev, 'auto', `After run #${run.id}`, `wrote ${ch.added.length + ch.changed.length} files`, run.id);
      emit(run, 'checkpoint.created', { checkpoint_id: cp.id, revision_id: rev.id, label: cp.label, summary: cp.summary });
    }
    await streamText(run, 1, 'Done: the page is ready in the preview.', slow ? 150 : 30);
    run.status = 'completed';
    run.finished_at = now();
    run.revision_id = rev ? rev.id : null;
    run.checkpoint_id = cp ? cp.id : null;
    run.usage = { prompt_tokens: 1200, completion_tokens: 340, total_tokens: 1540 };
    emit(run, 'run.completed', { status: 'completed', changed, revision_id: run.revision_id, checkpoint_id: run.checkpoint_id, usage: run.usage, steps });
  } finally {
    app.active_run_id = null;
  }
}

/* ---- HTTP ---- */

function send(res, status, body, headers = {}) {
  const text = body === null ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
  res.end(text);
}
const fail = (res, status, code, message, extra = {}) => send(res, status, { error: { code, message, ...extra } });

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const s = Buffer.concat(chunks).toString('utf8');
  if (!s) return {};
  return JSON.parse(s);
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.css': 'text/css', '.js': 'text/javascript', '.svg': 'image/svg+xml', '.txt': 'text/plain', '.json': 'application/json' };
const ctype = (p) => TYPES[path.extname(p)] || 'application/octet-stream';

function page(items, url) {
  const limit = Math.max(1, Math.min(100, Number(url.searchParams.get('limit') || 20)));
  const start = Number(url.searchParams.get('cursor') || 0);
  const slice = items.slice(start, start + limit);
  return { items: slice, next_cursor: start + limit < items.length ? String(start + limit) : null };
}

function serveFile(res, files, rel) {
  const p = rel === '' ? 'index.html' : rel;
  if (!(p in files)) { res.writeHead(404, { 'Content-Type': 'text/html' }); res.end('<h1>404</h1>'); return; }
  res.writeHead(200, { 'Content-Type': ctype(p), 'Cache-Control': 'no-cache' });
  res.end(files[p]);
}

async function handle(req, res) {
  const url = new URL(req.url, ORIGIN);
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'preview') {
    const app = apps.get(Number(parts[1]));
    if (!app || !app.draft_revision_id) return fail(res, 404, 'not_found', 'no preview');
    return serveFile(res, revisions.get(app.draft_revision_id).files, parts.slice(4).join('/'));
  }
  if (parts[0] === 'sites') {
    const app = [...apps.values()].find((a) => a.slug === parts[2]);
    const files = app && published.get(app.id);
    if (!files) { res.writeHead(404); res.end('not published'); return; }
    return serveFile(res, files, parts.slice(3).join('/'));
  }
  if (parts[0] !== 'admin') {
    const rel = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
    const file = path.resolve(WWW, rel);
    if (!file.startsWith(WWW) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) { res.writeHead(404); res.end('not found'); return; }
    res.writeHead(200, { 'Content-Type': ctype(file), 'Cache-Control': 'no-cache' });
    res.end(fs.readFileSync(file));
    return;
  }
  if (parts[1] === 'health') return send(res, 200, { status: 'ok', database: 'ok', sandbox: 'ok' });
  if (req.headers.authorization !== `Bearer ${TOKEN}`) return fail(res, 401, 'unauthorized', 'missing or unknown token');
  let body = {};
  if (req.method === 'POST' || req.method === 'PATCH') {
    try { body = await readJson(req); } catch { return fail(res, 400, 'malformed_json', 'body is not JSON'); }
  }
  const m = req.method;
  if (parts[1] !== 'apps') return fail(res, 404, 'not_found', 'no such route');
  if (parts.length === 2) {
    if (m === 'GET') return send(res, 200, page([...apps.values()].reverse(), url));
    if (m === 'POST') {
      if (!body.name) return fail(res, 422, 'missing_field', 'name is required', { field: 'name' });
      if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(body.slug || '')) return fail(res, 422, 'invalid_field', 'slug must be 1-63 of a-z 0-9 -', { field: 'slug' });
      if ([...apps.values()].some((a) => a.slug === body.slug)) return fail(res, 409, 'conflict', `slug ${body.slug} is taken`);
      const app = { id: newId(), slug: body.slug, name: body.name, created_at: now(), updated_at: now(), draft_revision_id: null, published_revision_id: null, publish_url: `${ORIGIN}/sites/acme/${body.slug}/`, active_run_id: null };
      apps.set(app.id, app);
      return send(res, 201, app);
    }
    return fail(res, 405, 'method_not_allowed', 'GET, POST');
  }
  const app = apps.get(Number(parts[2]));
  if (!app) return fail(res, 404, 'not_found', 'no such app');
  const rest = parts.slice(3);
  if (rest.length === 0) return send(res, 200, app);
  if (rest[0] === 'preview') return send(res, 200, { url: `/preview/${app.id}/${Math.floor(Date.now() / 1000) + 600}/${crypto.randomBytes(6).toString('hex')}/` });
  if (rest[0] === 'publish' && m === 'POST') {
    await wait(600);
    const rev = revisions.get(body.revision_id || app.draft_revision_id);
    if (!rev) return fail(res, 422, 'invalid_field', 'nothing to publish', { field: 'revision_id' });
    if ('FAIL' in rev.files) return fail(res, 422, 'build_failed', 'the build failed', { log: 'step 1: ok\nstep 2: error: FAIL file present\n' });
    published.set(app.id, { ...rev.files });
    app.published_revision_id = rev.id;
    return send(res, 200, { publish: { id: newId(), revision_id: rev.id, artifact_sha256: sha(JSON.stringify(rev.files)), url: app.publish_url, created_at: now(), built: true } });
  }
  if (rest[0] === 'revisions') {
    if (rest.length === 1 && m === 'POST') {
      if (app.active_run_id) return fail(res, 409, 'run_active', 'a run is active', { run_id: app.active_run_id });
      const base = body.replace === false ? revisions.get(app.draft_revision_id)?.files || {} : {};
      const rev = newRevision(app, { ...base, ...body.files }, 'manual');
      newCheckpoint(app, rev, 'manual', 'Upload', 'manual upload');
      return send(res, 201, revisionJson(rev));
    }
    const rev = revisions.get(Number(rest[1]));
    if (!rev || rev.app_id !== app.id) return fail(res, 404, 'not_found', 'no such revision');
    if (rest.length === 2) return send(res, 200, revisionJson(rev));
    if (rest[2] === 'files') {
      const p = rest.slice(3).join('/');
      if (!(p in rev.files)) return fail(res, 404, 'not_found', 'no such file');
      res.writeHead(200, { 'Content-Type': ctype(p) });
      res.end(rev.files[p]);
      return;
    }
  }
  if (rest[0] !== 'coding-agent') return fail(res, 404, 'not_found', 'no such route');
  const agent = rest.slice(1);
  if (agent[0] === 'runs') {
    if (agent.length === 1 && m === 'POST') {
      if (app.active_run_id) return fail(res, 409, 'run_active', 'another run is active', { run_id: app.active_run_id });
      const same = [...runs.values()].find((r) => r.app_id === app.id && body.client_request_id && r.client_request_id === body.client_request_id);
      if (same) return send(res, 200, runJson(same));
      const id = newId();
      const run = {
        id, app_id: app.id, status: 'queued', input: String(body.input || ''), client_request_id: body.client_request_id || null, attempt: 1,
        created_at: now(), started_at: null, finished_at: null, error: null, usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 },
        base_revision_id: app.draft_revision_id, revision_id: null, checkpoint_id: null,
        stream_url: `/admin/apps/${app.id}/coding-agent/runs/${id}/stream`, events_url: `/admin/apps/${app.id}/coding-agent/runs/${id}/events`,
        events: [], listeners: new Set(), cancelled: false,
      };
      runs.set(id, run);
      app.active_run_id = id;
      executeRun(app, run).catch((e) => console.error(e));
      return send(res, 202, runJson(run));
    }
    if (agent.length === 1) return send(res, 200, page([...runs.values()].filter((r) => r.app_id === app.id).reverse().map(runJson), url));
    const run = runs.get(Number(agent[1]));
    if (!run || run.app_id !== app.id) return fail(res, 404, 'not_found', 'no such run');
    if (agent.length === 2) return send(res, 200, runJson(run));
    if (agent[2] === 'cancel' && m === 'POST') {
      if (!['queued', 'running'].includes(run.status)) return fail(res, 409, 'conflict', 'run is not active');
      run.cancelled = true;
      return send(res, 202, runJson(run));
    }
    if (agent[2] === 'events') {
      const after = Number(url.searchParams.get('after') || 0);
      const limit = Math.min(100, Number(url.searchParams.get('limit') || 20));
      const items = run.events.filter((e) => e.seq > after).slice(0, limit);
      const last = items.length ? items[items.length - 1].seq : after;
      return send(res, 200, { items, next_after: last, terminal: ['completed', 'failed', 'cancelled'].includes(run.status) });
    }
    if (agent[2] === 'stream') {
      const after = Number(req.headers['last-event-id'] || url.searchParams.get('after') || 0);
      console.log(`stream run ${run.id}: Last-Event-ID=${req.headers['last-event-id'] ?? '-'} after=${url.searchParams.get('after')} (${run.events.length} events so far)`);
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' });
      // Deliberately awkward framing: CRLF line ends, and every event written
      // in two pieces split mid-line, to exercise the client's parser.
      const write = (env) => {
        const text = `id: ${env.seq}\r\nevent: ${env.type}\r\ndata: ${JSON.stringify(env)}\r\n\r\n`;
        const cut = Math.floor(text.length / 2);
        res.write(text.slice(0, cut));
        res.write(text.slice(cut));
        if (env.type === 'run.completed' || env.type === 'run.failed') {
          run.listeners.delete(write);
          res.end();
        }
      };
      res.write(': hello\n\n');
      for (const env of run.events.filter((e) => e.seq > after)) write(env);
      if (!res.writableEnded) {
        run.listeners.add(write);
        const ka = setInterval(() => res.write(': keep-alive\n\n'), 15000);
        res.on('close', () => { clearInterval(ka); run.listeners.delete(write); });
      }
      return;
    }
  }
  if (agent[0] === 'checkpoints') {
    const list = [...checkpoints.values()].filter((c) => c.app_id === app.id).reverse();
    if (agent.length === 1) return send(res, 200, page(list.map((c) => cpJson(c)), url));
    const cp = checkpoints.get(Number(agent[1]));
    if (!cp || cp.app_id !== app.id) return fail(res, 404, 'not_found', 'no such checkpoint');
    const cpFiles = revisions.get(cp.revision_id).files;
    const draft = revisions.get(app.draft_revision_id)?.files || {};
    if (agent.length === 2) return send(res, 200, cpJson(cp, true));
    if (agent[2] === 'restore' && m === 'POST') {
      const ch = changes(draft, cpFiles);
      if (body.dry_run) return send(res, 200, { dry_run: true, ...ch });
      if (app.active_run_id) return fail(res, 409, 'run_active', 'a run is active', { run_id: app.active_run_id });
      if (body.expected_revision_id && body.expected_revision_id !== app.draft_revision_id) return fail(res, 409, 'revision_moved', 'the draft moved', { revision_id: app.draft_revision_id });
      const rev = newRevision(app, cpFiles, 'restore');
      const ncp = newCheckpoint(app, rev, 'restore', `Restored #${cp.id}`, `restored checkpoint ${cp.id}`);
      return send(res, 200, { revision: revisionJson(rev), checkpoint: cpJson(ncp), ...ch });
    }
    if (agent[2] === 'revert-file' && m === 'POST') {
      if (app.active_run_id) return fail(res, 409, 'run_active', 'a run is active', { run_id: app.active_run_id });
      const p = body.path;
      if (typeof p !== 'string' || (!(p in cpFiles) && !(p in draft))) return fail(res, 422, 'invalid_field', 'unknown path', { field: 'path' });
      const files = { ...draft };
      let action = 'restored';
      if (p in cpFiles) files[p] = cpFiles[p];
      else { delete files[p]; action = 'deleted'; }
      const rev = newRevision(app, files, 'restore');
      const ncp = newCheckpoint(app, rev, 'restore', `Reverted ${p}`, `reverted ${p} from checkpoint ${cp.id}`);
      return send(res, 200, { path: p, action, revision: revisionJson(rev), checkpoint: cpJson(ncp) });
    }
    if (agent[2] === 'diff') {
      const other = agent[3] === 'draft' ? draft : revisions.get(checkpoints.get(Number(agent[3]))?.revision_id)?.files;
      if (!other) return fail(res, 404, 'not_found', 'no such checkpoint');
      const ch = changes(cpFiles, other);
      return send(res, 200, { from: cp.id, to: agent[3] === 'draft' ? 'draft' : Number(agent[3]), added: ch.added, removed: ch.deleted, changed: ch.changed.map((p) => ({ path: p, binary: false, diff: unified(p, cpFiles[p], other[p]), truncated: false })) });
    }
  }
  return fail(res, 404, 'not_found', 'no such route');
}

/* ---- listening, and the nginx-stop / nginx-start imitation ---- */

const sockets = new Set();
const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => { console.error(e); if (!res.headersSent) fail(res, 500, 'internal', String(e)); });
});
server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
const listen = () => server.listen(PORT, '127.0.0.1', () => console.log(`mock stack on ${ORIGIN} (token ${TOKEN})`));
setInterval(() => {}, 60000); // stay alive while "stopped", with no server open
process.on('SIGUSR1', () => {
  server.close();
  for (const s of sockets) s.destroy();
  console.log('mock: stopped listening');
});
process.on('SIGUSR2', () => { if (!server.listening) listen(); });
process.on('SIGTERM', () => process.exit(0));
if (process.env.MOCK_PIDFILE) fs.writeFileSync(process.env.MOCK_PIDFILE, String(process.pid));
listen();
