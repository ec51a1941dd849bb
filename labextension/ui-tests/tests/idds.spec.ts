/**
 * UI tests of the idds-jupyter extension in Debian's Chromium (Galata/Playwright):
 * the Workflows sidebar, a run submitted from a notebook cell, its DAG and jobs,
 * the HPO view of a small study, and render times of a 100,000-job run and of a
 * 1,000-work DAG measured in the browser with performance.now().
 *
 * Screenshots go to test-results/screenshots/ (a stable path); figures to
 * test-results/figures.json and the log.
 */
import { expect, galata, test } from '@jupyterlab/galata';
import type { Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

const SHOTS = path.resolve(__dirname, '..', 'test-results', 'screenshots');
const FIGURES = path.resolve(__dirname, '..', 'test-results', 'figures.json');
fs.mkdirSync(SHOTS, { recursive: true });
for (const f of fs.readdirSync(SHOTS)) {
  if (!f.startsWith('dag-overview') && !f.startsWith('hpo-scale')) {
    // dag-overview.spec.ts and hpo-scale.spec.ts (run first) keep their own
    fs.rmSync(path.join(SHOTS, f), { recursive: true, force: true });
  }
}

test.describe.configure({ mode: 'serial' });
test.use({ autoGoto: true, mockSettings: { ...galata.DEFAULT_SETTINGS } });

const figures: Record<string, unknown> = {};
try {
  // the figures of dag-overview.spec.ts (run first) are kept
  for (const [k, v] of Object.entries(JSON.parse(fs.readFileSync(FIGURES, 'utf8')))) {
    if (k.startsWith('dag_overview')) {
      figures[k] = v;
    }
  }
} catch {
  // no figures yet
}
function record(key: string, value: unknown): void {
  figures[key] = value;
  try {
    // the figures hpo-scale.spec.ts (run before this file) wrote are kept
    for (const [k, v] of Object.entries(JSON.parse(fs.readFileSync(FIGURES, 'utf8')))) {
      if (k.startsWith('hpo_scale') && !(k in figures)) {
        figures[k] = v;
      }
    }
  } catch {
    // no figures yet
  }
  fs.writeFileSync(FIGURES, JSON.stringify(figures, null, 2));
  console.log(`[figure] ${key}: ${JSON.stringify(value)}`);
}

async function shot(page: Page, name: string): Promise<void> {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file });
  console.log(`[screenshot] ${file}`);
}

