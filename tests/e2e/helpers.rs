//! The end-to-end harness: boots the composed system on a chosen backend,
//! isolated per test (a fresh database and NATS namespace, or a fresh data
//! directory), with typed GraphQL helpers. Everything a test creates is
//! removed when its `TestApp` drops, even when the test fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use conveyor::config::{Common, Domain, EdgeLimits, Server, StreamEventsArgs};
use conveyor::embedded::Embedded;
use conveyor::server::{Infra, start_gateway, start_read_side, start_write_side, supervise};
use futures::{SinkExt, StreamExt};
use read_side::ViewStore;
use read_side::orders::OrderRepository;
use schema::ports::EventLog;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use write_side::SqlEventStore;

/// How long any bounded wait in the suite may take before it fails the test.
pub const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Server,
}

/// Runs one async test body against both backends, as two test functions.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::helpers::Backend::Embedded).await }) *
        }
        mod server {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::helpers::Backend::Server).await }) *
        }
    };
}

/// The test's own NATS URL: an outsider with every right (scripts/test's
/// server: the `admin` user of scripts/nats-server.conf).
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The test's own NATS client ([`nats_url`], credentials in it honoured).
pub async fn nats_client() -> async_nats::Client {
    schema::nats::connect(&nats_url(), "conveyor-test", &Default::default())
        .await
        .expect("NATS is reachable at NATS_URL")
}

/// The URL one side connects with: as its own user of
/// scripts/nats-server.conf when scripts/test started the server with it
/// (its password in `CONVEYOR_NATS_<SIDE>_PASSWORD`), else [`nats_url`].
pub fn side_nats_url(user: &str) -> String {
    let url = nats_url();
    let variable = format!("CONVEYOR_NATS_{}_PASSWORD", user.to_uppercase().replace('-', "_"));
    let (Ok(password), Some((scheme, rest))) = (std::env::var(variable), url.split_once("://")) else { return url };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}")
}

fn admin_database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A PostgreSQL database that exists for one test.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin = admin_database_url();
        let name = format!("conveyor_test_{}", Uuid::now_v7().simple());
        let pool = schema::sql::connect(&admin, 1).await.expect("PostgreSQL is reachable at DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let base = admin.split('?').next().unwrap_or(&admin);
        let server = &base[..base.rfind('/').unwrap_or(base.len())];
        Self { url: format!("{server}/{name}"), name }
    }

    fn drop_blocking(&self) {
        let name = self.name.clone();
        run_blocking(async move {
            if let Ok(pool) = schema::sql::connect(&admin_database_url(), 1).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        });
    }
}

/// Deletes a namespace's streams and buckets.
fn delete_namespace_blocking(namespace: String) {
    run_blocking(async move {
        if let Ok(client) = schema::nats::connect(&nats_url(), "conveyor-test-cleanup", &Default::default()).await {
            let js = async_nats::jetstream::new(client);
            for stream in ["COMMANDS", "EVENTS", "DLQ"] {
                let _ = js.delete_stream(format!("{namespace}_{stream}")).await;
            }
            let _ = js.delete_key_value(format!("{namespace}_outcomes")).await;
        }
    });
}

/// Cleanup runs from `Drop`, possibly inside a failing test's runtime:
/// a thread of its own with a runtime of its own does the async work.
fn run_blocking(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(work);
        }
    })
    .join();
}

pub fn unique_namespace() -> String {
    format!("t{}", &Uuid::now_v7().simple().to_string()[8..24])
}

/// The isolation a test runs in, removed on drop.
pub struct Isolation {
    pub backend: Backend,
    pub namespace: String,
    pub database: Option<TestDatabase>,
    pub data_dir: Option<PathBuf>,
}

impl Isolation {
    pub async fn new(backend: Backend) -> Self {
        let namespace = unique_namespace();
        match backend {
            Backend::Server => {
                Self { backend, namespace, database: Some(TestDatabase::create().await), data_dir: None }
            }
            Backend::Embedded => {
                let dir = std::env::temp_dir().join(format!("conveyor-test-{}", Uuid::now_v7().simple()));
                Self { backend, namespace, database: None, data_dir: Some(dir) }
            }
        }
    }

