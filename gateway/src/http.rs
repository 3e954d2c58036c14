//! Routes: GraphQL (POST, GET, and WebSocket upgrades on the same path),
//! GraphiQL, the live order page (`/app`), their assets, health and readiness.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use async_graphql_axum::GraphQLRequest;
use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use schema::codes;
use schema::ports::Readiness;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::Authenticator;
use crate::graphql::errors::{add_missing_codes, rate_limited};
use crate::graphql::{AnswerKey, ConveyorSchema, OrderCache, ReadLog};
use crate::limits::{SafeMethod, refusal};
use crate::rate_limit::{RateLimiter, caller_key};
use crate::{over_http, ws};

pub const GRAPHQL_PATH: &str = "/graphql";

/// The CORS policy: none (same origin only) when `origins` is empty, any
/// origin for `*`, else exactly the listed ones. Errs with a bad origin.
pub fn cors(origins: &[String]) -> Result<CorsLayer, String> {
    let allow = if origins.is_empty() {
        return Ok(CorsLayer::new());
    } else if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        let values: Vec<HeaderValue> = origins
            .iter()
            .map(|origin| HeaderValue::from_str(origin).map_err(|_| origin.clone()))
            .collect::<Result<_, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT])
        .max_age(std::time::Duration::from_secs(3600)))
}

#[derive(Clone)]
pub struct AppState {
    pub schema: ConveyorSchema,
    /// Keeps whole answers to queries over the orders view until they change.
    pub answers: OrderCache,
    /// Named dependencies `/readyz` checks.
    pub readiness: Arc<Vec<(&'static str, Arc<dyn Readiness>)>>,
    /// Closes WebSocket connections on shutdown, so draining ends.
    pub shutdown: CancellationToken,
    pub auth: Authenticator,
    pub websocket: crate::ws::WsSettings,
    /// Whether `/graphiql` is served (it follows the introspection switch).
    pub graphiql: bool,
    /// Every caller's rate budget.
    pub limiter: RateLimiter,
    /// Open WebSocket connections per IP address and per token subject.
    pub connections: ws::ConnectionCounts,
    /// Identical state subscriptions, run once for all their subscribers.
    pub subscriptions: ws::SharedSubscriptions,
    /// The header a trusted proxy puts the client's address in, if any.
    pub client_ip_header: Option<axum::http::HeaderName>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(GRAPHQL_PATH, get(graphql_get).post(graphql_post))
        // The pages and their files travel gzipped when the browser asks:
        // GraphiQL's build is 4 MiB, about a quarter of that compressed.
        .route("/graphiql", get(graphiql).layer(compression()))
        .route("/app", get(app).layer(compression()))
        .route("/app/", get(|| async { Redirect::permanent("/app") }))
        .route("/assets/{*path}", get(asset).layer(compression()))
        .route("/", get(root))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The client's address: the last entry of the trusted proxy's header when
/// one is configured and that entry is an address (the one the proxy saw;
/// entries before it are the client's say-so), else the peer's;
/// unspecified where the server was not given it.
fn client_ip(state: &AppState, request: &Request) -> IpAddr {
    let forwarded = state.client_ip_header.as_ref().and_then(|name| {
        let last = request.headers().get_all(name).iter().next_back()?.to_str().ok()?;
        last.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
    });
    forwarded.unwrap_or_else(|| {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(address)| address.ip())
    })
}

async fn graphql_post(State(state): State<AppState>, request: Request) -> Response {
    let ip = client_ip(&state, &request);
    let headers = request.headers().clone();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "POST needs Content-Type: application/json").into_response();
    }
    // The body's bytes are the request's identity for the answer cache.
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => {
            let error = async_graphql::ParseRequestError::Io(std::io::Error::other(error.to_string()));
            return not_a_graphql_request(&headers, async_graphql_axum::rejection::GraphQLRejection(error));
        }
    };
    let request = Request::from_parts(parts, Body::from(body.clone()));
    match <GraphQLRequest as FromRequest<AppState>>::from_request(request, &state).await {
        Ok(graphql) => execute(&state, &headers, ip, (false, body), graphql.into_inner()).await,
        Err(rejection) => not_a_graphql_request(&headers, rejection),
    }
}

