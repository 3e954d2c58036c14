// Small DOM helpers: elements are built with textContent, never innerHTML,
// so nothing a user typed (names, reasons) can become markup.

/** `h('a', { href: '#/' }, 'text', child)`: attributes, `on*` listeners, children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

const money = new Intl.NumberFormat(undefined, { style: 'currency', currency: 'USD' });

/** Cents as money: 1999 → $19.99. */
export const formatCents = (cents) => money.format(cents / 100);

const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const fine = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3 });
const dated = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** Today's times as a clock (`precise`: with milliseconds), older ones with their date. */
export function formatTime(iso, { precise = false } = {}) {
  const at = new Date(iso);
  if (at.toDateString() !== new Date().toDateString()) return dated.format(at);
  return (precise ? fine : clock).format(at);
}

/** The first block of a UUID: enough to tell orders apart on screen. */
export const shortId = (id) => id.split('-')[0];

/** An order status as a labelled badge (text, not color alone). */
export const statusBadge = (status) => h('span', { class: `status status-${status.toLowerCase()}` }, status);


/** A message region that screen readers announce. */
export function notice(kind, ...children) {
  return h('p', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...children);
}

/** A fresh idempotency key: a retried submit of the same form is one command. */
export const newKey = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`);
