//! Checkpoints: the engine's state together with the source positions it reflects, on disk,
//! so that a restart continues where the last checkpoint left off instead of replaying history.
//!
//! Layout of `--checkpoint DIR`:
//! - `ckpt-<N>/`: `manifest.json` (positions, streams, which file holds what) and one Arrow
//!   IPC file per table, view result and view's aggregate state. Written as `ckpt-<N>.tmp/`,
//!   synced, then renamed: a crash mid-write leaves a `.tmp` directory that is ignored and
//!   removed, never a checkpoint that loads wrong. Older checkpoints are removed after.
//! - `journal-<N>.ndjson`: the keys of every update-mode row handed to the sinks since
//!   checkpoint N, written *before* the sinks get them. After a crash, the restored engine
//!   is at checkpoint N while the sinks may already hold later values for those keys; the
//!   journal says which keys to set back (upsert the checkpoint's row, or delete the key if
//!   the checkpoint has none). Re-processing from the checkpoint's positions then reproduces
//!   every later change, so the sinks end equal to an uninterrupted run.
//!
//! Source positions are only committed upstream (Kafka offsets) once a checkpoint holding
//! them is on disk, so the committed offsets never run ahead of a checkpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::result::Changes;
use crate::engine::state::{EngineState, StreamState, ViewState};
use crate::engine::{Engine, OutputMode, ViewOutput};
use crate::error::{Error, Result};
use crate::sink::{row_key, rows_to_json};

/// Where a source is: `topic/partition` -> next Kafka offset, or `file:<topic>` -> lines read.
pub type Positions = BTreeMap<String, i64>;

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    epoch: u64,
    written_at_ms: i64,
    positions: Positions,
    streams: Vec<StreamState>,
    tables: Vec<(String, String)>,
    views: Vec<ViewEntry>,
}

#[derive(Serialize, Deserialize)]
struct ViewEntry {
    name: String,
    sql: String,
    result: Option<String>,
    groups: Option<String>,
    /// Interval joins: the rows each side retains (left, right).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    join: Option<(String, String)>,
}

/// A key handed to a sink after the last checkpoint.
#[derive(Serialize, Deserialize)]
struct JournalEntry {
    view: String,
    key: Map<String, Value>,
}

/// What `open` found on disk.
pub struct Restored {
    /// The checkpoint's epoch (0: no checkpoint yet, the state is empty).
    pub epoch: u64,
    pub state: Option<EngineState>,
    pub positions: Positions,
    /// Keys handed to sinks after the checkpoint, per view.
    journal: BTreeMap<String, Vec<Map<String, Value>>>,
}

impl Restored {
    /// Keys in the journal (for logs and tests).
    pub fn journaled_keys(&self) -> usize {
        self.journal.values().map(|v| v.len()).sum()
    }

    /// The changes that bring every sink back to the restored state: each update-mode view's
    /// rows, and a delete for every journaled key the checkpoint does not hold.
    pub fn resync(&self, engine: &mut Engine) -> Result<Vec<ViewOutput>> {
        let mut outputs = engine.current_results()?;
        let mut present: HashMap<String, HashSet<String>> = HashMap::new();
        for o in &outputs {
            let keys = match &o.changes.upserts {
                Some(b) => rows_to_json(b)?
                    .iter()
                    .map(|r| row_key(&o.view, r))
                    .collect(),
                None => HashSet::new(),
            };
            present.insert(o.view.name.clone(), keys);
        }
        let views: Vec<_> = engine.views().cloned().collect();
        for view in views {
            if view.mode != OutputMode::Update {
                continue;
            }
            let Some(keys) = self.journal.get(&view.name) else {
                continue;
            };
            let held = present.get(&view.name);
            let mut seen = HashSet::new();
            let gone: Vec<&Map<String, Value>> = keys
                .iter()
                .filter(|k| {
                    let id = row_key(&view, k);
                    !held.is_some_and(|h| h.contains(&id)) && seen.insert(id)
                })
                .collect();
            if gone.is_empty() {
                continue;
            }
            let deletes = keys_to_batch(&view.schema, &gone)?;
            let changes = Changes {
                upserts: None,
                deletes: Some(deletes),
            };
            match outputs.iter_mut().find(|o| o.view.name == view.name) {
                Some(o) => o.changes.deletes = changes.deletes,
                None => outputs.push(ViewOutput {
                    view: view.clone(),
                    changes,
                }),
            }
        }
        Ok(outputs)
    }
}

