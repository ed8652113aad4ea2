//! The OpenAPI document served at `/openapi.json`: what the routes'
//! annotations say, completed with what every route shares and with what
//! this server's configuration decides.
//!
//! - Error responses follow from an operation's shape: 401 and 429 where a
//!   key is needed, 404 where the path names an object, 408, 413 and 422
//!   where there is a body, 422 where there are query parameters, and 503
//!   (the connection cap) everywhere. The annotations add 403 and 409 where
//!   the route can answer them (and 429 where an operation without a key is
//!   throttled), with a description; the error body is added here.
//! - `WorkflowDefinition` lists the catalog's node types.
//! - `RateLimitSetting`, a rate limit someone sets, stays under the
//!   operator's ceiling (`--max-rate-limit-per-key`).

use noxus_api::limits::{RATE_BURST_MAX, RATE_PER_SECOND_MAX};
use serde_json::{json, Map, Value};

use crate::state::AppState;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

const ERROR_BODY: &str = "#/components/schemas/ErrorBody";

/// The document for this server: `generated` completed as the module says.
pub fn document(generated: &utoipa::openapi::OpenApi, state: &AppState) -> Value {
    let mut doc = serde_json::to_value(generated).unwrap_or_else(|_| json!({}));
    add_workflow_definition(&mut doc, &state.catalog().node_types());
    add_rate_limit_setting(&mut doc, state.config().max_rate_limit_per_key);
    add_error_responses(&mut doc);
    doc
}

/// One error response with the error body; 429 and 503 say when to retry.
fn error_response(description: &str, retry_after: bool) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": ERROR_BODY}}},
    });
    if retry_after {
        response["headers"] = json!({
            "Retry-After": {
                "description": "Whole seconds to wait before trying again",
                "required": true,
                "schema": {"type": "integer", "minimum": 0},
            }
        });
    }
    response
}

/// What an operation takes, which decides the errors it can answer.
#[derive(Debug, Default)]
struct Shape {
    needs_key: bool,
    path_id: bool,
    query: bool,
    body: bool,
}

impl Shape {
    fn of(operation: &Map<String, Value>, global_security: Option<&Value>) -> Self {
        let demands_key = |security: &Value| {
            security.as_array().is_some_and(|requirements| {
                requirements
                    .iter()
                    .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
            })
        };
        let needs_key = match operation.get("security") {
            Some(security) => demands_key(security),
            None => global_security.is_some_and(demands_key),
        };
        let located = |place: &str| {
            operation
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == place))
        };
        Self {
            needs_key,
            path_id: located("path"),
            query: located("query"),
            body: operation.contains_key("requestBody"),
        }
    }

    /// The error responses every operation of this shape can answer.
    fn errors(&self) -> Vec<(&'static str, Value)> {
        let mut errors = Vec::new();
        if self.needs_key {
            errors.push((
                "401",
                error_response(
                    "No key, or one that is malformed, unknown, revoked or expired (`missing_api_key`, `invalid_api_key`, `revoked_api_key`, `expired_api_key`)",
                    false,
                ),
            ));
            errors.push((
                "429",
                error_response(
                    "Over the key's rate limit, or too many failed authentications from this address (`rate_limited`)",
                    true,
                ),
            ));
        }
        if self.path_id {
            errors.push((
                "404",
                error_response(
                    "Nothing with this id that the key may see (`not_found`): objects of other workspaces are never revealed",
                    false,
                ),
            ));
        }
        if self.body {
            errors.push((
                "408",
                error_response(
                    "The request body stopped arriving (`request_timeout`); the connection is closed",
                    false,
                ),
            ));
            errors.push((
                "413",
                error_response(
                    "The request body is over the size limit (`payload_too_large`)",
                    false,
                ),
            ));
        }
        if self.body || self.query {
            errors.push((
                "422",
                error_response(
                    "A parameter or the body is invalid (`validation_error`); `field` names it",
                    false,
                ),
            ));
        }
        errors.push((
            "503",
            error_response(
                "The server is at its connection limit, or cannot reach its database (`service_unavailable`); `Retry-After` says when to retry",
                true,
            ),
        ));
        errors
    }
}

fn add_error_responses(doc: &mut Value) {
    let global_security = doc.get("security").cloned();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let shape = Shape::of(operation, global_security.as_ref());
            let responses = operation.entry("responses").or_insert_with(|| json!({}));
            let Some(responses) = responses.as_object_mut() else {
                continue;
            };
            for (status, error) in shape.errors() {
                match responses.get_mut(status) {
                    None => {
                        responses.insert(status.to_owned(), error);
                    }
                    Some(declared) => merge_error(declared, error),
                }
            }
            // An error an annotation declares with its description only
            // (e.g. the 429 of an operation that needs no key) gets the
            // error body, and `Retry-After` for 429 and 503.
            for (status, declared) in responses.iter_mut() {
                let is_error = status.as_str() >= "400" && status.len() == 3;
                if is_error && declared.get("content").is_none() {
                    let description = declared["description"].as_str().unwrap_or_default();
                    let retry_after = status == "429" || status == "503";
                    *declared = error_response(description, retry_after);
                }
            }
        }
    }
}

