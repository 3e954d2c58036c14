// Renders the screenshots in docs/ (not a test): a small shop, a few orders,
// then /app, one order's page and /graphiql. Run against an empty embedded
// Conveyor:  env -u NATS_URL scripts/with-conveyor node tests/browser/screenshots.mjs

import { base, graphql, openBrowser, placeOrder } from './browser.mjs';

const register = async (name, email, creditLimitCents) =>
  (
    await graphql(
      'mutation($input: RegisterCustomerInput!) { registerCustomer(input: $input) { customerId } }',
      { input: { name, email, creditLimitCents, consistency: 'AWAIT_VIEW' } },
    )
  ).registerCustomer.customerId;
const add = (sku, name, priceCents, initialStock) =>
  graphql('mutation($input: AddProductInput!) { addProduct(input: $input) { status } }', {
    input: { sku, name, priceCents, initialStock, consistency: 'AWAIT_VIEW' },
  });

const ada = await register('Ada Lovelace', 'ada@example.com', 50_000);
const grace = await register('Grace Hopper', 'grace@example.com', 5_000);
await add('LAMP-01', 'Desk lamp', 3900, 25);
await add('MUG-02', 'Enamel mug', 1250, 40);
await add('NOTE-03', 'Dot-grid notebook', 890, 2);

const orders = [
  await placeOrder(ada, [{ sku: 'LAMP-01', quantity: 1 }, { sku: 'MUG-02', quantity: 2 }]),
  await placeOrder(grace, [{ sku: 'LAMP-01', quantity: 2 }]), // over Grace's credit limit: declined
  await placeOrder(ada, [{ sku: 'NOTE-03', quantity: 5 }]), // only 2 in stock: rejected
  await placeOrder(grace, [{ sku: 'MUG-02', quantity: 1 }, { sku: 'NOTE-03', quantity: 1 }]),
];

const browser = await openBrowser();
try {
  const { page } = browser;
  await page.goto(`${base}/app`);
  for (const id of orders) await page.locator(`tr[data-order-id="${id}"]:not([data-status="PENDING"])`).waitFor();
  await page.getByLabel('Customer').selectOption(ada);
  await page.getByLabel('Quantity of Enamel mug').fill('3');
  // Let the row highlights fade before the picture.
  await page.waitForFunction(() => document.getAnimations().length === 0);
  await page.screenshot({ path: 'docs/app.png' });

  await page.goto(`${base}/app#/orders/${orders[0]}`);
  await page.locator('.timeline li[data-type="OrderConfirmed"]').waitFor();
  await page.screenshot({ path: 'docs/app-order.png', fullPage: true });

  await page.goto(`${base}/graphiql`);
  await page.locator('.graphiql-query-editor .CodeMirror').waitFor();
  await page.evaluate(
    (text) => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(text),
    '# Recent orders with their customers\nquery Recent {\n  orders(first: 3) {\n    nodes { id status totalCents customer { name } }\n  }\n}\n',
  );
  await page.locator('.graphiql-execute-button').click();
  await page.waitForFunction(() => document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue().includes('totalCents'));
  await page.screenshot({ path: 'docs/graphiql.png' });
  if (browser.offsite.length) throw new Error(`requests left the machine: ${browser.offsite}`);
  console.log('wrote docs/app.png, docs/app-order.png, docs/graphiql.png');
} finally {
  await browser.close();
}