    pub fn common(&self) -> Common {
        Common {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            metrics_listen: None,
            log_format: conveyor::telemetry::LogFormat::Text,
            grpc_listen: "127.0.0.1:0".parse().expect("valid address"),
            namespace: self.namespace.clone(),
            mutation_wait: Duration::from_secs(10),
            projector_batch: read_side::projector::BATCH,
            projector_workers: read_side::projector::WORKERS,
            data_dir: self.data_dir.clone().unwrap_or_default(),
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            disable_introspection: false,
            jwt_secret: None,
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            ws_init_timeout: Duration::from_secs(10),
            ws_ping_interval: Duration::from_secs(15),
            max_inflight_commands: 1024,
            max_undecided_orders: 20_000,
            domain: Domain::default(),
            // Many requests from one address: rate limits are off unless a test sets them.
            edge: EdgeLimits { rate_limit: 0, ..EdgeLimits::default() },
            stream_events: StreamEventsArgs::default(),
        }
    }

    pub fn server(&self) -> Server {
        Server {
            nats: nats_url(),
            database: self.database.as_ref().map(|db| db.url.clone()).unwrap_or_default(),
            stream_replicas: 1,
            db_connections: 8,
            max_deliver: 20,
            dlq_max_age: Duration::from_secs(3600),
            dlq_max_bytes: 64 * 1024 * 1024,
            nats_auth: Default::default(),
        }
    }

    /// The event store and the orders view this isolation's system uses.
    pub async fn stores(&self) -> (SqlEventStore, OrderRepository) {
        let (store, views) = self.pools().await;
        (SqlEventStore::new(store), OrderRepository::new(ViewStore::new(views)))
    }

    /// The event store's pool and the views' pool.
    pub async fn pools(&self) -> (sqlx::AnyPool, sqlx::AnyPool) {
        match self.backend {
            Backend::Server => {
                let pool = schema::sql::connect(&self.server().database, 4).await.expect("test database");
                (pool.clone(), pool)
            }
            Backend::Embedded => {
                let dir = self.data_dir.as_ref().expect("embedded has a data dir");
                std::fs::create_dir_all(dir).expect("data dir");
                let url = |file: &str| format!("sqlite://{}?mode=rwc", dir.join(file).display());
                let events = schema::sql::connect(&url("events.sqlite"), 1).await.expect("event store");
                // As many as embedded mode opens, so projector workers can overlap.
                let views = schema::sql::connect(&url("views.sqlite"), 4).await.expect("views");
                (events, views)
            }
        }
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        if let Some(database) = &self.database {
            database.drop_blocking();
        }
        if self.backend == Backend::Server {
            delete_namespace_blocking(self.namespace.clone());
        }
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The composed system, running in this test process.
pub struct TestApp {
    pub address: SocketAddr,
    /// The gRPC API's address.
    pub grpc: SocketAddr,
    pub http: reqwest::Client,
    pub store: SqlEventStore,
    /// The gateway's view store: counts the SQL statements queries run.
    pub gateway_views: ViewStore,
    /// The gateway's admission limits and backlog readings.
    pub admission: gateway::Admission,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
    // Dropped last: the system must stop before its database goes.
    pub isolation: Isolation,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_in(Isolation::new(backend).await).await
    }

    /// Boots the system in an existing isolation (e.g. to restart it).
    pub async fn spawn_in(isolation: Isolation) -> Self {
        Self::spawn_with(isolation, Domain::default()).await
    }

    /// Boots the system with its business settings (payment provider, saga timeouts).
    pub async fn spawn_with(isolation: Isolation, domain: Domain) -> Self {
        Self::spawn_configured(isolation, |common| common.domain = domain).await
    }

    /// Boots the system with any settings changed.
    pub async fn spawn_configured(isolation: Isolation, configure: impl FnOnce(&mut Common)) -> Self {
        Self::spawn_server_configured(isolation, configure, |_| {}).await
    }

    /// Boots the system with any settings changed, server-mode ones too.
    pub async fn spawn_server_configured(
        isolation: Isolation,
        configure: impl FnOnce(&mut Common),
        configure_server: impl FnOnce(&mut Server),
    ) -> Self {
        if std::env::var("TEST_LOG").is_ok() {
            conveyor::telemetry::init();
        }
        let shutdown = CancellationToken::new();
        let mut common = isolation.common();
        configure(&mut common);
        let mut server = isolation.server();
        configure_server(&mut server);
        let (address, grpc, gateway_views, admission, running) = match isolation.backend {
            Backend::Embedded => {
                let embedded = Embedded::start(&common, shutdown.clone()).await.expect("embedded mode starts");
                let (address, grpc, views, admission) =
                    (embedded.address, embedded.grpc_address, embedded.views.clone(), embedded.admission.clone());
                (address, grpc, views, admission, tokio::spawn(embedded.run_until_stopped()))
            }
            Backend::Server => {
                // Each side as its own NATS user, with its own permissions.
                let as_user = |user: &str| Server { nats: side_nats_url(user), ..server.clone() };
                let infra =
                    Infra::connect_each(&common, &as_user("write-side"), &as_user("read-side"), &as_user("gateway"))
                        .await
                        .expect("infrastructure");
                let mut tasks = tokio::task::JoinSet::new();
                let consumer = write_side::nats::ConsumerSettings::default();
                start_write_side(&infra, &common, write_side::AGGREGATES, consumer, &mut tasks, &shutdown)
                    .await
                    .expect("write side");
                start_read_side(&infra, &common, &mut tasks, &shutdown).await.expect("read side");
                let gateway = start_gateway(&infra, &common, &mut tasks, &shutdown).await.expect("gateway");
                let running = tokio::spawn(supervise(tasks, shutdown.clone()));
                (gateway.address, gateway.grpc_address, gateway.views, gateway.admission, running)
            }
        };
        let (store, _) = isolation.stores().await;
        Self {
            address,
            grpc: grpc.expect("the gateway serves gRPC"),
            http: reqwest::Client::new(),
            store,
            gateway_views,
            admission,
            shutdown,
            running: Some(running),
            isolation,
        }
    }

    /// Stops the system, returning its isolation for a restart.
    pub async fn stop(mut self) -> Isolation {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(WAIT, running)
                .await
                .expect("the system stops within the bound")
                .expect("the system task completes")
                .expect("the system stops cleanly");
        }
        // Hand the isolation out; what stays behind cleans up nothing.
        let inert = Isolation { backend: Backend::Embedded, namespace: String::new(), database: None, data_dir: None };
        std::mem::replace(&mut self.isolation, inert)
    }

