//! The REPL: ad-hoc SQL over the live pipeline.
//!
//! The pipeline runs as usual and answers [`Request`]s between micro-batches. A query asks it
//! for every table as it is at that moment (views' current rows, keyed tables' current rows,
//! each event stream's most recent events), registers them in a fresh DataFusion session and
//! runs the SQL there: the query never touches the pipeline's state, so nothing typed here can
//! break or stall it. Statements end with `;`. See [`HELP`] for the meta commands.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{session, NamedTable, TableKind, ViewDef, ViewInfo};
use crate::error::{Error, Result};
use crate::pipeline::{Request, Status};

pub const HELP: &str = "\
Statements end with `;` and may span lines. Any DataFusion SELECT, EXPLAIN or SHOW works over:
  every stream (its most recent events), customers/products (current rows), every view (current rows).

  SELECT ... ;                      pull query: runs once over the data as of now
  SELECT ... EMIT CHANGES;          push query: re-runs every second until Ctrl-C
  \\watch [SECS] [SELECT ...]        push query; without a query, follows the last one
  CREATE VIEW name AS SELECT ...;   a temporary continuous view (over a stream: sees events from now on)
  \\save NAME                        write temporary view NAME to the queries directory
  \\d                                list streams, tables and views
  \\d NAME                           describe a table or view (columns, key, mode, file)
  \\sql VIEW                         a view's SQL
  \\plan VIEW                        how a view runs (its kind and DataFusion plans)
  \\status                           events, rates, watermarks, dead letters, view state
  \\format table|csv|json            output format
  \\timing on|off                    show elapsed time
  \\? or \\help                       this help
  \\q or quit                        leave (the pipeline stops with the REPL)";

/// Output formats for query results.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// How the REPL talks to its user and to the pipeline.
pub struct Repl {
    requests: mpsc::Sender<Request>,
    rt: Handle,
    format: Format,
    timing: bool,
    queries_dir: PathBuf,
    /// Views created at the prompt: name -> SQL.
    temporary: Vec<(String, String)>,
    last_query: Option<String>,
    /// Scripts keep stdout for results only (no acknowledgements of settings).
    quiet: bool,
    /// Set by Ctrl-C while a push query runs.
    interrupted: Arc<AtomicBool>,
    names: Arc<std::sync::Mutex<Names>>,
}

/// What tab completion offers.
#[derive(Default)]
struct Names {
    tables: BTreeSet<String>,
    columns: BTreeSet<String>,
    functions: BTreeSet<String>,
}

impl Repl {
    pub fn new(
        requests: mpsc::Sender<Request>,
        rt: Handle,
        queries_dir: PathBuf,
        interrupted: Arc<AtomicBool>,
    ) -> Self {
        Repl {
            requests,
            rt,
            format: Format::Table,
            timing: true,
            queries_dir,
            temporary: Vec::new(),
            last_query: None,
            quiet: false,
            interrupted,
            names: Default::default(),
        }
    }

    fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let stopped = || Error::Config("the pipeline has stopped".into());
        self.rt.block_on(async {
            self.requests.send(make(tx)).await.map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())
        })
    }

    pub fn status(&self) -> Result<Status> {
        self.ask(Request::Status)
    }

    fn tables(&self) -> Result<Vec<NamedTable>> {
        self.ask(Request::Tables)?
    }

    /// Refreshes the names tab completion offers.
    fn refresh_names(&self) {
        let Ok(tables) = self.tables() else { return };
        let ctx = session();
        let state = ctx.state();
        let mut n = Names::default();
        for t in &tables {
            n.tables.insert(t.name.clone());
            n.columns
                .extend(t.schema.fields().iter().map(|f| f.name().clone()));
        }
        n.functions.extend(state.scalar_functions().keys().cloned());
        n.functions
            .extend(state.aggregate_functions().keys().cloned());
        n.functions.extend(state.window_functions().keys().cloned());
        if let Ok(mut g) = self.names.lock() {
            *g = n;
        }
    }

    /// Runs one statement (SQL or meta command); the text of a result or an error message.
    pub fn execute(&mut self, stmt: &str) -> std::result::Result<String, String> {
        let stmt = stmt.trim().trim_end_matches(';').trim();
        if stmt.is_empty() {
            return Ok(String::new());
        }
        if let Some(meta) = stmt.strip_prefix('\\') {
            return self.meta(meta);
        }
        let lower = stmt.to_ascii_lowercase();
        if lower == "quit" || lower == "exit" {
            return Err("quit".into());
        }
        if let Some(rest) = strip_keywords(stmt, &["create", "view"])
            .or_else(|| strip_keywords(stmt, &["create", "temporary", "view"]))
        {
            return self.create_view(rest);
        }
        if let Some(q) = strip_suffix_keywords(stmt, &["emit", "changes"]) {
            return self.watch(1.0, q.to_string());
        }
        self.last_query = Some(stmt.to_string());
        self.query(stmt)
    }

    fn query(&self, sql: &str) -> std::result::Result<String, String> {
        let started = Instant::now();
        let tables = self.tables().map_err(|e| e.to_string())?;
        let ctx = session();
        for t in tables {
            let mem = MemTable::try_new(t.schema, vec![t.batches]).map_err(|e| e.to_string())?;
            ctx.register_table(t.name.as_str(), Arc::new(mem))
                .map_err(|e| e.to_string())?;
        }
        let batches = self
            .rt
            .block_on(async {
                let df = ctx.sql(sql).await?;
                df.collect().await
            })
            .map_err(|e| error_at(sql, &e))?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut out = render(&batches, self.format).map_err(|e| e.to_string())?;
        if self.format == Format::Table {
            out.push_str(&format!("\n{rows} row{}", if rows == 1 { "" } else { "s" }));
            if self.timing {
                out.push_str(&format!(" ({:.3} s)", started.elapsed().as_secs_f64()));
            }
        }
        Ok(out)
    }

    /// Re-runs `sql` every `secs` seconds, redrawing in place, until Ctrl-C.
    fn watch(&mut self, secs: f64, sql: String) -> std::result::Result<String, String> {
        self.last_query = Some(sql.clone());
        self.interrupted.store(false, Ordering::SeqCst);
        let every = Duration::from_secs_f64(secs.max(0.1));
        let mut out = std::io::stdout();
        loop {
            let body = self.query(&sql)?;
            let _ = write!(
                out,
                "\x1b[2J\x1b[H{body}\n\nevery {:.1}s: {sql}  (Ctrl-C to stop)\n",
                every.as_secs_f64()
            );
            let _ = out.flush();
            let until = Instant::now() + every;
            while Instant::now() < until {
                if self.interrupted.swap(false, Ordering::SeqCst) {
                    return Ok("stopped watching".into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn create_view(&mut self, rest: &str) -> std::result::Result<String, String> {
        let (name, body) = rest
            .split_once(char::is_whitespace)
            .ok_or("usage: CREATE VIEW name AS SELECT ...")?;
        let body = strip_keywords(body.trim_start(), &["as"])
            .ok_or("usage: CREATE VIEW name AS SELECT ...")?;
        let path = self.queries_dir.join(format!("{name}.sql"));
        let def = ViewDef::parse(&path, body).map_err(|e| e.to_string())?;
        let info: Arc<ViewInfo> = self
            .ask(|tx| Request::AddView(Box::new(def), tx))
            .and_then(|r| r)
            .map_err(|e| e.to_string())?;
        self.temporary.push((info.name.clone(), body.to_string()));
        self.refresh_names();
        let seen = if info.reads_streams {
            "it sees events from now on"
        } else {
            "computed from the current rows of what it reads, then kept current"
        };
        Ok(format!(
            "temporary view {} created (key: {}); {seen}. \\save {} writes it to {}",
            info.name,
            if info.key_cols.is_empty() {
                "none".to_string()
            } else {
                info.key_names().join(", ")
            },
            info.name,
            path.display()
        ))
    }

    fn meta(&mut self, cmd: &str) -> std::result::Result<String, String> {
        let mut parts = cmd.splitn(2, char::is_whitespace);
        let name = parts.next().unwrap_or_default();
        let arg = parts.next().unwrap_or_default().trim();
        match name {
            "q" | "quit" => Err("quit".into()),
            "?" | "help" | "h" => Ok(HELP.into()),
            "d" if arg.is_empty() => self.list(),
            "d" => self.describe(arg),
            "sql" => self.sql_of(arg),
            "plan" => self
                .ask(|tx| Request::Plan(arg.to_string(), tx))
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no view named `{arg}`")),
            "status" => self
                .status()
                .map(|s| status_text(&s))
                .map_err(|e| e.to_string()),
            "format" => {
                self.format = match arg {
                    "table" => Format::Table,
                    "csv" => Format::Csv,
                    "json" => Format::Json,
                    _ => return Err("usage: \\format table|csv|json".into()),
                };
                Ok(if self.quiet {
                    String::new()
                } else {
                    format!("format: {arg}")
                })
            }
            "timing" => {
                self.timing = match arg {
                    "on" => true,
                    "off" => false,
                    _ => return Err("usage: \\timing on|off".into()),
                };
                Ok(if self.quiet {
                    String::new()
                } else {
                    format!("timing: {arg}")
                })
            }
            "watch" => {
                let (secs, rest) = match arg.split_once(char::is_whitespace) {
                    Some((n, rest)) if n.parse::<f64>().is_ok() => {
                        (n.parse().unwrap_or(1.0), rest.trim())
                    }
                    _ => match arg.parse::<f64>() {
                        Ok(n) => (n, ""),
                        Err(_) => (1.0, arg),
                    },
                };
                let sql = if rest.is_empty() {
                    self.last_query
                        .clone()
                        .ok_or("usage: \\watch [SECS] SELECT ... (or run a query first)")?
                } else {
                    rest.trim_end_matches(';').to_string()
                };
                self.watch(secs, sql)
            }
            "save" => self.save(arg),
            _ => Err(format!("unknown command \\{name}; \\? lists them")),
        }
    }

    fn list(&self) -> std::result::Result<String, String> {
        let tables = self.tables().map_err(|e| e.to_string())?;
        let mut rows = vec![vec!["name".to_string(), "kind".into(), "rows now".into()]];
        for t in &tables {
            let kind = match t.kind {
                TableKind::View if self.temporary.iter().any(|(n, _)| *n == t.name) => {
                    "temporary view"
                }
                TableKind::View => "view",
                TableKind::Table => "table (current row per key)",
                TableKind::Stream => "stream (recent events)",
            };
            let n: usize = t.batches.iter().map(|b| b.num_rows()).sum();
            rows.push(vec![t.name.clone(), kind.into(), n.to_string()]);
        }
        Ok(text_table(&rows))
    }

    fn describe(&self, name: &str) -> std::result::Result<String, String> {
        let tables = self.tables().map_err(|e| e.to_string())?;
        let table = tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("no table or view named `{name}` (\\d lists them)"))?;
        let mut rows = vec![vec!["column".to_string(), "type".into(), "null".into()]];
        for f in table.schema.fields() {
            rows.push(vec![
                f.name().clone(),
                f.data_type().to_string(),
                if f.is_nullable() { "yes" } else { "no" }.into(),
            ]);
        }
        Ok(text_table(&rows))
    }

    fn sql_of(&self, name: &str) -> std::result::Result<String, String> {
        if let Some((_, sql)) = self.temporary.iter().find(|(n, _)| n == name) {
            return Ok(sql.clone());
        }
        let path = self.queries_dir.join(format!("{name}.sql"));
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn save(&self, name: &str) -> std::result::Result<String, String> {
        let (_, sql) = self
            .temporary
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("no temporary view `{name}` (create one with CREATE VIEW)"))?;
        let path = self.queries_dir.join(format!("{name}.sql"));
        if path.exists() {
            return Err(format!("{} exists; not overwritten", path.display()));
        }
        let text = format!(
            "-- {name}: created in the runnel REPL.\n{}\n",
            sql.trim_end()
        );
        std::fs::create_dir_all(&self.queries_dir).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(format!("saved {}", path.display()))
    }

    /// The interactive prompt: line editing, history, tab completion; `;` ends a statement.
    pub fn interactive(&mut self, history: Option<PathBuf>) -> Result<()> {
        self.refresh_names();
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut ed: Editor<ReplHelper, DefaultHistory> = Editor::with_config(config)
            .map_err(|e| Error::Config(format!("cannot open the terminal: {e}")))?;
        ed.set_helper(Some(ReplHelper {
            names: self.names.clone(),
        }));
        if let Some(h) = &history {
            let _ = ed.load_history(h);
        }
        println!("runnel repl: SQL over the live streams and views. \\? for help, \\q to quit.");
        let mut buf = String::new();
        loop {
            let prompt = if buf.is_empty() {
                "runnel> "
            } else {
                "   ...> "
            };
            match ed.readline(prompt) {
                Ok(line) => {
                    let trimmed = line.trim();
                    let is_meta = buf.is_empty() && trimmed.starts_with('\\');
                    let is_quit =
                        buf.is_empty() && matches!(trimmed, "quit" | "exit" | "quit;" | "exit;");
                    buf.push_str(&line);
                    buf.push('\n');
                    if !(is_meta || is_quit || trimmed.ends_with(';')) {
                        continue;
                    }
                    let stmt = std::mem::take(&mut buf);
                    let _ = ed.add_history_entry(stmt.trim());
                    match self.execute(&stmt) {
                        Ok(out) if out.is_empty() => {}
                        Ok(out) => println!("{out}"),
                        Err(e) if e == "quit" => break,
                        Err(e) => println!("{e}"),
                    }
                }
                Err(ReadlineError::Interrupted) => {
                    // Ctrl-C at the prompt clears the statement being typed.
                    buf.clear();
                    self.interrupted.store(false, Ordering::SeqCst);
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(Error::Config(format!("terminal: {e}"))),
            }
        }
        if let Some(h) = &history {
            if let Some(dir) = h.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = ed.save_history(h);
        }
        Ok(())
    }

    /// Runs a script of `;`-separated statements; returns whether all succeeded.
    pub fn script(&mut self, text: &str) -> bool {
        self.quiet = true;
        let mut ok = true;
        for stmt in split_statements(text) {
            match self.execute(&stmt) {
                Ok(out) if out.is_empty() => {}
                Ok(out) => println!("{out}"),
                Err(e) if e == "quit" => break,
                Err(e) => {
                    eprintln!("{e}");
                    ok = false;
                }
            }
        }
        ok
    }
}

/// An error message with the statement's line, a caret under the column DataFusion points
/// at (its diagnostic span, or the parser's `Line: L, Column: C`).
fn error_at(sql: &str, e: &datafusion::error::DataFusionError) -> String {
    let msg = e.strip_backtrace();
    let mut pos = e
        .diagnostic()
        .and_then(|d| d.span)
        .map(|s| (s.start.line as usize, s.start.column as usize));
    if pos.is_none() {
        if let Some(i) = msg.find("Line: ") {
            let rest = &msg[i + 6..];
            let line = rest.split(',').next().and_then(|l| l.trim().parse().ok());
            let col = rest
                .split("Column: ")
                .nth(1)
                .and_then(|c| c.split(|ch: char| !ch.is_ascii_digit()).next())
                .and_then(|c| c.parse().ok());
            pos = line.zip(col);
        }
    }
    let Some((line, col)) = pos.filter(|(l, c)| *l > 0 && *c > 0) else {
        return format!("error: {msg}");
    };
    let text = sql.lines().nth(line - 1).unwrap_or_default();
    format!(
        "error at line {line}, column {col}: {msg}\n  {text}\n  {}^",
        " ".repeat(col - 1)
    )
}

/// `stmt` without the leading keywords (case-insensitive, whitespace-separated), if it starts
/// with them.
fn strip_keywords<'a>(stmt: &'a str, words: &[&str]) -> Option<&'a str> {
    let mut rest = stmt;
    for w in words {
        rest = rest.trim_start();
        if rest.len() < w.len() || !rest[..w.len()].eq_ignore_ascii_case(w) {
            return None;
        }
        let after = &rest[w.len()..];
        if !after.starts_with(char::is_whitespace) {
            return None;
        }
        rest = after;
    }
    Some(rest.trim_start())
}

/// `stmt` without trailing keywords (case-insensitive), if it ends with them.
fn strip_suffix_keywords<'a>(stmt: &'a str, words: &[&str]) -> Option<&'a str> {
    let mut rest = stmt.trim_end();
    for w in words.iter().rev() {
        if rest.len() < w.len() || !rest[rest.len() - w.len()..].eq_ignore_ascii_case(w) {
            return None;
        }
        let before = &rest[..rest.len() - w.len()];
        if !before.ends_with(char::is_whitespace) {
            return None;
        }
        rest = before.trim_end();
    }
    Some(rest)
}

