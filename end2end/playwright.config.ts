// Playwright drives Debian's Chromium (never a downloaded browser) against the `medpo`
// server that scripts/test.sh built. The server gets a fresh data folder and the fixture
// models from ../../shared/fixtures/v1.
import { defineConfig } from '@playwright/test';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const port = Number(process.env.MEDPO_E2E_PORT ?? 3210);
const binary = process.env.MEDPO_E2E_BINARY ?? path.resolve(__dirname, '../target/release/medpo');
const shared = process.env.MEDPO_SHARED ?? path.resolve(__dirname, '../../shared');
// scripts/test.sh passes a fresh folder; a bare `npx playwright test` makes one (once: the
// variable is inherited by the workers that load this file again).
const dataDir = process.env.MEDPO_E2E_DATA_DIR ?? fs.mkdtempSync(path.join(os.tmpdir(), 'medpo-e2e-'));
process.env.MEDPO_E2E_DATA_DIR = dataDir;
export const ADMIN_PASSWORD = 'admin-password-e2e';
// A small benchmark on the fixture scan, so evaluation runs (queued from the browser or by a
// finished training job) have something to run on: questions, their images folder.
const benchFile = path.join(dataDir, 'demo-vqa.jsonl');
fs.writeFileSync(
  benchFile,
  [
    { question_id: 1, image: 'scan.png', text: 'Is there a nodule?', gpt4_answer: 'yes', answer_type: 'CLOSED' },
    { question_id: 2, image: 'scan.png', text: 'Is the image normal?', gpt4_answer: 'no', answer_type: 'CLOSED' },
    { question_id: 3, image: 'scan.png', text: 'Which organ is shown?', gpt4_answer: 'lung', answer_type: 'OPEN' },
  ].map((o) => JSON.stringify(o)).join('\n') + '\n',
);
const configFile = path.join(dataDir, 'medpo-e2e.toml');
fs.writeFileSync(configFile, `[[benchmark]]\nname = "demo"\nquestions = "${benchFile}"\nimages = "${shared}/fixtures/v1"\n`);

export default defineConfig({
  testDir: './tests',
  outputDir: './test-results',
  timeout: 60_000,
  expect: { timeout: 15_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list'], ['html', { open: 'never', outputFolder: 'playwright-report' }]],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
  webServer: {
    // Two accounts first (the CLI is how the first admin is made), then the server.
    command: [
      `${binary} user add admin --admin --data-dir ${dataDir}`,
      `MEDPO_PASSWORD=viewer-password ${binary} user add viewer --role viewer --data-dir ${dataDir}`,
      `MEDPO_PASSWORD=clinician-password ${binary} user add rad --role clinician --data-dir ${dataDir}`,
      `exec ${binary} serve --config ${configFile} --bind 127.0.0.1:${port} --data-dir ${dataDir} --models-dir ${shared}/fixtures/v1 --site-root ${path.resolve(__dirname, '../target/site')}`,
    ].join(' && '),
    url: `http://127.0.0.1:${port}/readyz`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: 'pipe',
    stderr: 'pipe',
    // A 2 MB upload limit so the oversize test sends 3 MB, not 51.
    env: { MEDPO_LOG: 'info,tower_http=warn', MEDPO_PASSWORD: ADMIN_PASSWORD, MEDPO_MAX_UPLOAD_MB: '2' },
  },
});
