//! `console`: every view as a small table in the terminal, redrawn in place on each refresh,
//! under a status line (events/s, batches, late and dead-lettered records).

use std::cmp::Ordering;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{Materialized, Sink};
use crate::engine::{OrderCol, ViewOutput};
use crate::error::Result;

#[derive(Clone)]
pub struct ConsoleOptions {
    /// Rows shown per view.
    pub rows: usize,
    /// The status line, kept current by the pipeline.
    pub status: Arc<Mutex<String>>,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            rows: 8,
            status: Arc::new(Mutex::new(String::new())),
        }
    }
}

pub struct ConsoleSink {
    opts: ConsoleOptions,
    state: Materialized,
    tty: bool,
}

impl ConsoleSink {
    pub fn new(opts: ConsoleOptions) -> Self {
        ConsoleSink {
            opts,
            state: Materialized::default(),
            tty: std::io::stdout().is_terminal(),
        }
    }

    fn render(&self) -> String {
        let mut s = String::new();
        if let Ok(st) = self.opts.status.lock() {
            s.push_str(&st);
            s.push('\n');
        }
        let names: Vec<&String> = self
            .state
            .views
            .keys()
            .chain(self.state.appended.keys())
            .collect();
        for name in names {
            let mut rows = self.state.rows(name);
            let info = self.state.views.get(name).map(|(info, _)| info);
            // A ranked view's rows in its ORDER BY, not by key.
            if let Some(info) = info.filter(|i| !i.order.is_empty()) {
                let order: Vec<(&str, OrderCol)> = info
                    .order
                    .iter()
                    .map(|o| (info.schema.field(o.col).name().as_str(), *o))
                    .collect();
                rows.sort_by(|a, b| in_order(&order, a, b));
            }
            let cols: Vec<String> = match info {
                Some(info) => info
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
                None => rows
                    .first()
                    .map(|r| r.keys().cloned().collect())
                    .unwrap_or_default(),
            };
            // Keyed views from the top; keyless append-only views, their latest rows.
            let shown: Vec<_> = if info.is_some() {
                rows.iter().take(self.opts.rows).collect()
            } else {
                rows.iter().rev().take(self.opts.rows).collect()
            };
            s.push_str(&format!("\n{name} ({} rows)\n", rows.len()));
            s.push_str(&table(
                &cols,
                shown.iter().map(|r| {
                    cols.iter()
                        .map(|c| cell(r.get(c).unwrap_or(&Value::Null)))
                        .collect()
                }),
            ));
        }
        s
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

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A plain aligned table.
pub fn table(cols: &[String], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut width: Vec<usize> = cols.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count().min(40));
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            let c: String = c.chars().take(40).collect();
            s.push_str(&format!(" {c:<w$} |"));
        }
        s.push('\n');
        s
    };
    let sep = {
        let mut s = String::from("+");
        for w in &width {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let mut out = sep.clone();
    out.push_str(&line(cols));
    out.push_str(&sep);
    for r in &rows {
        out.push_str(&line(r));
    }
    out.push_str(&sep);
    out
}

#[async_trait]
impl Sink for ConsoleSink {
    fn name(&self) -> &str {
        "console"
    }
    async fn write(&mut self, outputs: &[ViewOutput]) -> Result<()> {
        self.state.apply(outputs)
    }
    async fn flush(&mut self) -> Result<()> {
        let text = self.render();
        let mut out = std::io::stdout().lock();
        if self.tty {
            // Clear and redraw in place.
            let _ = write!(out, "\x1b[H\x1b[2J{text}");
        } else {
            let _ = writeln!(out, "{text}");
        }
        let _ = out.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::result::Changes;
    use crate::engine::{OutputMode, ViewInfo};
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    /// A ranked view is shown in its ORDER BY (NULLs where it puts them), cut to the rows
    /// shown, not in key order.
    #[test]
    fn ranked_views_are_shown_in_their_order() {
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
        let mut sink = ConsoleSink::new(ConsoleOptions {
            rows: 4,
            status: Arc::new(Mutex::new(String::new())),
        });
        sink.state
            .apply(&[ViewOutput {
                view: info,
                changes: Changes {
                    upserts: Some(batch),
                    deletes: None,
                },
            }])
            .unwrap();
        let text = sink.render();
        let shown: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("| "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        // The header, then e (300), c (40), a and d (5, by id); b (NULL) is last and cut.
        assert_eq!(shown, ["product_id", "e", "c", "a", "d"], "{text}");
        assert!(text.contains("top (5 rows)"), "{text}");
    }
}
