//! `console`: every view as a small table in the terminal, redrawn in place on each refresh,
//! under a status line (events/s, batches, late and dead-lettered records).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

use super::{Materialized, Sink};
use crate::engine::ViewOutput;
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
            // A ranked view's rows come in its ORDER BY, others by key.
            let rows = self.state.rows(name);
            let info = self.state.views.get(name).map(|(info, _)| info);
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

    /// A ranked view is shown in its ORDER BY (NULLs where it puts them), cut to the rows
    /// shown, not in key order.
    #[test]
    fn ranked_views_are_shown_in_their_order() {
        let mut sink = ConsoleSink::new(ConsoleOptions {
            rows: 4,
            status: Arc::new(Mutex::new(String::new())),
        });
        sink.state
            .apply(&[crate::sink::tests::ranked_output()])
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
