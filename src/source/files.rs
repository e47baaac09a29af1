//! Replay from files: `DIR/<topic>.ndjson`, one record per line, merged by event time.
//!
//! Each round reads ahead up to `batch` lines per file and releases, from every file, the lines
//! whose event time is at or before a common cursor (the earliest "last buffered time" among
//! the files), so the streams interleave as they happened. Keyed tables (customers, products)
//! are released up to their watermark delay ahead of the cursor and first in every round, so
//! an event never misses a dimension row that existed, within the allowed disorder, when it
//! happened. Lines whose event time cannot be read go through at once (the decoder then
//! judges them). Streams whose file is missing are skipped.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::Source;
use crate::checkpoint::Positions;
use crate::decode::{now_ms, Origin, RawBatch};
use crate::error::{Error, Result};
use crate::schema::Streams;

struct OpenFile {
    stream: usize,
    topic: String,
    name: Arc<str>,
    path: PathBuf,
    reader: BufReader<File>,
    /// `"<event_time>":` as bytes, to find a line's event time without parsing it all.
    needle: Vec<u8>,
    /// How far ahead of the cursor this file may run (ms): keyed tables lead by their delay.
    lead_ms: i64,
    /// Read-ahead: (line bytes, event time).
    pending: VecDeque<(Vec<u8>, Option<i64>)>,
    /// Line number of the first pending line.
    next_line: u64,
    eof: bool,
    /// Lines left to read before stopping (None: to the end of the file).
    remaining: Option<u64>,
}

pub struct FileSource {
    files: Vec<OpenFile>,
    batch: usize,
}

impl FileSource {
    pub fn open(dir: &Path, streams: &Streams, batch: usize) -> Result<Self> {
        Self::open_at(dir, streams, batch, &Positions::new())
    }

    /// Opens the files from their start and ends each after the lines `upto` says were read
    /// (a rebuilt view's backfill: the input the running views have seen, no more).
    pub fn open_until(
        dir: &Path,
        streams: &Streams,
        batch: usize,
        upto: &Positions,
    ) -> Result<Self> {
        let mut src = Self::open_at(dir, streams, batch, &Positions::new())?;
        for f in &mut src.files {
            let n = upto.get(&format!("file:{}", f.topic)).copied().unwrap_or(0);
            f.remaining = Some(n.max(0) as u64);
        }
        Ok(src)
    }

    /// Opens the files past the lines a checkpoint has already read (`file:<topic>` -> lines).
    pub fn open_at(
        dir: &Path,
        streams: &Streams,
        batch: usize,
        resume: &Positions,
    ) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Source {
                source_name: format!("files:{}", dir.display()),
                message: "not a directory".into(),
            });
        }
        let mut files = Vec::new();
        let mut order: Vec<usize> = (0..streams.streams.len()).collect();
        order.sort_by_key(|&i| !streams.streams[i].is_table());
        for i in order {
            let s = &streams.streams[i];
            let path = dir.join(format!("{}.ndjson", s.topic));
            if !path.exists() {
                tracing::info!(stream = %s.name, path = %path.display(), "no file for stream, skipped");
                continue;
            }
            let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let mut reader = BufReader::with_capacity(1 << 20, f);
            let skip = resume
                .get(&format!("file:{}", s.topic))
                .copied()
                .unwrap_or(0)
                .max(0) as u64;
            let mut line = Vec::new();
            for _ in 0..skip {
                line.clear();
                if reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| Error::io(&path, e))?
                    == 0
                {
                    break;
                }
            }
            files.push(OpenFile {
                stream: i,
                topic: s.topic.clone(),
                name: Arc::from(path.display().to_string()),
                path,
                reader,
                needle: format!("\"{}\":", s.event_time).into_bytes(),
                lead_ms: if s.is_table() {
                    s.watermark_delay.as_millis() as i64
                } else {
                    0
                },
                pending: VecDeque::new(),
                next_line: skip + 1,
                eof: false,
                remaining: None,
            });
        }
        if files.is_empty() {
            return Err(Error::Source {
                source_name: format!("files:{}", dir.display()),
                message: "no <topic>.ndjson files for any stream (e.g. transaction_data.ndjson)"
                    .into(),
            });
        }
        Ok(FileSource {
            files,
            batch: batch.max(1),
        })
    }
}

