//! The node catalog (`/v1/nodes`) and the model list (`/v1/models/llms`,
//! `/presets`). The operator may replace them with a JSON file; it is
//! checked at start against what the official client requires, so that a
//! bad file fails the start instead of every client.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::body::Bytes;
use serde_json::Value;

const DEFAULT_CATALOG: &str = include_str!("../catalog/default.json");

const CONNECTOR_TYPES: &[&str] = &[
    "connector",
    "input",
    "output",
    "variable_connector",
    "variable_type_connector",
    "variable_type_size_connector",
    "variable_type_input",
    "variable_type_output",
];

const CONFIG_TYPES: &[&str] = &[
    "int",
    "float",
    "bool",
    "dict",
    "str",
    "list",
    "Image",
    "Audio",
    "File",
    "Quote",
    "Custom",
    "Any",
    "GoogleSheet",
    "SourceType",
];

/// The catalog, pre-serialized: responses are byte-stable (the official
/// client memoises its parse by the body's hash) and cost no serialization.
#[derive(Debug, Clone)]
pub struct Catalog {
    nodes: Bytes,
    models: Bytes,
    presets: Bytes,
    node_types: HashSet<String>,
    /// `config.{key}.default` of every node type: what the executor uses
    /// for a key a node's `node_config` leaves out (the official client
    /// sends only the keys that were set).
    config_defaults: Arc<HashMap<String, HashMap<String, Value>>>,
}

impl Catalog {
    /// The built-in catalog.
    pub fn default_catalog() -> anyhow::Result<Self> {
        Self::from_json(DEFAULT_CATALOG).context("the built-in catalog is invalid")
    }

    /// Loads `path`, falling back to the built-in entries for any of
    /// `nodes`, `models`, `presets` the file leaves out.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Self::default_catalog();
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read catalog file {}", path.display()))?;
        let mut merged: Value = serde_json::from_str(DEFAULT_CATALOG)?;
        let custom: Value = serde_json::from_str(&text)
            .with_context(|| format!("catalog file {} is not valid JSON", path.display()))?;
        let Value::Object(custom) = custom else {
            bail!(
                "catalog file {} must hold a JSON object with `nodes`, `models` and/or `presets`",
                path.display()
            );
        };
        for (section, value) in custom {
            if !["nodes", "models", "presets"].contains(&section.as_str()) {
                bail!("catalog file {}: unknown section `{section}` (expected nodes, models, presets)", path.display());
            }
            merged[section] = value;
        }
        Self::from_json(&merged.to_string())
            .with_context(|| format!("catalog file {} is invalid", path.display()))
    }

    fn from_json(text: &str) -> anyhow::Result<Self> {
        let value: Value = serde_json::from_str(text)?;
        let nodes = value
            .get("nodes")
            .and_then(Value::as_array)
            .context("`nodes` must be an array")?;
        let mut node_types = HashSet::new();
        let mut config_defaults = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let kind = check_node(node).with_context(|| format!("nodes[{i}]"))?;
            if !node_types.insert(kind.to_owned()) {
                bail!("nodes[{i}]: node type `{kind}` appears twice");
            }
            let defaults: HashMap<String, Value> = node
                .get("config")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(key, entry)| (key.clone(), entry["default"].clone()))
                .collect();
            config_defaults.insert(kind.to_owned(), defaults);
        }
        let models = value
            .get("models")
            .and_then(Value::as_array)
            .context("`models` must be an array")?;
        let presets = value
            .get("presets")
            .and_then(Value::as_array)
            .context("`presets` must be an array")?;
        Ok(Self {
            nodes: Bytes::from(serde_json::to_vec(nodes)?),
            models: Bytes::from(serde_json::to_vec(models)?),
            presets: Bytes::from(serde_json::to_vec(presets)?),
            node_types,
            config_defaults: Arc::new(config_defaults),
        })
    }

    /// `/v1/nodes` body.
    pub fn nodes_json(&self) -> Bytes {
        self.nodes.clone()
    }

    /// `/v1/models/llms` body.
    pub fn models_json(&self) -> Bytes {
        self.models.clone()
    }

    /// `/v1/models/llms/presets` body.
    pub fn presets_json(&self) -> Bytes {
        self.presets.clone()
    }

    /// The node types of the catalog, sorted.
    pub fn node_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.node_types.iter().map(String::as_str).collect();
        types.sort_unstable();
        types
    }

    /// Whether `kind` is a node type of the catalog.
    pub fn has_node_type(&self, kind: &str) -> bool {
        self.node_types.contains(kind)
    }

    /// The `default` of config entry `key` of node type `kind`, if the
    /// catalog lists that entry (the default itself may be null).
    pub fn config_default(&self, kind: &str, key: &str) -> Option<&Value> {
        self.config_defaults.get(kind)?.get(key)
    }
}

