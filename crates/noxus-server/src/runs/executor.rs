//! The workflow executor: [`Plan::compile`] checks a definition against the
//! built-in nodes and orders it, [`execute`] walks it. No store and no HTTP:
//! the caller's [`RunEnv`] hears progress, asks to stop and lends the model
//! provider. docs/runs.md ("Built-in nodes") describes each node.
//!
//! The definition and the run input come from clients, so everything is
//! bounded: nodes, edges, each value's size, template expansion (one pass,
//! no recursion) and JSON paths.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use crate::catalog::Catalog;
use crate::domain::validation::truncate;

/// Most nodes a workflow may have to run.
pub const MAX_NODES: usize = 500;
/// Most edges a workflow may have to run.
pub const MAX_EDGES: usize = 2_000;
/// Largest value (text, or JSON once serialized) a node may take or give.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// The most bytes the values of one run's nodes hold together (each node's
/// result is kept for the nodes after it and recorded as its output): a
/// small request cannot make a run hold hundreds of megabytes by copying
/// one large input into many nodes.
pub const MAX_RUN_BYTES: usize = 16 * 1024 * 1024;
/// Most steps (keys and list positions) in a `JsonExtractNode` path.
pub const MAX_PATH_STEPS: usize = 32;
const MAX_PATH_CHARS: usize = 1_000;
const MAX_ID_CHARS: usize = 200;
const MAX_MODEL_CHARS: usize = 200;
const MAX_PLACEHOLDER_CHARS: usize = 100;
const MAX_TOKENS_LIMIT: u64 = 1_000_000;

/// Why a definition cannot run; answered before the run is created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct RunError {
    /// The node at fault, when there is one.
    pub node_id: Option<String>,
    /// A sentence for people.
    pub detail: String,
}

impl RunError {
    fn workflow(detail: impl Into<String>) -> Self {
        Self {
            node_id: None,
            detail: detail.into(),
        }
    }

    fn node(node: &RawNode<'_>, detail: impl fmt::Display) -> Self {
        Self {
            node_id: Some(node.id.to_owned()),
            detail: format!("{} {detail}", node.describe()),
        }
    }
}

/// How a run that started did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunFailure {
    /// [`RunEnv::stopped`] said so between two nodes.
    Stopped,
    /// A node failed (or, without `node_id`, the run as a whole).
    Failed {
        /// The node that failed.
        node_id: Option<String>,
        /// A sentence for people, e.g. "the run input has no value for
        /// 'Question' (key n1::input)".
        detail: String,
    },
}

impl RunFailure {
    /// The node that failed, if any.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Self::Stopped => None,
            Self::Failed { node_id, .. } => node_id.as_deref(),
        }
    }

    /// A sentence for people.
    pub fn detail(&self) -> &str {
        match self {
            Self::Stopped => "the run was stopped",
            Self::Failed { detail, .. } => detail,
        }
    }
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

/// What a completed run returns.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    /// `{"{output_node_id}::output": {"text": "…"}}`, one entry per
    /// `OutputNode` (the Run's `output`).
    pub output: Value,
}

/// A language model behind an API; `TextGenerationNode` calls it.
#[async_trait]
pub trait ModelProvider: Send + Sync + fmt::Debug {
    /// The model's answer to `prompt`, or a sentence saying why there is none
    /// (never containing a credential).
    async fn complete(
        &self,
        model: &str,
        system_prompt: Option<&str>,
        prompt: &str,
        temperature: f64,
        max_tokens: u32,
    ) -> Result<String, String>;
}

/// What the executor needs from the one running it.
#[async_trait]
pub trait RunEnv: Send + Sync {
    /// Node `node_id`, the `index`-th (from 0) of `total`, starts.
    async fn node_started(&self, node_id: &str, index: usize, total: usize);
    /// Node `node_id` finished: what it took (`{connector: value}`), what
    /// it gave (`{"output": value}`) and the run's progress in percent.
    async fn node_finished(&self, node_id: &str, input: &Value, output: &Value, progress: u8);
    /// Whether the run should stop; asked before each node.
    fn stopped(&self) -> bool;
    /// The model provider, if the operator configured one.
    fn models(&self) -> Option<&dyn ModelProvider>;
}

/// What the executor knows about a built-in node type.
struct NodeSpec {
    kind: &'static str,
    /// Connectors that edges may enter.
    inputs: &'static [&'static str],
    /// Connectors that edges may leave (all built-ins have one, `output`).
    outputs: &'static [&'static str],
    /// How several edges into one connector combine.
    fan_in: FanIn,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FanIn {
    /// One edge per connector; an edge's key is ignored.
    Single,
    /// One edge per (connector, key); the key names a template variable.
    Keyed,
    /// Any number of edges, taken in the definition's order.
    Many,
}

