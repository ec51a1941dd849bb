/**
 * UI test of notebook export in Debian's Chromium (Galata/Playwright): on an open
 * notebook, "Submit notebook as workflow…" from its context menu shows a form built
 * from the notebook's parameters cell; the run it submits appears in the Workflows
 * sidebar and finishes; its job's executed notebook opens from the run view.
 *
 * Screenshots: test-results/screenshots/notebook-export-form.png and
 * notebook-export-executed.png (copies in docs/img/).
 */
import { expect, galata, test } from '@jupyterlab/galata';
import type { Page } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

const SHOTS = path.resolve(__dirname, '..', 'test-results', 'screenshots');
fs.mkdirSync(SHOTS, { recursive: true });

test.use({ autoGoto: true, mockSettings: { ...galata.DEFAULT_SETTINGS } });

async function shot(page: Page, name: string): Promise<void> {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file });
  console.log(`[screenshot] ${file}`);
}

const cell = (source: string, tags: string[] = []): Record<string, unknown> => ({
  cell_type: 'code',
  execution_count: null,
  metadata: { tags },
  outputs: [],
  source
});

const NOTEBOOK = {
  cells: [cell('n = 3\nlabel = "demo"', ['parameters']), cell('total = sum(range(n))\nprint(label, "total", total)')],
  metadata: {
    kernelspec: { name: 'python3', display_name: 'Python 3', language: 'python' },
    language_info: { name: 'python' }
  },
  nbformat: 4,
  nbformat_minor: 5
};

test('Submit notebook as workflow: the form, the run in the sidebar, the executed notebook', async ({
  page,
  tmpPath
}) => {
  const file = `${tmpPath}/export-demo.ipynb`;
  await page.contents.uploadContent(JSON.stringify(NOTEBOOK), 'text', file);
  await page.notebook.openByPath(file);
  await page.notebook.activate('export-demo.ipynb');

  // the notebook's context menu
  await page.locator('.jp-Notebook .jp-Cell').first().click({ button: 'right' });
  await page.locator('.lm-Menu-itemLabel', { hasText: 'Submit notebook as workflow…' }).click();

  // the form lists the parameters cell's names with their defaults
  const dialog = page.locator('.jp-Dialog');
  const n = dialog.locator('.idds-export-param[data-param="n"]');
  await expect(n).toHaveValue('3');
  await expect(dialog.locator('.idds-export-param[data-param="label"]')).toHaveValue('"demo"');
  await expect(dialog.locator('.idds-export-mode')).toHaveValue('notebook');
  await n.fill('5');
  await shot(page, 'notebook-export-form');
  await dialog.locator('.jp-Dialog-button.jp-mod-accept').click();

  // the run view opens; the run appears in the sidebar and finishes
  const view = page.locator('.idds-runview');
  await expect(view).toBeVisible();
  const id = Number(await view.getAttribute('data-run-id'));
  expect(id).toBeGreaterThan(0);
  const row = page.locator(`#idds-workflows .idds-run[data-run-id="${id}"]`);
  await expect(row).toBeVisible();
  await expect(row).toHaveAttribute('data-status', 'finished', { timeout: 60000 });
  await expect(view).toHaveAttribute('data-status', 'finished');

  // its job's executed notebook, from the run view
  await view.locator('.idds-node-work').first().click();
  await view.locator('.idds-jobs .idds-job-row').first().click();
  await view.locator('.idds-open-executed').click();
  const tab = page.locator('.lm-TabBar-tab', { hasText: /^job-\d+\.ipynb$/ });
  await expect(tab).toBeVisible();
  const executed = page.locator('.jp-NotebookPanel:visible');
  // n = 5 was injected after the parameters cell (papermill's way): 0+1+2+3+4
  await expect(executed.locator('.jp-OutputArea-output')).toContainText('demo total 10');
  await expect(executed).toContainText('# Parameters');
  await shot(page, 'notebook-export-executed');
});
