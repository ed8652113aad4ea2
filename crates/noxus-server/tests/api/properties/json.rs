//! Generators of JSON texts, written by hand (not through `serde_json::Value`)
//! so that they can hold what a `Value` cannot: numbers of any size or
//! precision, duplicate keys, deep nesting.

use noxus_testkit::noxus_api::key_format::key_from_body;
use noxus_testkit::noxus_api::Permission;
use proptest::prelude::*;
use proptest::sample::select;

use super::Body;

/// A JSON value as text is made of it.
#[derive(Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number exactly as written.
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn str(s: impl Into<String>) -> Self {
        Self::String(s.into())
    }

    pub fn num(n: impl ToString) -> Self {
        Self::Number(n.to_string())
    }

    pub fn object<const N: usize>(fields: [(&str, Json); N]) -> Self {
        Self::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Number(n) => out.push_str(n),
            Self::String(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            Self::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Numbers, with the edges of every integer type the API reads, sizes no
/// integer holds, and floats.
pub fn number() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(vec![
            "0", "-0", "1", "-1", "2", "0.5", "-0.5", "1.0", "1e2", "1E+2", "2e5", "1e400", "-1e400",
            "1e-400", "4294967295", "4294967296", "-4294967296", "9223372036854775807",
            "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
            "18446744073709551615", "18446744073709551616", "604800", "604801", "100000",
            "100001", "1000000", "1000001", "0.000000000000000000000000000001",
        ])
        .prop_map(str::to_owned),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        1 => "-?[1-9][0-9]{19,400}",
        1 => "-?[0-9]{1,5}\\.[0-9]{1,40}([eE][+-]?[0-9]{1,4})?",
    ]
    .boxed()
}

fn a_key() -> impl Strategy<Value = String> {
    "[0-9A-Za-z]{32}".prop_map(|body| key_from_body(&body))
}

/// Strings: short and long, every Unicode character including controls,
/// names of permissions and types, UUIDs, times, keys.
pub fn string() -> BoxedStrategy<String> {
    let mut permissions: Vec<String> = Permission::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    permissions.extend(["org:*", "*", "workflows", "WORKFLOWS:READ", ""].map(str::to_owned));
    prop_oneof![
        4 => any::<String>(),
        2 => "[a-zA-Z0-9 _.-]{0,24}",
        1 => "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{200b}\\u{feff}\\u{fffd} a]{1,8}",
        1 => (1usize..70_000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
        2 => select(permissions),
        1 => select(vec!["flow", "agent_flow", "Flow", "flow ", "hour", "day", "true", "null"])
            .prop_map(str::to_owned),
        1 => "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        1 => "[0-9a-fA-F-]{30,40}",
        2 => "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}[Tt ][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|z|[+-][0-9]{2}:[0-9]{2})?",
        1 => select(vec![
            "2030-01-31T12:00:00Z", "9999-12-31T23:59:59Z", "+10000-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z", "2030-02-30T00:00:00Z", "2030-01-31T24:00:00Z",
            "2030-01-31T12:00:60Z", "2030-01-31T12:00:00+23:59", "2030-01-31T12:00:00-99:99",
        ])
        .prop_map(str::to_owned),
        1 => a_key(),
    ]
    .boxed()
}

/// Object keys: `names` (the fields of the body type), near misses and
/// arbitrary strings.
fn object_key(names: &'static [&'static str]) -> BoxedStrategy<String> {
    let mut known: Vec<&'static str> = names.to_vec();
    known.extend([
        "",
        "nodes",
        "edges",
        "id",
        "type",
        "flow_version",
        "burst",
        "per_second",
    ]);
    prop_oneof![
        3 => select(known).prop_map(str::to_owned),
        1 => select(names.to_vec()).prop_map(|n| n.to_uppercase()),
        1 => select(names.to_vec()).prop_map(|n| format!("{n} ")),
        2 => string(),
    ]
    .boxed()
}

/// Any JSON value, nested up to a few levels, objects keyed mostly with `names`.
pub fn value(names: &'static [&'static str]) -> BoxedStrategy<Json> {
    let leaf = prop_oneof![
        1 => Just(Json::Null),
        1 => any::<bool>().prop_map(Json::Bool),
        3 => number().prop_map(Json::Number),
        3 => string().prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            proptest::collection::vec((object_key(names), inner), 0..6).prop_map(Json::Object),
        ]
    })
    .boxed()
}

/// `[[[…]]]` or `{"a":{"a":…}}` `depth` levels deep (serde's limit is 128).
fn deeply_nested(depth: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

/// A valid body of a route with one field replaced by any value, removed,
/// duplicated, or with an unknown field added.
fn near_valid(
    names: &'static [&'static str],
    valid: BoxedStrategy<Vec<(String, Json)>>,
) -> BoxedStrategy<Json> {
    (
        valid,
        any::<prop::sample::Index>(),
        value(names),
        object_key(names),
        0..5u8,
    )
        .prop_map(|(mut fields, at, other, key, edit)| {
            if fields.is_empty() {
                fields.push((key, other));
                return Json::Object(fields);
            }
            let at = at.index(fields.len());
            match edit {
                0 | 1 => fields[at].1 = other,
                2 => {
                    fields.remove(at);
                }
                3 => {
                    let name = fields[at].0.clone();
                    fields.push((name, other));
                }
                _ => fields.push((key, other)),
            }
            Json::Object(fields)
        })
        .boxed()
}