const SPECS: &[NodeSpec] = &[
    NodeSpec {
        kind: "InputNode",
        inputs: &[],
        outputs: &["output"],
        fan_in: FanIn::Single,
    },
    NodeSpec {
        kind: "OutputNode",
        inputs: &["input"],
        outputs: &["output"],
        fan_in: FanIn::Single,
    },
    NodeSpec {
        kind: "ComposeTextNode",
        inputs: &["input"],
        outputs: &["output"],
        fan_in: FanIn::Keyed,
    },
    NodeSpec {
        kind: "JsonExtractNode",
        inputs: &["input"],
        outputs: &["output"],
        fan_in: FanIn::Single,
    },
    NodeSpec {
        kind: "TextJoinNode",
        inputs: &["input"],
        outputs: &["output"],
        fan_in: FanIn::Many,
    },
    NodeSpec {
        kind: "TextGenerationNode",
        inputs: &["prompt"],
        outputs: &["output"],
        fan_in: FanIn::Single,
    },
];

/// The node types [`execute`] runs.
pub fn node_types() -> impl Iterator<Item = &'static str> {
    SPECS.iter().map(|s| s.kind)
}

fn spec(kind: &str) -> Option<&'static NodeSpec> {
    SPECS.iter().find(|s| s.kind == kind)
}

/// A checked definition, in the order its nodes run.
#[derive(Debug, Clone)]
pub struct Plan {
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
struct Step {
    id: String,
    kind: NodeKind,
    inputs: Vec<Incoming>,
}

#[derive(Debug, Clone)]
struct Incoming {
    connector: String,
    key: Option<String>,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// The `output` of an earlier step (an index into `Plan::steps`).
    Step(usize),
    /// The node's own `inputs[].fixed_value`.
    Fixed(Value),
}

#[derive(Debug, Clone)]
enum NodeKind {
    Input { label: String, fixed: Option<Value> },
    Output,
    Compose(Vec<Piece>),
    JsonExtract(Vec<PathStep>),
    TextJoin { separator: String },
    TextGeneration(Generation),
}

#[derive(Debug, Clone)]
struct Generation {
    model: String,
    system_prompt: Option<String>,
    temperature: f64,
    max_tokens: u32,
}

/// A node of the definition while it is checked.
struct RawNode<'a> {
    id: &'a str,
    spec: &'static NodeSpec,
    body: &'a Map<String, Value>,
}

impl RawNode<'_> {
    fn describe(&self) -> String {
        format!("node '{}' ({})", truncate(self.id), self.spec.kind)
    }
}

/// One end of an edge.
struct Point<'a> {
    node: &'a str,
    connector: &'a str,
    key: Option<&'a str>,
}

impl Plan {
    /// Checks `definition` (`{"nodes": [...], "edges": [...]}` as the
    /// official client saves it) and orders its nodes: every type known to
    /// the executor and to `catalog`, every edge between existing
    /// connectors, no cycle, every needed input connected or given a
    /// `fixed_value`, every config value of the right kind.
    pub fn compile(definition: &Value, catalog: &Catalog) -> Result<Plan, RunError> {
        let Some(map) = definition.as_object() else {
            return Err(RunError::workflow(
                "the workflow definition must be an object with `nodes` and `edges`",
            ));
        };
        let nodes = list(map, "nodes")?;
        let edges = list(map, "edges")?;
        if nodes.len() > MAX_NODES {
            return Err(RunError::workflow(format!(
                "the workflow has {} nodes; at most {MAX_NODES} can run",
                nodes.len()
            )));
        }
        if edges.len() > MAX_EDGES {
            return Err(RunError::workflow(format!(
                "the workflow has {} edges; at most {MAX_EDGES} can run",
                edges.len()
            )));
        }

        let mut raw = Vec::with_capacity(nodes.len());
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let node = parse_node(i, node, catalog)?;
            if index_of.insert(node.id, i).is_some() {
                return Err(RunError {
                    node_id: Some(node.id.to_owned()),
                    detail: format!("two nodes have the id '{}'", truncate(node.id)),
                });
            }
            raw.push(node);
        }

