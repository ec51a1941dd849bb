/**
 * UI test of the overview of a large DAG in Debian's Chromium (Galata/Playwright):
 * a 1,000-work run opens as 20 groups with their aggregate status, zooming in
 * brings each member's status, the minimap shows the whole graph, the search
 * box finds a work inside a collapsed group (expands it, selects and centres
 * the work), a click expands a group and its frame collapses it again; the
 * 2 s budget is measured in the browser with performance.now(). A re-run marks
 * the works whose jobs came from the cache.
 *
 * Screenshots go to test-results/screenshots/dag-overview-*.png; figures
 * (keys dag_overview_*) are merged into test-results/figures.json.
 */
import { expect, galata, test } from '@jupyterlab/galata';
import type { Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

const SHOTS = path.resolve(__dirname, '..', 'test-results', 'screenshots');
const FIGURES = path.resolve(__dirname, '..', 'test-results', 'figures.json');
fs.mkdirSync(SHOTS, { recursive: true });
for (const f of fs.readdirSync(SHOTS)) {
  if (f.startsWith('dag-overview')) {
    fs.rmSync(path.join(SHOTS, f));
  }
}

test.use({ autoGoto: true, mockSettings: { ...galata.DEFAULT_SETTINGS } });

function record(key: string, value: unknown): void {
  let figures: Record<string, unknown> = {};
  try {
    figures = JSON.parse(fs.readFileSync(FIGURES, 'utf8'));
  } catch {
    // first figure of the run
  }
  figures[key] = value;
  fs.writeFileSync(FIGURES, JSON.stringify(figures, null, 2));
  console.log(`[figure] ${key}: ${JSON.stringify(value)}`);
}

async function shot(page: Page, name: string): Promise<void> {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file });
  console.log(`[screenshot] ${file}`);
}

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

/** Opens a run view and waits for its first paint; returns the timings it keeps on its DOM node. */
async function openAndTime(page: Page, id: number): Promise<Record<string, string>> {
  return page.evaluate(async id => {
    const t0 = performance.now();
    await (window as any).jupyterapp.commands.execute('idds:open-run', { id });
    for (;;) {
      const el = document.querySelector(`.idds-runview[data-run-id="${id}"]`) as HTMLElement | null;
      if (el && el.dataset.renderMs) {
        return { ...el.dataset, sinceCommandMs: (performance.now() - t0).toFixed(1) } as Record<string, string>;
      }
      await new Promise(r => setTimeout(r, 2));
    }
  }, id);
}

/** Waits for the next paint of the run view after an action; returns its timing (ms from the action to paint). */
async function nextRender(page: Page, id: number, before: number): Promise<Record<string, string>> {
  const view = page.locator(`.idds-runview[data-run-id="${id}"]`);
  await expect.poll(async () => Number(await view.getAttribute('data-renders'))).toBeGreaterThan(before);
  return view.evaluate(el => ({ ...(el as HTMLElement).dataset }) as Record<string, string>);
}

/** 1,000 works in 20 layers of 50 (`w00_00` … `w19_49`), two dependencies each: the run idds.spec.ts times. */
function thousandWorks(): any[] {
  const works: any[] = [];
  const pad = (n: number): string => String(n).padStart(2, '0');
  for (let l = 0; l < 20; l++) {
    for (let i = 0; i < 50; i++) {
      const w: any = { name: `w${pad(l)}_${pad(i)}`, function: 'idds_jupyter.worker.job:noop' };
      if (l > 0) {
        w.depends_on = Array.from(new Set([`w${pad(l - 1)}_${pad((i * 7) % 50)}`, `w${pad(l - 1)}_${pad((i * 7 + 13) % 50)}`]));
      }
      works.push(w);
    }
  }
  return works;
}

