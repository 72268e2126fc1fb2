// Every page renders on the server, hydrates in the browser without errors, and shows data
// from the database; the 404 page; a server-function round trip that writes to the database.
import { expect, expectHydrated, failOnPageErrors, screenshot, test } from './helpers';

const pages = [
  { path: '/', title: 'Overview', heading: 'Compare, rate and preference-tune medical VLMs' },
  { path: '/compare', title: 'Compare', heading: 'Compare' },
  { path: '/arena', title: 'Arena', heading: 'Arena' },
  { path: '/datasets', title: 'Datasets', heading: 'Datasets' },
  { path: '/training', title: 'Training', heading: 'Training' },
  { path: '/leaderboard', title: 'Leaderboard', heading: 'Leaderboard' },
  { path: '/models', title: 'Models', heading: 'Models' },
];

for (const p of pages) {
  test(`${p.path} renders, hydrates and has no page errors`, async ({ page }) => {
    const errors = failOnPageErrors(page);
    const res = await page.goto(p.path);
    expect(res?.status()).toBe(200);
    await expect(page).toHaveTitle(`${p.title} — MedPO Arena`);
    await expect(page.getByRole('heading', { level: 1, name: p.heading })).toBeVisible();
    await expectHydrated(page);
    await page.waitForLoadState('networkidle');
    await screenshot(page, `page${p.path === '/' ? '-home' : p.path.replace('/', '-')}`);
    expect(errors).toEqual([]);
  });
}

test('the models folder is registered at start-up and listed from the database', async ({ page }) => {
  await page.goto('/models');
  const table = page.getByTestId('models-table');
  for (const name of ['llava-med-tiny', 'huatuogpt-vision-tiny', 'llava-hf-tiny']) {
    await expect(table.getByText(name, { exact: true })).toBeVisible();
  }
  await expect(table.getByText('llava_qwen2')).toBeVisible();
  // Their counts reach the overview.
  await page.goto('/');
  await expect(page.getByTestId('count-models')).toContainText('3');
});

test('pages explain their empty states', async ({ page }) => {
  await page.goto('/training');
  await expect(page.getByText('No training job yet')).toBeVisible();
  await page.goto('/leaderboard');
  await expect(page.getByText('No evaluation run yet')).toBeVisible();
  await page.goto('/arena');
  await expect(page.getByText('No votes yet')).toBeVisible();
});

test('client-side navigation after hydration', async ({ page }) => {
  const errors = failOnPageErrors(page);
  await page.goto('/');
  await expectHydrated(page);
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Leaderboard' }).click();
  await expect(page).toHaveURL(/\/leaderboard$/);
  await expect(page.getByRole('heading', { level: 1, name: 'Leaderboard' })).toBeVisible();
  await expect(page.getByRole('link', { name: 'Leaderboard' })).toHaveAttribute('aria-current', 'page');
  expect(errors).toEqual([]);
});

test('a server function writes to the database and the page reads it back', async ({ page }) => {
  const errors = failOnPageErrors(page);
  await page.goto('/datasets');
  await expectHydrated(page);
  const name = `e2e-votes-${Date.now()}`;
  const form = page.getByTestId('create-dataset');
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('Description').fill('made by the browser test');
  await form.getByRole('button', { name: 'Create' }).click();
  const row = page.getByTestId('datasets-table').getByRole('row', { name: new RegExp(name) });
  await expect(row).toBeVisible();
  await expect(row).toContainText('made by the browser test');
  // The same name again: the database refuses and the page says why.
  await form.getByLabel('Name').fill(name);
  await form.getByRole('button', { name: 'Create' }).click();
  await expect(page.getByRole('alert')).toContainText(`dataset \`${name}\` already exists`);
  // Snapshotting with no pairs yet explains what to do.
  await row.getByRole('button', { name: 'Snapshot now' }).click();
  await expect(page.getByRole('alert').filter({ hasText: 'no preference pairs yet' })).toBeVisible();
  // A full reload reads the row back from the database (server-rendered).
  await page.reload();
  await expect(page.getByTestId('datasets-table').getByRole('row', { name: new RegExp(name) })).toBeVisible();
  await screenshot(page, 'datasets-after-create');
  expect(errors).toEqual([]);
});

test('unknown URLs get the 404 page with a 404 status', async ({ page }) => {
  const res = await page.goto('/no/such/page');
  expect(res?.status()).toBe(404);
  await expect(page.getByRole('heading', { name: '404 — page not found' })).toBeVisible();
  await screenshot(page, 'page-404');
});

test('health, readiness and cache headers', async ({ request, page }) => {
  expect((await request.get('/healthz')).status()).toBe(200);
  const ready = await request.get('/readyz');
  expect(ready.status()).toBe(200);
  expect(await ready.text()).toContain('ready');
  await page.goto('/');
  const wasm = await page.locator('link[rel="preload"][as="fetch"]').getAttribute('href');
  expect(wasm).toMatch(/^\/pkg\/medpo\.[0-9a-f]{16}\.wasm$/);
  const res = await request.get(wasm!);
  expect(res.status()).toBe(200);
  expect(res.headers()['cache-control']).toContain('immutable');
  const css = await request.get('/pkg/', { failOnStatusCode: false });
  expect([403, 404]).toContain(css.status());
});
