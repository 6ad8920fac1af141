/**
 * The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, installed by .ci/run;
 * playwright-core drives it and never downloads a browser) against the real server: known
 * traffic shows up in the DOM within 2 s of its acknowledgement, the chart has points, a burst
 * of invalid events raises the invalid-rate alert, the tail is filterable and PII-masked, the
 * page fits a phone's width, and a screenshot is saved (.vitest-tmp/artifacts/).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice, type RunningSluice } from '../../cli/serve.js';

const CHROMIUM = '/usr/bin/chromium';
const WRITE = 'wk_browser_test';
const READ = 'rk_browser_test';
const ARTIFACTS = join(process.cwd(), '.vitest-tmp', 'artifacts');
/** The deadline: the page shows an event within 2 s of its acknowledgement. */
const DEADLINE_MS = 2000;

/** Polls the page until `fn` returns a value (not undefined) or the deadline passes; returns it and when. */
async function withinDeadline<T>(page: Page, since: number, fn: () => Promise<T | undefined>): Promise<{ value: T; ms: number }> {
  for (;;) {
    const value = await fn();
    const ms = Date.now() - since;
    if (value !== undefined) return { value, ms };
    if (ms > DEADLINE_MS) throw new Error(`not on the page within ${DEADLINE_MS} ms`);
    await page.waitForTimeout(50);
  }
}

const val = (page: Page, selector: string): Promise<string | null> => page.locator(selector).first().getAttribute('data-value');

function events(n: number, from: number, make: (i: number) => Record<string, unknown>): string {
  const now = new Date().toISOString();
  return JSON.stringify({ batch: Array.from({ length: n }, (_, k) => ({ messageId: `b-${from + k}`, timestamp: now, ...make(from + k) })) });
}

async function post(url: string, body: string): Promise<void> {
  const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: { authorization: `Bearer ${WRITE}`, 'content-type': 'application/json' }, body });
  expect(res.status).toBe(200);
}

// Opt out explicitly (a machine without Chromium); a missing browser is otherwise a failure, not a skip.
describe.skipIf(process.env.SLUICE_SKIP_BROWSER_TESTS === '1')('dashboard in headless Chromium', () => {
  let sluice: RunningSluice;
  let browser: Browser;
  let dir: string;
  const problems: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does), or set SLUICE_SKIP_BROWSER_TESTS=1`);
    dir = mkdtempSync(join(tmpdir(), 'sluice-dash-browser-'));
    const config = composeServeConfig({ port: 0, data: join(dir, 'data'), lake: join(dir, 'lake'), shards: 2, workers: 1, flushInterval: '1s', writeKeys: [WRITE], readKeys: [READ] }, {});
    config.ingest = { pii: { hash: ['properties.email'], drop: [], salt: 'test-salt' }, dashboard: { tailPerSecond: 500 } };
    sluice = await startSluice(config, pino({ level: 'warn' }));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      chromiumSandbox: false,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await sluice?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('shows known traffic within 2 s, charts it, raises the invalid-rate alert, filters a masked tail', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    const page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
    });
    const offSite: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(sluice.url) && !r.url().startsWith(sluice.url.replace('http', 'ws'))) offSite.push(r.url());
    });

    // The read key in the URL is swapped for a cookie; the page then opens its stream.
    await page.goto(`${sluice.url}/dashboard?key=${READ}`);
    expect(new URL(page.url()).search).toBe('');
    await page.locator('#status[data-state="live"]').waitFor({ timeout: 10_000 });
    await page.locator('#total-acked[data-value="0"]').waitFor({ timeout: 10_000 });

    // 120 known events: 30 installs, 20 screens, 70 taps, 12 users, with an email to be masked.
    await post(
      sluice.url,
      events(120, 0, (i) =>
        i < 20
          ? { type: 'screen', name: 'Home', userId: `u${i % 12}`, context: { device: { type: 'ios' }, app: { version: '2.0' }, location: { country: 'FR' } } }
          : {
              type: 'track',
              event: i < 50 ? 'Application Installed' : 'Button Tapped',
              userId: `u${i % 12}`,
              properties: { email: `person${i}@example.com` },
              context: { device: { type: i % 3 === 0 ? 'android' : 'ios' }, app: { version: '2.0' }, location: { country: 'DE' } },
            },
      ),
    );
    const acked = Date.now();
    const shown = await withinDeadline(page, acked, async () => {
      const [total, processed, installs, screens, events] = await Promise.all([
        val(page, '#total-acked'),
        val(page, '#total-processed'),
        val(page, '#w-hour [data-field="installs"]'),
        val(page, '#w-hour [data-field="screenViews"]'),
        val(page, '#w-today [data-field="events"]'),
      ]);
      return total === '120' && processed === '120' && installs === '30' && screens === '20' && events === '120' ? true : undefined;
    });
    expect(shown.ms).toBeLessThanOrEqual(DEADLINE_MS);
    const points = Number(await page.locator('#chart').getAttribute('data-points'));
    expect(points).toBeGreaterThan(0);
    expect(await page.locator('#chart canvas').count()).toBeGreaterThan(0);
    // The engine's view of the hour (deduplicated users): 12 users.
    await page.locator('#w-hour [data-field="activeUsers"][data-value="12"]').waitFor({ timeout: 10_000 });
    // Breakdown by device for today.
    await page.locator('#bd-device_type tbody tr').first().waitFor();
    expect(await page.locator('#bd-device_type tbody tr td:first-child').allTextContents()).toEqual(['ios', 'android']);

    // The tail: masked emails, filterable by type and by user.
    const tailText = await page.locator('#tail tbody').textContent();
    expect(tailText).toContain('Application Installed');
    expect(tailText).not.toContain('@example.com');
    await page.fill('#f-type', 'screen');
    const types = (await page.evaluate("Array.from(document.querySelectorAll('#tail tbody tr'), (r) => r.dataset.type)")) as string[];
    expect(types.length).toBeGreaterThan(0);
    expect(new Set(types)).toEqual(new Set(['screen']));
    await page.fill('#f-type', '');
    await page.fill('#f-user', 'u7');
    const users = (await page.evaluate("Array.from(document.querySelectorAll('#tail tbody tr'), (r) => r.dataset.user)")) as string[];
    expect(new Set(users)).toEqual(new Set(['u7']));
    await page.fill('#f-user', '');

    // A burst of invalid events (no user id) → the invalid-rate alert, within 2 s.
    await post(sluice.url, events(25, 500, () => ({ type: 'track', event: 'Broken' })));
    const burst = Date.now();
    const alert = await withinDeadline(page, burst, async () => ((await page.locator('#alerts [data-alert="invalid_rate"]').count()) > 0 ? true : undefined));
    expect(alert.ms).toBeLessThanOrEqual(DEADLINE_MS);
    expect(await page.locator('#q-invalid').getAttribute('class')).toContain('bad');
    expect(await val(page, '#rejects tr[data-code="missing_user"] td:nth-child(3)')).toBe('25');

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });

    // A phone's width: nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300);
    const overflow = (await page.evaluate('document.documentElement.scrollWidth - window.innerWidth')) as number;
    expect(overflow).toBeLessThanOrEqual(1);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-phone.png'), fullPage: false });

    expect(offSite).toEqual([]);
    expect(problems).toEqual([]);
    await context.close();
  });
});
