// Real-browser tests of the builder workspace page against a running Kiln
// stack (nginx + kiln FastCGI + MariaDB + the scripted model).
//
// Environment:
//   KILN_URL        base URL of the stack's nginx, e.g. http://127.0.0.1:18080
//   KILN_TOKEN      an API token of one organization
//   KILN_STACK_CTL  command taking nginx-stop / nginx-start (stream drop test)
//   KILN_ARTIFACTS  folder for screenshots (optional; none are saved without it)
//   KILN_CHROMIUM   browser binary (default /usr/bin/chromium)
//
// The tests run in order and share one app: each builds on the state the one
// before it left, as a person working through the page would.

import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const run = promisify(execFile);

const BASE = (process.env.KILN_URL || '').replace(/\/+$/, '');
const TOKEN = process.env.KILN_TOKEN || '';
const STACK_CTL = process.env.KILN_STACK_CTL || '';
const ARTIFACTS = process.env.KILN_ARTIFACTS || '';
const CHROMIUM = process.env.KILN_CHROMIUM || '/usr/bin/chromium';

const MARK = `kiln-ui-${Date.now().toString(36)}`;
const MANUAL_HTML = `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Manual</title></head>\n<body><h1 id="manual">Manual edit ${MARK}</h1></body></html>\n`;

/* ---- helpers ---- */

