//! Workflow runs: the executor of the built-in nodes, the model provider
//! that language-model nodes call, the workers, and the callbacks sent
//! when runs end.

pub mod callbacks;
pub mod executor;
pub mod openai;
pub mod service;
