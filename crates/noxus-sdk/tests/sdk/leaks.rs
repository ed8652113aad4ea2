//! The full key appears in no `Debug` or `Display` output: client, config,
//! builder, key, and every error.

use std::time::Duration;

use noxus_api::Role;
use noxus_sdk::{ApiKey, Client, Config, Error};
use noxus_testkit::TestApp;

fn assert_hidden(key: &str, texts: &[String]) {
    let body = &key[6..];
    for text in texts {
        assert!(!text.contains(body), "the key leaked into: {text}");
    }
}

#[tokio::test]
async fn no_debug_or_display_output_contains_the_key() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    let key = viewer.key.clone();
    let client = app.client(&key);
    let config = Config::new(&key)
        .unwrap()
        .with_base_url(&app.base_url)
        .unwrap();
    let api_key = ApiKey::parse(&key).unwrap();
    let builder = Client::builder().api_key(&key).base_url(&app.base_url);
    let mut texts = vec![
        format!("{client:?}"),
        format!("{config:?}"),
        format!("{api_key:?}"),
        format!("{api_key}"),
        format!("{builder:?}"),
    ];
    assert!(
        texts[3].starts_with(&key[..10]),
        "Display shows the first 10 characters: {}",
        texts[3]
    );

    let mut errors: Vec<Error> = Vec::new();
    errors.push(client.workflows().create("x").await.unwrap_err()); // 403
    errors.push(client.workflows().get("nope").await.unwrap_err()); // 404
    client
        .admin()
        .keys(&app.workspace_id)
        .revoke(&viewer.key_id)
        .await
        .unwrap();
    errors.push(client.me().await.unwrap_err()); // 401 revoked
    let mut typo = key.clone();
    typo.pop();
    errors.push(Client::new(&typo).unwrap_err()); // malformed
    errors.push(Client::new(format!(" {key}")).unwrap_err()); // whitespace
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let offline = Client::builder()
        .api_key(&key)
        .base_url(format!("http://{closed}"))
        .max_retries(0)
        .build()
        .unwrap();
    errors.push(offline.me().await.unwrap_err()); // connection
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let slow = Client::builder()
        .api_key(&key)
        .base_url(silent_url)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    errors.push(slow.me().await.unwrap_err()); // timeout
    for err in &errors {
        texts.push(format!("{err:?}"));
        texts.push(format!("{err}"));
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            texts.push(format!("{cause:?}"));
            source = cause.source();
        }
    }
    assert_hidden(&key, &texts);
    drop(silent);
    app.stop().await;
}
