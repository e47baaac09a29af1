//! Hot reload: editing, adding or deleting a file in `queries/` while runnel runs.
//!
//! The pipeline polls the directory (once a second, between rounds). When its `.sql` files
//! change, every file is parsed and the whole set planned into a new engine; any problem is
//! logged with file, line and column and the running views carry on unchanged. Otherwise:
//! - views whose SQL is unchanged, and which read no changed view, keep their state exactly
//!   (moved over from the running engine, as a checkpoint would);
//! - changed and added views, and views reading them, are *rebuilt from the retained input*:
//!   a separate replay of the source from its start up to the positions the running views have
//!   reached (Kafka partitions from their earliest retained offset; files from line 1), run
//!   through a second engine holding only those views (and what they read). Their changes go to
//!   the sinks as it runs, after deletes of the old version's rows;
//! - deleted views' rows are deleted from the sinks.
//!
//! The pipeline pauses during the rebuild (its cost is the retained input, once). The
//! generator cannot be replayed: there, rebuilt views start from the current events.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::Positions;
use crate::decode::StreamDecoder;
use crate::engine::state::EngineState;
use crate::engine::{Engine, ViewDef, ViewOutput};
use crate::error::{Error, Result};
use crate::source::Source;

/// Opens a replay of the source up to the given positions.
pub type Backfill = Arc<dyn Fn(&Positions) -> Result<Box<dyn Source>> + Send + Sync>;

/// Watches a queries directory.
pub struct Reloader {
    dir: PathBuf,
    seen: String,
    last_check: Instant,
    every: Duration,
    pub backfill: Option<Backfill>,
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Report {
    pub rebuilt: Vec<String>,
    pub removed: Vec<String>,
    pub kept: usize,
    /// Events replayed to rebuild views.
    pub replayed: u64,
}

fn fingerprint(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return String::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let mut f = String::new();
    for p in files {
        f.push_str(&p.display().to_string());
        f.push('\0');
        f.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        f.push('\0');
    }
    f
}

impl Reloader {
    pub fn new(dir: &Path, backfill: Option<Backfill>) -> Self {
        Reloader {
            dir: dir.to_path_buf(),
            seen: fingerprint(dir),
            last_check: Instant::now(),
            every: Duration::from_secs(1),
            backfill,
        }
    }

    /// At most once a second: the directory's views if its files changed since last seen
    /// (`Err` with every parse problem if some file does not parse).
    pub fn poll(&mut self) -> Option<std::result::Result<Vec<ViewDef>, Vec<Error>>> {
        if self.last_check.elapsed() < self.every {
            return None;
        }
        self.last_check = Instant::now();
        let now = fingerprint(&self.dir);
        if now == self.seen {
            return None;
        }
        self.seen = now;
        Some(match crate::engine::view_file::load_dir(&self.dir) {
            Ok((defs, errors)) if errors.is_empty() => Ok(defs),
            Ok((_, errors)) => Err(errors),
            Err(e) => Err(vec![e]),
        })
    }
}

/// Where a reload's changes go: the pipeline's sinks, as `pipeline::ship` hands them over.
pub struct Ship<'a> {
    pub sinks: &'a mut [Box<dyn crate::sink::Sink>],
    pub temporary: &'a HashSet<String>,
    pub opts: &'a crate::pipeline::PipelineOptions,
}

impl Ship<'_> {
    async fn send(&mut self, outputs: Vec<ViewOutput>) -> Result<()> {
        crate::pipeline::ship(self.sinks, outputs, self.temporary, self.opts).await
    }
}