/// Splits a script on `;` outside quotes and comments; meta commands end at the line's end.
pub fn split_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if cur.trim().is_empty() && line.trim_start().starts_with('\\') {
            out.push(line.trim().to_string());
            cur.clear();
            continue;
        }
        let mut quote: Option<char> = None;
        let mut chars = line.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match (quote, c) {
                (None, '-') if chars.peek().map(|p| p.1) == Some('-') => break,
                (None, '\'' | '"') => {
                    quote = Some(c);
                    cur.push(c);
                }
                (Some(q), c) if c == q => {
                    quote = None;
                    cur.push(c);
                }
                (None, ';') => {
                    if !cur.trim().is_empty() {
                        out.push(cur.trim().to_string());
                    }
                    cur.clear();
                    // A meta command may follow on the same line.
                    let rest = line[i + 1..].trim();
                    if rest.starts_with('\\') {
                        out.push(rest.to_string());
                        break;
                    }
                }
                _ => cur.push(c),
            }
        }
        cur.push('\n');
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string()),
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
        }
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
        }
    }
}

fn text_table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out.trim_end().to_string()
}

fn fmt_ts(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The `\status` report.
pub fn status_text(s: &Status) -> String {
    let now = chrono::Utc::now().timestamp_millis();
    let mut out = format!(
        "{}{}\ndead letters: {}\n\n",
        s.summary.line(),
        if s.drained { " (input drained)" } else { "" },
        s.dead_letters.display()
    );
    out.push_str(&format!("events/s now: {:.0}\n\n", s.rate));
    let mut rows = vec![vec![
        "stream".to_string(),
        "events".into(),
        "late".into(),
        "watermark".into(),
        "behind wall clock".into(),
    ]];
    for (name, st, wm) in &s.streams {
        rows.push(vec![
            name.clone(),
            st.events.to_string(),
            st.late.to_string(),
            fmt_ts(*wm),
            wm.map(|w| format!("{:.1} s", (now - w) as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&text_table(&rows));
    out.push_str("\n\n");
    let mut rows = vec![vec![
        "view".to_string(),
        "rows".into(),
        "groups".into(),
        "state KiB".into(),
        "busy ms".into(),
    ]];
    for v in &s.views {
        rows.push(vec![
            v.name.clone(),
            v.rows.to_string(),
            v.groups.to_string(),
            format!("{:.0}", v.state_bytes as f64 / 1024.0),
            format!("{:.0}", v.busy.as_secs_f64() * 1e3),
        ]);
    }
    out.push_str(&text_table(&rows));
    out
}

/// Tab completion of table, column and function names and meta commands.
struct ReplHelper {
    names: Arc<std::sync::Mutex<Names>>,
}

impl Completer for ReplHelper {
    type Candidate = Pair;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\\'))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((start, Vec::new()));
        }
        let mut found: Vec<Pair> = Vec::new();
        if word.starts_with('\\') {
            for m in [
                "\\d", "\\sql", "\\plan", "\\status", "\\format", "\\timing", "\\watch", "\\save",
                "\\help", "\\q",
            ] {
                if m.starts_with(word) {
                    found.push(Pair {
                        display: m.into(),
                        replacement: m.into(),
                    });
                }
            }
            return Ok((start, found));
        }
        let lower = word.to_ascii_lowercase();
        // After FROM or JOIN only tables make sense.
        let previous = line[..start]
            .split_whitespace()
            .next_back()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let tables_only = matches!(
            previous.as_str(),
            "from" | "join" | "\\d" | "\\plan" | "\\sql"
        );
        if let Ok(n) = self.names.lock() {
            let mut seen = BTreeSet::new();
            let others: Box<dyn Iterator<Item = &String>> = if tables_only {
                Box::new(std::iter::empty())
            } else {
                Box::new(n.columns.iter().chain(&n.functions))
            };
            for name in n.tables.iter().chain(others) {
                if name.to_ascii_lowercase().starts_with(&lower) && seen.insert(name.clone()) {
                    found.push(Pair {
                        display: name.clone(),
                        replacement: name.clone(),
                    });
                }
            }
        }
        Ok((start, found))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {}
impl Validator for ReplHelper {}
impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_on_semicolons_outside_quotes_and_comments() {
        let s = split_statements(
            "SELECT 'a;b' FROM t; -- a comment; with a semicolon\n\\d\nSELECT\n  2; \\format csv\nSELECT 3",
        );
        assert_eq!(
            s,
            vec![
                "SELECT 'a;b' FROM t",
                "\\d",
                "SELECT\n  2",
                "\\format csv",
                "SELECT 3"
            ]
        );
    }

    #[test]
    fn errors_point_at_the_position() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ctx = session();
        let sql = "SELECT 1,\n  nope + 1";
        let e = rt.block_on(ctx.sql(sql)).unwrap_err();
        let m = error_at(sql, &e);
        assert!(m.starts_with("error at line 2, column 3"), "{m}");
        assert!(m.ends_with("  nope + 1\n    ^"), "{m}");
    }

    #[test]
    fn keywords_are_matched_whole_and_case_insensitively() {
        assert_eq!(
            strip_keywords("create VIEW v AS SELECT 1", &["create", "view"]),
            Some("v AS SELECT 1")
        );
        assert_eq!(strip_keywords("createview v", &["create", "view"]), None);
        assert_eq!(
            strip_suffix_keywords("SELECT 1 emit CHANGES", &["emit", "changes"]),
            Some("SELECT 1")
        );
        assert_eq!(
            strip_suffix_keywords("SELECT remit changes", &["emit", "changes"]),
            None
        );
    }
}