        // Incoming edges of each node as (connector, key, from node).
        let mut incoming: Vec<Vec<(String, Option<String>, usize)>> = vec![Vec::new(); raw.len()];
        for (e, edge) in edges.iter().enumerate() {
            let (from, to) = endpoints(edge).ok_or_else(|| {
                RunError::workflow(format!(
                    "edge {e} must have `from_id` and `to_id` objects with `node_id` and `connector_name` (or `source` and `target`)"
                ))
            })?;
            let from_index = *index_of.get(from.node).ok_or_else(|| {
                RunError::workflow(format!(
                    "edge {e} starts at node '{}', which is not in the workflow",
                    truncate(from.node)
                ))
            })?;
            let to_index = *index_of.get(to.node).ok_or_else(|| {
                RunError::workflow(format!(
                    "edge {e} ends at node '{}', which is not in the workflow",
                    truncate(to.node)
                ))
            })?;
            let source = &raw[from_index];
            if !source.spec.outputs.contains(&from.connector) {
                return Err(RunError::node(
                    source,
                    format_args!(
                        "has no output '{}' (edge {e} leaves by it); its output is '{}'",
                        truncate(from.connector),
                        source.spec.outputs.join("', '")
                    ),
                ));
            }
            let target = &raw[to_index];
            if target.spec.inputs.is_empty() {
                return Err(RunError::node(
                    target,
                    format_args!("takes its value from the run input, so edge {e} cannot enter it"),
                ));
            }
            if !target.spec.inputs.contains(&to.connector) {
                return Err(RunError::node(
                    target,
                    format_args!(
                        "has no input '{}' (edge {e} enters by it); its input is '{}'",
                        truncate(to.connector),
                        target.spec.inputs.join("', '")
                    ),
                ));
            }
            let key = match target.spec.fan_in {
                FanIn::Keyed => to.key.map(str::to_owned),
                FanIn::Single | FanIn::Many => None,
            };
            incoming[to_index].push((to.connector.to_owned(), key, from_index));
        }

        // Kinds (config) and inputs, in the definition's order so that the
        // first error reported is the first in the definition.
        let mut kinds = Vec::with_capacity(raw.len());
        let mut inputs = Vec::with_capacity(raw.len());
        for (i, node) in raw.iter().enumerate() {
            let node_inputs = node_inputs(node, &incoming[i])?;
            kinds.push(node_kind(node, &node_inputs, catalog)?);
            inputs.push(node_inputs);
        }

        let order = topological_order(&raw, &incoming)?;
        let mut position = vec![0; raw.len()];
        for (at, &i) in order.iter().enumerate() {
            position[i] = at;
        }
        let mut slots: Vec<Option<Step>> = raw
            .iter()
            .zip(kinds)
            .zip(inputs)
            .map(|((node, kind), inputs)| {
                Some(Step {
                    id: node.id.to_owned(),
                    kind,
                    inputs,
                })
            })
            .collect();
        let steps = order
            .iter()
            .filter_map(|&i| slots[i].take())
            .map(|mut step| {
                for incoming in &mut step.inputs {
                    if let Source::Step(from) = incoming.source {
                        incoming.source = Source::Step(position[from]);
                    }
                }
                step
            })
            .collect();
        Ok(Plan { steps })
    }

    /// The node ids in the order they run (the Run's `node_ids`).
    pub fn node_ids(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.id.as_str())
    }

    /// How many nodes run.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the workflow has no node.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

fn list<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a Vec<Value>, RunError> {
    match map.get(key) {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(RunError::workflow(format!(
            "the workflow definition must have a `{key}` array"
        ))),
    }
}

fn parse_node<'a>(i: usize, node: &'a Value, catalog: &Catalog) -> Result<RawNode<'a>, RunError> {
    let Some(body) = node.as_object() else {
        return Err(RunError::workflow(format!("node {i} must be an object")));
    };
    let id = match body.get("id") {
        Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_ID_CHARS => id,
        _ => {
            return Err(RunError::workflow(format!(
                "node {i} must have an `id`: text of 1 to {MAX_ID_CHARS} characters"
            )))
        }
    };
    let Some(kind) = body.get("type").and_then(Value::as_str) else {
        return Err(RunError {
            node_id: Some(id.clone()),
            detail: format!("node '{}' must have a `type`", truncate(id)),
        });
    };
    let Some(spec) = spec(kind) else {
        return Err(RunError {
            node_id: Some(id.clone()),
            detail: format!(
                "node '{}' has type {}, which this server cannot run; it runs {}",
                truncate(id),
                truncate(kind),
                node_types().collect::<Vec<_>>().join(", ")
            ),
        });
    };
    if !catalog.has_node_type(kind) {
        return Err(RunError {
            node_id: Some(id.clone()),
            detail: format!(
                "node '{}' has type {kind}, which is not in this server's node catalog",
                truncate(id)
            ),
        });
    }
    Ok(RawNode { id, spec, body })
}

