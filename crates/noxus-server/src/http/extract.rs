//! Extractors that turn bad input into our 422/413 errors (naming the
//! field) instead of the framework's plain-text rejections.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::Number;

use crate::domain::validation::clip;
use crate::http::error::ApiError;
use crate::state::AppState;

/// Highest page number of every paged list: pages hold at most
/// [`MAX_PAGE_SIZE`] items, so offsets stay far below what the database
/// takes.
pub const MAX_PAGE: u64 = 1_000_000;
/// Largest page size of every paged list.
pub const MAX_PAGE_SIZE: u64 = 100;

/// `page`, as every paged list reads it.
pub const PAGE: IntParam = IntParam {
    name: "page",
    min: 1,
    max: MAX_PAGE,
    description: "Page number, from 1",
};

/// An integer query parameter and its bounds. The handler parses the query
/// with it and the OpenAPI document describes the parameter from it, so the
/// two cannot disagree.
#[derive(Debug, Clone, Copy)]
pub struct IntParam {
    /// The parameter's name.
    pub name: &'static str,
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
    /// What it means (the document adds the bounds).
    pub description: &'static str,
}

impl IntParam {
    /// The value, if it is a plain decimal integer (digits only: no sign,
    /// no spaces) within the bounds.
    pub fn parse(&self, raw: &str) -> Result<u64, ApiError> {
        let value = if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
            raw.parse::<u64>().ok()
        } else {
            None
        };
        match value {
            Some(n) if (self.min..=self.max).contains(&n) => Ok(n),
            _ => Err(ApiError::validation(
                self.name,
                format!(
                    "{} must be an integer from {} to {}",
                    self.name, self.min, self.max
                ),
            )),
        }
    }

    /// The same parameter with another description (e.g. another default).
    pub const fn described(self, description: &'static str) -> Self {
        Self {
            description,
            ..self
        }
    }

    /// The optional query parameter, as the OpenAPI document describes it.
    pub fn parameter(&self) -> Parameter {
        ParameterBuilder::new()
            .name(self.name)
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(format!(
                "{} ({} to {})",
                self.description, self.min, self.max
            )))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(uint(self.min)))
                    .maximum(Some(uint(self.max))),
            ))
            .build()
    }
}

fn uint(n: u64) -> Number {
    Number::UInt(usize::try_from(n).unwrap_or(usize::MAX))
}

/// A path parameter that is not valid UTF-8 names nothing: 404, with a
/// sentence, instead of the framework's plain 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let err = match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => return Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(err)) => err,
            Err(other) => {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "path parameters: {}",
                    other.body_text()
                )))
            }
        };
        match err.into_kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => Err(ApiError::NotFound(format!(
                "The path parameter `{key}` is not valid UTF-8, so nothing has this id"
            ))),
            kind @ (ErrorKind::WrongNumberOfParameters { .. }
            | ErrorKind::UnsupportedType { .. }) => Err(ApiError::Internal(anyhow::anyhow!(
                "path parameters: {kind}"
            ))),
            kind => Err(ApiError::NotFound(format!(
                "Nothing has this id: {}",
                crate::domain::validation::truncate(&kind.to_string())
            ))),
        }
    }
}

/// A JSON body, parsed whatever the `Content-Type` (curl users forget it),
/// limited to the configured size.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Longest field path quoted in a 422 (they name the client's own keys).
const MAX_QUOTED_FIELD: usize = 200;
/// Longest parser message quoted in a 422.
const MAX_QUOTED_MESSAGE: usize = 300;

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config().max_body_bytes;
        let bytes = crate::body::read_limited(request.into_body(), limit).await?;
        parse_json_object(&bytes).map(Self)
    }
}

/// A JSON object body as `T`, with our 422s: empty, not an object, not
/// JSON, or a field of the wrong shape (named, with the client's text
/// clipped and any key in it cut to its first characters).
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Validation {
            field: None,
            detail: "The request body is empty; send a JSON object".to_owned(),
        });
    }
    // Every body of this API is an object; serde would also accept a
    // struct written as an array, which only confuses.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::Validation {
            field: None,
            detail: "Invalid request body: it must be a JSON object".to_owned(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        // serde quotes the client's text (an unknown field's name, a
        // string of the wrong type), of any length, perhaps a key.
        let path = clip(&err.path().to_string(), MAX_QUOTED_FIELD);
        let inner = err.into_inner();
        let message = clip(&inner.to_string(), MAX_QUOTED_MESSAGE);
        let field = (path != ".").then_some(path);
        let detail = match (&field, inner.classify()) {
            (_, serde_json::error::Category::Syntax | serde_json::error::Category::Eof) => {
                format!("The request body is not valid JSON: {message}")
            }
            (Some(field), _) => format!("Invalid value for `{field}`: {message}"),
            (None, _) => format!("Invalid request body: {message}"),
        };
        ApiError::Validation { field, detail }
    })?;
    deserializer.end().map_err(|e| ApiError::Validation {
        field: None,
        detail: format!("The request body is not valid JSON: {e}"),
    })?;
    Ok(value)
}

/// The query string as ordered pairs, for routes that parse it by hand.
#[derive(Debug, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of an integer parameter, within its bounds.
    pub fn int(&self, param: &IntParam) -> Result<Option<u64>, ApiError> {
        self.get(param.name).map(|raw| param.parse(raw)).transpose()
    }

    /// A boolean parameter, accepting `true`/`false` in any case (the
    /// official client sends Python's `True`/`False`) and `1`/`0`.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|raw| match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::validation(
                    name,
                    format!("{name} must be true or false"),
                )),
            })
            .transpose()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map(QueryPairs)
            .map_err(|e| ApiError::Validation {
                field: None,
                detail: format!("The query string could not be parsed: {e}"),
            })
    }
}

/// Declares a unit type whose [`utoipa::IntoParams`] lists integer query
/// parameters ([`IntParam`]s), for the `params(...)` of `#[utoipa::path]`.
macro_rules! int_query_params {
    ($(#[$meta:meta])* $name:ident = [$($param:expr),+ $(,)?]) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub(crate) struct $name;

        impl utoipa::IntoParams for $name {
            fn into_params(
                _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
            ) -> Vec<utoipa::openapi::path::Parameter> {
                vec![$($param.parameter()),+]
            }
        }
    };
}
pub(crate) use int_query_params;
