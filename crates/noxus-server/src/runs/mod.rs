//! Workflow runs: the executor of the built-in nodes, the model provider
//! that language-model nodes call, the workers, the callbacks sent when
//! runs end, and what wakes the open event streams.

pub mod callbacks;
pub mod executor;
pub mod openai;
pub mod service;
pub mod streams;
