//! Schemas of fields whose bounds come from [`crate::limits`], for the
//! OpenAPI document (`schema_with` in the wire types).

use utoipa::openapi::schema::{ObjectBuilder, Ref, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{KnownFormat, RefOr, Schema};
use utoipa::Number;

use crate::limits::{
    self, MAX_GRACE_SECONDS, NAME_MAX_CHARS, RATE_BURST_MAX, RATE_PER_SECOND_MAX,
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
