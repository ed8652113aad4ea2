//! Every route that reads a JSON body (`ApiJson<T>`), fed valid,
//! near-valid and arbitrary bodies with the owner's tenant-admin key: a 2xx
//! or a 4xx with our error body, never a 5xx. One platform per route;
//! routes that change or remove their target get a fresh one per case.

use std::sync::atomic::{AtomicU64, Ordering};

use noxus_testkit::noxus_server::store::{Actor, KeyQuotas, NewUser};
use noxus_testkit::KeyOptions;
use proptest::prelude::*;
use proptest::sample::select;
use reqwest::Method;
use serde_json::json;

use super::json::{self, Json};
use super::{config, Platform};

/// Cases per route: a few hundred requests, about a second against a local platform.
const CASES: u32 = 384;

fn fields(pairs: Vec<(&'static str, Json)>) -> Vec<(String, Json)> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// `Some(v)` as a field, `None` leaves it out.
fn optional(pairs: Vec<(&'static str, Option<Json>)>) -> Vec<(String, Json)> {
    pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect()
}

/// The node types of the platform's catalog, and one it does not have.
fn node_types(platform: &Platform) -> Vec<String> {
    let nodes = platform.arrange(Method::GET, "/v1/nodes", None);
    let mut types: Vec<String> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["type"].as_str().map(str::to_owned))
        .collect();
    types.push("NoSuchNode".to_owned());
    types
}

/// Creates an object over HTTP and returns its id.
fn create(platform: &Platform, path: &str, body: serde_json::Value) -> String {
    let created = platform.arrange(Method::POST, path, Some(body));
    created["id"].as_str().unwrap().to_owned()
}

fn workflow_write(node_types: Vec<String>) -> BoxedStrategy<Vec<(String, Json)>> {
    (
        json::name(),
        proptest::option::of(select(vec!["flow", "agent_flow"]).prop_map(Json::str)),
        proptest::option::of(prop_oneof![Just(Json::Null), json::definition(node_types)]),
        proptest::option::of(prop_oneof![
            Just(Json::Null),
            "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
                .prop_map(Json::String),
        ]),
    )
        .prop_map(|(name, kind, definition, error_handler)| {
            optional(vec![
                ("name", Some(name)),
                ("type", kind),
                ("definition", definition),
                ("error_handler", error_handler),
            ])
        })
        .boxed()
}

const WORKFLOW_FIELDS: &[&str] = &["name", "type", "definition", "error_handler"];

fn version_write(node_types: Vec<String>) -> BoxedStrategy<Vec<(String, Json)>> {
    (
        json::name(),
        proptest::option::of(json::description()),
        json::definition(node_types),
    )
        .prop_map(|(name, description, definition)| {
            optional(vec![
                ("name", Some(name)),
                ("description", description),
                ("definition", Some(definition)),
            ])
        })
        .boxed()
}

const VERSION_FIELDS: &[&str] = &["name", "description", "definition"];

#[test]
fn creating_a_workspace_with_any_body_is_never_a_server_error() {
    let platform = Platform::start(|_| {});
    const NAMES: &[&str] = &["name", "description"];
    let valid = (json::name(), proptest::option::of(json::description()))
        .prop_map(|(name, description)| {
            optional(vec![("name", Some(name)), ("description", description)])
        })
        .boxed();
    proptest!(config(CASES), |(body in json::body(NAMES, valid))| {
        platform.send(Method::POST, "/v1/admin/groups", Some(&body))?;
    });
    platform.stop("creating_a_workspace_with_any_body_is_never_a_server_error");
}

#[test]
fn updating_a_workspace_with_any_body_is_never_a_server_error() {
    // Another workspace than the key's own: a low limit set there cannot
    // throttle the key that runs the property.
    let platform = Platform::start(|_| {});
    let target = create(&platform, "/v1/admin/groups", json!({"name": "target"}));
    let path = format!("/v1/admin/groups/{target}");
    const NAMES: &[&str] = &["rate_limit"];
    let valid = json::rate_limit()
        .prop_map(|limit| fields(vec![("rate_limit", limit)]))
        .boxed();
    proptest!(config(CASES), |(body in json::body(NAMES, valid))| {
        platform.send(Method::PATCH, &path, Some(&body))?;
    });
    platform.stop("updating_a_workspace_with_any_body_is_never_a_server_error");
}

#[test]
fn creating_an_api_key_with_any_body_is_never_a_server_error() {
    let platform = Platform::start(|_| {});
    let path = format!("/v1/admin/groups/{}/api-keys", platform.app.workspace_id);
    const NAMES: &[&str] = &[
        "name",
        "tenant_admin",
        "permissions",
        "expires_at",
        "rate_limit",
    ];
    let permission = select(
        noxus_testkit::noxus_api::Permission::ALL
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>(),
    )
    .prop_map(Json::str);
    let valid = (
        json::name(),
        proptest::option::of(any::<bool>().prop_map(Json::Bool)),
        proptest::option::of(prop_oneof![
            Just(Json::Null),
            proptest::collection::vec(permission, 0..5).prop_map(Json::Array),
        ]),
        proptest::option::of(prop_oneof![
            Just(Json::Null),
            (2030u32..2100, 1u32..13, 1u32..29)
                .prop_map(|(y, m, d)| Json::String(format!("{y}-{m:02}-{d:02}T12:00:00Z"))),
            json::string().prop_map(Json::String),
        ]),
        proptest::option::of(json::rate_limit()),
    )
        .prop_map(
            |(name, tenant_admin, permissions, expires_at, rate_limit)| {
                optional(vec![
                    ("name", Some(name)),
                    ("tenant_admin", tenant_admin),
                    ("permissions", permissions),
                    ("expires_at", expires_at),
                    ("rate_limit", rate_limit),
                ])
            },
        )
        .boxed();
    proptest!(config(CASES), |(body in json::body(NAMES, valid))| {
        platform.send(Method::POST, &path, Some(&body))?;
    });
    platform.stop("creating_an_api_key_with_any_body_is_never_a_server_error");
}

#[test]
fn rotating_an_api_key_with_any_body_is_never_a_server_error() {
    // Each case rotates a fresh key of the owner: never the key that runs
    // the property (a grace period of 0 would end it).
    let platform = Platform::start(|c| {
        c.key_quotas = KeyQuotas {
            per_user: 1_000_000,
            per_workspace: 1_000_000,
        }
    });
    let app = &platform.app;
    const NAMES: &[&str] = &["grace_period_seconds"];
    let valid = prop_oneof![
        Just(Vec::new()),
        (0u64..=604_800).prop_map(|s| fields(vec![("grace_period_seconds", Json::num(s))])),
    ]
    .boxed();
    proptest!(config(CASES), |(body in json::body(NAMES, valid))| {
        let (_, key_id) = platform.block_on(app.issue_key(&app.workspace_id, &app.owner.id, KeyOptions::default()));
        let path = format!("/v1/admin/groups/{}/api-keys/{key_id}/rotate", app.workspace_id);
        platform.send(Method::POST, &path, Some(&body))?;
    });
    platform.stop("rotating_an_api_key_with_any_body_is_never_a_server_error");
}

#[test]
fn updating_a_user_with_any_body_is_never_a_server_error() {
    // Each case targets a fresh user (some organization admins): never the
    // owner, whose key runs the property.
    let platform = Platform::start(|_| {});
    let app = &platform.app;
    let password_hash =
        noxus_testkit::noxus_server::domain::passwords::hash_password("a password for all")
            .unwrap();
    let next = AtomicU64::new(0);
    const NAMES: &[&str] = &["is_active", "tenant_admin"];
    let flag = || {
        proptest::option::of(prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool)
        ])
    };
    let valid = (flag(), flag())
        .prop_map(|(is_active, tenant_admin)| {
            optional(vec![
                ("is_active", is_active),
                ("tenant_admin", tenant_admin),
            ])
        })
        .boxed();
    proptest!(config(CASES), |(body in json::body(NAMES, valid), org_admin in any::<bool>())| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let user = platform.block_on(app.state.store().create_user(
            &Actor::system(),
            NewUser {
                organization_id: app.organization_id.clone().into(),
                email: format!("target-{n}@props.noxus.local"),
                name: format!("Target {n}"),
                password_hash: password_hash.clone(),
                is_org_admin: org_admin,
                must_change_password: false,
            },
        )).unwrap();
        platform.send(Method::PATCH, &format!("/v1/admin/users/{}", user.id), Some(&body))?;
    });
    platform.stop("updating_a_user_with_any_body_is_never_a_server_error");
}

