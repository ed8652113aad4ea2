//! Every GET route, with any query string: each route's own parameters
//! (`page`, `size`, `hours`, `bucket`, `limit`, `before`, …) and others,
//! with values at and past their bounds, not numbers, not UTF-8, repeated;
//! and now and then an id in the path that names nothing.

use proptest::prelude::*;
use proptest::sample::select;
use reqwest::Method;
use serde_json::json;

use super::json;
use super::{config, Platform};

/// Every query parameter some GET route reads.
const PARAMETERS: &[&str] = &[
    "page",
    "size",
    "page_size",
    "type",
    "include_definition",
    "hours",
    "bucket",
    "limit",
    "before",
    "action",
    "workspace_id",
    "force",
];

/// Any string, short enough that a few of them fit in a URL (at most 64 KiB).
fn short_string() -> BoxedStrategy<String> {
    json::string()
        .prop_map(|s| s.chars().take(500).collect())
        .boxed()
}

/// Values: numbers at the edges, words the routes know, and anything.
fn value(ids: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        4 => json::number(),
        2 => select(vec![
            "", " ", " 5 ", "+5", "0x10", "1_000", "5.0", "NaN", "-0", "hour", "day", "HOUR", "week",
            "true", "false", "True", "1", "0", "yes", "flow", "agent_flow", "api_key.", "%", "_",
            "\\", "'", "\"", "' OR 1=1 --", "2160", "2161", "1000", "1001", "100", "101",
        ])
        .prop_map(str::to_owned),
        1 => select(ids),
        2 => short_string(),
    ]
    .boxed()
}

/// One `name=value` pair: encoded as a form would, or raw (stray `%`,
/// `%ff`, `+`, `=`).
fn pair(ids: Vec<String>) -> BoxedStrategy<String> {
    let name = prop_oneof![
        6 => select(PARAMETERS.to_vec()).prop_map(str::to_owned),
        1 => short_string(),
    ];
    prop_oneof![
        4 => (name, value(ids)).prop_map(|(n, v)| serde_urlencoded::to_string([(n, v)]).unwrap()),
        1 => "([A-Za-z0-9=+._~-]|%[0-9A-Fa-f]{2}|%[^0-9A-Fa-f]?){0,24}",
        1 => (select(PARAMETERS.to_vec()), "(%[89a-fA-F][0-9a-fA-F]){1,4}").prop_map(|(n, v)| format!("{n}={v}")),
    ]
    .boxed()
}

#[test]
fn no_query_string_on_a_get_route_is_a_server_error() {
    let platform = Platform::start(|_| {});
    let app = &platform.app;
    let workspace = app.workspace_id.clone();
    let key = app.owner.key_id.clone();
    // A workflow with a version, so that pages have something in them.
    let created = platform.arrange(Method::POST, "/v1/workflows", Some(json!({"name": "w"})));
    let workflow = created["id"].as_str().unwrap().to_owned();
    let routes: Vec<String> = vec![
        "/v1/workflows".to_owned(),
        format!("/v1/workflows/{workflow}"),
        format!("/v1/workflows/{workflow}/versions"),
        "/v1/admin/me".to_owned(),
        "/v1/admin/groups".to_owned(),
        format!("/v1/admin/groups/{workspace}/api-keys"),
        format!("/v1/admin/groups/{workspace}/api-keys/{key}"),
        format!("/v1/admin/groups/{workspace}/api-keys/{key}/usage"),
        format!("/v1/admin/groups/{workspace}/api-keys/{key}/addresses"),
        format!("/v1/admin/groups/{workspace}/usage"),
        "/v1/admin/audit".to_owned(),
        "/v1/admin/users".to_owned(),
        "/v1/nodes".to_owned(),
        "/v1/models/llms".to_owned(),
        "/v1/models/llms/presets".to_owned(),
    ];
    let ids = vec![
        workspace.clone(),
        key.clone(),
        workflow.clone(),
        app.organization_id.clone(),
        "00000000-0000-0000-0000-000000000000".to_owned(),
    ];
    // Now and then one id of the path is replaced by something else.
    let other_id = proptest::option::of(prop_oneof![
        short_string()
            .prop_map(|s| serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_owned()),
        "(%[0-9a-fA-F]{2}){1,6}",
        select(ids.clone()),
    ]);
    let query = proptest::collection::vec(pair(ids), 0..6).prop_map(|pairs| pairs.join("&"));
    proptest!(config(768), |(route in select(routes), query in query, other_id in other_id)| {
        let mut path = route;
        if let Some(other) = other_id.filter(|o| !o.is_empty()) {
            for id in [&workflow, &key, &workspace] {
                if path.contains(id.as_str()) {
                    path = path.replacen(id.as_str(), &other, 1);
                    break;
                }
            }
        }
        platform.send(Method::GET, &format!("{path}?{query}"), None)?;
    });
    platform.stop("no_query_string_on_a_get_route_is_a_server_error");
}
