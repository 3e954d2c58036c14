//! The edge's request limits (issue 11): one set of limits for every
//! operation, introspection included (point 1); mutations only over POST,
//! persisted or not (point 2); nothing internal reaches a client (point 7).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Backend, Isolation, TestApp, items};
use crate::websocket_limits::{init, next, subscribe};

crate::on_both_backends!(
    introspection_is_held_to_the_limits_every_operation_is,
    a_mutation_never_runs_over_get_even_as_a_persisted_hash,
    errors_carry_codes_and_no_internal_text_on_every_path,
);

async fn introspection_is_held_to_the_limits_every_operation_is(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.edge.max_response_bytes = 256 * 1024;
    })
    .await;
    let graphql = format!("http://{}/graphql", app.address);

    // GraphiQL's own introspection query is answered, under the same limits.
    let standard = app.graphql(include_str!("introspection.graphql"), json!({})).await;
    assert!(standard["errors"].is_null(), "{standard}");
    let size = standard.to_string().len();
    assert!(size < 256 * 1024, "the schema fits the configured answer size: {size} bytes");

    // 2 000 aliased `__schema` selections: refused before anything runs,
    // with a code and a short answer.
    let aliases: String =
        (0..2000).map(|i| format!("s{i}: __schema {{ types {{ name fields {{ name }} }} }} ")).collect();
    let response = app.http.post(&graphql).json(&json!({ "query": format!("{{ {aliases} }}") })).send().await;
    let body = response.expect("answers").text().await.expect("a body");
    assert!(body.len() < 1024, "a refusal, not a schema times 2 000: {} bytes", body.len());
    let refused: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(refused["errors"][0]["extensions"]["code"], "QUERY_TOO_LARGE", "{refused}");
    assert!(refused["data"].is_null(), "{refused}");

    // A fragment bomb is counted as it would expand, and refused the same way.
    let mut bomb = String::from("{ ...F0 } ");
    for level in 0..20 {
        bomb.push_str(&format!("fragment F{level} on Query {{ ...F{next} ...F{next} }} ", next = level + 1));
    }
    bomb.push_str("fragment F20 on Query { __typename }");
    let refused = app.graphql(&bomb, json!({})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "QUERY_TOO_LARGE", "{refused}");

    // Depth and complexity hold for introspection too.
    let deep = format!("{{ __schema {{ types {{ {}name{} }} }} }}", "fields { type { ".repeat(8), " } }".repeat(8));
    let refused = app.graphql(&deep, json!({})).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{refused}");
    // Within every count, the answer is too large: refused with its own code.
    let wide: String = (0..40)
        .map(|i| {
            format!("s{i}: __schema {{ types {{ name description fields {{ name description type {{ name }} }} }} }} ")
        })
        .collect();
    let refused = app.graphql(&format!("{{ {wide} }}"), json!({})).await;
    let text = refused.to_string();
    assert_eq!(refused["errors"][0]["extensions"]["code"], "RESPONSE_TOO_LARGE", "{}", &text[..text.len().min(500)]);

    // The same limits over WebSocket.
    let mut socket = init(app.address, None).await.expect("acknowledged");
    let aliases: String = (0..60).map(|i| format!("s{i}: __schema {{ types {{ name }} }} ")).collect();
    subscribe(&mut socket, "many", &format!("{{ {aliases} }}")).await;
    let answer = next(&mut socket).await.expect("an answer");
    let errors = if answer["type"] == "error" { &answer["payload"] } else { &answer["payload"]["errors"] };
    assert_eq!(errors[0]["extensions"]["code"], "QUERY_TOO_LARGE", "{answer}");
}

