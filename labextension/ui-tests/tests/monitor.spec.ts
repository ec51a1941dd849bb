/**
 * UI test of the Monitor panel in Debian's Chromium (Galata/Playwright): a small
 * run with three jobs that succeed and one that fails, then the Monitor panel
 * (opened from the launcher) shows its throughput, failures and queue-depth plots
 * and the totals from the aggregate monitor API.
 *
 * Screenshot: test-results/screenshots/monitor.png (docs/img/monitor.png is a copy).
 */
import { expect, galata, test } from '@jupyterlab/galata';
import type { Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

const SHOTS = path.resolve(__dirname, '..', 'test-results', 'screenshots');
fs.mkdirSync(SHOTS, { recursive: true });
fs.rmSync(path.join(SHOTS, 'monitor.png'), { force: true });

test.use({ autoGoto: true, mockSettings: { ...galata.DEFAULT_SETTINGS } });

/** Calls the idds REST API from the page (same origin, Jupyter cookie + XSRF header). */
async function api<T = any>(page: Page, method: string, route: string, body?: unknown): Promise<T> {
  return page.evaluate(
    async ([method, route, body]) => {
      const cfg = JSON.parse(document.getElementById('jupyter-config-data')?.textContent || '{}');
      const baseUrl = (cfg.baseUrl || '/').replace(/\/?$/, '/');
      const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1];
      const resp = await fetch(`${baseUrl}idds/api/v1/${route}`, {
        method: method as string,
        headers: { 'Content-Type': 'application/json', ...(xsrf ? { 'X-XSRFToken': decodeURIComponent(xsrf) } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body)
      });
      const text = await resp.text();
      if (!resp.ok) {
        throw new Error(`${method} ${route}: ${resp.status} ${text}`);
      }
      return JSON.parse(text);
    },
    [method, route, body] as [string, string, unknown]
  );
}

test('the Monitor panel shows throughput, failures and queue depth of a run', async ({ page }) => {
  const { id } = await api(page, 'POST', 'requests', {
    template: {
      name: 'ui-monitor',
      works: [
        { name: 'ok', function: 'idds_jupyter.worker.job:echo', kwargs_list: [{ x: 1 }, { x: 2 }, { x: 3 }] },
        { name: 'bad', function: 'idds_jupyter.worker.job:fail', kwargs_list: [{ message: 'for the monitor' }] }
      ]
    }
  });
  await expect
    .poll(async () => (await api(page, 'GET', `monitor/${id}`)).status, { timeout: 60000 })
    .toMatch(/^(failed|subfinished)$/);

  // from the launcher, as a user finds it
  await page.evaluate(async () => {
    await (window as any).jupyterapp.commands.execute('launcher:create', {});
  });
  await page.locator('.jp-LauncherCard:visible').filter({ hasText: /^iDDS Monitor$/ }).click();
  const panel = page.locator('.idds-monitor');
  await expect(panel).toBeVisible();
  for (const plot of ['throughput', 'failures', 'queue']) {
    await expect(panel.locator(`.idds-monitor-${plot} .main-svg`).first()).toBeVisible();
  }
  await expect(panel.locator('.idds-monitor-throughput')).toContainText('Throughput');
  await expect(panel.locator('.idds-monitor-failures')).toContainText('Failures');
  await expect(panel.locator('.idds-monitor-queue')).toContainText('Queue depth');
  // the totals: at least this run's three finished jobs and its failed one
  const count = async (what: string): Promise<number> =>
    Number(((await panel.locator(`.idds-monitor-${what}`).textContent()) || '').replace(/\D+/g, ''));
  await expect.poll(() => count('finished')).toBeGreaterThanOrEqual(3);
  await expect.poll(() => count('failed')).toBeGreaterThanOrEqual(1);
  // the failures plot has a non-zero point: the failed job is in a bucket
  const agg = await api(page, 'GET', 'monitor?hours=1&bucket=30');
  const failed = Object.values(agg.series.failed as Record<string, number[]>).flat();
  expect(failed.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1);
  await page.waitForTimeout(300); // plotly's transition
  const file = path.join(SHOTS, 'monitor.png');
  await page.screenshot({ path: file });
  console.log(`[screenshot] ${file}`);
});
