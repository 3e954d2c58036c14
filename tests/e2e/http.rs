//! The HTTP surface around GraphQL: GraphiQL, the redirect, health, GET queries.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

crate::on_both_backends!(graphiql_health_and_get_queries_are_served);

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
    assert!(page.contains("graphiql") && page.contains("/graphql"), "{page}");

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
