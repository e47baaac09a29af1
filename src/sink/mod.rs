//! Sinks: where view changes go. `console` (a live table in the terminal), `ndjson:DIR` (one
//! file per view holding its final result, one row per key), and `elasticsearch:URL`.

pub mod console;
pub mod elasticsearch;
pub mod ndjson;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::engine::{OrderCol, ViewInfo, ViewOutput};
use crate::error::{Error, Result};

/// A destination for view changes.
#[async_trait]
pub trait Sink: Send {
    fn name(&self) -> &str;
    /// Takes one step's changes. May buffer; nothing is final before `flush` returns.
    async fn write(&mut self, outputs: &[ViewOutput]) -> Result<()>;
    /// Makes everything written so far durable/visible.
    async fn flush(&mut self) -> Result<()>;
    /// A run resumes from a checkpoint: take back what this sink already delivered before,
    /// so that the restored changes apply on top of it (a file sink re-reads its files).
    fn resume(&mut self, _views: &[Arc<ViewInfo>]) -> Result<()> {
        Ok(())
    }
    /// Counters for metrics.
    fn counters(&self) -> SinkCounters {
        SinkCounters::default()
    }
    /// A one-line account of what the sink did, printed when the run ends.
    fn summary(&self) -> Option<String> {
        None
    }
}

/// What a sink counts, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SinkCounters {
    pub retries: u64,
    pub rejected: u64,
}

/// Parses `--sink` values.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    Console,
    Ndjson(std::path::PathBuf),
    /// `elasticsearch:URL` (http or https; `user:password@` in the URL is accepted).
    Elasticsearch(String),
}

impl std::str::FromStr for SinkSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once(':') {
            None if s == "console" => Ok(SinkSpec::Console),
            Some(("ndjson", dir)) if !dir.is_empty() => Ok(SinkSpec::Ndjson(dir.into())),
            Some(("elasticsearch" | "es", url))
                if url.starts_with("http://") || url.starts_with("https://") =>
            {
                Ok(SinkSpec::Elasticsearch(url.to_string()))
            }
            Some(("elasticsearch" | "es", _)) => Err(format!(
                "sink `{}`: give the cluster's URL, e.g. elasticsearch:http://localhost:9200",
                elasticsearch::redact_url(s)
            )),
            _ => Err(format!(
                "unknown sink `{}`: use console, ndjson:DIR or elasticsearch:URL",
                elasticsearch::redact_url(s)
            )),
        }
    }
}

/// Timestamps as ISO 8601 in UTC with milliseconds (`2026-01-01T00:00:00.000Z`).
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// Rows as JSON objects (nulls explicit, timestamps ISO 8601 UTC).
pub fn rows_to_json(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let mut buf = Vec::with_capacity(batch.num_rows() * 128);
    {
        let mut w = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
            .build::<_, arrow_json::writer::LineDelimited>(&mut buf);
        w.write(batch)?;
        w.finish()?;
    }
    buf.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<Map<String, Value>>(l)
                .map_err(|e| Error::Config(format!("internal: row to JSON: {e}")))
        })
        .collect()
}

/// The identity of a row: its key columns' values, as a JSON array string.
pub fn row_key(view: &ViewInfo, row: &Map<String, Value>) -> String {
    let vals: Vec<&Value> = view
        .key_names()
        .iter()
        .map(|k| row.get(*k).unwrap_or(&Value::Null))
        .collect();
    serde_json::to_string(&vals).unwrap_or_default()
}

/// Rows of one view by key.
pub type KeyedRows = BTreeMap<String, Map<String, Value>>;

/// A view's result as the sinks see it: the changelog applied, one row per key.
#[derive(Default)]
pub struct Materialized {
    pub views: BTreeMap<String, (Arc<ViewInfo>, KeyedRows)>,
    /// Rows of append-only views without a key, in arrival order.
    pub appended: BTreeMap<String, Vec<Map<String, Value>>>,
}

impl Materialized {
    pub fn apply(&mut self, outputs: &[ViewOutput]) -> Result<()> {
        for o in outputs {
            let info = &o.view;
            let keyless_append =
                info.key_cols.is_empty() && info.mode == crate::engine::OutputMode::Append;
            if let Some(d) = &o.changes.deletes {
                let entry = &mut self
                    .views
                    .entry(info.name.clone())
                    .or_insert_with(|| (info.clone(), BTreeMap::new()))
                    .1;
                for row in rows_to_json(d)? {
                    entry.remove(&row_key(info, &row));
                }
            }
            if let Some(u) = &o.changes.upserts {
                if keyless_append {
                    self.appended
                        .entry(info.name.clone())
                        .or_default()
                        .extend(rows_to_json(u)?);
                    continue;
                }
                let entry = &mut self
                    .views
                    .entry(info.name.clone())
                    .or_insert_with(|| (info.clone(), BTreeMap::new()))
                    .1;
                for row in rows_to_json(u)? {
                    entry.insert(row_key(info, &row), row);
                }
            }
        }
        Ok(())
    }

    /// Sets a view's rows (as a sink delivered them before), replacing what it held.
    pub fn load(&mut self, info: &Arc<ViewInfo>, rows: Vec<Map<String, Value>>) {
        if info.key_cols.is_empty() && info.mode == crate::engine::OutputMode::Append {
            self.appended.insert(info.name.clone(), rows);
            return;
        }
        let keyed = rows.into_iter().map(|r| (row_key(info, &r), r)).collect();
        self.views.insert(info.name.clone(), (info.clone(), keyed));
    }

