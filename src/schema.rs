//! Stream schemas: one TOML file per stream under `schemas/`.
//!
//! A schema names the table, its Kafka topic, its columns (Arrow types), its event-time column,
//! its watermark delay and its kind: an append-only event `stream`, or a `table` keyed by an id
//! where the latest row per key (by event time) wins. Adding a file adds a stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Whether a stream is a log of events or a changelog of a keyed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamKind {
    /// Append-only events; each row is a new fact.
    Stream,
    /// Latest row per key wins; `key` names the key column.
    Table { key: String },
}

/// One stream, as declared in `schemas/<name>.toml`.
#[derive(Debug, Clone)]
pub struct StreamSchema {
    pub name: String,
    pub topic: String,
    pub kind: StreamKind,
    pub event_time: String,
    /// Index of the event-time column in `arrow`.
    pub event_time_index: usize,
    pub watermark_delay: Duration,
    /// The columns queries see: the payload's, then [`METADATA_COLUMNS`].
    pub arrow: SchemaRef,
    /// The columns of the JSON payload, as declared in the file.
    pub payload: SchemaRef,
    pub path: PathBuf,
}

/// Columns every stream carries after its own: where a Kafka message came from and its
/// timestamp (null for files and the generator).
pub const METADATA_COLUMNS: [&str; 3] = ["_kafka_partition", "_kafka_offset", "_kafka_timestamp"];

