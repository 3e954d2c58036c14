// Subscription scale (issue 15), not a test: SOCKETS graphql-transport-ws
// connections with PER_SOCKET `orderUpdated` subscriptions each, PER_ORDER
// subscribers per order (on different sockets), against a running gateway
// whose orders are CONFIRMED. Prints: the time until every subscription had
// its first value, the gateway's RSS before and after (PID), then SHIPS
// `shipOrder`s per second for SHIP_SECONDS and the push latency (ship sent →
// SHIPPED received) over every subscriber, p50/p99, split into its hops:
// ship sent → command accepted (the mutation's answer), ship sent → event
// stamped (the SHIPPED row's `updatedAt` is its event's timestamp), event →
// each subscriber's receipt; with METRICS (the gateway's --metrics-listen
// address), the gateway's own `conveyor_change_age_seconds` per stage
// (notified, read, sent) over the ship phase; and the client's own event
// loop lag, to tell a slow client from a slow gateway.
//   node --experimental-websocket scripts/bench-subscriptions.mjs URL PID ORDER_ID...
// (scripts/bench-subscriptions runs it.)

const [url, pid, ...orders] = process.argv.slice(2);
const SOCKETS = Number(process.env.SOCKETS ?? 2500);
const PER_SOCKET = Number(process.env.PER_SOCKET ?? 20);
const PER_ORDER = Number(process.env.PER_ORDER ?? 20);
const SHIPS = Number(process.env.SHIPS ?? 100);
const SHIP_SECONDS = Number(process.env.SHIP_SECONDS ?? 10);
const WAIT_MS = Number(process.env.WAIT_MS ?? 120_000);
const METRICS = process.env.METRICS;
import { readFileSync } from 'node:fs';

// The gateway's CPU time so far (user + system), in seconds: the work it did, whatever else ran.
const cpu = () => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
};
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
const total = SOCKETS * PER_SOCKET;
const needed = Math.ceil(total / PER_ORDER);
if (orders.length < needed) throw new Error(`need ${needed} orders, got ${orders.length}`);
const quantile = (values, q) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
};
const query = 'subscription($id: ID!) { orderUpdated(id: $id) { id status version updatedAt } }';
// Wall-clock milliseconds, sub-millisecond: comparable with the gateway's timestamps on this box.
const now = () => performance.timeOrigin + performance.now();
const stats = (values) =>
  values.length
    ? `p50=${quantile(values, 0.5).toFixed(0)} p99=${quantile(values, 0.99).toFixed(0)} max=${Math.max(...values).toFixed(0)}`
    : 'none';
// The gateway's change-age histogram buckets, by stage: { stage: Map(le -> count) }.
async function changeAges() {
  if (!METRICS) return null;
  const text = await (await fetch(`http://${METRICS}/metrics`)).text();
  const stages = {};
  for (const match of text.matchAll(/^conveyor_change_age_seconds_bucket\{(.*)\} (\S+)/gm)) {
    const stage = /stage="([^"]*)"/.exec(match[1])?.[1];
    const le = /le="([^"]*)"/.exec(match[1])?.[1];
    (stages[stage] ??= new Map()).set(le, Number(match[2]));
  }
  return stages;
}
// Quantiles (bucket upper bounds, ms) of what the histograms gained between two scrapes.
function ageQuantiles(before, after) {
  if (!before || !after) return 'no metrics (set METRICS)';
  return Object.entries(after)
    .map(([stage, buckets]) => {
      const les = [...buckets.keys()];
      const gained = les.map((le) => buckets.get(le) - (before[stage]?.get(le) ?? 0));
      const total = gained[gained.length - 1];
      const at = (q) => {
        const i = gained.findIndex((count) => count >= q * total);
        return les[i] === '+Inf' ? '>16000' : `≤${(Number(les[i]) * 1000).toFixed(0)}`;
      };
      return `${stage}: n=${total} p50${at(0.5)} p99${at(0.99)} ms`;
    })
    .join('; ');
}

const firstSeen = new Set();
const shippedAt = new Map(); // order -> ms the ship was sent
const acceptedAfter = []; // ship sent -> mutation answered, ms
const stampedAfter = new Map(); // order -> ship sent -> SHIPPED event's timestamp, ms
const received = []; // SHIPPED event's timestamp -> a subscriber's receipt, ms
const latencies = [];
const shipped = new Set(); // subscription ids that saw SHIPPED
let firstDone;
const allFirst = new Promise((resolve) => (firstDone = resolve));
const errors = [];

