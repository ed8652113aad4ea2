use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;

use super::*;
use crate::runs::openai::tests::{stub, Seen, KEY};
use crate::runs::openai::OpenAiCompatible;

/// Records what the executor tells it; stops after `stop_after` nodes.
#[derive(Default)]
struct Recorder {
    started: Mutex<Vec<(String, usize, usize)>>,
    finished: Mutex<Vec<(String, Value, Value, u8)>>,
    stop_after: Option<usize>,
    models: Option<Box<dyn ModelProvider>>,
}

#[async_trait]
impl RunEnv for Recorder {
    async fn node_started(&self, node_id: &str, index: usize, total: usize) {
        self.started
            .lock()
            .expect("lock")
            .push((node_id.to_owned(), index, total));
    }

    async fn node_finished(&self, node_id: &str, input: &Value, output: &Value, progress: u8) {
        self.finished.lock().expect("lock").push((
            node_id.to_owned(),
            input.clone(),
            output.clone(),
            progress,
        ));
    }

    fn stopped(&self) -> bool {
        self.stop_after
            .is_some_and(|n| self.finished.lock().expect("lock").len() >= n)
    }

    fn models(&self) -> Option<&dyn ModelProvider> {
        self.models.as_deref()
    }
}

/// Answers `model|system|prompt|temperature|max_tokens`.
#[derive(Debug)]
struct EchoModel;

#[async_trait]
impl ModelProvider for EchoModel {
    async fn complete(
        &self,
        model: &str,
        system_prompt: Option<&str>,
        prompt: &str,
        temperature: f64,
        max_tokens: u32,
    ) -> Result<String, String> {
        Ok(format!(
            "{model}|{}|{prompt}|{temperature}|{max_tokens}",
            system_prompt.unwrap_or("-")
        ))
    }
}

fn catalog() -> Catalog {
    Catalog::default_catalog().expect("the built-in catalog")
}

fn node(id: &str, kind: &str, config: Value) -> Value {
    json!({"id": id, "type": kind, "node_config": config})
}

fn edge(from: &str, to: &str) -> Value {
    edge_into(from, to, "input", None)
}

fn edge_into(from: &str, to: &str, connector: &str, key: Option<&str>) -> Value {
    json!({
        "from_id": {"node_id": from, "connector_name": "output", "key": null, "optional": false},
        "to_id": {"node_id": to, "connector_name": connector, "key": key, "optional": false},
        "id": format!("{from}->{to}"),
    })
}

fn flow(nodes: Vec<Value>, edges: Vec<Value>) -> Value {
    json!({"flow_version": "v1", "nodes": nodes, "edges": edges})
}

