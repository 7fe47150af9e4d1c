//! HTTPS on the client listener, and a renewed certificate picked up without a restart.

use std::time::Duration;

use crate::support::{Upstream, Whopgate, config};

fn self_signed(name: &str) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

fn client_trusting(cert_pem: &str, gate: &Whopgate) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .resolve("gate.test", gate.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_and_picks_up_a_renewed_certificate() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let (cert, key) = self_signed("gate.test");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let routes = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n[[route]]\npath = \"/\"\npublic = true\n",
        cert_path.display(),
        key_path.display()
    );
    let gate = Whopgate::start(&config(&up.url(), &routes));
    let url = format!("https://gate.test:{}/hello", gate.addr.port());

    let response = client_trusting(&cert, &gate).get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(up.last().header("x-forwarded-proto"), ["https"]);

    // h2 is offered over TLS.
    let h2 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()])
        .resolve("gate.test", gate.addr)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(&url).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);

    // Renew: new files in place (as certbot would), no restart.
    let (new_cert, new_key) = self_signed("gate.test");
    std::fs::write(&key_path, &new_key).unwrap();
    std::fs::write(&cert_path, &new_cert).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let response = client_trusting(&new_cert, &gate).get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "the renewed certificate was not served");
    let old = client_trusting(&cert, &gate).get(&url).send().await;
    assert!(old.is_err(), "the old certificate is still served");
    assert!(gate.wait_for_log("reloaded the TLS certificate", Duration::from_secs(2)).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, "not a certificate").unwrap();
    std::fs::write(&key_path, "not a key").unwrap();
    let routes = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n[[route]]\npath = \"/\"\npublic = true\n",
        cert_path.display(),
        key_path.display()
    );
    let config_path = dir.path().join("whopgate.toml");
    std::fs::write(&config_path, config("http://127.0.0.1:9", &routes)).unwrap();
    let out = std::process::Command::new(crate::support::process::binary())
        .arg("--config")
        .arg(&config_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cert.pem") && text.contains("certificate"), "{text}");
}
