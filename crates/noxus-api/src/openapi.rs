//! Schemas of fields whose bounds come from [`crate::limits`], for the
//! OpenAPI document (`schema_with` in the wire types).

use utoipa::openapi::schema::{ObjectBuilder, Ref, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{KnownFormat, RefOr, Schema};
use utoipa::Number;

use crate::limits::{
    self, LEAK_CANDIDATES_MAX, LEAK_KEY_MAX_CHARS, LEAK_SOURCE_MAX_CHARS, LEAK_URL_MAX_CHARS,
    MAX_GRACE_SECONDS, NAME_MAX_CHARS, RATE_BURST_MAX, RATE_PER_SECOND_MAX,
    VERSION_DESCRIPTION_MAX_CHARS, WORKFLOW_NAME_MAX_CHARS, WORKSPACE_DESCRIPTION_MAX_CHARS,
};

/// The component the server adds with the node types of its catalog.
pub const WORKFLOW_DEFINITION: &str = "WorkflowDefinition";

fn uint(n: u64) -> Option<Number> {
    Some(Number::UInt(usize::try_from(n).unwrap_or(usize::MAX)))
}

fn nullable(kind: Type) -> SchemaType {
    SchemaType::from_iter([kind, Type::Null])
}

fn name(max: usize, what: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(limits::name_pattern()))
        .description(Some(format!(
            "{what}: 1 to {max} characters (surrounding spaces count, and are trimmed), not only white space, without control characters"
        )))
}

/// A workspace or key name.
pub fn short_name() -> ObjectBuilder {
    name(NAME_MAX_CHARS, "Name")
}

/// A workflow or workflow version name.
pub fn workflow_name() -> ObjectBuilder {
    name(WORKFLOW_NAME_MAX_CHARS, "Name")
}

fn description(max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(nullable(Type::String))
        .max_length(Some(max))
        .description(Some(format!("Free text, at most {max} characters")))
}

/// A workspace's description.
pub fn workspace_description() -> ObjectBuilder {
    description(WORKSPACE_DESCRIPTION_MAX_CHARS)
}

/// A workflow version's description.
pub fn version_description() -> ObjectBuilder {
    description(VERSION_DESCRIPTION_MAX_CHARS)
}

/// `per_second` of a rate limit.
pub fn per_second() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(uint(1))
        .maximum(uint(u64::from(RATE_PER_SECOND_MAX)))
        .description(Some("Sustained requests per second"))
}

/// `burst` of a rate limit.
pub fn burst() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Integer))
        .minimum(uint(1))
        .maximum(uint(u64::from(RATE_BURST_MAX)))
        .description(Some(
            "Requests allowed at once; default (absent or null) twice `per_second`",
        ))
}

/// `grace_period_seconds` of a rotation.
pub fn grace_period() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(uint(0))
        .maximum(uint(MAX_GRACE_SECONDS))
        .default(Some(0.into()))
        .description(Some(
            "How long the old key keeps working, in seconds: 0 (revoked at once, the default) to 604800 (7 days)",
        ))
}

/// An RFC 3339 time, or null.
pub fn optional_date_time() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(nullable(Type::String))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
}

/// A UUID in its usual hyphenated form, or null.
pub fn optional_uuid() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(nullable(Type::String))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

/// A workflow definition to store (see [`WORKFLOW_DEFINITION`]).
pub fn workflow_definition() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(WORKFLOW_DEFINITION))
}

/// A workflow definition to store, or null (an empty flow).
pub fn optional_workflow_definition() -> Schema {
    Schema::OneOf(
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .item(Ref::from_schema_name(WORKFLOW_DEFINITION))
            .build(),
    )
}

/// `keys` of a leak report: 1 to [`LEAK_CANDIDATES_MAX`] candidates.
pub fn leak_candidates() -> utoipa::openapi::schema::ArrayBuilder {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(Ref::from_schema_name("LeakCandidate"))
        .min_items(Some(1))
        .max_items(Some(LEAK_CANDIDATES_MAX))
        .description(Some(format!(
            "1 to {LEAK_CANDIDATES_MAX} candidate keys; the body is at most {} bytes",
            limits::LEAK_REPORT_BODY_MAX_BYTES
        )))
}

/// `key` of a leak candidate: any string up to [`LEAK_KEY_MAX_CHARS`].
pub fn leak_key() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(LEAK_KEY_MAX_CHARS))
        .description(Some(format!(
            "The string found, at most {LEAK_KEY_MAX_CHARS} characters; only a well-formed Noxus key (`noxus_` + 38 base62 characters with a valid checksum) is looked up"
        )))
}

/// Free text of a leak report: 1 to `max` characters, no control characters.
fn leak_text(max: usize, what: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(nullable(Type::String))
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some("^[^\\u0000-\\u001f\\u007f-\\u009f]*$"))
        .description(Some(format!(
            "{what}: 1 to {max} characters, without control characters; stored and shown as text, never fetched"
        )))
}

/// `url` of a leak candidate.
pub fn leak_url() -> ObjectBuilder {
    leak_text(LEAK_URL_MAX_CHARS, "Where the key was found")
}

/// `source` of a leak candidate.
pub fn leak_source() -> ObjectBuilder {
    leak_text(LEAK_SOURCE_MAX_CHARS, "What found the key")
}
