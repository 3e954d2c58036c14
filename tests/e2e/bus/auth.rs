//! NATS authentication as Conveyor's `--nats-*` settings give it: an nkey
//! seed file, user and password (flags or URL), a token (flag or URL),
//! each against a nats-server of the test's own that requires it.

use conveyor::config::NatsAuthArgs;
use schema::nats::NatsAuth;

use super::OwnServer;

pub(super) async fn connects(url: &str, auth: &NatsAuth) -> bool {
    match schema::nats::connect(url, "test-auth", auth).await {
        Ok(client) => client.flush().await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_seeds_and_user_passwords_authenticate_and_nothing_else_does() {
    let _one_at_a_time = super::one_at_a_time().await;
    let dir = std::env::temp_dir().join(format!("conveyor-auth-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let user = nkeys::KeyPair::new_user();
    let config = dir.join("auth.conf");
    std::fs::write(
        &config,
        format!(
            "authorization {{ users = [ {{ nkey: {} }}, {{ user: ops, password: \"s3cret:/@x\" }} ] }}\n",
            user.public_key()
        ),
    )
    .expect("write the server's configuration");
    let server = OwnServer::start(&["-c".into(), config.display().to_string()]).await;
    let url = format!("nats://127.0.0.1:{}", server.port);

    // The seed from a file, as --nats-nkey-seed-file reads it.
    let seed_file = dir.join("user.nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed().expect("a seed"))).expect("write the seed");
    let args = NatsAuthArgs { nats_nkey_seed_file: Some(seed_file), ..Default::default() };
    assert!(connects(&url, &args.auth().expect("the seed file is read")).await, "the nkey authenticates");
    let stranger = NatsAuth { nkey_seed: Some(nkeys::KeyPair::new_user().seed().expect("seed")), ..Default::default() };
    assert!(!connects(&url, &stranger).await, "an unknown nkey is refused");

    let ops = NatsAuth { user: Some("ops".into()), password: Some("s3cret:/@x".into()), ..Default::default() };
    assert!(connects(&url, &ops).await, "user and password authenticate");
    let in_url = format!("nats://ops:s3cret%3A%2F%40x@127.0.0.1:{}", server.port);
    assert!(connects(&in_url, &NatsAuth::default()).await, "user and password in the URL authenticate");
    let wrong = NatsAuth { password: Some("guess".into()), ..ops };
    assert!(!connects(&url, &wrong).await, "a wrong password is refused");
    assert!(!connects(&url, &NatsAuth::default()).await, "no credentials, no connection");

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_authenticates_as_a_flag_or_in_the_url() {
    let _one_at_a_time = super::one_at_a_time().await;
    let server = OwnServer::start(&["--auth".into(), "t0ken-of-trust".into()]).await;
    let url = format!("nats://127.0.0.1:{}", server.port);
    let token = NatsAuth { token: Some("t0ken-of-trust".into()), ..Default::default() };
    assert!(connects(&url, &token).await, "the token authenticates");
    assert!(connects(&format!("nats://t0ken-of-trust@127.0.0.1:{}", server.port), &NatsAuth::default()).await);
    let wrong = NatsAuth { token: Some("guess".into()), ..Default::default() };
    assert!(!connects(&url, &wrong).await, "a wrong token is refused");
    assert!(!connects(&url, &NatsAuth::default()).await, "no token, no connection");
}
