// Every page renders on the server, hydrates in the browser without errors, and shows data
// from the database; the 404 page; a server-function round trip that writes to the database.
import { expect, expectHydrated, failOnPageErrors, screenshot, signIn, test } from './helpers';

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
  await signIn(page);
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

test('anonymous and under-privileged writes are refused with a message', async ({ page }) => {
  await page.goto('/datasets');
  await expectHydrated(page);
  const form = page.getByTestId('create-dataset');
  await form.getByLabel('Name').fill('anonymous-attempt');
  await form.getByRole('button', { name: 'Create' }).click();
  await expect(page.getByRole('alert')).toContainText('sign in first');
  await signIn(page, 'viewer', 'viewer-password');
  await page.goto('/datasets');
  await expectHydrated(page);
  await form.getByLabel('Name').fill('viewer-attempt');
  await form.getByRole('button', { name: 'Create' }).click();
  await expect(page.getByRole('alert')).toContainText('a viewer account cannot do this');
  await expect(page.getByTestId('datasets-table').getByText('viewer-attempt')).toHaveCount(0);
});

test('sign-in errors, rate limit and sign-out', async ({ page }) => {
  await page.goto('/login');
  await expectHydrated(page);
  const form = page.getByTestId('login-form');
  await form.getByLabel('User name').fill('nobody');
  await form.getByLabel('Password').fill('wrong');
  await form.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('alert')).toContainText('wrong user name or password');
  for (let i = 0; i < 5; i++) {
    // One attempt at a time: the page shows only the newest answer.
    await Promise.all([
      page.waitForResponse((r) => r.url().includes('/api/login') && r.request().method() === 'POST'),
      form.getByRole('button', { name: 'Sign in' }).click(),
    ]);
  }
  await expect(page.getByRole('alert')).toContainText('too many failed sign-ins');
  await signIn(page);
  await screenshot(page, 'signed-in');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page.getByRole('link', { name: 'Sign in' })).toBeVisible();
  const cookies = await page.context().cookies();
  expect(cookies.filter((c) => c.name === 'medpo_session' && c.value !== '')).toEqual([]);
});

test('the session cookie is HttpOnly and SameSite=Strict; cross-site posts are refused', async ({ page, request }) => {
  await signIn(page);
  const cookie = (await page.context().cookies()).find((c) => c.name === 'medpo_session');
  expect(cookie?.httpOnly).toBe(true);
  expect(cookie?.sameSite).toBe('Strict');
  // The real (hashed) server-function path, read from the sign-out form.
  const logoutPath = await page.locator('form:has(button:text("Sign out"))').getAttribute('action');
  expect(logoutPath).toMatch(/^\/api\/logout/);
  const evil = await request.post(logoutPath!, { headers: { Origin: 'http://evil.example' }, failOnStatusCode: false });
  expect(evil.status()).toBe(403);
  const crossSite = await request.post(logoutPath!, { headers: { 'Sec-Fetch-Site': 'cross-site' }, failOnStatusCode: false });
  expect(crossSite.status()).toBe(403);
  // The session survived both forged requests.
  await page.reload();
  await expect(page.getByTestId('signed-in-as')).toContainText('admin');
});
