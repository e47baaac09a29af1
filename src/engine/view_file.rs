//! View files: `queries/<view>.sql` holds one SELECT plus options in `-- @name: value` comments.
//!
//! ```sql
//! -- Units and revenue per product per hour.
//! -- @key: product_id, window_start
//! -- @mode: update
//! -- @index: sales-velocity
//! SELECT ...
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How a view's rows reach the sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// A changelog keyed by the view's key: upserts and deletes as the result changes.
    Update,
    /// Finalized rows only: a window's row is emitted once, when the watermark closes it.
    Append,
}

/// One view, as written by an analyst.
#[derive(Debug, Clone)]
pub struct ViewDef {
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    /// `@key`: the columns that identify a row (document id). Defaults to the GROUP BY columns.
    pub key: Option<Vec<String>>,
    /// `@mode`: update (default) or append.
    pub mode: OutputMode,
    /// `@index`: the sink index/collection name. Defaults to the view name.
    pub index: Option<String>,
    /// `@text`: string columns to index as full text rather than keywords.
    pub text_fields: Vec<String>,
    /// The leading comment, for `runnel check` and dashboards.
    pub description: String,
}

impl ViewDef {
    /// Parses a view file's text. Errors carry the file, line and column.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let err = |line: usize, column: usize, message: String| Error::View {
            path: path.to_path_buf(),
            line,
            column,
            message,
        };
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
            || name.starts_with("__")
        {
            return Err(err(
                1,
                1,
                format!("view name `{name}` (from the file name) must be letters, digits and _"),
            ));
        }
        let mut def = ViewDef {
            name,
            path: path.to_path_buf(),
            sql: text.to_string(),
            key: None,
            mode: OutputMode::Update,
            index: None,
            text_fields: Vec::new(),
            description: String::new(),
        };
        let mut in_header = true;
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            let Some(comment) = trimmed.strip_prefix("--") else {
                if !trimmed.is_empty() {
                    in_header = false;
                }
                continue;
            };
            let comment = comment.trim();
            let col = line.len() - trimmed.len() + 3;
            if let Some(opt) = comment.strip_prefix('@') {
                let (k, v) = opt.split_once(':').ok_or_else(|| {
                    err(
                        n + 1,
                        col,
                        format!("option `@{opt}` needs a value: `-- @{opt}: ...`"),
                    )
                })?;
                let v = v.trim();
                let list = || -> Vec<String> {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                };
                match k.trim() {
                    "key" => def.key = Some(list()),
                    "mode" => {
                        def.mode = match v {
                            "update" => OutputMode::Update,
                            "append" => OutputMode::Append,
                            _ => {
                                return Err(err(
                                    n + 1,
                                    col,
                                    format!("@mode `{v}`: use `update` or `append`"),
                                ))
                            }
                        }
                    }
                    "index" => def.index = Some(v.to_string()),
                    "text" => def.text_fields = list(),
                    other => {
                        return Err(err(
                            n + 1,
                            col,
                            format!(
                                "unknown option `@{other}` (known: @key, @mode, @index, @text)"
                            ),
                        ))
                    }
                }
            } else if in_header && !comment.is_empty() {
                if !def.description.is_empty() {
                    def.description.push(' ');
                }
                def.description.push_str(comment);
            }
        }
        if def.key.as_ref().is_some_and(|k| k.is_empty()) {
            return Err(err(1, 1, "@key lists no columns".into()));
        }
        Ok(def)
    }

    /// The sink index name.
    pub fn index_name(&self) -> String {
        self.index.clone().unwrap_or_else(|| self.name.clone())
    }
}

/// Loads every `*.sql` file under `dir`, sorted by name. Stops at the first unreadable file;
/// parse errors are collected so `runnel check` can report them all.
pub fn load_dir(dir: &Path) -> Result<(Vec<ViewDef>, Vec<Error>)> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    let mut defs = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        match ViewDef::parse(&p, &text) {
            Ok(d) => defs.push(d),
            Err(e) => errors.push(e),
        }
    }
    Ok((defs, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_description() {
        let d = ViewDef::parse(
            Path::new("q/top.sql"),
            "-- Top products.\n-- By units.\n-- @key: product_id, w\n-- @mode: append\nSELECT 1",
        )
        .unwrap();
        assert_eq!(d.name, "top");
        assert_eq!(d.key.unwrap(), vec!["product_id", "w"]);
        assert_eq!(d.mode, OutputMode::Append);
        assert_eq!(d.description, "Top products. By units.");
    }

    #[test]
    fn bad_option_names_line() {
        let e = ViewDef::parse(Path::new("q/x.sql"), "SELECT 1\n  -- @mdoe: append\n").unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("q/x.sql:2:5:") && m.contains("@mdoe"), "{m}");
    }
}
