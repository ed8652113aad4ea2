//! Checks applied to client input at the boundary; each failure names the
//! field and says why.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::error::ApiError;

/// A trimmed, non-empty name of at most `max` characters without control characters.
pub fn name(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::validation(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if trimmed.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::validation(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Optional free text of at most `max` characters.
pub fn description(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match value {
        Some(text) if text.chars().count() > max => Err(ApiError::validation(
            field,
            format!("{field} must be at most {max} characters"),
        )),
        Some(text) => Ok(Some(text.to_owned())),
        None => Ok(None),
    }
}

/// `flow` or `agent_flow`.
pub fn workflow_kind(value: &str) -> Result<String, ApiError> {
    match value {
        "flow" | "agent_flow" => Ok(value.to_owned()),
        other => Err(ApiError::validation(
            "type",
            format!(
                "type must be `flow` or `agent_flow`, not `{}`",
                truncate(other)
            ),
        )),
    }
}

/// A UUID string or null.
pub fn error_handler(value: Option<&str>) -> Result<Option<String>, ApiError> {
    value
        .map(|s| {
            Uuid::parse_str(s).map(|_| s.to_owned()).map_err(|_| {
                ApiError::validation(
                    "error_handler",
                    "error_handler must be a node id (UUID) or null",
                )
            })
        })
        .transpose()
}

/// Checks a workflow definition: an object with `nodes` and `edges` arrays,
/// each node with a string `id` and a `type` of the catalog, each edge with
/// `from_id`/`to_id` (or V2 `source`/`target`). `None` gives an empty flow.
/// Everything else is kept verbatim.
pub fn definition(field: &str, value: Option<Value>, catalog: &Catalog) -> Result<Value, ApiError> {
    let Some(value) = value else {
        return Ok(json!({"flow_version": "v1", "nodes": [], "edges": []}));
    };
    let Value::Object(map) = &value else {
        return Err(ApiError::validation(
            field,
            format!("{field} must be an object with `nodes` and `edges`"),
        ));
    };
    if let Some(v) = map.get("flow_version") {
        if !v.is_string() {
            return Err(ApiError::validation(
                format!("{field}.flow_version"),
                "flow_version must be a string",
            ));
        }
    }
    let nodes = array(map, field, "nodes")?;
    for (i, node) in nodes.iter().enumerate() {
        let at = format!("{field}.nodes[{i}]");
        let Value::Object(node) = node else {
            return Err(ApiError::validation(&at, format!("{at} must be an object")));
        };
        match node.get("id") {
            Some(Value::String(id)) if !id.is_empty() => {}
            _ => {
                return Err(ApiError::validation(
                    format!("{at}.id"),
                    format!("{at}.id must be a non-empty string"),
                ))
            }
        }
        match node.get("type") {
            Some(Value::String(kind)) if catalog.has_node_type(kind) => {}
            Some(Value::String(kind)) => {
                return Err(ApiError::validation(
                    format!("{at}.type"),
                    format!(
                        "{at}.type: unknown node type `{}`; GET /v1/nodes lists the types",
                        truncate(kind)
                    ),
                ))
            }
            _ => {
                return Err(ApiError::validation(
                    format!("{at}.type"),
                    format!("{at}.type must be a string"),
                ))
            }
        }
    }
    let edges = array(map, field, "edges")?;
    for (i, edge) in edges.iter().enumerate() {
        let at = format!("{field}.edges[{i}]");
        let Value::Object(edge) = edge else {
            return Err(ApiError::validation(&at, format!("{at} must be an object")));
        };
        let v1 = ["from_id", "to_id"]
            .iter()
            .all(|k| edge.get(*k).is_some_and(Value::is_object));
        let v2 = ["source", "target"]
            .iter()
            .all(|k| edge.get(*k).is_some_and(Value::is_string));
        if !v1 && !v2 {
            return Err(ApiError::validation(
                &at,
                format!("{at} must have `from_id` and `to_id` objects (or `source` and `target`)"),
            ));
        }
    }
    Ok(value)
}

fn array<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    key: &str,
) -> Result<&'a Vec<Value>, ApiError> {
    match map.get(key) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ApiError::validation(
            format!("{field}.{key}"),
            format!("{field}.{key} must be an array"),
        )),
        None => Err(ApiError::validation(
            format!("{field}.{key}"),
            format!("{field}.{key} is required"),
        )),
    }
}

/// Shortens client text quoted in an error message, with anything that
/// looks like an API key cut to its first 10 characters.
pub fn truncate(s: &str) -> String {
    clip(s, 40)
}

/// `s` with anything that looks like an API key cut to its first 10
/// characters, and at most `max` characters long (then ending in `…`).
pub fn clip(s: &str, max: usize) -> String {
    let s = noxus_api::key_format::redact(s);
    match s.char_indices().nth(max) {
        None => s.into_owned(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}