/// Every kind of body for a route whose fields are `names` and whose valid
/// bodies `valid` generates: valid ones, near-valid ones, any JSON, and bytes
/// that are not JSON at all.
pub fn body(
    names: &'static [&'static str],
    valid: BoxedStrategy<Vec<(String, Json)>>,
) -> BoxedStrategy<Body> {
    let text = prop_oneof![
        2 => valid.clone().prop_map(|f| Json::Object(f).encode().into_bytes()),
        6 => near_valid(names, valid.clone()).prop_map(|j| j.encode().into_bytes()),
        3 => value(names).prop_map(|j| j.encode().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => (valid.clone(), any::<prop::sample::Index>()).prop_map(|(f, at)| {
            // Cut short, anywhere (also inside a multi-byte character).
            let mut bytes = Json::Object(f).encode().into_bytes();
            bytes.truncate(at.index(bytes.len() + 1));
            bytes
        }),
        2 => (valid.clone(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(f, at, b)| {
            // One byte changed: a raw control character, invalid UTF-8, a quote…
            let mut bytes = Json::Object(f).encode().into_bytes();
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] = b;
            }
            bytes
        }),
        1 => (valid.clone(), select(vec!["\u{feff}", " \n\t", "\u{0}", "x", "[", "{}"]), select(vec!["", " x", "}", "\u{0}", "{}", ",", "\n"]))
            .prop_map(|(f, before, after)| format!("{before}{}{after}", Json::Object(f).encode()).into_bytes()),
        1 => (1usize..3000, any::<bool>(), select(names.to_vec())).prop_map(|(depth, objects, name)| {
            format!("{{\"{name}\":{}}}", deeply_nested(depth, objects)).into_bytes()
        }),
        1 => select(vec!["", " ", "null", "true", "0", "\"x\"", "[]", "{", "}", "{}", "{\"\":}", "NaN", "{\"a\":NaN}", "{'a':1}", "{\"a\":1,}", "{\"a\" 1}"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => string().prop_map(String::into_bytes),
    ];
    prop_oneof![
        60 => (text, select(vec![Some("application/json"), None, Some("text/plain"), Some("application/json; charset=utf-16"), Some("application/x-www-form-urlencoded")]))
            .prop_map(|(bytes, content_type)| Body { bytes, content_type }),
        // Over the 2 MiB limit: a 413, and the connection still serves.
        1 => (2usize * 1024 * 1024..2 * 1024 * 1024 + 64, select(names.to_vec())).prop_map(|(n, name)| Body {
            bytes: format!("{{\"{name}\":\"{}\"}}", "x".repeat(n)).into_bytes(),
            content_type: Some("application/json"),
        }),
    ]
    .boxed()
}

/// A plausible name (names are unique per workspace for some objects: a
/// repeated one is a 409, which is fine).
pub fn name() -> BoxedStrategy<Json> {
    prop_oneof![
        3 => "[A-Za-z][A-Za-z0-9 _-]{0,30}".prop_map(Json::String),
        1 => string().prop_map(Json::String),
    ]
    .boxed()
}

/// Optional free text.
pub fn description() -> BoxedStrategy<Json> {
    prop_oneof![Just(Json::Null), string().prop_map(Json::String)].boxed()
}

/// `{per_second, burst?}` mostly within bounds, or null.
pub fn rate_limit() -> BoxedStrategy<Json> {
    prop_oneof![
        Just(Json::Null),
        (1u32..=100_000, proptest::option::of(0u32..=1_000_001)).prop_map(|(per_second, burst)| {
            let mut fields = vec![("per_second".to_owned(), Json::num(per_second))];
            if let Some(burst) = burst {
                fields.push(("burst".to_owned(), Json::num(burst)));
            }
            Json::Object(fields)
        }),
    ]
    .boxed()
}

/// A workflow definition: nodes of the catalog's types (or not), edges of
/// both shapes, sometimes a `flow_version`.
pub fn definition(node_types: Vec<String>) -> BoxedStrategy<Json> {
    let node = (select(node_types), "[a-z0-9-]{1,12}").prop_map(|(kind, id)| {
        Json::object([
            ("id", Json::String(id)),
            ("type", Json::String(kind)),
            ("name", Json::str("n")),
        ])
    });
    let endpoint = "[a-z0-9-]{1,12}".prop_map(|id| {
        Json::object([
            ("node_id", Json::String(id)),
            ("connector_name", Json::str("output")),
        ])
    });
    let edge = prop_oneof![
        (endpoint.clone(), endpoint)
            .prop_map(|(from, to)| Json::object([("from_id", from), ("to_id", to)])),
        ("[a-z]{1,8}", "[a-z]{1,8}").prop_map(|(s, t)| Json::object([
            ("source", Json::String(s)),
            ("target", Json::String(t))
        ])),
    ];
    (
        proptest::collection::vec(node, 0..4),
        proptest::collection::vec(edge, 0..4),
        proptest::option::of(prop_oneof![
            Just("v1".to_owned()),
            Just("v2".to_owned()),
            string()
        ]),
    )
        .prop_map(|(nodes, edges, version)| {
            let mut fields = Vec::new();
            if let Some(version) = version {
                fields.push(("flow_version".to_owned(), Json::String(version)));
            }
            fields.push(("nodes".to_owned(), Json::Array(nodes)));
            fields.push(("edges".to_owned(), Json::Array(edges)));
            Json::Object(fields)
        })
        .boxed()
}