#[test]
fn creating_a_workflow_with_any_body_is_never_a_server_error() {
    let platform = Platform::start(|_| {});
    let valid = workflow_write(node_types(&platform));
    proptest!(config(CASES), |(body in json::body(WORKFLOW_FIELDS, valid))| {
        platform.send(Method::POST, "/v1/workflows", Some(&body))?;
    });
    platform.stop("creating_a_workflow_with_any_body_is_never_a_server_error");
}

#[test]
fn updating_a_workflow_with_any_body_and_force_is_never_a_server_error() {
    let platform = Platform::start(|_| {});
    let id = create(&platform, "/v1/workflows", json!({"name": "target"}));
    let valid = workflow_write(node_types(&platform));
    let force = proptest::option::of(prop_oneof![
        select(vec![
            "true",
            "false",
            "True",
            "False",
            "1",
            "0",
            "",
            "yes",
            "%ff",
            "true&force=false"
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,12}".prop_map(|s| s.replace(['#', '&'], "")),
    ]);
    proptest!(config(CASES), |(body in json::body(WORKFLOW_FIELDS, valid), force in force)| {
        let path = match force {
            Some(force) => format!("/v1/workflows/{id}?force={force}"),
            None => format!("/v1/workflows/{id}"),
        };
        platform.send(Method::PATCH, &path, Some(&body))?;
    });
    platform.stop("updating_a_workflow_with_any_body_and_force_is_never_a_server_error");
}

#[test]
fn saving_a_workflow_version_with_any_body_is_never_a_server_error() {
    let platform = Platform::start(|_| {});
    let id = create(&platform, "/v1/workflows", json!({"name": "target"}));
    let path = format!("/v1/workflows/{id}/versions");
    let valid = version_write(node_types(&platform));
    proptest!(config(CASES), |(body in json::body(VERSION_FIELDS, valid))| {
        platform.send(Method::POST, &path, Some(&body))?;
    });
    platform.stop("saving_a_workflow_version_with_any_body_is_never_a_server_error");
}

#[test]
fn updating_a_workflow_version_with_any_body_is_never_a_server_error() {
    let platform = Platform::start(|_| {});
    let id = create(&platform, "/v1/workflows", json!({"name": "target"}));
    let version = create(
        &platform,
        &format!("/v1/workflows/{id}/versions"),
        json!({"name": "v1", "definition": {"nodes": [], "edges": []}}),
    );
    let path = format!("/v1/workflows/{id}/versions/{version}");
    let valid = version_write(node_types(&platform));
    proptest!(config(CASES), |(body in json::body(VERSION_FIELDS, valid))| {
        platform.send(Method::PATCH, &path, Some(&body))?;
    });
    platform.stop("updating_a_workflow_version_with_any_body_is_never_a_server_error");
}
