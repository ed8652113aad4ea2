//! Key plaintexts exist only in the responses that create them: never in
//! the database (SQLite's files, or a `pg_dump` of the PostgreSQL
//! database), the logs, or `Debug` output.

use noxus_api::Role;
use noxus_server::{Application, Config};
use noxus_testkit::TestApp;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::helpers::json_ok;

/// Everything the database holds, as bytes to scan: SQLite's files, or a
/// full dump of the PostgreSQL database.
fn stored(dir: &noxus_testkit::KeptData) -> Vec<(String, Vec<u8>)> {
    match dir.database() {
        Some(database) => {
            let dump = std::process::Command::new("pg_dump")
                .arg("--dbname")
                .arg(database.url())
                .output()
                .expect("pg_dump runs (Debian: postgresql-client)");
            assert!(
                dump.status.success(),
                "pg_dump: {}",
                String::from_utf8_lossy(&dump.stderr)
            );
            vec![(format!("pg_dump of {}", database.name()), dump.stdout)]
        }
        None => std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file())
            .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
            .collect(),
    }
}

fn contain(stored: &[(String, Vec<u8>)], needle: &[u8]) -> Vec<String> {
    stored
        .iter()
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(name, _)| name.clone())
        .collect()
}

#[tokio::test]
async fn key_plaintexts_are_in_neither_the_database_nor_the_logs() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let keys_path = format!("/v1/admin/groups/{}/api-keys", app.workspace_id);
    let created = json_ok(
        app.post(&keys_path, &app.owner_key)
            .json(&json!({"name": "scan me"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let created_secret = created["value"].as_str().unwrap().to_owned();
    let rotated = json_ok(
        app.post(
            &format!("{keys_path}/{}/rotate", created["id"].as_str().unwrap()),
            &app.owner_key,
        )
        .json(&json!({"grace_period_seconds": 60}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    let rotated_secret = rotated["value"].as_str().unwrap().to_owned();
    // Use every key, well and badly, so that every log line is produced.
    for key in [
        &app.owner_key,
        &member.key,
        &created_secret,
        &rotated_secret,
    ] {
        json_ok(app.get("/v1/admin/me", key).send().await.unwrap()).await;
        let _ = app
            .post("/v1/workflows", key)
            .body("{bad json")
            .send()
            .await
            .unwrap();
        let mut typo = key.clone();
        typo.pop();
        let _ = app.get("/v1/workflows", &typo).send().await.unwrap();
    }
    json_ok(
        app.delete(
            &format!("{keys_path}/{}", rotated["id"].as_str().unwrap()),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let _ = app
        .get("/v1/workflows", &rotated_secret)
        .send()
        .await
        .unwrap();

    let owner_key = app.owner_key.clone();
    let dir = app.stop_keep_data().await;
    let stored = stored(&dir);
    let digest_of_owner = noxus_server::domain::keys::KeyHasher::new(None).digest(&created_secret);
    assert!(
        !contain(&stored, digest_of_owner.as_hex().as_bytes()).is_empty(),
        "the scan works: the digest is stored"
    );
    let logs = noxus_testkit::captured_logs();
    assert!(
        logs.contains("api key created"),
        "the scan works: logs were captured"
    );
    for secret in [&owner_key, &member.key, &created_secret, &rotated_secret] {
        let body = &secret[6..];
        assert!(
            contain(&stored, body.as_bytes()).is_empty(),
            "plaintext found in the database"
        );
        assert!(!logs.contains(body), "plaintext found in the logs");
    }
}

#[tokio::test]
async fn debug_output_of_the_application_and_welcome_hides_the_first_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let mut application = Application::build(config).await.unwrap();
    let shown = format!("{application:?}");
    let welcome = application.take_welcome().expect("first start");
    let key = welcome.api_key.as_ref().unwrap().expose_secret().to_owned();
    let password = welcome
        .generated_password
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    for text in [
        shown,
        format!("{welcome:?}"),
        format!("{:?}", application.state()),
    ] {
        assert!(!text.contains(&key[6..]), "{text}");
        assert!(!text.contains(&password));
    }
    // Display is the one place that prints them: it is the welcome text.
    let printed = welcome.to_string();
    assert!(printed.contains(&format!("export NOXUS_API_KEY={key}")));
    assert!(printed.contains("export NOXUS_BACKEND_URL=http://127.0.0.1:"));
}

/// A key pasted into a URL (instead of the header) is never echoed back in
/// an error nor logged in full: only its first 10 characters.
#[tokio::test]
async fn a_key_pasted_into_a_url_is_neither_echoed_nor_logged() {
    let app = TestApp::spawn().await;
    let key = app.owner_key.clone();
    let body = &key[10..];
    for path in [
        format!("/v1/{key}"),
        format!("/v1/admin/groups/{key}/nothing"),
        format!("/{key}/login"),
        format!("/v1/workflows/{}", &key[..40]),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::PUT] {
            let response = app
                .http
                .request(method.clone(), app.url(&path))
                .header("X-API-Key", &key)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(status.is_client_error(), "{method} {path}: {status}");
            assert!(
                !text.contains(body),
                "{method} {path} echoed the key: {text}"
            );
            assert!(!text.contains(&key[..40]), "{method} {path}: {text}");
        }
    }
    let logs = noxus_testkit::captured_logs();
    assert!(
        logs.contains(&format!("{}…", &key[..10])),
        "the redacted path is logged"
    );
    assert!(!logs.contains(body), "the key was logged");
    assert!(!logs.contains(&key[..40]));
    app.stop().await;
}