/// GET serves both queries (`?query=`) and WebSocket upgrades.
async fn graphql_get(State(state): State<AppState>, request: Request) -> Response {
    let ip = client_ip(&state, &request);
    let headers = request.headers().clone();
    let query = Bytes::copy_from_slice(request.uri().query().unwrap_or_default().as_bytes());
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let (mut parts, _body) = request.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(upgrade) => websocket(state, upgrade, ip),
            Err(rejection) => rejection.into_response(),
        };
    }
    match <GraphQLRequest as FromRequest<AppState>>::from_request(request, &state).await {
        // GET may only query: the schema refuses a mutation, however the
        // document arrived (text or a persisted query's hash).
        Ok(graphql) => {
            let request = graphql.into_inner();
            let safe = SafeMethod { operation_name: request.operation_name.clone() };
            execute(&state, &headers, ip, (true, query), request.data(safe)).await
        }
        Err(rejection) => not_a_graphql_request(&headers, rejection),
    }
}

/// Serves graphql-transport-ws; see [`ws`]. An upgrade that does not offer
/// it is a 400, one past the IP's connection cap a 429, before any socket.
fn websocket(state: AppState, upgrade: WebSocketUpgrade, ip: IpAddr) -> Response {
    let settings = state.websocket;
    let upgrade = upgrade
        .protocols([ws::PROTOCOL])
        .max_message_size(settings.max_message_bytes)
        .max_frame_size(settings.max_message_bytes)
        .read_buffer_size(ws::READ_BUFFER_BYTES);
    if upgrade.selected_protocol().is_none() {
        return (StatusCode::BAD_REQUEST, "WebSocket needs the graphql-transport-ws subprotocol").into_response();
    }
    let Some(ip_slot) = state.connections.try_acquire(format!("ip:{ip}"), settings.max_connections_per_ip) else {
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], "too many WebSocket connections")
            .into_response();
    };
    let connection = ws::Connection {
        schema: state.schema,
        auth: state.auth,
        settings,
        shutdown: state.shutdown,
        limiter: state.limiter,
        counts: state.connections,
        ip,
        ip_slot,
        shared: state.subscriptions,
    };
    upgrade.on_upgrade(move |socket| ws::serve(socket, connection)).into_response()
}

