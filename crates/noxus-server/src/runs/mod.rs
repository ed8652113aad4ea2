//! Workflow runs: the executor of the built-in nodes and the model
//! provider that language-model nodes call.

pub mod executor;
pub mod openai;
pub mod service;
