// The hub in a real browser (Chromium, driven by playwright-core from labextension/ui-tests):
// alice logs in on the hub's login page, opens JupyterLab with the Workflows sidebar, runs the
// notebook the test wrote (a @work cell, a %%idds template cell); bob logs in and sees none of
// her runs; alice's URLs answer bob 403/404. Prints one JSON line of what it saw for the test
// (tests/hub/test_hub_browser.py) to assert; screenshots go to SHOTS.
// Environment: HUB_URL, HUB_PASSWORD, NOTEBOOK (path in alice's home), SHOTS, CHROMIUM.
const { chromium } = require('playwright-core');
const path = require('path');

const hub = process.env.HUB_URL;
const password = process.env.HUB_PASSWORD;
const shots = process.env.SHOTS;
const notebook = process.env.NOTEBOOK;
const sidebar = '#idds-workflows';

async function login(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(45000);
  current = page;
  await page.goto(`${hub}/hub/login`);
  await page.fill('input[name="username"]', name);
  await page.fill('input[name="password"]', password);
  await page.click('#login_submit');
  await page.waitForURL(new RegExp(`/user/${name}/lab`), { timeout: 60000 });
  return { context, page };
}

async function openLab(page, name, doc) {
  await page.goto(`${hub}/user/${name}/lab${doc ? `/tree/${doc}` : ''}`);
  await page.locator('#jupyterlab-splash').waitFor({ state: 'detached' });
  await page.locator(`.jp-SideBar .lm-TabBar-tab[data-id="idds-workflows"]`).click();
  await page.locator(`${sidebar} .idds-live`).filter({ hasText: 'live' }).waitFor();
}

async function sidebarRuns(page) {
  return page.$$eval(`${sidebar} .idds-run`, rows =>
    rows.map(r => ({
      id: Number(r.getAttribute('data-run-id')),
      status: r.getAttribute('data-status'),
      name: r.querySelector('.idds-run-name')?.textContent ?? ''
    }))
  );
}

async function status(page, url) {
  const r = await page.request.get(url, { maxRedirects: 10, failOnStatusCode: false });
  return r.status();
}

let current = null; // the page in use, for a screenshot when something fails

(async () => {
  const out = {};
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  });
  try {
    // alice: the sidebar open before the cells run, so her runs appear in it live
    const alice = await login(browser, 'alice');
    const before = new Set((await (async () => {
      await openLab(alice.page, 'alice', notebook);
      return sidebarRuns(alice.page);
    })()).map(r => r.id));
    out.alice_before = [...before];
    await alice.page.locator('.jp-Notebook .jp-Cell').first().waitFor();
    // JupyterLab may ask which kernel to start: take the one it proposes
    const dialog = alice.page.locator('.jp-Dialog', { hasText: 'Select Kernel' });
    await alice.page.addLocatorHandler(dialog, d => d.locator('.jp-mod-accept').click());
    const idle = alice.page.locator('#jp-main-statusbar').getByText(/\| Idle/);
    const quiet = () => {}; // the loser of the race times out later: not an error
    await Promise.race([
      dialog.waitFor({ timeout: 60000 }).catch(quiet),
      idle.waitFor({ timeout: 60000 }).catch(quiet)
    ]);
    if (await dialog.isVisible()) {
      await dialog.locator('.jp-mod-accept').click();
    }
    await idle.waitFor({ timeout: 60000 });
    await alice.page.locator('.lm-MenuBar-item', { hasText: /^Run$/ }).click();
    await alice.page.getByRole('menuitem', { name: /^Run All Cells/ }).click();
    const cells = alice.page.locator('.jp-Notebook .jp-OutputArea-output');
    await cells.filter({ hasText: /template-run \d+ finished/ }).waitFor({ timeout: 90000 });
    out.outputs = await cells.allInnerTexts();
    // both runs in the sidebar, finished, without a reload
    await alice.page.waitForFunction(
      ([sel, known]) => {
        const rows = [...document.querySelectorAll(`${sel} .idds-run`)].filter(
          r => !known.includes(Number(r.getAttribute('data-run-id'))));
        return rows.length >= 2 && rows.every(r => r.getAttribute('data-status') === 'finished');
      },
      [sidebar, [...before]],
      { timeout: 60000 }
    );
    out.alice_runs = await sidebarRuns(alice.page);
    await alice.page.locator(sidebar).screenshot({ path: path.join(shots, 'hub-alice.png') });
    await alice.context.close();

    // bob: his own JupyterLab, the sidebar empty of alice's runs
    const bob = await login(browser, 'bob');
    await openLab(bob.page, 'bob', null);
    // loaded: "No runs" or his own runs (a whole session's tests may have given him some)
    await bob.page.locator(`${sidebar} .idds-empty, ${sidebar} .idds-run`).first().waitFor();
    out.bob_runs = await sidebarRuns(bob.page);
    await bob.page.locator(sidebar).screenshot({ path: path.join(shots, 'hub-bob.png') });
    // alice's pages and REST paths, with bob's browser credentials: his hub cookies, and the
    // service's own cookie (the service's page sends him through the hub's OAuth flow)
    out.bob_service_page = (await bob.page.goto(`${hub}/services/idds/`)).status();
    const id = out.alice_runs.find(r => !before.has(r.id)).id;
    out.bob_status = {};
    for (const p of [
      `/user/alice/lab`,
      `/user/alice/api/contents/${notebook}`,
      `/user/alice/idds/api/v1/requests/${id}`,
      `/user/bob/idds/api/v1/requests/${id}`,
      `/user/bob/idds/api/v1/monitor/${id}`,
      `/services/idds/idds/api/v1/requests/${id}`
    ]) {
      out.bob_status[p] = await status(bob.page, hub + p);
    }
    await bob.context.close();
  } catch (e) {
    if (current) {
      await current.screenshot({ path: path.join(shots, 'hub-failure.png') }).catch(() => {});
      console.error('outputs: ' + JSON.stringify(await current.locator('.jp-OutputArea-output').allInnerTexts().catch(() => [])));
    }
    throw e;
  } finally {
    await browser.close();
  }
  console.log('RESULT ' + JSON.stringify(out));
})().catch(e => {
  console.error(e);
  process.exit(1);
});