fn endpoints(edge: &Value) -> Option<(Point<'_>, Point<'_>)> {
    fn point(value: &Value) -> Option<Point<'_>> {
        Some(Point {
            node: value.get("node_id")?.as_str()?,
            connector: value.get("connector_name")?.as_str()?,
            key: value.get("key").and_then(Value::as_str),
        })
    }
    if let (Some(from), Some(to)) = (edge.get("from_id"), edge.get("to_id")) {
        return Some((point(from)?, point(to)?));
    }
    // V2 edges, read as the official client reads them.
    let handle = |name: &str, default: &'static str| -> Option<&str> {
        match edge.get(name) {
            None | Some(Value::Null) => Some(default),
            Some(Value::String(s)) if s.is_empty() => Some(default),
            Some(v) => v.as_str(),
        }
    };
    Some((
        Point {
            node: edge.get("source")?.as_str()?,
            connector: handle("source_handle", "output")?,
            key: None,
        },
        Point {
            node: edge.get("target")?.as_str()?,
            connector: handle("target_handle", "input")?,
            key: None,
        },
    ))
}

/// The node's inputs: its edges, then `inputs[].fixed_value` for any
/// connector no edge enters.
fn node_inputs(
    node: &RawNode<'_>,
    edges: &[(String, Option<String>, usize)],
) -> Result<Vec<Incoming>, RunError> {
    let mut seen: HashSet<(&str, Option<&str>)> = HashSet::new();
    let mut inputs = Vec::with_capacity(edges.len());
    for (connector, key, from) in edges {
        if node.spec.fan_in != FanIn::Many && !seen.insert((connector, key.as_deref())) {
            let what = match key {
                Some(key) => format!("the variable '{}'", truncate(key)),
                None => format!("its input '{connector}'"),
            };
            return Err(RunError::node(
                node,
                format_args!("has two edges into {what}; keep one"),
            ));
        }
        inputs.push(Incoming {
            connector: connector.clone(),
            key: key.clone(),
            source: Source::Step(*from),
        });
    }
    let declared = node.body.get("inputs").and_then(Value::as_array);
    for entry in declared.into_iter().flatten() {
        let (Some(name), Some(value)) = (
            entry.get("name").and_then(Value::as_str),
            entry.get("fixed_value").filter(|v| !v.is_null()),
        ) else {
            continue;
        };
        if !node.spec.inputs.contains(&name) || edges.iter().any(|(c, _, _)| c == name) {
            continue;
        }
        if value_bytes(value) > MAX_VALUE_BYTES {
            return Err(RunError::node(
                node,
                format_args!("has a fixed value for '{name}' larger than {}", size_text()),
            ));
        }
        inputs.push(Incoming {
            connector: name.to_owned(),
            key: None,
            source: Source::Fixed(value.clone()),
        });
    }
    Ok(inputs)
}

/// Reads `node_config`, falling back to the catalog's defaults (the
/// official client sends only the keys that were set).
struct Config<'a> {
    node: &'a RawNode<'a>,
    catalog: &'a Catalog,
}

impl Config<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.node
            .body
            .get("node_config")
            .and_then(|c| c.get(key))
            .filter(|v| !v.is_null())
            .or_else(|| self.catalog.config_default(self.node.spec.kind, key))
            .filter(|v| !v.is_null())
    }

    fn text(&self, key: &str, fallback: &str, max_bytes: usize) -> Result<String, RunError> {
        Ok(self
            .optional_text(key, max_bytes)?
            .unwrap_or_else(|| fallback.to_owned()))
    }

    fn optional_text(&self, key: &str, max_bytes: usize) -> Result<Option<String>, RunError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.len() <= max_bytes => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(RunError::node(
                self.node,
                format_args!("has a `{key}` longer than {max_bytes} bytes"),
            )),
            Some(_) => Err(RunError::node(
                self.node,
                format_args!("needs text in `{key}`"),
            )),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, RunError> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(RunError::node(
                self.node,
                format_args!("needs true or false in `{key}`"),
            )),
        }
    }

    fn number(&self, key: &str, fallback: f64, range: (f64, f64)) -> Result<f64, RunError> {
        match self.get(key) {
            None => Ok(fallback),
            Some(v) => match v.as_f64() {
                Some(n) if n >= range.0 && n <= range.1 => Ok(n),
                _ => Err(RunError::node(
                    self.node,
                    format_args!("needs a number from {} to {} in `{key}`", range.0, range.1),
                )),
            },
        }
    }

    fn whole(&self, key: &str, fallback: u64, max: u64) -> Result<u64, RunError> {
        match self.get(key) {
            None => Ok(fallback),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(RunError::node(
                    self.node,
                    format_args!("needs a whole number from 1 to {max} in `{key}`"),
                )),
            },
        }
    }
}