const before = rss();
const started = performance.now();
const sockets = [];
function open(s) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url.replace(/^http/, 'ws') + '/graphql', 'graphql-transport-ws');
    socket.onopen = () => socket.send(JSON.stringify({ type: 'connection_init', payload: {} }));
    socket.onerror = (event) => reject(new Error(`socket ${s}: ${event.message ?? 'error'}`));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === 'connection_ack') {
        for (let j = 0; j < PER_SOCKET; j += 1) {
          // Subscriber j of socket s follows an order shared with PER_ORDER - 1 other sockets.
          const n = s * PER_SOCKET + j;
          const order = orders[Math.floor((j * SOCKETS + s) / PER_ORDER) % needed];
          socket.send(JSON.stringify({ id: `${n}`, type: 'subscribe', payload: { query, variables: { id: order } } }));
        }
        resolve(socket);
      } else if (message.type === 'next') {
        const order = message.payload?.data?.orderUpdated;
        if (!order) {
          errors.push(JSON.stringify(message.payload));
          return;
        }
        if (!firstSeen.has(message.id)) {
          firstSeen.add(message.id);
          if (firstSeen.size === total) firstDone();
        }
        // The first SHIPPED per subscription (capture and stock steps follow as newer versions).
        if (order.status === 'SHIPPED' && shippedAt.has(order.id) && !shipped.has(message.id)) {
          shipped.add(message.id);
          const at = now();
          latencies.push(at - shippedAt.get(order.id));
          const stamped = Date.parse(order.updatedAt);
          if (!stampedAfter.has(order.id)) stampedAfter.set(order.id, stamped - shippedAt.get(order.id));
          received.push(at - stamped);
        }
      } else if (message.type === 'ping') {
        socket.send(JSON.stringify({ type: 'pong' }));
      } else if (message.type === 'error') {
        errors.push(JSON.stringify(message.payload));
      }
    };
  });
}
for (let s = 0; s < SOCKETS; s += 1) {
  sockets.push(await open(s));
}
const timeout = setTimeout(() => firstDone(), WAIT_MS);
await allFirst;
clearTimeout(timeout);
const firstMs = performance.now() - started;
// Let the gateway settle before reading its memory.
await new Promise((resolve) => setTimeout(resolve, 2000));
const after = rss();
console.log(
  `subscriptions=${total} sockets=${SOCKETS} orders=${needed} first_values=${firstSeen.size} first_s=${(firstMs / 1000).toFixed(1)} ` +
    `rss_before_mib=${before.toFixed(0)} rss_after_mib=${after.toFixed(0)} kib_per_subscription=${(((after - before) * 1024) / total).toFixed(1)} errors=${errors.length}`,
);
if (errors.length) console.log(`first error: ${errors[0]}`);
// HOLD_MS: keep every subscription open (and idle) this long, for a heap profiler to look.
if (process.env.HOLD_MS) await new Promise((resolve) => setTimeout(resolve, Number(process.env.HOLD_MS)));

// Ships, open loop: SHIPS per second, each order once.
const ship = 'mutation($id: ID!) { shipOrder(input: { orderId: $id }) { status } }';
const toShip = orders.slice(0, Math.min(needed, SHIPS * SHIP_SECONDS));
let failedShips = 0;
const shipping = [];
const agesBefore = await changeAges();
const cpuBefore = cpu();
// The client's own event loop lag: how late a 10 ms timer fires.
const lags = [];
let tick = performance.now();
const lagTimer = setInterval(() => {
  const at = performance.now();
  lags.push(at - tick - 10);
  tick = at;
}, 10);
const shipStarted = performance.now();
for (let k = 0; k < toShip.length; k += 1) {
  const due = shipStarted + (k * 1000) / SHIPS;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const sent = now();
  shippedAt.set(toShip[k], sent);
  shipping.push(
    fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: ship, variables: { id: toShip[k] } }),
    })
      .then((response) => response.json())
      .then((body) => {
        acceptedAfter.push(now() - sent);
        if (body?.data?.shipOrder?.status !== 'ACCEPTED') failedShips += 1;
      })
      .catch(() => (failedShips += 1)),
  );
}
await Promise.all(shipping);
const expected = toShip.length * PER_ORDER;
const deadline = performance.now() + 30_000;
while (latencies.length < expected && performance.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 100));
}
console.log(
  `ships=${toShip.length} ships_per_s=${SHIPS} failed_ships=${failedShips} pushes=${latencies.length}/${expected} ` +
    `push_p50_ms=${quantile(latencies, 0.5)?.toFixed(0)} push_p99_ms=${quantile(latencies, 0.99)?.toFixed(0)} ` +
    `push_max_ms=${Math.max(...latencies).toFixed(0)} rss_end_mib=${rss().toFixed(0)}`,
);
clearInterval(lagTimer);
console.log(`  gateway CPU during the ship phase: ${(cpu() - cpuBefore).toFixed(1)} s`);
console.log(`  hops (ms): sent→accepted ${stats(acceptedAfter)}; sent→event stamped ${stats([...stampedAfter.values()])}; event→received ${stats(received)}`);
console.log(`  gateway change age since the event: ${ageQuantiles(agesBefore, await changeAges())}`);
console.log(`  client event loop lag (ms): ${stats(lags)}`);
for (const socket of sockets) socket.close();
process.exit(0);
