//! The dead-letter file: every record set aside (malformed or late), with its reason and
//! where it came from, one JSON object per line.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use serde_json::json;

use crate::decode::Rejected;
use crate::error::{Error, Result};

/// Appends dead letters to a file and counts them.
pub struct DeadLetters {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    pub malformed: u64,
    pub late: u64,
}

impl DeadLetters {
    /// Opens (lazily creating) the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DeadLetters {
            path: path.into(),
            out: None,
            malformed: 0,
            late: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn writer(&mut self) -> Result<&mut BufWriter<File>> {
        if self.out.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| Error::io(&self.path, e))?;
            self.out = Some(BufWriter::new(f));
        }
        self.out
            .as_mut()
            .ok_or_else(|| Error::Config("dead-letter file not open".into()))
    }

    /// Records malformed input.
    pub fn rejected(&mut self, stream: &str, r: &[Rejected]) -> Result<()> {
        if r.is_empty() {
            return Ok(());
        }
        self.malformed += r.len() as u64;
        for x in r {
            tracing::debug!(stream, position = %x.position, reason = %x.reason, "record set aside");
        }
        let path = self.path.clone();
        let w = self.writer()?;
        for x in r {
            let line = json!({
                "kind": "malformed",
                "stream": stream,
                "position": x.position,
                "reason": x.reason,
                "payload": String::from_utf8_lossy(&x.payload),
            });
            writeln!(w, "{line}").map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    /// Records events that arrived behind their stream's watermark.
    pub fn late(&mut self, stream: &str, watermark: Option<i64>, rows: &RecordBatch) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        self.late += rows.num_rows() as u64;
        let wm = watermark
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        let path = self.path.clone();
        let objects = crate::sink::rows_to_json(rows)?;
        let w = self.writer()?;
        for row in objects {
            let line = json!({
                "kind": "late",
                "stream": stream,
                "reason": format!("event time is behind the stream's watermark ({wm}); left out of windowed views"),
                "payload": row,
            });
            writeln!(w, "{line}").map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        if let Some(w) = self.out.as_mut() {
            w.flush().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }
}
