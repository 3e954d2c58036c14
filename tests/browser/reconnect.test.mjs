// /app across a gateway restart: the page says it is offline, reconnects by
// itself when the gateway is back, and shows orders placed since, without a
// reload. The test runs its own embedded Conveyor (it has to stop and start
// it), so it runs once, in the embedded pass of scripts/browser-test.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { openBrowser, placeOrder, seedShop } from './browser.mjs';

const WAIT = { timeout: 20_000 };
const binary = process.env.CONVEYOR_BIN ?? fileURLToPath(new URL('../../target/debug/conveyor', import.meta.url));

async function freePort() {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/** Starts the binary on `dataDir` and `port`; resolves once /readyz says ready (at most 20 s). */
async function start(dataDir, port) {
  const child = spawn(binary, ['--data-dir', dataDir, '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (chunk) => {
    log += chunk;
  });
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`conveyor exited with ${child.exitCode}: ${log}`);
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((response) => response.ok, () => false);
    if (ready) return child;
    if (Date.now() > deadline) throw new Error(`conveyor never became ready: ${log}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function stop(child) {
  if (child.exitCode !== null) return;
  child.kill('SIGTERM');
  await once(child, 'exit');
}

test('the page rides out a gateway restart', { skip: process.env.CONVEYOR_MODE === 'server' && 'runs in the embedded pass' }, async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'conveyor-reconnect-'));
  const port = await freePort();
  const at = `http://127.0.0.1:${port}`;
  let conveyor = await start(dataDir, port);
  t.after(async () => {
    await stop(conveyor);
    await rm(dataDir, { recursive: true, force: true });
  });
  const shop = await seedShop(at);
  const browser = await openBrowser();
  t.after(() => browser.close());
  const { page } = browser;

  await page.goto(`${at}/app`);
  await page.locator('#connection[data-state="live"]').waitFor(WAIT);
  await page.evaluate(() => {
    window.conveyorNotReloaded = true;
  });
  const before = await placeOrder(shop.customerId, [{ sku: shop.lamp.sku, quantity: 1 }], at);
  await page.locator(`tr[data-order-id="${before}"][data-status="CONFIRMED"]`).waitFor(WAIT);

  await stop(conveyor);
  await page.locator('#connection:not([data-state="live"])').waitFor(WAIT);

  conveyor = await start(dataDir, port);
  // Placed before or after the page is back: the feed or the re-read after reconnecting shows it.
  const after = await placeOrder(shop.customerId, [{ sku: shop.lamp.sku, quantity: 2 }], at);
  await page.locator('#connection[data-state="live"]').waitFor(WAIT);
  await page.locator(`tr[data-order-id="${after}"][data-status="CONFIRMED"]`).waitFor(WAIT);
  assert.equal(await page.locator(`tr[data-order-id="${before}"]`).count(), 1);
  assert.equal(await page.evaluate(() => window.conveyorNotReloaded), true, 'the page reloaded');
  assert.deepEqual(browser.offsite, [], 'requests left the machine');
});
