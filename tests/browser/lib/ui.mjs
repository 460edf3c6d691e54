// One small interface to a browser tab, over two drivers: playwright-core
// for Debian's Chromium and puppeteer-core (WebDriver BiDi) for Debian's
// Firefox ESR, so the scenarios are written once and run in both.
//
// Selectors are plain CSS. Every query runs in the page through eval(), and
// every wait is a poll from Node with a deadline, so both browsers are asked
// exactly the same questions. Both drivers' pages share evaluate(), goto(),
// reload(), url(), keyboard.type(), screenshot() and bringToFront(); what
// each driver provides besides:
//   click(sel)  fill(sel, text)  press(key)  select(sel, value)
//   frameText(sel)  setViewport(w, h)
//   openedBy(action) -> the Tab that action opened (a link to a new tab)

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { poll } from './stack.mjs';

export const tid = (id) => `[data-testid="${id}"]`;

/* Runs in the page: one question about the elements sel matches. */
function query({ sel, op, arg }) {
  const els = [...document.querySelectorAll(sel)];
  const first = els[0];
  switch (op) {
    case 'count': return els.length;
    case 'attr': return first ? first.getAttribute(arg) : null;
    case 'attrs': return els.map((e) => e.getAttribute(arg));
    case 'text': return first ? first.textContent : null;
    case 'texts': return els.map((e) => e.textContent);
    case 'innerText': return first ? first.innerText : null;
    case 'value': return first ? first.value : null;
    case 'visible': return !!first && first.checkVisibility();
    case 'enabled': return !!first && !first.disabled;
    case 'style': return first ? getComputedStyle(first)[arg] : null;
    default: throw new Error(`unknown query ${op}`);
  }
}

/* Runs in the page: the centre of the element, once it can take a click
 * there (enabled, scrolled into view, not covered), else null. */
function clickPoint(sel) {
  const el = document.querySelector(sel);
  if (!el || el.disabled || !el.checkVisibility()) return null;
  el.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  const r = el.getBoundingClientRect();
  const x = Math.round(r.left + r.width / 2);
  const y = Math.round(r.top + r.height / 2);
  const hit = document.elementFromPoint(x, y);
  return hit && (hit === el || el.contains(hit)) ? { x, y } : null;
}

/* Runs in the page: what has the keyboard focus. */
function describeFocus() {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return { tag: 'body', visible: false };
  const r = el.getBoundingClientRect();
  return {
    tag: el.tagName.toLowerCase(),
    id: el.id || '',
    testid: el.dataset.testid || el.closest('[data-testid]')?.dataset.testid || '',
    cardTestid: el.closest('article[data-testid]')?.dataset.testid || '',
    checkpointId: el.closest('[data-checkpoint-id]')?.dataset.checkpointId || '',
    open: el.tagName === 'SUMMARY' ? el.parentElement.open : null,
    text: (el.innerText || el.value || '').slice(0, 80),
    visible: el.checkVisibility() && r.width > 0 && r.height > 0,
    focusVisible: el.matches(':focus-visible'),
    documentFocused: document.hasFocus(),
    outline: getComputedStyle(el).outlineStyle,
  };
}

class Tab {
  /* page: a Playwright or Puppeteer page; opener: the Tab whose link
   * opened this one. */
  constructor(page, problems, opener = null) {
    this.page = page;
    this.problems = problems;
    this.opener = opener;
  }

  eval(fn, arg) { return this.page.evaluate(fn, arg); }
  async goto(url) { await this.page.goto(url); }
  async reload() { await this.page.reload(); }
  async url() { return this.page.url(); }
  async type(text) { await this.page.keyboard.type(text); }
  async screenshot(file) { await this.page.screenshot({ path: file }); }
  async activate() { await this.page.bringToFront(); }

  /* Closing a tab the page opened gives the focus back to the page. */
  async close() {
    await this.page.close();
    await this.opener?.activate();
  }