    /// Rows of a view: a ranked view's (`ORDER BY … LIMIT n`) in its order, other keyed
    /// views' by key, keyless append-only views' in arrival order.
    pub fn rows(&self, view: &str) -> Vec<&Map<String, Value>> {
        if let Some((info, m)) = self.views.get(view) {
            let mut rows: Vec<_> = m.values().collect();
            if !info.order.is_empty() {
                let order: Vec<(&str, OrderCol)> = info
                    .order
                    .iter()
                    .map(|o| (info.schema.field(o.col).name().as_str(), *o))
                    .collect();
                // Stable: rows the order ties stay in key order.
                rows.sort_by(|a, b| in_order(&order, a, b));
            }
            return rows;
        }
        self.appended
            .get(view)
            .map(|v| v.iter().collect())
            .unwrap_or_default()
    }
}

/// Compares two rows by a view's ORDER BY columns (SQL order: NULLs where the ORDER BY puts
/// them, numbers by value, strings by bytes).
fn in_order(
    order: &[(&str, OrderCol)],
    a: &Map<String, Value>,
    b: &Map<String, Value>,
) -> Ordering {
    for (name, o) in order {
        let (x, y) = (
            a.get(*name).unwrap_or(&Value::Null),
            b.get(*name).unwrap_or(&Value::Null),
        );
        let c = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) if o.nulls_first => Ordering::Less,
            (true, false) => Ordering::Greater,
            (false, true) if o.nulls_first => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let c = compare_values(x, y);
                if o.descending {
                    c.reverse()
                } else {
                    c
                }
            }
        };
        if c != Ordering::Equal {
            return c;
        }
    }
    Ordering::Equal
}

/// Two non-null JSON values of one column.
fn compare_values(x: &Value, y: &Value) -> Ordering {
    match (x, y) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => a
                .as_f64()
                .unwrap_or(f64::NAN)
                .total_cmp(&b.as_f64().unwrap_or(f64::NAN)),
        },
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        _ => x.to_string().cmp(&y.to_string()),
    }
}

/// Builds the sinks named on the command line. `es` carries the Elasticsearch settings
/// (credentials, batching) shared by every `elasticsearch:URL` sink; its URL is replaced.
pub fn build(
    specs: &[SinkSpec],
    console: console::ConsoleOptions,
    es: &elasticsearch::EsOptions,
) -> Result<Vec<Box<dyn Sink>>> {
    let mut out: Vec<Box<dyn Sink>> = Vec::new();
    for s in specs {
        match s {
            SinkSpec::Console => out.push(Box::new(console::ConsoleSink::new(console.clone()))),
            SinkSpec::Ndjson(dir) => out.push(Box::new(ndjson::NdjsonSink::new(dir)?)),
            SinkSpec::Elasticsearch(url) => {
                let mut o = es.clone();
                o.url = url.clone();
                out.push(Box::new(elasticsearch::ElasticsearchSink::new(o)?));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::result::Changes;
    use crate::engine::{OutputMode, ViewInfo};
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    /// A ranked view `top` (ORDER BY units DESC NULLS LAST, product_id) and its five rows:
    /// a 5, b NULL, c 40, d 5, e 300 units.
    pub(crate) fn ranked_output() -> ViewOutput {
        let schema = Arc::new(Schema::new(vec![
            Field::new("product_id", DataType::Utf8, false),
            Field::new("units", DataType::Int64, true),
        ]));
        let info = Arc::new(ViewInfo {
            name: "top".into(),
            hidden: false,
            schema: schema.clone(),
            key_cols: vec![0],
            mode: OutputMode::Update,
            windowed: false,
            index: "top".into(),
            text_fields: Vec::new(),
            description: String::new(),
            path: "queries/top.sql".into(),
            sql: String::new(),
            reads_streams: false,
            // ORDER BY units DESC NULLS LAST, product_id
            order: vec![
                OrderCol {
                    col: 1,
                    descending: true,
                    nulls_first: false,
                },
                OrderCol {
                    col: 0,
                    descending: false,
                    nulls_first: false,
                },
            ],
        });
        let ids = ["a", "b", "c", "d", "e"];
        let units = [Some(5), None, Some(40), Some(5), Some(300)];
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(ids.to_vec())),
                Arc::new(Int64Array::from(units.to_vec())),
            ],
        )
        .unwrap();
        ViewOutput {
            view: info,
            changes: Changes {
                upserts: Some(batch),
                deletes: None,
            },
        }
    }

    /// The file sink writes a ranked view's rows in its order, as the console shows them.
    #[tokio::test]
    async fn ndjson_writes_ranked_views_in_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = ndjson::NdjsonSink::new(dir.path()).unwrap();
        sink.write(&[ranked_output()]).await.unwrap();
        sink.flush().await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("top.ndjson")).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                let row: Value = serde_json::from_str(l).unwrap();
                row["product_id"].as_str().unwrap_or("").to_string()
            })
            .collect();
        assert_eq!(ids, ["e", "c", "a", "d", "b"], "{text}");
    }
}
