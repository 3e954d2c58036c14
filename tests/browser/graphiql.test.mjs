// /graphiql in a real browser, offline: a query and a subscription run.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { base, openBrowser, placeOrder, seedShop } from './browser.mjs';

const WAIT = { timeout: 20_000 };

/**
 * Replaces the query editor's text (GraphiQL 3 edits with CodeMirror 5) with
 * the operation `name`, then waits until GraphiQL has parsed it: it does so
 * after a debounce, and running before then runs the previous document. The
 * active tab's title turns into the operation's name once parsed (titles
 * show when there are two tabs, so the test opens a second one first).
 */
async function setOperation(page, name, query) {
  await page.evaluate((text) => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(text), query);
  await page.locator('.graphiql-tab-active').filter({ hasText: name }).waitFor(WAIT);
}

/** Waits until the response pane's text satisfies every pattern. */
const waitForResponse = (page, ...patterns) =>
  page.waitForFunction(
    (sources) => {
      const text = document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue() ?? '';
      return sources.every((source) => new RegExp(source).test(text));
    },
    patterns.map((pattern) => pattern.source),
    WAIT,
  );

test('GraphiQL runs a query and a subscription, offline', async (t) => {
  const shop = await seedShop();
  const browser = await openBrowser();
  t.after(() => browser.close());
  const { page } = browser;

  await page.goto(`${base}/graphiql`);
  await page.locator('.graphiql-query-editor .CodeMirror').waitFor(WAIT);
  await page.locator('.graphiql-tab-add').click();

  await setOperation(page, 'LampStock', `query LampStock { product(sku: "${shop.lamp.sku}") { sku name available } }`);
  await page.locator('.graphiql-execute-button').click();
  await waitForResponse(page, new RegExp(`"sku": "${shop.lamp.sku}"`), /"available": 20/);

  const order = await placeOrder(shop.customerId, [{ sku: shop.lamp.sku, quantity: 1 }]);
  await setOperation(page, 'FollowOrder', `subscription FollowOrder { orderUpdated(id: "${order}") { id status } }`);
  await page.locator('.graphiql-execute-button').click();
  await waitForResponse(page, new RegExp(`"id": "${order}"`), /"status": "CONFIRMED"/);
  assert.ok(browser.sockets.some((url) => url.endsWith('/graphql')), `subscribed over a WebSocket: ${browser.sockets}`);

  assert.deepEqual(browser.offsite, [], 'requests left the machine');
  assert.deepEqual(browser.errors, [], 'uncaught errors in the page');
});