  q(sel, op, arg) { return this.eval(query, { sel, op, arg }); }
  count(sel) { return this.q(sel, 'count'); }
  attr(sel, name) { return this.q(sel, 'attr', name); }
  attrs(sel, name) { return this.q(sel, 'attrs', name); }
  text(sel) { return this.q(sel, 'text'); }
  texts(sel) { return this.q(sel, 'texts'); }
  innerText(sel) { return this.q(sel, 'innerText'); }
  value(sel) { return this.q(sel, 'value'); }
  visible(sel) { return this.q(sel, 'visible'); }
  style(sel, prop) { return this.q(sel, 'style', prop); }
  focused() { return this.eval(describeFocus); }
  focus(sel) { return this.eval((s) => document.querySelector(s).focus(), sel); }
  openedByClick(sel) { return this.openedBy(() => this.click(sel)); }

  waitFor(what, fn, timeoutMs = 20000, everyMs = 50) { return poll(what, fn, timeoutMs, everyMs); }
  waitVisible(sel, timeoutMs = 20000) { return this.waitFor(`${sel} to be visible`, () => this.visible(sel), timeoutMs); }
  async waitHidden(sel, timeoutMs = 20000) {
    await this.waitFor(`${sel} to be hidden`, async () => !(await this.visible(sel)), timeoutMs);
  }
  waitAttached(sel, timeoutMs = 20000) {
    return this.waitFor(`${sel} in the page`, async () => (await this.count(sel)) > 0, timeoutMs);
  }
  waitText(sel, re, timeoutMs = 20000) {
    return this.waitFor(`${sel} to match ${re}`, async () => re.test((await this.innerText(sel)) ?? ''), timeoutMs);
  }
  waitUrl(re, timeoutMs = 20000) {
    return this.waitFor(`the URL to match ${re}`, async () => re.test(await this.url()), timeoutMs);
  }

  /** Watches the problems the page itself reports (not the model's app). */
  watchProblems(page) {
    page.on('pageerror', (err) => {
      if (/\/(preview|sites)\//.test(err.stack || '')) return; // the model's app, not the page
      this.problems.push(`pageerror: ${err.message}`);
    });
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const url = msg.location().url || '';
      if (/Failed to load resource/.test(msg.text())) return; // failed requests are expected (401 test, nginx drop)
      if (url.includes('/preview/') || url.includes('/sites/')) return; // the model's app, not the page
      this.problems.push(`console: ${msg.text()} (${url})`);
    });
  }
}

/* Starts a browser in a fresh, temporary profile: start(profile) returns
 * {tab, end}. Hands the scenarios the tab, watched for the page's own
 * errors, and a close() that ends the browser and removes the profile (also
 * removed when the start fails). */
async function launchIn(name, executablePath, start) {
  if (!fs.existsSync(executablePath)) throw new Error(`no browser at ${executablePath}`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), `kiln-${name}-`));
  const removeProfile = () => fs.rmSync(profile, { recursive: true, force: true });
  let started;
  try {
    started = await start(profile);
  } catch (err) {
    removeProfile();
    throw err;
  }
  const { tab, end } = started;
  tab.page.setDefaultTimeout(20000);
  tab.watchProblems(tab.page);
  return {
    tab,
    async close() {
      await end().catch(() => {});
      removeProfile();
    },
  };
}

/* ---- Chromium through playwright-core ---- */

class PlaywrightTab extends Tab {
  async click(sel) { await this.page.click(sel); }
  async fill(sel, text) { await this.page.fill(sel, text); }
  async press(key) { await this.page.keyboard.press(key); }
  async select(sel, value) { await this.page.selectOption(sel, value); }
  frameText(sel) { return this.page.frameLocator(sel).locator('body').innerText({ timeout: 10000 }); }
  async setViewport(width, height) { await this.page.setViewportSize({ width, height }); }

