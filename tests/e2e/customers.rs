//! Registration: one customer per email address, also when registrations
//! race, on both backends.

use futures::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Backend, TestApp};

crate::on_both_backends!(an_email_registers_one_customer_even_when_registrations_race);

const REGISTER: &str = "mutation($input: RegisterCustomerInput!) { registerCustomer(input: $input) { status customerId error { code message } } }";

async fn register(app: &TestApp, name: &str, email: &str, key: Option<&str>) -> Value {
    let input = json!({ "name": name, "email": email, "creditLimitCents": 1000, "idempotencyKey": key });
    app.graphql(REGISTER, json!({ "input": input })).await["data"]["registerCustomer"].clone()
}

async fn an_email_registers_one_customer_even_when_registrations_race(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tag = Uuid::now_v7().simple().to_string();
    let email = format!("ada-{tag}@example.com");

    let first = register(&app, "Ada", &email, Some("signup-1")).await;
    assert_eq!(first["status"], "ACCEPTED", "{first}");
    // Another spelling of the same address, another request: refused, nothing recorded.
    let again = register(&app, "Ada again", &format!("  {}  ", email.to_uppercase()), None).await;
    assert_eq!(again["status"], "REJECTED", "{again}");
    assert_eq!(again["error"]["code"], "CUSTOMER_EMAIL_TAKEN", "{again}");
    let refused_id = again["customerId"].as_str().expect("an id");
    assert_eq!(app.count_events("customer", refused_id, "CustomerRegistered").await, 0);
    // The first request retried is still its own answer.
    assert_eq!(register(&app, "Ada", &email, Some("signup-1")).await, first, "a retry of the first registration");

    // Ten registrations racing for a fresh address: exactly one wins.
    let contested = format!("grace-{tag}@example.com");
    let answers = join_all((0..10).map(|n| {
        let (app, contested) = (&app, contested.clone());
        async move { register(app, &format!("Grace {n}"), &contested, None).await }
    }))
    .await;
    let accepted: Vec<&Value> = answers.iter().filter(|answer| answer["status"] == "ACCEPTED").collect();
    assert_eq!(accepted.len(), 1, "one winner: {answers:?}");
    assert!(
        answers
            .iter()
            .filter(|answer| answer["status"] != "ACCEPTED")
            .all(|answer| answer["error"]["code"] == "CUSTOMER_EMAIL_TAKEN"),
        "the others are told why: {answers:?}"
    );
    for answer in &answers {
        let id = answer["customerId"].as_str().expect("an id");
        let registered = app.count_events("customer", id, "CustomerRegistered").await;
        assert_eq!(registered, usize::from(answer["status"] == "ACCEPTED"), "{answer}");
    }
}
