//! NATS over TLS: a server that verifies clients (mutual TLS), certificates
//! made for the test with the openssl CLI, and Conveyor's connection
//! settings (`--nats-tls-ca`, `--nats-tls-cert`, `--nats-tls-key`).

use std::path::Path;
use std::process::Command;

use schema::nats::NatsAuth;

use super::OwnServer;

/// Runs `openssl` with `args` in `dir`, failing the test with its output.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl CLI runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA, and a server and a client certificate it signed.
fn certificates(dir: &Path) {
    let days = ["-days", "1"];
    openssl(
        dir,
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"]
            .into_iter()
            .chain(days)
            .chain(["-subj", "/CN=Conveyor test CA"])
            .collect::<Vec<_>>(),
    );
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("write ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("write ext");
    for name in ["server", "client"] {
        let (key, csr, pem, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        openssl(
            dir,
            &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", "/CN=localhost"],
        );
        openssl(
            dir,
            &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem]
                .into_iter()
                .chain(days)
                .chain(["-extfile", &ext])
                .collect::<Vec<_>>(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_mutual_tls_connects_with_the_ca_and_a_client_certificate_only() {
    let _one_at_a_time = super::one_at_a_time().await;
    let dir = std::env::temp_dir().join(format!("conveyor-tls-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    certificates(&dir);
    let file = |name: &str| dir.join(name).display().to_string();
    let server = OwnServer::start(&[
        "--tlsverify".into(),
        "--tlscert".into(),
        file("server.pem"),
        "--tlskey".into(),
        file("server.key"),
        "--tlscacert".into(),
        file("ca.pem"),
    ])
    .await;
    let url = format!("nats://127.0.0.1:{}", server.port);
    let with_ca = NatsAuth { tls_ca: Some(dir.join("ca.pem")), ..Default::default() };
    let with_client_certificate = NatsAuth {
        tls_client_cert: Some(dir.join("client.pem")),
        tls_client_key: Some(dir.join("client.key")),
        ..with_ca.clone()
    };

    let client = schema::nats::connect(&url, "test-tls", &with_client_certificate).await.expect("mutual TLS connects");
    client.publish("tls.check", "over TLS".into()).await.expect("publish");
    client.flush().await.expect("flush");

    let without_client_certificate = schema::nats::connect(&url, "test-tls", &with_ca).await;
    assert!(without_client_certificate.is_err(), "the server verifies clients");
    let tls_url = format!("tls://127.0.0.1:{}", server.port);
    let without_ca = schema::nats::connect(&tls_url, "test-tls", &NatsAuth::default()).await;
    assert!(without_ca.is_err(), "a server certificate from an unknown CA is refused");
    let half = NatsAuth { tls_client_cert: Some(dir.join("client.pem")), ..with_ca };
    let refused =
        schema::nats::connect(&url, "test-tls", &half).await.map(|_| ()).expect_err("a certificate without its key");
    assert!(refused.to_string().contains("together"), "{refused}");

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
