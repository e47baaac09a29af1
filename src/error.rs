//! The library's typed error. Edges (the CLI) add context with `anyhow`.

use std::path::PathBuf;

/// Everything that can go wrong inside runnel's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stream schema file is invalid.
    #[error("{path}: {message}")]
    Schema { path: PathBuf, message: String },

    /// A view file is invalid or uses something the streaming engine cannot run.
    #[error("{path}:{line}:{column}: {message}")]
    View {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// DataFusion failed while planning or running a view.
    #[error("view {view}: {source}")]
    Query {
        view: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },

    /// Arrow failed (decoding, concatenating, converting).
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// DataFusion failed outside a particular view.
    #[error("{0}")]
    DataFusion(#[from] Box<datafusion::error::DataFusionError>),

    /// A sink could not deliver.
    #[error("sink {sink}: {message}")]
    Sink { sink: String, message: String },

    /// A source could not deliver.
    #[error("source {source_name}: {message}")]
    Source {
        source_name: String,
        message: String,
    },

    /// A checkpoint cannot be written, read or applied.
    #[error("checkpoint: {0}")]
    Checkpoint(String),

    /// Bad command-line or configuration value.
    #[error("{0}")]
    Config(String),
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::DataFusion(Box::new(e))
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
