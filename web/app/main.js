// The live order page: `#/` lists recent orders beside the place-order
// form; `#/orders/<id>` follows one order. Plain ES modules, no framework:
// three views and a socket do not earn one.

import { onConnection, token } from './api.js';
import { orderDetail } from './order.js';
import { recentOrders } from './orders.js';
import { placeOrderForm } from './place-order.js';
import { shopSetup } from './setup.js';
import { h } from './ui.js';

const view = document.getElementById('view');
let current = null;

function home() {
  let setup = null;
  // An empty shop opens its set-up forms.
  const form = placeOrderForm({
    onIncomplete: (incomplete) => {
      if (incomplete && setup) setup.open = true;
    },
  });
  // Stock changes as orders reserve it: re-read the catalog, at most every half second.
  let pending = null;
  setup = shopSetup({ onChange: form.refresh });
  const list = recentOrders({
    onChange: () => {
      pending ??= setTimeout(() => {
        pending = null;
        form.refresh();
      }, 500);
    },
  });
  return {
    element: h('div', { class: 'home' }, h('h1', { class: 'visually-hidden' }, 'Orders'), form.element, list.element, setup),
    stop() {
      clearTimeout(pending);
      list.stop();
    },
  };
}

function route() {
  current?.stop();
  const match = /^#\/orders\/([0-9a-fA-F-]{36})$/.exec(window.location.hash);
  current = match ? orderDetail(match[1]) : home();
  view.replaceChildren(current.element);
  document.title = match ? 'Conveyor — order' : 'Conveyor — orders';
}

const connection = document.getElementById('connection');
onConnection((state) => {
  connection.dataset.state = state;
  connection.textContent = { connecting: 'connecting…', live: 'live', offline: 'offline — retrying' }[state];
});

const tokenInput = document.getElementById('token');
tokenInput.value = token.get();
document.getElementById('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  token.set(tokenInput.value.trim());
  route();
});

window.addEventListener('hashchange', route);
route();