fn node_kind(
    node: &RawNode<'_>,
    inputs: &[Incoming],
    catalog: &Catalog,
) -> Result<NodeKind, RunError> {
    let config = Config { node, catalog };
    let connected = |connector: &str| inputs.iter().any(|i| i.connector == connector);
    let require = |connector: &str| {
        if connected(connector) {
            Ok(())
        } else {
            Err(RunError::node(
                node,
                format_args!("needs something connected to its input '{connector}'"),
            ))
        }
    };
    Ok(match node.spec.kind {
        "InputNode" => {
            let label = config.text("label", "Input", MAX_ID_CHARS * 4)?;
            let fixed = if config.flag("fixed_value")? {
                let value = config.get("value").cloned().unwrap_or(json!(""));
                if value_bytes(&value) > MAX_VALUE_BYTES {
                    return Err(RunError::node(
                        node,
                        format_args!("has a fixed value larger than {}", size_text()),
                    ));
                }
                Some(value)
            } else {
                None
            };
            NodeKind::Input { label, fixed }
        }
        "OutputNode" => {
            require("input")?;
            NodeKind::Output
        }
        "ComposeTextNode" => {
            let template = config.text("template", "{input}", MAX_VALUE_BYTES)?;
            let pieces = parse_template(&template);
            let names: Vec<&str> = inputs.iter().map(variable_name).collect();
            for piece in &pieces {
                if let Piece::Variable(name) = piece {
                    if !names.contains(&name.as_str()) {
                        let connected = if names.is_empty() {
                            "nothing is connected".to_owned()
                        } else {
                            format!("the connected variables are {}", names.join(", "))
                        };
                        return Err(RunError::node(
                            node,
                            format_args!(
                                "uses {{{}}} in its template, but no input of that name is connected; {connected}",
                                truncate(name)
                            ),
                        ));
                    }
                }
            }
            NodeKind::Compose(pieces)
        }
        "JsonExtractNode" => {
            require("input")?;
            let path = config.text("path", "", MAX_PATH_CHARS * 4)?;
            let steps = parse_path(&path)
                .map_err(|why| RunError::node(node, format_args!("has a bad `path`: {why}")))?;
            NodeKind::JsonExtract(steps)
        }
        "TextJoinNode" => {
            require("input")?;
            let separator = config.text("separator", "\n", MAX_VALUE_BYTES)?;
            NodeKind::TextJoin { separator }
        }
        "TextGenerationNode" => {
            require("prompt")?;
            let model = config.text("model", "gpt-4o-mini", MAX_MODEL_CHARS)?;
            let system_prompt = config.optional_text("system_prompt", MAX_VALUE_BYTES)?;
            let temperature = config.number("temperature", 0.7, (0.0, 2.0))?;
            let max_tokens = config.whole("max_tokens", 1024, MAX_TOKENS_LIMIT)?;
            NodeKind::TextGeneration(Generation {
                model,
                system_prompt,
                temperature,
                max_tokens: u32::try_from(max_tokens).unwrap_or(u32::MAX),
            })
        }
        other => {
            return Err(RunError::node(
                node,
                format_args!("has type {other}, which has no executor"),
            ))
        }
    })
}

/// The name a `ComposeTextNode` template uses for an input: the edge's
/// key, else the connector's name.
fn variable_name(input: &Incoming) -> &str {
    input.key.as_deref().unwrap_or(&input.connector)
}