/// A status the annotation already declares keeps its description (and
/// gains the shared `Retry-After` header, e.g. a route's own 429); if its
/// body is not the error body (e.g. `/readyz`'s 503), it may be either.
fn merge_error(declared: &mut Value, error: Value) {
    let schema = &mut declared["content"]["application/json"]["schema"];
    if schema.get("$ref").and_then(Value::as_str) == Some(ERROR_BODY) {
        if let Some(headers) = error.get("headers") {
            if declared.get("headers").is_none() {
                declared["headers"] = headers.clone();
            }
        }
        return;
    }
    if schema.is_null() {
        // Declared with a description only: the error body, keeping it.
        let description = declared["description"].clone();
        *declared = error;
        if description.as_str().is_some_and(|d| !d.is_empty()) {
            declared["description"] = description;
        }
        return;
    }
    let theirs = schema.take();
    *schema = json!({"oneOf": [theirs, {"$ref": ERROR_BODY}]});
    let description = match (
        declared["description"].as_str(),
        error["description"].as_str(),
    ) {
        (Some(theirs), Some(more)) if !theirs.is_empty() => format!("{theirs}; or: {more}"),
        (_, more) => more.unwrap_or_default().to_owned(),
    };
    declared["description"] = Value::String(description);
    if let Some(headers) = error.get("headers") {
        if declared.get("headers").is_none() {
            // Not required: the other body comes without it.
            let mut headers = headers.clone();
            for header in headers
                .as_object_mut()
                .into_iter()
                .flat_map(|h| h.values_mut())
            {
                header["required"] = Value::Bool(false);
            }
            declared["headers"] = headers;
        }
    }
}

/// `WorkflowDefinition` (what the server checks before storing a definition
/// verbatim) with the catalog's node types.
fn add_workflow_definition(doc: &mut Value, node_types: &[&str]) {
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    schemas.insert(
        noxus_api::openapi::WORKFLOW_DEFINITION.to_owned(),
        json!({
            "type": "object",
            "description": "A workflow definition: `nodes` and `edges`, and any other members, stored verbatim",
            "required": ["nodes", "edges"],
            "properties": {
                "flow_version": {"type": "string", "description": "e.g. `v1`"},
                "nodes": {"type": "array", "items": {"$ref": "#/components/schemas/WorkflowNode"}},
                "edges": {"type": "array", "items": {"$ref": "#/components/schemas/WorkflowEdge"}},
            },
        }),
    );
    schemas.insert(
        "WorkflowNode".to_owned(),
        json!({
            "type": "object",
            "description": "A node: its `id` and a `type` of `GET /v1/nodes`; other members are stored verbatim",
            "required": ["id", "type"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "type": {"type": "string", "enum": node_types},
            },
        }),
    );
    schemas.insert(
        "WorkflowEdge".to_owned(),
        json!({
            "type": "object",
            "description": "An edge: `from_id` and `to_id` objects, or (V2) `source` and `target` strings; other members are stored verbatim",
            "anyOf": [
                {
                    "required": ["from_id", "to_id"],
                    "properties": {"from_id": {"type": "object"}, "to_id": {"type": "object"}},
                },
                {
                    "required": ["source", "target"],
                    "properties": {"source": {"type": "string"}, "target": {"type": "string"}},
                },
            ],
        }),
    );
}

/// `RateLimitSetting`: `RateLimitSpec` under the operator's ceiling, for
/// the bodies that set a limit (stored limits, which a later ceiling may
/// undercut, keep `RateLimitSpec`).
fn add_rate_limit_setting(doc: &mut Value, ceiling: crate::rate_limit::RateLimit) {
    let Some(mut setting) = doc.pointer("/components/schemas/RateLimitSpec").cloned() else {
        return;
    };
    setting["properties"]["per_second"]["maximum"] =
        json!(RATE_PER_SECOND_MAX.min(ceiling.per_second));
    setting["properties"]["burst"]["maximum"] = json!(RATE_BURST_MAX.min(ceiling.burst));
    setting["description"] = json!(format!(
        "A rate limit to set: at most {} per second with bursts of {} (the operator's ceiling); without `burst`, twice `per_second` must be within it too",
        RATE_PER_SECOND_MAX.min(ceiling.per_second),
        RATE_BURST_MAX.min(ceiling.burst)
    ));
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert("RateLimitSetting".to_owned(), setting);
    }
    for body in ["UpdateWorkspace", "CreateApiKey"] {
        if let Some(field) =
            doc.pointer_mut(&format!("/components/schemas/{body}/properties/rate_limit"))
        {
            retarget(field, "RateLimitSpec", "RateLimitSetting");
        }
    }
}

/// Replaces every `$ref` to schema `from` in `value` by one to `to`.
fn retarget(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if key == "$ref" && inner.as_str() == Some(&format!("#/components/schemas/{from}"))
                {
                    *inner = Value::String(format!("#/components/schemas/{to}"));
                } else {
                    retarget(inner, from, to);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| retarget(v, from, to)),
        _ => {}
    }
}
