//! What the platform refuses at start: a pepper that does not match the
//! database's keys (which silently turned every key into a 401), a pepper
//! too short to be a secret; and the pepper rotation that keeps keys alive.

use noxus_server::domain::keys::PreviousPepper;
use noxus_server::{Application, Config};
use noxus_testkit::TestApp;
use secrecy::SecretString;

use crate::helpers::{assert_error, json_ok};

fn pepper(c: char) -> SecretString {
    SecretString::from(c.to_string().repeat(40))
}

async fn build_error(dir: &std::path::Path, configure: impl FnOnce(&mut Config)) -> String {
    // The directory's PostgreSQL database when tests run on PostgreSQL.
    let mut config = noxus_testkit::config_in(dir).await;
    configure(&mut config);
    match Application::build(config).await {
        Ok(_) => panic!("the platform started"),
        Err(err) => format!("{err:#}"),
    }
}

#[tokio::test]
async fn a_different_or_missing_pepper_is_refused_at_start_and_a_rotation_keeps_keys() {
    let app = TestApp::spawn_with(|c| c.pepper = Some(pepper('a'))).await;
    let key = app.owner_key.clone();
    json_ok(app.get("/v1/admin/me", &key).send().await.unwrap()).await;
    let dir = app.stop_keep_data().await;

    let wrong = build_error(dir.path(), |c| c.pepper = Some(pepper('b'))).await;
    assert!(wrong.contains("does not match"), "{wrong}");
    assert!(
        !wrong.contains(&"b".repeat(40)),
        "the pepper is never printed"
    );
    let missing = build_error(dir.path(), |c| c.pepper = None).await;
    assert!(missing.contains("NOXUS_KEY_PEPPER is not set"), "{missing}");
    let short = build_error(dir.path(), |c| {
        c.pepper = Some(SecretString::from("short"));
    })
    .await;
    assert!(short.contains("at least 32 bytes"), "{short}");

    // Rotation: the new pepper with the previous one keeps the old key working…
    let app = TestApp::start_in(dir.path(), |c| {
        c.pepper = Some(pepper('b'));
        c.previous_pepper = Some(PreviousPepper::Pepper(pepper('a')));
    })
    .await;
    json_ok(app.get("/v1/admin/me", &key).send().await.unwrap()).await;
    app.stop().await;
    // …and, once used, it works under the new pepper alone.
    let app = TestApp::start_in(dir.path(), |c| c.pepper = Some(pepper('b'))).await;
    json_ok(app.get("/v1/admin/me", &key).send().await.unwrap()).await;
    app.stop().await;
    // The old pepper is refused now.
    let old = build_error(dir.path(), |c| c.pepper = Some(pepper('a'))).await;
    assert!(old.contains("does not match"), "{old}");
}

#[tokio::test]
async fn adding_a_pepper_to_a_database_without_one_takes_a_rotation() {
    let app = TestApp::spawn().await;
    let key = app.owner_key.clone();
    let dir = app.stop_keep_data().await;
    let refused = build_error(dir.path(), |c| c.pepper = Some(pepper('c'))).await;
    assert!(refused.contains("made without a pepper"), "{refused}");
    let app = TestApp::start_in(dir.path(), |c| {
        c.pepper = Some(pepper('c'));
        c.previous_pepper = Some(PreviousPepper::None);
    })
    .await;
    json_ok(app.get("/v1/admin/me", &key).send().await.unwrap()).await;
    // A key that was never used in the window is refused after it.
    let unknown = noxus_api::key_format::key_from_body("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
    assert_error(
        app.get("/v1/admin/me", &unknown).send().await.unwrap(),
        401,
        "invalid_api_key",
    )
    .await;
    app.stop().await;
}