async function apiCall(method, p, body) {
  const init = { method, headers: { Authorization: `Bearer ${TOKEN}` } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(`${BASE}${p}`, init);
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* raw file bytes */ }
  if (!res.ok) throw new Error(`${method} ${p}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return { status: res.status, json, text };
}

async function allEvents(appId, runId) {
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
function expectedMessages(events) {
  const m = new Map();
  for (const e of events) {
    if (e.type !== 'assistant.delta') continue;
    const i = e.payload.message_index ?? 0;
    if (e.payload.restart === true) m.set(i, '');
    m.set(i, (m.get(i) ?? '') + (e.payload.text ?? ''));
  }
  return m;
}

async function draftFiles(appId) {
  const { json: app } = await apiCall('GET', `/admin/apps/${appId}`);
  const { json: rev } = await apiCall('GET', `/admin/apps/${appId}/revisions/${app.draft_revision_id}`);
  return { app, rev, paths: rev.files.map((f) => f.path).sort() };
}

async function fileText(appId, revId, p) {
  return (await apiCall('GET', `/admin/apps/${appId}/revisions/${revId}/files/${p}`)).text;
}

async function poll(what, fn, timeoutMs = 30000, everyMs = 250) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* ---- shared browser state ---- */

let userDataDir;
let context;
let page;
const problems = []; // errors the page itself logged
const S = {};        // state shared along the scenario

async function shot(name) {
  if (!ARTIFACTS || !page) return;
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

/* Runs a scenario body; on failure keeps a screenshot for the post-mortem. */
function scenario(name, opts, body) {
  test(name, opts, async (t) => {
    if (!page) throw new Error('no browser page: see the first failure (environment or Chromium start)');
    try {
      await body(t);
    } catch (err) {
      await shot(`FAILED-${name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}`).catch(() => {});
      throw err;
    }
  });
}

const tid = (id) => `[data-testid="${id}"]`;
const lastRun = () => page.locator(tid('run')).last();

async function sendMessage(text) {
  const input = page.getByTestId('chat-input');
  await input.fill(text);
  await input.press('Enter');
  await page.getByTestId('run-status').waitFor({ state: 'visible' });
  const runEl = lastRun();
  const runId = Number(await runEl.getAttribute('data-run-id'));
  assert.ok(runId > 0, 'the new run shows up in the timeline');
  return { runEl: page.locator(`${tid('run')}[data-run-id="${runId}"]`), runId };
}

async function waitOutcome(runEl, timeout = 90000) {
  const outcome = runEl.getByTestId('run-outcome');
  await outcome.waitFor({ state: 'visible', timeout });
  return outcome.getAttribute('data-status');
}

async function previewText() {
  return page.frameLocator(tid('preview-frame')).locator('body').innerText({ timeout: 10000 });
}

async function treePaths() {
  return (await page.locator(`${tid('file-tree')} ${tid('file-item')}`).evaluateAll((els) => els.map((e) => e.dataset.path))).sort();
}

async function selectTab(name) {
  await page.getByTestId(`tab-${name}`).click();
}

/* Checks the rendered run against the run's events from the API: one card
 * per tool call, one outcome, and exactly the streamed text (no duplicated
 * or lost deltas). */
async function assertRunMatchesEvents(appId, runId, runEl) {
  const events = await allEvents(appId, runId);
  const seqs = events.map((e) => e.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), 'API events are gapless from 1');

  const callIds = [...new Set(events.filter((e) => e.type.startsWith('tool.')).map((e) => String(e.payload.call_id)))].sort();
  const uiCallIds = (await runEl.getByTestId('tool-card').evaluateAll((els) => els.map((e) => e.dataset.callId))).sort();
  assert.deepEqual(uiCallIds, callIds, 'one tool card per call_id, none twice');

  for (const e of events.filter((x) => x.type === 'tool.completed' || x.type === 'tool.failed')) {
    const status = await runEl.locator(`${tid('tool-card')}[data-call-id="${e.payload.call_id}"]`).getAttribute('data-status');
    assert.equal(status, e.type === 'tool.completed' ? 'completed' : 'failed', `tool card ${e.payload.call_id} ended in place`);
  }

  const count = (type) => events.filter((e) => e.type === type).length;
  assert.equal(await runEl.getByTestId('revision-card').count(), count('revision.created'), 'revision cards');
  assert.equal(await runEl.getByTestId('checkpoint-card').count(), count('checkpoint.created'), 'checkpoint cards');
  assert.equal(await runEl.getByTestId('run-outcome').count(), 1, 'exactly one outcome card');

  const uiSeqs = (await runEl.locator('[data-seqs]').evaluateAll((els) => els.flatMap((e) => e.dataset.seqs.split(' ').filter(Boolean)))).map(Number);
  assert.equal(new Set(uiSeqs).size, uiSeqs.length, 'no event is rendered twice');

  const want = expectedMessages(events);
  const got = new Map(await runEl.getByTestId('assistant-message').evaluateAll((els) =>
    els.map((e) => [Number(e.dataset.messageIndex), e.querySelector('.msg-text').textContent])));
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), 'one message per message_index');
  for (const [i, text] of want) assert.equal(got.get(i), text, `message ${i} shows exactly the streamed text`);
  return events;
}

/* ---- the scenario ---- */

describe('Kiln builder workspace in Chromium', { concurrency: false }, () => {
  /* A test rather than a before() hook, so that a missing variable or a
   * browser that does not start is counted as a failure, not a cancel. */
  test('starts Chromium for the stack named by KILN_URL and KILN_TOKEN', { timeout: 60000 }, async () => {
    assert.ok(BASE, 'KILN_URL must name the stack, e.g. http://127.0.0.1:18080');
    assert.ok(TOKEN, 'KILN_TOKEN must hold an API token');
    assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM}`);
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30000,
      viewport: { width: 1440, height: 900 },
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(20000);
    page.on('pageerror', (err) => {
      if (/\/(preview|sites)\//.test(err.stack || '')) return; // the model's app, not the page
      problems.push(`pageerror: ${err.message}`);
    });
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const url = msg.location().url || '';
      if (/Failed to load resource/.test(msg.text())) return; // failed requests are expected (401 test, nginx drop)
      if (url.includes('/preview/') || url.includes('/sites/')) return; // the model's app, not the page
      problems.push(`console: ${msg.text()} (${url})`);
    });
  });

  after(async () => {
    await context?.close().catch(() => {});
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
    /* Leave the test app's stack state to the stack's own teardown, but do
     * not leave it mid-run. */
    if (S.appId) {
      const { json } = await apiCall('GET', `/admin/apps/${S.appId}`).catch(() => ({ json: null }));
      if (json && json.active_run_id) {
        await apiCall('POST', `/admin/apps/${S.appId}/coding-agent/runs/${json.active_run_id}/cancel`, {}).catch(() => {});
      }
    }
  });

  scenario('signs in with a token and rejects a bad one', { timeout: 30000 }, async () => {
    await page.goto(`${BASE}/`);
    const token = page.getByTestId('token-input');
    await token.waitFor();
    await token.fill('definitely-not-a-valid-token');
    await page.getByTestId('sign-in').click();
    const err = page.locator(`${tid('error-item')}[data-code="unauthorized"]`);
    await err.waitFor();
    assert.match(await err.innerText(), /unauthorized/);
    await err.getByTestId('error-dismiss').click();
    await page.getByTestId('error-banner').waitFor({ state: 'hidden' });

    await token.fill(TOKEN);
    await token.press('Enter');
    await page.getByTestId('apps-view').waitFor({ state: 'visible' });
    await page.locator(`${tid('app-list')}[aria-busy="false"]`).waitFor({ state: 'attached' });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('kiln.token')), TOKEN, 'token kept in sessionStorage');
  });

  scenario('creates an app, lists it and opens it', { timeout: 30000 }, async () => {
    S.slug = `ui-${Date.now().toString(36)}`;
    S.name = `Browser test ${S.slug}`;
    await page.getByTestId('create-app-name').fill(S.name);
    await page.getByTestId('create-app-slug').fill(S.slug);
    await page.getByTestId('create-app-submit').click();
    await page.waitForURL(/#\/apps\/\d+$/);
    S.appId = Number(/#\/apps\/(\d+)$/.exec(page.url())[1]);
    await page.getByTestId('workspace-title').filter({ hasText: S.name }).waitFor();

    await page.goto(`${BASE}/#/`);
    const item = page.locator(`${tid('app-item')}[data-slug="${S.slug}"]`);
    await item.waitFor();
    assert.match(await item.innerText(), new RegExp(S.name));
    await shot('01-app-list');
    await item.click();
    await page.getByTestId('workspace-title').filter({ hasText: S.name }).waitFor();
    assert.equal(await page.getByTestId('chat-input').isVisible(), true);
  });

  scenario('streams a run: text, tool cards, revision, checkpoint and outcome', { timeout: 120000 }, async () => {
    const input = page.getByTestId('chat-input');
    await input.fill('[script:default] Build a small landing page');
    await input.press('Shift+Enter');
    await input.pressSequentially('with a heading, styles and a script.');
    assert.match(await input.inputValue(), /page\nwith a heading/, 'Shift+Enter adds a line, not a send');
    assert.equal(await page.locator(tid('run')).count(), 0, 'nothing was sent yet');
    await input.press('Enter');
    await page.getByTestId('run-status').waitFor({ state: 'visible' });
    const runId = Number(await lastRun().getAttribute('data-run-id'));
    const runEl = page.locator(`${tid('run')}[data-run-id="${runId}"]`);
    S.run1 = runId;
    assert.equal(await runEl.getByTestId('user-message').innerText(), '[script:default] Build a small landing page\nwith a heading, styles and a script.');

    assert.equal(await waitOutcome(runEl), 'completed');
    assert.equal(await runEl.getAttribute('data-status'), 'completed');
    await page.getByTestId('run-status').waitFor({ state: 'hidden' });
    const events = await assertRunMatchesEvents(S.appId, runId, runEl);
    assert.ok(events.some((e) => e.type === 'tool.started'), 'the script called tools');
    assert.ok((await runEl.getByTestId('assistant-message').first().innerText()).trim().length > 0, 'assistant text shown');
    assert.equal(await runEl.locator(`${tid('tool-card')}[data-status="running"]`).count(), 0, 'no card left running');

    // A card expands to its raw event JSON.
    const card = runEl.getByTestId('tool-card').first();
    const callId = await card.getAttribute('data-call-id');
    await card.getByTestId('event-payload').locator('summary').click();
    await card.getByTestId('event-json').first().waitFor();
    const raws = await card.getByTestId('event-json').allInnerTexts();
    assert.ok(raws.length >= 1);
    const env = JSON.parse(raws[0]);
    assert.equal(env.type, 'tool.started');
    assert.equal(env.run_id, runId);
    assert.equal(String(env.payload.call_id), callId);

    // The file tree and the preview follow the new draft.
    const { rev, paths } = await poll('draft with files', async () => {
      const d = await draftFiles(S.appId);
      return d.paths.length ? d : null;
    });
    S.run1Paths = paths;
    for (const p of ['index.html', 'style.css', 'app.js']) assert.ok(paths.includes(p), `the default script wrote ${p}`);
    await poll('file tree to show the draft', async () => JSON.stringify(await treePaths()) === JSON.stringify(paths));
    S.run1Index = await fileText(S.appId, rev.id, 'index.html');
    await poll('preview to show the draft', async () => (await previewText()).trim().length > 0);
    await shot('03-completed-run');
  });

  scenario('file viewer shows a draft file read-only', { timeout: 30000 }, async () => {
    await selectTab('files');
    await page.locator(`${tid('file-item')}[data-path="index.html"]`).click();
    const viewer = page.locator(`${tid('file-viewer')}[data-path="index.html"]`);
    await viewer.waitFor();
    assert.equal(await viewer.getByTestId('file-content').textContent(), S.run1Index);
    assert.equal(await viewer.locator('textarea, [contenteditable="true"]').count(), 0, 'the viewer is read-only');
  });

  scenario('a reload shows the history; undo restores the state before the last run', { timeout: 150000 }, async () => {
    // Someone uploads a manual draft; the page picks it up on reload.
    const { json: manualRev } = await apiCall('POST', `/admin/apps/${S.appId}/revisions`, { files: { 'index.html': MANUAL_HTML }, replace: true });
    S.manualRevId = manualRev.id;
    await page.reload();
    await poll('file tree to show the manual draft', async () => JSON.stringify(await treePaths()) === JSON.stringify(['index.html']));
    const oldRun = page.locator(`${tid('run')}[data-run-id="${S.run1}"]`);
    assert.equal(await oldRun.getByTestId('run-outcome').getAttribute('data-status'), 'completed', 'history of run 1 shown after reload');
    await assertRunMatchesEvents(S.appId, S.run1, oldRun);
    await poll('preview to show the manual draft', async () => (await previewText()).includes(`Manual edit ${MARK}`));

    // A follow-up run rewrites the site...
    const { runEl, runId } = await sendMessage('[script:default] Bring back the landing page, please.');
    S.run2 = runId;
    assert.equal(await waitOutcome(runEl), 'completed');
    const afterRun = await poll('run 2 to change the draft', async () => {
      const d = await draftFiles(S.appId);
      return d.app.draft_revision_id !== S.manualRevId && !d.app.active_run_id ? d : null;
    });
    assert.notDeepEqual(afterRun.paths, ['index.html'], 'the follow-up run wrote files');
    await poll('file tree to show run 2', async () => JSON.stringify(await treePaths()) === JSON.stringify(afterRun.paths));

    // ...and one click on Undo brings the manual draft back.
    await page.getByTestId('undo-button').click();
    const undone = await poll('undo to restore the manual draft', async () => {
      const d = await draftFiles(S.appId);
      return d.app.draft_revision_id !== afterRun.app.draft_revision_id ? d : null;
    });
    assert.deepEqual(undone.paths, ['index.html']);
    assert.equal(await fileText(S.appId, undone.rev.id, 'index.html'), MANUAL_HTML);
    await poll('file tree after undo', async () => JSON.stringify(await treePaths()) === JSON.stringify(['index.html']));
    await poll('preview after undo', async () => (await previewText()).includes(`Manual edit ${MARK}`));
  });

  scenario('restores a checkpoint from the list after a confirm with dry-run counts', { timeout: 60000 }, async () => {
    const { json: run1 } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/runs/${S.run1}`);
    assert.ok(run1.checkpoint_id, 'run 1 recorded a checkpoint');
    S.run1Checkpoint = run1.checkpoint_id;
    const { json: dry } = await apiCall('POST', `/admin/apps/${S.appId}/coding-agent/checkpoints/${run1.checkpoint_id}/restore`, { dry_run: true });
    const before = (await draftFiles(S.appId)).app.draft_revision_id;

    await selectTab('checkpoints');
    const item = page.locator(`${tid('checkpoint-item')}[data-checkpoint-id="${run1.checkpoint_id}"]`);
    await item.waitFor();
    assert.match(await item.innerText(), /auto/, 'the list shows the checkpoint type');

    // Cancelling the confirm changes nothing.
    await item.getByTestId('restore-button').click();
    const dialog = page.getByTestId('restore-dialog');
    await dialog.waitFor({ state: 'visible' });
    await page.getByTestId('restore-cancel').click();
    await dialog.waitFor({ state: 'hidden' });
    assert.equal((await draftFiles(S.appId)).app.draft_revision_id, before, 'cancel keeps the draft');

    await item.getByTestId('restore-button').click();
    await dialog.waitFor({ state: 'visible' });
    const counts = page.getByTestId('restore-counts');
    assert.equal(Number(await counts.getAttribute('data-added')), dry.added.length);
    assert.equal(Number(await counts.getAttribute('data-changed')), dry.changed.length);
    assert.equal(Number(await counts.getAttribute('data-deleted')), dry.deleted.length);
    await shot('04-checkpoint-restore');
    await page.getByTestId('restore-confirm').click();
    await dialog.waitFor({ state: 'hidden' });

    const restored = await poll('restore to land', async () => {
      const d = await draftFiles(S.appId);
      return d.app.draft_revision_id !== before ? d : null;
    });
    assert.deepEqual(restored.paths, S.run1Paths, 'the files of run 1 are back');
    assert.equal(await fileText(S.appId, restored.rev.id, 'index.html'), S.run1Index);
    await poll('file tree after restore', async () => JSON.stringify(await treePaths()) === JSON.stringify(S.run1Paths));
    await poll('preview after restore', async () => !(await previewText()).includes(`Manual edit ${MARK}`));
    await selectTab('files');
    await page.locator(`${tid('file-item')}[data-path="index.html"]`).click();
    await poll('viewer after restore', async () =>
      (await page.locator(`${tid('file-viewer')}[data-path="index.html"] ${tid('file-content')}`).textContent()) === S.run1Index);
  });

  scenario('reverts one file from a checkpoint', { timeout: 60000 }, async () => {
    const { json: cps } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/checkpoints?limit=100`);
    const manualCp = cps.items.find((c) => c.revision_id === S.manualRevId);
    assert.ok(manualCp, 'the manual upload recorded a checkpoint');
    const before = (await draftFiles(S.appId)).app.draft_revision_id;

    await selectTab('checkpoints');
    await page.getByTestId('revert-checkpoint').selectOption(String(manualCp.id));
    await poll('revert file list', async () =>
      (await page.locator(`${tid('revert-file')} option[value="index.html"]`).count()) === 1);
    await page.getByTestId('revert-file').selectOption('index.html');
    await page.getByTestId('revert-submit').click();
    await poll('revert result', async () => /restored/.test(await page.getByTestId('revert-result').innerText()));

    const d = await poll('revert to land', async () => {
      const x = await draftFiles(S.appId);
      return x.app.draft_revision_id !== before ? x : null;
    });
    assert.deepEqual(d.paths, S.run1Paths, 'the other files stay');
    assert.equal(await fileText(S.appId, d.rev.id, 'index.html'), MANUAL_HTML, 'index.html came back from the checkpoint');
    assert.equal(await fileText(S.appId, d.rev.id, 'style.css'), await fileText(S.appId, (await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/runs/${S.run1}`)).json.revision_id, 'style.css'));
    await poll('preview after revert', async () => (await previewText()).includes(`Manual edit ${MARK}`));
    await selectTab('files');
    await poll('viewer after revert', async () =>
      (await page.locator(`${tid('file-viewer')}[data-path="index.html"] ${tid('file-content')}`).textContent()) === MANUAL_HTML);
  });

  scenario('shows the diff between a checkpoint and the draft', { timeout: 30000 }, async () => {
    const { json: diff } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/checkpoints/${S.run1Checkpoint}/diff/draft`);
    await selectTab('diff');
    await page.getByTestId('diff-checkpoint').selectOption(String(S.run1Checkpoint));
    await page.getByTestId('diff-target').selectOption('draft');
    await page.getByTestId('diff-show').click();
    const view = page.getByTestId('diff-view');
    const file = view.locator(`${tid('diff-file')}[data-path="index.html"][data-kind="changed"]`);
    await file.waitFor();
    const kinds = await view.getByTestId('diff-file').evaluateAll((els) => els.map((e) => `${e.dataset.kind}:${e.dataset.path}`));
    const want = [...diff.added.map((p) => `added:${p.path ?? p}`), ...diff.removed.map((p) => `removed:${p.path ?? p}`),
      ...diff.changed.map((c) => `changed:${c.path}`)];
    assert.deepEqual(kinds.sort(), want.sort(), 'the view lists what the API reports');
    const added = await file.locator('.dl-add').allInnerTexts();
    const removed = await file.locator('.dl-del').allInnerTexts();
    assert.ok(added.some((l) => l.includes(`Manual edit ${MARK}`)), 'added lines include the new heading');
    assert.ok(removed.length > 0, 'removed lines are shown');
    const [addBg, delBg] = await Promise.all([
      file.locator('.dl-add').first().evaluate((e) => getComputedStyle(e).backgroundColor),
      file.locator('.dl-del').first().evaluate((e) => getComputedStyle(e).backgroundColor),
    ]);
    assert.notEqual(addBg, delBg, 'added and removed lines are coloured differently');
    assert.notEqual(addBg, 'rgba(0, 0, 0, 0)');
    await shot('05-diff-view');
  });

  scenario('publishes the draft and serves it at the public URL', { timeout: 120000 }, async () => {
    await page.getByTestId('publish-button').click();
    const link = page.getByTestId('publish-url');
    await link.waitFor({ state: 'visible', timeout: 90000 });
    assert.equal(await page.getByTestId('publish-status').getAttribute('data-state'), 'published');
    const href = await link.getAttribute('href');
    assert.match(href, /^https?:\/\//);
    const res = await fetch(href);
    assert.equal(res.status, 200, `GET ${href}`);
    assert.ok((await res.text()).includes(`Manual edit ${MARK}`), 'the published site serves the draft');
    const site = await context.newPage();
    try {
      await site.goto(href);
      await site.locator('#manual').filter({ hasText: `Manual edit ${MARK}` }).waitFor();
      if (ARTIFACTS) await site.screenshot({ path: path.join(ARTIFACTS, '06-published-site.png') });
    } finally {
      await site.close();
    }
  });

  scenario('follows a run across a page reload, then cancels it', { timeout: 90000 }, async () => {
    const { runEl, runId } = await sendMessage('[script:slow] Take your time with this one.');
    // Live: something shows while the run is still going.
    await poll('first live event', async () =>
      (await runEl.getByTestId('tool-card').count()) + (await runEl.getByTestId('assistant-message').count()) > 0, 20000, 100);
    assert.equal(await runEl.getByTestId('run-outcome').count(), 0, 'the run is still going');
    assert.equal(await page.getByTestId('connection-indicator').getAttribute('data-state'), 'live');
    await shot('02-streaming-run');

    // A reload re-reads the run from its first event and stays attached.
    const cardsBefore = await runEl.getByTestId('tool-card').count();
    await page.reload();
    await runEl.waitFor();
    await poll('events replayed after reload', async () => (await runEl.getByTestId('tool-card').count()) >= cardsBefore);
    await page.getByTestId('cancel-button').waitFor({ state: 'visible' });

    await page.getByTestId('cancel-button').click();
    assert.equal(await waitOutcome(runEl, 60000), 'cancelled');
    assert.equal(await runEl.getAttribute('data-status'), 'cancelled');
    await page.getByTestId('run-status').waitFor({ state: 'hidden' });
    const { json } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/runs/${runId}`);
    assert.equal(json.status, 'cancelled');
    await assertRunMatchesEvents(S.appId, runId, runEl);
  });

  scenario('recovers from a dropped stream without duplicating events', { timeout: 120000 }, async (t) => {
    if (!STACK_CTL) {
      t.skip('KILN_STACK_CTL is not set: cannot stop nginx');
      return;
    }
    const { runEl, runId } = await sendMessage('[script:slow-tools] Keep going while the connection drops.');
    /* Drop only once a tool card is shown: a client that replayed the
     * stream from the start would then show it twice. */
    await runEl.getByTestId('tool-card').first().waitFor({ timeout: 20000 });
    assert.equal(await runEl.getByTestId('run-outcome').count(), 0, 'the run is still going when the link drops');
    const indicator = page.getByTestId('connection-indicator');
    let restarted = false;
    try {
      await run(STACK_CTL, ['nginx-stop'], { timeout: 30000 });
      await poll('indicator to say reconnecting', async () => (await indicator.getAttribute('data-state')) === 'reconnecting', 15000, 100);
      await sleep(2000);
      await run(STACK_CTL, ['nginx-start'], { timeout: 30000 });
      restarted = true;
    } finally {
      if (!restarted) await run(STACK_CTL, ['nginx-start'], { timeout: 30000 }).catch(() => {});
    }
    assert.equal(await waitOutcome(runEl, 90000), 'completed');
    await poll('indicator to settle', async () => (await indicator.getAttribute('data-state')) === 'idle', 15000);
    await assertRunMatchesEvents(S.appId, runId, runEl);
    // Errors shown while nginx was down are dismissable.
    for (let i = 0; i < 10 && await page.getByTestId('error-dismiss').count(); i++) {
      await page.getByTestId('error-dismiss').first().click();
    }
    assert.equal(await page.getByTestId('error-banner').isHidden(), true);
  });

  scenario('signs out', { timeout: 20000 }, async () => {
    await page.getByTestId('sign-out').click();
    await page.getByTestId('token-input').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('kiln.token')), null);
  });

  scenario('the page logged no errors of its own', { timeout: 5000 }, async () => {
    assert.deepEqual(problems, []);
  });
});