test('a 1,000-work DAG opens as a readable overview: groups, semantic zoom, minimap, search, expand', async ({ page }) => {
  test.setTimeout(120 * 1000);
  const { id } = await api(page, 'POST', 'requests', { template: { name: 'ui-dag-overview-1000', works: thousandWorks() } });
  try {
    // the run ends first (works are created as their dependencies finish): the budget is timed on a quiet server
    const t0 = Date.now();
    await expect
      .poll(async () => (await api(page, 'GET', `monitor/${id}`)).status, { timeout: 150000, intervals: [500] })
      .toBe('finished');
    record('dag_overview_run_seconds', (Date.now() - t0) / 1000);

    // overview: 20 groups of 50, their aggregate status, labels readable at Fit, the minimap
    await page.evaluate(() => ((window as any).__iddsTimings = []));
    const open = await openAndTime(page, id);
    record('dag_overview_1000_open', open);
    expect(Number(open.nodes)).toBe(1000);
    const view = page.locator(`.idds-runview[data-run-id="${id}"]`);
    const dag = view.locator('.idds-dag');
    await expect(view.locator('.idds-node-group')).toHaveCount(20);
    await expect(view.locator('.idds-node-work')).toHaveCount(0);
    await expect(dag).toHaveAttribute('data-zoom-level', 'overview');
    const g00 = view.locator('[data-node="group:w00"]');
    await expect(g00).toHaveAttribute('data-status', 'finished');
    await expect(g00).toHaveAttribute('data-members', '50');
    await expect(g00.locator('.idds-node-label')).toHaveText('w00 (50)');
    const labelPx = await g00.locator('.idds-node-label').evaluate(el => el.getBoundingClientRect().height);
    expect(labelPx, 'group labels are readable at Fit').toBeGreaterThanOrEqual(10);
    await expect(view.locator('.idds-minimap')).toBeVisible();
    await expect(view.locator('.idds-minimap .idds-minimap-view')).toHaveCount(1);
    await shot(page, 'dag-overview-1000-overview');

    // semantic zoom: zooming in on the first groups draws their counts and each member's status
    const box = (await view.locator('[data-node="group:w01"]').boundingBox())!;
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    for (let i = 0; i < 12 && (await dag.getAttribute('data-zoom-level')) !== 'detail'; i++) {
      await page.mouse.wheel(0, -200);
      await page.waitForTimeout(60);
    }
    await expect(dag).toHaveAttribute('data-zoom-level', 'detail');
    await expect(g00.locator('.idds-node-sub')).toContainText('50 works');
    await expect(g00.locator('.idds-group-grid .idds-cell')).toHaveCount(50);
    await expect(g00.locator('.idds-group-grid .idds-cell-finished')).toHaveCount(50);
    await shot(page, 'dag-overview-1000-zoomed');

    // search: a work in a collapsed group is found, its group expanded, the work selected and centred
    let renders = Number(await view.getAttribute('data-renders'));
    await view.locator('.idds-dag-search').fill('w12_34');
    await view.locator('.idds-dag-search').press('Enter');
    const found = await nextRender(page, id, renders);
    record('dag_overview_search_expand', found);
    await expect(view.locator('.idds-dag-found')).toHaveText('1 of 1');
    await expect(view.locator('.idds-group-frame[data-group="group:w12"]')).toHaveCount(1);
    await expect(view.locator('.idds-node-group')).toHaveCount(19);
    await expect(view.locator('.idds-node-work')).toHaveCount(50);
    const work = view.locator('[data-node="w12_34"]');
    await expect(work).toHaveClass(/idds-node-selected/);
    await expect(view.locator('.idds-work-panel[data-work="w12_34"]')).toBeVisible();
    const offCentre = async (): Promise<number> => {
      const n = (await work.locator('rect').first().boundingBox())!;
      const s = (await view.locator('.idds-dag-svg').boundingBox())!;
      return Math.hypot(n.x + n.width / 2 - (s.x + s.width / 2), n.y + n.height / 2 - (s.y + s.height / 2));
    };
    await expect.poll(offCentre, { message: 'the found work is centred' }).toBeLessThan(8);
    await shot(page, 'dag-overview-1000-search');

    // a click expands a group; its frame's handle collapses it again
    await view.locator('.idds-collapse-all').click();
    await expect(view.locator('.idds-node-group')).toHaveCount(20);
    await view.locator('.idds-close').click();
    await view.locator('.idds-fit').click();
    await expect(dag).toHaveAttribute('data-zoom-level', 'overview');
    renders = Number(await view.getAttribute('data-renders'));
    await view.locator('[data-node="group:w05"]').click();
    const expanded = await nextRender(page, id, renders);
    record('dag_overview_click_expand', expanded);
    await expect(view.locator('.idds-node-work')).toHaveCount(50);
    await expect(view.locator('[data-node="w05_00"]')).toBeVisible();
    await view.locator('.idds-group-frame[data-group="group:w05"] .idds-group-collapse').click();
    await expect(view.locator('.idds-node-group')).toHaveCount(20);
    await expect(view.locator('.idds-node-work')).toHaveCount(0);

    // the budget: open, search-and-expand and expand each within 2 s (as idds.spec.ts checks its budgets)
    expect(Number(open.layoutMs)).toBeLessThan(2000);
    expect(Number(open.sinceCommandMs)).toBeLessThan(2000);
    expect(Number(found.totalMs)).toBeLessThan(2000);
    expect(Number(expanded.totalMs)).toBeLessThan(2000);
  } finally {
    await api(page, 'POST', `requests/${id}/abort`, {}).catch(() => undefined);
  }
});

