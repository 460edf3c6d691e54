// The stack under test, seen from Node: its settings from the environment,
// its API (to check the page against the server's own answers) and the
// stack-control command. Shared by the Chromium and the Firefox suites.
//
// Environment:
//   KILN_URL        base URL of the stack's nginx, e.g. http://127.0.0.1:18080
//   KILN_TOKEN      an API token of one organization
//   KILN_STACK_CTL  command taking nginx-stop / nginx-start (stream drop test)
//   KILN_ARTIFACTS  folder for screenshots (optional; none are saved without it)

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const BASE = (process.env.KILN_URL || '').replace(/\/+$/, '');
export const TOKEN = process.env.KILN_TOKEN || '';
export const STACK_CTL = process.env.KILN_STACK_CTL || '';
export const ARTIFACTS = process.env.KILN_ARTIFACTS || '';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Calls fn until it returns something truthy (errors count as "not yet"). */
export async function poll(what, fn, timeoutMs = 30000, everyMs = 250) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

/** Runs the stack-control command (nginx-stop, nginx-start). */
export async function stackCtl(action) {
  await execFileP(STACK_CTL, [action], { timeout: 30000 });
}

/* The API answer as {status, json, text}; a non-2xx answer throws unless
 * {allowError: true}. */
export async function apiCall(method, p, body, { allowError = false } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${TOKEN}` } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(`${BASE}${p}`, init);
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* raw file bytes */ }
  if (!res.ok && !allowError) throw new Error(`${method} ${p}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return { status: res.status, json, text };
}

export async function allEvents(appId, runId) {
  const out = [];
  let after = 0;
  for (let i = 0; i < 100; i++) {
    const { json } = await apiCall('GET', `/admin/apps/${appId}/coding-agent/runs/${runId}/events?after=${after}&limit=100`);
    if (!json.items.length) break;
    out.push(...json.items);
    after = json.items[json.items.length - 1].seq;
  }
  return out;
}

/* The text a correct client shows for each message index. */
export function expectedMessages(events) {
  const m = new Map();
  for (const e of events) {
    if (e.type !== 'assistant.delta') continue;
    const i = e.payload.message_index ?? 0;
    if (e.payload.restart === true) m.set(i, '');
    m.set(i, (m.get(i) ?? '') + (e.payload.text ?? ''));
  }
  return m;
}

export async function draftFiles(appId) {
  const { json: app } = await apiCall('GET', `/admin/apps/${appId}`);
  const { json: rev } = await apiCall('GET', `/admin/apps/${appId}/revisions/${app.draft_revision_id}`);
  return { app, rev, paths: rev.files.map((f) => f.path).sort() };
}

/** Polls until the app's draft revision is no longer `before`. */
export function draftChangedFrom(appId, before, what) {
  return poll(what, async () => {
    const d = await draftFiles(appId);
    return d.app.draft_revision_id !== before ? d : null;
  });
}

export async function fileText(appId, revId, p) {
  return (await apiCall('GET', `/admin/apps/${appId}/revisions/${revId}/files/${p}`)).text;
}

export async function startRun(appId, input) {
  const { json } = await apiCall('POST', `/admin/apps/${appId}/coding-agent/runs`, { input });
  return json;
}

export async function cancelActiveRun(appId) {
  const { json } = await apiCall('GET', `/admin/apps/${appId}`, undefined, { allowError: true });
  if (json && json.active_run_id) {
    await apiCall('POST', `/admin/apps/${appId}/coding-agent/runs/${json.active_run_id}/cancel`, {}, { allowError: true });
  }
}