/// Runs a request as the caller its `Authorization` header names (an
/// invalid token is a 401 before anything runs), within the caller's rate
/// (429 past it), and answers in the media type the client accepts: the
/// answer kept for the same request bytes (`raw`: GET or not, and the
/// query string or body) from the same caller when there is one, else
/// executed, and kept when it may be (see `graphql/orders/answers.rs`).
async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    ip: IpAddr,
    (get, raw): (bool, Bytes),
    request: async_graphql::Request,
) -> Response {
    let started = std::time::Instant::now();
    let Some(media) = over_http::negotiate(headers) else {
        return (StatusCode::NOT_ACCEPTABLE, "accept application/graphql-response+json or application/json")
            .into_response();
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let caller = match state.auth.caller(authorization) {
        Ok(caller) => caller,
        Err(error) => {
            let mut response = async_graphql::Response::from_errors(vec![error.into_server_error(Default::default())]);
            add_missing_codes(&mut response);
            let mut http = over_http::respond(media, &response);
            *http.status_mut() = StatusCode::UNAUTHORIZED;
            return http;
        }
    };
    if let Err(wait) = state.limiter.check(&caller_key(&caller, ip)) {
        return over_http::respond(media, &async_graphql::Response::from_errors(vec![rate_limited(wait)]));
    }
    let key = AnswerKey { get, request: raw, caller: caller.clone() };
    if let Some(answer) = state.answers.answer(&key) {
        schema::metrics::metrics().graphql_request("query", "ok", started.elapsed());
        return over_http::respond_answer(media, answer);
    }
    let generation = state.answers.generation();
    let log = ReadLog::default();
    let response = state.schema.execute(request.data(caller).data(log.clone())).await;
    if response.errors.is_empty()
        && let Some(reads) = log.finish()
        && let Ok(answer) = serde_json::to_vec(&response)
    {
        let answer = Bytes::from(answer);
        state.answers.keep_answer(key, generation, reads, answer.clone());
        return over_http::respond_answer(media, answer);
    }
    over_http::respond(media, &response)
}

/// A body or query string that is no GraphQL request (not JSON, variables
/// not an object, …): 400 with a coded error. The parser's own words stay
/// in the log.
fn not_a_graphql_request(headers: &HeaderMap, rejection: async_graphql_axum::rejection::GraphQLRejection) -> Response {
    tracing::debug!(rejection = %rejection.0, "not a GraphQL request");
    let status = match rejection.0 {
        async_graphql::ParseRequestError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    let error = refusal(
        codes::INVALID_REQUEST,
        "not a GraphQL request: expected query, variables (an object), operationName, extensions".into(),
    );
    let media = over_http::negotiate(headers).unwrap_or(over_http::MediaType::Json);
    let mut response = over_http::respond(media, &async_graphql::Response::from_errors(vec![error]));
    *response.status_mut() = status;
    response
}

/// `/` leads to GraphiQL, or to the order page when GraphiQL is off.
async fn root(State(state): State<AppState>) -> Redirect {
    Redirect::temporary(if state.graphiql { "/graphiql" } else { "/app" })
}

/// gzip at its fastest level: most of the saving for a fraction of the CPU
/// (files are compressed per request; vendored ones are then cached an hour).
fn compression() -> CompressionLayer {
    CompressionLayer::new().quality(CompressionLevel::Fastest)
}

/// `web/`, embedded in the binary at build time.
#[derive(rust_embed::RustEmbed)]
#[folder = "../web/"]
#[include = "graphiql.html"]
#[include = "app/*"]
#[include = "vendor/*"]
struct Web;

/// GraphiQL, with every asset served by this process (no CDN); not found
/// when introspection is off (it could show nothing).
async fn graphiql(State(state): State<AppState>) -> Response {
    if !state.graphiql {
        return StatusCode::NOT_FOUND.into_response();
    }
    page("graphiql.html")
}

/// The live order page (`web/app/`): plain ES modules, no build step.
async fn app() -> Response {
    page("app/index.html")
}

fn page(path: &str) -> Response {
    match Web::get(path) {
        Some(page) => ([(header::CACHE_CONTROL, "no-cache")], Html(page.data.into_owned())).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A file of `web/`. Each carries an ETag (its SHA-256), so a browser
/// revalidates cheaply: the vendored builds are cached for an hour, the
/// app's own modules revalidated every time so an upgrade is seen at once.
async fn asset(axum::extract::Path(path): axum::extract::Path<String>, headers: HeaderMap) -> Response {
    let Some(file) = Web::get(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Weak: the same file may travel gzipped or not.
    let etag = format!("W/\"{}\"", hex(&file.metadata.sha256_hash()));
    let cache = if path.starts_with("vendor/") { "public, max-age=3600" } else { "no-cache" };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), (header::CACHE_CONTROL, cache.to_string())])
            .into_response();
    }
    let mime = file.metadata.mimetype().to_string();
    (
        [(header::CONTENT_TYPE, mime), (header::ETAG, etag), (header::CACHE_CONTROL, cache.to_string())],
        file.data.into_owned(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Ready or not, and nothing more: what failed, and why, goes to the log.
async fn readyz(State(state): State<AppState>) -> Response {
    let mut ready = true;
    for (name, check) in state.readiness.iter() {
        if let Err(error) = check.check().await {
            tracing::warn!(dependency = name, %error, "not ready");
            ready = false;
        }
    }
    if ready {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable" }))).into_response()
    }
}