fn input(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn compile(definition: &Value) -> Plan {
    Plan::compile(definition, &catalog()).expect("the definition compiles")
}

fn compile_error(definition: &Value) -> RunError {
    Plan::compile(definition, &catalog()).expect_err("the definition is refused")
}

async fn run(definition: &Value, run_input: &Map<String, Value>) -> Result<RunOutput, RunFailure> {
    execute(&compile(definition), run_input, &Recorder::default()).await
}

fn failure(detail: &str, node_id: &str) -> RunFailure {
    RunFailure::Failed {
        node_id: Some(node_id.to_owned()),
        detail: detail.to_owned(),
    }
}

/// input → compose (with `template`) → output.
fn template_flow(template: &str) -> Value {
    flow(
        vec![
            node("n1", "InputNode", json!({"label": "Question"})),
            node("c", "ComposeTextNode", json!({"template": template})),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge("n1", "c"), edge("c", "o")],
    )
}

async fn compose_once(template: &str, question: Value) -> Result<String, RunFailure> {
    let output = run(&template_flow(template), &input(&[("n1::input", question)])).await?;
    Ok(output.output["o::output"]["text"]
        .as_str()
        .expect("text")
        .to_owned())
}

#[tokio::test]
async fn input_compose_output_gives_the_output_map_and_reports_each_node() {
    let plan = compile(&template_flow("Q: {input}!"));
    assert_eq!(plan.node_ids().collect::<Vec<_>>(), ["n1", "c", "o"]);
    let env = Recorder::default();
    let output = execute(&plan, &input(&[("n1::input", json!("why?"))]), &env)
        .await
        .expect("completed");
    assert_eq!(output.output, json!({"o::output": {"text": "Q: why?!"}}));
    assert_eq!(
        *env.started.lock().expect("lock"),
        [
            ("n1".to_owned(), 0, 3),
            ("c".to_owned(), 1, 3),
            ("o".to_owned(), 2, 3)
        ]
    );
    assert_eq!(
        *env.finished.lock().expect("lock"),
        [
            (
                "n1".to_owned(),
                json!({"input": "why?"}),
                json!({"output": "why?"}),
                33
            ),
            (
                "c".to_owned(),
                json!({"input": "why?"}),
                json!({"output": "Q: why?!"}),
                66
            ),
            (
                "o".to_owned(),
                json!({"input": "Q: why?!"}),
                json!({"output": "Q: why?!"}),
                100
            ),
        ]
    );
}

#[tokio::test]
async fn nodes_run_in_dependency_order_whatever_the_definition_order() {
    let definition = flow(
        vec![
            node("o", "OutputNode", json!({})),
            node("c", "ComposeTextNode", json!({})),
            node("n1", "InputNode", json!({})),
        ],
        vec![edge("c", "o"), edge("n1", "c")],
    );
    assert_eq!(
        compile(&definition).node_ids().collect::<Vec<_>>(),
        ["n1", "c", "o"]
    );
    let output = run(&definition, &input(&[("n1::input", json!("x"))]))
        .await
        .expect("completed");
    assert_eq!(output.output, json!({"o::output": {"text": "x"}}));
}

#[tokio::test]
async fn the_input_may_be_keyed_by_the_input_nodes_label() {
    let output = run(
        &template_flow("{input}"),
        &input(&[("Question", json!("by label"))]),
    )
    .await
    .expect("completed");
    assert_eq!(output.output["o::output"]["text"], "by label");
}

#[tokio::test]
async fn the_node_key_wins_over_the_label() {
    let output = run(
        &template_flow("{input}"),
        &input(&[("Question", json!("label")), ("n1::input", json!("key"))]),
    )
    .await
    .expect("completed");
    assert_eq!(output.output["o::output"]["text"], "key");
}

#[tokio::test]
async fn a_missing_input_fails_the_run_naming_the_label_and_the_key() {
    let error = run(&template_flow("{input}"), &input(&[("other", json!("x"))]))
        .await
        .expect_err("missing input");
    assert_eq!(
        error,
        failure(
            "the run input has no value for 'Question' (key n1::input)",
            "n1"
        )
    );
    // A null counts as missing.
    let error = run(
        &template_flow("{input}"),
        &input(&[("n1::input", Value::Null)]),
    )
    .await
    .expect_err("null input");
    assert_eq!(error.node_id(), Some("n1"));
}

#[tokio::test]
async fn an_input_node_without_a_label_uses_the_catalogs_default_label() {
    let definition = flow(
        vec![
            node("n1", "InputNode", json!({})),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge("n1", "o")],
    );
    let output = run(&definition, &input(&[("Input 1", json!("default label"))]))
        .await
        .expect("completed");
    assert_eq!(output.output["o::output"]["text"], "default label");
}

#[tokio::test]
async fn a_fixed_input_ignores_the_run_input() {
    let definition = flow(
        vec![
            node(
                "n1",
                "InputNode",
                json!({"fixed_value": true, "value": "fixed"}),
            ),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge("n1", "o")],
    );
    let output = run(&definition, &input(&[("n1::input", json!("given"))]))
        .await
        .expect("completed");
    assert_eq!(output.output["o::output"]["text"], "fixed");
}

#[tokio::test]
async fn non_text_values_reach_the_output_as_json_text() {
    let definition = flow(
        vec![
            node("n1", "InputNode", json!({})),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge("n1", "o")],
    );
    let output = run(
        &definition,
        &input(&[("n1::input", json!({"a": [1, true]}))]),
    )
    .await
    .expect("completed");
    assert_eq!(output.output["o::output"]["text"], r#"{"a":[1,true]}"#);
}

#[tokio::test]
async fn an_input_larger_than_the_bound_fails_the_run() {
    let big = "x".repeat(MAX_VALUE_BYTES + 1);
    let error = run(
        &template_flow("{input}"),
        &input(&[("n1::input", json!(big))]),
    )
    .await
    .expect_err("too large");
    assert_eq!(
        error,
        failure(
            "the run input's value for 'Question' is larger than 1 MiB",
            "n1"
        )
    );
}

#[tokio::test]
async fn a_fixed_value_on_a_nodes_input_counts_as_connected() {
    let definition = flow(
        vec![json!({
            "id": "o", "type": "OutputNode",
            "inputs": [{"node_id": "o", "name": "input", "fixed_value": "constant", "type": "connector"}],
        })],
        vec![],
    );
    let output = run(&definition, &Map::new()).await.expect("completed");
    assert_eq!(output.output, json!({"o::output": {"text": "constant"}}));
}

#[tokio::test]
async fn v2_edges_are_read_like_the_official_client_reads_them() {
    let definition = flow(
        vec![
            node("n1", "InputNode", json!({})),
            node("o", "OutputNode", json!({})),
        ],
        vec![json!({"id": "e", "source": "n1", "target": "o"})],
    );
    let output = run(&definition, &input(&[("n1::input", json!("v2"))]))
        .await
        .expect("completed");
    assert_eq!(output.output["o::output"]["text"], "v2");
}

#[tokio::test]
async fn an_empty_workflow_completes_with_an_empty_output() {
    let output = run(&flow(vec![], vec![]), &Map::new())
        .await
        .expect("completed");
    assert_eq!(output.output, json!({}));
}

#[test]
fn a_cycle_is_refused_naming_a_node_on_it() {
    let definition = flow(
        vec![
            node("n1", "InputNode", json!({})),
            node("c1", "ComposeTextNode", json!({"template": "{input} {b}"})),
            node("c2", "ComposeTextNode", json!({})),
            node("o", "OutputNode", json!({})),
        ],
        vec![
            edge("n1", "c1"),
            edge_into("c2", "c1", "input", Some("b")),
            edge("c1", "c2"),
            edge("c2", "o"),
        ],
    );
    let error = compile_error(&definition);
    assert!(
        matches!(error.node_id.as_deref(), Some("c1" | "c2")),
        "{error:?}"
    );
    assert!(
        error
            .detail
            .starts_with("the workflow has a cycle through node 'c"),
        "{}",
        error.detail
    );
}

#[test]
fn a_node_linked_to_itself_is_a_cycle() {
    let definition = flow(
        vec![node("c", "ComposeTextNode", json!({}))],
        vec![edge("c", "c")],
    );
    let error = compile_error(&definition);
    assert_eq!(error.node_id.as_deref(), Some("c"));
    assert!(error.detail.contains("cycle"), "{}", error.detail);
}

#[test]
fn an_unknown_node_type_is_refused_listing_what_runs() {
    let error = compile_error(&flow(vec![node("x", "WebScraperNode", json!({}))], vec![]));
    assert_eq!(error.node_id.as_deref(), Some("x"));
    assert_eq!(
        error.detail,
        "node 'x' has type WebScraperNode, which this server cannot run; it runs InputNode, OutputNode, ComposeTextNode, JsonExtractNode, TextJoinNode, TextGenerationNode"
    );
}

#[test]
fn a_built_in_type_missing_from_the_operators_catalog_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("catalog.json");
    let default: Value =
        serde_json::from_str(include_str!("../../../catalog/default.json")).expect("json");
    let only_io: Vec<Value> = default["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["type"] == "InputNode" || n["type"] == "OutputNode")
        .cloned()
        .collect();
    std::fs::write(&path, json!({"nodes": only_io}).to_string()).expect("write");
    let catalog = Catalog::load(Some(&path)).expect("valid catalog");
    let error = Plan::compile(&template_flow("{input}"), &catalog).expect_err("refused");
    assert_eq!(
        error.detail,
        "node 'c' has type ComposeTextNode, which is not in this server's node catalog"
    );
}

#[test]
fn the_catalogs_defaults_are_the_executors_defaults() {
    // An operator's catalog may change a default; the executor follows it.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("catalog.json");
    let mut default: Value =
        serde_json::from_str(include_str!("../../../catalog/default.json")).expect("json");
    for node in default["nodes"].as_array_mut().expect("nodes") {
        if node["type"] == "ComposeTextNode" {
            node["config"]["template"]["default"] = json!("<{input}>");
        }
    }
    std::fs::write(&path, json!({"nodes": default["nodes"]}).to_string()).expect("write");
    let catalog = Catalog::load(Some(&path)).expect("valid catalog");
    let definition = flow(
        vec![
            node("n1", "InputNode", json!({})),
            node("c", "ComposeTextNode", json!({})),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge("n1", "c"), edge("c", "o")],
    );
    let plan = Plan::compile(&definition, &catalog).expect("compiles");
    let Some(Step {
        kind: NodeKind::Compose(pieces),
        ..
    }) = plan.steps.get(1)
    else {
        panic!("compose step expected");
    };
    assert_eq!(
        *pieces,
        [
            Piece::Text("<".into()),
            Piece::Variable("input".into()),
            Piece::Text(">".into())
        ]
    );
}

#[test]
fn every_built_in_node_is_in_the_default_catalog_with_the_same_connectors() {
    let default: Value =
        serde_json::from_str(include_str!("../../../catalog/default.json")).expect("json");
    for spec in SPECS {
        let entry = default["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["type"] == spec.kind)
            .unwrap_or_else(|| panic!("{} is in the catalog", spec.kind));
        let names = |side: &str, connector_type: Option<&str>| -> Vec<String> {
            entry[side]
                .as_array()
                .expect("connectors")
                .iter()
                .filter(|c| connector_type.is_none_or(|t| c["type"] != t))
                .map(|c| c["name"].as_str().expect("name").to_owned())
                .collect()
        };
        // An `input`-typed connector is the run input, not an edge's end.
        assert_eq!(names("inputs", Some("input")), spec.inputs, "{}", spec.kind);
        assert_eq!(names("outputs", None), spec.outputs, "{}", spec.kind);
        for (key, config) in entry["config"].as_object().expect("config") {
            assert_eq!(
                config["optional"], true,
                "{}.{key} must be optional (§4.1)",
                spec.kind
            );
        }
    }
}

#[test]
fn too_many_nodes_are_refused() {
    let nodes = (0..=MAX_NODES)
        .map(|i| node(&format!("n{i}"), "InputNode", json!({})))
        .collect();
    let error = compile_error(&flow(nodes, vec![]));
    assert_eq!(
        error.detail,
        "the workflow has 501 nodes; at most 500 can run"
    );
}

#[test]
fn broken_edges_and_nodes_are_refused_with_sentences() {
    let io = || {
        vec![
            node("n1", "InputNode", json!({})),
            node("o", "OutputNode", json!({})),
        ]
    };
    let cases = [
        (flow(io(), vec![edge("n1", "nowhere")]), "edge 0 ends at node 'nowhere', which is not in the workflow"),
        (flow(io(), vec![edge("ghost", "o")]), "edge 0 starts at node 'ghost', which is not in the workflow"),
        (flow(io(), vec![json!({"from_id": "n1", "to_id": "o"})]), "edge 0 must have `from_id` and `to_id` objects with `node_id` and `connector_name` (or `source` and `target`)"),
        (flow(io(), vec![edge("o", "n1")]), "node 'n1' (InputNode) takes its value from the run input, so edge 0 cannot enter it"),
        (flow(io(), vec![edge_into("n1", "o", "text", None)]), "node 'o' (OutputNode) has no input 'text' (edge 0 enters by it); its input is 'input'"),
        (flow(io(), vec![]), "node 'o' (OutputNode) needs something connected to its input 'input'"),
        (flow(vec![node("n1", "InputNode", json!({})), node("n2", "InputNode", json!({})), node("o", "OutputNode", json!({}))], vec![edge("n1", "o"), edge("n2", "o")]), "node 'o' (OutputNode) has two edges into its input 'input'; keep one"),
        (flow(vec![node("a", "InputNode", json!({})), node("a", "OutputNode", json!({}))], vec![]), "two nodes have the id 'a'"),
        (flow(vec![json!({"type": "InputNode"})], vec![]), "node 0 must have an `id`: text of 1 to 200 characters"),
        (json!({"nodes": []}), "the workflow definition must have a `edges` array"),
        (json!([]), "the workflow definition must be an object with `nodes` and `edges`"),
    ];
    for (definition, expected) in cases {
        assert_eq!(compile_error(&definition).detail, expected);
    }
}

#[test]
fn config_values_of_the_wrong_kind_are_refused() {
    let generation = |config: Value| {
        flow(
            vec![
                node("n1", "InputNode", json!({})),
                node("g", "TextGenerationNode", config),
                node("o", "OutputNode", json!({})),
            ],
            vec![edge_into("n1", "g", "prompt", None), edge("g", "o")],
        )
    };
    assert_eq!(
        compile_error(&generation(json!({"temperature": "hot"}))).detail,
        "node 'g' (TextGenerationNode) needs a number from 0 to 2 in `temperature`"
    );
    assert_eq!(
        compile_error(&generation(json!({"max_tokens": 0}))).detail,
        "node 'g' (TextGenerationNode) needs a whole number from 1 to 1000000 in `max_tokens`"
    );
    assert_eq!(
        compile_error(&generation(json!({"model": 4}))).detail,
        "node 'g' (TextGenerationNode) needs text in `model`"
    );
    assert_eq!(
        compile_error(&template_flow_with(json!({"template": ["x"]}))).detail,
        "node 'c' (ComposeTextNode) needs text in `template`"
    );
}

fn template_flow_with(config: Value) -> Value {
    flow(
        vec![
            node("n1", "InputNode", json!({})),
            node("c", "ComposeTextNode", config),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge("n1", "c"), edge("c", "o")],
    )
}

#[tokio::test]
async fn a_text_generation_node_without_a_provider_fails_with_a_sentence() {
    let definition = flow(
        vec![
            node("n1", "InputNode", json!({})),
            node("g", "TextGenerationNode", json!({"model": "gpt-4o"})),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge_into("n1", "g", "prompt", None), edge("g", "o")],
    );
    let error = run(&definition, &input(&[("n1::input", json!("Hi"))]))
        .await
        .expect_err("no provider");
    assert_eq!(
        error,
        failure(
            "no model provider is configured for model gpt-4o; start the server with --llm-base-url",
            "g"
        )
    );
}

fn generation_flow(config: Value) -> Value {
    flow(
        vec![
            node("n1", "InputNode", json!({})),
            node("c", "ComposeTextNode", json!({"template": "Say {input}"})),
            node("g", "TextGenerationNode", config),
            node("o", "OutputNode", json!({})),
        ],
        vec![
            edge("n1", "c"),
            edge_into("c", "g", "prompt", None),
            edge("g", "o"),
        ],
    )
}

#[tokio::test]
async fn a_text_generation_node_passes_its_config_to_the_provider() {
    let env = Recorder {
        models: Some(Box::new(EchoModel)),
        ..Recorder::default()
    };
    let plan = compile(&generation_flow(
        json!({"system_prompt": "Be kind.", "temperature": 0}),
    ));
    let output = execute(&plan, &input(&[("n1::input", json!("hello"))]), &env)
        .await
        .expect("completed");
    // The catalog's defaults fill in the model and max_tokens.
    assert_eq!(
        output.output["o::output"]["text"],
        "gpt-4o-mini|Be kind.|Say hello|0|1024"
    );
}

#[tokio::test]
async fn a_text_generation_node_calls_an_openai_compatible_endpoint() {
    let base = stub(Arc::new(Mutex::new(Seen::default()))).await;
    let provider = OpenAiCompatible::new(
        &base,
        Some(SecretString::from(KEY.to_owned())),
        Duration::from_secs(5),
    )
    .expect("valid URL");
    let env = Recorder {
        models: Some(Box::new(provider)),
        ..Recorder::default()
    };
    let plan = compile(&generation_flow(json!({})));
    let output = execute(&plan, &input(&[("n1::input", json!("hello"))]), &env)
        .await
        .expect("completed");
    assert_eq!(
        output.output,
        json!({"o::output": {"text": "Echo: Say hello"}})
    );
}

#[tokio::test]
async fn a_failing_endpoint_fails_the_node_with_the_endpoints_sentence() {
    let base = stub(Arc::new(Mutex::new(Seen::default()))).await;
    let provider = OpenAiCompatible::new(
        &base,
        Some(SecretString::from(KEY.to_owned())),
        Duration::from_secs(5),
    )
    .expect("valid URL");
    let env = Recorder {
        models: Some(Box::new(provider)),
        ..Recorder::default()
    };
    let definition = flow(
        vec![
            node("n1", "InputNode", json!({})),
            node("g", "TextGenerationNode", json!({})),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge_into("n1", "g", "prompt", None), edge("g", "o")],
    );
    let error = execute(
        &compile(&definition),
        &input(&[("n1::input", json!("fail"))]),
        &env,
    )
    .await
    .expect_err("failed");
    assert_eq!(
        error,
        failure(
            "the model gpt-4o-mini failed: the model endpoint answered 500 Internal Server Error: the model is overloaded",
            "g"
        )
    );
}

#[tokio::test]
async fn a_stop_request_ends_the_run_between_nodes() {
    let env = Recorder {
        stop_after: Some(1),
        ..Recorder::default()
    };
    let plan = compile(&template_flow("{input}"));
    let error = execute(&plan, &input(&[("n1::input", json!("x"))]), &env)
        .await
        .expect_err("stopped");
    assert_eq!(error, RunFailure::Stopped);
    assert_eq!(error.detail(), "the run was stopped");
    assert_eq!(env.finished.lock().expect("lock").len(), 1);
    assert_eq!(env.started.lock().expect("lock").len(), 1);
}

// ComposeTextNode

#[tokio::test]
async fn a_template_takes_single_and_double_braces() {
    assert_eq!(
        compose_once("{input} / {{input}} / {{ input }}", json!("v")).await,
        Ok("v / v / v".to_owned())
    );
}

#[tokio::test]
async fn braces_around_something_that_is_not_a_name_are_plain_text() {
    assert_eq!(
        compose_once(r#"{"q": "{input}"} {} {1} { {"#, json!("v")).await,
        Ok(r#"{"q": "v"} {} {1} { {"#.to_owned())
    );
}

#[tokio::test]
async fn a_value_holding_a_placeholder_is_not_expanded_again() {
    assert_eq!(
        compose_once("[{input}]", json!("{input}{input}")).await,
        Ok("[{input}{input}]".to_owned())
    );
}

#[tokio::test]
async fn an_expansion_past_the_bound_fails_the_node() {
    let half = "x".repeat(MAX_VALUE_BYTES / 2 + 1);
    assert_eq!(
        compose_once("{input}{input}", json!(half)).await,
        Err(failure("the composed text is larger than 1 MiB", "c"))
    );
}

#[tokio::test]
async fn keyed_edges_fill_named_variables() {
    let definition = flow(
        vec![
            node("a", "InputNode", json!({"label": "Name"})),
            node("b", "InputNode", json!({"label": "Town"})),
            node(
                "c",
                "ComposeTextNode",
                json!({"template": "{name} lives in {{town}}."}),
            ),
            node("o", "OutputNode", json!({})),
        ],
        vec![
            edge_into("a", "c", "input", Some("name")),
            edge_into("b", "c", "input", Some("town")),
            edge("c", "o"),
        ],
    );
    let env = Recorder::default();
    let output = execute(
        &compile(&definition),
        &input(&[("Name", json!("Ada")), ("Town", json!("London"))]),
        &env,
    )
    .await
    .expect("completed");
    assert_eq!(output.output["o::output"]["text"], "Ada lives in London.");
    let finished = env.finished.lock().expect("lock");
    assert_eq!(
        finished[2].1,
        json!({"input": {"name": "Ada", "town": "London"}})
    );
}

#[tokio::test]
async fn an_unkeyed_edge_and_keyed_edges_mix_in_one_template() {
    let definition = flow(
        vec![
            node("a", "InputNode", json!({"label": "A"})),
            node("b", "InputNode", json!({"label": "B"})),
            node(
                "c",
                "ComposeTextNode",
                json!({"template": "{input} and {other}"}),
            ),
            node("o", "OutputNode", json!({})),
        ],
        vec![
            edge("a", "c"),
            edge_into("b", "c", "input", Some("other")),
            edge("c", "o"),
        ],
    );
    let env = Recorder::default();
    let output = execute(
        &compile(&definition),
        &input(&[("A", json!("one")), ("B", json!("two"))]),
        &env,
    )
    .await
    .expect("completed");
    assert_eq!(output.output["o::output"]["text"], "one and two");
    let finished = env.finished.lock().expect("lock");
    assert_eq!(
        finished[2].1,
        json!({"input": {"input": "one", "other": "two"}})
    );
}

#[test]
fn a_placeholder_without_a_connected_input_is_refused() {
    let error = compile_error(&template_flow("Hello {nmae}"));
    assert_eq!(
        error.detail,
        "node 'c' (ComposeTextNode) uses {nmae} in its template, but no input of that name is connected; the connected variables are input"
    );
    let alone = flow(
        vec![
            node("c", "ComposeTextNode", json!({})),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge("c", "o")],
    );
    assert!(compile_error(&alone)
        .detail
        .ends_with("; nothing is connected"));
}

#[tokio::test]
async fn a_template_without_placeholders_needs_no_input() {
    let definition = flow(
        vec![
            node("c", "ComposeTextNode", json!({"template": "constant"})),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge("c", "o")],
    );
    let output = run(&definition, &Map::new()).await.expect("completed");
    assert_eq!(output.output["o::output"]["text"], "constant");
}

#[test]
fn templates_split_into_text_and_variables() {
    assert_eq!(
        parse_template("a{x}b{{ y.z }}{"),
        [
            Piece::Text("a".into()),
            Piece::Variable("x".into()),
            Piece::Text("b".into()),
            Piece::Variable("y.z".into()),
            Piece::Text("{".into()),
        ]
    );
    assert_eq!(parse_template(""), []);
    assert_eq!(
        parse_template("{{x}"),
        [Piece::Text("{".into()), Piece::Variable("x".into())]
    );
    let long_name = format!("{{{}}}", "a".repeat(MAX_PLACEHOLDER_CHARS + 10));
    assert_eq!(parse_template(&long_name), [Piece::Text(long_name.clone())]);
}

#[test]
fn a_template_of_only_braces_parses_in_linear_time() {
    let braces = "{".repeat(MAX_VALUE_BYTES);
    let started = std::time::Instant::now();
    assert_eq!(parse_template(&braces), [Piece::Text(braces.clone())]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

// JsonExtractNode

fn extract_flow(path: &str) -> Value {
    flow(
        vec![
            node("n1", "InputNode", json!({})),
            node("j", "JsonExtractNode", json!({"path": path})),
            node("o", "OutputNode", json!({})),
        ],
        vec![edge("n1", "j"), edge("j", "o")],
    )
}

async fn extract_once(path: &str, document: Value) -> Result<Value, RunFailure> {
    let env = Recorder::default();
    execute(
        &compile(&extract_flow(path)),
        &input(&[("n1::input", document)]),
        &env,
    )
    .await?;
    let finished = env.finished.lock().expect("lock");
    Ok(finished[1].2["output"].clone())
}

#[tokio::test]
async fn a_json_path_reads_keys_and_positions() {
    let document = json!(r#"{"a": {"b": [{"c": "deep"}, 2]}, "top": 1}"#);
    assert_eq!(
        extract_once("a.b[0].c", document.clone()).await,
        Ok(json!("deep"))
    );
    assert_eq!(extract_once("a.b[1]", document.clone()).await, Ok(json!(2)));
    assert_eq!(
        extract_once("a.b", document.clone()).await,
        Ok(json!([{"c": "deep"}, 2]))
    );
    assert_eq!(
        extract_once("", document).await,
        Ok(json!({"a": {"b": [{"c": "deep"}, 2]}, "top": 1}))
    );
    assert_eq!(extract_once("[1]", json!("[10, 20]")).await, Ok(json!(20)));
    // A JSON value given as is is read directly.
    assert_eq!(
        extract_once("x", json!({"x": "given"})).await,
        Ok(json!("given"))
    );
}

#[tokio::test]
async fn extracted_text_is_unquoted_and_other_values_are_json_text_in_the_output() {
    let run_input = input(&[("n1::input", json!(r#"{"s": "plain", "o": {"k": 1}}"#))]);
    let text = run(&extract_flow("s"), &run_input)
        .await
        .expect("completed");
    assert_eq!(text.output["o::output"]["text"], "plain");
    let object = run(&extract_flow("o"), &run_input)
        .await
        .expect("completed");
    assert_eq!(object.output["o::output"]["text"], r#"{"k":1}"#);
}

#[tokio::test]
async fn a_json_path_that_matches_nothing_fails_with_where_it_stopped() {
    let document = json!(r#"{"a": {"b": [1, 2]}}"#);
    let cases = [
        ("a.x", "a has no key 'x'"),
        ("missing", "the document has no key 'missing'"),
        ("a.b[5]", "a.b has 2 items, so there is no [5]"),
        (
            "a.b.c",
            "a.b is a list, not an object, so it has no key 'c'",
        ),
        ("a[0]", "a is an object, not a list, so it has no [0]"),
        (
            "a.b[0].z",
            "a.b[0] is a number, not an object, so it has no key 'z'",
        ),
    ];
    for (path, expected) in cases {
        assert_eq!(
            extract_once(path, document.clone()).await,
            Err(failure(expected, "j")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn text_that_is_not_json_fails_the_extraction() {
    let error = extract_once("a", json!("not json"))
        .await
        .expect_err("not JSON");
    assert!(
        error.detail().starts_with("its input is not JSON ("),
        "{error}"
    );
}

#[test]
fn json_paths_parse_or_say_what_is_wrong() {
    assert_eq!(
        parse_path(" a.b[0][12].c d "),
        Ok(vec![
            PathStep::Key("a".into()),
            PathStep::Key("b".into()),
            PathStep::Index(0),
            PathStep::Index(12),
            PathStep::Key("c d".into()),
        ])
    );
    assert_eq!(parse_path(""), Ok(vec![]));
    for (path, expected) in [
        (
            "a..b",
            "it has an empty key (two dots in a row, or a dot at an end)",
        ),
        (
            ".a",
            "it has an empty key (two dots in a row, or a dot at an end)",
        ),
        (
            "a.",
            "it has an empty key (two dots in a row, or a dot at an end)",
        ),
        (
            "a.[0]",
            "it has an empty key (two dots in a row, or a dot at an end)",
        ),
        ("a[0", "a `[` has no matching `]`"),
        ("a[x]", "`[x]` is not a list position such as [0]"),
        ("a[-1]", "`[-1]` is not a list position such as [0]"),
        ("a[]", "`[]` is not a list position such as [0]"),
        ("a]", "`a` must be followed by `.`, `[` or the end"),
        ("a[0]b", "`a[0]` must be followed by `.`, `[` or the end"),
        (
            "a[99999999999999999999999]",
            "`[99999999999999999999999]` is too large a position",
        ),
    ] {
        assert_eq!(parse_path(path), Err(expected.to_owned()), "{path}");
    }
    let deep = vec!["k"; MAX_PATH_STEPS + 1].join(".");
    assert_eq!(
        parse_path(&deep),
        Err("it has more than 32 steps".to_owned())
    );
    assert!(parse_path(&vec!["k"; MAX_PATH_STEPS].join(".")).is_ok());
    let long = "k".repeat(MAX_PATH_CHARS + 1);
    assert_eq!(
        parse_path(&long),
        Err("it is longer than 1000 characters".to_owned())
    );
}

#[test]
fn a_bad_json_path_is_refused_when_the_workflow_compiles() {
    assert_eq!(
        compile_error(&extract_flow("a..b")).detail,
        "node 'j' (JsonExtractNode) has a bad `path`: it has an empty key (two dots in a row, or a dot at an end)"
    );
}

// TextJoinNode

fn join_flow(separator: Option<&str>, sources: usize) -> Value {
    let mut nodes: Vec<Value> = (0..sources)
        .map(|i| {
            node(
                &format!("n{i}"),
                "InputNode",
                json!({"label": format!("in{i}")}),
            )
        })
        .collect();
    let config = separator.map_or(json!({}), |s| json!({"separator": s}));
    nodes.push(node("t", "TextJoinNode", config));
    nodes.push(node("o", "OutputNode", json!({})));
    let mut edges: Vec<Value> = (0..sources).map(|i| edge(&format!("n{i}"), "t")).collect();
    edges.push(edge("t", "o"));
    flow(nodes, edges)
}

#[tokio::test]
async fn a_join_takes_its_edges_in_order_and_spreads_lists() {
    let env = Recorder::default();
    let output = execute(
        &compile(&join_flow(Some(", "), 3)),
        &input(&[
            ("in0", json!("a")),
            ("in1", json!(["b", 2, null])),
            ("in2", json!({"c": true})),
        ]),
        &env,
    )
    .await
    .expect("completed");
    assert_eq!(
        output.output["o::output"]["text"],
        r#"a, b, 2, , {"c":true}"#
    );
    let finished = env.finished.lock().expect("lock");
    assert_eq!(
        finished[3].1,
        json!({"input": ["a", ["b", 2, null], {"c": true}]})
    );
}

#[tokio::test]
async fn a_join_separates_with_a_new_line_by_default() {
    let output = run(
        &join_flow(None, 2),
        &input(&[("in0", json!("first")), ("in1", json!("second"))]),
    )
    .await
    .expect("completed");
    assert_eq!(output.output["o::output"]["text"], "first\nsecond");
}

#[tokio::test]
async fn a_join_of_an_empty_list_is_empty_text_and_a_huge_join_fails() {
    let empty = run(&join_flow(None, 1), &input(&[("in0", json!([]))]))
        .await
        .expect("completed");
    assert_eq!(empty.output["o::output"]["text"], "");
    let items = vec![json!("x".repeat(1000)); 600];
    let huge = run(
        &join_flow(Some(""), 2),
        &input(&[("in0", json!(items)), ("in1", json!(items))]),
    )
    .await
    .expect_err("too large");
    assert_eq!(huge, failure("the joined text is larger than 1 MiB", "t"));
}

#[tokio::test]
async fn one_large_input_copied_into_many_nodes_fails_the_run_instead_of_being_held_many_times() {
    // Each copy is under the 1 MiB a value may hold; 40 of them are not
    // under the 16 MiB a run's values may hold together.
    let mut nodes = vec![node("in", "InputNode", json!({"label": "big"}))];
    let mut edges = Vec::new();
    for i in 0..40 {
        let id = format!("out{i}");
        nodes.push(node(&id, "OutputNode", json!({"label": id})));
        edges.push(edge("in", &id));
    }
    let big = "x".repeat(MAX_VALUE_BYTES - 100);
    let outcome = run(&flow(nodes, edges), &input(&[("big", json!(big))])).await;
    let Err(RunFailure::Failed { detail, node_id }) = outcome else {
        panic!("the run did not fail: {outcome:?}");
    };
    assert!(
        detail.contains("together are larger than 16 MiB"),
        "{detail}"
    );
    assert!(node_id.is_some_and(|id| id.starts_with("out")));
}