/// Replaces the running views with `defs` (see the module docs). On an error before any
/// change reached the sinks, nothing has changed.
pub async fn apply(
    engine: &mut Engine,
    defs: &[ViewDef],
    positions: Option<Positions>,
    backfill: Option<Backfill>,
    mut to: Ship<'_>,
) -> Result<Report> {
    let streams = engine.streams().clone();
    let mut new = Engine::new(streams.clone(), defs).await?;
    new.keep_recent_events(engine.recent_window());
    let old_parts = engine.parts();
    let new_parts = new.parts();
    let old_set: HashSet<(&str, &str)> = old_parts
        .iter()
        .map(|p| (p.name.as_str(), p.sql.as_str()))
        .collect();
    // A file is fresh if any of its parts is new or changed, or it reads a fresh part
    // (parts come in dependency order, so one pass sees upstream marks first).
    let mut fresh: HashSet<PathBuf> = HashSet::new();
    for p in &new_parts {
        let old_of_file = old_parts.iter().filter(|o| o.path == p.path).count();
        let new_of_file = new_parts.iter().filter(|o| o.path == p.path).count();
        let reads_fresh = p.reads.iter().any(|r| {
            new_parts
                .iter()
                .find(|q| &q.name == r)
                .is_some_and(|q| fresh.contains(&q.path))
        });
        if !old_set.contains(&(p.name.as_str(), p.sql.as_str()))
            || old_of_file != new_of_file
            || reads_fresh
        {
            fresh.insert(p.path.clone());
        }
    }
    let new_names: HashSet<&str> = new_parts.iter().map(|p| p.name.as_str()).collect();
    let mut report = Report::default();
    if fresh.is_empty()
        && old_parts
            .iter()
            .all(|p| new_names.contains(p.name.as_str()))
    {
        // Same views as before (e.g. a broken file was fixed back): nothing to do.
        report.kept = engine.views().count();
        return Ok(report);
    }
    // The old version's rows of rebuilt and removed views leave the sinks first.
    let mut leaving: Vec<ViewOutput> = Vec::new();
    for mut o in engine.current_results()? {
        let removed = !new_names.contains(o.view.name.as_str());
        if removed || fresh.contains(&o.view.path) {
            o.changes.deletes = o.changes.upserts.take();
            leaving.push(o);
        }
    }
    for v in engine.views() {
        if !new_names.contains(v.name.as_str()) {
            report.removed.push(v.name.clone());
        }
    }
    // Rebuild: the fresh views and whatever they read, replayed from the retained input.
    let mut needed: HashSet<PathBuf> = fresh.clone();
    for p in new_parts.iter().rev() {
        if needed.contains(&p.path) {
            for r in &p.reads {
                if let Some(q) = new_parts.iter().find(|q| &q.name == r) {
                    needed.insert(q.path.clone());
                }
            }
        }
    }
    let sub_defs: Vec<ViewDef> = defs
        .iter()
        .filter(|d| needed.contains(&d.path))
        .cloned()
        .collect();
    let mut sub = Engine::new(streams.clone(), &sub_defs).await?;
    let old_state = engine.save_state()?;
    if !leaving.is_empty() {
        to.send(leaving).await?;
    }
    let mut replayed = 0u64;
    let mut rebuilt_from_input = false;
    if !fresh.is_empty() {
        match (&backfill, &positions) {
            (Some(open), Some(upto)) => {
                let mut source = open(upto)?;
                let mut decoders = streams
                    .streams
                    .iter()
                    .map(|s| StreamDecoder::new(s.clone()))
                    .collect::<Result<Vec<_>>>()?;
                while let Some(round) = source.next().await? {
                    let mut decoded = Vec::with_capacity(round.len());
                    for raw in round {
                        // Malformed records were counted and set aside when first read.
                        let d = decoders[raw.stream].decode(&raw)?;
                        replayed += d.batch.num_rows() as u64;
                        decoded.push((raw.stream, d.batch));
                    }
                    let out = sub.process_round(decoded).await?;
                    let outs: Vec<ViewOutput> = out
                        .outputs
                        .into_iter()
                        .filter(|o| fresh.contains(&o.view.path))
                        .collect();
                    if !outs.is_empty() {
                        to.send(outs).await?;
                    }
                }
                rebuilt_from_input = true;
            }
            _ => tracing::warn!(
                "this source cannot be replayed: changed views start from the current events"
            ),
        }
    }
    let sub_state = sub.save_state()?;
    let merged = EngineState {
        streams: old_state.streams,
        tables: old_state.tables,
        views: new_parts
            .iter()
            .map(|p| {
                let from = if fresh.contains(&p.path) {
                    &sub_state.views
                } else {
                    &old_state.views
                };
                from.iter()
                    .find(|v| v.name == p.name)
                    .cloned()
                    .ok_or_else(|| {
                        Error::Config(format!("internal: no state for view part {}", p.name))
                    })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    new.restore_state(&merged)?;
    if !rebuilt_from_input {
        // Views over tables and views are exact at once.
        let names: HashSet<String> = new_parts
            .iter()
            .filter(|p| fresh.contains(&p.path))
            .map(|p| p.name.clone())
            .collect();
        let out = new.refresh(&names).await?;
        if !out.outputs.is_empty() {
            to.send(out.outputs).await?;
        }
    }
    for v in new.views() {
        if fresh.contains(&v.path) {
            report.rebuilt.push(v.name.clone());
        } else {
            report.kept += 1;
        }
    }
    report.replayed = replayed;
    *engine = new;
    Ok(report)
}
