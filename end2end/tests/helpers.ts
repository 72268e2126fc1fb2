import { expect, Page, test } from '@playwright/test';
import * as fs from 'fs';
import * as path from 'path';

/** Fails the test on any uncaught page error (a broken hydration shows up here). */
export function failOnPageErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    // A 4xx answer to a bad form is expected (the page shows the message); a 5xx is not.
    if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) errors.push(`console: ${m.text()}`);
  });
  return errors;
}

/** Waits until the wasm app has taken over the page. */
export async function expectHydrated(page: Page) {
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
}

/** Saves a full-page screenshot under end2end/artifacts/ (kept by CI, not committed). */
export async function screenshot(page: Page, name: string) {
  const dir = path.resolve(__dirname, '../artifacts');
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, `${name}.png`), fullPage: true });
}

export { expect, test };

/** Signs in through the login page and waits for the account menu. */
export async function signIn(page: Page, username = 'admin', password = 'admin-password-e2e') {
  await page.goto('/login');
  await expectHydrated(page);
  const form = page.getByTestId('login-form');
  await form.getByLabel('User name').fill(username);
  await form.getByLabel('Password').fill(password);
  await form.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByTestId('signed-in-as')).toContainText(username);
}
