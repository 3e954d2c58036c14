// Talking to the gateway: queries and mutations over HTTP, subscriptions over
// graphql-transport-ws with the graphql-ws client (web/vendor, global
// `graphqlWs`). The optional access token lives in sessionStorage and goes
// out as `Authorization` on HTTP and in `connection_init` on the socket.

const TOKEN_KEY = 'conveyor.token';

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    // The socket authenticates once, at connection_init: start a new one.
    if (socket) {
      socket.dispose();
      socket = null;
    }
  },
};

/** The role the token names ('' without one). Only a hint for what to ask: the gateway verifies it. */
export function tokenRole() {
  try {
    const payload = token.get().split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).role || '';
  } catch {
    return '';
  }
}

/** Whether to ask for customers' names and emails: `service` may not read them (docs/operations.md). */
export const mayReadPersonalData = () => tokenRole() !== 'service';

/** A GraphQL error answer, with the codes the gateway puts in `extensions`. */
export class GraphQLError extends Error {
  constructor(errors) {
    super(errors.map((error) => error.message).join('; '));
    this.errors = errors;
    this.code = errors[0]?.extensions?.code;
  }
}

function authorization() {
  const value = token.get();
  return value ? { authorization: `Bearer ${value}` } : {};
}

/** Runs a query or mutation; resolves with `data`, rejects with a GraphQLError. */
export async function request(query, variables = {}) {
  let response;
  try {
    response = await fetch('/graphql', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json',
        ...authorization(),
      },
      body: JSON.stringify({ query, variables }),
    });
  } catch (error) {
    throw new GraphQLError([{ message: `the gateway did not answer (${error.message})`, extensions: { code: 'UNAVAILABLE' } }]);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new GraphQLError([{ message: `the gateway answered ${response.status} without GraphQL`, extensions: { code: 'HTTP' } }]);
  }
  if (body.errors?.length) throw new GraphQLError(body.errors);
  return body.data;
}

let socket = null;
const listeners = new Set();

/** Calls `listener(state)` with 'connecting', 'live' or 'offline' as the socket changes. */
export function onConnection(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function announce(state) {
  for (const listener of listeners) listener(state);
}

function client() {
  if (socket) return socket;
  const url = new URL('/graphql', window.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  socket = graphqlWs.createClient({
    url: url.toString(),
    connectionParams: authorization,
    // Keep the page live across gateway restarts: retry, with graphql-ws's backoff.
    retryAttempts: Infinity,
    lazy: false,
    on: {
      connecting: () => announce('connecting'),
      connected: () => announce('live'),
      closed: () => announce('offline'),
    },
  });
  return socket;
}

/**
 * Subscribes; `next(data)` gets every result's data, `error(GraphQLError)`
 * any error. Returns a function that ends the subscription.
 */
export function subscribe(query, variables, { next, error }) {
  return client().subscribe(
    { query, variables },
    {
      next: (result) => {
        if (result.errors?.length) error(new GraphQLError(result.errors));
        else next(result.data);
      },
      error: (cause) => {
        // A close event or network error, not a GraphQL error list.
        const errors = Array.isArray(cause) ? cause : [{ message: cause?.reason || cause?.message || 'connection lost' }];
        error(new GraphQLError(errors));
      },
      complete: () => {},
    },
  );
}

/** Re-runs `subscribe` each time the socket reconnects (subscriptions resume, gaps are re-read). */
export function onReconnect(callback) {
  let seen = false;
  return onConnection((state) => {
    if (state !== 'live') return;
    if (seen) callback();
    seen = true;
  });
}
