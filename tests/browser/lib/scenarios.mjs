// The builder page's scenarios against the real stack, written once and run
// in each browser (chromium.test.mjs, firefox.test.mjs).
//
// The scenarios run in order and share one app: each builds on the state the
// one before it left, as a person working through the page would. Each checks
// the page against the API's own answers.

import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  BASE, TOKEN, STACK_CTL, ARTIFACTS, sleep, stackCtl, apiCall, allEvents, expectedMessages,
  draftFiles, draftChangedFrom, fileText, startRun, cancelActiveRun,
} from './stack.mjs';
import { tid } from './ui.mjs';
import { formatDuration } from '../../../nginx/www/app.js';

const runSel = (id) => `${tid('run')}[data-run-id="${id}"]`;
const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/* Runs in the page: what one run's part of the timeline shows. */
function snapshotRun(sel) {
  const run = document.querySelector(sel);
  if (!run) return null;
  const all = (q) => [...run.querySelectorAll(q)];
  const one = (el, q) => el.querySelector(q);
  return {
    status: run.dataset.status,
    tools: all('[data-testid="tool-card"]').map((c) => ({
      callId: c.dataset.callId,
      status: c.dataset.status,
      duration: one(c, '[data-testid="tool-duration"]')?.textContent ?? '',
      summary: one(c, '[data-testid="tool-summary"]')?.textContent ?? null,
      error: one(c, '.ev-error')?.textContent ?? null,
    })),
    revisions: all('[data-testid="revision-card"]').length,
    checkpoints: all('[data-testid="checkpoint-card"]').length,
    outcomes: all('[data-testid="run-outcome"]').map((c) => c.dataset.status),
    seqs: all('[data-seqs]').flatMap((e) => e.dataset.seqs.split(' ').filter(Boolean)).map(Number),
    messages: all('[data-testid="assistant-message"]').map((m) => [Number(m.dataset.messageIndex), one(m, '.msg-text').textContent]),
    textLength: all('[data-testid="assistant-message"] .msg-text').reduce((n, m) => n + m.textContent.length, 0),
    userMessage: one(run, '[data-testid="user-message"]')?.innerText ?? null,
  };
}

/* Runs in the page: records every state the publish box goes through, so a
 * state that lasts a few milliseconds is still seen. */
function recordPublishStates() {
  const box = document.getElementById('publish-status');
  const button = document.getElementById('publish');
  window.kilnPublishStates = [];
  window.kilnPublishObserver?.disconnect();
  const record = () => window.kilnPublishStates.push({
    state: box.dataset.state,
    text: box.textContent,
    hasUrl: !!box.querySelector('[data-testid="publish-url"]'),
    button: button.textContent,
    buttonDisabled: button.disabled,
  });
  window.kilnPublishObserver = new MutationObserver(record);
  window.kilnPublishObserver.observe(box, { attributes: true, childList: true, subtree: true, characterData: true });
  window.kilnPublishObserver.observe(button, { attributes: true, childList: true, subtree: true });
}

/**
 * Defines the whole scenario for one browser. launch() starts it and
 * returns {tab, close}; name labels the tests and the screenshot folder.
 */
