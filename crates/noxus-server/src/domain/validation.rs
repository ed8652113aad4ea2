//! Checks applied to client input at the boundary; each failure names the
//! field and says why.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::catalog::Catalog;
/// A value that breaks a rule: which field, and a sentence saying why. The
/// API answers it as a 422 `validation_error` naming the field; the
/// dashboard shows the sentence on the form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ValidationError {
    /// The field or parameter, e.g. `definition.nodes[0].type`.
    pub field: String,
    /// The sentence.
    pub detail: String,
}

impl ValidationError {
    /// A rule broken by `field`.
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

/// A name of at most `max` characters (surrounding spaces count) without
/// control characters, not only white space; returned trimmed. The same
/// rule as [`noxus_api::limits::is_valid_name`], which the OpenAPI document
/// states as a pattern.
pub fn name(field: &str, value: &str, max: usize) -> Result<String, ValidationError> {
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.chars().count() > max {
        return Err(ValidationError::new(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// A UUID in its usual hyphenated form (`123e4567-e89b-12d3-a456-426614174000`,
/// any case): what the OpenAPI document calls `format: uuid`.
pub fn uuid(value: &str) -> Option<Uuid> {
    if value.len() == 36 {
        Uuid::try_parse(value).ok()
    } else {
        None
    }
}

/// Optional free text of at most `max` characters.
pub fn description(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ValidationError> {
    match value {
        Some(text) if text.chars().count() > max => Err(ValidationError::new(
            field,
            format!("{field} must be at most {max} characters"),
        )),
        Some(text) => Ok(Some(text.to_owned())),
        None => Ok(None),
    }
}

/// `flow` or `agent_flow`.
pub fn workflow_kind(value: &str) -> Result<String, ValidationError> {
    match value {
        "flow" | "agent_flow" => Ok(value.to_owned()),
        other => Err(ValidationError::new(
            "type",
            format!(
                "type must be `flow` or `agent_flow`, not `{}`",
                truncate(other)
            ),
        )),
    }
}

/// A UUID string or null.
pub fn error_handler(value: Option<&str>) -> Result<Option<String>, ValidationError> {
    value
        .map(|s| {
            uuid(s).map(|_| s.to_owned()).ok_or_else(|| {
                ValidationError::new(
                    "error_handler",
                    "error_handler must be a node id (a UUID such as 123e4567-e89b-12d3-a456-426614174000) or null",
                )
            })
        })
        .transpose()
}

/// Checks a workflow definition: an object with `nodes` and `edges` arrays,
/// each node with a string `id` and a `type` of the catalog, each edge with
/// `from_id`/`to_id` (or V2 `source`/`target`). `None` gives an empty flow.
/// Everything else is kept verbatim.
pub fn definition(
    field: &str,
    value: Option<Value>,
    catalog: &Catalog,
) -> Result<Value, ValidationError> {
    let Some(value) = value else {
        return Ok(json!({"flow_version": "v1", "nodes": [], "edges": []}));
    };
    let Value::Object(map) = &value else {
        return Err(ValidationError::new(
            field,
            format!("{field} must be an object with `nodes` and `edges`"),
        ));
    };
    if let Some(v) = map.get("flow_version") {
        if !v.is_string() {
            return Err(ValidationError::new(
                format!("{field}.flow_version"),
                "flow_version must be a string",
            ));
        }
    }
    let nodes = array(map, field, "nodes")?;
    for (i, node) in nodes.iter().enumerate() {
        let at = format!("{field}.nodes[{i}]");
        let Value::Object(node) = node else {
            return Err(ValidationError::new(&at, format!("{at} must be an object")));
        };
        match node.get("id") {
            Some(Value::String(id)) if !id.is_empty() => {}
            _ => {
                return Err(ValidationError::new(
                    format!("{at}.id"),
                    format!("{at}.id must be a non-empty string"),
                ))
            }
        }
        match node.get("type") {
            Some(Value::String(kind)) if catalog.has_node_type(kind) => {}
            Some(Value::String(kind)) => {
                return Err(ValidationError::new(
                    format!("{at}.type"),
                    format!(
                        "{at}.type: unknown node type `{}`; GET /v1/nodes lists the types",
                        truncate(kind)
                    ),
                ))
            }
            _ => {
                return Err(ValidationError::new(
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
            return Err(ValidationError::new(&at, format!("{at} must be an object")));
        };
        let v1 = ["from_id", "to_id"]
            .iter()
            .all(|k| edge.get(*k).is_some_and(Value::is_object));
        let v2 = ["source", "target"]
            .iter()
            .all(|k| edge.get(*k).is_some_and(Value::is_string));
        if !v1 && !v2 {
            return Err(ValidationError::new(
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
) -> Result<&'a Vec<Value>, ValidationError> {
    match map.get(key) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ValidationError::new(
            format!("{field}.{key}"),
            format!("{field}.{key} must be an array"),
        )),
        None => Err(ValidationError::new(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_rule() {
        for (value, max) in [
            ("a", 1),
            ("  padded  ", 10),
            ("  padded  ", 9),
            ("", 5),
            ("\u{3000}\u{a0} ", 5),
            ("tab\there", 20),
            ("trailing newline\n", 20),
            ("\u{85}next line", 20),
            ("ünïcödé", 7),
            ("ünïcödé", 6),
        ] {
            assert_eq!(
                name("name", value, max).is_ok(),
                noxus_api::limits::is_valid_name(value, max),
                "{value:?} (max {max})"
            );
        }
        assert_eq!(
            name("name", "  padded  ", 10).ok().as_deref(),
            Some("padded")
        );
    }

    #[test]
    fn uuids_are_the_hyphenated_form_only() {
        assert!(uuid("123e4567-e89b-12d3-a456-426614174000").is_some());
        assert!(uuid("123E4567-E89B-12D3-A456-426614174000").is_some());
        for other in [
            "123e4567e89b12d3a456426614174000",
            "{123e4567-e89b-12d3-a456-426614174000}",
            "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
            "123e4567-e89b-12d3-a456-42661417400g",
            "",
        ] {
            assert!(uuid(other).is_none(), "{other}");
        }
    }
}
