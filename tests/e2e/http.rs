//! The HTTP surface around GraphQL: GraphiQL, the redirect, health, GET queries.

use serde_json::{Value, json};

use sha2::{Digest, Sha256};

use crate::helpers::{Backend, Isolation, TestApp};

crate::on_both_backends!(
    graphiql_health_and_get_queries_are_served,
    cors_body_limits_persisted_queries_and_introspection_follow_the_settings,
    graphql_over_http_negotiates_media_types_status_codes_and_methods,
    the_standard_introspection_query_passes_the_limits_and_internal_errors_hide_their_cause,
);

async fn graphiql_health_and_get_queries_are_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let base = format!("http://{}", app.address);
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

    let root = no_redirects.get(format!("{base}/")).send().await.expect("root answers");
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(root.headers()["location"], "/graphiql");

    let graphiql = app.http.get(format!("{base}/graphiql")).send().await.expect("graphiql answers");
    assert!(graphiql.status().is_success());
    let page = graphiql.text().await.expect("html");
    assert!(
        page.contains("GraphiQL") && page.contains("/graphql") && page.contains("graphqlWs.createClient"),
        "{page}"
    );
    // Offline: nothing is fetched from another host, and every asset is served here.
    let assets = served_assets(&app.http, &base, &page).await;
    assert_eq!(assets.len(), 5, "react, react-dom, graphiql js and css, graphql-ws: {assets:?}");

    // The live order page, and every module it imports, likewise.
    let page = app.http.get(format!("{base}/app")).send().await.expect("/app answers");
    assert!(page.status().is_success());
    let page = page.text().await.expect("html");
    assert!(page.contains("/assets/app/main.js") && page.contains("/assets/vendor/graphql-ws.min.js"), "{page}");
    let mut modules = served_assets(&app.http, &base, &page).await;
    let mut read = 0;
    while read < modules.len() {
        let module = modules[read].clone();
        read += 1;
        if !module.ends_with(".js") || module.contains("/vendor/") {
            continue;
        }
        let source = app.http.get(format!("{base}{module}")).send().await.expect("module").text().await.expect("text");
        // `from './api.js'`: relative imports resolve beside the importing module.
        for import in source.split(['\'', '"']).filter(|part| part.starts_with("./") && part.ends_with(".js")) {
            let path = format!("/assets/app/{}", import.trim_start_matches("./"));
            if !modules.contains(&path) {
                let found = served_assets(&app.http, &base, &format!("\"{path}\"")).await;
                modules.extend(found);
            }
        }
    }
    let names: Vec<&str> = modules.iter().filter_map(|path| path.rsplit('/').next()).collect();
    for expected in ["main.js", "api.js", "orders.js", "place-order.js", "order.js", "setup.js", "ui.js", "app.css"] {
        assert!(names.contains(&expected), "{expected} is not reachable from /app: {names:?}");
    }

    // Assets revalidate by ETag: an unchanged file is a 304 with no body.
    let module = app.http.get(format!("{base}/assets/app/main.js")).send().await.expect("answers");
    assert_eq!(module.headers()["cache-control"], "no-cache");
    let etag = module.headers()["etag"].clone();
    let again =
        app.http.get(format!("{base}/assets/app/main.js")).header("If-None-Match", etag).send().await.expect("answers");
    assert_eq!(again.status().as_u16(), 304);
    assert!(again.bytes().await.map(|body| body.is_empty()).unwrap_or(false));
    // Compressed for a browser that accepts it (GraphiQL's build is 4 MiB).
    let gzipped = app
        .http
        .get(format!("{base}/assets/vendor/graphiql.min.js"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("answers");
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let compressed = gzipped.bytes().await.map(|body| body.len()).unwrap_or(0);
    assert!(compressed > 0 && compressed < 2_000_000, "{compressed} bytes gzipped");
    let missing = app.http.get(format!("{base}/assets/vendor/missing.js")).send().await.expect("answers");
    assert_eq!(missing.status().as_u16(), 404);

    let health = app.http.get(format!("{base}/healthz")).send().await.expect("healthz answers");
    assert_eq!(health.json::<Value>().await.expect("json"), json!({ "status": "ok" }));
    let ready = app.http.get(format!("{base}/readyz")).send().await.expect("readyz answers");
    assert!(ready.status().is_success());

    let query = app
        .http
        .get(format!("{base}/graphql"))
        .query(&[("query", "{ orders(first: 1) { edges { cursor } pageInfo { hasNextPage } } }")])
        .send()
        .await
        .expect("GET query answers")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(query["data"]["orders"]["pageInfo"]["hasNextPage"], false, "{query}");
}

/// The `/assets/…` paths `page` names, each checked to be served here with
/// its content type; fails if the page names any other host.
async fn served_assets(http: &reqwest::Client, base: &str, page: &str) -> Vec<String> {
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//unpkg"), "{page}");
    let assets: Vec<String> =
        page.split(['"', '\'']).filter(|part| part.starts_with("/assets/")).map(String::from).collect();
    for asset in &assets {
        let response = http.get(format!("{base}{asset}")).send().await.expect("asset answers");
        assert!(response.status().is_success(), "{asset}: {}", response.status());
        let kind = response.headers()["content-type"].to_str().unwrap_or("").to_string();
        let expected = if asset.ends_with(".css") { "text/css" } else { "text/javascript" };
        assert!(kind.starts_with(expected), "{asset}: {kind}");
        assert!(response.bytes().await.map(|body| body.len()).unwrap_or(0) > 500, "{asset} has content");
    }
    assets
}

async fn cors_body_limits_persisted_queries_and_introspection_follow_the_settings(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.cors_origins = vec!["https://shop.example".into()];
        common.max_body_bytes = 4096;
        common.disable_introspection = true;
    })
    .await;
    let graphql = format!("http://{}/graphql", app.address);

    // CORS: the configured origin may call, another may not.
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, &graphql)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
    };
    let allowed = preflight("https://shop.example").await.expect("preflight answers");
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://shop.example");
    let other = preflight("https://evil.example").await.expect("preflight answers");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A body over the limit is refused before it is parsed.
    let big = json!({ "query": format!("{{ orders(first: 1) {{ edges {{ cursor }} }} }} #{}", "x".repeat(8000)) });
    let refused = app.http.post(&graphql).json(&big).send().await.expect("answers");
    assert_eq!(refused.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);

    // Automatic persisted queries: the hash alone, then with the query, then alone.
    let query = "{ orders(first: 1) { pageInfo { hasNextPage } } }";
    let hash = format!("{:x}", Sha256::digest(query.as_bytes()));
    let persisted = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let (http, endpoint) = (&app.http, graphql.as_str());
    let post = |body: Value| async move {
        http.post(endpoint).json(&body).send().await.expect("answers").json::<Value>().await.expect("json")
    };
    let unknown = post(json!({ "extensions": persisted })).await;
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND", "{unknown}");
    let registered = post(json!({ "query": query, "extensions": persisted })).await;
    assert_eq!(registered["data"]["orders"]["pageInfo"]["hasNextPage"], false, "{registered}");
    let by_hash = post(json!({ "extensions": persisted })).await;
    assert_eq!(by_hash, registered);

    // Introspection is off, and GraphiQL with it; `/` leads to the order page.
    let introspection = post(json!({ "query": "{ __schema { queryType { name } } }" })).await;
    assert!(introspection["data"]["__schema"].is_null(), "no schema is given away: {introspection}");
    let base = format!("http://{}", app.address);
    let graphiql = app.http.get(format!("{base}/graphiql")).send().await.expect("answers");
    assert_eq!(graphiql.status().as_u16(), 404);
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let root = no_redirects.get(format!("{base}/")).send().await.expect("root answers");
    assert_eq!(root.headers()["location"], "/app");
}

