//! runnel: SQL-first streaming analytics.
//!
//! The data path, top to bottom: [`source`] (generator, files, Kafka) yields raw micro-batches;
//! [`decode`] turns them into Arrow record batches against [`schema`]; [`engine`] runs every
//! view incrementally; [`sink`] ships the changes (console, NDJSON files, Elasticsearch).
//! [`pipeline`] wires them together; [`repl`] runs ad-hoc SQL over it; the CLI lives in
//! `main.rs`.

pub mod checkpoint;
pub mod config;
pub mod deadletter;
pub mod decode;
pub mod engine;
pub mod error;
pub mod generate;
pub mod kafka;
pub mod metrics;
pub mod oracle;
pub mod pipeline;
pub mod reload;
pub mod repl;
pub mod schema;
pub mod sink;
pub mod source;

pub use error::{Error, Result};
