//! Rate limits per caller (issue 11, point 5): a token's subject, else the
//! client's address, over HTTP and WebSocket; 429 with `Retry-After`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, Isolation, TestApp, WAIT};
use crate::websocket_limits::{SECRET, init, next, subscribe, token};

crate::on_both_backends!(a_caller_past_its_rate_is_told_to_retry_later_and_others_are_not);

const QUERY: &str = "{ products(first: 1) { edges { cursor } } }";

async fn a_caller_past_its_rate_is_told_to_retry_later_and_others_are_not(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.jwt_secret = Some(SECRET.into());
        common.edge.rate_limit = 1;
        common.edge.rate_limit_burst = 3;
        common.edge.client_ip_header = Some(gateway::HeaderName::from_static("x-forwarded-for"));
    })
    .await;
    let graphql = format!("http://{}/graphql", app.address);
    let post = |token: Option<String>| {
        let mut request = app.http.post(&graphql).json(&json!({ "query": QUERY }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // Anonymous callers are their address: three at once, then 429.
    for _ in 0..3 {
        let answer = post(None).await.expect("answers");
        assert_eq!(answer.status().as_u16(), 200);
    }
    let limited = post(None).await.expect("answers");
    assert_eq!(limited.status().as_u16(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(retry_after >= 1, "Retry-After in whole seconds: {retry_after}");
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{body}");
    assert!(body["errors"][0]["extensions"]["retryAfterSeconds"].as_u64().is_some_and(|s| s >= 1), "{body}");
    // GET counts as well.
    let get = app.http.get(&graphql).query(&[("query", QUERY)]).send().await.expect("answers");
    assert_eq!(get.status().as_u16(), 429);

    // Behind the trusted proxy, the address it appended last is the caller:
    // another client has its own budget; what a client claimed before it does not count.
    let via_proxy = |forwarded: &'static str| {
        app.http.post(&graphql).header("X-Forwarded-For", forwarded).json(&json!({ "query": QUERY })).send()
    };
    for forwarded in ["10.0.0.1, 203.0.113.7", "10.0.0.2, 203.0.113.7", "10.0.0.3, 203.0.113.7"] {
        assert_eq!(via_proxy(forwarded).await.expect("answers").status().as_u16(), 200, "{forwarded}");
    }
    let spoofed = via_proxy("10.0.0.4, 203.0.113.7").await.expect("answers");
    assert_eq!(spoofed.status().as_u16(), 429, "203.0.113.7 is past its burst, whatever it claims");

    // A token's subject has a budget of its own, from the same address.
    for _ in 0..3 {
        assert_eq!(post(Some(token("alice"))).await.expect("answers").status().as_u16(), 200);
    }
    assert_eq!(post(Some(token("alice"))).await.expect("answers").status().as_u16(), 429);

    // Over WebSocket each subscription takes from the same budget.
    let mut socket = init(app.address, Some(&token("bob"))).await.expect("acknowledged");
    for id in ["1", "2", "3"] {
        subscribe(&mut socket, id, "{ __typename }").await;
        let answer = next(&mut socket).await.expect("an answer");
        assert_eq!(answer["payload"]["data"]["__typename"], "Query", "{answer}");
        assert_eq!(next(&mut socket).await.expect("complete")["type"], "complete");
    }
    subscribe(&mut socket, "4", "{ __typename }").await;
    let refused = next(&mut socket).await.expect("an answer");
    assert_eq!((refused["type"].as_str(), refused["id"].as_str()), (Some("error"), Some("4")), "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{refused}");
    // bob's HTTP requests share it.
    assert_eq!(post(Some(token("bob"))).await.expect("answers").status().as_u16(), 429);

    // The budget comes back with time.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = post(None).await.expect("answers").status().as_u16();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(tokio::time::Instant::now() < deadline, "the address's budget never came back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