async fn graphql_over_http_negotiates_media_types_status_codes_and_methods(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let graphql = format!("http://{}/graphql", app.address);
    let post = |accept: Option<&'static str>, query: &'static str| {
        let mut request = app.http.post(&graphql).json(&json!({ "query": query }));
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        request.send()
    };
    let content_type = |response: &reqwest::Response| {
        response.headers().get("content-type").and_then(|value| value.to_str().ok()).unwrap_or("").to_string()
    };
    let good = "{ products(first: 1) { edges { cursor } } }";
    let invalid = "{ products(first: 1) { nope } }";

    let modern = post(Some("application/graphql-response+json"), good).await.expect("answers");
    assert_eq!((modern.status().as_u16(), content_type(&modern)), (200, "application/graphql-response+json".into()));
    let modern_error = post(Some("application/graphql-response+json"), invalid).await.expect("answers");
    assert_eq!(modern_error.status().as_u16(), 400, "a validation error is a bad request");
    let body: Value = modern_error.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");

    let legacy_error = post(Some("application/json"), invalid).await.expect("answers");
    assert_eq!((legacy_error.status().as_u16(), content_type(&legacy_error)), (200, "application/json".into()));
    let html_only = post(Some("text/html"), good).await.expect("answers");
    assert_eq!(html_only.status().as_u16(), 406);

    let mutation_over_get = app
        .http
        .get(&graphql)
        .query(&[("query", "mutation { restockProduct(input: { sku: \"x\", quantity: 1 }) { status } }")])
        .send()
        .await
        .expect("answers");
    assert_eq!(mutation_over_get.status().as_u16(), 405);
    assert_eq!(mutation_over_get.headers()["allow"], "POST");
}

