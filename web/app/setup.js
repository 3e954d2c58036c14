// "Set up the shop": register a customer and add a product, so an empty
// Conveyor (a fresh `cargo run`) can take an order without GraphiQL. Both
// wait for the views (AWAIT_VIEW), so the order form shows them at once.

import { request } from './api.js';
import { h, newKey, notice } from './ui.js';

const REGISTER = `mutation Register($input: RegisterCustomerInput!) {
  registerCustomer(input: $input) { status customerId error { code message } }
}`;
const ADD = `mutation AddProduct($input: AddProductInput!) {
  addProduct(input: $input) { status sku error { code message } }
}`;

const field = (id, label, attributes) =>
  h('div', { class: 'field' }, h('label', { for: id }, label), h('input', { id, name: id, required: true, ...attributes }));

/** Dollars typed as "12.50" → 1250 cents, or NaN. */
const cents = (text) => (/^\d+(\.\d{1,2})?$/.test(text.trim()) ? Math.round(Number.parseFloat(text) * 100) : Number.NaN);

function commandForm({ id, title, fields, submitLabel, toInput, mutation, answer, done, onDone }) {
  const result = h('div', { class: 'result' });
  let key = newKey();
  const form = h(
    'form',
    {
      id,
      oninput: () => { key = newKey(); },
      async onsubmit(event) {
        event.preventDefault();
        if (!form.reportValidity()) return;
        const values = Object.fromEntries(new FormData(form));
        const input = toInput(values);
        if (typeof input === 'string') {
          result.replaceChildren(notice('error', input));
          return;
        }
        try {
          const data = await request(mutation, { input: { ...input, idempotencyKey: key, consistency: 'AWAIT_VIEW' } });
          const payload = data[answer];
          if (payload.status === 'REJECTED' || payload.status === 'FAILED') {
            const what = payload.status === 'FAILED' ? 'Failed' : 'Refused';
            result.replaceChildren(notice('error', `${what} (${payload.error.code}): ${payload.error.message}`));
          } else {
            result.replaceChildren(notice('ok', payload.status === 'PENDING' ? 'Queued; it shows once decided.' : done(input)));
            form.reset();
            key = newKey();
            onDone();
          }
        } catch (error) {
          result.replaceChildren(notice('error', error.message));
        }
      },
    },
    h('fieldset', {}, h('legend', {}, title), ...fields, h('button', { type: 'submit' }, submitLabel)),
    result,
  );
  return form;
}

/** The set-up section; `onChange()` runs after a customer or product is added. */
export function shopSetup({ onChange }) {
  const customer = commandForm({
    id: 'register-customer',
    title: 'Register a customer',
    submitLabel: 'Register',
    fields: [
      field('customer-name', 'Name', { autocomplete: 'off' }),
      field('customer-email', 'Email', { type: 'email', autocomplete: 'off' }),
      field('customer-limit', 'Credit limit ($)', { inputmode: 'decimal', value: '500.00' }),
    ],
    toInput(values) {
      const limit = cents(values['customer-limit']);
      if (Number.isNaN(limit)) return 'The credit limit is an amount like 500 or 500.00.';
      return { name: values['customer-name'], email: values['customer-email'], creditLimitCents: limit };
    },
    mutation: REGISTER,
    answer: 'registerCustomer',
    done: (input) => `Registered ${input.name}: choose them in the order form.`,
    onDone: onChange,
  });
  const product = commandForm({
    id: 'add-product',
    title: 'Add a product',
    submitLabel: 'Add',
    fields: [
      field('product-sku', 'SKU', { autocomplete: 'off', placeholder: 'LAMP-01' }),
      field('product-name', 'Name', { autocomplete: 'off' }),
      field('product-price', 'Price ($)', { inputmode: 'decimal' }),
      field('product-stock', 'Initial stock', { type: 'number', min: 0, step: 1, value: 10 }),
    ],
    toInput(values) {
      const price = cents(values['product-price']);
      if (Number.isNaN(price)) return 'The price is an amount like 12 or 12.50.';
      const stock = Number.parseInt(values['product-stock'], 10);
      return { sku: values['product-sku'].trim(), name: values['product-name'], priceCents: price, initialStock: stock };
    },
    mutation: ADD,
    answer: 'addProduct',
    done: (input) => `Added ${input.sku} to the catalog.`,
    onDone: onChange,
  });
  return h(
    'details',
    { class: 'panel setup' },
    h('summary', {}, h('h2', {}, 'Set up the shop')),
    h('div', { class: 'setup-forms' }, customer, product),
  );
}
