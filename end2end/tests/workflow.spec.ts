// The loop the product exists for, walked in the browser on the fixture models: a clinician's
// blind vote (plus seeded pairs) → a researcher freezes a snapshot and downloads it (the JSONL
// parses and holds the pairs) → a short LoRA job launched from the form → its curve grows live
// over server-sent events → it finishes → the new model is in Compare and in the arena's draw
// pool, and after the evaluation the job queued, on the benchmark board beside its SFT base.
// Runs after workbench.spec.ts (files in name order, one worker).
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { expect, expectHydrated, failOnPageErrors, screenshot, signIn, test } from './helpers';

const shared = process.env.MEDPO_SHARED ?? path.resolve(__dirname, '../../../shared');
const dataDir = process.env.MEDPO_E2E_DATA_DIR!;
const png = path.join(shared, 'data/images/med_img_1.png');
const db = path.join(dataDir, 'medpo.db');
// Enough optimizer steps that the job outlives several event polls (500 ms each).
const STEPS = 300;

function sql(query: string, readonly = true): string {
  return execFileSync('sqlite3', [...(readonly ? ['-readonly'] : []), db, query], { encoding: 'utf8' }).trim();
}

test.describe.configure({ mode: 'serial' });

test('votes → snapshot → a training job with a live curve → the new model in Compare, the arena and the leaderboard', async ({ page, request }) => {
  test.setTimeout(300_000);
  const errors = failOnPageErrors(page);

  // 1. A clinician's blind vote makes a pair; three seeded pairs on the same scan join it.
  await signIn(page, 'rad', 'clinician-password');
  await page.goto('/arena');
  await expectHydrated(page);
  await page.getByTestId('scan-input').setInputFiles(png);
  await expect(page.getByTestId('scan-img')).toBeVisible();
  await page.getByTestId('question').fill('Is there a nodule in the left lung?');
  await page.getByTestId('ask').click();
  await expect(page.getByTestId('vote-panel')).toBeVisible();
  await page.locator('body').press('1');
  await page.getByTestId('submit-vote').click();
  await expect(page.getByTestId('vote-receipt')).toContainText('stored');
  const last = sql('SELECT MAX(id) FROM preference_pairs WHERE source = \'vote\'');
  sql(
    `INSERT INTO preference_pairs (vote_id, scan_id, question, chosen, rejected, tags_json, source, created_at) ` +
      `SELECT NULL, scan_id, question || ' (seeded ' || n || ')', chosen, rejected, '[]', 'import', created_at ` +
      `FROM preference_pairs, (SELECT 1 AS n UNION SELECT 2 UNION SELECT 3) WHERE id = ${last}`,
    false,
  );
  const pairs = Number(sql('SELECT COUNT(*) FROM preference_pairs'));
  expect(pairs).toBeGreaterThanOrEqual(4);

  // 2. A researcher freezes them into a snapshot and downloads it.
  await page.context().clearCookies();
  expect((await request.get('/api/snapshots/1/pairs.jsonl')).status()).toBe(401);
  await signIn(page);
  await page.goto('/datasets');
  await expectHydrated(page);
  const create = page.getByTestId('create-dataset');
  await create.locator('input[name=name]').fill('loop-votes');
  await create.getByRole('button', { name: 'Create' }).click();
  const row = page.getByTestId('datasets-table').locator('tr', { hasText: 'loop-votes' });
  await row.getByRole('button', { name: 'Snapshot now' }).click();
  await expect(row.getByTestId('snapshot')).toContainText(`v1 · ${pairs} pairs`);
  await screenshot(page, 'loop-datasets');
  const [download] = await Promise.all([page.waitForEvent('download'), row.getByTestId('download-jsonl').click()]);
  expect(download.suggestedFilename()).toBe('loop-votes-v1.jsonl');
  const lines = fs.readFileSync((await download.path())!, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  expect(lines.length).toBe(pairs);
  for (const l of lines) {
    expect(l.prompt).toContain('<image>');
    expect(l.chosen.length).toBeGreaterThan(0);
    expect(l.rejected.length).toBeGreaterThan(0);
    expect(l.images[0]).toMatch(/^scans\/([0-9a-f]{2}\/)?[0-9a-f]{64}\.png$/);
  }

  // The snapshot browser counts and filters the pairs by rater (and tag, severity, modality).
  await row.getByTestId('browse-snapshot').first().click();
  await expectHydrated(page);
  await expect(page.getByTestId('snapshot-counts')).toContainText('rad');
  await expect(page.getByTestId('shown-count')).toHaveText(`${pairs} of ${pairs} pairs`);
  await page.getByTestId('snapshot-filters').locator('select').nth(2).selectOption('rad');
  const byRad = sql("SELECT COUNT(*) FROM preference_pairs p JOIN votes v ON v.id = p.vote_id JOIN users u ON u.id = v.rater_id WHERE u.username = 'rad'");
  await expect(page.getByTestId('shown-count')).toHaveText(`${byRad} of ${pairs} pairs`);
  await screenshot(page, 'loop-snapshot');
  // The zip (seed JSON + images) uploads back as a new version; the JSONL alone is refused
  // because its images are not in it.
  await page.goto('/datasets');
  await expectHydrated(page);
  const [zipDownload] = await Promise.all([page.waitForEvent('download'), row.getByRole('link', { name: 'LLaVA JSON + images (zip)' }).click()]);
  const upload = row.getByTestId('upload-pairs');
  await upload.locator('input[type=file]').setInputFiles({ name: 'loop-votes-v1.jsonl', mimeType: 'application/x-ndjson', buffer: Buffer.from(lines.map((l) => JSON.stringify(l)).join('\n')) });
  await upload.getByRole('button', { name: 'Upload as a version' }).click();
  await expect(page.getByRole('alert')).toContainText('.zip');
  await upload.locator('input[type=file]').setInputFiles({ name: 'loop-votes-v1.zip', mimeType: 'application/zip', buffer: fs.readFileSync((await zipDownload.path())!) });
  await upload.getByRole('button', { name: 'Upload as a version' }).click();
  await expect(page.getByTestId('upload-result')).toContainText(`Uploaded as v2: ${pairs} pairs.`);
  await expect(row.getByTestId('snapshot')).toHaveCount(2);

  // 3. A short LoRA DPO+NLL job, launched from the form, evaluated when done.
  await page.goto('/training');
  await expectHydrated(page);
  const form = page.getByTestId('launch-form');
  await form.locator('input[name=name]').fill('tiny-dpo-loop');
  await form.locator('select[name=base_model_id]').selectOption({ label: 'llava-med-tiny (sft)' });
  await form.locator('select[name=snapshot_id]').selectOption({ label: `loop-votes v1 · ${pairs} pairs` });
  await form.locator('select[name=objective]').selectOption('dpo_nll');
  await expect(page.getByTestId('objective-help')).toContainText('NLL');
  await form.locator('input[name=learning_rate]').fill('1e-3');
  await form.locator('input[name=max_steps]').fill(String(STEPS));
  await form.locator('input[name=batch_size]').fill('2');
  await form.locator('input[name=grad_accum]').fill('1');
  await form.locator('input[name=lora_r]').fill('4');
  await form.locator('input[name=save_steps]').fill("100");
  await form.locator('select[name=eval_benchmark]').selectOption('demo');
  // A bad value is refused with its name, and nothing is queued.
  await form.locator('input[name=beta]').fill('abc');
  await form.getByRole('button', { name: 'Queue the job' }).click();
  await expect(page.getByRole('alert')).toContainText('beta');
  expect(sql('SELECT COUNT(*) FROM training_jobs')).toBe('0');
  await form.locator('input[name=beta]').fill('0.1');
  await form.getByRole('button', { name: 'Queue the job' }).click();
  await page.waitForURL(/\/training\/\d+$/);
  await expectHydrated(page);

  // 4. The curve grows while the job runs (server-sent events), then the job succeeds.
  const loss = page.getByTestId('chart-loss');
  const seen = new Set<number>();
  await expect
    .poll(
      async () => {
        seen.add(Number(await loss.getAttribute('data-points')));
        return (await page.getByTestId('job-status').textContent())?.trim();
      },
      { timeout: 240_000, intervals: [100] },
    )
    .toBe('succeeded');
  const partial = [...seen].filter((n) => n > 0 && n < STEPS);
  expect(partial.length, `chart sizes seen: ${[...seen].sort((a, b) => a - b).join(', ')}`).toBeGreaterThan(0);
  await expect(loss).toHaveAttribute('data-points', String(STEPS));
  await expect(page.getByTestId('chart-rewards/margins')).toHaveAttribute('data-points', String(STEPS));
  await expect(page.getByTestId('job-result')).toBeVisible();
  // The log grew live too (it was empty or short when the page opened).
  await expect(page.getByTestId('job-log')).toContainText(`step ${STEPS}/${STEPS}`);
  await expect(page.getByTestId('job-log')).toContainText('joins the arena');
  await page.reload();
  await expectHydrated(page);
  await expect(page.getByTestId('job-log')).toContainText(`step ${STEPS}/${STEPS}`);
  await screenshot(page, 'loop-training-job');

  // 5. The new model is in Compare, and in the arena's draw pool.
  await page.goto('/compare');
  await expectHydrated(page);
  await expect(page.locator('[data-testid=model-choice][value="tiny-dpo-loop"]')).toHaveCount(1);
  const enabled = Number(sql('SELECT COUNT(*) FROM models WHERE enabled'));
  expect(sql("SELECT parent_id IS NOT NULL FROM models WHERE name = 'tiny-dpo-loop'")).toBe('1');
  await page.goto('/arena');
  await expectHydrated(page);
  await page.getByTestId('scan-input').setInputFiles(png);
  await expect(page.getByTestId('scan-img')).toBeVisible();
  await page.getByTestId('question').fill('Is the heart enlarged?');
  await page.getByTestId('ask').click();
  await expect(page.getByTestId('vote-panel')).toBeVisible();
  expect(Number(sql('SELECT candidates FROM arena_samples ORDER BY comparison_id DESC LIMIT 1'))).toBe((enabled * (enabled - 1)) / 2);

  // 6. The evaluation the job queued (the new model and its SFT base) reaches the board.
  await page.goto('/leaderboard');
  await expectHydrated(page);
  const board = page.getByTestId('board-demo');
  await expect(board).toContainText('tiny-dpo-loop', { timeout: 120_000 });
  await expect(board).toContainText('llava-med-tiny');
  await expect(board.getByTestId('interval-bars').first()).toBeVisible();
  // The arena board: ratings and the win-rate matrix of the votes, filterable by rater group.
  const arena = page.getByTestId('arena-board');
  await expect(arena.getByTestId('win-matrix')).toBeVisible();
  await arena.locator('select').nth(1).selectOption('admin');
  await expect(arena).toContainText('No vote matches these filters');
  await arena.locator('select').nth(1).selectOption('clinician');
  await expect(arena.getByTestId('win-matrix')).toBeVisible();
  await screenshot(page, 'loop-leaderboard');

  // Every launch and export is recorded with its user.
  const audit = sql("SELECT action || ':' || username FROM audit_log ORDER BY id");
  expect(audit).toContain('export:admin');
  expect(audit).toContain('launch:admin');
  expect(audit).toContain('upload:admin');
  expect(errors).toEqual([]);
});
