// /app in a real browser: orders placed through the form and through the
// API appear and reach their final status without a reload; the detail
// page follows one order's timeline live.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { accessibilityViolations, base, openBrowser, placeOrder, seedShop } from './browser.mjs';

const WAIT = { timeout: 20_000 };

test('orders placed by the form and by the API appear and settle live, offline', async (t) => {
  const shop = await seedShop();
  const browser = await openBrowser();
  t.after(() => browser.close());
  const { page } = browser;

  await page.goto(`${base}/app`);
  await page.locator('#connection[data-state="live"]').waitFor(WAIT);
  // Marks this document: if the page reloaded, the mark would be gone.
  await page.evaluate(() => {
    window.conveyorNotReloaded = true;
  });

  // Bad input gets a clear error and places nothing.
  await page.getByRole('button', { name: 'Place order' }).click();
  await page.getByRole('alert').filter({ hasText: 'Choose a customer' }).waitFor(WAIT);
  assert.equal(await page.locator('[data-placed-order]').count(), 0);

  // Through the form: two lamps.
  await page.getByLabel('Customer').selectOption(shop.customerId);
  await page.getByLabel(`Quantity of ${shop.lamp.name}`).fill('2');
  await page.getByRole('button', { name: 'Place order' }).click();
  const placed = page.locator('[data-placed-order]');
  await placed.waitFor(WAIT);
  const formOrder = await placed.getAttribute('data-placed-order');
  const formRow = page.locator(`tr[data-order-id="${formOrder}"]`);
  await page.locator(`tr[data-order-id="${formOrder}"][data-status="CONFIRMED"]`).waitFor(WAIT);
  const cells = await formRow.locator('td').allInnerTexts();
  assert.equal(cells[1], shop.customerName);
  assert.match(cells[2], /78\.00/, `total of 2 × $39.00 in ${cells}`);
  assert.equal(cells[3], 'CONFIRMED');
  // The catalog's stock follows: 20 on the shelf, 2 now reserved.
  await page.locator(`tr[data-sku="${shop.lamp.sku}"] td[data-available="18"]`).waitFor(WAIT);

  // Through the API: more mugs than there are, so the saga rejects it.
  const apiOrder = await placeOrder(shop.customerId, [{ sku: shop.mug.sku, quantity: 3 }]);
  await page.locator(`tr[data-order-id="${apiOrder}"][data-status="REJECTED"]`).waitFor(WAIT);
  assert.deepEqual(await accessibilityViolations(page), [], 'WCAG 2 A/AA violations on the list');
  await page.emulateMedia({ colorScheme: 'dark' });
  assert.deepEqual(await accessibilityViolations(page), [], 'WCAG 2 A/AA violations on the list, dark');
  await page.emulateMedia({ colorScheme: 'light' });
  // Newest first.
  const ids = await page.locator('tbody tr[data-order-id]').evaluateAll((rows) => rows.map((row) => row.dataset.orderId));
  assert.ok(ids.indexOf(apiOrder) < ids.indexOf(formOrder), `newest first: ${ids}`);

  // The detail page follows the order live: ship it, watch it ship.
  await formRow.getByRole('link').click();
  await page.locator('.timeline li[data-type="OrderConfirmed"]').waitFor(WAIT);
  await page.getByRole('button', { name: 'Ship' }).click();
  await page.locator('.facts[data-status="SHIPPED"]').waitFor(WAIT);
  await page.locator('.timeline li[data-type="OrderShipped"]').waitFor(WAIT);
  assert.deepEqual(await accessibilityViolations(page), [], 'WCAG 2 A/AA violations on the order page');

  assert.equal(await page.evaluate(() => window.conveyorNotReloaded), true, 'the page reloaded');
  assert.ok(browser.sockets.some((url) => url.endsWith('/graphql')), `a graphql-ws socket: ${browser.sockets}`);
  assert.deepEqual(browser.offsite, [], 'requests left the machine');
  assert.deepEqual(browser.errors, [], 'uncaught errors in the page');
});