fn check_node(node: &Value) -> anyhow::Result<&str> {
    let kind = node
        .get("type")
        .and_then(Value::as_str)
        .context("`type` must be a string")?;
    for field in ["title", "description"] {
        node.get(field)
            .and_then(Value::as_str)
            .with_context(|| format!("`{field}` must be a string"))?;
    }
    node.get("integrations")
        .and_then(Value::as_array)
        .context("`integrations` must be an array")?;
    for flag in ["is_available", "visible"] {
        node.get(flag)
            .and_then(Value::as_bool)
            .with_context(|| format!("`{flag}` must be a boolean"))?;
    }
    match node.get("config_endpoint") {
        Some(Value::Null | Value::String(_)) => {}
        _ => bail!("`config_endpoint` must be present (a string or null)"),
    }
    for side in ["inputs", "outputs"] {
        let connectors = node
            .get(side)
            .and_then(Value::as_array)
            .with_context(|| format!("`{side}` must be an array"))?;
        for (i, c) in connectors.iter().enumerate() {
            c.get("name")
                .and_then(Value::as_str)
                .with_context(|| format!("{side}[{i}].name must be a string"))?;
            let t = c
                .get("type")
                .and_then(Value::as_str)
                .with_context(|| format!("{side}[{i}].type must be a string"))?;
            if !CONNECTOR_TYPES.contains(&t) {
                bail!(
                    "{side}[{i}].type `{t}` is not one of {}",
                    CONNECTOR_TYPES.join(", ")
                );
            }
        }
    }
    let config = node
        .get("config")
        .and_then(Value::as_object)
        .context("`config` must be an object")?;
    for (name, entry) in config {
        let t = entry
            .get("type")
            .and_then(Value::as_str)
            .with_context(|| format!("config.{name}.type must be a string"))?;
        if !CONFIG_TYPES.contains(&t) {
            bail!(
                "config.{name}.type `{t}` is not one of {}",
                CONFIG_TYPES.join(", ")
            );
        }
        for flag in ["visible", "optional"] {
            entry
                .get(flag)
                .and_then(Value::as_bool)
                .with_context(|| format!("config.{name}.{flag} must be a boolean"))?;
        }
        for key in ["description", "default"] {
            if entry.get(key).is_none() {
                bail!("config.{name}.{key} must be present (null is allowed)");
            }
        }
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_catalog_is_valid_and_has_the_builder_nodes() {
        let catalog = Catalog::default_catalog().expect("valid");
        assert!(catalog.has_node_type("InputNode"));
        assert!(catalog.has_node_type("OutputNode"));
        assert!(!catalog.has_node_type("Nope"));
    }

    #[test]
    fn a_config_type_the_client_rejects_is_refused_at_load() {
        let bad = DEFAULT_CATALOG.replacen("\"type\": \"bool\"", "\"type\": \"datetime\"", 1);
        let err = Catalog::from_json(&bad).expect_err("datetime is rejected by the client");
        assert!(format!("{err:#}").contains("datetime"));
    }
}