/** Calls the idds REST API from the page: same origin, Jupyter cookie + XSRF header, base URL honoured. */
async function api<T = any>(page: Page, method: string, route: string, body?: unknown): Promise<T> {
  return page.evaluate(
    async ([method, route, body]) => {
      const base = (document.body.dataset.baseUrl || '/').replace(/\/?$/, '/');
      const cfg = JSON.parse(document.getElementById('jupyter-config-data')?.textContent || '{}');
      const baseUrl = (cfg.baseUrl || base).replace(/\/?$/, '/');
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

async function waitRun(page: Page, id: number, timeoutMs: number): Promise<any> {
  const t0 = Date.now();
  for (;;) {
    const m = await api(page, 'GET', `monitor/${id}`);
    if (['finished', 'failed', 'subfinished', 'aborted'].includes(m.status)) {
      return m;
    }
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`run ${id} still ${m.status} after ${timeoutMs} ms: ${JSON.stringify(m.jobs)}`);
    }
    await page.waitForTimeout(500);
  }
}

async function openSidebar(page: Page): Promise<void> {
  await page.sidebar.openTab('idds-workflows');
  await expect(page.locator('#idds-workflows .idds-sidebar-header h2')).toHaveText('Workflows');
}

async function execute(page: Page, command: string, args: Record<string, unknown>): Promise<void> {
  await page.evaluate(
    async ([command, args]) => {
      await (window as any).jupyterapp.commands.execute(command, args);
    },
    [command, args] as [
    string,
      Record<string, unknown>
    ]
  );
}

const CELL = `from idds_jupyter import work, workflow

@work
def square(x):
    return x * x

@workflow
def ui_demo(n=6):
    return sum(square.map(range(n)))

run = ui_demo.submit(n=6)
print("submitted", run.id)
print("result", run.result(timeout=120))`;

let demoRun = 0;

test('the Workflows sidebar opens, with its icon, filters and live status', async ({ page }) => {
  await openSidebar(page);
  await expect(page.locator('#idds-workflows .idds-live')).toContainText('live', { timeout: 20000 });
  await expect(page.locator('#idds-workflows .idds-status-filter')).toBeVisible();
  await expect(page.locator('#idds-workflows .idds-name-filter')).toBeVisible();
  // the palette lists the commands
  await page.keyboard.press('Control+Shift+C');
  await page.locator('#modal-command-palette input').fill('iDDS');
  await expect(page.locator('#modal-command-palette')).toContainText('Show Workflows');
  await page.keyboard.press('Escape');
  await shot(page, '01-sidebar');
});

test('a notebook cell submits a workflow; the run appears and finishes in the sidebar', async ({ page }) => {
  await openSidebar(page);
  await page.notebook.createNew('submit.ipynb');
  // the source goes into the cell's model (typing it would be re-indented by the editor)
  await page.notebook.setCell(0, 'code', '# submits a workflow');
  await page.evaluate(src => {
    const nb = (window as any).jupyterapp.shell.currentWidget;
    nb.content.widgets[0].model.sharedModel.setSource(src);
  }, CELL);
  await page.notebook.runCell(0, true);
  const out = await page.notebook.getCellTextOutput(0);
  const text = (out || []).join('\n');
  expect(text).toContain('result 55');
  demoRun = Number(/submitted (\d+)/.exec(text)![1]);
  const row = page.locator(`#idds-workflows .idds-run[data-run-id="${demoRun}"]`);
  await expect(row).toBeVisible();
  await expect(row).toHaveAttribute('data-status', 'finished', { timeout: 60000 });
  await expect(row.locator('.idds-progress-text')).toContainText('6/6');
  // the name filter keeps it, another name hides it
  await page.locator('#idds-workflows .idds-name-filter').fill('ui_dem');
  await expect(row).toBeVisible();
  await page.locator('#idds-workflows .idds-name-filter').fill('no-such-run');
  await expect(row).toBeHidden();
  await page.locator('#idds-workflows .idds-name-filter').fill('');
  await shot(page, '02-notebook-run-finished');
});

test('clicking the run opens its DAG; clicking a work shows its jobs and a log', async ({ page }) => {
  expect(demoRun).toBeGreaterThan(0);
  await openSidebar(page);
  await page.locator(`#idds-workflows .idds-run[data-run-id="${demoRun}"]`).click();
  const view = page.locator(`.idds-runview[data-run-id="${demoRun}"]`);
  await expect(view).toHaveAttribute('data-status', 'finished');
  const work = view.locator('.idds-node-work').first();
  await expect(work).toBeVisible();
  await expect(work).toHaveAttribute('data-status', 'finished');
  await work.click();
  const rows = view.locator('.idds-jobs .idds-job-row');
  await expect(rows).toHaveCount(6);
  await expect(rows.first()).toContainText('finished');
  await rows.first().click();
  await expect(view.locator('.idds-log')).toBeVisible();
  await expect(view.locator('.idds-log-text')).toContainText('result');
  await shot(page, '03-run-dag-jobs');
});

test('a template run shows branches taken / not taken and loop iterations', async ({ page }) => {
  const { id } = await api(page, 'POST', 'requests', {
    template: {
      name: 'ui-branch-loop',
      parameters: { threshold: 2 },
      works: [
        { name: 'gen', function: 'idds_jupyter.worker.job:echo', kwargs_list: [{ x: 1 }, { x: 2 }, { x: 3 }] },
        { name: 'big', function: 'idds_jupyter.worker.job:echo', parameters: { branch: 'big' } },
        { name: 'small', function: 'idds_jupyter.worker.job:echo', parameters: { branch: 'small' } },
        { name: 'tune', function: 'idds_jupyter.worker.job:echo', kwargs_list: [{ metric: '{iteration}' }, { metric: 0.5 }] }
      ],
      conditions: [{ name: 'pick', expr: 'len(gen.result) > threshold', true: ['big'], false: ['small'] }],
      loops: [{ name: 'tuning', works: ['tune'], until: 'iteration >= 3', max_iterations: 5, depends_on: ['gen'] }]
    }
  });
  await waitRun(page, id, 60000);
  await execute(page, 'idds:open-run', { id });
  const view = page.locator(`.idds-runview[data-run-id="${id}"]`);
  await expect(view.locator('.idds-node-condition')).toHaveCount(1);
  await expect(view.locator('path.idds-edge-true.idds-edge-taken')).toHaveCount(1);
  await expect(view.locator('path.idds-edge-false.idds-edge-nottaken')).toHaveCount(1);
  await expect(view.locator('path.idds-edge-iteration')).toHaveCount(3);
  await expect(view.locator('[data-node="small"]')).toHaveAttribute('data-status', 'skipped');
  await shot(page, '04-branch-and-loop-dag');
  // the dark theme: colours come from JupyterLab's CSS variables
  await execute(page, 'apputils:change-theme', { theme: 'JupyterLab Dark' });
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-light', 'false');
  await page.waitForTimeout(300);
  await shot(page, '04-branch-and-loop-dag-dark');
  await execute(page, 'apputils:change-theme', { theme: 'JupyterLab Light' });
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-light', 'true');
  // its active-learning view: metric per loop iteration
  await execute(page, 'idds:open-active-learning', { id });
  const al = page.locator(`.idds-al[data-run-id="${id}"]`);
  await expect(al).toHaveAttribute('data-iterations', '4');
  await expect(al.locator('.idds-plot-metric .main-svg').first()).toBeVisible();
  await shot(page, '05-active-learning');
});

test('the HPO view of a small study shows its trials, best so far and parallel coordinates', async ({ page }) => {
  const trials = [];
  for (let i = 0; i < 12; i++) {
    const lr = Number((0.01 * (1 + ((i * 7) % 12))).toFixed(3));
    const depth = 2 + (i % 5);
    const objective = Number(((lr - 0.06) ** 2 * 100 + (depth - 4) ** 2 / 10 + 0.01 * i).toFixed(5));
    trials.push({ objective, params: { lr, depth, opt: i % 2 ? 'adam' : 'sgd' } });
  }
  const { id } = await api(page, 'POST', 'requests', {
    template: { name: 'ui-hpo-study', works: [{ name: 'trials', function: 'idds_jupyter.worker.job:echo', kwargs_list: trials }] }
  });
  await waitRun(page, id, 60000);
  await openSidebar(page);
  await execute(page, 'idds:open-hpo', { id });
  const hpo = page.locator(`.idds-hpo[data-run-id="${id}"]`);
  await expect(hpo).toHaveAttribute('data-trials', '12');
  await expect(hpo.locator('.idds-trials tbody tr')).toHaveCount(12);
  const best = Math.min(...trials.map(t => t.objective));
  await expect(hpo.locator('.idds-best')).toContainText(String(Number(best.toPrecision(5))));
  await expect(hpo.locator('.idds-plot-parcoords .main-svg').first()).toBeVisible();
  await expect(hpo.locator('.idds-plot-objective .main-svg').first()).toBeVisible();
  await page.waitForTimeout(500);
  await shot(page, '06-hpo-view');
});

test('the launcher opens the Workflows view; run and HPO views are restored on reload', async ({ page }) => {
  const runs: any[] = (await api(page, 'GET', 'requests?limit=50')).requests;
  const study = runs.find(r => r.name === 'ui-hpo-study');
  expect(study, 'the HPO test made a study').toBeTruthy();
  const id = Number(study.id);
  // the launcher's card (category Other) shows the Workflows sidebar
  await page.sidebar.close('left');
  await expect(page.locator('#idds-workflows')).toBeHidden();
  await execute(page, 'launcher:create', {});
  const card = page.locator('.jp-LauncherCard:visible').filter({ hasText: /^Workflows$/ });
  await expect(card).toHaveCount(1); // in the visible launcher, one card
  await card.click();
  await expect(page.locator('#idds-workflows .idds-sidebar-header h2')).toBeVisible();
  // open a run view and its HPO view, then reload: both come back, with their data.
  // JupyterLab saves the layout to the workspace a while after it changes (debounced):
  // reloading before that save would find the layout of before (a Launcher), so the
  // reload waits for the workspace saved with both views in its main area.
  const layoutSaved = page.waitForResponse(resp => {
    const req = resp.request();
    if (req.method() !== 'PUT' || !/\/api\/workspaces\//.test(req.url())) {
      return false;
    }
    const main = JSON.stringify(req.postDataJSON()?.data?.['layout-restorer:data']?.main ?? null);
    return main.includes('idds-jupyter:') && main.includes('idds-jupyter-hpo:');
  }, { timeout: 60000 });
  await execute(page, 'idds:open-run', { id });
  await execute(page, 'idds:open-hpo', { id });
  await expect(page.locator(`.idds-runview[data-run-id="${id}"]`)).toHaveCount(1);
  await expect(page.locator(`.idds-hpo[data-run-id="${id}"]`)).toHaveAttribute('data-trials', '12');
  await layoutSaved;
  // (galata's readiness check waits for a Launcher tab: the restored layout has none)
  await page.reload({ waitForIsReady: false });
  await page.locator('#jupyterlab-splash').waitFor({ state: 'detached' });
  await expect(page.locator('.lm-TabBar-tabLabel', { hasText: `Run #${id}` })).toHaveCount(1);
  await expect(page.locator('.lm-TabBar-tabLabel', { hasText: `HPO #${id}` })).toHaveCount(1);
  await page.locator('.lm-TabBar-tab', { hasText: `Run #${id}` }).click();
  await expect(page.locator(`.idds-runview[data-run-id="${id}"]`)).toHaveAttribute('data-status', 'finished');
  await page.locator('.lm-TabBar-tab', { hasText: `HPO #${id}` }).click();
  await expect(page.locator(`.idds-hpo[data-run-id="${id}"]`)).toHaveAttribute('data-trials', '12');
  await shot(page, '07-restored-views');
});

test('suspend, resume, abort and retry failed from the sidebar, each after a confirmation', async ({ page }) => {
  const { id } = await api(page, 'POST', 'requests', {
    template: { name: 'ui-actions', works: [{ name: 'sleepy', function: 'idds_jupyter.worker.job:sleep', kwargs_list: Array(4).fill({ seconds: 30 }) }] }
  });
  const bad = await api(page, 'POST', 'requests', {
    template: { name: 'ui-failing', works: [{ name: 'bad', function: 'idds_jupyter.worker.job:fail', kwargs_list: [{ message: 'deliberate failure' }] }] }
  });
  await openSidebar(page);
  const row = page.locator(`#idds-workflows .idds-run[data-run-id="${id}"]`);
  await expect(row).toHaveAttribute('data-status', 'running');
  const confirm = async (button: string, accept: boolean): Promise<void> => {
    await row.locator(button).click();
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toBeVisible();
    await dialog.locator(accept ? '.jp-mod-accept' : '.jp-mod-reject').click();
    await expect(dialog).toBeHidden();
  };
  await confirm('.idds-action-suspend', true);
  await expect(row).toHaveAttribute('data-status', 'suspended');
  await shot(page, '07-actions-suspended');
  await confirm('.idds-action-resume', true);
  await expect(row).toHaveAttribute('data-status', 'running');
  await confirm('.idds-action-abort', false); // cancelled: nothing happens
  await page.waitForTimeout(500);
  await expect(row).toHaveAttribute('data-status', 'running');
  await confirm('.idds-action-abort', true);
  await expect(row).toHaveAttribute('data-status', 'aborted');

  const badRow = page.locator(`#idds-workflows .idds-run[data-run-id="${bad.id}"]`);
  await expect(badRow).toHaveAttribute('data-status', 'failed');
  await badRow.locator('.idds-action-retry').click();
  await expect(page.locator('.jp-Dialog')).toContainText('Retry');
  await page.locator('.jp-Dialog .jp-mod-accept').click();
  await expect
    .poll(async () => (await api(page, 'GET', `monitor/${bad.id}/works/bad/jobs`)).jobs[0].attempt, { timeout: 30000 })
    .toBeGreaterThan(1);
  // the status filter keeps the aborted run only
  await page.locator('#idds-workflows .idds-status-filter').selectOption('aborted');
  await expect(page.locator('#idds-workflows .idds-run')).toHaveCount(1);
  await page.locator('#idds-workflows .idds-status-filter').selectOption('');
});

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

test('render times: a 100,000-job run and a 1,000-work DAG (performance.now in the browser)', async ({ page }) => {
  test.setTimeout(240 * 1000);
  // 100,000 no-op jobs in one work
  const big = await api(page, 'POST', 'requests', {
    template: { name: 'ui-100k-jobs', works: [{ name: 'noop', function: 'idds_jupyter.worker.job:noop', n_jobs: 100000 }] }
  });
  await openSidebar(page);
  // no request storm: count the API requests of the page (sidebar + run view) while 100,000 jobs end
  let apiRequests = 0;
  const onRequest = (r: { url: () => string }): void => {
    if (r.url().includes('/idds/api/v1/')) {
      apiRequests++;
    }
  };
  page.on('request', onRequest);
  const tRun = Date.now();
  // while it runs: open its view, time the first render, watch it update live
  const live = await openAndTime(page, big.id);
  record('run_100k_open_while_running', live);
  const bigView = page.locator(`.idds-runview[data-run-id="${big.id}"]`);
  await expect(bigView).toHaveAttribute('data-status', 'finished', { timeout: 150000 });
  await expect(bigView.locator('.idds-node-sub').first()).toContainText('100k/100k');
  const renders = Number(await bigView.getAttribute('data-renders'));
  page.off('request', onRequest);
  const seconds = (Date.now() - tRun) / 1000;
  record('run_100k_live', { seconds: Number(seconds.toFixed(1)), renders, apiRequests, requestsPerSecond: Number((apiRequests / seconds).toFixed(2)) });
  expect(apiRequests / seconds).toBeLessThan(8);

  // 1,000 works in 20 layers of 50, two dependencies each
  const works: any[] = [];
  const L = 20;
  const W = 50;
  const pad = (n: number): string => String(n).padStart(2, '0');
  for (let l = 0; l < L; l++) {
    for (let i = 0; i < W; i++) {
      const w: any = { name: `w${pad(l)}_${pad(i)}`, function: 'idds_jupyter.worker.job:noop' };
      if (l > 0) {
        w.depends_on = Array.from(new Set([`w${pad(l - 1)}_${pad((i * 7) % W)}`, `w${pad(l - 1)}_${pad((i * 7 + 13) % W)}`]));
      }
      works.push(w);
    }
  }
  // the same DAG, finished, from dag-overview.spec.ts (run first) when there is one: no second 1,000-work run
  const prior = (await api(page, 'GET', 'requests?limit=50')).requests.find(
    (r: any) => r.name === 'ui-dag-overview-1000' && r.status === 'finished'
  );
  const dag = prior ? { id: Number(prior.id) } : await api(page, 'POST', 'requests', { template: { name: 'ui-dag-1000', works } });
  await waitRun(page, dag.id, 150000);

  // on a quiet server: re-open the finished 100k run, then the 1,000-work DAG
  await page.locator('.lm-DockPanel-tabBar .lm-TabBar-tab', { hasText: `Run #${big.id}` }).locator('.lm-TabBar-tabCloseIcon').click();
  await page.evaluate(() => ((window as any).__iddsTimings = []));
  const t100k = await openAndTime(page, big.id);
  record('run_100k_finished', t100k);
  expect(Number(t100k.jobs)).toBe(100000);
  await expect(bigView.locator('.idds-node-work')).toHaveCount(1);
  await shot(page, '08-run-100k-jobs');

  const t1000 = await openAndTime(page, dag.id);
  record('dag_1000_works', t1000);
  expect(Number(t1000.nodes)).toBe(1000);
  // drawn as an overview: 20 groups of 50 (dag-overview.spec.ts tests the overview itself)
  await expect(page.locator(`.idds-runview[data-run-id="${dag.id}"] .idds-node-group`)).toHaveCount(20);
  await shot(page, '09-dag-1000-works');
  record('timings', await page.evaluate(() => (window as any).__iddsTimings));
  expect(Number(t100k.renderMs)).toBeLessThan(1000);
  expect(Number(t100k.sinceCommandMs)).toBeLessThan(1000);
  expect(Number(t1000.layoutMs)).toBeLessThan(2000);
  expect(Number(t1000.sinceCommandMs)).toBeLessThan(2000);
});