/// Kahn's algorithm, taking ready nodes in the definition's order so that
/// the same definition always runs in the same order.
fn topological_order(
    raw: &[RawNode<'_>],
    incoming: &[Vec<(String, Option<String>, usize)>],
) -> Result<Vec<usize>, RunError> {
    let mut waiting: Vec<usize> = incoming.iter().map(Vec::len).collect();
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); raw.len()];
    for (to, edges) in incoming.iter().enumerate() {
        for &(_, _, from) in edges {
            successors[from].push(to);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = waiting
        .iter()
        .enumerate()
        .filter(|(_, &n)| n == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(raw.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &next in &successors[i] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(Reverse(next));
            }
        }
    }
    if order.len() == raw.len() {
        return Ok(order);
    }
    // Every node left waits on another node left: walking back from one
    // of them must come round to a node on a cycle.
    let Some(mut at) = waiting.iter().position(|&n| n > 0) else {
        return Err(RunError::workflow("the workflow has a cycle"));
    };
    let mut visited = HashSet::new();
    while visited.insert(at) {
        match incoming[at].iter().find(|(_, _, from)| waiting[*from] > 0) {
            Some(&(_, _, from)) => at = from,
            None => break,
        }
    }
    Err(RunError {
        node_id: Some(raw[at].id.to_owned()),
        detail: format!(
            "the workflow has a cycle through {}; a workflow's edges must not lead back to a node",
            raw[at].describe()
        ),
    })
}

/// A piece of a `ComposeTextNode` template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Variable(String),
}

/// Splits a template into text and `{name}` / `{{name}}` placeholders. A
/// name starts with a letter or `_` and holds letters, digits, `_`, `-`,
/// `.` and spaces (trimmed); braces around anything else (JSON, say) are
/// plain text.
fn parse_template(template: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        text.push_str(&rest[..open]);
        let after = &rest[open..];
        match placeholder(after, "{{", "}}").or_else(|| placeholder(after, "{", "}")) {
            Some((name, used)) => {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Variable(name.to_owned()));
                rest = &after[used..];
            }
            None => {
                text.push('{');
                rest = &after[1..];
            }
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// `(name, bytes used)` if `s` starts with `open`, a name and `close`.
fn placeholder<'a>(s: &'a str, open: &str, close: &str) -> Option<(&'a str, usize)> {
    let inner = s.strip_prefix(open)?;
    // Look no further than a name can reach: a long run of `{` stays linear.
    let mut end = None;
    for (count, (at, c)) in inner.char_indices().enumerate() {
        if count > MAX_PLACEHOLDER_CHARS + 2 || c == '{' {
            return None;
        }
        if inner[at..].starts_with(close) {
            end = Some(at);
            break;
        }
    }
    let end = end?;
    let name = inner[..end].trim();
    let mut chars = name.chars();
    let first = chars.next()?;
    let valid = (first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || "_-. ".contains(c));
    valid.then_some((name, open.len() + end + close.len()))
}

/// One step of a `JsonExtractNode` path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathStep {
    Key(String),
    Index(usize),
}

impl fmt::Display for PathStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(key) => write!(f, ".{key}"),
            Self::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// `a.b[0].c`: keys separated by dots, list positions in brackets; empty
/// for the whole document.
fn parse_path(path: &str) -> Result<Vec<PathStep>, String> {
    let path = path.trim();
    if path.chars().count() > MAX_PATH_CHARS {
        return Err(format!("it is longer than {MAX_PATH_CHARS} characters"));
    }
    let mut steps = Vec::new();
    if path.is_empty() {
        return Ok(steps);
    }
    let mut rest = path;
    let mut want_key = !rest.starts_with('[');
    loop {
        if want_key {
            let end = rest.find(['.', '[', ']']).unwrap_or(rest.len());
            if end == 0 {
                return Err(
                    "it has an empty key (two dots in a row, or a dot at an end)".to_owned(),
                );
            }
            steps.push(PathStep::Key(rest[..end].to_owned()));
            rest = &rest[end..];
        } else {
            let after = &rest[1..];
            let close = after
                .find(']')
                .ok_or_else(|| "a `[` has no matching `]`".to_owned())?;
            let digits = &after[..close];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "`[{}]` is not a list position such as [0]",
                    truncate(digits)
                ));
            }
            let index = digits
                .parse()
                .map_err(|_| format!("`[{}]` is too large a position", truncate(digits)))?;
            steps.push(PathStep::Index(index));
            rest = &after[close + 1..];
        }
        if steps.len() > MAX_PATH_STEPS {
            return Err(format!("it has more than {MAX_PATH_STEPS} steps"));
        }
        if rest.is_empty() {
            return Ok(steps);
        }
        if let Some(after_dot) = rest.strip_prefix('.') {
            rest = after_dot;
            want_key = true;
        } else if rest.starts_with('[') {
            want_key = false;
        } else {
            return Err(format!(
                "`{}` must be followed by `.`, `[` or the end",
                truncate(&path[..path.len() - rest.len()])
            ));
        }
    }
}