async fn the_standard_introspection_query_passes_the_limits_and_internal_errors_hide_their_cause(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // graphql-js's getIntrospectionQuery(), which GraphiQL sends: answered
    // under the limits every operation has (it is 15 deep).
    let introspection = app.graphql(include_str!("introspection.graphql"), json!({})).await;
    assert!(introspection["errors"].is_null(), "{introspection}");
    let types = introspection["data"]["__schema"]["types"].as_array().map(Vec::len).unwrap_or(0);
    assert!(types > 20, "the whole schema: {types} types");
    // The limits still hold for everything else.
    let deep = format!("{{ {}id{} }}", "orders { edges { node { customer { ".repeat(5), " } } } }".repeat(5));
    let refused = app.graphql(&deep, json!({})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{refused}");
    // A connection costs its page size times its children: 100 orders of 100 orders is too much.
    let costly =
        "{ orders(first: 100) { edges { node { customer { orders(first: 100) { edges { node { id } } } } } } } }";
    let refused = app.graphql(costly, json!({})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{refused}");
    assert!(refused["errors"][0]["message"].as_str().is_some_and(|m| m.contains("complex")), "{refused}");
    let affordable =
        "{ orders(first: 5) { edges { node { customer { orders(first: 5) { edges { node { id } } } } } } } }";
    let answered = app.graphql(affordable, json!({})).await;
    assert!(answered["errors"].is_null(), "{answered}");

    // An internal failure: the client gets INTERNAL and a correlation id, not the cause.
    let (_, views) = app.isolation.pools().await;
    sqlx::query("DROP TABLE products").execute(&views).await.expect("drop the products view");
    let broken = app.graphql("{ products(first: 1) { edges { cursor } } }", json!({})).await;
    let error = &broken["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL", "{broken}");
    let correlation = error["extensions"]["correlationId"].as_str().expect("a correlation id");
    assert!(uuid::Uuid::parse_str(correlation).is_ok());
    let message = error["message"].as_str().unwrap_or("");
    assert!(message.contains(correlation) && !message.to_lowercase().contains("products"), "{message}");
}
