//! Configuration from code, the environment, `.env` and per-environment keys.

use std::collections::HashMap;
use std::time::Duration;

use noxus_sdk::{Config, ConfigError, Environment, DEFAULT_BASE_URL};

const KEY: &str = "noxus_ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

fn valid_key() -> String {
    noxus_api::key_format::key_from_body(&KEY[6..])
}

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn defaults_are_the_guides() {
    let config =
        Config::from_lookup("NOXUS_API_KEY", lookup(&[("NOXUS_API_KEY", &valid_key())])).unwrap();
    assert_eq!(config.base_url(), DEFAULT_BASE_URL);
    assert_eq!(config.timeout(), Duration::from_secs(30));
}

#[test]
fn url_and_timeout_come_from_their_variables() {
    let key = valid_key();
    let vars = [
        ("NOXUS_API_KEY", key.as_str()),
        ("NOXUS_BACKEND_URL", "http://localhost:8080/"),
        ("NOXUS_TIMEOUT", "2.5"),
    ];
    let config = Config::from_lookup("NOXUS_API_KEY", lookup(&vars)).unwrap();
    assert_eq!(config.base_url(), "http://localhost:8080");
    assert_eq!(config.timeout(), Duration::from_millis(2500));
}

#[test]
fn a_missing_key_names_its_variable() {
    let err = Config::from_lookup("NOXUS_API_KEY", lookup(&[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "NOXUS_API_KEY environment variable is required"
    );
    let err = Config::from_lookup(
        "NOXUS_API_KEY_PROD",
        lookup(&[("NOXUS_API_KEY_PROD", "  ")]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConfigError::MissingApiKey {
            var: "NOXUS_API_KEY_PROD".to_owned()
        }
    );
}

#[test]
fn bad_values_say_which_variable_and_why() {
    let key = valid_key();
    for (timeout, why) in [
        ("abc", "number of seconds"),
        ("0", "positive"),
        ("-3", "positive"),
        ("NaN", "positive"),
        ("1e9", "at most"),
    ] {
        let err = Config::from_lookup(
            "NOXUS_API_KEY",
            lookup(&[("NOXUS_API_KEY", &key), ("NOXUS_TIMEOUT", timeout)]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("NOXUS_TIMEOUT") && text.contains(why),
            "{timeout}: {text}"
        );
    }
    for url in [
        "backend.noxus.ai",
        "ftp://x",
        "http://",
        "http://h/?q=1",
        "not a url",
    ] {
        let err = Config::from_lookup(
            "NOXUS_API_KEY",
            lookup(&[("NOXUS_API_KEY", &key), ("NOXUS_BACKEND_URL", url)]),
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidBaseUrl { ref var, .. } if var == "NOXUS_BACKEND_URL"),
            "{url}: {err}"
        );
    }
}

#[test]
fn malformed_keys_fail_before_any_request() {
    let key = valid_key();
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        (&format!("{key}\n") as &str, "whitespace"),
        (&key[..40], "44 characters"),
        ("noxus_1234567890abcdef...", "letters and digits"),
    ];
    for (input, why) in cases {
        let err = Config::new(input).unwrap_err();
        assert!(err.to_string().contains(why), "{input:?}: {err}");
    }
    let mut typo = key.clone().into_bytes();
    typo[12] = if typo[12] == b'x' { b'y' } else { b'x' };
    let err = Config::new(String::from_utf8(typo).unwrap()).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    // Keys of another format are passed through for the server to judge.
    assert!(Config::new("legacy-key-123").is_ok());
}

#[test]
fn environment_selects_the_key_variable() {
    for (names, var) in [
        (
            &["production", "prod", "PROD", " Production "][..],
            "NOXUS_API_KEY_PROD",
        ),
        (
            &["staging", "stage", "Staging"][..],
            "NOXUS_API_KEY_STAGING",
        ),
        (&["development", "dev", "DEV"][..], "NOXUS_API_KEY_DEV"),
    ] {
        for name in names {
            assert_eq!(
                Environment::from_name(name).unwrap().key_var(),
                var,
                "{name}"
            );
        }
    }
    // An unknown value is an error naming it, never the development key.
    for name in ["qa", "prodution", "", "production2"] {
        let err = Environment::from_name(name).unwrap_err();
        assert!(
            matches!(err, ConfigError::UnknownEnvironment { .. }),
            "{name}"
        );
        assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
    }
    let key = valid_key();
    let config = Config::from_lookup(
        Environment::Staging.key_var(),
        lookup(&[("NOXUS_API_KEY_STAGING", &key), ("NOXUS_API_KEY", "other")]),
    )
    .unwrap();
    assert_eq!(config.api_key().expose_secret(), key);
}

#[test]
fn a_dotenv_file_fills_only_unset_variables() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".env");
    std::fs::write(
        &file,
        "NOXUS_SDK_TEST_FROM_FILE=file\nNOXUS_SDK_TEST_ALREADY_SET=file\n",
    )
    .unwrap();
    // Unique names: tests run in parallel threads of one process.
    std::env::set_var("NOXUS_SDK_TEST_ALREADY_SET", "process");
    noxus_sdk::load_dotenv_from(&file).unwrap();
    assert_eq!(std::env::var("NOXUS_SDK_TEST_FROM_FILE").unwrap(), "file");
    assert_eq!(
        std::env::var("NOXUS_SDK_TEST_ALREADY_SET").unwrap(),
        "process"
    );

    let bad = dir.path().join("bad.env");
    std::fs::write(&bad, "THIS IS NOT = 'closed\n").unwrap();
    let err = noxus_sdk::load_dotenv_from(&bad).unwrap_err();
    assert!(matches!(err, ConfigError::Dotenv { .. }), "{err}");
}