/// Runs `plan` over the run `input` (`{"{input_node_id}::input": value}`,
/// or keyed by an InputNode's label), telling `env` about each node.
pub async fn execute(
    plan: &Plan,
    input: &Map<String, Value>,
    env: &dyn RunEnv,
) -> Result<RunOutput, RunFailure> {
    let total = plan.steps.len();
    let mut outputs: Vec<Value> = Vec::with_capacity(total);
    let mut result = Map::new();
    let mut held = 0usize;
    for (index, step) in plan.steps.iter().enumerate() {
        if env.stopped() {
            return Err(RunFailure::Stopped);
        }
        env.node_started(&step.id, index, total).await;
        let taken = taken_inputs(step, &outputs);
        let value = run_step(step, &taken, input, env)
            .await
            .and_then(|value| {
                let bytes = value_bytes(&value);
                held = held.saturating_add(bytes);
                if bytes > MAX_VALUE_BYTES {
                    Err(format!("its result is larger than {}", size_text()))
                } else if held > MAX_RUN_BYTES {
                    Err(format!(
                        "the results of the run's nodes together are larger than {} MiB",
                        MAX_RUN_BYTES / (1024 * 1024)
                    ))
                } else {
                    Ok(value)
                }
            })
            .map_err(|detail| RunFailure::Failed {
                node_id: Some(step.id.clone()),
                detail,
            })?;
        if let NodeKind::Output = step.kind {
            result.insert(
                format!("{}::output", step.id),
                json!({ "text": text_of(&value) }),
            );
        }
        let progress = u8::try_from((index + 1) * 100 / total).unwrap_or(100);
        env.node_finished(
            &step.id,
            &record_inputs(step, &taken, &value),
            &json!({ "output": value }),
            progress,
        )
        .await;
        outputs.push(value);
    }
    Ok(RunOutput {
        output: Value::Object(result),
    })
}

/// The values entering `step`, with the connector and key of each.
fn taken_inputs<'a>(step: &'a Step, outputs: &'a [Value]) -> Vec<(&'a Incoming, &'a Value)> {
    step.inputs
        .iter()
        .filter_map(|incoming| {
            let value = match &incoming.source {
                Source::Step(from) => outputs.get(*from)?,
                Source::Fixed(value) => value,
            };
            Some((incoming, value))
        })
        .collect()
}

/// What `node_finished` reports as a node's input: `{connector: value}`;
/// `{connector: {variable: value}}` where edges carry keys; a list where
/// several edges enter one connector of a `TextJoinNode`. An `InputNode`
/// reports the value it took from the run input as `input`.
fn record_inputs(step: &Step, taken: &[(&Incoming, &Value)], value: &Value) -> Value {
    let mut record = Map::new();
    if let NodeKind::Input { .. } = step.kind {
        record.insert("input".to_owned(), value.clone());
        return Value::Object(record);
    }
    for (incoming, value) in taken {
        let value = (*value).clone();
        let keyed = taken
            .iter()
            .any(|(other, _)| other.connector == incoming.connector && other.key.is_some());
        let slot = record.entry(incoming.connector.clone());
        if keyed {
            if let Value::Object(variables) = slot.or_insert_with(|| json!({})) {
                variables.insert(variable_name(incoming).to_owned(), value);
            }
        } else if step_fans_in(step) {
            if let Value::Array(items) = slot.or_insert_with(|| json!([])) {
                items.push(value);
            }
        } else {
            record.insert(incoming.connector.clone(), value);
        }
    }
    Value::Object(record)
}

fn step_fans_in(step: &Step) -> bool {
    matches!(step.kind, NodeKind::TextJoin { .. })
}