    /// POSTs a GraphQL request; returns the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        graphql_at(&self.http, self.address, query, variables).await
    }

    pub async fn place_order(&self, customer_id: &str, items: Value, key: Option<&str>) -> Value {
        let response = self
            .graphql(
                "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { commandId status orderId error { code message } } }",
                json!({ "input": { "customerId": customer_id, "items": items, "idempotencyKey": key } }),
            )
            .await;
        response["data"]["placeOrder"].clone()
    }

    pub async fn cancel_order(&self, order_id: &str, reason: &str, key: Option<&str>) -> Value {
        let response = self
            .graphql(
                "mutation($input: CancelOrderInput!) { cancelOrder(input: $input) { commandId status orderId error { code message } } }",
                json!({ "input": { "orderId": order_id, "reason": reason, "idempotencyKey": key } }),
            )
            .await;
        response["data"]["cancelOrder"].clone()
    }

    pub async fn order(&self, id: &str) -> Value {
        let response = self
            .graphql(
                "query($id: ID!) { order(id: $id) { id customerId status paymentStatus stockStatus rejectionCode \
                 rejectionReason totalCents version cancelReason placedAt updatedAt \
                 items { sku quantity unitPriceCents } } }",
                json!({ "id": id }),
            )
            .await;
        response["data"]["order"].clone()
    }

    /// POSTs a GraphQL request with an optional bearer token; returns the
    /// HTTP status and the body.
    pub async fn graphql_as(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("http://{}/graphql", self.address))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("gateway answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    /// Polls `order(id)` with a token until `done` holds.
    pub async fn wait_for_order_as(&self, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, answer) = self
                .graphql_as(Some(token), "query($id: ID!) { order(id: $id) { id status } }", json!({ "id": id }))
                .await;
            let order = answer["data"]["order"].clone();
            if done(&order) {
                return order;
            }
            assert!(tokio::time::Instant::now() < deadline, "order {id} never settled: {answer}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Registers a customer; returns its id.
    pub async fn register_customer(&self, credit_limit_cents: i64) -> String {
        let response = self
            .graphql(
                "mutation($input: RegisterCustomerInput!) { registerCustomer(input: $input) { status customerId error { code } } }",
                json!({ "input": { "name": "Test Customer", "email": format!("test-{}@example.com", Uuid::now_v7()), "creditLimitCents": credit_limit_cents, "consistency": "AWAIT_VIEW" } }),
            )
            .await;
        let payload = &response["data"]["registerCustomer"];
        assert_eq!(payload["status"], "ACCEPTED", "{response}");
        payload["customerId"].as_str().expect("customer id").to_string()
    }

    pub async fn add_product(&self, sku: &str, price_cents: i64, stock: i64) {
        let response = self
            .graphql(
                "mutation($input: AddProductInput!) { addProduct(input: $input) { status error { code } } }",
                json!({ "input": { "sku": sku, "name": format!("Product {sku}"), "priceCents": price_cents, "initialStock": stock, "consistency": "AWAIT_VIEW" } }),
            )
            .await;
        assert_eq!(response["data"]["addProduct"]["status"], "ACCEPTED", "{response}");
    }

    /// A customer with a generous limit, and the catalog [`items`] orders from.
    pub async fn shop(&self) -> String {
        self.add_product("book-1", 1250, 1000).await;
        self.add_product("pen-9", 300, 1000).await;
        self.register_customer(10_000_000).await
    }

    pub async fn product(&self, sku: &str) -> Value {
        let response = self
            .graphql(
                "query($sku: String!) { product(sku: $sku) { sku priceCents onHand reserved available version } }",
                json!({ "sku": sku }),
            )
            .await;
        response["data"]["product"].clone()
    }

    /// Polls a product until `done` holds, failing with the last answer after [`WAIT`].
    pub async fn wait_for_product_sku(&self, sku: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let product = self.product(sku).await;
            if done(&product) {
                return product;
            }
            assert!(tokio::time::Instant::now() < deadline, "product {sku} never settled; last seen: {product}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `customer(id)` until `done` holds (the customers view is
    /// projected apart from the orders view, so it may lag behind it).
    pub async fn wait_for_customer(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let query = "query($id: ID!) { customer(id: $id) { name orderCount lifetimeSpendCents openOrders } }";
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let customer = self.graphql(query, json!({ "id": id })).await["data"]["customer"].clone();
            if done(&customer) {
                return customer;
            }
            assert!(tokio::time::Instant::now() < deadline, "customer {id} never settled; last seen: {customer}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Counts events of one type in one aggregate's stream.
    pub async fn count_events(&self, aggregate: &str, id: &str, type_name: &str) -> usize {
        let events = EventLog::read_stream(&self.store, aggregate, id, 1, u64::MAX).await.expect("read stream");
        events.iter().filter(|event| event.type_name == type_name).count()
    }

    /// Polls `order(id)` until `done` holds, failing with the last answer after [`WAIT`].
    pub async fn wait_for_order(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut interval = tokio::time::interval(Duration::from_millis(25));
        loop {
            interval.tick().await;
            let order = self.order(id).await;
            if done(&order) {
                return order;
            }
            assert!(tokio::time::Instant::now() < deadline, "order {id} never became {what}; last seen: {order}");
        }
    }

    pub async fn subscribe(&self, query: &str, variables: Value) -> Subscription {
        Subscription::start(self.address, query, variables).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn graphql_at(http: &reqwest::Client, address: SocketAddr, query: &str, variables: Value) -> Value {
    http.post(format!("http://{address}/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("gateway answers")
        .json()
        .await
        .expect("a JSON body")
}

/// An id no customer has: orders for it are rejected by the saga.
pub fn customer() -> String {
    Uuid::now_v7().to_string()
}

/// Whether an order's transaction has ended.
pub fn is_final(order: &Value) -> bool {
    !order.is_null() && order["status"] != "PENDING"
}

pub fn items() -> Value {
    json!([{ "sku": "book-1", "quantity": 2, "unitPriceCents": 1250 }, { "sku": "pen-9", "quantity": 1, "unitPriceCents": 300 }])
}

/// A graphql-transport-ws client with one subscription.
pub struct Subscription {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Subscription {
    pub async fn start(address: SocketAddr, query: &str, variables: Value) -> Self {
        Self::start_as(address, None, query, variables).await
    }

    /// Subscribes with `token` in the connection_init payload.
    pub async fn start_as(address: SocketAddr, token: Option<&str>, query: &str, variables: Value) -> Self {
        let mut subscription = Self::connect(address, token).await.unwrap_or_else(|refusal| panic!("{refusal}"));
        subscription
            .socket
            .send(Message::text(
                json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } })
                    .to_string(),
            ))
            .await
            .expect("send subscribe");
        subscription
    }

    /// Opens a connection and initializes it; `Err` with what the server said when it refuses.
    pub async fn connect(address: SocketAddr, token: Option<&str>) -> Result<Self, String> {
        let mut request = format!("ws://{address}/graphql").into_client_request().expect("valid URL");
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().expect("valid header"));
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("WebSocket connects");
        let payload = token.map_or(json!({}), |token| json!({ "authorization": format!("Bearer {token}") }));
        socket
            .send(Message::text(json!({ "type": "connection_init", "payload": payload }).to_string()))
            .await
            .expect("send init");
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("an answer to connection_init")
            .expect("the socket answers")
            .map_err(|error| error.to_string())?;
        match frame {
            Message::Text(text) if text.contains("connection_ack") => Ok(Self { socket }),
            other => Err(format!("connection refused: {other:?}")),
        }
    }

    async fn next_message(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a WebSocket message within the bound")
                .expect("the socket stays open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON message"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected WebSocket frame {other:?}"),
            }
        }
    }

    /// The next `next` payload whose data satisfies `done`, within [`WAIT`].
    pub async fn next_data_until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let data = tokio::time::timeout_at(deadline, self.next_data_unbounded())
                .await
                .unwrap_or_else(|_| panic!("the subscription never delivered {what}"));
            if done(&data) {
                return data;
            }
        }
    }

    /// The next `next` payload's data if one arrives within `bound`.
    pub async fn next_data_within(&mut self, bound: Duration) -> Option<Value> {
        tokio::time::timeout(bound, self.next_data_unbounded()).await.ok()
    }

    /// The next `next` or `error` message's payload (data and errors), within [`WAIT`].
    pub async fn next_payload(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.next_payload_unbounded())
            .await
            .expect("a subscription message within the bound")
    }

    async fn next_payload_unbounded(&mut self) -> Value {
        loop {
            let message = self.next_message().await;
            match message["type"].as_str() {
                Some("next") => return message["payload"].clone(),
                Some("error") => return json!({ "errors": message["payload"] }),
                _ => continue,
            }
        }
    }

    /// The next `next` payload's data, skipping pings, within [`WAIT`].
    pub async fn next_data(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.next_data_unbounded()).await.expect("a subscription message within the bound")
    }

    /// Pings keep coming, so callers bound this themselves.
    async fn next_data_unbounded(&mut self) -> Value {
        loop {
            let message = self.next_message().await;
            match message["type"].as_str() {
                Some("next") => return message["payload"]["data"].clone(),
                Some("ping") => {
                    let _ = self.socket.send(Message::text(json!({ "type": "pong" }).to_string())).await;
                }
                _ => panic!("expected a `next` message, got {message}"),
            }
        }
    }
}

/// Every view, read in a comparable form.
#[derive(Debug, PartialEq)]
pub struct ViewSnapshot {
    orders: Vec<read_side::orders::OrderView>,
    timelines: Vec<read_side::orders::TimelineEntry>,
    customers: Vec<read_side::customers::CustomerView>,
    products: Vec<read_side::products::ProductView>,
}

pub async fn snapshot(views: &ViewStore) -> ViewSnapshot {
    let orders = OrderRepository::new(views.clone()).all().await.expect("orders");
    let ids: Vec<String> = orders.iter().map(|order| order.order_id.clone()).collect();
    let mut timelines = Vec::new();
    for chunk in ids.chunks(200) {
        timelines.extend(OrderRepository::new(views.clone()).timelines(chunk).await.expect("timelines"));
    }
    ViewSnapshot {
        orders,
        timelines,
        customers: read_side::customers::CustomerRepository::new(views.clone()).all().await.expect("customers"),
        products: read_side::products::ProductRepository::new(views.clone())
            .list(None, 100_000)
            .await
            .expect("products"),
    }
}

/// Rebuilds every view from the event store alone (which must have stopped
/// changing), into a fresh SQLite database, and asserts the live views come
/// to hold exactly the same rows.
pub async fn assert_views_match_a_replay(store: &SqlEventStore, live: &ViewStore) {
    let dir = std::env::temp_dir().join(format!("conveyor-replay-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("replay dir");
    let pool = schema::sql::connect(&format!("sqlite://{}?mode=rwc", dir.join("views.sqlite").display()), 1)
        .await
        .expect("replay views");
    read_side::migrate(&pool).await.expect("migrate");
    let log: std::sync::Arc<dyn EventLog> = std::sync::Arc::new(store.clone());
    for projection in read_side::projections() {
        let projector = read_side::Projector::new(
            pool.clone(),
            projection,
            log.clone(),
            std::sync::Arc::new(read_side::embedded::BroadcastNotifier::new(4)),
        );
        projector.catch_up().await.expect("replay");
    }
    let replayed = snapshot(&ViewStore::new(pool.clone())).await;
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    // Each view has its own projector: give the live ones time to converge.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let current = snapshot(live).await;
        if current == replayed || tokio::time::Instant::now() >= deadline {
            assert_eq!(current, replayed, "the live views equal a replay of the event store");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
