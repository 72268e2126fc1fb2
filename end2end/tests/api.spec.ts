// API keys from the Account page, used against the OpenAI-compatible API, then revoked.
import * as fs from 'fs';
import * as path from 'path';
import { expect, expectHydrated, failOnPageErrors, screenshot, signIn, test } from './helpers';

const shared = process.env.MEDPO_SHARED ?? path.resolve(__dirname, '../../../shared');

test('a clinician makes an API key, asks a model through /v1 with it, and revokes it', async ({ page, request }) => {
  const errors = failOnPageErrors(page);
  await signIn(page, 'rad', 'clinician-password');
  await page.getByTestId('signed-in-as').click();
  await expect(page).toHaveURL(/\/account$/);
  await expectHydrated(page);
  const form = page.getByTestId('create-api-key');
  await form.getByLabel('Label').fill('e2e notebook');
  await form.getByRole('button', { name: 'Create key' }).click();
  const secret = (await page.getByTestId('new-api-key').textContent())!.trim();
  expect(secret).toMatch(/^mpo_[0-9a-f]{40}$/);
  const row = page.getByTestId('api-keys').getByRole('row', { name: /e2e notebook/ });
  await expect(row).toContainText('active');
  await expect(row).toContainText(secret.slice(0, 12));
  await expect(row).not.toContainText(secret, { useInnerText: true });
  await screenshot(page, 'account-api-keys');

  const auth = { Authorization: `Bearer ${secret}` };
  const models = await request.get('/v1/models', { headers: auth });
  expect(models.status()).toBe(200);
  expect((await models.json()).data.map((m: { id: string }) => m.id)).toContain('llava-med-tiny');
  const png = fs.readFileSync(path.join(shared, 'fixtures/v1/scan.png')).toString('base64');
  const body = {
    model: 'llava-med-tiny',
    max_tokens: 8,
    stream: true,
    messages: [{ role: 'user', content: [
      { type: 'text', text: 'Is there a nodule in the left lung?' },
      { type: 'image_url', image_url: { url: `data:image/png;base64,${png}` } },
    ] }],
  };
  const streamed = await request.post('/v1/chat/completions', { headers: auth, data: body });
  expect(streamed.status()).toBe(200);
  expect(streamed.headers()['content-type']).toContain('text/event-stream');
  const text = await streamed.text();
  expect(text.trim().endsWith('data: [DONE]')).toBe(true);
  expect(text).toContain('"object":"chat.completion.chunk"');

  await page.reload();
  await expect(page.getByTestId('api-keys').getByRole('row', { name: /e2e notebook/ })).not.toContainText('never');
  await page.getByTestId('api-keys').getByRole('row', { name: /e2e notebook/ }).getByRole('button', { name: 'Revoke' }).click();
  await expect(page.getByTestId('api-keys').getByRole('row', { name: /e2e notebook/ })).toContainText('revoked');
  const refused = await request.get('/v1/models', { headers: auth });
  expect(refused.status()).toBe(401);
  expect((await refused.json()).error.type).toBe('authentication_error');
  expect(errors).toEqual([]);
});
