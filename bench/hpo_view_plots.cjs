/**
 * What each plot of the lab HPO view costs to draw in the UI tests' browser
 * (Debian's Chromium, headless, no GPU: WebGL runs in software), with the view's
 * sizes: the objective plot (1,000 markers and the best-so-far line, SVG), the
 * view's parallel coordinates (SVG lines, `parallelCoordinates` of
 * labextension/src/studies.ts as built in labextension/lib) and, as its peer, plotly's
 * WebGL `parcoords` that the view drew before, at 20 and 200 lines, each in a
 * fresh page, the median of `--reps` pages. The HPO view's own budget
 * is measured by labextension/ui-tests/tests/hpo-scale.spec.ts; this tells
 * which plot its time goes to.
 *
 * Run (after `make ui-deps`): node bench/hpo_view_plots.cjs [--reps 5]
 */
const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const { chromium } = require(path.join(ROOT, 'labextension/ui-tests/node_modules/playwright'));
const PLOTLY = path.join(ROOT, 'labextension/node_modules/plotly.js-dist-min/plotly.min.js');
// the view's own code (an ES module without imports), handed to the page
const STUDIES = fs.readFileSync(path.join(ROOT, 'labextension/lib/studies.js'), 'utf8');
const reps = Number(process.argv[process.argv.indexOf('--reps') + 1]) || 5;

/** Runs in the page: ms of Plotly.react for one plot of `kind`. */
async function draw([kind, n, studies]) {
  const div = document.createElement('div');
  div.style.width = '700px';
  div.style.height = '400px';
  document.body.appendChild(div);
  const layout = { margin: { l: 50, r: 20, t: 30, b: 40 } };
  let data;
  if (kind === 'objective') {
    const x = [...Array(n).keys()];
    const y = x.map(i => Math.sin(i) ** 2);
    data = [
      { x, y, mode: 'markers', type: 'scatter' },
      { x, y, mode: 'lines', type: 'scatter', line: { shape: 'hv' } }
    ];
  } else if (kind === 'parallel') {
    const { parallelCoordinates } = await import('data:text/javascript,' + encodeURIComponent(studies));
    const v = (f) => [...Array(n).keys()].map(f);
    const par = parallelCoordinates([
      { label: 'lr', values: v(i => (i * 7919) % 1000 / 1e4) },
      { label: 'depth', values: v(i => 2 + (i % 9)) },
      { label: 'objective', values: v(i => Math.cos(i) ** 2) }
    ]);
    data = par.data;
    Object.assign(layout, par.layout);
  } else {
    const v = (f) => [...Array(n).keys()].map(f);
    const objective = v(i => Math.cos(i) ** 2);
    data = [
      {
        type: 'parcoords',
        line: { color: objective, colorscale: 'Viridis', showscale: true },
        dimensions: [
          { label: 'lr', values: v(i => (i * 7919) % 1000 / 1e4) },
          { label: 'depth', values: v(i => 2 + (i % 9)) },
          { label: 'objective', values: objective }
        ]
      }
    ];
  }
  const t0 = performance.now();
  await window.Plotly.react(div, data, layout, { responsive: true });
  return performance.now() - t0;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu']
  });
  const cases = [
    ['objective', 1000],
    ['parallel', 20],
    ['parallel', 200],
    ['parallel', 1000],
    ['parallel', 10000],
    ['parcoords', 20],
    ['parcoords', 200]
  ];
  const rows = [];
  for (const c of cases) {
    const first = [];
    const second = [];
    for (let r = 0; r < reps; r++) {
      const page = await browser.newPage();
      await page.setContent('<!doctype html><body></body>');
      await page.addScriptTag({ path: PLOTLY });
      first.push(await page.evaluate(draw, [...c, STUDIES]));
      second.push(await page.evaluate(draw, [...c, STUDIES])); // a second plot in the same page
      await page.close();
    }
    const name = c[0] === 'parallel' ? 'parallel, SVG' : c[0] === 'parcoords' ? 'parcoords, WebGL' : c[0];
    rows.push({ plot: `${name} (${c[1]})`, first: median(first), second: median(second) });
  }
  await browser.close();
  console.log(`plot draw times in headless Chromium without GPU, median of ${reps} pages (ms)`);
  console.log('plot'.padEnd(24) + 'first in page'.padStart(15) + 'second in page'.padStart(16));
  for (const r of rows) {
    console.log(r.plot.padEnd(24) + r.first.toFixed(0).padStart(15) + r.second.toFixed(0).padStart(16));
  }
})();