export function builderSuite(name, launch) {
  const label = name.toLowerCase();
  const shots = ARTIFACTS ? path.join(ARTIFACTS, label) : '';
  const MARK = `kiln-ui-${label}-${Date.now().toString(36)}`;
  const MANUAL_HTML = `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Manual</title></head>\n<body><h1 id="manual">Manual edit ${MARK}</h1></body></html>\n`;
  const S = {}; // state shared along the scenario
  let browser = null;
  let ui = null;

  async function shot(file, tab = ui) {
    if (!shots || !tab) return;
    fs.mkdirSync(shots, { recursive: true });
    await tab.screenshot(path.join(shots, `${file}.png`));
  }

  /* A scenario; on failure keeps a screenshot for the post-mortem. */
  function scenario(title, opts, body) {
    test(title, opts, async (t) => {
      if (!ui) throw new Error(`no ${name} tab: see the first failure (environment or browser start)`);
      try {
        await body(t);
      } catch (err) {
        await shot(`FAILED-${title.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}`).catch(() => {});
        throw err;
      }
    });
  }

  const run = (id) => ui.eval(snapshotRun, runSel(id));
  const runIds = () => ui.attrs(tid('run'), 'data-run-id');

  async function sendMessage(text) {
    const before = new Set(await runIds());
    await ui.fill(tid('chat-input'), text);
    await ui.focus(tid('chat-input'));
    await ui.press('Enter');
    return newRun(before);
  }

  /* The id of the run that appears in the timeline and is not in before. */
  async function newRun(before) {
    const id = await ui.waitFor('the new run in the timeline', async () => (await runIds()).find((x) => !before.has(x)));
    return Number(id);
  }

  async function waitOutcome(runId, timeoutMs = 90000) {
    const sel = `${runSel(runId)} ${tid('run-outcome')}`;
    await ui.waitAttached(sel, timeoutMs);
    return ui.attr(sel, 'data-status');
  }

  const previewText = () => ui.frameText(tid('preview-frame'));

  async function treePaths() {
    return (await ui.attrs(`${tid('file-tree')} ${tid('file-item')}`, 'data-path')).sort();
  }

  const waitTree = (paths, what) =>
    ui.waitFor(what, async () => JSON.stringify(await treePaths()) === JSON.stringify(paths), 30000, 100);
  const waitPreview = (what, ok) => ui.waitFor(what, async () => ok(await previewText()), 30000, 200);

  async function viewerShows(filePath, content, what) {
    await ui.waitFor(what, async () =>
      (await ui.text(`${tid('file-viewer')}[data-path="${filePath}"] ${tid('file-content')}`)) === content, 20000, 100);
  }

  /* Samples the run's streamed text until it has grown `times` times while
   * no outcome card is shown: the text arrives as the run goes, not at the
   * end. Returns the samples. */
  async function assertTextGrowsLive(runId, times = 2, timeoutMs = 20000) {
    const samples = [];
    const end = Date.now() + timeoutMs;
    while (samples.length <= times && Date.now() < end) {
      const s = await run(runId);
      assert.ok(s, `run #${runId} is in the timeline`);
      assert.deepEqual(s.outcomes, [], `run #${runId} is still going while its text is sampled (samples so far: ${samples.map((x) => x.textLength)})`);
      if (s.textLength > 0 && s.textLength > (samples.at(-1)?.textLength ?? 0)) samples.push(s);
      await sleep(80);
    }
    assert.ok(samples.length > times,
      `the assistant text grew ${times} times before the outcome (lengths seen: ${samples.map((x) => x.textLength)})`);
    return samples;
  }

  /* Checks the rendered run against the run's events from the API: one card
   * per tool call with its final status, duration and summary, one outcome,
   * and exactly the streamed text (no duplicated or lost deltas). */
  async function assertRunMatchesEvents(runId) {
    const events = await allEvents(S.appId, runId);
    const seqs = events.map((e) => e.seq);
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1), 'API events are gapless from 1');
    const shown = await run(runId);

    const callIds = [...new Set(events.filter((e) => e.type.startsWith('tool.')).map((e) => String(e.payload.call_id)))].sort();
    assert.deepEqual(shown.tools.map((c) => c.callId).sort(), callIds, 'one tool card per call_id, none twice');
    for (const e of events.filter((x) => x.type === 'tool.completed' || x.type === 'tool.failed')) {
      const card = shown.tools.find((c) => c.callId === String(e.payload.call_id));
      assert.equal(card.status, e.type === 'tool.completed' ? 'completed' : 'failed', `tool card ${card.callId} ended in place`);
      assert.ok(Number.isFinite(e.payload.duration_ms), `${e.type} carries duration_ms`);
      assert.equal(card.duration, formatDuration(e.payload.duration_ms), `tool card ${card.callId} shows its duration`);
      if (e.type === 'tool.completed') {
        assert.ok(String(e.payload.summary ?? '').length > 0, 'the API gives a summary');
        assert.equal(card.summary, String(e.payload.summary), `tool card ${card.callId} shows its summary`);
      } else {
        assert.ok(card.error.includes(String(e.payload.error.code)), `tool card ${card.callId} shows its error code`);
      }
    }

    const count = (type) => events.filter((e) => e.type === type).length;
    assert.equal(shown.revisions, count('revision.created'), 'revision cards');
    assert.equal(shown.checkpoints, count('checkpoint.created'), 'checkpoint cards');
    assert.equal(shown.outcomes.length, 1, 'exactly one outcome card');
    assert.equal(new Set(shown.seqs).size, shown.seqs.length, 'no event is rendered twice');

    const want = expectedMessages(events);
    const got = new Map(shown.messages);
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), 'one message per message_index');
    for (const [i, text] of want) assert.equal(got.get(i), text, `message ${i} shows exactly the streamed text`);
    return events;
  }

  async function dismissErrors() {
    for (let i = 0; i < 12 && await ui.count(tid('error-dismiss')); i++) await ui.click(tid('error-dismiss'));
    await ui.waitHidden(tid('error-banner'));
  }

  /* Presses key until pred(focus) holds, at most max times; every stop on
   * the way must be a visible element showing a focus ring. */
  async function keyTo(key, pred, what, max = 60) {
    const stops = [];
    for (let i = 0; i < max; i++) {
      await ui.press(key);
      const f = await ui.focused();
      stops.push(f.testid || f.id || f.tag);
      assert.ok(f.visible, `${key} ${i + 1} (towards ${what}) lands on a visible element, not ${JSON.stringify(f)}; stops: ${stops.join(' > ')}`);
      assert.ok(f.focusVisible && f.outline !== 'none', `the focused ${f.testid || f.tag} shows a focus ring (${JSON.stringify(f)})`);
      if (pred(f)) return f;
    }
    throw new Error(`${key} never reached ${what}; stops: ${stops.join(' > ')}`);
  }

  async function publishedSiteShows(href, marker) {
    const res = await fetch(href);
    assert.equal(res.status, 200, `GET ${href}`);
    assert.ok((await res.text()).includes(marker), `the published site serves ${marker}`);
  }

  describe(`Kiln builder workspace in ${name}`, { concurrency: false }, () => {
    /* A test rather than a before() hook, so that a missing variable or a
     * browser that does not start is counted as a failure, not a cancel. */
    test(`starts ${name} for the stack named by KILN_URL and KILN_TOKEN`, { timeout: 90000 }, async () => {
      assert.ok(BASE, 'KILN_URL must name the stack, e.g. http://127.0.0.1:18080');
      assert.ok(TOKEN, 'KILN_TOKEN must hold an API token');
      browser = await launch();
      ui = browser.tab;
    });

    after(async () => {
      await browser?.close();
      /* Leave the test apps to the stack's own teardown, but not mid-run. */
      for (const id of [S.appId, S.kbAppId]) if (id) await cancelActiveRun(id).catch(() => {});
    });

    scenario('signs in with a token and rejects a bad one', { timeout: 30000 }, async () => {
      await ui.goto(`${BASE}/`);
      await ui.waitVisible(tid('token-input'));
      await ui.fill(tid('token-input'), 'definitely-not-a-valid-token');
      await ui.click(tid('sign-in'));
      const err = `${tid('error-item')}[data-code="unauthorized"]`;
      await ui.waitVisible(err);
      const text = await ui.innerText(err);
      assert.match(text, /Signing in: unauthorized/);
      assert.match(text, /HTTP 401/);
      assert.equal(await ui.attr(tid('token-input'), 'aria-invalid'), 'true');
      await ui.click(`${err} ${tid('error-dismiss')}`);
      await ui.waitHidden(tid('error-banner'));

      await ui.fill(tid('token-input'), TOKEN);
      await ui.focus(tid('token-input'));
      await ui.press('Enter');
      await ui.waitVisible(tid('apps-view'));
      await ui.waitAttached(`${tid('app-list')}[aria-busy="false"]`);
      assert.equal(await ui.eval(() => sessionStorage.getItem('kiln.token')), TOKEN, 'token kept in sessionStorage');
    });

    scenario('refuses a bad slug with a readable 422, then creates the app, lists it and opens it', { timeout: 40000 }, async () => {
      S.slug = `ui-${label}-${Date.now().toString(36)}`;
      S.name = `Browser test ${S.slug}`;
      await ui.fill(tid('create-app-name'), S.name);
      await ui.fill(tid('create-app-slug'), 'Not A Slug!');
      await ui.click(tid('create-app-submit'));
      const err = `${tid('error-item')}[data-code="invalid_field"]`;
      await ui.waitVisible(err);
      const text = await ui.innerText(err);
      assert.match(text, /^Creating an app: invalid_field/);
      assert.match(await ui.text(`${err} ${tid('error-message')}`), /slug/, 'the message names what is wrong');
      assert.match(text, /field: slug/);
      assert.match(text, /HTTP 422/);
      assert.equal(await ui.attr(tid('create-app-slug'), 'aria-invalid'), 'true', 'the slug field is marked invalid');
      assert.equal((await ui.focused()).testid, 'create-app-slug', 'the field to fix has the focus');
      assert.equal(await ui.value(tid('create-app-slug')), 'Not A Slug!', 'what was typed is kept');
      const { json: apps } = await apiCall('GET', '/admin/apps?limit=100');
      assert.ok(!apps.items.some((a) => a.name === S.name), 'no app was created');
      await ui.click(`${err} ${tid('error-dismiss')}`);

      await ui.fill(tid('create-app-slug'), S.slug);
      await ui.click(tid('create-app-submit'));
      await ui.waitUrl(/#\/apps\/\d+$/);
      S.appId = Number(/#\/apps\/(\d+)$/.exec(await ui.url())[1]);
      await ui.waitText(tid('workspace-title'), new RegExp(escapeRe(S.name)));
      assert.equal((await ui.focused()).testid, 'chat-input', 'the new workspace starts at the chat box');

      await ui.goto(`${BASE}/#/`);
      const item = `${tid('app-item')}[data-slug="${S.slug}"]`;
      await ui.waitVisible(item);
      assert.match(await ui.innerText(item), new RegExp(escapeRe(S.name)));
      await shot('01-app-list');
      await ui.click(item);
      await ui.waitText(tid('workspace-title'), new RegExp(escapeRe(S.name)));
      assert.equal(await ui.visible(tid('chat-input')), true);
    });

    scenario('streams a run: text, tool cards with duration and summary, revision, checkpoint and outcome', { timeout: 120000 }, async () => {
      const before = new Set(await runIds());
      await ui.fill(tid('chat-input'), '[script:default] Build a small landing page');
      await ui.focus(tid('chat-input'));
      await ui.press('Shift+Enter');
      await ui.type('with a heading, styles and a script.');
      assert.match(await ui.value(tid('chat-input')), /page\nwith a heading/, 'Shift+Enter adds a line, not a send');
      assert.equal(await ui.count(tid('run')), 0, 'nothing was sent yet');
      await ui.press('Enter');
      const runId = await newRun(before);
      S.run1 = runId;
      assert.equal((await run(runId)).userMessage, '[script:default] Build a small landing page\nwith a heading, styles and a script.');

      assert.equal(await waitOutcome(runId), 'completed');
      assert.equal((await run(runId)).status, 'completed');
      await ui.waitHidden(tid('run-status'));
      const events = await assertRunMatchesEvents(runId);
      assert.ok(events.some((e) => e.type === 'tool.completed'), 'the script called tools');
      const shown = await run(runId);
      assert.ok(shown.textLength > 0, 'assistant text shown');
      assert.ok(!shown.tools.some((c) => c.status === 'running'), 'no card left running');

      // A card expands to its raw event JSON.
      const card = `${runSel(runId)} ${tid('tool-card')}`;
      const callId = await ui.attr(card, 'data-call-id');
      await ui.click(`${card} ${tid('event-payload')} summary`);
      await ui.waitAttached(`${card} ${tid('event-json')}`);
      const raws = await ui.texts(`${card}[data-call-id="${callId}"] ${tid('event-json')}`);
      assert.equal(raws.length, 2, 'the card holds its started and completed events');
      const env = JSON.parse(raws[0]);
      assert.equal(env.type, 'tool.started');
      assert.equal(env.run_id, runId);
      assert.equal(String(env.payload.call_id), callId);
      assert.equal(JSON.parse(raws[1]).type, 'tool.completed');
      await ui.click(`${card} ${tid('event-payload')} summary`);
      await ui.waitHidden(`${card} ${tid('event-json')}`);

      // The file tree and the preview follow the new draft.
      const { rev, paths } = await ui.waitFor('draft with files', async () => {
        const d = await draftFiles(S.appId);
        return d.paths.length ? d : null;
      }, 30000, 250);
      S.run1Paths = paths;
      for (const p of ['index.html', 'style.css', 'app.js']) assert.ok(paths.includes(p), `the default script wrote ${p}`);
      await waitTree(paths, 'file tree to show the draft');
      S.run1Index = await fileText(S.appId, rev.id, 'index.html');
      await waitPreview('preview to show the draft', (t) => t.trim().length > 0);
      await shot('03-completed-run');
    });

    scenario('file viewer shows a draft file read-only', { timeout: 30000 }, async () => {
      await ui.click(tid('tab-files'));
      await ui.click(`${tid('file-item')}[data-path="index.html"]`);
      await viewerShows('index.html', S.run1Index, 'the viewer to show index.html');
      assert.equal(await ui.count(`${tid('file-viewer')} textarea, ${tid('file-viewer')} [contenteditable="true"]`), 0, 'the viewer is read-only');
    });

    scenario('a reload shows the history; undo restores the state before the last run', { timeout: 150000 }, async () => {
      // Someone uploads a manual draft; the page picks it up on reload.
      const { json: manualRev } = await apiCall('POST', `/admin/apps/${S.appId}/revisions`, { files: { 'index.html': MANUAL_HTML }, replace: true });
      S.manualRevId = manualRev.id;
      await ui.reload();
      await waitTree(['index.html'], 'file tree to show the manual draft');
      await ui.waitAttached(`${runSel(S.run1)} ${tid('run-outcome')}`);
      assert.deepEqual((await run(S.run1)).outcomes, ['completed'], 'history of run 1 shown after reload');
      await assertRunMatchesEvents(S.run1);
      await waitPreview('preview to show the manual draft', (t) => t.includes(`Manual edit ${MARK}`));

      // A follow-up run rewrites the site...
      S.run2 = await sendMessage('[script:default] Bring back the landing page, please.');
      assert.equal(await waitOutcome(S.run2), 'completed');
      const afterRun = await ui.waitFor('run 2 to change the draft', async () => {
        const d = await draftFiles(S.appId);
        return d.app.draft_revision_id !== S.manualRevId && !d.app.active_run_id ? d : null;
      }, 30000, 250);
      assert.notDeepEqual(afterRun.paths, ['index.html'], 'the follow-up run wrote files');
      await waitTree(afterRun.paths, 'file tree to show run 2');

      // ...and one click on Undo brings the manual draft back.
      await ui.click(tid('undo-button'));
      const undone = await draftChangedFrom(S.appId, afterRun.app.draft_revision_id, 'undo to restore the manual draft');
      assert.deepEqual(undone.paths, ['index.html']);
      assert.equal(await fileText(S.appId, undone.rev.id, 'index.html'), MANUAL_HTML);
      await waitTree(['index.html'], 'file tree after undo');
      await waitPreview('preview after undo', (t) => t.includes(`Manual edit ${MARK}`));
    });

    scenario('lists checkpoints with their times and restores one after a confirm with dry-run counts', { timeout: 60000 }, async () => {
      const { json: run1 } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/runs/${S.run1}`);
      assert.ok(run1.checkpoint_id, 'run 1 recorded a checkpoint');
      S.run1Checkpoint = run1.checkpoint_id;
      const { json: dry } = await apiCall('POST', `/admin/apps/${S.appId}/coding-agent/checkpoints/${run1.checkpoint_id}/restore`, { dry_run: true });
      const before = (await draftFiles(S.appId)).app.draft_revision_id;

      await ui.click(tid('tab-checkpoints'));
      const item = `${tid('checkpoint-item')}[data-checkpoint-id="${run1.checkpoint_id}"]`;
      await ui.waitVisible(item);
      assert.match(await ui.innerText(item), /auto/, 'the list shows the checkpoint type');

      // Each checkpoint shows when it was made: the API's time, readable.
      const { json: cps } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/checkpoints?limit=50`);
      const times = await ui.eval(() => [...document.querySelectorAll('[data-testid="checkpoint-item"]')].map((li) => {
        const t = li.querySelector('[data-testid="checkpoint-time"]');
        return { id: Number(li.dataset.checkpointId), datetime: t?.getAttribute('datetime'), title: t?.title, text: t?.textContent, visible: !!t && t.checkVisibility() };
      }));
      assert.deepEqual(times.map((t) => [t.id, t.datetime]), cps.items.map((c) => [c.id, c.created_at]), 'one time per checkpoint, the API\'s');
      for (const t of times) {
        assert.ok(t.visible, `checkpoint #${t.id} shows its time`);
        assert.match(t.text, /now|ago/, `checkpoint #${t.id}: a relative time ("${t.text}")`);
        assert.ok(t.title.includes(String(new Date(t.datetime).getFullYear())), `checkpoint #${t.id}: the full date on hover ("${t.title}")`);
      }

      // Cancelling the confirm changes nothing.
      await ui.click(`${item} ${tid('restore-button')}`);
      await ui.waitVisible(tid('restore-dialog'));
      await ui.click(tid('restore-cancel'));
      await ui.waitHidden(tid('restore-dialog'));
      assert.equal((await draftFiles(S.appId)).app.draft_revision_id, before, 'cancel keeps the draft');

      await ui.click(`${item} ${tid('restore-button')}`);
      await ui.waitVisible(tid('restore-dialog'));
      const counts = tid('restore-counts');
      assert.equal(Number(await ui.attr(counts, 'data-added')), dry.added.length);
      assert.equal(Number(await ui.attr(counts, 'data-changed')), dry.changed.length);
      assert.equal(Number(await ui.attr(counts, 'data-deleted')), dry.deleted.length);
      await shot('04-checkpoint-restore');
      await ui.click(tid('restore-confirm'));
      await ui.waitHidden(tid('restore-dialog'));

      const restored = await draftChangedFrom(S.appId, before, 'restore to land');
      assert.deepEqual(restored.paths, S.run1Paths, 'the files of run 1 are back');
      assert.equal(await fileText(S.appId, restored.rev.id, 'index.html'), S.run1Index);
      await waitTree(S.run1Paths, 'file tree after restore');
      await waitPreview('preview after restore', (t) => !t.includes(`Manual edit ${MARK}`));
      await ui.click(tid('tab-files'));
      await ui.click(`${tid('file-item')}[data-path="index.html"]`);
      await viewerShows('index.html', S.run1Index, 'viewer after restore');
    });

    scenario('reverts one file from a checkpoint', { timeout: 60000 }, async () => {
      const { json: cps } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/checkpoints?limit=100`);
      const manualCp = cps.items.find((c) => c.revision_id === S.manualRevId);
      assert.ok(manualCp, 'the manual upload recorded a checkpoint');
      const before = (await draftFiles(S.appId)).app.draft_revision_id;

      await ui.click(tid('tab-checkpoints'));
      await ui.select(tid('revert-checkpoint'), String(manualCp.id));
      await ui.waitAttached(`${tid('revert-file')} option[value="index.html"]`);
      await ui.select(tid('revert-file'), 'index.html');
      await ui.click(tid('revert-submit'));
      await ui.waitText(tid('revert-result'), /restored/);

      const d = await draftChangedFrom(S.appId, before, 'revert to land');
      assert.deepEqual(d.paths, S.run1Paths, 'the other files stay');
      assert.equal(await fileText(S.appId, d.rev.id, 'index.html'), MANUAL_HTML, 'index.html came back from the checkpoint');
      const { json: run1 } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/runs/${S.run1}`);
      assert.equal(await fileText(S.appId, d.rev.id, 'style.css'), await fileText(S.appId, run1.revision_id, 'style.css'));
      await waitPreview('preview after revert', (t) => t.includes(`Manual edit ${MARK}`));
      await ui.click(tid('tab-files'));
      await viewerShows('index.html', MANUAL_HTML, 'viewer after revert');
    });

    scenario('shows the diff between a checkpoint and the draft', { timeout: 30000 }, async () => {
      const { json: diff } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/checkpoints/${S.run1Checkpoint}/diff/draft`);
      await ui.click(tid('tab-diff'));
      await ui.select(tid('diff-checkpoint'), String(S.run1Checkpoint));
      await ui.select(tid('diff-target'), 'draft');
      await ui.click(tid('diff-show'));
      const view = tid('diff-view');
      const file = `${view} ${tid('diff-file')}[data-path="index.html"][data-kind="changed"]`;
      await ui.waitAttached(file);
      const kinds = await ui.eval((sel) => [...document.querySelectorAll(sel)].map((e) => `${e.dataset.kind}:${e.dataset.path}`), `${view} ${tid('diff-file')}`);
      const want = [...diff.added.map((p) => `added:${p.path ?? p}`), ...diff.removed.map((p) => `removed:${p.path ?? p}`),
        ...diff.changed.map((c) => `changed:${c.path}`)];
      assert.deepEqual(kinds.sort(), want.sort(), 'the view lists what the API reports');
      const added = await ui.texts(`${file} .dl-add`);
      const removed = await ui.texts(`${file} .dl-del`);
      assert.ok(added.some((l) => l.includes(`Manual edit ${MARK}`)), 'added lines include the new heading');
      assert.ok(removed.length > 0, 'removed lines are shown');
      const addBg = await ui.style(`${file} .dl-add`, 'backgroundColor');
      const delBg = await ui.style(`${file} .dl-del`, 'backgroundColor');
      assert.notEqual(addBg, delBg, 'added and removed lines are coloured differently');
      assert.notEqual(addBg, 'rgba(0, 0, 0, 0)');
      await shot('05-diff-view');
    });

    scenario('publishes the draft with visible progress; the link opens the site in a new tab', { timeout: 120000 }, async () => {
      await ui.eval(recordPublishStates);
      await ui.click(tid('publish-button'));
      const link = tid('publish-url');
      await ui.waitVisible(link, 90000);
      assert.equal(await ui.attr(tid('publish-status'), 'data-state'), 'published');
      const states = await ui.eval(() => window.kilnPublishStates);
      const busy = states.findIndex((s) => s.state === 'publishing');
      const done = states.findIndex((s) => s.state === 'published');
      assert.ok(busy >= 0, `the page showed that it was publishing (states: ${states.map((s) => s.state)})`);
      assert.ok(busy < done, 'publishing came before the URL');
      assert.match(states[busy].text, /Building and publishing revision #\d+/);
      assert.equal(states[busy].hasUrl, false, 'no URL while publishing');
      assert.ok(states[busy].buttonDisabled && /Publishing/.test(states[busy].button), 'the button says it is busy and takes no second click');
      assert.equal(await ui.attr(tid('publish-button'), 'disabled'), null, 'the button is usable again');

      const href = await ui.attr(link, 'href');
      assert.match(href, /^https?:\/\//);
      assert.equal(await ui.attr(link, 'target'), '_blank');
      S.publishedUrl = href;
      S.publishedRevision = (await draftFiles(S.appId)).app.published_revision_id;
      await publishedSiteShows(href, `Manual edit ${MARK}`);

      // A click on the link opens the site in a new tab; the builder stays.
      const builderUrl = await ui.url();
      const site = await ui.openedByClick(link);
      try {
        await site.waitFor('the published site in the new tab', async () =>
          (await site.url()) === href && (await site.text('#manual')) === `Manual edit ${MARK}`, 20000, 100);
        await shot('06-published-site', site);
      } finally {
        await site.close();
      }
      assert.equal(await ui.url(), builderUrl, 'the builder tab stays where it was');
    });

    scenario('a failed publish build shows its error and log; the live site keeps serving', { timeout: 150000 }, async () => {
      const failing = {
        'index.html': '<!doctype html><title>never published</title><h1>never published</h1>\n',
        'package.json': JSON.stringify({ name: 'site', version: '1.0.0', private: true, scripts: { build: 'node fail.js' } }),
        'fail.js': `console.error('boom: the build broke (${MARK})'); process.exit(3);\n`,
      };
      await apiCall('POST', `/admin/apps/${S.appId}/revisions`, { files: failing, replace: true });
      await ui.click(tid('tab-files'));
      await ui.click(tid('files-refresh'));
      await waitTree(['fail.js', 'index.html', 'package.json'], 'file tree to show the failing draft');

      await ui.eval(recordPublishStates);
      await ui.click(tid('publish-button'));
      await ui.waitAttached(`${tid('publish-status')}[data-state="failed"]`, 120000);
      const states = await ui.eval(() => window.kilnPublishStates);
      assert.ok(states.findIndex((s) => s.state === 'publishing') < states.findIndex((s) => s.state === 'failed'), 'publishing was shown first');
      const error = await ui.innerText(tid('publish-error'));
      assert.match(error, /build_failed/);
      assert.match(error, /last published version keeps serving/, 'the API\'s message is shown');
      assert.equal(await ui.visible(tid('publish-log')), true, 'the build log is shown open');
      assert.match(await ui.text(tid('publish-log')), new RegExp(escapeRe(`boom: the build broke (${MARK})`)), 'the log holds the build\'s own output');
      assert.equal(await ui.count(tid('publish-url')), 0, 'no new URL is offered for a failed build');
      assert.equal(await ui.attr(tid('publish-live-url'), 'href'), S.publishedUrl, 'the page points to the version still live');
      assert.match(await ui.innerText(tid('publish-live')), new RegExp(`unchanged: .*\\(revision #${S.publishedRevision}\\)`));
      assert.equal(await ui.attr(tid('publish-button'), 'disabled'), null, 'publish can be tried again');
      assert.equal(await ui.visible(tid('notice')), false, 'the earlier "Published." notice is gone');
      await shot('07-publish-failed');
      await publishedSiteShows(S.publishedUrl, `Manual edit ${MARK}`);
    });

    scenario('a second run while one is active: the API\'s 409 run_active is shown and the page follows that run', { timeout: 60000 }, async () => {
      /* Another tab (or any client) starts a run this page does not know of. */
      const before = new Set(await runIds());
      const other = await startRun(S.appId, '[script:slow-tools] A run started from another tab.');
      S.otherRun = other.id;
      const typed = '[script:default] A message while that run is going.';
      await ui.fill(tid('chat-input'), typed);
      await ui.focus(tid('chat-input'));
      await ui.press('Enter');
      const err = `${tid('error-item')}[data-code="run_active"]`;
      await ui.waitVisible(err);
      const text = await ui.innerText(err);
      assert.match(text, /^Sending the message: run_active/);
      assert.match(text, new RegExp(`run: #${other.id}`), 'names the run in the way');
      assert.match(text, /HTTP 409/);
      assert.ok((await ui.text(`${err} ${tid('error-message')}`)).trim().length >= 10, 'with the API\'s message');
      assert.equal(await ui.value(tid('chat-input')), typed, 'the message is kept, to send later');

      // The page follows the run that is in the way, live.
      assert.equal(await newRun(before), other.id);
      await ui.waitVisible(tid('run-status'));
      await ui.waitVisible(tid('cancel-button'));

      // Now that the page knows, it says so itself and sends nothing.
      await ui.focus(tid('chat-input'));
      await ui.press('Enter');
      await ui.waitFor('the page\'s own run_active message', async () => (await ui.count(err)) === 2);
      assert.match((await ui.texts(`${err} ${tid('error-message')}`))[1], /Wait for the current run to finish/);
      const { json: runs } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/runs?limit=3`);
      assert.equal(runs.items[0].id, other.id, 'no run was created by either attempt');
      assert.equal(await ui.attr(tid('send-button'), 'disabled'), '', 'Send is disabled while a run is active');
      await dismissErrors();
    });

    scenario('shows the run live (tool card and growing text before the outcome), across a reload, then cancels it', { timeout: 90000 }, async () => {
      const runId = S.otherRun;
      /* The tool card shows, finished, while the run is still going. */
      const live = await ui.waitFor('a completed tool card before the outcome', async () => {
        const s = await run(runId);
        assert.deepEqual(s.outcomes, [], 'no outcome yet');
        return s.tools.some((c) => c.status === 'completed') ? s : null;
      }, 20000, 50);
      assert.equal(live.tools.length, 1);
      await assertTextGrowsLive(runId, 2);
      assert.equal(await ui.attr(tid('connection-indicator'), 'data-state'), 'live');
      await shot('02-streaming-run');

      // A reload re-reads the run from its first event and stays attached.
      const seen = (await run(runId)).textLength;
      await ui.reload();
      await ui.waitAttached(runSel(runId));
      await ui.waitFor('events replayed after reload', async () => {
        const s = await run(runId);
        return s.tools.length === 1 && s.textLength >= seen;
      });
      await assertTextGrowsLive(runId, 2);
      await ui.waitVisible(tid('cancel-button'));

      await ui.click(tid('cancel-button'));
      assert.equal(await waitOutcome(runId, 60000), 'cancelled');
      assert.equal((await run(runId)).status, 'cancelled');
      await ui.waitHidden(tid('run-status'));
      const { json } = await apiCall('GET', `/admin/apps/${S.appId}/coding-agent/runs/${runId}`);
      assert.equal(json.status, 'cancelled');
      await assertRunMatchesEvents(runId);
    });

    scenario('recovers from a dropped stream without duplicating events', { timeout: 120000 }, async (t) => {
      if (!STACK_CTL) {
        t.skip('KILN_STACK_CTL is not set: cannot stop nginx');
        return;
      }
      const runId = await sendMessage('[script:slow-tools] Keep going while the connection drops.');
      /* Drop only once a tool card is shown: a client that replayed the
       * stream from the start would then show it twice. */
      await ui.waitAttached(`${runSel(runId)} ${tid('tool-card')}`);
      assert.deepEqual((await run(runId)).outcomes, [], 'the run is still going when the link drops');
      const indicator = tid('connection-indicator');
      let restarted = false;
      try {
        await stackCtl('nginx-stop');
        await ui.waitFor('indicator to say reconnecting', async () => (await ui.attr(indicator, 'data-state')) === 'reconnecting', 15000, 100);
        await sleep(2000);
        await stackCtl('nginx-start');
        restarted = true;
      } finally {
        if (!restarted) await stackCtl('nginx-start').catch(() => {});
      }
      await assertTextGrowsLive(runId, 2, 30000);
      assert.equal(await waitOutcome(runId), 'completed');
      await ui.waitFor('indicator to settle', async () => (await ui.attr(indicator, 'data-state')) === 'idle', 15000, 100);
      await assertRunMatchesEvents(runId);
      // Errors shown while nginx was down are dismissable.
      await dismissErrors();
    });

    scenario('signs out', { timeout: 20000 }, async () => {
      await ui.click(tid('sign-out'));
      await ui.waitVisible(tid('token-input'));
      assert.equal(await ui.eval(() => sessionStorage.getItem('kiln.token')), null);
    });

    scenario('works from the keyboard alone: sign in, create, send, open a card, restore, publish', { timeout: 150000 }, async () => {
      let f = await ui.focused();
      assert.equal(f.testid, 'token-input', 'the sign-in view starts at the token field');
      await ui.type(TOKEN);
      await ui.press('Enter');
      // Back in the app that was open, at its chat box; then the app list.
      await ui.waitFor('the workspace it left, focus in the chat box', async () => (await ui.focused()).testid === 'chat-input');
      assert.equal(await ui.url(), `${BASE}/#/apps/${S.appId}`);
      await keyTo('Shift+Tab', (x) => x.tag === 'a' && x.text === 'Apps', 'the Apps breadcrumb', 80);
      await ui.press('Enter');
      await ui.waitVisible(tid('apps-view'));
      assert.equal((await ui.focused()).id, 'main', 'the focus moves to the page content, not back to the top');

      S.kbName = `Keys ${label} ${Date.now().toString(36)}`;
      await keyTo('Tab', (x) => x.testid === 'create-app-name', 'the new app\'s name');
      await ui.type(S.kbName);
      await ui.press('Tab');
      f = await ui.focused();
      assert.equal(f.testid, 'create-app-slug');
      assert.equal(await ui.value(tid('create-app-slug')), S.kbName.toLowerCase().replace(/ /g, '-'), 'the slug follows the name');
      await ui.press('Tab');
      assert.equal((await ui.focused()).testid, 'create-app-submit');
      await ui.press('Enter');
      await ui.waitUrl(/#\/apps\/\d+$/);
      S.kbAppId = Number(/#\/apps\/(\d+)$/.exec(await ui.url())[1]);
      await ui.waitFor('the focus in the chat box', async () => (await ui.focused()).testid === 'chat-input');

      // Two runs: the second changes style.css, so a restore has work to do.
      let before = new Set(await runIds());
      await ui.type('[script:default] Build it with the keyboard only.');
      await ui.press('Enter');
      const first = await newRun(before);
      assert.equal(await waitOutcome(first), 'completed');
      await ui.waitHidden(tid('run-status'));
      assert.equal((await ui.focused()).testid, 'chat-input', 'the focus stays in the chat box');
      before = new Set(await runIds());
      await ui.type('Make the title blue.');
      await ui.press('Enter');
      const second = await newRun(before);
      assert.equal(await waitOutcome(second), 'completed');
      await ui.waitHidden(tid('run-status'));
      assert.equal((await ui.focused()).testid, 'chat-input');

      // Back into the timeline to a tool card; Space opens its raw events.
      f = await keyTo('Shift+Tab', (x) => x.tag === 'summary' && x.cardTestid === 'tool-card', 'a tool card\'s raw events');
      assert.equal(f.open, false);
      await ui.press('Space');
      assert.equal((await ui.focused()).open, true, 'Space opened the card');
      /* its JSON is drawn on the details' toggle event, a task later */
      const raw = await ui.waitFor('the raw events of the card', () =>
        ui.eval(() => document.activeElement.parentElement.querySelector('[data-testid="event-json"]')?.textContent), 5000);
      assert.equal(JSON.parse(raw).type, 'tool.started');
      await ui.press('Enter');
      assert.equal((await ui.focused()).open, false, 'Enter closes it again');

      // The Checkpoints tab with the arrow keys, then the first run's checkpoint.
      const { json: firstRun } = await apiCall('GET', `/admin/apps/${S.kbAppId}/coding-agent/runs/${first}`);
      const { json: secondRun } = await apiCall('GET', `/admin/apps/${S.kbAppId}/coding-agent/runs/${second}`);
      await keyTo('Tab', (x) => x.testid === 'tab-files', 'the panel tabs');
      await ui.press('ArrowRight');
      f = await ui.focused();
      assert.equal(f.testid, 'tab-checkpoints', 'ArrowRight moves to the next tab');
      assert.equal(await ui.attr(tid('tab-checkpoints'), 'aria-selected'), 'true');
      await ui.waitVisible(`${tid('checkpoint-item')}[data-checkpoint-id="${firstRun.checkpoint_id}"]`);
      const target = String(firstRun.checkpoint_id);
      await keyTo('Tab', (x) => x.testid === 'restore-button' && x.checkpointId === target, `checkpoint #${target}'s restore button`);
      await ui.press('Space');
      await ui.waitVisible(tid('restore-dialog'));
      assert.equal((await ui.focused()).testid, 'restore-cancel', 'the dialog starts on the safe choice');
      await ui.press('Escape');
      await ui.waitHidden(tid('restore-dialog'));
      await ui.waitFor('the focus back on the restore button', async () => {
        const x = await ui.focused();
        return x.testid === 'restore-button' && x.checkpointId === target;
      }, 10000);
      assert.equal((await draftFiles(S.kbAppId)).app.draft_revision_id, secondRun.revision_id, 'Escape restores nothing');

      await ui.press('Enter');
      await ui.waitVisible(tid('restore-dialog'));
      assert.equal(Number(await ui.attr(tid('restore-counts'), 'data-changed')), 1, 'the dry run found style.css changed');
      await ui.press('Tab');
      assert.equal((await ui.focused()).testid, 'restore-confirm');
      await shot('08-keyboard-restore-dialog');
      await ui.press('Enter');
      await ui.waitHidden(tid('restore-dialog'));
      const restored = await draftChangedFrom(S.kbAppId, secondRun.revision_id, 'the keyboard restore to land');
      assert.equal(await fileText(S.kbAppId, restored.rev.id, 'style.css'), await fileText(S.kbAppId, firstRun.revision_id, 'style.css'));
      await ui.waitFor('the focus back on the restore button after the restore', async () => {
        const x = await ui.focused();
        return x.testid === 'restore-button' && x.checkpointId === target;
      }, 10000);

      // Up to Publish, Enter; then Tab reaches the new link and Enter opens it.
      await keyTo('Shift+Tab', (x) => x.testid === 'publish-button', 'the publish button');
      await ui.press('Enter');
      await ui.waitVisible(tid('publish-url'), 90000);
      await ui.waitFor('the focus back on Publish', async () => (await ui.focused()).testid === 'publish-button', 10000);
      await ui.press('Tab');
      assert.equal((await ui.focused()).testid, 'publish-url', 'Tab goes on to the published URL');
      const href = await ui.attr(tid('publish-url'), 'href');
      const site = await ui.openedBy(() => ui.press('Enter'));
      try {
        await site.waitFor('the site opened from the keyboard', async () => (await site.url()) === href, 20000, 100);
      } finally {
        await site.close();
      }
    });

    scenario('fits a 1280x720 laptop screen: nothing important is cut off', { timeout: 30000 }, async () => {
      /* As after a run: the timeline at its newest card, which must stay in
       * view when the window shrinks. */
      await ui.eval(() => {
        const tl = document.querySelector('[data-testid="timeline"]');
        tl.scrollTop = tl.scrollHeight;
      });
      await sleep(100);
      await ui.setViewport(1280, 720);
      await ui.waitFor('the layout to settle', async () => (await ui.eval(() => innerWidth)) === 1280, 5000);
      await sleep(300);
      await shot('09-laptop-1280x720');
      const m = await ui.eval(() => {
        const ids = ['workspace-title', 'undo-button', 'publish-button', 'publish-url', 'sign-out', 'connection-indicator',
          'timeline', 'chat-input', 'send-button', 'tab-files', 'tab-checkpoints', 'tab-diff', 'preview-frame'];
        const box = (e) => {
          const r = e.getBoundingClientRect();
          return { left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height, visible: e.checkVisibility() };
        };
        const tl = document.querySelector('[data-testid="timeline"]');
        const last = [...tl.querySelectorAll('[data-testid="run-outcome"]')].at(-1);
        return {
          vw: document.documentElement.clientWidth,
          vh: document.documentElement.clientHeight,
          scrollW: document.documentElement.scrollWidth,
          scrollH: document.documentElement.scrollHeight,
          els: Object.fromEntries(ids.map((id) => [id, box(document.querySelector(`[data-testid="${id}"]`))])),
          lastOutcome: last ? box(last) : null,
          timelineBox: box(tl),
          timelineScroll: [tl.scrollTop, tl.scrollHeight, tl.clientHeight],
          fonts: ['chat-input', 'timeline'].map((id) => parseFloat(getComputedStyle(document.querySelector(`[data-testid="${id}"]`)).fontSize)),
        };
      });
      assert.ok(m.scrollW <= m.vw, `no sideways scrolling (page ${m.scrollW} px wide in ${m.vw})`);
      assert.ok(m.scrollH <= m.vh, `the workspace fits the screen's height (page ${m.scrollH} px in ${m.vh})`);
      for (const [id, b] of Object.entries(m.els)) {
        assert.ok(b.visible && b.width > 0 && b.height > 0, `${id} is shown (${JSON.stringify(b)})`);
        assert.ok(b.left >= 0 && b.top >= 0 && b.right <= m.vw && b.bottom <= m.vh, `${id} is wholly on screen (${JSON.stringify(b)})`);
      }
      assert.ok(m.els.timeline.height >= 200, `the timeline has room (${m.els.timeline.height} px)`);
      assert.ok(m.els['chat-input'].width >= 280, `the chat box has room (${m.els['chat-input'].width} px)`);
      assert.ok(m.els['preview-frame'].height >= 250, `the preview has room (${m.els['preview-frame'].height} px)`);
      assert.ok(m.lastOutcome && m.lastOutcome.bottom <= m.timelineBox.bottom + 1 && m.lastOutcome.top >= m.timelineBox.top - 1,
        `the timeline is scrolled to the newest outcome (${JSON.stringify({ outcome: m.lastOutcome, timeline: m.timelineBox, scroll: m.timelineScroll })})`);
      for (const px of m.fonts) assert.ok(px >= 13, `text is at least 13 px (${px})`);
      await ui.setViewport(1440, 900);
    });

    scenario('the page logged no errors of its own', { timeout: 5000 }, async () => {
      assert.deepEqual(ui.problems, []);
    });
  });
}