async fn run_step(
    step: &Step,
    taken: &[(&Incoming, &Value)],
    run_input: &Map<String, Value>,
    env: &dyn RunEnv,
) -> Result<Value, String> {
    let first = |connector: &str| {
        taken
            .iter()
            .find(|(i, _)| i.connector == connector)
            .map(|(_, v)| *v)
            .unwrap_or(&Value::Null)
    };
    match &step.kind {
        NodeKind::Input { label, fixed } => {
            if let Some(value) = fixed {
                return Ok(value.clone());
            }
            let key = format!("{}::input", step.id);
            match run_input
                .get(&key)
                .or_else(|| run_input.get(label))
                .filter(|v| !v.is_null())
            {
                Some(value) if value_bytes(value) > MAX_VALUE_BYTES => Err(format!(
                    "the run input's value for '{}' is larger than {}",
                    truncate(label),
                    size_text()
                )),
                Some(value) => Ok(value.clone()),
                None => Err(format!(
                    "the run input has no value for '{}' (key {key})",
                    truncate(label)
                )),
            }
        }
        NodeKind::Output => Ok(Value::String(text_of(first("input")))),
        NodeKind::Compose(pieces) => {
            let variables: HashMap<&str, String> = taken
                .iter()
                .map(|(incoming, value)| (variable_name(incoming), text_of(value)))
                .collect();
            compose(pieces, &variables).map(Value::String)
        }
        NodeKind::JsonExtract(path) => extract(first("input"), path),
        NodeKind::TextJoin { separator } => {
            join(taken.iter().map(|(_, v)| *v), separator).map(Value::String)
        }
        NodeKind::TextGeneration(generation) => {
            let Some(models) = env.models() else {
                return Err(format!(
                    "no model provider is configured for model {}; start the server with --llm-base-url",
                    truncate(&generation.model)
                ));
            };
            models
                .complete(
                    &generation.model,
                    generation.system_prompt.as_deref(),
                    &text_of(first("prompt")),
                    generation.temperature,
                    generation.max_tokens,
                )
                .await
                .map(Value::String)
                .map_err(|why| format!("the model {} failed: {why}", truncate(&generation.model)))
        }
    }
}

/// Fills the template in one pass: a value containing `{name}` is not
/// expanded again.
fn compose(pieces: &[Piece], variables: &HashMap<&str, String>) -> Result<String, String> {
    let mut text = String::new();
    for piece in pieces {
        let part = match piece {
            Piece::Text(t) => t.as_str(),
            Piece::Variable(name) => variables.get(name.as_str()).map_or("", String::as_str),
        };
        if text.len() + part.len() > MAX_VALUE_BYTES {
            return Err(format!("the composed text is larger than {}", size_text()));
        }
        text.push_str(part);
    }
    Ok(text)
}

/// The value at `path` in `input`: JSON text is parsed first; a JSON value
/// given as is (an object in the run input, say) is read directly.
fn extract(input: &Value, path: &[PathStep]) -> Result<Value, String> {
    let parsed;
    let mut at = match input {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|e| format!("its input is not JSON ({e})"))?;
            &parsed
        }
        other => other,
    };
    let mut walked = String::new();
    for step in path {
        let here = if walked.is_empty() {
            "the document".to_owned()
        } else {
            truncate(walked.trim_start_matches('.'))
        };
        at = match (step, at) {
            (PathStep::Key(key), Value::Object(map)) => map
                .get(key)
                .ok_or_else(|| format!("{here} has no key '{}'", truncate(key)))?,
            (PathStep::Index(i), Value::Array(items)) => items
                .get(*i)
                .ok_or_else(|| format!("{here} has {} items, so there is no [{i}]", items.len()))?,
            (PathStep::Key(key), other) => {
                return Err(format!(
                    "{here} is {}, not an object, so it has no key '{}'",
                    kind_of(other),
                    truncate(key)
                ))
            }
            (PathStep::Index(i), other) => {
                return Err(format!(
                    "{here} is {}, not a list, so it has no [{i}]",
                    kind_of(other)
                ))
            }
        };
        walked.push_str(&step.to_string());
    }
    Ok(at.clone())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The items of every value (a list gives its items), as text, with
/// `separator` between them.
fn join<'a>(values: impl Iterator<Item = &'a Value>, separator: &str) -> Result<String, String> {
    let mut text = String::new();
    let mut first = true;
    for value in values {
        let items: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            other => Box::new(std::iter::once(other)),
        };
        for item in items {
            if !first {
                text.push_str(separator);
            }
            first = false;
            text.push_str(&text_of(item));
            if text.len() > MAX_VALUE_BYTES {
                return Err(format!("the joined text is larger than {}", size_text()));
            }
        }
    }
    Ok(text)
}

/// A value as text: text as is, null as nothing, anything else as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The size of a value: its bytes for text, its JSON's otherwise.
fn value_bytes(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    match value {
        Value::String(s) => s.len(),
        other => {
            let mut count = Count(0);
            // Writing to a counter cannot fail.
            let _ = serde_json::to_writer(&mut count, other);
            count.0
        }
    }
}

fn size_text() -> String {
    format!("{} MiB", MAX_VALUE_BYTES / (1024 * 1024))
}

#[cfg(test)]
mod tests;
