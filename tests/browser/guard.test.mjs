// The offline guard itself: a request to another host is recorded (so the
// other tests would fail on it) and refused.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { base, openBrowser } from './browser.mjs';

test('a request that would leave the machine is caught', async (t) => {
  const browser = await openBrowser();
  t.after(() => browser.close());
  await browser.page.goto(`${base}/healthz`);
  const outcome = await browser.page.evaluate(() =>
    fetch('https://example.com/conveyor-guard-check').then(
      () => 'answered',
      () => 'refused',
    ),
  );
  assert.equal(outcome, 'refused');
  assert.deepEqual(browser.offsite, ['https://example.com/conveyor-guard-check']);
});