  async openedBy(action) {
    const [page] = await Promise.all([this.page.context().waitForEvent('page', { timeout: 20000 }), action()]);
    await page.waitForLoadState();
    return new PlaywrightTab(page, this.problems, this);
  }
}

export function launchChromium(executablePath = process.env.KILN_CHROMIUM || '/usr/bin/chromium') {
  return launchIn('chromium', executablePath, async (profile) => {
    const { chromium } = await import('playwright-core');
    const context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      timeout: 30000,
      viewport: { width: 1440, height: 900 },
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const page = context.pages()[0] || await context.newPage();
    return { tab: new PlaywrightTab(page, []), end: () => context.close() };
  });
}

/* ---- Firefox through puppeteer-core (WebDriver BiDi) ---- */

class PuppeteerTab extends Tab {
  constructor(browser, page, problems, opener = null) {
    super(page, problems, opener);
    this.browser = browser;
  }

  /* Like Playwright's click: waits until the element is enabled, in view,
   * holding still and the topmost thing at its centre (a list redrawn under
   * the pointer must not take the click), then clicks there. */
  async click(sel) {
    let last = null;
    const at = await this.waitFor(`${sel} to be clickable`, async () => {
      const p = await this.eval(clickPoint, sel);
      const still = p && last && p.x === last.x && p.y === last.y;
      last = p;
      return still ? p : null;
    }, 20000, 50);
    await this.page.mouse.click(at.x, at.y);
  }

  async fill(sel, text) { await this.page.locator(sel).setTimeout(20000).fill(text); }
  async select(sel, value) { await this.page.select(sel, value); }
  async setViewport(width, height) { await this.page.setViewport({ width, height }); }

  /* Puppeteer presses one key at a time: "Shift+Tab" holds Shift around Tab. */
  async press(key) {
    const parts = key.split('+');
    const last = parts.pop();
    const main = last === 'Space' ? ' ' : last; // puppeteer names it by its character
    for (const m of parts) await this.page.keyboard.down(m);
    try {
      await this.page.keyboard.press(main);
    } finally {
      for (const m of parts.reverse()) await this.page.keyboard.up(m);
    }
  }

  async frameText(sel) {
    const handle = await this.page.waitForSelector(sel, { timeout: 10000 });
    const frame = await handle.contentFrame();
    return frame.evaluate(() => document.body.innerText);
  }

  async openedBy(action) {
    const before = new Set(this.browser.targets());
    const opened = this.browser.waitForTarget((t) => t.type() === 'page' && !before.has(t), { timeout: 20000 });
    await action();
    const page = await (await opened).page();
    return new PuppeteerTab(this.browser, page, this.problems, this);
  }
}

export function launchFirefox(executablePath = process.env.KILN_FIREFOX || '/usr/bin/firefox-esr') {
  return launchIn('firefox', executablePath, async (profile) => {
    const { default: puppeteer } = await import('puppeteer-core');
    const browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath,
      headless: true,
      userDataDir: profile,
      timeout: 60000,
      /* The closed network refuses Firefox's own connections; ask for none
       * (puppeteer's defaults already turn off updates, telemetry and safe
       * browsing). */
      extraPrefsFirefox: {
        'network.http.http3.enable': false,
        'network.dns.disablePrefetch': true,
        'network.prefetch-next': false,
        'browser.newtabpage.enabled': false,
        'media.gmp-manager.url': '',
      },
    });
    try {
      /* The tab Firefox starts with never gets the window's focus under
       * automation (document.hasFocus() stays false, so :focus and
       * :focus-visible never match): work in a tab of our own. */
      const first = await browser.pages();
      const page = await browser.newPage();
      for (const p of first) await p.close();
      await page.bringToFront();
      await page.setViewport({ width: 1440, height: 900 });
      return { tab: new PuppeteerTab(browser, page, []), end: () => browser.close() };
    } catch (err) {
      await browser.close().catch(() => {});
      throw err;
    }
  });
}
