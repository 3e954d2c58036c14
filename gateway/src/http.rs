//! Routes: GraphQL (POST, GET, and WebSocket upgrades on the same path),
//! GraphiQL, the live order page (`/app`), their assets, health and readiness.

use std::sync::Arc;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::GraphQLRequest;
use axum::Json;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use schema::ports::Readiness;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::Authenticator;
use crate::graphql::{ConveyorSchema, errors::add_missing_codes};
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
    /// Named dependencies `/readyz` checks.
    pub readiness: Arc<Vec<(&'static str, Arc<dyn Readiness>)>>,
    /// Closes WebSocket connections on shutdown, so draining ends.
    pub shutdown: CancellationToken,
    pub auth: Authenticator,
    pub websocket: crate::ws::WsSettings,
    /// Answers schema-only queries without limits; `None` when introspection is off.
    pub introspection: Option<ConveyorSchema>,
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
        .route("/", get(|| async { Redirect::temporary("/graphiql") }))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn graphql_post(State(state): State<AppState>, request: Request) -> Response {
    let headers = request.headers().clone();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "POST needs Content-Type: application/json").into_response();
    }
    match <GraphQLRequest as FromRequest<AppState>>::from_request(request, &state).await {
        Ok(graphql) => execute(&state, &headers, graphql.into_inner()).await,
        Err(rejection) => rejection.into_response(),
    }
}

/// GET serves both queries (`?query=`) and WebSocket upgrades.
async fn graphql_get(State(state): State<AppState>, request: Request) -> Response {
    let headers = request.headers().clone();
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let (mut parts, _body) = request.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(upgrade) => websocket(state, upgrade),
            Err(rejection) => rejection.into_response(),
        };
    }
    match <GraphQLRequest as FromRequest<AppState>>::from_request(request, &state).await {
        // GET may only query: a mutation must not run on a safe method.
        Ok(graphql) if over_http::is_mutation(&graphql.0) => {
            (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")], "mutations need POST").into_response()
        }
        Ok(graphql) => execute(&state, &headers, graphql.into_inner()).await,
        Err(rejection) => rejection.into_response(),
    }
}

/// Serves graphql-transport-ws (and the legacy graphql-ws); see [`ws`].
fn websocket(state: AppState, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| ws::serve(socket, state.schema, state.auth, state.websocket, state.shutdown))
        .into_response()
}

/// Runs a request as the caller its `Authorization` header names (an
/// invalid token is a 401 before anything runs) and answers in the media
/// type the client accepts.
async fn execute(state: &AppState, headers: &HeaderMap, request: async_graphql::Request) -> Response {
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
    let schema = match &state.introspection {
        Some(introspection) if over_http::is_introspection(&request) => introspection,
        _ => &state.schema,
    };
    let mut response = schema.execute(request.data(caller)).await;
    add_missing_codes(&mut response);
    over_http::respond(media, &response)
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

/// GraphiQL, with every asset served by this process (no CDN).
async fn graphiql() -> Response {
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

async fn readyz(State(state): State<AppState>) -> Response {
    let mut failing = serde_json::Map::new();
    for (name, check) in state.readiness.iter() {
        if let Err(error) = check.check().await {
            failing.insert((*name).to_string(), json!(error.to_string()));
        }
    }
    if failing.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "failing": failing }))).into_response()
    }
}