/// Key objects as a batch of the view's columns (non-key columns null).
fn keys_to_batch(schema: &SchemaRef, keys: &[&Map<String, Value>]) -> Result<RecordBatch> {
    let nullable = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let mut buf = Vec::new();
    for k in keys {
        serde_json::to_writer(&mut buf, k).map_err(|e| Error::Checkpoint(e.to_string()))?;
        buf.push(b'\n');
    }
    let mut reader = arrow_json::ReaderBuilder::new(nullable.clone())
        .with_batch_size(keys.len().max(1))
        .build(std::io::Cursor::new(buf))?;
    let mut parts = Vec::new();
    for b in reader.by_ref() {
        parts.push(b?);
    }
    Ok(arrow::compute::concat_batches(&nullable, &parts)?)
}

/// The checkpoint directory of one runnel process.
pub struct Checkpoints {
    dir: PathBuf,
    epoch: u64,
    every: Duration,
    last: Instant,
    journal: BufWriter<File>,
    /// Keys already in the current journal (each is written once per checkpoint interval).
    journaled: HashSet<(String, String)>,
    /// Positions of the last checkpoint: an idle source writes no new ones.
    last_positions: Option<Positions>,
    /// Bytes of the last checkpoint written (for status).
    pub last_bytes: u64,
    pub written: u64,
}

fn cerr(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint(format!("{}: {e}", path.display()))
}

fn epoch_of(name: &str) -> Option<u64> {
    name.strip_prefix("ckpt-")?.parse().ok()
}

fn journal_path(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("journal-{epoch:09}.ndjson"))
}

