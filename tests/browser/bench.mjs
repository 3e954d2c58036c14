// Figures for docs/benchmarks.md (not a test): how heavy and how quick /app
// and /graphiql are, and how long an order placed through the API takes to
// show CONFIRMED in an open /app. Medians of ROUNDS (default 20) runs.
//   scripts/with-conveyor node tests/browser/bench.mjs

import { base, openBrowser, placeOrder, seedShop } from './browser.mjs';

const ROUNDS = Number(process.env.ROUNDS ?? 20);
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const browser = await openBrowser({ intercept: false });
try {
  const { page } = browser;
  const shop = await seedShop();

  /** Loads `path` in a fresh page ROUNDS times: ms until `ready` is visible, and bytes transferred. */
  async function load(path, ready) {
    const times = [];
    const sizes = [];
    for (let round = 0; round < ROUNDS; round += 1) {
      const fresh = await page.context().newPage();
      const client = await fresh.context().newCDPSession(fresh);
      await client.send('Network.enable');
      await client.send('Network.setCacheDisabled', { cacheDisabled: true });
      let bytes = 0;
      client.on('Network.loadingFinished', (event) => {
        bytes += event.encodedDataLength;
      });
      const started = performance.now();
      await fresh.goto(`${base}${path}`);
      await fresh.locator(ready).first().waitFor({ timeout: 20_000 });
      times.push(performance.now() - started);
      sizes.push(bytes);
      await fresh.close();
    }
    return { ms: median(times), kib: median(sizes) / 1024 };
  }

  // The floor: the same browser loading a 15-byte JSON answer.
  const floor = await load('/healthz', 'body');
  const app = await load('/app', '#connection[data-state="live"]');
  const graphiql = await load('/graphiql', '.graphiql-query-editor .CodeMirror');

  // An open /app watching: placeOrder (API) → its row says CONFIRMED.
  await page.goto(`${base}/app`);
  await page.locator('#connection[data-state="live"]').waitFor();
  const latencies = [];
  for (let round = 0; round < ROUNDS; round += 1) {
    const started = performance.now();
    const id = await placeOrder(shop.customerId, [{ sku: shop.lamp.sku, quantity: 1 }]);
    await page.locator(`tr[data-order-id="${id}"][data-status="CONFIRMED"]`).waitFor({ timeout: 20_000 });
    latencies.push(performance.now() - started);
  }
  if (browser.offsite.length) throw new Error(`requests left the machine: ${browser.offsite}`);
  const mode = process.env.CONVEYOR_MODE ?? '?';
  console.log(
    `${mode}: /healthz ${floor.ms.toFixed(0)} ms | /app ${app.ms.toFixed(0)} ms to live, ${app.kib.toFixed(0)} KiB | ` +
      `/graphiql ${graphiql.ms.toFixed(0)} ms to editor, ${graphiql.kib.toFixed(0)} KiB | ` +
      `placeOrder → CONFIRMED row ${median(latencies).toFixed(0)} ms (medians of ${ROUNDS})`,
  );
} finally {
  await browser.close();
}
