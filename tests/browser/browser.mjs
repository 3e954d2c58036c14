// Debian's Chromium (never a downloaded browser), driven by playwright-core,
// with every request that would leave the machine recorded and refused.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

/** The Conveyor under test, e.g. http://127.0.0.1:8080 (scripts/browser-test sets it). */
export const base = process.env.CONVEYOR_URL;
if (!base) throw new Error('CONVEYOR_URL is not set: run scripts/browser-test');

const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * A fresh browser with an empty profile. `offsite` lists every request or
 * WebSocket that went anywhere but loopback; `errors` every
 * uncaught page error. `close()` removes the profile. Requests are routed
 * through the test, which refuses offsite ones; `{ intercept: false }` only
 * watches them (benchmarks: routing adds a round trip to node per request).
 */
export async function openBrowser({ intercept = true } = {}) {
  const profile = await mkdtemp(join(tmpdir(), 'conveyor-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 800 },
  });
  // The machine is loopback: anything else would leave it.
  const isLocal = (url) => ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
  const offsite = [];
  const errors = [];
  const sockets = [];
  if (intercept) {
    await context.route('**/*', (route) => {
      const url = new URL(route.request().url());
      if (isLocal(url)) return route.continue();
      offsite.push(url.href);
      return route.abort('blockedbyclient');
    });
  } else {
    context.on('request', (request) => {
      const url = new URL(request.url());
      if (url.protocol.startsWith('http') && !isLocal(url)) offsite.push(url.href);
    });
  }
  const watch = (page) => {
    page.on('websocket', (socket) => {
      sockets.push(socket.url());
      if (!isLocal(new URL(socket.url()))) offsite.push(socket.url());
    });
    page.on('pageerror', (error) => errors.push(error.message));
  };
  context.pages().forEach(watch);
  context.on('page', watch);
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    page,
    offsite,
    errors,
    sockets,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** A GraphQL request from the test itself (not the page): "the API". */
export async function graphql(query, variables = {}, at = base) {
  const response = await fetch(`${at}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`${query}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** A customer and two products of this test's own (unique SKUs), projected before it returns. */
export async function seedShop(at = base) {
  const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  const { registerCustomer } = await graphql(
    `mutation($name: String!, $email: String!) { registerCustomer(input: { name: $name, email: $email, creditLimitCents: 1000000, consistency: AWAIT_VIEW }) { customerId } }`,
    { name: `Browser ${tag}`, email: `browser-${tag}@example.com` },
    at,
  );
  const add = `mutation($input: AddProductInput!) { addProduct(input: $input) { status } }`;
  const lamp = { sku: `lamp-${tag}`, name: `Lamp ${tag}`, priceCents: 3900, stock: 20 };
  const mug = { sku: `mug-${tag}`, name: `Mug ${tag}`, priceCents: 1250, stock: 1 };
  for (const product of [lamp, mug]) {
    await graphql(
      add,
      { input: { sku: product.sku, name: product.name, priceCents: product.priceCents, initialStock: product.stock, consistency: 'AWAIT_VIEW' } },
      at,
    );
  }
  return { customerId: registerCustomer.customerId, customerName: `Browser ${tag}`, lamp, mug };
}

/** Places an order through the API; returns its id. */
export async function placeOrder(customerId, items, at = base) {
  const { placeOrder } = await graphql(
    'mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId error { code } } }',
    { input: { customerId, items } },
    at,
  );
  if (placeOrder.status !== 'ACCEPTED') throw new Error(`placeOrder: ${JSON.stringify(placeOrder)}`);
  return placeOrder.orderId;
}

/**
 * WCAG 2 A and AA violations on the page as it is now, by axe-core (loaded
 * from node_modules into the page, not fetched): `[]` when there are none.
 */
export async function accessibilityViolations(page) {
  await page.addScriptTag({ path: fileURLToPath(import.meta.resolve('axe-core/axe.min.js')) });
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa'] });
    return result.violations.map((violation) => ({
      rule: violation.id,
      impact: violation.impact,
      targets: violation.nodes.map((node) => node.target.join(' ')),
    }));
  });
  return violations;
}