impl Checkpoints {
    /// Opens (creating) the directory and loads its latest complete checkpoint, if any, with
    /// the journal written after it.
    pub fn open(dir: &Path, every: Duration) -> Result<(Self, Restored)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut latest: Option<u64> = None;
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                // A checkpoint a crash interrupted: never complete, never loaded.
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            if let Some(n) = epoch_of(&name) {
                if entry.path().join("manifest.json").is_file() {
                    latest = Some(latest.map_or(n, |l| l.max(n)));
                }
            }
        }
        if let Some(n) = latest {
            remove_older(dir, n);
        }
        let (epoch, state, positions) = match latest {
            Some(n) => {
                let (state, positions) = read_checkpoint(&dir.join(format!("ckpt-{n:09}")))?;
                (n, Some(state), positions)
            }
            None => (0, None, Positions::new()),
        };
        let jpath = journal_path(dir, epoch);
        let journal = read_journal(&jpath)?;
        let restored_positions = latest.map(|_| positions.clone());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jpath)
            .map_err(|e| Error::io(&jpath, e))?;
        let cp = Checkpoints {
            dir: dir.to_path_buf(),
            epoch,
            every,
            last: Instant::now(),
            journal: BufWriter::new(file),
            journaled: HashSet::new(),
            last_positions: restored_positions,
            last_bytes: 0,
            written: 0,
        };
        Ok((
            cp,
            Restored {
                epoch,
                state,
                positions,
                journal,
            },
        ))
    }

    /// Whether the interval since the last checkpoint has passed and the source has moved
    /// since (an idle pipeline does not rewrite the same state).
    pub fn due(&self, positions: &Positions) -> bool {
        self.last.elapsed() >= self.every && self.last_positions.as_ref() != Some(positions)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records the keys of update-mode rows about to be handed to the sinks (call before
    /// the sinks see them).
    pub fn journal(&mut self, outputs: &[ViewOutput]) -> Result<()> {
        let mut wrote = false;
        let path = journal_path(&self.dir, self.epoch);
        for o in outputs {
            if o.view.mode != OutputMode::Update || o.view.hidden {
                continue;
            }
            let names = o.view.key_names();
            for batch in [&o.changes.upserts, &o.changes.deletes]
                .into_iter()
                .flatten()
            {
                let cols: Vec<usize> = names
                    .iter()
                    .filter_map(|n| batch.schema().index_of(n).ok())
                    .collect();
                let keys = batch.project(&cols)?;
                for key in rows_to_json(&keys)? {
                    let id = row_key(&o.view, &key);
                    if !self.journaled.insert((o.view.name.clone(), id)) {
                        continue;
                    }
                    let line = serde_json::to_vec(&JournalEntry {
                        view: o.view.name.clone(),
                        key,
                    })
                    .map_err(|e| Error::Checkpoint(e.to_string()))?;
                    self.journal
                        .write_all(&line)
                        .and_then(|_| self.journal.write_all(b"\n"))
                        .map_err(|e| Error::io(&path, e))?;
                    wrote = true;
                }
            }
        }
        if wrote {
            // To the OS before any sink sees these rows: a killed process loses nothing here.
            self.journal.flush().map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }

    /// Writes a checkpoint of `state` at `positions`: atomically (temporary directory, sync,
    /// rename), then starts a new journal and removes older checkpoints and journals.
    pub fn write(&mut self, state: &EngineState, positions: &Positions) -> Result<()> {
        let epoch = self.epoch + 1;
        let name = format!("ckpt-{epoch:09}");
        let tmp = self.dir.join(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut bytes = 0u64;
        let mut part = 0usize;
        let mut write_part = |batch: &RecordBatch| -> Result<String> {
            part += 1;
            let file = format!("part-{part:04}.arrow");
            bytes += write_ipc(&tmp.join(&file), batch)?;
            Ok(file)
        };
        let mut tables = Vec::new();
        for (name, rows) in &state.tables {
            tables.push((name.clone(), write_part(rows)?));
        }
        let mut views = Vec::new();
        for v in &state.views {
            views.push(ViewEntry {
                name: v.name.clone(),
                sql: v.sql.clone(),
                result: v.result.as_ref().map(&mut write_part).transpose()?,
                groups: v.groups.as_ref().map(&mut write_part).transpose()?,
                join: match &v.join {
                    Some((l, r)) => Some((write_part(l)?, write_part(r)?)),
                    None => None,
                },
            });
        }
        let manifest = Manifest {
            format: FORMAT,
            epoch,
            written_at_ms: crate::decode::now_ms(),
            positions: positions.clone(),
            streams: state.streams.clone(),
            tables,
            views,
        };
        let mpath = tmp.join("manifest.json");
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| cerr(&mpath, e))?;
        write_synced(&mpath, &text)?;
        bytes += text.len() as u64;
        sync_dir(&tmp)?;
        let dest = self.dir.join(&name);
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        sync_dir(&self.dir)?;
        // The new checkpoint is durable: start its journal, drop what came before.
        let jpath = journal_path(&self.dir, epoch);
        let file = File::create(&jpath).map_err(|e| Error::io(&jpath, e))?;
        self.journal = BufWriter::new(file);
        self.journaled.clear();
        self.last_positions = Some(positions.clone());
        self.epoch = epoch;
        self.last = Instant::now();
        self.last_bytes = bytes;
        self.written += 1;
        remove_older(&self.dir, epoch);
        tracing::debug!(epoch, bytes, "checkpoint written");
        Ok(())
    }
}

/// Removes checkpoints and journals older than `epoch` (what a crash right after a rename
/// may have left behind too).
fn remove_older(dir: &Path, epoch: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if epoch_of(&name).is_some_and(|n| n < epoch) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
        let journal = name
            .strip_prefix("journal-")
            .and_then(|r| r.strip_suffix(".ndjson"))
            .and_then(|n| n.parse::<u64>().ok());
        if journal.is_some_and(|n| n < epoch) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn write_ipc(path: &Path, batch: &RecordBatch) -> Result<u64> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = arrow::ipc::writer::FileWriter::try_new(BufWriter::new(file), &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    let buf = w.into_inner()?;
    let file = buf
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(file.metadata().map(|m| m.len()).unwrap_or(0))
}

fn read_ipc(path: &Path) -> Result<RecordBatch> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = arrow::ipc::reader::FileReader::try_new(BufReader::new(file), None)
        .map_err(|e| cerr(path, e))?;
    let schema = reader.schema();
    let parts = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| cerr(path, e))?;
    Ok(arrow::compute::concat_batches(&schema, &parts)?)
}

fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(data).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn read_checkpoint(dir: &Path) -> Result<(EngineState, Positions)> {
    let mpath = dir.join("manifest.json");
    let text = std::fs::read(&mpath).map_err(|e| Error::io(&mpath, e))?;
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| cerr(&mpath, e))?;
    if m.format != FORMAT {
        return Err(cerr(
            &mpath,
            format!(
                "format {} is not {FORMAT} (written by another runnel version)",
                m.format
            ),
        ));
    }
    let part = |f: &String| read_ipc(&dir.join(f));
    let state = EngineState {
        streams: m.streams,
        tables: m
            .tables
            .iter()
            .map(|(n, f)| Ok((n.clone(), part(f)?)))
            .collect::<Result<_>>()?,
        views: m
            .views
            .iter()
            .map(|v| {
                Ok(ViewState {
                    name: v.name.clone(),
                    sql: v.sql.clone(),
                    result: v.result.as_ref().map(part).transpose()?,
                    groups: v.groups.as_ref().map(part).transpose()?,
                    join: match &v.join {
                        Some((l, r)) => Some((part(l)?, part(r)?)),
                        None => None,
                    },
                })
            })
            .collect::<Result<_>>()?,
    };
    Ok((state, m.positions))
}

