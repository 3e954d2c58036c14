// One order, live: `orderUpdated` sends its view at once and after every
// change, timeline included. Cancel and ship are offered when they apply.

import { mayReadPersonalData, request, subscribe } from './api.js';
import { formatCents, formatTime, h, newKey, notice, statusBadge } from './ui.js';

const FIELDS = `id status paymentStatus stockStatus rejectionCode rejectionReason cancelReason totalCents version
  placedAt updatedAt customerId customer @include(if: $personal) { name email }
  items { sku quantity unitPriceCents product { name } }
  timeline { at type aggregateType aggregateId summary actor }`;
const FOLLOW = `subscription FollowOrder($id: ID!, $personal: Boolean!) { orderUpdated(id: $id) { ${FIELDS} } }`;
const CANCEL = `mutation Cancel($input: CancelOrderInput!) { cancelOrder(input: $input) { status error { code message } } }`;
const SHIP = `mutation Ship($input: ShipOrderInput!) { shipOrder(input: $input) { status error { code message } } }`;

/** The detail page of order `id`. Returns `{ element, stop }`. */
export function orderDetail(id) {
  const content = h('div', {}, notice('info', 'Waiting for the order… (it shows as soon as the read side has it)'));
  const actions = h('div', { class: 'actions' });
  const result = h('div', { class: 'result' });
  const heading = h('h1', { id: 'order-heading' }, 'Order ', h('code', {}, id));

  function render(order) {
    const line = (item) =>
      h(
        'tr',
        {},
        h('th', { scope: 'row' }, item.product?.name ?? item.sku, ' ', h('code', {}, item.sku)),
        h('td', { class: 'num' }, String(item.quantity)),
        h('td', { class: 'num' }, item.unitPriceCents === null ? '—' : formatCents(item.unitPriceCents)),
      );
    const facts = [
      ['Status', statusBadge(order.status)],
      ['Customer', order.customer ? `${order.customer.name} <${order.customer.email}>` : order.customerId],
      ['Total', formatCents(order.totalCents)],
      ['Stock', order.stockStatus],
      ['Payment', order.paymentStatus],
      ['Placed', h('time', { datetime: order.placedAt }, formatTime(order.placedAt))],
      order.rejectionCode && ['Rejected', `${order.rejectionCode}: ${order.rejectionReason ?? ''}`],
      order.cancelReason && ['Cancelled', order.cancelReason],
    ].filter(Boolean);
    content.replaceChildren(
      h('dl', { class: 'facts', 'data-status': order.status }, ...facts.flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)])),
      h(
        'table',
        { class: 'lines' },
        h('caption', {}, 'Lines'),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Product'), h('th', { scope: 'col', class: 'num' }, 'Quantity'), h('th', { scope: 'col', class: 'num' }, 'Unit price'))),
        h('tbody', {}, ...order.items.map(line)),
      ),
      h('h3', {}, 'Timeline'),
      h(
        'ol',
        { class: 'timeline', 'aria-live': 'polite' },
        ...order.timeline.map((entry) =>
          h(
            'li',
            { 'data-type': entry.type },
            h('time', { datetime: entry.at, title: entry.at }, formatTime(entry.at, { precise: true })),
            ' ',
            h('strong', {}, entry.type),
            ' ',
            h('span', { class: 'muted' }, `${entry.aggregateType} ${entry.aggregateId}`),
            h('div', {}, entry.summary),
          ),
        ),
      ),
    );
    renderActions(order);
  }

  function renderActions(order) {
    const buttons = [];
    if (order.status === 'CONFIRMED') {
      buttons.push(h('button', { type: 'button', onclick: () => act(SHIP, { orderId: id }, 'shipOrder') }, 'Ship'));
    }
    if (order.status === 'PENDING' || order.status === 'CONFIRMED') {
      const reason = h('input', { id: 'cancel-reason', required: true, value: 'changed my mind' });
      buttons.push(
        h(
          'form',
          {
            class: 'inline',
            onsubmit(event) {
              event.preventDefault();
              if (reason.value.trim()) act(CANCEL, { orderId: id, reason: reason.value.trim() }, 'cancelOrder');
            },
          },
          h('label', { for: 'cancel-reason' }, 'Reason'),
          reason,
          h('button', { type: 'submit', class: 'secondary' }, 'Cancel order'),
        ),
      );
    }
    actions.replaceChildren(...buttons);
  }

  async function act(mutation, input, answer) {
    try {
      const data = await request(mutation, { input: { ...input, idempotencyKey: newKey() } });
      const payload = data[answer];
      result.replaceChildren(
        payload.status === 'REJECTED' || payload.status === 'FAILED'
          ? notice('error', `${payload.status === 'FAILED' ? 'Failed' : 'Refused'} (${payload.error.code}): ${payload.error.message}`)
          : notice('ok', `Sent (${payload.status}); the page follows the order.`),
      );
    } catch (error) {
      result.replaceChildren(notice('error', error.message));
    }
  }

  const stop = subscribe(FOLLOW, { id, personal: mayReadPersonalData() }, {
    next: (data) => render(data.orderUpdated),
    error: (error) => content.replaceChildren(notice('error', `Cannot follow this order: ${error.message}`)),
  });

  const element = h(
    'section',
    { class: 'panel', 'aria-labelledby': 'order-heading' },
    h('p', {}, h('a', { href: '#/' }, '← All orders')),
    heading,
    content,
    actions,
    result,
  );
  return { element, stop };
}
