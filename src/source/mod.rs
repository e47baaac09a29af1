//! Sources: where raw micro-batches come from. The built-in generator (default), NDJSON files
//! (`files:DIR`, replay), and Kafka (`kafka:HOST:PORT,...`).

pub mod files;
pub mod generator;
pub mod kafka;

use async_trait::async_trait;

use crate::decode::RawBatch;
use crate::error::Result;

/// A producer of raw micro-batches.
#[async_trait]
pub trait Source: Send {
    /// The next round of micro-batches (at most one per stream); `None` when drained.
    async fn next(&mut self) -> Result<Option<Vec<RawBatch>>>;
    /// Everything up to the last round returned has been fully processed and delivered.
    async fn commit(&mut self) -> Result<()> {
        Ok(())
    }
    /// Where the source is, just past the last round returned, for a checkpoint; `None` if
    /// it cannot resume from a position (the generator).
    fn positions(&self) -> Option<crate::checkpoint::Positions> {
        None
    }
    /// Records behind the end of the input, where the source knows (Kafka consumer lag).
    fn lag(&self) -> Option<i64> {
        None
    }
}

/// Parses `--source` values.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Generator,
    Files(std::path::PathBuf),
    /// Bootstrap servers, `host:port[,host:port...]`.
    Kafka(String),
}

impl std::str::FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once(':') {
            None if s == "generator" => Ok(SourceSpec::Generator),
            Some(("files", dir)) if !dir.is_empty() => Ok(SourceSpec::Files(dir.into())),
            Some(("kafka", hosts)) if !hosts.is_empty() => Ok(SourceSpec::Kafka(hosts.to_string())),
            _ => Err(format!(
                "unknown source `{s}`: use generator, files:DIR or kafka:HOST:PORT[,HOST:PORT...]"
            )),
        }
    }
}