/// Reads a journal; a torn last line (the process died writing it) ends it, as those keys
/// never reached a sink.
fn read_journal(path: &Path) -> Result<BTreeMap<String, Vec<Map<String, Value>>>> {
    let mut out: BTreeMap<String, Vec<Map<String, Value>>> = BTreeMap::new();
    let Ok(file) = File::open(path) else {
        return Ok(out);
    };
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| Error::io(path, e))?;
        match serde_json::from_slice::<JournalEntry>(&line) {
            Ok(e) => out.entry(e.view).or_default().push(e.key),
            Err(_) => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_write_is_ignored_and_removed_and_a_torn_journal_line_ends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cp, r) = Checkpoints::open(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(r.epoch, 0);
        assert!(r.state.is_none());
        let positions: Positions = [("transaction_data/0".to_string(), 42)].into();
        cp.write(&EngineState::default(), &positions).unwrap();
        assert_eq!(cp.epoch(), 1);
        // A crash in the middle of writing checkpoint 2: a half-written temporary directory,
        // and a journal whose last line was cut off.
        let tmp = dir.path().join("ckpt-000000002.tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("manifest.json"), b"{\"format\": 1, \"ep").unwrap();
        std::fs::write(
            journal_path(dir.path(), 1),
            b"{\"view\":\"v\",\"key\":{\"k\":1}}\n{\"view\":\"v\",\"key\":{\"k\":",
        )
        .unwrap();
        drop(cp);
        let (cp, r) = Checkpoints::open(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(r.epoch, 1);
        assert_eq!(r.positions, positions);
        assert!(r.state.is_some());
        assert_eq!(r.journaled_keys(), 1);
        assert!(!tmp.exists(), "the interrupted checkpoint is removed");
        assert_eq!(cp.epoch(), 1);
    }

    #[test]
    fn a_newer_checkpoint_replaces_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cp, _) = Checkpoints::open(dir.path(), Duration::ZERO).unwrap();
        for i in 0..3 {
            cp.write(&EngineState::default(), &[("f".to_string(), i)].into())
                .unwrap();
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let (_, r) = Checkpoints::open(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(r.epoch, 3);
        assert_eq!(r.positions["f"], 2);
    }
}