impl OpenFile {
    fn fill(&mut self, want: usize) -> Result<()> {
        while !self.eof && self.pending.len() < want {
            match &mut self.remaining {
                Some(0) => {
                    self.eof = true;
                    break;
                }
                Some(n) => *n -= 1,
                None => {}
            }
            let mut line = Vec::with_capacity(256);
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::io(&self.path, e))?;
            if n == 0 {
                self.eof = true;
                break;
            }
            let t = line_time(&line, &self.needle);
            self.pending.push_back((line, t));
        }
        Ok(())
    }

    /// The latest event time among the buffered lines.
    fn horizon(&self) -> Option<i64> {
        self.pending.iter().filter_map(|(_, t)| *t).max()
    }
}

#[async_trait]
impl Source for FileSource {
    async fn next(&mut self) -> Result<Option<Vec<RawBatch>>> {
        for f in self.files.iter_mut() {
            f.fill(self.batch)?;
        }
        if self.files.iter().all(|f| f.pending.is_empty()) {
            return Ok(None);
        }
        // The cursor: no file may be released past the earliest horizon of a file that has
        // more to read (files at EOF impose no limit).
        let cursor = self
            .files
            .iter()
            .filter(|f| !f.eof)
            .filter_map(|f| f.horizon().map(|h| h - f.lead_ms))
            .min()
            .unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for f in self.files.iter_mut() {
            let limit = cursor.saturating_add(f.lead_ms);
            let mut data = Vec::new();
            let mut lines = 0;
            while let Some((_, t)) = f.pending.front() {
                if t.is_some_and(|t| t > limit) {
                    break;
                }
                if let Some((line, _)) = f.pending.pop_front() {
                    data.extend_from_slice(&line);
                    if line.last() != Some(&b'\n') {
                        data.push(b'\n');
                    }
                    lines += 1;
                }
            }
            if lines > 0 {
                out.push(raw(f, data, lines));
            }
        }
        if out.is_empty() {
            // Disorder put a late line first everywhere: release the lagging file's buffer.
            if let Some(f) = self
                .files
                .iter_mut()
                .filter(|f| !f.pending.is_empty())
                .min_by_key(|f| f.horizon().unwrap_or(i64::MIN))
            {
                let mut data = Vec::new();
                let lines = f.pending.len();
                for (line, _) in f.pending.drain(..) {
                    data.extend_from_slice(&line);
                    if line.last() != Some(&b'\n') {
                        data.push(b'\n');
                    }
                }
                out.push(raw(f, data, lines));
            }
        }
        Ok(Some(out))
    }

    fn positions(&self) -> Option<Positions> {
        Some(
            self.files
                .iter()
                .map(|f| (format!("file:{}", f.topic), f.next_line as i64 - 1))
                .collect(),
        )
    }
}

fn raw(f: &mut OpenFile, data: Vec<u8>, lines: usize) -> RawBatch {
    let origin = Origin::Lines {
        file: f.name.clone(),
        first_line: f.next_line,
    };
    f.next_line += lines as u64;
    let mut raw = RawBatch::from_lines(f.stream, data, origin);
    raw.read_at_ms = now_ms();
    raw
}

/// The event time of a JSON line, found by its field name: an RFC 3339 UTC string
/// (`2026-01-01T00:00:00.123Z`) or a number of milliseconds.
pub fn line_time(line: &[u8], needle: &[u8]) -> Option<i64> {
    let pos = line.windows(needle.len()).position(|w| w == needle)?;
    let rest = &line[pos + needle.len()..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    if rest.first() == Some(&b'"') {
        let s =
            std::str::from_utf8(&rest[1..rest[1..].iter().position(|&b| b == b'"')? + 1]).ok()?;
        parse_rfc3339_ms(s)
    } else {
        let end = rest
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'-'))
            .unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
    }
}

fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_event_time() {
        let l = br#"{"a":1,"view_time":"2026-01-01T00:00:01.500Z","b":2}"#;
        assert_eq!(line_time(l, b"\"view_time\":"), Some(1_767_225_601_500));
        assert_eq!(
            line_time(br#"{"view_time": 42}"#, b"\"view_time\":"),
            Some(42)
        );
        assert_eq!(line_time(b"garbage", b"\"view_time\":"), None);
    }
}