test('a re-run marks the works whose jobs came from the cache', async ({ page }) => {
  const ended = async (id: number): Promise<string> => {
    let status = '';
    await expect
      .poll(
        async () => {
          status = (await api(page, 'GET', `monitor/${id}`)).status;
          return ['finished', 'failed', 'subfinished', 'aborted'].includes(status);
        },
        { timeout: 60000, intervals: [250] }
      )
      .toBe(true);
    return status;
  };
  const first = await api(page, 'POST', 'requests', {
    template: {
      name: 'ui-memo',
      works: [
        { name: 'prep', function: 'idds_jupyter.worker.job:echo', kwargs_list: [{ x: 1 }, { x: 2 }] },
        { name: 'calib', function: 'idds_jupyter.worker.job:echo', kwargs_list: [{ y: 3 }], depends_on: ['prep'] },
        { name: 'bad', function: 'idds_jupyter.worker.job:fail', kwargs_list: [{ message: 'deliberate failure' }] }
      ]
    }
  });
  expect(await ended(first.id)).not.toBe('finished');
  const again = await api(page, 'POST', `requests/${first.id}/rerun`, { failed: true });
  await ended(again.id);
  await page.evaluate(async (id: number) => {
    await (window as any).jupyterapp.commands.execute('idds:open-run', { id });
  }, again.id);
  const view = page.locator(`.idds-runview[data-run-id="${again.id}"]`);
  await expect(view.locator('[data-node="prep"]')).toHaveAttribute('data-memo', 'cached');
  await expect(view.locator('[data-node="calib"]')).toHaveAttribute('data-memo', 'cached');
  await expect(view.locator('[data-node="bad"]')).toHaveAttribute('data-memo', 'ran');
  await expect(view.locator('[data-node="prep"] .idds-memo')).toHaveText('⟲ cached');
  await view.locator('[data-node="prep"]').click();
  await expect(view.locator('.idds-memo-meta')).toContainText('cached 2');
  // the first run computed everything: nothing is marked
  await page.evaluate(async (id: number) => {
    await (window as any).jupyterapp.commands.execute('idds:open-run', { id });
  }, first.id);
  const firstView = page.locator(`.idds-runview[data-run-id="${first.id}"]`);
  await expect(firstView.locator('[data-node="prep"]')).toHaveAttribute('data-status', 'finished');
  await expect(firstView.locator('.idds-node[data-memo]')).toHaveCount(0);
  await page.locator('.lm-TabBar-tab', { hasText: `Run #${again.id}` }).click();
  await shot(page, 'dag-overview-memo-rerun');
});
