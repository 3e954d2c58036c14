// An unmodified graphql-ws client follows an order from PENDING to CONFIRMED
// over Conveyor's graphql-transport-ws. Usage: node graphql-ws.mjs http://127.0.0.1:8080
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const base = process.argv[2];
const post = async (query, variables) => {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
};

const sku = `ws-${Date.now()}`;
await post(`mutation($sku: String!) { addProduct(input: { sku: $sku, name: "Lamp", priceCents: 100, initialStock: 5 }) { status } }`, { sku });
const { registerCustomer } = await post(
  'mutation($email: String!) { registerCustomer(input: { name: "Ada", email: $email, creditLimitCents: 10000 }) { customerId } }',
  { email: `ada-${sku}@example.com` },
);
const { placeOrder } = await post(
  'mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }',
  { input: { customerId: registerCustomer.customerId, items: [{ sku, quantity: 1 }] } },
);

const client = createClient({ url: `${base.replace('http', 'ws')}/graphql`, webSocketImpl: WebSocket, retryAttempts: 0 });
const seen = [];
const deadline = setTimeout(() => {
  console.error(`graphql-ws: no CONFIRMED in time; saw ${seen.join(', ')}`);
  process.exit(1);
}, 20000);
const updates = client.iterate({
  query: 'subscription($id: ID!) { orderUpdated(id: $id) { status } }',
  variables: { id: placeOrder.orderId },
});
for await (const result of updates) {
  if (result.errors) throw new Error(JSON.stringify(result.errors));
  seen.push(result.data.orderUpdated.status);
  if (result.data.orderUpdated.status === 'CONFIRMED') break;
}
clearTimeout(deadline);
await client.dispose();
console.log(`graphql-ws: followed order ${placeOrder.orderId} through ${seen.join(' -> ')}`);
