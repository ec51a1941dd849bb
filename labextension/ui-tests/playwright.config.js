/**
 * Galata/Playwright configuration of the UI tests: Debian's Chromium
 * (/usr/bin/chromium, never a downloaded browser), one worker, a Jupyter server
 * started from the project's venv with jupyter_server_test_config.py.
 */
const path = require('path');
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

const port = process.env.IDDS_UI_PORT || '8788';
const baseUrl = process.env.IDDS_UI_BASE_URL || '/';
const venvBin = process.env.IDDS_VENV_BIN || path.resolve(__dirname, '../../.venv/bin');
const jupyter = path.join(venvBin, 'jupyter');
const token = process.env.IDDS_UI_TOKEN || 'idds-ui-test-token';

module.exports = {
  ...baseConfig,
  testDir: './tests',
  outputDir: './test-results/artifacts',
  timeout: 180 * 1000,
  expect: { timeout: 30 * 1000 },
  workers: 1,
  retries: 0,
  reporter: [['list'], ['json', { outputFile: 'test-results/results.json' }]],
  use: {
    ...baseConfig.use,
    baseURL: `http://127.0.0.1:${port}${baseUrl.replace(/\/$/, '')}`,
    browserName: 'chromium',
    video: 'off',
    trace: 'off',
    screenshot: 'only-on-failure',
    viewport: { width: 1440, height: 900 },
    extraHTTPHeaders: { Authorization: `token ${token}` },
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync'
      ]
    }
  },
  webServer: {
    command: `"${jupyter}" lab --config jupyter_server_test_config.py`,
    cwd: __dirname,
    url: `http://127.0.0.1:${port}${baseUrl}api/status?token=${token}`,
    timeout: 120 * 1000,
    reuseExistingServer: false,
    stdout: 'pipe',
    stderr: 'pipe'
  }
};