fn metadata_fields() -> [Field; 3] {
    [
        Field::new(METADATA_COLUMNS[0], DataType::Int32, true),
        Field::new(METADATA_COLUMNS[1], DataType::Int64, true),
        Field::new(
            METADATA_COLUMNS[2],
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
    ]
}

impl StreamSchema {
    pub fn is_table(&self) -> bool {
        matches!(self.kind, StreamKind::Table { .. })
    }
    pub fn key(&self) -> Option<&str> {
        match &self.kind {
            StreamKind::Table { key } => Some(key),
            StreamKind::Stream => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    name: String,
    topic: String,
    kind: String,
    key: Option<String>,
    event_time: String,
    watermark_delay: Option<String>,
    fields: Vec<FieldFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    nullable: bool,
}

/// Event-time columns are millisecond timestamps, UTC by convention.
pub const TIMESTAMP: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

fn parse_type(ty: &str) -> Option<DataType> {
    Some(match ty.to_ascii_lowercase().as_str() {
        "string" | "utf8" | "text" => DataType::Utf8,
        "int32" | "int" => DataType::Int32,
        "int64" | "bigint" | "long" => DataType::Int64,
        "float32" | "float" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "bool" | "boolean" => DataType::Boolean,
        "timestamp" => TIMESTAMP,
        "date" => DataType::Date32,
        _ => return None,
    })
}

/// Parses `500ms`, `5s`, `2m`, `1h`, `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" | "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

impl StreamSchema {
    /// Parses one schema file's text; errors name the file and the field.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let err = |message: String| Error::Schema {
            path: path.to_path_buf(),
            message,
        };
        let file: SchemaFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if file.fields.is_empty() {
            return Err(err("no fields declared".into()));
        }
        let mut fields = Vec::with_capacity(file.fields.len());
        for f in &file.fields {
            let ty = parse_type(&f.ty).ok_or_else(|| {
                err(format!(
                    "field `{}`: unknown type `{}` (use string, int32, int64, float32, float64, boolean, timestamp, date)",
                    f.name, f.ty
                ))
            })?;
            if fields.iter().any(|x: &Field| x.name() == &f.name) {
                return Err(err(format!("field `{}` is declared twice", f.name)));
            }
            if f.name.starts_with("_kafka_") {
                return Err(err(format!(
                    "field `{}`: names starting with `_kafka_` are reserved for the Kafka metadata columns ({})",
                    f.name,
                    METADATA_COLUMNS.join(", ")
                )));
            }
            fields.push(Field::new(&f.name, ty, f.nullable));
        }
        let find = |name: &str, what: &str| {
            fields
                .iter()
                .position(|f| f.name() == name)
                .ok_or_else(|| err(format!("{what} `{name}` is not one of the fields")))
        };
        let event_time_index = find(&file.event_time, "event_time")?;
        let et = &fields[event_time_index];
        if et.data_type() != &TIMESTAMP || et.is_nullable() {
            return Err(err(format!(
                "field `{}`: the event-time column must be a non-null timestamp",
                file.event_time
            )));
        }
        let kind = match file.kind.as_str() {
            "stream" => {
                if file.key.is_some() {
                    return Err(err("`key` is only for kind = \"table\"".into()));
                }
                StreamKind::Stream
            }
            "table" => {
                let key = file
                    .key
                    .ok_or_else(|| err("kind = \"table\" needs `key = \"<column>\"`".into()))?;
                let i = find(&key, "key")?;
                if fields[i].is_nullable() {
                    return Err(err(format!("field `{key}`: the key column cannot be nullable")));
                }
                StreamKind::Table { key }
            }
            other => {
                return Err(err(format!(
                    "kind `{other}`: use \"stream\" (append-only events) or \"table\" (latest row per key)"
                )))
            }
        };
        let watermark_delay = match &file.watermark_delay {
            None => Duration::from_secs(5),
            Some(s) => parse_duration(s).ok_or_else(|| {
                err(format!(
                    "watermark_delay `{s}`: use e.g. \"500ms\", \"5s\", \"1m\""
                ))
            })?,
        };
        Ok(StreamSchema {
            name: file.name,
            topic: file.topic,
            kind,
            event_time: file.event_time,
            event_time_index,
            watermark_delay,
            arrow: Arc::new(Schema::new(
                fields
                    .iter()
                    .cloned()
                    .chain(metadata_fields())
                    .collect::<Vec<_>>(),
            )),
            payload: Arc::new(Schema::new(fields)),
            path: path.to_path_buf(),
        })
    }
}

/// All streams, in a stable order (by name).
#[derive(Debug, Clone, Default)]
pub struct Streams {
    pub streams: Vec<Arc<StreamSchema>>,
}

impl Streams {
    /// Loads every `*.toml` under `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut streams: Vec<Arc<StreamSchema>> = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let s = StreamSchema::parse(&path, &text)?;
            if let Some(other) = streams
                .iter()
                .find(|o| o.name == s.name || o.topic == s.topic)
            {
                return Err(Error::Schema {
                    path,
                    message: format!(
                        "stream `{}` (topic `{}`) clashes with {}",
                        s.name,
                        s.topic,
                        other.path.display()
                    ),
                });
            }
            streams.push(Arc::new(s));
        }
        if streams.is_empty() {
            return Err(Error::Schema {
                path: dir.to_path_buf(),
                message: "no stream schemas (*.toml) found".into(),
            });
        }
        streams.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Streams { streams })
    }

    /// The schemas shipped with runnel, compiled in, for `runnel run` with no files around.
    pub fn builtin() -> Self {
        let files: [(&str, &str); 6] = [
            ("customers.toml", include_str!("../schemas/customers.toml")),
            ("products.toml", include_str!("../schemas/products.toml")),
            (
                "transactions.toml",
                include_str!("../schemas/transactions.toml"),
            ),
            (
                "product_views.toml",
                include_str!("../schemas/product_views.toml"),
            ),
            (
                "user_interactions.toml",
                include_str!("../schemas/user_interactions.toml"),
            ),
            (
                "system_logs.toml",
                include_str!("../schemas/system_logs.toml"),
            ),
        ];
        let mut streams: Vec<Arc<StreamSchema>> = files
            .iter()
            .map(|(name, text)| {
                // The shipped files are tested in `tests`; a failure here is a build defect.
                Arc::new(
                    StreamSchema::parse(Path::new(&format!("schemas/{name}")), text)
                        .expect("built-in schema is valid"),
                )
            })
            .collect();
        streams.sort_by(|a, b| a.name.cmp(&b.name));
        Streams { streams }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<StreamSchema>> {
        self.streams.iter().find(|s| s.name == name)
    }
    pub fn by_topic(&self, topic: &str) -> Option<&Arc<StreamSchema>> {
        self.streams.iter().find(|s| s.topic == topic)
    }
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemas_parse() {
        let s = Streams::builtin();
        assert_eq!(s.streams.len(), 6);
        assert_eq!(s.get("customers").unwrap().key(), Some("customer_id"));
        assert_eq!(s.by_topic("transaction_data").unwrap().name, "transactions");
    }

    #[test]
    fn errors_name_the_field() {
        let text = r#"name = "x"
topic = "t"
kind = "stream"
event_time = "ts"
fields = [ { name = "ts", type = "timestamp" }, { name = "n", type = "decimal" } ]"#;
        let e = StreamSchema::parse(Path::new("schemas/x.toml"), text).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("schemas/x.toml") && msg.contains("field `n`"),
            "{msg}"
        );
        let text = text
            .replace("decimal", "int64")
            .replace("event_time = \"ts\"", "event_time = \"nope\"");
        let e = StreamSchema::parse(Path::new("x.toml"), &text).unwrap_err();
        assert!(e.to_string().contains("event_time `nope`"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
    }
}