async fn a_mutation_never_runs_over_get_even_as_a_persisted_hash(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let graphql = format!("http://{}/graphql", app.address);
    app.add_product("get-1", 100, 10).await;
    let restock =
        "mutation { restockProduct(input: { sku: \"get-1\", quantity: 1, consistency: AWAIT_VIEW }) { status } }";
    let hash = format!("{:x}", Sha256::digest(restock.as_bytes()));
    let persisted = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } }).to_string();

    // Over POST the mutation runs, and its hash is now known.
    let posted: Value = app
        .http
        .post(&graphql)
        .json(&json!({ "query": restock, "extensions": serde_json::from_str::<Value>(&persisted).expect("json") }))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    assert_eq!(posted["data"]["restockProduct"]["status"], "ACCEPTED", "{posted}");
    assert_eq!(app.product("get-1").await["onHand"], 11);

    // Over GET, by hash alone or as text: 405, and nothing runs.
    for query in [None, Some(restock)] {
        let mut parameters = vec![("extensions", persisted.clone())];
        if let Some(query) = query {
            parameters.push(("query", query.to_string()));
        }
        let refused = app.http.get(&graphql).query(&parameters).send().await.expect("answers");
        assert_eq!(refused.status().as_u16(), 405, "as text: {}", query.is_some());
        assert_eq!(refused.headers()["allow"], "POST");
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["errors"][0]["extensions"]["code"], "MUTATION_NEEDS_POST", "{body}");
    }
    // A query by hash over GET is still served.
    let query = "{ product(sku: \"get-1\") { onHand } }";
    let query_hash = format!("{:x}", Sha256::digest(query.as_bytes()));
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": query_hash } }).to_string();
    let _ = app.http.get(&graphql).query(&[("query", query), ("extensions", extensions.as_str())]).send().await;
    let by_hash: Value = app
        .http
        .get(&graphql)
        .query(&[("extensions", extensions.as_str())])
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    assert_eq!(by_hash["data"]["product"]["onHand"], 11, "the GETs changed nothing: {by_hash}");
    assert_eq!(app.count_events("product", "get-1", "ProductRestocked").await, 1);
}

async fn errors_carry_codes_and_no_internal_text_on_every_path(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let base = format!("http://{}", app.address);

    // /readyz says ready, and nothing else.
    let ready: Value =
        app.http.get(format!("{base}/readyz")).send().await.expect("answers").json().await.expect("json");
    assert_eq!(ready, json!({ "status": "ready" }));

    // A body that is no GraphQL request: a coded 400, not the parser's words.
    let graphql = format!("{base}/graphql");
    let odd = app.http.post(&graphql).json(&json!({ "query": "{ __typename }", "variables": 7 })).send().await;
    let odd = odd.expect("answers");
    assert_eq!(odd.status().as_u16(), 400);
    let body: Value = odd.json().await.expect("a JSON body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_REQUEST", "{body}");
    assert!(!body.to_string().contains("untagged"), "{body}");

    // Over WebSocket, a refused operation's errors carry codes.
    let mut socket = init(app.address, None).await.expect("acknowledged");
    subscribe(&mut socket, "bad", "subscription { nope }").await;
    let answer = next(&mut socket).await.expect("an answer");
    let errors = if answer["type"] == "error" { &answer["payload"] } else { &answer["payload"]["errors"] };
    assert_eq!(errors[0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{answer}");

    // A list's nested loader fails inside: INTERNAL and a correlation id, not the driver's text.
    let customer = app.shop().await;
    let placed = app.place_order(&customer, items(), None).await;
    let order_id = placed["orderId"].as_str().expect("an order id").to_string();
    app.wait_for_order(&order_id, "in the view", |order| !order.is_null()).await;
    let (_, views) = app.isolation.pools().await;
    sqlx::query("DROP TABLE customers").execute(&views).await.expect("drop the customers view");
    let broken = app.graphql("{ orders(first: 5) { edges { node { id customer { name } } } } }", json!({})).await;
    let error = &broken["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL", "{broken}");
    let correlation = error["extensions"]["correlationId"].as_str().expect("a correlation id");
    let message = error["message"].as_str().unwrap_or("");
    assert!(message.contains(correlation) && !message.to_lowercase().contains("customers"), "{broken}");

    if backend == Backend::Server {
        // The database gone: /readyz is 503 and names nothing.
        let database = app.isolation.database.as_ref().expect("a test database").name.clone();
        let admin_url =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin = schema::sql::connect(&admin_url, 1).await.expect("admin");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")))
            .execute(&admin)
            .await
            .expect("drop the database");
        let unready = app.http.get(format!("{base}/readyz")).send().await.expect("answers");
        assert_eq!(unready.status().as_u16(), 503);
        assert_eq!(unready.json::<Value>().await.expect("json"), json!({ "status": "unavailable" }));
    }
}
