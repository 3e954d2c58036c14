// The live list of recent orders: one `orders` query for what exists, and
// the `ordersUpdated` subscription for every order placed or changed after.
// Rows are merged by id, newest version wins, so the two may interleave.

import { mayReadPersonalData, onReconnect, request, subscribe } from './api.js';
import { formatCents, formatTime, h, notice, shortId, statusBadge } from './ui.js';

const SHOWN = 50;
const FIELDS = 'id customerId customer @include(if: $personal) { name } status totalCents version placedAt updatedAt';
const RECENT = `query RecentOrders($first: Int!, $personal: Boolean!) { orders(first: $first) { nodes { ${FIELDS} } } }`;
const UPDATES = `subscription OrderFeed($personal: Boolean!) { ordersUpdated { ${FIELDS} } }`;

/** A row is newer by order version, then by when its view last changed. */
const isNewer = (candidate, known) =>
  !known ||
  candidate.version > known.version ||
  (candidate.version === known.version && Date.parse(candidate.updatedAt) >= Date.parse(known.updatedAt));

const newestFirst = (a, b) => Date.parse(b.placedAt) - Date.parse(a.placedAt) || (a.id < b.id ? 1 : -1);

/**
 * The recent-orders section. `onChange(order)` hears every accepted update
 * (the form refreshes stock from it). Returns `{ element, stop }`.
 */
export function recentOrders({ onChange = () => {} } = {}) {
  const orders = new Map();
  const body = h('tbody');
  const status = h('div', { class: 'feed-status' });
  const empty = h('p', { class: 'empty' }, 'No orders yet: place one with the form.');
  const table = h(
    'table',
    { class: 'orders', 'aria-describedby': 'orders-caption' },
    h('caption', { id: 'orders-caption' }, `The ${SHOWN} newest orders; rows update live.`),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', { scope: 'col' }, 'Order'),
        h('th', { scope: 'col' }, 'Customer'),
        h('th', { scope: 'col', class: 'num' }, 'Total'),
        h('th', { scope: 'col' }, 'Status'),
        h('th', { scope: 'col' }, 'Placed'),
      ),
    ),
    body,
  );

  function merge(order) {
    const known = orders.get(order.id);
    if (!isNewer(order, known)) return;
    orders.set(order.id, order);
    render(known && known.status !== order.status ? order.id : null, !known ? order.id : null);
    onChange(order);
  }

  function render(changedId, addedId) {
    const shown = [...orders.values()].sort(newestFirst).slice(0, SHOWN);
    // Forget what fell off the end, so a long-open page stays small.
    if (orders.size > SHOWN * 2) {
      const keep = new Set(shown.map((order) => order.id));
      for (const id of orders.keys()) if (!keep.has(id)) orders.delete(id);
    }
    body.replaceChildren(
      ...shown.map((order) =>
        h(
          'tr',
          {
            'data-order-id': order.id,
            'data-status': order.status,
            class: order.id === changedId ? 'changed' : order.id === addedId ? 'added' : null,
          },
          h('td', {}, h('a', { href: `#/orders/${order.id}`, title: order.id }, h('code', {}, shortId(order.id)))),
          h('td', {}, order.customer?.name ?? h('span', { class: 'muted', title: order.customerId }, 'unknown customer')),
          h('td', { class: 'num' }, order.totalCents === null ? h('span', { class: 'muted' }, '—') : formatCents(order.totalCents)),
          h('td', {}, statusBadge(order.status)),
          h('td', {}, h('time', { datetime: order.placedAt }, formatTime(order.placedAt))),
        ),
      ),
    );
    empty.hidden = orders.size > 0;
    table.hidden = orders.size === 0;
  }

  async function load() {
    try {
      const data = await request(RECENT, { first: SHOWN, personal: mayReadPersonalData() });
      data.orders.nodes.forEach(merge);
      status.replaceChildren();
    } catch (error) {
      status.replaceChildren(notice('error', `Could not load orders: ${error.message}`));
    }
    render();
  }

  // Subscribe first, then read: nothing placed in between is missed.
  const unsubscribe = subscribe(UPDATES, { personal: mayReadPersonalData() }, {
    next: (data) => merge(data.ordersUpdated),
    error: (error) => status.replaceChildren(notice('error', `Live updates stopped: ${error.message}`)),
  });
  // After a lost connection, re-read what changed meanwhile.
  const stopReconnect = onReconnect(load);
  load();

  const element = h('section', { class: 'panel', 'aria-labelledby': 'orders-heading' },
    h('h2', { id: 'orders-heading' }, 'Recent orders'), status, empty, table);
  return {
    element,
    stop() {
      unsubscribe();
      stopReconnect();
    },
  };
}
