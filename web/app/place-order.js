// The place-order form: a customer and quantities from the catalog. The
// catalog price goes along as the expected price, so a price changed in the
// meantime rejects the order (PRICE_MISMATCH) instead of charging more.

import { request } from './api.js';
import { formatCents, h, newKey, notice } from './ui.js';

const SHOP = `query Shop {
  customers(first: 100) { nodes { id name email creditLimitCents } }
  products(first: 100) { nodes { sku name priceCents available } }
}`;
const PLACE = `mutation PlaceOrder($input: PlaceOrderInput!) {
  placeOrder(input: $input) { status orderId error { code message } }
}`;

/**
 * The form section. Returns `{ element, refresh }`; `refresh()` re-reads
 * customers and stock. `onIncomplete(true)` hears when the shop has no
 * customer or no product yet.
 */
export function placeOrderForm({ onIncomplete = () => {} } = {}) {
  let products = [];
  // One key per intended order: resubmitting after a network error cannot place it twice.
  let key = newKey();
  const customer = h('select', { id: 'order-customer', name: 'customer', required: true });
  const lines = h('tbody');
  const total = h('output', { id: 'order-total', for: 'order-lines', 'aria-live': 'polite' }, formatCents(0));
  const result = h('div', { class: 'result' });
  const submit = h('button', { type: 'submit' }, 'Place order');
  const empty = h('p', { class: 'empty' });

  const form = h(
    'form',
    { id: 'place-order', novalidate: true, onsubmit: place, oninput: () => { key = newKey(); updateTotal(); } },
    h('div', { class: 'field' }, h('label', { for: 'order-customer' }, 'Customer'), customer),
    h(
      'table',
      { id: 'order-lines', class: 'lines' },
      h('caption', {}, 'Catalog'),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', { scope: 'col' }, 'Product'),
          h('th', { scope: 'col', class: 'num' }, 'Price'),
          h('th', { scope: 'col', class: 'num' }, 'Available'),
          h('th', { scope: 'col', class: 'num' }, 'Quantity'),
        ),
      ),
      lines,
    ),
    h('p', { class: 'total' }, 'Total: ', total),
    submit,
    result,
  );

  function quantities() {
    return [...lines.querySelectorAll('input')].map((input) => ({
      sku: input.dataset.sku,
      quantity: Number.parseInt(input.value || '0', 10),
    }));
  }

  function updateTotal() {
    const prices = new Map(products.map((product) => [product.sku, product.priceCents]));
    const cents = quantities().reduce((sum, line) => sum + (line.quantity > 0 ? line.quantity * prices.get(line.sku) : 0), 0);
    total.value = formatCents(cents);
  }

  async function refresh() {
    let data;
    try {
      data = await request(SHOP);
    } catch (error) {
      empty.replaceChildren(notice('error', `Could not load the shop: ${error.message}`));
      return;
    }
    const chosen = customer.value;
    customer.replaceChildren(
      h('option', { value: '' }, 'Choose a customer'),
      ...data.customers.nodes.map((c) =>
        h('option', { value: c.id, selected: c.id === chosen }, `${c.name} <${c.email}> — limit ${formatCents(c.creditLimitCents)}`),
      ),
    );
    // Keep what the user typed while stock figures change under it.
    const typed = new Map(quantities().map((line) => [line.sku, line.quantity]));
    products = data.products.nodes;
    lines.replaceChildren(
      ...products.map((product) => {
        const id = `qty-${product.sku}`;
        return h(
          'tr',
          { 'data-sku': product.sku },
          h('th', { scope: 'row' }, h('label', { for: id }, product.name), ' ', h('code', {}, product.sku)),
          h('td', { class: 'num' }, formatCents(product.priceCents)),
          h('td', { class: 'num', 'data-available': product.available }, String(product.available)),
          h(
            'td',
            { class: 'num' },
            h('input', {
              id,
              type: 'number',
              inputmode: 'numeric',
              min: 0,
              step: 1,
              value: typed.get(product.sku) || 0,
              'data-sku': product.sku,
              'aria-label': `Quantity of ${product.name}`,
            }),
          ),
        );
      }),
    );
    const missing = [];
    if (!data.customers.nodes.length) missing.push('a customer');
    if (!products.length) missing.push('a product');
    empty.replaceChildren(missing.length ? notice('info', `To order, the shop needs ${missing.join(' and ')}: use "Set up the shop" below.`) : '');
    onIncomplete(missing.length > 0);
    updateTotal();
  }

  async function place(event) {
    event.preventDefault();
    const items = quantities().filter((line) => line.quantity !== 0);
    const problem = !customer.value
      ? 'Choose a customer.'
      : !items.length
        ? 'Choose a quantity for at least one product.'
        : items.some((line) => !Number.isInteger(line.quantity) || line.quantity < 1)
          ? 'Quantities are whole numbers of 1 or more.'
          : null;
    if (problem) {
      result.replaceChildren(notice('error', problem));
      return;
    }
    const prices = new Map(products.map((product) => [product.sku, product.priceCents]));
    const input = {
      customerId: customer.value,
      items: items.map((line) => ({ ...line, unitPriceCents: prices.get(line.sku) })),
      idempotencyKey: key,
    };
    submit.disabled = true;
    result.replaceChildren(notice('info', 'Placing…'));
    try {
      const { placeOrder } = await request(PLACE, { input });
      const link = h('a', { href: `#/orders/${placeOrder.orderId}`, 'data-placed-order': placeOrder.orderId }, placeOrder.orderId);
      if (placeOrder.status === 'REJECTED' || placeOrder.status === 'FAILED') {
        const what = placeOrder.status === 'FAILED' ? 'Failed' : 'Refused';
        result.replaceChildren(notice('error', `${what} (${placeOrder.error.code}): ${placeOrder.error.message}`));
      } else {
        const when = placeOrder.status === 'PENDING' ? 'queued; it shows in the list once decided' : 'placed; follow it in the list';
        result.replaceChildren(notice('ok', 'Order ', link, ` ${when}.`));
        for (const input of lines.querySelectorAll('input')) input.value = 0;
        updateTotal();
      }
      key = newKey();
    } catch (error) {
      // Not answered: the same key goes out again if the user retries.
      result.replaceChildren(notice('error', `Not placed: ${error.message}`));
    } finally {
      submit.disabled = false;
    }
  }

  refresh();
  const element = h('section', { class: 'panel', 'aria-labelledby': 'place-heading' },
    h('h2', { id: 'place-heading' }, 'Place an order'), empty, form);
  return { element, refresh };
}
