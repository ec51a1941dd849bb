/**
 * UI test of the staging view in Debian's Chromium (Galata/Playwright): a
 * dataset registered in the catalog as a Rucio data source registers it (files
 * named by PFN, their DID and RSE in meta), its files reported queued,
 * staging, stuck and available through the REST API, then the view
 * (`idds:open-staging`) shows the counts and each file's DID, RSE and state.
 *
 * Screenshot: test-results/screenshots/staging.png.
 */
import { expect, galata, test } from '@jupyterlab/galata';
import type { Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

const SHOTS = path.resolve(__dirname, '..', 'test-results', 'screenshots');
fs.mkdirSync(SHOTS, { recursive: true });
fs.rmSync(path.join(SHOTS, 'staging.png'), { force: true });

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

test('the staging view shows each file of a Rucio dataset queued, staging, stuck or available', async ({ page }) => {
  const ds = `rucio://ui:staging.${Date.now()}`;
  const pfn = (i: number): string => `file://localhost/rse/disk/ui/staging.f${i}`;
  await api(page, 'POST', 'catalog/datasets', {
    name: ds,
    files: [0, 1, 2, 3].map(i => ({ name: pfn(i), size: 100 + i, meta: { did: `ui:staging.f${i}`, rse: 'DISK' } })),
    meta: { source: 'rucio' }
  });
  const route = `catalog/datasets/${encodeURIComponent(ds)}`;
  await api(page, 'POST', `${route}/staging`, { files: [pfn(0)], state: 'queued' });
  await api(page, 'POST', `${route}/staging`, { files: [pfn(1)], state: 'staging' });
  await api(page, 'POST', `${route}/staging`, { files: [pfn(2)], state: 'stuck' });
  await api(page, 'POST', `${route}/available`, { files: [pfn(3)] });

  await page.evaluate(async dataset => {
    await (window as any).jupyterapp.commands.execute('idds:open-staging', { dataset });
  }, ds);
  const view = page.locator(`.idds-staging[data-dataset="${ds}"]`);
  await expect(view).toBeVisible();
  for (const state of ['queued', 'staging', 'stuck', 'available']) {
    await expect(view.locator(`.idds-staging-count[data-state="${state}"]`)).toHaveAttribute('data-count', '1');
  }
  const rows = view.locator('.idds-staging-table tbody tr');
  await expect(rows).toHaveCount(4);
  await expect(rows.nth(2)).toHaveAttribute('data-state', 'stuck');
  await expect(rows.nth(2)).toContainText('ui:staging.f2');
  await expect(rows.nth(2)).toContainText('DISK');
  await expect(rows.nth(3)).toHaveAttribute('data-state', 'available');
  const file = path.join(SHOTS, 'staging.png');
  await page.screenshot({ path: file });
  console.log(`[screenshot] ${file}`);
});
