//! NATS decentralized authentication (`--nats-creds` / `NATS_CREDS`): a
//! nats-server in operator mode trusts an operator, preloads one account
//! (JetStream enabled) signed by it, and knows users only by the JWTs the
//! account signs — the setup `nsc` produces. The test issues the three JWTs
//! itself with `nkeys` and writes the user's `.creds` file as `nsc` would;
//! then a whole `conveyor all` runs an order to CONFIRMED with nothing but
//! that file, and a user the account never signed is refused.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use schema::nats::NatsAuth;
use serde_json::{Value, json};

use super::OwnServer;
use super::auth::connects;
use crate::helpers::{Backend, Isolation};
use crate::processes::{Conveyor, seed_shop, server_env, wait_final, wait_until_ready};

/// A NATS JWT (`ed25519-nkey`): `claims` with issuer, subject and issue time
/// added, signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({ "typ": "JWT", "alg": "ed25519-nkey" }).to_string());
    let claims = json!({
        "jti": uuid::Uuid::now_v7().simple().to_string().to_uppercase(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = issuer.sign(signed.as_bytes()).expect("the issuer signs");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A user of `account`, with every right, as `nsc add user` makes one.
fn user_jwt(account: &KeyPair, user: &KeyPair, name: &str) -> String {
    let nats = json!({ "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2 });
    jwt(account, &user.public_key(), name, nats)
}

/// The `.creds` file `nsc generate creds` writes: the user JWT, then its seed.
fn write_creds(path: &Path, jwt: &str, user: &KeyPair) {
    let seed = user.seed().expect("a user seed");
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    );
    std::fs::write(path, text).expect("write the creds file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_signed_by_the_operators_account_runs_the_server_path_and_no_other_user_connects() {
    let _one_at_a_time = super::one_at_a_time().await;
    let dir = std::env::temp_dir().join(format!("conveyor-creds-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(dir.join("store")).expect("temp dir");

    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    // JetStream needs the server's system account.
    let system = KeyPair::new_account();
    let operator_claims = json!({ "system_account": system.public_key(), "type": "operator", "version": 2 });
    let operator_jwt = jwt(&operator, &operator.public_key(), "conveyor-test", operator_claims);
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
        "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt =
        jwt(&operator, &account.public_key(), "shop", json!({ "limits": unlimited, "type": "account", "version": 2 }));
    let system_jwt = jwt(&operator, &system.public_key(), "SYS", json!({ "type": "account", "version": 2 }));
    std::fs::write(dir.join("operator.jwt"), &operator_jwt).expect("write the operator JWT");
    let config = dir.join("server.conf");
    std::fs::write(
        &config,
        format!(
            "operator: \"{operator}\"\nsystem_account: {system}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {account}: \"{account_jwt}\"\n  {system}: \"{system_jwt}\"\n}}\n\
             jetstream {{ store_dir: \"{store}\" }}\n",
            operator = dir.join("operator.jwt").display(),
            system = system.public_key(),
            account = account.public_key(),
            store = dir.join("store").display(),
        ),
    )
    .expect("write the server's configuration");
    let server = OwnServer::start(&["-c".into(), config.display().to_string()]).await;
    let url = format!("nats://127.0.0.1:{}", server.port);

    let user = KeyPair::new_user();
    let creds = dir.join("conveyor.creds");
    write_creds(&creds, &user_jwt(&account, &user, "conveyor"), &user);
    let with_creds = NatsAuth { credentials_file: Some(creds.clone()), ..Default::default() };
    assert!(connects(&url, &with_creds).await, "the account's user connects with its .creds file");

    // A user signed by an account the operator never signed, and no credentials at all.
    let stranger = KeyPair::new_user();
    let stranger_creds = dir.join("stranger.creds");
    write_creds(&stranger_creds, &user_jwt(&KeyPair::new_account(), &stranger, "stranger"), &stranger);
    let stranger_auth = NatsAuth { credentials_file: Some(stranger_creds), ..Default::default() };
    assert!(!connects(&url, &stranger_auth).await, "a user of an unknown account is refused");
    assert!(!connects(&url, &NatsAuth::default()).await, "no credentials, no connection");
    let missing = NatsAuth { credentials_file: Some(dir.join("absent.creds")), ..Default::default() };
    let error = schema::nats::connect(&url, "test-creds", &missing).await.expect_err("a missing file fails");
    assert!(error.to_string().contains("absent.creds"), "the error names the file: {error}");

    // The whole server path (streams, consumers, KV, the saga) on those credentials alone.
    let isolation = Isolation::new(Backend::Server).await;
    let mut env: Vec<(&str, String)> =
        server_env(&isolation).into_iter().filter(|(key, _)| *key != "NATS_URL").collect();
    env.push(("NATS_URL", url.clone()));
    env.push(("NATS_CREDS", creds.display().to_string()));
    let conveyor = Conveyor::start(&["all"], &env);
    let gateway = conveyor.graphql_address();
    wait_until_ready(gateway).await;
    let http = reqwest::Client::new();
    let customer = seed_shop(&http, gateway).await;
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
    let input =
        json!({ "input": { "customerId": customer, "items": crate::helpers::items(), "idempotencyKey": "creds-1" } });
    let answer = crate::helpers::graphql_at(&http, gateway, place, input).await;
    let order = answer["data"]["placeOrder"]["orderId"].as_str().unwrap_or_else(|| panic!("an order id: {answer}"));
    let order = order.to_owned();
    let view = wait_final(&http, gateway, &order).await;
    assert_eq!(view["status"], "CONFIRMED", "the order went the whole way on the .creds user: {view}");

    drop(conveyor);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
