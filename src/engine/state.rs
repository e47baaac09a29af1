//! The engine's state as plain Arrow batches, for checkpoints: every keyed table's rows, every
//! view's current result and its aggregate groups' partial state, and each stream's watermark
//! and counters. Restoring it into an engine planned from the same views gives back the engine
//! as it was; nothing that is derived (live tables, windows' index) is stored.

use arrow::array::RecordBatch;

use super::{keyed, Engine, ViewKind};
use crate::error::{Error, Result};

/// One stream's position in event time and its counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamState {
    pub name: String,
    pub max_event_time: Option<i64>,
    pub events: u64,
    pub late: u64,
    pub batches: u64,
}

/// One view's state (hidden halves of split views included).
#[derive(Debug, Clone)]
pub struct ViewState {
    pub name: String,
    /// The SQL the view was planned from: state only fits the same SQL.
    pub sql: String,
    /// Current result rows (views that keep one).
    pub result: Option<RecordBatch>,
    /// Aggregate views: group columns and accumulator state (see `GroupState::take_state`).
    pub groups: Option<RecordBatch>,
    /// Interval joins: the rows each side retains (left, right).
    pub join: Option<(RecordBatch, RecordBatch)>,
}

/// Everything needed to continue where the engine was.
#[derive(Debug, Clone, Default)]
pub struct EngineState {
    pub streams: Vec<StreamState>,
    /// Keyed tables' rows, by stream name.
    pub tables: Vec<(String, RecordBatch)>,
    pub views: Vec<ViewState>,
}

impl Engine {
    /// The engine's state now (between rounds). Cost: a copy of every view's rows and groups.
    /// Views added while running (the REPL's temporary views) are left out: a restart does
    /// not have them.
    pub fn save_state(&mut self) -> Result<EngineState> {
        if self.has_pending() {
            // A checkpoint holds the views' rows: they must include every group merged.
            return Err(Error::Checkpoint(
                "internal: state saved with absorbed rounds not emitted (emit first)".into(),
            ));
        }
        let mut st = EngineState::default();
        for (i, s) in self.streams.streams.iter().enumerate() {
            st.streams.push(StreamState {
                name: s.name.clone(),
                max_event_time: self.max_event_time[i],
                events: self.stats[i].events,
                late: self.stats[i].late,
                batches: self.stats[i].batches,
            });
            if let Some(k) = &self.keyed[i] {
                st.tables.push((s.name.clone(), keyed::read(k).rows()?));
            }
        }
        for v in &mut self.views {
            if self.temporary.contains(&v.info.name) {
                continue;
            }
            let result = v.current_rows()?;
            let groups = match &mut v.kind {
                ViewKind::Aggregate(a) => {
                    let schema = a.partial.schema();
                    let groups = a.groups.take_state(&schema)?;
                    // Taking the state renumbers the groups, afresh: what each one has sent
                    // is recorded again (it is what the sinks hold, between rounds).
                    a.settle_derived(&v.info)?;
                    Some(groups)
                }
                _ => None,
            };
            let join = match &v.kind {
                ViewKind::IntervalJoin(j) => Some(j.retained()?),
                _ => None,
            };
            st.views.push(ViewState {
                name: v.info.name.clone(),
                sql: v.info.sql.clone(),
                result,
                groups,
                join,
            });
        }
        Ok(st)
    }

    /// Loads state saved by [`Engine::save_state`] into a freshly planned engine. The views
    /// must be the ones the state was saved from (same names, same SQL); otherwise nothing is
    /// loaded and the error names the first difference. An engine that has taken in events or
    /// a checkpoint already is refused: the state would be added to what it holds.
    pub fn restore_state(&mut self, st: &EngineState) -> Result<()> {
        let mismatch = |m: String| Error::Checkpoint(m);
        if self.holds_state {
            return Err(mismatch(
                "a checkpoint is loaded only into a freshly planned engine; this one already \
                 holds events or a checkpoint"
                    .into(),
            ));
        }
        let now: Vec<(&str, &str)> = self
            .views
            .iter()
            .filter(|v| !self.temporary.contains(&v.info.name))
            .map(|v| (v.info.name.as_str(), v.info.sql.as_str()))
            .collect();
        for (name, sql) in &now {
            match st.views.iter().find(|v| v.name == *name) {
                None if hidden_part_of(name).is_some() => {
                    return Err(mismatch(replanned(name)));
                }
                None => {
                    return Err(mismatch(format!(
                        "view `{name}` is not in the checkpoint (it was added since)"
                    )))
                }
                Some(v) if v.sql != *sql => {
                    return Err(mismatch(format!(
                        "view `{name}` has changed since the checkpoint was taken"
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(v) = st
            .views
            .iter()
            .find(|v| !now.iter().any(|(n, _)| *n == v.name))
        {
            if hidden_part_of(&v.name).is_some() {
                return Err(mismatch(replanned(&v.name)));
            }
            return Err(mismatch(format!(
                "the checkpoint holds view `{}`, which is no longer defined",
                v.name
            )));
        }
        self.holds_state = true;
        for s in &st.streams {
            let Some(i) = self.streams.streams.iter().position(|x| x.name == s.name) else {
                return Err(mismatch(format!(
                    "the checkpoint holds stream `{}`, which is no longer defined",
                    s.name
                )));
            };
            self.max_event_time[i] = s.max_event_time;
            self.stats[i].events = s.events;
            self.stats[i].late = s.late;
            self.stats[i].batches = s.batches;
        }
        for (name, rows) in &st.tables {
            let i = self.streams.streams.iter().position(|x| &x.name == name);
            let Some(table) = i.and_then(|i| self.keyed[i].as_ref()) else {
                return Err(mismatch(format!(
                    "the checkpoint holds table `{name}`, which is not a keyed table now"
                )));
            };
            keyed::write(table).upsert(rows)?;
            if let Some(i) = i {
                self.stream_tables[i].data().replace(None);
            }
        }
        for v in &mut self.views {
            let Some(saved) = st.views.iter().find(|s| s.name == v.info.name) else {
                continue;
            };
            if let (Some(r), Some(rows)) = (v.result.as_mut(), &saved.result) {
                r.upsert(rows)?;
            }
            if let (ViewKind::Aggregate(a), Some(groups)) = (&mut v.kind, &saved.groups) {
                a.groups.clear();
                a.groups.merge(groups, &mut Vec::new())?;
                // A checkpoint holds no min/max values per group: rebuilt from the input.
                a.stale = a.raw.is_some();
                a.settle_derived(&v.info)?;
            }
            if let (ViewKind::IntervalJoin(j), Some((left, right))) = (&mut v.kind, &saved.join) {
                j.restore(left.clone(), right.clone())?;
            }
            if v.read_by_views {
                if let Some(r) = v.result.as_mut() {
                    v.live.data().set(vec![r.snapshot()?]);
                }
            }
        }
        Ok(())
    }

    /// Every user-visible update-mode view's current rows: what a sink holds after it has
    /// received every change so far (used to bring sinks back in line after a restore).
    pub fn current_results(&mut self) -> Result<Vec<super::ViewOutput>> {
        let mut out = Vec::new();
        for v in &mut self.views {
            if v.info.hidden || v.info.mode != super::OutputMode::Update {
                continue;
            }
            if let Some(rows) = v.current_rows()? {
                out.push(super::ViewOutput {
                    view: v.info.clone(),
                    changes: super::Changes {
                        upserts: Some(rows),
                        deletes: None,
                    },
                });
            }
        }
        Ok(out)
    }
}

/// One planned part of a view (hidden halves of a split view included), for hot reload.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    /// The view file it comes from.
    pub path: std::path::PathBuf,
    pub sql: String,
    /// Names of the views (parts) it reads.
    pub reads: Vec<String>,
}

impl Engine {
    /// Every planned part, in dependency order.
    pub fn parts(&self) -> Vec<Part> {
        self.views
            .iter()
            .map(|v| Part {
                name: v.info.name.clone(),
                path: v.info.path.clone(),
                sql: v.info.sql.clone(),
                reads: v
                    .inputs
                    .iter()
                    .filter_map(|i| match i {
                        super::Input::View(j) => Some(self.views[*j].info.name.clone()),
                        _ => None,
                    })
                    .collect(),
            })
            .collect()
    }

    /// How many recent events per stream are kept for ad-hoc queries.
    pub fn recent_window(&self) -> usize {
        self.recent_window
    }
}

/// The view a hidden part (`__<view>_<n>`, see `plan.rs`) was planned from.
fn hidden_part_of(name: &str) -> Option<&str> {
    let (stem, n) = name.strip_prefix("__")?.rsplit_once('_')?;
    (!stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(stem)
}

/// Why a checkpoint does not fit a view whose hidden parts differ from the checkpoint's.
fn replanned(part: &str) -> String {
    format!(
        "view `{}` is planned in other parts than when the checkpoint was taken (a runnel \
         version that runs it differently; part `{part}`)",
        hidden_part_of(part).unwrap_or(part)
    )
}

#[cfg(test)]
mod tests {
    use super::hidden_part_of;

    #[test]
    fn hidden_parts_name_their_view() {
        assert_eq!(
            hidden_part_of("__category_prices_1"),
            Some("category_prices")
        );
        assert_eq!(hidden_part_of("__top_sellers_12"), Some("top_sellers"));
        for not in ["category_prices", "__x_", "___1", "__x_y", "_x_1"] {
            assert_eq!(hidden_part_of(not), None, "{not}");
        }
    }
}
