//! The incremental engine: runs every view over each micro-batch.
//!
//! `Engine::process` takes one decoded batch of one stream and returns what changed in each
//! view. Views run in dependency order; see [`plan`] for how a view's SQL is split into
//! stateless, aggregate and recompute parts, [`aggregate`] for the per-group state, [`keyed`]
//! for keyed tables and [`result`] for the changelog.
//!
//! Watermarks: per stream, the highest event time seen minus the stream's delay. An event
//! behind its stream's watermark when it arrives is *late*: it is counted, returned to the
//! caller (which writes it to the dead-letter file), and left out of windowed views, whose
//! windows may already be final. Non-windowed views still count it. A window closes when the
//! watermark passes its end: append-mode views emit its row then; every view drops its state.

pub mod aggregate;
mod derived;
pub mod functions;
mod join;
mod key_index;
pub mod keyed;
pub mod live;
pub mod lookup;
mod plan;
mod rank;
pub mod result;
pub mod state;
pub mod topk;
pub mod view_file;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::kernels::cmp::gt_eq;
use arrow::compute::{and, cast, concat_batches, filter_record_batch, not};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::prelude::SessionConfig;

use crate::error::{Error, Result};
use crate::schema::Streams;
use aggregate::{GroupState, WindowSpec};
use derived::Derived;
use keyed::{KeyedTable, SharedTable};
use live::{LiveData, LiveTable};
use rank::Rank;
use result::{Changes, SlotHint, ViewResult};
pub use view_file::{OutputMode, ViewDef};

/// A table a view reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    /// An append-only event stream (index into `Streams`).
    Stream(usize),
    /// A keyed table (index into `Streams`).
    Table(usize),
    /// Another view (index into the engine's views).
    View(usize),
}

/// What sinks and the console need to know about a view.
#[derive(Debug, Clone)]
pub struct ViewInfo {
    pub name: String,
    /// Hidden views are internal halves of a split view; they never reach a sink.
    pub hidden: bool,
    pub schema: SchemaRef,
    /// Columns that identify a row (the sink's document id). Empty: the view has one row.
    pub key_cols: Vec<usize>,
    pub mode: OutputMode,
    pub windowed: bool,
    pub index: String,
    pub text_fields: Vec<String>,
    pub description: String,
    pub path: PathBuf,
    pub sql: String,
    /// Whether the view reads an event stream (directly or through the views it reads): added
    /// while running, it sees that stream's events from then on. Otherwise it is computed
    /// from the current rows of the tables and views it reads.
    pub reads_streams: bool,
    /// The view's ORDER BY, as output columns (a ranked view's `ORDER BY … LIMIT n`), for the
    /// console to show its rows in that order; empty when the view has none, or when an
    /// ordering expression is not one of its output columns.
    pub order: Vec<OrderCol>,
}

/// How a ranked view has run so far (see [`Engine::rank_runs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankRuns {
    /// Runs of its plan.
    pub runs: u64,
    /// Of them, runs over every key.
    pub full: u64,
    /// Of those, runs of the view's own plan, keeping only the rows it shows.
    pub narrow: u64,
    /// Changed keys set aside without a run, their rows sorting after the ranking.
    pub set_aside: u64,
}

/// One column of a view's ORDER BY (see [`ViewInfo::order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderCol {
    /// Index of the output column.
    pub col: usize,
    pub descending: bool,
    pub nulls_first: bool,
}

impl ViewInfo {
    fn new(
        def: &ViewDef,
        name: &str,
        hidden: bool,
        schema: SchemaRef,
        key_cols: Vec<usize>,
        mode: OutputMode,
        windowed: bool,
    ) -> Self {
        ViewInfo {
            name: name.to_string(),
            hidden,
            schema,
            key_cols,
            mode,
            windowed,
            index: def.index_name(),
            text_fields: def.text_fields.clone(),
            description: def.description.clone(),
            path: def.path.clone(),
            sql: def.sql.clone(),
            reads_streams: false,
            order: Vec::new(),
        }
    }
    /// Names of the key columns.
    pub fn key_names(&self) -> Vec<&str> {
        self.key_cols
            .iter()
            .map(|&i| self.schema.field(i).name().as_str())
            .collect()
    }
}

/// Where an incremental view's rows come from: one event stream's micro-batch, the rows an
/// interval join (a hidden view) produced from it, or the changelog of a keyed table or of
/// another view (rows added, and rows replaced or removed, which are taken back out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feed {
    Stream(usize),
    Join(usize),
    Changes(Input),
}

/// What a keyed table or a view changed in one round, for the views over its changelog.
#[derive(Debug, Default)]
struct Delta {
    added: Vec<RecordBatch>,
    removed: Vec<RecordBatch>,
}

/// A row-local step above a GROUP BY.
pub(crate) enum Step {
    Filter(Arc<dyn PhysicalExpr>),
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
}

pub(crate) struct AggregateView {
    feed: Feed,
    partial: Arc<dyn ExecutionPlan>,
    groups: GroupState,
    chain: Vec<Step>,
    window: Option<WindowSpec>,
    /// The output carries the GROUP BY columns at its end (its SELECT dropped some).
    carry_keys: bool,
    /// Over a changelog: which aggregate counts every row (a group at zero is gone).
    count_star: Option<usize>,
    /// Over a changelog with min or max: the plan computing each input row's group columns
    /// and min/max arguments, whose values the groups keep.
    raw: Option<Arc<dyn ExecutionPlan>>,
    /// Restored from a checkpoint, which holds no kept values: rebuild before the next round.
    stale: bool,
    /// The view's key columns are its GROUP BY columns: one row per group.
    one_row_per_group: bool,
    /// Set while the view's rows are derived from its groups instead of stored (then the
    /// view's `result` is `None`): it has one row per group, a stream feeds it, and no other
    /// view reads it.
    derived: Option<Derived>,
    /// Groups merged into since the view last emitted, while rounds are absorbed
    /// ([`Engine::absorb_round`]).
    pending: Pending,
    /// A view without windows over events: its input rows kept while rounds are absorbed.
    buffered: Option<Buffered>,
}

/// Input rows of a view, kept over absorbed rounds and aggregated in one run when the view
/// emits (or once [`Buffered::ROWS`] are kept). DataFusion's partial aggregate then makes one
/// partial row per group over all those rounds instead of one per group per round, so a
/// group touched in many rounds is merged into the view's state once, not once per round.
/// The rows are taken after the view's lookups and filters, when their round comes, so a
/// lookup reads the table as it was then.
pub(crate) struct Buffered {
    /// The partial aggregate's input: scan, lookups, filters, projections.
    input: Arc<dyn ExecutionPlan>,
    /// The partial aggregate over `rows`.
    over: Arc<dyn ExecutionPlan>,
    /// What `over` scans.
    data: live::LiveData,
    rows: Vec<RecordBatch>,
    len: usize,
}

impl Buffered {
    /// Kept rows aggregate at once past this many (memory stays bounded however long an
    /// emit takes to come; the partial aggregate's hash table stays small).
    const ROWS: usize = 1 << 17;

    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        over: Arc<dyn ExecutionPlan>,
        data: live::LiveData,
    ) -> Self {
        Buffered {
            input,
            over,
            data,
            rows: Vec::new(),
            len: 0,
        }
    }

    fn push(&mut self, batches: Vec<RecordBatch>) {
        for b in batches {
            if b.num_rows() > 0 {
                self.len += b.num_rows();
                self.rows.push(b);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn size_bytes(&self) -> usize {
        self.rows.iter().map(|b| b.get_array_memory_size()).sum()
    }
}

/// The groups a view touched since it last emitted, each once, in the order first touched.
#[derive(Default)]
pub(crate) struct Pending {
    slots: Vec<usize>,
    marked: Vec<bool>,
}

impl Pending {
    fn add(&mut self, touched: &[usize]) {
        for &s in touched {
            if s >= self.marked.len() {
                self.marked.resize(s + 1, false);
            }
            if !self.marked[s] {
                self.marked[s] = true;
                self.slots.push(s);
            }
        }
    }

    fn take(&mut self) -> Vec<usize> {
        for &s in &self.slots {
            self.marked[s] = false;
        }
        std::mem::take(&mut self.slots)
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl AggregateView {
    /// Whether the view holds touched groups or kept rows not emitted yet.
    fn unemitted(&self) -> bool {
        !self.pending.is_empty() || self.buffered.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// The view's rows: every live group's values through the view's HAVING and SELECT.
    fn derived_rows(&mut self, info: &ViewInfo) -> Result<RecordBatch> {
        let slots = self.groups.live_slots();
        let (rows, mask) = self.evaluated(&slots, info)?;
        Ok(filter_record_batch(&rows, &mask)?)
    }

    /// The given groups' values through the view's SELECT, and which pass its HAVING.
    fn evaluated(
        &mut self,
        slots: &[usize],
        info: &ViewInfo,
    ) -> Result<(RecordBatch, BooleanArray)> {
        let values = self.groups.evaluate(slots)?;
        run_chain(
            &self.chain,
            values,
            &info.schema,
            self.carry_keys.then_some(self.groups.num_group_cols()),
        )
    }

    /// For a view whose rows are derived: records which groups have a row in the view, and
    /// its digest, from their values now (a no-op for a view whose rows are stored).
    fn settle_derived(&mut self, info: &ViewInfo) -> Result<()> {
        if self.derived.is_none() {
            return Ok(());
        }
        let slots = self.groups.live_slots();
        let (rows, mask) = self.evaluated(&slots, info)?;
        if let Some(d) = &self.derived {
            d.settle(&mut self.groups, &slots, &rows, &mask)?;
        }
        Ok(())
    }
}

pub(crate) enum ViewKind {
    Stateless {
        feed: Feed,
        plan: Arc<dyn ExecutionPlan>,
    },
    Aggregate(Box<AggregateView>),
    /// A join of two event streams bounded in event time; its rows feed the views above it.
    IntervalJoin(Box<join::IntervalJoin>),
    Recompute {
        plan: Arc<dyn ExecutionPlan>,
        /// Set when each output row shares its key with the input rows it is made of: after
        /// the first run, only the keys the inputs changed are recomputed.
        aligned: Option<Aligned>,
    },
}

/// A recomputed view whose rows each belong to one key of every table and view it reads.
pub(crate) struct Aligned {
    /// Each table or view read, with the column of its own schema that holds its key.
    keys: Vec<(Input, usize)>,
    /// Whether the result was computed in full once; after that, key by key.
    built: bool,
    /// Set for `ORDER BY … LIMIT n` over such rows.
    rank: Option<Box<Rank>>,
}

pub(crate) struct CompiledView {
    info: Arc<ViewInfo>,
    kind: ViewKind,
    inputs: Vec<Input>,
    result: Option<ViewResult>,
    live: LiveTable,
    /// Whether another view scans this one (then its live table is kept current).
    read_by_views: bool,
    /// Latest rows of an append-only view, for the console and the REPL.
    recent: VecDeque<RecordBatch>,
    /// Time spent updating this view (including its result and changelog).
    busy: Duration,
}

impl CompiledView {
    /// The keyed table or view whose changelog feeds this view, if one does.
    fn changelog_input(&self) -> Option<Input> {
        match &self.kind {
            ViewKind::Aggregate(a) => match a.feed {
                Feed::Changes(input) => Some(input),
                _ => None,
            },
            _ => None,
        }
    }
    /// Whether an event stream feeds this view directly (or an interval join's rows do).
    fn fed_by_stream(&self) -> bool {
        match &self.kind {
            ViewKind::Stateless { .. } | ViewKind::IntervalJoin(_) => true,
            ViewKind::Aggregate(_) => self.changelog_input().is_none(),
            ViewKind::Recompute { .. } => false,
        }
    }

    /// Rows of state: aggregate groups, or rows an interval join retains.
    fn state_rows(&self) -> usize {
        match &self.kind {
            ViewKind::Aggregate(a) => a.groups.len(),
            ViewKind::IntervalJoin(j) => j.retained_rows(),
            _ => 0,
        }
    }
    fn state_bytes(&self) -> usize {
        match &self.kind {
            ViewKind::Aggregate(a) => {
                a.groups.size_bytes() + a.buffered.as_ref().map_or(0, Buffered::size_bytes)
            }
            ViewKind::IntervalJoin(j) => j.retained_bytes(),
            _ => 0,
        }
    }
    /// The view's current rows, stored or derived from its groups (`None`: neither, as for an
    /// append-only view without groups).
    fn current_rows(&mut self) -> Result<Option<RecordBatch>> {
        if let Some(r) = self.result.as_mut() {
            return Ok(Some(r.snapshot()?));
        }
        match &mut self.kind {
            ViewKind::Aggregate(a) if a.derived.is_some() => Ok(Some(a.derived_rows(&self.info)?)),
            _ => Ok(None),
        }
    }

    /// Number of rows in the view's result.
    fn result_rows(&self) -> usize {
        if let Some(r) = &self.result {
            return r.len();
        }
        match &self.kind {
            ViewKind::Aggregate(a) if a.derived.is_some() => match self.info.mode {
                OutputMode::Update => a.groups.shown_count(),
                OutputMode::Append => a.groups.len(),
            },
            _ => 0,
        }
    }

    /// Derives the view's rows from its groups (`derive`) or stores them, whichever is asked
    /// and possible; switching builds the new form from the groups as they are.
    fn set_derived(&mut self, derive: bool) -> Result<()> {
        let ViewKind::Aggregate(a) = &mut self.kind else {
            return Ok(());
        };
        let derive = derive && a.one_row_per_group && !matches!(a.feed, Feed::Changes(_));
        match (derive, a.derived.is_some()) {
            (true, false) => {
                a.derived = Some(Derived::new(&self.info.schema)?);
                a.settle_derived(&self.info)?;
                self.result = None;
            }
            (false, true) => {
                let rows = a.derived_rows(&self.info)?;
                let mut r = ViewResult::new(self.info.schema.clone(), self.info.key_cols.clone())?;
                r.upsert(&rows)?;
                self.result = Some(r);
                a.derived = None;
            }
            _ => {}
        }
        Ok(())
    }

    fn new(info: ViewInfo, kind: ViewKind, inputs: Vec<Input>, result: Option<ViewResult>) -> Self {
        let live = LiveTable::new(info.schema.clone());
        CompiledView {
            info: Arc::new(info),
            kind,
            inputs,
            result,
            live,
            read_by_views: false,
            recent: VecDeque::new(),
            busy: Duration::ZERO,
        }
    }
}

/// What one view changed in one step.
#[derive(Debug, Clone)]
pub struct ViewOutput {
    pub view: Arc<ViewInfo>,
    pub changes: Changes,
}

/// Everything one `process` call produced.
#[derive(Debug, Default)]
pub struct StepOutput {
    pub outputs: Vec<ViewOutput>,
    /// Late events (stream index, rows), to be written to the dead-letter file.
    pub late: Vec<(usize, RecordBatch)>,
}

impl StepOutput {
    /// View rows changed: the upserts and deletes the sinks get.
    pub fn rows_changed(&self) -> usize {
        self.outputs
            .iter()
            .map(|o| o.changes.num_upserts() + o.changes.num_deletes())
            .sum()
    }
}

/// Per-stream counters.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    pub events: u64,
    pub late: u64,
    pub batches: u64,
    /// Time spent applying this stream's rows to its keyed table (tables only).
    pub table_busy: Duration,
}

/// Size of one view's state, for status displays.
#[derive(Debug, Clone)]
pub struct ViewStats {
    pub name: String,
    pub rows: usize,
    pub groups: usize,
    pub state_bytes: usize,
    /// Time spent updating the view since start (hidden halves of a split view included).
    pub busy: Duration,
}

/// What a table in an ad-hoc query is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// An event stream's most recent events.
    Stream,
    /// A keyed table's current row per key.
    Table,
    /// A view's current result.
    View,
}

/// A named table's kind, schema and rows, as ad-hoc queries see it.
#[derive(Debug, Clone)]
pub struct NamedTable {
    pub name: String,
    pub kind: TableKind,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// Rows kept per append-only view for display.
const RECENT_ROWS: usize = 1000;

/// The engine: every view, their state, and the tables they read.
pub struct Engine {
    ctx: SessionContext,
    task_ctx: Arc<TaskContext>,
    streams: Streams,
    names: HashMap<String, Input>,
    stream_tables: Vec<LiveTable>,
    keyed: Vec<Option<SharedTable>>,
    views: Vec<CompiledView>,
    /// Highest event time seen per stream.
    max_event_time: Vec<Option<i64>>,
    stats: Vec<StreamStats>,
    /// The most recent events of each event stream, for ad-hoc queries (0: none kept).
    recent_window: usize,
    recent_events: Vec<VecDeque<RecordBatch>>,
    /// Parts of views added while running (the REPL's temporary views): never checkpointed.
    temporary: HashSet<String>,
    /// Tables and views that a view reads as a changelog, and what they changed this round.
    changelog_inputs: HashSet<Input>,
    /// Tables and views whose changed keys a view recomputed key by key reads (their deltas
    /// are recorded too, without the values that view upserts replaced).
    key_inputs: HashSet<Input>,
    deltas: HashMap<Input, Delta>,
    /// Keyed tables that a recomputed view scans in full every round (kept in one chunk).
    scanned_tables: HashSet<usize>,
    /// Whether the engine has taken in events or a checkpoint. A checkpoint is loaded only
    /// into an engine that holds neither: it would add to what is there, not replace it.
    holds_state: bool,
    /// Set while a round is absorbed ([`Engine::absorb_round`]).
    absorbing: bool,
    /// A view aggregates the input rows it keeps over absorbed rounds once it keeps this many
    /// ([`Buffered::ROWS`]; smaller in tests).
    keep_rows: usize,
}

/// A DataFusion session set up for runnel: one partition (runnel parallelises across Kafka
/// partitions and processes, not inside a micro-batch), runnel's functions, spans in errors.
pub fn session() -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(8192)
        .with_information_schema(true);
    let opts = config.options_mut();
    opts.sql_parser.collect_spans = true;
    // Plans are executed many times; dynamic filters are per-execution state.
    opts.optimizer.enable_dynamic_filter_pushdown = false;
    opts.optimizer.enable_join_dynamic_filter_pushdown = false;
    opts.optimizer.enable_topk_dynamic_filter_pushdown = false;
    opts.optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    // A partial aggregate's output has one row per group: the merge into a view's state
    // relies on it. DataFusion would pass rows through unaggregated once a partial aggregate
    // over many rows finds few repeats (rows kept over absorbed rounds, see `Buffered`).
    opts.execution.skip_partial_aggregation_probe_rows_threshold = usize::MAX;
    // count(DISTINCT x) must stay one aggregate with mergeable state, not two GROUP BYs.
    let rules: Vec<_> = datafusion::optimizer::Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        .collect();
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(rules)
        .with_physical_optimizer_rule(Arc::new(topk::RankingTopK))
        .with_physical_optimizer_rule(Arc::new(lookup::LookupJoins))
        .build();
    let ctx = SessionContext::new_with_state(state);
    for f in functions::all() {
        ctx.register_udf(f);
    }
    ctx
}

impl Engine {
    /// Plans every view. Fails on the first invalid view; see [`Engine::check`] for all errors.
    pub async fn new(streams: Streams, defs: &[ViewDef]) -> Result<Self> {
        let mut engine = Self::empty(streams)?;
        let (ordered, mut errors) = order_views(&engine.ctx, defs);
        if !errors.is_empty() {
            return Err(errors.remove(0));
        }
        for def in ordered {
            engine.compile(def).await?;
        }
        engine.mark_readers()?;
        Ok(engine)
    }

    /// Plans every view and returns every problem found (empty: all good).
    pub async fn check(streams: Streams, defs: &[ViewDef]) -> Result<Vec<Error>> {
        let mut engine = Self::empty(streams)?;
        let (ordered, mut errors) = order_views(&engine.ctx, defs);
        for def in ordered {
            if let Err(e) = engine.compile(def).await {
                errors.push(e);
            }
        }
        Ok(errors)
    }

    fn empty(streams: Streams) -> Result<Self> {
        let ctx = session();
        let mut names = HashMap::new();
        let mut stream_tables = Vec::new();
        let mut keyed = Vec::new();
        for (i, s) in streams.streams.iter().enumerate() {
            let table = match s.key() {
                Some(k) => {
                    let key_col = s.arrow.index_of(k)?;
                    let rows: SharedTable = Arc::new(std::sync::RwLock::new(KeyedTable::new(
                        s.arrow.clone(),
                        key_col,
                        s.event_time_index,
                    )?));
                    keyed.push(Some(rows.clone()));
                    names.insert(s.name.clone(), Input::Table(i));
                    LiveTable::keyed(s.arrow.clone(), rows)
                }
                None => {
                    keyed.push(None);
                    names.insert(s.name.clone(), Input::Stream(i));
                    LiveTable::new(s.arrow.clone())
                }
            };
            ctx.register_table(s.name.as_str(), Arc::new(table.clone()))?;
            stream_tables.push(table);
        }
        let n = streams.streams.len();
        Ok(Engine {
            task_ctx: ctx.task_ctx(),
            ctx,
            streams,
            names,
            stream_tables,
            keyed,
            views: Vec::new(),
            max_event_time: vec![None; n],
            stats: vec![StreamStats::default(); n],
            recent_window: 0,
            recent_events: vec![VecDeque::new(); n],
            temporary: HashSet::new(),
            changelog_inputs: HashSet::new(),
            key_inputs: HashSet::new(),
            deltas: HashMap::new(),
            scanned_tables: HashSet::new(),
            holds_state: false,
            absorbing: false,
            keep_rows: Buffered::ROWS,
        })
    }

    fn register(&mut self, view: CompiledView) -> Result<()> {
        let name = view.info.name.clone();
        if self.names.contains_key(&name) {
            return Err(Error::View {
                path: view.info.path.clone(),
                line: 1,
                column: 1,
                message: format!("`{name}` is already a stream or view name"),
            });
        }
        self.ctx
            .register_table(name.as_str(), Arc::new(view.live.clone()))?;
        self.names.insert(name, Input::View(self.views.len()));
        self.views.push(view);
        Ok(())
    }

    fn mark_readers(&mut self) -> Result<()> {
        let mut scanned = HashSet::new();
        self.changelog_inputs.clear();
        self.key_inputs.clear();
        self.scanned_tables.clear();
        for v in &self.views {
            if let ViewKind::Recompute {
                aligned: Some(_), ..
            } = v.kind
            {
                // Reads its inputs' changes, then only their rows with the changed keys.
                self.key_inputs.extend(v.inputs.iter().copied());
                continue;
            }
            if matches!(v.kind, ViewKind::Recompute { .. }) {
                self.scanned_tables
                    .extend(v.inputs.iter().filter_map(|x| match x {
                        Input::Table(t) => Some(*t),
                        _ => None,
                    }));
            }
            match v.changelog_input() {
                Some(input) => {
                    self.changelog_inputs.insert(input);
                }
                None => scanned.extend(v.inputs.iter().copied()),
            }
        }
        // Views come in dependency order: a view reads streams if it is fed by one or reads a
        // view that does.
        for i in 0..self.views.len() {
            let v = &self.views[i];
            let reads = v.fed_by_stream()
                || v.inputs.iter().any(|x| match x {
                    Input::Stream(_) => true,
                    Input::View(j) => *j < i && self.views[*j].info.reads_streams,
                    Input::Table(_) => false,
                });
            if reads != v.info.reads_streams {
                Arc::make_mut(&mut self.views[i].info).reads_streams = reads;
            }
        }
        for (t, table) in self.keyed.iter().enumerate() {
            if let Some(table) = table {
                let mut table = keyed::write(table);
                table.set_scanned(self.scanned_tables.contains(&t))?;
                table.set_delta_columns(self.delta_columns(t));
            }
        }
        for (i, v) in self.views.iter_mut().enumerate() {
            let read = [&scanned, &self.changelog_inputs, &self.key_inputs]
                .iter()
                .any(|set| set.contains(&Input::View(i)));
            v.set_derived(!read)?;
            let was = v.read_by_views;
            v.read_by_views = scanned.contains(&Input::View(i));
            // A view that only fed changelogs so far has no current live table yet.
            if v.read_by_views && !was {
                if let Some(r) = v.result.as_mut() {
                    v.live.data().set(vec![r.snapshot()?]);
                }
            }
            if self.changelog_inputs.contains(&Input::View(i)) {
                if let Some(r) = v.result.as_mut() {
                    r.track_replaced();
                }
            }
        }
        Ok(())
    }

    /// The columns of keyed table `t`'s replaced rows that some view reads (`None`: all):
    /// those the plans of the views over its changes scan, and the key column of the views
    /// recomputed key by key.
    fn delta_columns(&self, t: usize) -> Option<Vec<usize>> {
        let input = Input::Table(t);
        let data = self.stream_tables[t].data();
        let mut read = Some(BTreeSet::new());
        for v in &self.views {
            match &v.kind {
                ViewKind::Aggregate(a) if matches!(a.feed, Feed::Changes(x) if x == input) => {
                    live::columns_read(&a.partial, data, &mut read);
                    if let Some(raw) = &a.raw {
                        live::columns_read(raw, data, &mut read);
                    }
                }
                ViewKind::Recompute {
                    aligned: Some(aligned),
                    ..
                } => {
                    for (x, col) in &aligned.keys {
                        if let (true, Some(read)) = (*x == input, read.as_mut()) {
                            read.insert(*col);
                        }
                    }
                }
                _ => {}
            }
        }
        read.map(|r| r.into_iter().collect())
    }

    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// Views added while running (the REPL's temporary views, hidden parts included): they
    /// never reach a sink and are never checkpointed.
    pub fn temporary(&self) -> &HashSet<String> {
        &self.temporary
    }

    /// Keeps the latest `rows` events of each event stream for [`Engine::tables`] (the REPL's
    /// window over a stream). Zero, the default, keeps none.
    pub fn keep_recent_events(&mut self, rows: usize) {
        self.recent_window = rows;
    }

    /// Adds a view while running. It sees events from now on; a view over tables and views
    /// is computed at once.
    pub async fn add_view(&mut self, def: &ViewDef) -> Result<Arc<ViewInfo>> {
        let before = self.views.len();
        if let Err(e) = self.compile(def).await {
            // Drop whatever hidden parts were registered before the failure.
            for v in self.views.drain(before..) {
                self.names.remove(&v.info.name);
                let _ = self.ctx.deregister_table(v.info.name.as_str());
            }
            return Err(e);
        }
        self.mark_readers()?;
        for v in &self.views[before..] {
            self.temporary.insert(v.info.name.clone());
        }

        let mut changed = HashSet::new();
        let mut out = StepOutput::default();
        for i in before..self.views.len() {
            if self.over_tables(i) {
                let changes = self.recompute(i).await?;
                self.publish(i, changes, &mut changed, &mut out)?;
            }
        }
        self.deltas.clear();
        Ok(self.views[self.views.len() - 1].info.clone())
    }

    /// Recomputes the named views over tables and views now (views rebuilt with no input to
    /// replay).
    pub async fn refresh(&mut self, names: &HashSet<String>) -> Result<StepOutput> {
        let mut changed = HashSet::new();
        let mut out = StepOutput::default();
        for i in 0..self.views.len() {
            if names.contains(&self.views[i].info.name) && self.over_tables(i) {
                let changes = self.recompute(i).await?;
                self.publish(i, changes, &mut changed, &mut out)?;
            }
        }
        self.deltas.clear();
        Ok(out)
    }

    /// For a view showing the first rows of an order: how its plan has run so far.
    pub fn rank_runs(&self, view: &str) -> Option<RankRuns> {
        self.views
            .iter()
            .find(|v| v.info.name == view)
            .and_then(|v| match &v.kind {
                ViewKind::Recompute {
                    aligned: Some(Aligned { rank: Some(r), .. }),
                    ..
                } => Some(RankRuns {
                    runs: r.runs,
                    full: r.full_runs,
                    narrow: r.narrow_runs,
                    set_aside: r.set_aside,
                }),
                _ => None,
            })
    }

    /// How a view runs: its kind and DataFusion's physical plan for each part.
    pub fn plan_text(&self, view: &str) -> Option<String> {
        use datafusion::physical_plan::displayable;
        let parts: Vec<&CompiledView> = self
            .views
            .iter()
            .filter(|v| {
                v.info.name == view
                    || (v.info.hidden && v.info.name.starts_with(&format!("__{view}_")))
            })
            .collect();
        if parts.is_empty() {
            return None;
        }
        let mut out = String::new();
        for v in parts {
            let (what, plan) = match &v.kind {
                ViewKind::Stateless { feed, plan } => (
                    format!(
                        "stateless over {}: runs on each batch",
                        self.feed_name(*feed)
                    ),
                    plan,
                ),
                ViewKind::IntervalJoin(j) => (
                    format!(
                        "interval join of stream {} and stream {} ({} <= right time - left time <= {} ms): \
                         each side's new rows probe the other side's retained rows by key ({} rows retained); \
                         left side, then right side:\n{}",
                        self.streams.streams[j.left.stream].name,
                        self.streams.streams[j.right.stream].name,
                        j.lo.ms,
                        j.hi.ms,
                        j.retained_rows(),
                        displayable(j.left.plan.as_ref()).indent(true)
                    ),
                    &j.right.plan,
                ),
                ViewKind::Aggregate(a) if matches!(a.feed, Feed::Changes(_)) => (
                    format!(
                        "incremental aggregate over {}: DataFusion's partial aggregate over the \
                         rows added and the rows replaced or removed each round, added to and \
                         taken out of per-group state ({} groups)",
                        self.feed_name(a.feed),
                        a.groups.len()
                    ),
                    &a.partial,
                ),
                ViewKind::Aggregate(a) => (
                    format!(
                        "incremental aggregate over {}{}: DataFusion's partial aggregate per \
                         batch, merged into per-group state ({} groups){}",
                        self.feed_name(a.feed),
                        if a.window.is_some() { ", windowed" } else { "" },
                        a.groups.len(),
                        if a.derived.is_some() {
                            "; its rows are derived from the groups (no view reads it)"
                        } else {
                            ""
                        }
                    ),
                    &a.partial,
                ),
                ViewKind::Recompute {
                    plan,
                    aligned: Some(Aligned { rank: Some(r), .. }),
                } => (
                    format!(
                        "the first {} rows, recomputed over the keys its inputs changed and the {} keys ranked first last time{} (key: {})",
                        r.shown,
                        plan::ranking_width(r.shown),
                        match &r.order {
                            Some(o) => format!(
                                "; a changed key whose row sorts after the last of those is set aside, where it sorts read from {}",
                                o.reads
                                    .iter()
                                    .map(|(input, _)| self.input_name(*input))
                                    .collect::<Vec<_>>()
                                    .join(" and ")
                            ),
                            None => String::new(),
                        },
                        v.info.key_names().join(", ")
                    ),
                    plan,
                ),
                ViewKind::Recompute {
                    plan,
                    aligned: Some(_),
                } => (
                    format!(
                        "recomputed for the keys its input tables and views changed (key: {})",
                        v.info.key_names().join(", ")
                    ),
                    plan,
                ),
                ViewKind::Recompute { plan, .. } => (
                    "recomputed when an input table or view changes".to_string(),
                    plan,
                ),
            };
            out.push_str(&format!(
                "{}: {what}\n{}",
                v.info.name,
                displayable(plan.as_ref()).indent(true)
            ));
        }
        Some(out)
    }

    /// Every stream, table and view as it is now, for ad-hoc queries: views' current rows,
    /// keyed tables' current rows, and event streams' most recent events.
    pub fn tables(&mut self) -> Result<Vec<NamedTable>> {
        let mut out = Vec::new();
        for (i, s) in self.streams.streams.iter().enumerate() {
            let (kind, batches) = match &self.keyed[i] {
                Some(k) => (TableKind::Table, vec![keyed::read(k).rows()?]),
                None => (
                    TableKind::Stream,
                    self.recent_events[i].iter().cloned().collect(),
                ),
            };
            out.push(NamedTable {
                name: s.name.clone(),
                kind,
                schema: s.arrow.clone(),
                batches,
            });
        }
        let names: Vec<String> = self.views().map(|v| v.name.clone()).collect();
        for name in names {
            if let Some(b) = self.snapshot(&name)? {
                out.push(NamedTable {
                    name,
                    kind: TableKind::View,
                    schema: b.schema(),
                    batches: vec![b],
                });
            }
        }
        Ok(out)
    }
    /// The DataFusion session holding every stream, table and view (for ad-hoc queries).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }
    /// The user-visible views, in dependency order.
    pub fn views(&self) -> impl Iterator<Item = &Arc<ViewInfo>> {
        self.views
            .iter()
            .filter(|v| !v.info.hidden)
            .map(|v| &v.info)
    }
    pub fn stream_stats(&self) -> &[StreamStats] {
        &self.stats
    }
    /// The watermark of a stream: highest event time seen minus its delay.
    pub fn watermark(&self, stream: usize) -> Option<i64> {
        let delay = self.streams.streams[stream].watermark_delay.as_millis() as i64;
        self.max_event_time[stream].map(|t| t - delay)
    }

    /// Current result of a view (its live rows, or its latest rows if append-only).
    pub fn snapshot(&mut self, view: &str) -> Result<Option<RecordBatch>> {
        let Some(Input::View(i)) = self.names.get(view).copied() else {
            return Ok(None);
        };
        let v = &mut self.views[i];
        match v.current_rows()? {
            Some(rows) => Ok(Some(rows)),
            None => {
                let batches: Vec<&RecordBatch> = v.recent.iter().collect();
                Ok(Some(concat_batches(&v.info.schema, batches)?))
            }
        }
    }

    /// Current rows of a keyed table.
    pub fn table_rows(&self, stream: usize) -> Result<Option<RecordBatch>> {
        match self.keyed.get(stream) {
            Some(Some(k)) => Ok(Some(keyed::read(k).rows()?)),
            _ => Ok(None),
        }
    }

    /// State sizes per user-visible view.
    pub fn view_stats(&self) -> Vec<ViewStats> {
        self.views
            .iter()
            .filter(|v| !v.info.hidden)
            .map(|v| ViewStats {
                name: v.info.name.clone(),
                rows: v.result_rows(),
                groups: self.parts_of(v).map(|h| h.state_rows()).sum(),
                state_bytes: self.parts_of(v).map(|h| h.state_bytes()).sum(),
                busy: self.parts_of(v).map(|h| h.busy).sum(),
            })
            .collect()
    }

    /// A view and the hidden parts planned from the same file.
    fn parts_of<'a>(&'a self, v: &'a CompiledView) -> impl Iterator<Item = &'a CompiledView> {
        self.views
            .iter()
            .filter(move |h| h.info.path == v.info.path)
    }

    fn feed_name(&self, feed: Feed) -> String {
        match feed {
            Feed::Stream(s) => format!("stream {}", self.streams.streams[s].name),
            Feed::Join(j) => format!("the rows of interval join {}", self.views[j].info.name),
            Feed::Changes(Input::View(v)) => {
                format!("the changes of view {}", self.views[v].info.name)
            }
            Feed::Changes(Input::Table(t) | Input::Stream(t)) => {
                format!("the changes of table {}", self.streams.streams[t].name)
            }
        }
    }

    /// The name of a table or view read.
    fn input_name(&self, input: Input) -> &str {
        match input {
            Input::View(v) => &self.views[v].info.name,
            Input::Table(t) | Input::Stream(t) => &self.streams.streams[t].name,
        }
    }

    async fn execute(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<RecordBatch>> {
        let plan = reset_plan_states(plan.clone())?;
        Ok(datafusion::physical_plan::collect(plan, self.task_ctx.clone()).await?)
    }

    /// Runs one decoded micro-batch of one stream through every view.
    pub async fn process(&mut self, stream: usize, batch: RecordBatch) -> Result<StepOutput> {
        self.process_round(vec![(stream, batch)]).await
    }

    /// Runs one round of micro-batches (at most one per stream, as a source delivers them):
    /// each batch through the views that read its stream, then every view over tables and
    /// views whose inputs changed, once for the whole round.
    pub async fn process_round(
        &mut self,
        batches: Vec<(usize, RecordBatch)>,
    ) -> Result<StepOutput> {
        self.holds_state |= !batches.is_empty();
        let mut out = StepOutput::default();
        let mut changed: HashSet<Input> = HashSet::new();
        if !self.absorbing {
            // Rows kept by absorbed rounds go into the groups before this round's, so that
            // the rows this round emits count them (the groups stay pending for `emit`).
            self.aggregate_all_kept().await?;
        }
        self.rebuild_stale(&mut changed, &mut out).await?;
        for (stream, batch) in batches {
            self.ingest(stream, batch, &mut changed, &mut out).await?;
        }
        self.propagate(false, changed, &mut out).await?;
        Ok(out)
    }

    /// [`Engine::process_round`], except that the views fed by events (those without windows)
    /// keep the groups the round touched instead of evaluating and emitting their rows:
    /// [`Engine::emit`] emits each touched group once, however many rounds touched it since.
    /// The pipeline absorbs rounds and emits when it flushes its sinks, which keep only the
    /// latest row per key until then anyway; so a group's row is computed once per flush,
    /// not once per round. Until `emit`, the views that read these views see their rows as
    /// of the last emit.
    pub async fn absorb_round(&mut self, batches: Vec<(usize, RecordBatch)>) -> Result<StepOutput> {
        self.absorbing = true;
        let out = self.process_round(batches).await;
        self.absorbing = false;
        out
    }

    /// Emits the groups touched in the rounds absorbed since the last emit
    /// ([`Engine::absorb_round`]) and brings the views that read them up to date.
    pub async fn emit(&mut self) -> Result<StepOutput> {
        let mut out = StepOutput::default();
        if self.has_pending() {
            self.propagate(true, HashSet::new(), &mut out).await?;
        }
        Ok(out)
    }

    /// Runs, in view order, each view over tables and views whose inputs `changed` and each
    /// view over a changelog with changes, publishing what they change (which their readers,
    /// later in the order, see); with `pending`, also emits each view's kept groups
    /// ([`Engine::emit`]) as its turn comes.
    async fn propagate(
        &mut self,
        pending: bool,
        mut changed: HashSet<Input>,
        out: &mut StepOutput,
    ) -> Result<()> {
        for i in 0..self.views.len() {
            let t = Instant::now();
            if pending {
                self.aggregate_kept(i).await?;
            }
            let kept = match &mut self.views[i].kind {
                ViewKind::Aggregate(a) if pending => a.pending.take(),
                _ => Vec::new(),
            };
            let changes = match &self.views[i].kind {
                ViewKind::Aggregate(_) if !kept.is_empty() => {
                    (self.emit_touched(i, kept, None, false)?, false)
                }
                ViewKind::Recompute { .. }
                    if self.views[i].inputs.iter().any(|x| changed.contains(x)) =>
                {
                    self.step_recompute(i).await?
                }
                ViewKind::Aggregate(_) if self.has_delta(i) => self.step_changes(i).await?,
                _ => continue,
            };
            self.views[i].busy += t.elapsed();
            self.publish(i, changes, &mut changed, out)?;
        }
        self.deltas.clear();
        Ok(())
    }

    /// Whether some view holds touched groups not emitted yet ([`Engine::absorb_round`]).
    pub fn has_pending(&self) -> bool {
        self.views
            .iter()
            .any(|v| matches!(&v.kind, ViewKind::Aggregate(a) if a.unemitted()))
    }

    /// Input rows the views keep over absorbed rounds, not aggregated yet.
    pub fn kept_rows(&self) -> usize {
        self.views
            .iter()
            .map(|v| match &v.kind {
                ViewKind::Aggregate(a) => a.buffered.as_ref().map_or(0, |b| b.len),
                _ => 0,
            })
            .sum()
    }

    /// Whether a view is computed from tables and views only (not fed by a stream).
    fn over_tables(&self, i: usize) -> bool {
        !self.views[i].fed_by_stream()
    }

    /// Whether the changelog a view reads has changes this round.
    fn has_delta(&self, i: usize) -> bool {
        self.views[i]
            .changelog_input()
            .is_some_and(|x| self.deltas.contains_key(&x))
    }

    /// Notes what a table or view changed, if a view reads its changelog.
    fn record_delta(
        &mut self,
        input: Input,
        added: Option<RecordBatch>,
        removed: Vec<RecordBatch>,
    ) {
        if !self.changelog_inputs.contains(&input) && !self.key_inputs.contains(&input) {
            return;
        }
        let d = self.deltas.entry(input).or_default();
        d.added.extend(added.filter(|b| b.num_rows() > 0));
        d.removed
            .extend(removed.into_iter().filter(|b| b.num_rows() > 0));
    }

    async fn ingest(
        &mut self,
        stream: usize,
        batch: RecordBatch,
        changed: &mut HashSet<Input>,
        out: &mut StepOutput,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let n = batch.num_rows() as u64;
        self.stats[stream].events += n;
        self.stats[stream].batches += 1;
        let mut on_time = batch.clone();
        if let Some(table) = self.keyed[stream].as_ref() {
            let t = Instant::now();
            let mut table = keyed::write(table);
            let delta = table.upsert(&batch)?;
            self.stats[stream].table_busy += t.elapsed();
            drop(table);
            if let Some(d) = delta {
                changed.insert(Input::Table(stream));
                self.record_delta(Input::Table(stream), Some(d.added), vec![d.removed]);
            }
        } else {
            let ts_col = self.streams.streams[stream].event_time_index;
            let ts = batch
                .column(ts_col)
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            if let Some(wm) = self.watermark(stream) {
                let mask = null_as_false(&gt_eq(ts, &TimestampMillisecondArray::new_scalar(wm))?);
                if mask.true_count() < mask.len() {
                    let late = filter_record_batch(&batch, &not(&mask)?)?;
                    self.stats[stream].late += late.num_rows() as u64;
                    out.late.push((stream, late));
                    on_time = filter_record_batch(&batch, &mask)?;
                }
            }
            let on_ts = on_time
                .column(ts_col)
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            if let Some(m) = arrow::compute::max(on_ts) {
                let cur = &mut self.max_event_time[stream];
                *cur = Some(cur.map_or(m, |c| c.max(m)));
            }
            if self.recent_window > 0 {
                let recent = &mut self.recent_events[stream];
                recent.push_back(batch.clone());
                let mut rows: usize = recent.iter().map(|b| b.num_rows()).sum();
                while rows > self.recent_window {
                    let Some(front) = recent.pop_front() else {
                        break;
                    };
                    rows -= front.num_rows();
                    if rows < self.recent_window {
                        // Keep the newest part of the oldest batch to fill the window exactly.
                        let keep = self.recent_window - rows;
                        recent.push_front(front.slice(front.num_rows() - keep, keep));
                        break;
                    }
                }
            }
        }
        let watermark = self.watermark(stream).unwrap_or(i64::MIN);
        let stream_batches = (batch, on_time);
        for i in 0..self.views.len() {
            let t = Instant::now();
            let changes = self
                .step_view(i, stream, &stream_batches, watermark)
                .await?;
            self.publish(i, changes, changed, out)?;
            self.views[i].busy += t.elapsed();
        }
        // An event stream's table is empty between its batches; a keyed table's holds its rows.
        self.stream_tables[stream]
            .data()
            .replace(self.keyed[stream].is_none().then(Vec::new));
        for v in &self.views {
            if matches!(v.kind, ViewKind::IntervalJoin(_)) {
                v.live.data().set(Vec::new());
            }
        }
        Ok(())
    }

    /// Rebuilds the views over a changelog restored without their kept min/max values.
    async fn rebuild_stale(
        &mut self,
        changed: &mut HashSet<Input>,
        out: &mut StepOutput,
    ) -> Result<()> {
        for i in 0..self.views.len() {
            let stale = matches!(&self.views[i].kind, ViewKind::Aggregate(a) if a.stale);
            if let (true, Some(input)) = (stale, self.views[i].changelog_input()) {
                let changes = self.rebuild_changes(i, input).await?;
                self.publish(i, changes, changed, out)?;
            }
        }
        Ok(())
    }

    /// End of input: closes every open window and propagates the results.
    pub async fn finish(&mut self) -> Result<StepOutput> {
        let mut out = self.emit().await?;
        let mut changed: HashSet<Input> = HashSet::new();
        self.rebuild_stale(&mut changed, &mut out).await?;
        for i in 0..self.views.len() {
            let changes = match &self.views[i].kind {
                ViewKind::Aggregate(a) if a.window.is_some() => self.close_windows(i, i64::MAX)?,
                ViewKind::Recompute { .. }
                    if self.views[i].inputs.iter().any(|x| changed.contains(x)) =>
                {
                    self.step_recompute(i).await?
                }
                ViewKind::Aggregate(_) if self.has_delta(i) => self.step_changes(i).await?,
                _ => (Changes::none(), false),
            };
            self.publish(i, changes, &mut changed, &mut out)?;
        }
        self.deltas.clear();
        Ok(out)
    }

    fn publish(
        &mut self,
        i: usize,
        (changes, evicted): (Changes, bool),
        changed: &mut HashSet<Input>,
        out: &mut StepOutput,
    ) -> Result<()> {
        if changes.is_empty() && !evicted {
            return Ok(());
        }
        changed.insert(Input::View(i));
        if self.changelog_inputs.contains(&Input::View(i)) {
            let replaced = match self.views[i].result.as_mut() {
                Some(r) => r.take_replaced()?,
                None => None,
            };
            let removed = replaced
                .into_iter()
                .chain(changes.deletes.clone())
                .collect();
            self.record_delta(Input::View(i), changes.upserts.clone(), removed);
        } else if self.key_inputs.contains(&Input::View(i)) {
            // The rows upserts replaced have the upserted keys: no need to keep them.
            let removed = changes.deletes.iter().cloned().collect();
            self.record_delta(Input::View(i), changes.upserts.clone(), removed);
        }
        let v = &mut self.views[i];
        if v.read_by_views {
            if let Some(r) = v.result.as_mut() {
                v.live.data().set(vec![r.snapshot()?]);
            }
        }
        if !v.info.hidden && !changes.is_empty() {
            out.outputs.push(ViewOutput {
                view: v.info.clone(),
                changes,
            });
        }
        Ok(())
    }

    async fn step_view(
        &mut self,
        i: usize,
        stream: usize,
        (full, on_time): &(RecordBatch, RecordBatch),
        watermark: i64,
    ) -> Result<(Changes, bool)> {
        let v = &self.views[i];
        match &v.kind {
            ViewKind::Stateless { feed, plan } if self.fed(*feed, stream) => {
                let plan = plan.clone();
                if let Feed::Stream(_) = feed {
                    self.stream_tables[stream].data().set(vec![full.clone()]);
                }
                let batches = self.execute(&plan).await?;
                let v = &mut self.views[i];
                let rows = rewrap(&v.info.schema, &batches)?;
                if rows.num_rows() == 0 {
                    return Ok((Changes::none(), false));
                }
                v.recent.push_back(rows.clone());
                while v.recent.iter().map(|b| b.num_rows()).sum::<usize>() > RECENT_ROWS
                    && v.recent.len() > 1
                {
                    v.recent.pop_front();
                }
                let upserts = match v.result.as_mut() {
                    Some(r) => r.upsert(&rows)?,
                    None => Some(rows),
                };
                Ok((
                    Changes {
                        upserts,
                        deletes: None,
                    },
                    false,
                ))
            }
            ViewKind::IntervalJoin(j) if j.left.stream == stream || j.right.stream == stream => {
                // Late rows never join: the other side may have let their matches go.
                self.stream_tables[stream].data().set(vec![on_time.clone()]);
                let sides = [
                    (j.left.stream == stream).then(|| j.left.plan.clone()),
                    (j.right.stream == stream).then(|| j.right.plan.clone()),
                ];
                let (ls, rs) = (j.left.stream, j.right.stream);
                let mut new_rows = Vec::with_capacity(2);
                for plan in sides {
                    new_rows.push(match plan {
                        Some(p) if on_time.num_rows() > 0 => {
                            let batches = self.execute(&p).await?;
                            Some(concat_batches(&p.schema(), &batches)?)
                        }
                        _ => None,
                    });
                }
                let (wl, wr) = (self.watermark(ls), self.watermark(rs));
                let v = &mut self.views[i];
                let ViewKind::IntervalJoin(j) = &mut v.kind else {
                    return Ok((Changes::none(), false));
                };
                let right_new = new_rows.pop().flatten();
                let left_new = new_rows.pop().flatten();
                let joined = j.step(left_new, right_new)?;
                j.evict(wl, wr);
                v.live.data().set(joined);
                Ok((Changes::none(), false))
            }
            ViewKind::Aggregate(a) if self.fed(a.feed, stream) => {
                let input = if a.window.is_some() { on_time } else { full };
                if input.num_rows() == 0 {
                    return Ok((Changes::none(), false));
                }
                let partial_plan = a.partial.clone();
                let keep = match &a.buffered {
                    Some(b) if self.absorbing => Some(b.input.clone()),
                    _ => None,
                };
                if let Feed::Stream(_) = a.feed {
                    self.stream_tables[stream].data().set(vec![input.clone()]);
                }
                if let Some(plan) = keep {
                    let rows = self.execute(&plan).await?;
                    let full = match &mut self.views[i].kind {
                        ViewKind::Aggregate(a) => a.buffered.as_mut().is_some_and(|b| {
                            b.push(rows);
                            b.len >= self.keep_rows
                        }),
                        _ => false,
                    };
                    if full {
                        self.aggregate_kept(i).await?;
                    }
                    return Ok((Changes::none(), false));
                }
                let partials = self.execute(&partial_plan).await?;
                let mut changes = self.merge_partials(i, &partials)?;
                let windowed =
                    matches!(&self.views[i].kind, ViewKind::Aggregate(a) if a.window.is_some());
                let mut evicted = false;
                if windowed {
                    let (closed, ev) = self.close_windows(i, watermark)?;
                    evicted = ev;
                    if let Some(u) = closed.upserts {
                        changes.upserts = Some(match changes.upserts.take() {
                            Some(prev) => concat_batches(&prev.schema(), [&prev, &u])?,
                            None => u,
                        });
                    }
                }
                Ok((changes, evicted))
            }
            _ => Ok((Changes::none(), false)),
        }
    }

    /// Whether a view fed by `feed` has new rows from this batch of `stream`.
    fn fed(&self, feed: Feed, stream: usize) -> bool {
        match feed {
            Feed::Stream(s) => s == stream,
            Feed::Join(j) => self.views[j].live.data().num_rows() > 0,
            Feed::Changes(_) => false,
        }
    }

    /// Aggregates the input rows a view kept over absorbed rounds into its groups, which
    /// join the groups it has to emit.
    async fn aggregate_kept(&mut self, i: usize) -> Result<()> {
        let ViewKind::Aggregate(a) = &mut self.views[i].kind else {
            return Ok(());
        };
        let Some(b) = a.buffered.as_mut().filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        b.len = 0;
        b.data.set(std::mem::take(&mut b.rows));
        let (over, data) = (b.over.clone(), b.data.clone());
        let partials = self.execute(&over).await;
        data.set(Vec::new());
        let ViewKind::Aggregate(a) = &mut self.views[i].kind else {
            return Ok(());
        };
        let mut touched = Vec::new();
        for p in &partials? {
            a.groups.merge(p, &mut touched)?;
        }
        a.pending.add(&touched);
        Ok(())
    }

    /// [`Engine::aggregate_kept`] for every view.
    async fn aggregate_all_kept(&mut self) -> Result<()> {
        for i in 0..self.views.len() {
            self.aggregate_kept(i).await?;
        }
        Ok(())
    }

    fn merge_partials(&mut self, i: usize, partials: &[RecordBatch]) -> Result<Changes> {
        let v = &mut self.views[i];
        let ViewKind::Aggregate(a) = &mut v.kind else {
            return Ok(Changes::none());
        };
        let mut touched = Vec::new();
        for p in partials {
            a.groups.merge(p, &mut touched)?;
        }
        // Absorbing, a view without windows keeps the touched groups for `emit`. A windowed
        // view emits now: a window that closes is evicted at once, with its final row.
        if self.absorbing && a.window.is_none() {
            a.pending.add(&touched);
            return Ok(Changes::none());
        }
        // One partial batch: its rows are the touched groups in order, with their group
        // columns already decoded.
        let keys = match partials {
            [p] => Some(p.columns()[..a.groups.num_group_cols()].to_vec()),
            _ => {
                dedup(&mut touched);
                None
            }
        };
        self.emit_touched(i, touched, keys, false)
    }

    /// Evaluates the touched groups and brings the view's result in line with them (with
    /// `replace`, the touched groups are all there are). Over a changelog, groups left with
    /// no rows leave the view and their state is dropped.
    fn emit_touched(
        &mut self,
        i: usize,
        touched: Vec<usize>,
        keys: Option<Vec<ArrayRef>>,
        replace: bool,
    ) -> Result<Changes> {
        let v = &mut self.views[i];
        let ViewKind::Aggregate(a) = &mut v.kind else {
            return Ok(Changes::none());
        };
        if touched.is_empty() && !replace {
            return Ok(Changes::none());
        }
        if a.derived.is_some() && v.info.mode == OutputMode::Append && !replace {
            // Open windows stay visible to the REPL (derived when asked for); sinks get rows
            // only when final: nothing to evaluate now.
            return Ok(Changes::none());
        }
        let values = a.groups.evaluate_keyed(&touched, keys.as_deref())?;
        let (rows, mut mask) = run_chain(
            &a.chain,
            values,
            &v.info.schema,
            a.carry_keys.then_some(a.groups.num_group_cols()),
        )?;
        if let Some(j) = a.count_star {
            let live: BooleanArray = touched
                .iter()
                .map(|&s| Some(a.groups.count(j, s) != 0))
                .collect();
            if live.false_count() > 0 {
                let empty: Vec<usize> = touched
                    .iter()
                    .zip(live.values().iter())
                    .filter_map(|(&s, alive)| (!alive).then_some(s))
                    .collect();
                mask = and(&mask, &live)?;
                a.groups.evict(&empty);
            }
        }
        if let Some(d) = &a.derived {
            if replace {
                return Err(crate::error::Error::Config(
                    "internal: a view fed by a stream rebuilt as if over a changelog".into(),
                ));
            }
            return d.apply(&mut a.groups, &touched, &rows, &mask);
        }
        let Some(result) = v.result.as_mut() else {
            return Ok(Changes::none());
        };
        if replace {
            return result.replace_all(&filter_record_batch(&rows, &mask)?);
        }
        // Each kept group's result slot from last time, if it still holds that group's row.
        let kept: Vec<usize> = touched
            .iter()
            .zip(mask.values().iter())
            .filter_map(|(&g, keep)| keep.then_some(g))
            .collect();
        let mut hints: Vec<SlotHint> = kept.iter().map(|&g| a.groups.result_hint(g)).collect();
        let upserts = result.upsert_hinted(&filter_record_batch(&rows, &mask)?, &mut hints)?;
        for (&g, h) in kept.iter().zip(hints) {
            a.groups.set_result_hint(g, h);
        }
        let deletes = if mask.true_count() < mask.len() {
            result.delete(&filter_record_batch(&rows, &not(&mask)?)?)?
        } else {
            None
        };
        if v.info.mode == OutputMode::Append {
            // Open windows stay visible to the REPL; sinks get rows only when final.
            return Ok(Changes::none());
        }
        Ok(Changes { upserts, deletes })
    }

    /// Finalizes windows ending at or before `watermark`.
    fn close_windows(&mut self, i: usize, watermark: i64) -> Result<(Changes, bool)> {
        let v = &mut self.views[i];
        let ViewKind::Aggregate(a) = &mut v.kind else {
            return Ok((Changes::none(), false));
        };
        let closing = a.groups.closing(watermark);
        if closing.is_empty() {
            return Ok((Changes::none(), false));
        }
        let values = a.groups.evaluate(&closing)?;
        a.groups.evict(&closing);
        let (rows, mask) = run_chain(
            &a.chain,
            values,
            &v.info.schema,
            a.carry_keys.then_some(a.groups.num_group_cols()),
        )?;
        if let Some(r) = v.result.as_mut() {
            r.delete(&rows)?;
        }
        let upserts = if v.info.mode == OutputMode::Append {
            Some(filter_record_batch(&rows, &mask)?)
        } else {
            None
        };
        Ok((
            Changes {
                upserts,
                deletes: None,
            },
            true,
        ))
    }

    /// The live table through which a view's plan scans `input`.
    fn live_of(&self, input: Input) -> LiveData {
        match input {
            Input::View(v) => self.views[v].live.data().clone(),
            Input::Table(t) | Input::Stream(t) => self.stream_tables[t].data().clone(),
        }
    }

    /// Runs a view's partial aggregate over each set of rows in turn, through the live table
    /// of `input` (restored afterwards).
    async fn partials_over(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        input: Input,
        sets: Vec<Vec<RecordBatch>>,
    ) -> Result<Vec<Vec<RecordBatch>>> {
        let live = self.live_of(input);
        let held = live.replace(None);
        let run = async {
            let mut out = Vec::with_capacity(sets.len());
            for rows in sets {
                if rows.is_empty() {
                    out.push(Vec::new());
                    continue;
                }
                live.set(rows);
                out.push(self.execute(plan).await?);
            }
            Ok(out)
        }
        .await;
        live.replace(held);
        run
    }

    /// Runs a changelog view's partial plan (and, for min/max, its raw plan) over each set of
    /// rows and folds the results into its groups: a set flagged `true` is taken back out.
    /// With `fresh`, the groups start empty. Returns the touched groups, min/max refreshed.
    async fn fold_changes(
        &mut self,
        i: usize,
        input: Input,
        sets: Vec<(Vec<RecordBatch>, bool)>,
        fresh: bool,
    ) -> Result<Vec<usize>> {
        let ViewKind::Aggregate(a) = &self.views[i].kind else {
            return Ok(Vec::new());
        };
        let (plan, raw_plan) = (a.partial.clone(), a.raw.clone());
        let (rows, signs): (Vec<_>, Vec<_>) = sets.into_iter().unzip();
        let raws = match &raw_plan {
            Some(r) => self.partials_over(r, input, rows.clone()).await?,
            None => vec![Vec::new(); rows.len()],
        };
        let parts = self.partials_over(&plan, input, rows).await?;
        let ViewKind::Aggregate(a) = &mut self.views[i].kind else {
            return Ok(Vec::new());
        };
        if fresh {
            a.groups.clear();
            a.stale = false;
        }
        let mut touched = Vec::new();
        for ((part, raw), retract) in parts.iter().zip(&raws).zip(signs) {
            for p in part {
                a.groups.merge_signed(p, &mut touched, retract)?;
            }
            for r in raw {
                a.groups.apply_raw(r, retract)?;
            }
        }
        dedup(&mut touched);
        a.groups.refresh(&touched);
        Ok(touched)
    }

    /// A view over a changelog, after a round: the rows its input added go into their groups,
    /// the rows it replaced or removed come back out.
    async fn step_changes(&mut self, i: usize) -> Result<(Changes, bool)> {
        let Some(input) = self.views[i].changelog_input() else {
            return Ok((Changes::none(), false));
        };
        let Some(delta) = self.deltas.get(&input) else {
            return Ok((Changes::none(), false));
        };
        let sets = vec![(delta.added.clone(), false), (delta.removed.clone(), true)];
        let touched = self.fold_changes(i, input, sets, false).await?;
        Ok((self.emit_touched(i, touched, None, false)?, false))
    }

    /// A view over a changelog, built afresh from everything its input holds now.
    async fn rebuild_changes(&mut self, i: usize, input: Input) -> Result<(Changes, bool)> {
        let rows = match input {
            Input::View(v) => match self.views[v].result.as_mut() {
                Some(r) => r.snapshot()?,
                None => return Ok((Changes::none(), false)),
            },
            Input::Table(t) | Input::Stream(t) => match &self.keyed[t] {
                Some(k) => keyed::read(k).rows()?,
                None => return Ok((Changes::none(), false)),
            },
        };
        let touched = self
            .fold_changes(i, input, vec![(vec![rows], false)], true)
            .await?;
        Ok((self.emit_touched(i, touched, None, true)?, false))
    }

    /// Computes a view over tables and views from what they hold now.
    async fn recompute(&mut self, i: usize) -> Result<(Changes, bool)> {
        self.recompute_keeping(i, false).await
    }

    /// [`Engine::recompute`]; a ranked view with `narrow` runs [`Rank::narrow`], keeping only
    /// the rows it shows.
    async fn recompute_keeping(&mut self, i: usize, narrow: bool) -> Result<(Changes, bool)> {
        if let Some(input) = self.views[i].changelog_input() {
            return self.rebuild_changes(i, input).await;
        }
        let ViewKind::Recompute { plan, aligned } = &mut self.views[i].kind else {
            return Ok((Changes::none(), false));
        };
        let inputs: Vec<Input> = aligned.iter().flat_map(|a| &a.keys).map(|k| k.0).collect();
        // How many rows the plan keeps (a ranked view's), and the plan to run.
        let (plan, width) = match aligned.as_mut().and_then(|a| a.rank.as_mut()) {
            Some(rank) if narrow => {
                rank.narrow_runs += 1;
                (rank.narrow.clone(), rank.shown)
            }
            Some(rank) => (plan.clone(), plan::ranking_width(rank.shown)),
            None => (plan.clone(), 0),
        };
        // A view read key by key is not kept as a live table between rounds: show its rows.
        let mut held = Vec::new();
        for input in inputs {
            if let Input::View(v) = input {
                if !self.views[v].read_by_views && !held.iter().any(|(x, _)| *x == v) {
                    let rows = match self.views[v].result.as_mut() {
                        Some(r) => r.snapshot()?,
                        None => continue,
                    };
                    held.push((v, self.views[v].live.data().replace(Some(vec![rows]))));
                }
            }
        }
        let run = self.execute(&plan).await;
        for (v, h) in held {
            self.views[v].live.data().replace(h);
        }
        let batches = run?;
        let v = &mut self.views[i];
        let mut rows = rewrap(&v.info.schema, &batches)?;
        if let ViewKind::Recompute {
            aligned: Some(a), ..
        } = &mut v.kind
        {
            a.built = true;
            if let Some(rank) = a.rank.as_mut() {
                rank.runs += 1;
                rank.full_runs += 1;
                rank.set_ranking(&rows, rows.num_rows())?;
                rank.complete = rows.num_rows() < width;
                rows = rows.slice(0, rank.shown.min(rows.num_rows()));
            }
        }
        let Some(r) = v.result.as_mut() else {
            return Ok((Changes::none(), false));
        };
        Ok((r.replace_all(&rows)?, false))
    }

    /// A recomputed view after a round in which an input changed: in full, or for a view
    /// aligned on its inputs' key, over just the rows of the keys they changed.
    async fn step_recompute(&mut self, i: usize) -> Result<(Changes, bool)> {
        let (plan, keys, ranking) = match &self.views[i].kind {
            ViewKind::Recompute {
                plan,
                aligned: Some(a),
            } if a.built => match &a.rank {
                None => (plan.clone(), a.keys.clone(), None),
                Some(rank) => match &rank.ranking {
                    Some(r) => (plan.clone(), a.keys.clone(), Some(r.clone())),
                    None => return self.recompute(i).await,
                },
            },
            _ => return self.recompute(i).await,
        };
        let Some(result) = self.views[i].result.as_ref() else {
            return Ok((Changes::none(), false));
        };
        let key_type = result
            .schema()
            .field(result.key_cols()[0])
            .data_type()
            .clone();
        // The keys the inputs changed this round (rows added, replaced or removed).
        let mut changed: Vec<ArrayRef> = Vec::new();
        for (input, col) in &keys {
            if let Some(d) = self.deltas.get(input) {
                for b in d.added.iter().chain(&d.removed) {
                    changed.push(cast(b.column(*col), &key_type)?);
                }
            }
        }
        if changed.is_empty() {
            return Ok((Changes::none(), false));
        }
        // A ranked view sets aside the changed keys whose rows now sort after its ranking's
        // last row: they stay outside the ranking (see `rank`). With none left, nothing shown
        // can have changed.
        if let Some((kept, set_aside)) = self.keys_that_may_rank(i, &changed)? {
            if let ViewKind::Recompute {
                aligned: Some(Aligned {
                    rank: Some(rank), ..
                }),
                ..
            } = &mut self.views[i].kind
            {
                rank.set_aside += set_aside as u64;
            }
            if kept.is_empty() {
                return Ok((Changes::none(), false));
            }
            changed = vec![kept];
        }
        let held_rows = keys
            .iter()
            .map(|(input, _)| match *input {
                Input::Table(t) => self.keyed[t].as_ref().map_or(0, |k| keyed::read(k).len()),
                Input::View(v) => self.views[v].result.as_ref().map_or(0, |r| r.len()),
                Input::Stream(_) => 0,
            })
            .max()
            .unwrap_or(0);
        // A ranked view's run over the keys costs more per key (its ranking comes along, and
        // its order is checked afterwards): it goes key by key only when they are few.
        let share = if ranking.is_some() { 4 } else { 2 };
        // A ranked view reads the keys changed and the keys ranked first last time. When there
        // are more than that share of the rows, one run over everything is cheaper than
        // gathering them: counting stops there.
        let mut parts: Vec<&dyn Array> = changed.iter().map(|a| a.as_ref()).collect();
        if let Some(r) = &ranking {
            parts.push(r.as_ref());
        }
        let Some((read, changed_len)) = distinct_keys(&parts, changed.len(), held_rows / share)?
        else {
            return self.recompute_keeping(i, true).await;
        };
        // The changed keys come first in `read`.
        let changed = read.slice(0, changed_len);
        // Each input shows only its rows with those keys while the plan runs.
        let mut held = Vec::new();
        for (input, _) in &keys {
            if held.iter().any(|(x, _, _)| x == input) {
                continue;
            }
            let rows = match *input {
                Input::Table(t) => match &self.keyed[t] {
                    Some(k) => {
                        // Only the columns the plan reads of the table are gathered.
                        let mut cols = Some(BTreeSet::new());
                        live::columns_read(&plan, &self.live_of(*input), &mut cols);
                        let cols: Option<Vec<usize>> = cols.map(|c| c.into_iter().collect());
                        keyed::read(k).rows_for_keys(&read, cols.as_deref())?
                    }
                    None => continue,
                },
                Input::View(v) => match self.views[v].result.as_ref() {
                    Some(r) => r.rows_for_keys(&read)?,
                    None => continue,
                },
                Input::Stream(_) => continue,
            };
            let live = self.live_of(*input);
            let was = live.replace(Some(vec![rows]));
            held.push((*input, live, was));
        }
        let run = self.execute(&plan).await;
        for (_, live, was) in held {
            live.replace(was);
        }
        let batches = run?;
        let v = &mut self.views[i];
        let rows = rewrap(&v.info.schema, &batches)?;
        let ranked = match &mut v.kind {
            ViewKind::Recompute {
                aligned: Some(Aligned {
                    rank: Some(rank), ..
                }),
                ..
            } => Some(rank),
            _ => None,
        };
        let (Some(rank), Some(last)) = (ranked, ranking) else {
            let Some(r) = v.result.as_mut() else {
                return Ok((Changes::none(), false));
            };
            return Ok((r.replace_keys(&changed, &rows)?, false));
        };
        let Some(confirmed) = rank.confirmed(&rows, &last, &changed)? else {
            // Not enough of the run is known to be first among every key.
            return self.recompute(i).await;
        };
        rank.runs += 1;
        rank.complete = rank.complete && rows.num_rows() < plan::ranking_width(rank.shown);
        rank.set_ranking(&rows, confirmed)?;
        let shown = rows.slice(0, rank.shown.min(rows.num_rows()));
        let Some(r) = v.result.as_mut() else {
            return Ok((Changes::none(), false));
        };
        Ok((r.replace_all(&shown)?, false))
    }

    /// For a ranked view that can tell where a key's row sorts from its inputs' rows
    /// ([`rank::InputOrder`]): the changed keys (each once) that may enter its ranking, and
    /// how many were set aside. `None`: every changed key is read.
    fn keys_that_may_rank(
        &self,
        i: usize,
        changed: &[ArrayRef],
    ) -> Result<Option<(ArrayRef, usize)>> {
        let ViewKind::Recompute {
            aligned: Some(Aligned {
                rank: Some(rank), ..
            }),
            ..
        } = &self.views[i].kind
        else {
            return Ok(None);
        };
        let Some(order) = rank.input_order() else {
            return Ok(None);
        };
        let parts: Vec<&dyn Array> = changed.iter().map(|a| a.as_ref()).collect();
        let Some((keys, _)) = distinct_keys(&parts, parts.len(), usize::MAX)? else {
            return Ok(None);
        };
        // Each input's columns the order reads, one row per key (null where it has none).
        let mut cols = Vec::with_capacity(order.schema.fields().len());
        for (input, read) in &order.reads {
            match *input {
                Input::Table(t) => {
                    let Some(k) = &self.keyed[t] else {
                        return Ok(None);
                    };
                    cols.extend(keyed::read(k).columns_for_keys(&keys, read)?);
                }
                Input::View(v) => {
                    let Some(r) = self.views[v].result.as_ref() else {
                        return Ok(None);
                    };
                    cols.extend(r.columns_for_keys(&keys, read)?);
                }
                Input::Stream(_) => return Ok(None),
            }
        }
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(keys.len()));
        let rows = RecordBatch::try_new_with_options(order.schema.clone(), cols, &opts)?;
        let keep = rank.may_rank(&keys, &order.evaluate(rows)?)?;
        let set_aside = keys.len() - keep.len();
        let kept = arrow::compute::take(&keys, &UInt32Array::from(keep), None)?;
        Ok(Some((kept, set_aside)))
    }
}

/// Each key of `parts` (arrays of one type) once, in first-seen order, nulls dropped (a null
/// key matches no row), and how many of them come from the first `leading` parts; `None` as
/// soon as there are more than `limit`, so that counting many keys stops early.
fn distinct_keys(
    parts: &[&dyn Array],
    leading: usize,
    limit: usize,
) -> Result<Option<(ArrayRef, usize)>> {
    let Some(first) = parts.first() else {
        return Err(Error::Config("internal: no keys to count".into()));
    };
    // String keys (the usual ids) are compared as they are; others in row format.
    let strings = first.data_type() == &DataType::Utf8;
    let rows = if strings {
        Vec::new()
    } else {
        let conv = RowConverter::new(vec![SortField::new(first.data_type().clone())])?;
        parts
            .iter()
            .map(|p| conv.convert_columns(&[arrow::array::make_array(p.to_data())]))
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut seen: HashSet<&[u8], ahash::RandomState> =
        HashSet::with_capacity_and_hasher(total.min(limit.saturating_add(1)), Default::default());
    let mut picked: Vec<ArrayRef> = Vec::with_capacity(parts.len());
    let mut from_leading = 0;
    for (p, keys) in parts.iter().enumerate() {
        let text = if strings {
            Some(keys.as_string_opt::<i32>().ok_or_else(|| {
                Error::Config("internal: keys to count are of different types".into())
            })?)
        } else {
            None
        };
        let mut at: Vec<u32> = Vec::new();
        for i in 0..keys.len() {
            if keys.is_null(i) {
                continue;
            }
            let key: &[u8] = match text {
                Some(t) => t.value(i).as_bytes(),
                None => rows[p].row(i).data(),
            };
            if seen.insert(key) {
                if seen.len() > limit {
                    return Ok(None);
                }
                at.push(i as u32);
            }
        }
        if p < leading {
            from_leading += at.len();
        }
        picked.push(arrow::compute::take(*keys, &UInt32Array::from(at), None)?);
    }
    let refs: Vec<&dyn Array> = picked.iter().map(|a| a.as_ref()).collect();
    Ok(Some((arrow::compute::concat(&refs)?, from_leading)))
}

/// Drops repeated group slots, keeping first-touched order.
fn dedup(touched: &mut Vec<usize>) {
    let mut seen = HashSet::with_capacity(touched.len());
    touched.retain(|s| seen.insert(*s));
}

/// Concatenates plan output under the view's schema (same columns, the view's names).
fn rewrap(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let parts = batches
        .iter()
        .map(|b| {
            let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            RecordBatch::try_new_with_options(schema.clone(), b.columns().to_vec(), &opts)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(concat_batches(schema, &parts)?)
}

/// Runs HAVING / projections over evaluated groups. Returns every group's output row and a
/// mask of the rows that pass the filters (the others must leave the view).
fn run_chain(
    steps: &[Step],
    batch: RecordBatch,
    out: &SchemaRef,
    carry_keys: Option<usize>,
) -> Result<(RecordBatch, BooleanArray)> {
    let n = batch.num_rows();
    let keys: Vec<_> = batch.columns()[..carry_keys.unwrap_or(0)].to_vec();
    let mut b = batch;
    let mut mask = BooleanArray::from(vec![true; n]);
    for step in steps {
        match step {
            Step::Filter(e) => {
                let v = e.evaluate(&b)?.into_array(n)?;
                let m = null_as_false(v.as_boolean());
                mask = and(&mask, &m)?;
            }
            Step::Project(exprs, schema) => {
                let cols = exprs
                    .iter()
                    .map(|e| e.evaluate(&b).and_then(|v| v.into_array(n)))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
                b = RecordBatch::try_new_with_options(schema.clone(), cols, &opts)?;
            }
        }
    }
    let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
    let mut cols = b.columns().to_vec();
    cols.extend(keys);
    let b = RecordBatch::try_new_with_options(out.clone(), cols, &opts)?;
    Ok((b, mask))
}

/// Orders views so that every view comes after the views it reads. Views that do not parse,
/// or read each other in a cycle, come back as errors instead.
fn order_views<'a>(ctx: &SessionContext, defs: &'a [ViewDef]) -> (Vec<&'a ViewDef>, Vec<Error>) {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let mut errors = Vec::new();
    let mut refs: Vec<Option<Vec<String>>> = Vec::with_capacity(defs.len());
    for def in defs {
        let parsed = state
            .sql_to_statement(&def.sql, &dialect)
            .and_then(|stmt| state.resolve_table_references(&stmt));
        match parsed {
            Ok(r) => refs.push(Some(r.iter().map(|t| t.table().to_string()).collect())),
            Err(e) => {
                errors.push(plan::view_error(def, &e));
                refs.push(None);
            }
        }
    }
    let deps: Vec<Vec<usize>> = refs
        .iter()
        .map(|r| {
            r.iter()
                .flatten()
                .filter_map(|t| defs.iter().position(|d| &d.name == t))
                .collect()
        })
        .collect();
    let mut done: Vec<bool> = refs.iter().map(|r| r.is_none()).collect();
    let mut order = Vec::with_capacity(defs.len());
    loop {
        let before = order.len();
        for i in 0..defs.len() {
            if !done[i]
                && deps[i]
                    .iter()
                    .all(|&d| (done[d] && refs[d].is_some()) || d == i)
            {
                done[i] = true;
                order.push(&defs[i]);
            }
        }
        if order.len() == before {
            break;
        }
    }
    for i in 0..defs.len() {
        if !done[i] {
            errors.push(Error::View {
                path: defs[i].path.clone(),
                line: 1,
                column: 1,
                message: "this view reads a view that is invalid or reads it back (a cycle)".into(),
            });
        }
    }
    (order, errors)
}

/// A filter mask with NULL read as false.
pub(crate) fn null_as_false(b: &BooleanArray) -> BooleanArray {
    match b.nulls() {
        Some(n) => BooleanArray::new(b.values() & n.inner(), None),
        None => b.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Origin, RawBatch, StreamDecoder};
    use std::path::Path;

    #[test]
    fn distinct_keys_keep_first_seen_order_and_stop_past_the_limit() {
        use arrow::array::{Int64Array, StringArray};
        let a = StringArray::from(vec![Some("p1"), None, Some("p2"), Some("p1")]);
        let b = StringArray::from(vec![Some("p3"), Some("p2")]);
        let c = StringArray::from(vec![Some("p4"), Some("p1")]);
        let parts: Vec<&dyn Array> = vec![&a, &b, &c];
        let Some((keys, leading)) = distinct_keys(&parts, 2, 4).unwrap() else {
            panic!("four keys are within a limit of four");
        };
        let keys = keys.as_string::<i32>();
        assert_eq!(
            keys.iter().flatten().collect::<Vec<_>>(),
            ["p1", "p2", "p3", "p4"]
        );
        assert_eq!(leading, 3, "p1, p2 and p3 come from the first two parts");
        assert!(distinct_keys(&parts, 2, 3).unwrap().is_none());
        // Other key types go through the row format, with the same answers.
        let x = Int64Array::from(vec![Some(7), Some(7), None, Some(9)]);
        let y = Int64Array::from(vec![Some(9), Some(8)]);
        let parts: Vec<&dyn Array> = vec![&x, &y];
        let Some((keys, leading)) = distinct_keys(&parts, 1, 10).unwrap() else {
            panic!("three keys are within a limit of ten");
        };
        let keys = keys.as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(keys.values().to_vec(), vec![7, 9, 8]);
        assert_eq!(leading, 2);
        assert!(distinct_keys(&parts, 1, 2).unwrap().is_none());
    }

    fn streams() -> Streams {
        Streams::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
    }

    fn view(name: &str, sql: &str) -> ViewDef {
        ViewDef::parse(&Path::new("q").join(format!("{name}.sql")), sql).unwrap()
    }

    /// The shipped view `name` (`queries/<name>.sql`).
    fn shipped_view(name: &str) -> ViewDef {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("queries")
            .join(format!("{name}.sql"));
        let sql = std::fs::read_to_string(&path).unwrap();
        ViewDef::parse(&path, &sql).unwrap()
    }

    /// Products as JSON lines: (id, category, price, stock, updated_at ms).
    fn products(streams: &Streams, rows: &[(&str, &str, f64, i64, i64)]) -> (usize, RecordBatch) {
        let i = streams.index_of("products").unwrap();
        let mut text = String::new();
        for (id, cat, price, stock, t) in rows {
            text.push_str(&format!(
                r#"{{"product_id":"{id}","name":"n","category":"{cat}","price":{price},"stock_quantity":{stock},"supplier":null,"rating":null,"updated_at":{t}}}"#
            ));
            text.push('\n');
        }
        (i, decoded(streams, i, text))
    }

    /// JSON lines of stream `i`, decoded; every line must be valid.
    fn decoded(streams: &Streams, i: usize, text: String) -> RecordBatch {
        let raw = RawBatch::from_lines(
            i,
            text.into_bytes(),
            Origin::Lines {
                file: "test".into(),
                first_line: 1,
            },
        );
        let d = StreamDecoder::new(streams.streams[i].clone())
            .unwrap()
            .decode(&raw)
            .unwrap();
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        d.batch
    }

    /// Units of stock per product: the aggregate view the recompute tests join with.
    const STOCK: &str = "SELECT product_id, count(*) AS n, sum(stock_quantity) AS stock FROM products GROUP BY product_id";

    /// A ranked view knows its ORDER BY as output columns (the console shows rows in it);
    /// an order on an expression the view does not output, or no order, gives none.
    #[tokio::test]
    async fn ranked_views_know_their_order_as_output_columns() {
        let (shipped, errs) =
            view_file::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("queries")).unwrap();
        assert!(errs.is_empty());
        let defs: Vec<ViewDef> = shipped
            .into_iter()
            .chain([
                view("hidden_order", "SELECT product_id FROM products ORDER BY price DESC LIMIT 3"),
                view("by_name", "SELECT name, product_id, price FROM products ORDER BY name, price DESC NULLS LAST LIMIT 5"),
            ])
            .collect();
        let engine = Engine::new(streams(), &defs).await.unwrap();
        let order = |v: &str| -> Vec<(String, bool, bool)> {
            let info = engine.views().find(|i| i.name == v).unwrap();
            info.order
                .iter()
                .map(|o| {
                    (
                        info.schema.field(o.col).name().clone(),
                        o.descending,
                        o.nulls_first,
                    )
                })
                .collect()
        };
        let col = |n: &str, desc: bool, nulls_first: bool| (n.to_string(), desc, nulls_first);
        assert_eq!(
            order("top_sellers"),
            [col("units", true, true), col("product_id", false, false)]
        );
        assert_eq!(
            order("slow_movers"),
            [col("units", false, false), col("product_id", false, false)]
        );
        assert_eq!(
            order("by_name"),
            [col("name", false, false), col("price", true, false)]
        );
        assert!(order("hidden_order").is_empty());
        assert!(order("low_stock").is_empty());
    }

    /// A lookup join over hopping windows' rows goes below the unnest (one lookup per event,
    /// not one per window), on either side of the join and through an outer join; a join on
    /// the unnested column stays above it. (`tests/views/hop_then_lookup.sql` checks the rows
    /// against the batch oracle.)
    #[tokio::test]
    async fn lookup_joins_go_below_an_unnest_of_windows() {
        let hop = "unnest(hop(INTERVAL '1 minute', INTERVAL '3 minutes', view_time)) AS w";
        let defs = [
            view("probe_left", &format!("SELECT w, p.category, count(*) AS n FROM (SELECT product_id, {hop} FROM product_views) v JOIN products p ON v.product_id = p.product_id GROUP BY w, p.category")),
            view("probe_right", &format!("SELECT w, c.gender, count(*) AS n FROM customers c RIGHT JOIN (SELECT customer_id, {hop} FROM product_views) v ON c.customer_id = v.customer_id GROUP BY w, c.gender")),
            view("on_window", &format!("SELECT v.w, count(*) AS n FROM (SELECT CAST({} AS VARCHAR) AS w FROM product_views) v JOIN products p ON v.w = p.product_id GROUP BY v.w", hop.trim_end_matches(" AS w"))),
        ];
        let engine = Engine::new(streams(), &defs).await.unwrap();
        let shape = |v: &str| {
            let plan = engine.plan_text(v).unwrap();
            let at = |op: &str| plan.find(op).unwrap_or_else(|| panic!("no {op} in {plan}"));
            (at("UnnestExec") < at("LookupJoinExec"), plan)
        };
        for v in ["probe_left", "probe_right"] {
            let (below, plan) = shape(v);
            assert!(
                below,
                "{v}: the lookup join stayed above the unnest\n{plan}"
            );
        }
        let (below, plan) = shape("on_window");
        assert!(
            !below,
            "a join on the unnested column moved below it\n{plan}"
        );
    }

    /// A keyed table's replaced rows carry only the columns that the views reading its
    /// changes use: the plans' scans of it, and the key of views recomputed key by key.
    #[tokio::test]
    async fn replaced_rows_carry_only_the_columns_some_view_reads() {
        let s = streams();
        let (shipped, errs) =
            view_file::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("queries")).unwrap();
        assert!(errs.is_empty());
        let engine = Engine::new(s.clone(), &shipped).await.unwrap();
        let carried = |e: &Engine, table: &str| -> Option<Vec<String>> {
            let t = s.index_of(table).unwrap();
            let k = keyed::read(e.keyed[t].as_ref().unwrap());
            let names = |c: &[usize]| {
                c.iter()
                    .map(|&i| k.schema().field(i).name().clone())
                    .collect()
            };
            k.delta_columns().map(names)
        };
        // customer_activity and customer_logins group the customers' changes by gender and
        // login time; nothing reads a changed customer's name, e-mail or city.
        assert_eq!(
            carried(&engine, "customers").unwrap(),
            ["gender", "last_login"]
        );
        // category_windows groups the products' changes by category and update time, over
        // price and stock; low_stock, slow_movers and top_sellers are recomputed for the
        // changed product ids. Nothing reads a changed product's name, supplier or rating.
        assert_eq!(
            carried(&engine, "products").unwrap(),
            [
                "product_id",
                "category",
                "price",
                "stock_quantity",
                "updated_at"
            ]
        );
        // A view that reads every column of the changes gets them all.
        let defs = [view(
            "everything",
            "SELECT customer_id, name, email, gender, age, location, signup_date, last_login, \
             count(*) AS n FROM customers \
             GROUP BY customer_id, name, email, gender, age, location, signup_date, last_login",
        )];
        let all = Engine::new(s.clone(), &defs).await.unwrap();
        assert_eq!(
            carried(&all, "customers").unwrap(),
            [
                "customer_id",
                "name",
                "email",
                "gender",
                "age",
                "location",
                "signup_date",
                "last_login"
            ]
        );
    }

    /// Views whose rows each share their key with the rows they are made of are recomputed
    /// key by key; a round recomputes (and reports) only the keys it changed.
    #[tokio::test]
    async fn views_aligned_on_their_inputs_key_are_recomputed_key_by_key() {
        let s = streams();
        let defs = [
            view("stock", STOCK),
            view("low", "SELECT p.product_id, p.category, s.stock FROM products p LEFT JOIN stock s ON p.product_id = s.product_id WHERE p.stock_quantity < 10"),
            view("unstocked", "SELECT p.product_id FROM products p WHERE NOT EXISTS (SELECT 1 FROM stock s WHERE s.product_id = p.product_id AND s.stock > 0)"),
            view("not_in", "SELECT p.product_id FROM products p WHERE p.product_id NOT IN (SELECT product_id FROM stock)"),
            view("ranked", "SELECT product_id, rank() OVER (ORDER BY price) AS r FROM products"),
            view("by_stock", "SELECT p.product_id, p.price FROM products p JOIN stock s ON p.stock_quantity = s.stock"),
        ];
        let mut engine = Engine::new(s.clone(), &defs).await.unwrap();
        let keyed = |e: &Engine, v: &str| {
            e.plan_text(v)
                .unwrap()
                .contains("recomputed for the keys its input tables and views changed")
        };
        assert!(keyed(&engine, "low"));
        assert!(keyed(&engine, "unstocked"));
        let (shipped, errs) =
            view_file::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("queries")).unwrap();
        assert!(errs.is_empty());
        let all = Engine::new(s.clone(), &shipped).await.unwrap();
        assert!(keyed(&all, "low_stock"));
        // NOT IN looks at every row of the subquery (one NULL empties it); a rank, at every
        // row; a join on another column, at rows of other keys.
        for v in ["not_in", "ranked", "by_stock"] {
            assert!(!keyed(&engine, v), "{v}");
        }
        // A dozen stocked products besides: a round that changes a few keys goes key by key.
        let ids: Vec<String> = (0..12).map(|n| format!("f{n}")).collect();
        let mut rows0 = vec![
            ("p1", "a", 10.0, 5, 1000),
            ("p2", "a", 11.0, 0, 1000),
            ("p3", "b", 12.0, 50, 1000),
        ];
        rows0.extend(ids.iter().map(|f| (f.as_str(), "c", 1.0, 100, 1000)));
        let (i, b) = products(&s, &rows0);
        engine.process(i, b).await.unwrap();
        let rows = |e: &mut Engine, v: &str| {
            let b = e.snapshot(v).unwrap().unwrap();
            let mut ids: Vec<String> = b
                .column(0)
                .as_string::<i32>()
                .iter()
                .map(|x| x.unwrap().to_string())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(rows(&mut engine, "low"), ["p1", "p2"]);
        assert_eq!(rows(&mut engine, "unstocked"), ["p2"]);
        // p1 is restocked and p2 gets some: only their rows change.
        let (i, b) = products(
            &s,
            &[("p1", "a", 10.0, 40, 2000), ("p2", "a", 11.0, 3, 2000)],
        );
        let out = engine.process(i, b).await.unwrap();
        let low = out.outputs.iter().find(|o| o.view.name == "low").unwrap();
        assert_eq!(
            (low.changes.num_upserts(), low.changes.num_deletes()),
            (1, 1)
        );
        assert_eq!(rows(&mut engine, "low"), ["p2"]);
        assert!(rows(&mut engine, "unstocked").is_empty());
        // p3 runs out.
        let (i, b) = products(&s, &[("p3", "b", 12.0, 0, 3000)]);
        engine.process(i, b).await.unwrap();
        assert_eq!(rows(&mut engine, "low"), ["p2", "p3"]);
        assert_eq!(rows(&mut engine, "unstocked"), ["p3"]);
    }

    /// A recomputed view over GROUP BYs of a table (`category_prices`: per category, against
    /// a scalar subquery's overall average) keeps each GROUP BY incrementally in a hidden view
    /// and recomputes over their groups: the products table is not scanned every round, and
    /// the rows follow price changes, new products and categories.
    #[tokio::test]
    async fn a_recompute_over_table_aggregates_reads_their_groups_not_the_table() {
        let s = streams();
        let defs = [shipped_view("category_prices")];
        let mut engine = Engine::new(s.clone(), &defs).await.unwrap();
        let plan = engine.plan_text("category_prices").unwrap();
        assert_eq!(
            plan.matches("incremental aggregate over the changes of table products")
                .count(),
            2,
            "{plan}"
        );
        let products_at = s.index_of("products").unwrap();
        assert!(
            !engine.scanned_tables.contains(&products_at),
            "products is scanned: {plan}"
        );
        let rows = |e: &mut Engine| -> Vec<(String, i64, f64, f64, f64)> {
            let b = e.snapshot("category_prices").unwrap().unwrap();
            let f = |c: usize| {
                b.column(c)
                    .as_primitive::<arrow::datatypes::Float64Type>()
                    .clone()
            };
            let (avg, overall, diff) = (f(2), f(3), f(4));
            let n = b
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .clone();
            let mut out: Vec<_> = (0..b.num_rows())
                .map(|r| {
                    (
                        b.column(0).as_string::<i32>().value(r).to_string(),
                        n.value(r),
                        avg.value(r),
                        overall.value(r),
                        diff.value(r),
                    )
                })
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        };
        let (i, b) = products(
            &s,
            &[
                ("p1", "a", 10.0, 5, 1000),
                ("p2", "a", 20.0, 5, 1000),
                ("p3", "b", 60.0, 5, 1000),
            ],
        );
        engine.process(i, b).await.unwrap();
        assert_eq!(
            rows(&mut engine),
            [
                ("a".to_string(), 2, 15.0, 30.0, -15.0),
                ("b".to_string(), 1, 60.0, 30.0, 30.0)
            ]
        );
        // p3 gets cheaper and moves to a new category; p4 arrives: both averages move.
        let (i, b) = products(
            &s,
            &[("p3", "c", 30.0, 5, 2000), ("p4", "b", 40.0, 5, 2000)],
        );
        let out = engine.process(i, b).await.unwrap();
        assert_eq!(
            rows(&mut engine),
            [
                ("a".to_string(), 2, 15.0, 25.0, -10.0),
                ("b".to_string(), 1, 40.0, 25.0, 15.0),
                ("c".to_string(), 1, 30.0, 25.0, 5.0)
            ]
        );
        let changed = out
            .outputs
            .iter()
            .find(|o| o.view.name == "category_prices")
            .unwrap();
        assert_eq!(
            changed.changes.num_upserts(),
            3,
            "every row's overall average moved"
        );
        // An older row for p1 is ignored; nothing changes.
        let (i, b) = products(&s, &[("p1", "a", 99.0, 5, 500)]);
        engine.process(i, b).await.unwrap();
        assert_eq!(
            rows(&mut engine)[0],
            ("a".to_string(), 2, 15.0, 25.0, -10.0)
        );
    }

    /// A checkpoint whose hidden parts of a view differ from the plan's (taken by a runnel that
    /// split the view otherwise) is refused with the view's name, not the part's alone.
    #[tokio::test]
    async fn a_checkpoint_with_other_hidden_parts_is_refused_naming_the_view() {
        let s = streams();
        let defs = [shipped_view("category_prices")];
        let mut engine = Engine::new(s.clone(), &defs).await.unwrap();
        let (i, b) = products(&s, &[("p1", "a", 10.0, 5, 1000)]);
        engine.process(i, b).await.unwrap();
        let st = engine.save_state().unwrap();
        // Without its parts: as a checkpoint from before the view was split.
        let mut older = st.clone();
        older.views.retain(|v| !v.name.starts_with("__"));
        let mut fresh = Engine::new(s.clone(), &defs).await.unwrap();
        let e = fresh.restore_state(&older).unwrap_err().to_string();
        assert!(
            e.contains("view `category_prices` is planned in other parts")
                && e.contains("__category_prices_1"),
            "{e}"
        );
        // With a part the plan does not have.
        let mut other = st.clone();
        let mut extra = other.views[0].clone();
        extra.name = "__category_prices_9".into();
        other.views.push(extra);
        let mut fresh = Engine::new(s.clone(), &defs).await.unwrap();
        let e = fresh.restore_state(&other).unwrap_err().to_string();
        assert!(
            e.contains("view `category_prices` is planned in other parts"),
            "{e}"
        );
        // The checkpoint as taken restores.
        let mut fresh = Engine::new(s, &defs).await.unwrap();
        fresh.restore_state(&st).unwrap();
    }

    /// `ORDER BY … LIMIT n` over rows aligned on a key is recomputed over the keys changed and
    /// the keys ranked first last time, and always equals the whole query run afresh: through
    /// rises, falls, rows leaving (the WHERE) and rounds that change every ranked key.
    #[tokio::test]
    async fn ranked_views_follow_a_fresh_run_through_rises_falls_and_removals() {
        let s = streams();
        let defs = [
            view("stock", STOCK),
            view("top", "-- @key: product_id\nSELECT row_number() OVER (ORDER BY stock_quantity DESC, product_id) AS r, product_id, stock_quantity FROM products ORDER BY stock_quantity DESC, product_id LIMIT 5"),
            view("bottom", "-- @key: product_id\nSELECT product_id, price FROM products WHERE stock_quantity > 20 ORDER BY price, product_id LIMIT 3"),
            view("joined", "-- @key: product_id\nSELECT rank() OVER (ORDER BY s.stock, p.product_id) AS r, p.product_id, p.category, s.stock FROM products p JOIN stock s ON p.product_id = s.product_id ORDER BY s.stock, p.product_id LIMIT 4"),
            // Ordered by the rank itself: not the window's order, so recomputed in full.
            view("by_rank", "-- @key: product_id\nSELECT product_id, rank() OVER (ORDER BY price, product_id) AS r FROM products ORDER BY r LIMIT 3"),
        ];
        let mut engine = Engine::new(s.clone(), &defs).await.unwrap();
        for v in ["top", "bottom", "joined"] {
            let plan = engine.plan_text(v).unwrap();
            assert!(
                plan.contains("rows, recomputed over the keys its inputs changed"),
                "{v}: {plan}"
            );
            assert!(plan.contains("is set aside"), "{v}: {plan}");
        }
        assert!(engine
            .plan_text("joined")
            .unwrap()
            .contains("where it sorts read from stock and products"));
        assert!(!engine
            .plan_text("by_rank")
            .unwrap()
            .contains("ranked first"));
        let (shipped, errs) =
            view_file::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("queries")).unwrap();
        assert!(errs.is_empty());
        let all = Engine::new(s.clone(), &shipped).await.unwrap();
        for v in ["top_sellers", "slow_movers"] {
            let plan = all.plan_text(v).unwrap();
            assert!(plan.contains("the first 10 rows"), "{v}");
            assert!(plan.contains("is set aside"), "{v}: {plan}");
        }
        // 3000 products; each round moves a few of them up or down (a small xorshift keeps it
        // reproducible).
        let ids: Vec<String> = (0..3000).map(|n| format!("p{n:04}")).collect();
        let cats = ["a", "b", "c"];
        let mut state: Vec<(f64, i64)> = (0..3000)
            .map(|n| ((n % 97) as f64, (n * 37 % 500) as i64))
            .collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let feed = |engine_rows: &[(usize, f64, i64)], t: i64| {
            let rows: Vec<(&str, &str, f64, i64, i64)> = engine_rows
                .iter()
                .map(|&(n, price, stock)| (ids[n].as_str(), cats[n % 3], price, stock, t))
                .collect();
            products(&s, &rows)
        };
        let first: Vec<(usize, f64, i64)> =
            (0..3000).map(|n| (n, state[n].0, state[n].1)).collect();
        let (i, b) = feed(&first, 1000);
        engine.process(i, b).await.unwrap();
        let sorted = |b: RecordBatch| {
            let key = b.schema().index_of("product_id").unwrap();
            let order = arrow::compute::sort_to_indices(b.column(key), None, None).unwrap();
            let b = arrow::compute::take_record_batch(&b, &order).unwrap();
            arrow::util::pretty::pretty_format_batches(&[b])
                .unwrap()
                .to_string()
        };
        for round in 0..40i64 {
            // Every 7th round, the whole top of `top` falls below rows that did not change,
            // and most of the top of `joined` rises above them. Every 10th, most keys change:
            // too many to go key by key, unless most of them can be set aside (their rows
            // sort after the ranking). For `bottom` and `joined` they can; for `top` they
            // all rise above it, so its own plan (n rows) runs over all of them, and its next
            // round starts from that short ranking. Every 5th, every row at the top of `top`
            // rises: none of its ranking is left unchanged, and the threshold alone confirms
            // its rows.
            let moved: Vec<(usize, Option<(f64, i64)>)> = if round % 10 == 9 {
                let most: Vec<usize> = (0..3000).filter(|_| next(4) != 0).collect();
                most.into_iter()
                    .map(|n| (n, Some((next(100) as f64, 600 + next(100) as i64))))
                    .collect()
            } else if round % 5 == 4 {
                let mut by_stock: Vec<usize> = (0..3000).collect();
                by_stock.sort_by_key(|&n| std::cmp::Reverse(state[n].1));
                by_stock[..300]
                    .iter()
                    .map(|&n| (n, Some((state[n].0, state[n].1 + 1 + next(5) as i64))))
                    .collect()
            } else if round % 7 == 6 {
                (0..3000)
                    .filter_map(|n| {
                        let (price, stock) = state[n];
                        match stock {
                            430.. => Some((n, Some((price, next(100) as i64)))),
                            ..20 => Some((n, Some((price, 200 + next(100) as i64)))),
                            _ => None,
                        }
                    })
                    .collect()
            } else {
                (0..1 + next(6) as usize)
                    .map(|_| (next(3000) as usize, None))
                    .collect()
            };
            let mut rows = Vec::new();
            for (n, to) in moved {
                let (price, stock) = to.unwrap_or_else(|| (next(100) as f64, next(520) as i64));
                state[n] = (price, stock);
                rows.push((n, price, stock));
            }
            let (i, b) = feed(&rows, 2000 + round);
            let before = engine.rank_runs("top").unwrap();
            engine.process(i, b).await.unwrap();
            if round % 5 == 4 && round % 10 != 9 {
                // Its whole ranking rose: a run key by key, confirmed by the threshold.
                let after = engine.rank_runs("top").unwrap();
                assert_eq!(
                    (after.runs - before.runs, after.full),
                    (1, before.full),
                    "top, round {round}"
                );
            }
            let now: Vec<(usize, f64, i64)> =
                (0..3000).map(|n| (n, state[n].0, state[n].1)).collect();
            let mut fresh = Engine::new(s.clone(), &defs).await.unwrap();
            let (i, b) = feed(&now, 1000);
            fresh.process(i, b).await.unwrap();
            for v in ["top", "bottom", "joined", "by_rank"] {
                let got = sorted(engine.snapshot(v).unwrap().unwrap());
                let want = sorted(fresh.snapshot(v).unwrap().unwrap());
                assert_eq!(got, want, "{v} after round {round}");
            }
        }
        // Most rounds went key by key, or not at all: the ranking held. The rounds that
        // changed most keys set most of them aside; where they could not (`top`), the narrow
        // plan ran (and, at most, the round after each ran the wide one in full). `bottom`
        // never ran in full again after its first run.
        for v in ["top", "bottom", "joined"] {
            let RankRuns {
                runs: rounds,
                full,
                narrow,
                set_aside,
            } = engine.rank_runs(v).unwrap();
            assert!(
                set_aside > 4000 && (full - narrow) * 4 < 40,
                "{v}: {rounds} runs, {full} of them in full ({narrow} narrow), {set_aside} keys set aside"
            );
            // Rounds whose changes were all set aside ran nothing.
            assert!(rounds < 40, "{v}: {rounds} runs");
        }
        assert!(engine.rank_runs("top").unwrap().narrow >= 1);
        assert_eq!(engine.rank_runs("bottom").unwrap().full, 1);
    }

    /// Which GROUP BYs over a table run on its changelog, and which are recomputed.
    #[tokio::test]
    async fn group_by_over_a_table_runs_on_its_changelog_when_rows_can_be_taken_back() {
        let cases = [
            ("SELECT category, count(*) AS n, sum(stock_quantity) AS s, avg(rating) AS r FROM products GROUP BY category", true),
            // min and max keep each group's values, so a row can come back out.
            ("SELECT category, count(*) AS n, max(price) AS p, min(updated_at) AS t FROM products GROUP BY category", true),
            // ... but a count(*) still says when a group is empty.
            ("SELECT category, max(price) AS p FROM products GROUP BY category", false),
            // Without count(*), nothing says when a group is empty.
            ("SELECT category, sum(stock_quantity) AS s FROM products GROUP BY category", false),
            // A sum over a column that may be NULL: subtracting cannot tell NULL from 0.
            ("SELECT category, count(*) AS n, sum(rating) AS r FROM products GROUP BY category", false),
            ("SELECT category, count(*) AS n, count(DISTINCT supplier) AS s FROM products GROUP BY category", false),
            // FILTER: the count(*) would not count every row.
            ("SELECT category, count(*) FILTER (WHERE price > 10) AS n FROM products GROUP BY category", false),
            // One group over a table never empties (rows are replaced, never removed): no
            // count(*) needed. Over a view, whose rows can leave, it is.
            ("SELECT avg(price) AS p, sum(stock_quantity) AS s FROM products", true),
        ];
        // The GROUP BY column is not selected: the view has no row identity, so it is
        // recomputed (not rejected), over its GROUP BY kept on the changelog as a hidden part.
        let sql = "SELECT count(*) AS n FROM products GROUP BY category";
        let plan = Engine::new(streams(), &[view("v", sql)])
            .await
            .unwrap()
            .plan_text("v")
            .unwrap();
        assert!(
            plan.contains("__v_1: incremental aggregate over the changes of table products")
                && plan.contains("v: recomputed when an input table or view changes"),
            "{plan}"
        );
        for (sql, incremental) in cases {
            let engine = Engine::new(streams(), &[view("v", sql)]).await.unwrap();
            let plan = engine.plan_text("v").unwrap();
            assert_eq!(
                plan.contains("over the changes of table products"),
                incremental,
                "{sql}\n{plan}"
            );
        }
    }

    /// Rows replaced in the table leave their old group; a group with no rows left leaves the
    /// view as a delete.
    #[tokio::test]
    async fn replaced_rows_leave_their_group_and_empty_groups_are_deleted() {
        let s = streams();
        let sql = "SELECT category, count(*) AS n, sum(stock_quantity) AS stock FROM products GROUP BY category";
        let mut engine = Engine::new(s.clone(), &[view("v", sql)]).await.unwrap();
        let (i, b) = products(
            &s,
            &[("p1", "a", 10.0, 5, 1000), ("p2", "a", 11.0, 7, 1000)],
        );
        engine.process(i, b).await.unwrap();
        // p1 moves to b; p2 is restocked.
        let (i, b) = products(
            &s,
            &[("p1", "b", 10.0, 5, 2000), ("p2", "a", 11.0, 70, 2000)],
        );
        engine.process(i, b).await.unwrap();
        let rows = engine.snapshot("v").unwrap().unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&[rows])
            .unwrap()
            .to_string();
        assert!(text.contains("| a        | 1 | 70    |"), "{text}");
        assert!(text.contains("| b        | 1 | 5     |"), "{text}");
        // p2 moves to b too: a is empty and must be deleted.
        let (i, b) = products(&s, &[("p2", "b", 11.0, 70, 3000)]);
        let out = engine.process(i, b).await.unwrap();
        let v = out.outputs.iter().find(|o| o.view.name == "v").unwrap();
        assert_eq!(v.changes.num_deletes(), 1);
        let rows = engine.snapshot("v").unwrap().unwrap();
        assert_eq!(rows.num_rows(), 1);
        let text = arrow::util::pretty::pretty_format_batches(&[rows])
            .unwrap()
            .to_string();
        assert!(text.contains("| b        | 2 | 75    |"), "{text}");
    }

    /// min and max over a changelog: a replaced row's value leaves its group (the next
    /// largest value takes over), also after the engine is restored from a checkpoint.
    #[tokio::test]
    async fn min_and_max_give_back_the_values_of_replaced_rows() {
        let s = streams();
        let sql = "SELECT category, count(*) AS n, max(price) AS top, min(stock_quantity) AS low \
                   FROM products GROUP BY category";
        let mut engine = Engine::new(s.clone(), &[view("v", sql)]).await.unwrap();
        let (i, b) = products(
            &s,
            &[
                ("p1", "a", 30.0, 5, 1000),
                ("p2", "a", 20.0, 7, 1000),
                ("p3", "a", 30.0, 9, 1000),
            ],
        );
        engine.process(i, b).await.unwrap();
        let text = |e: &mut Engine| {
            let rows = e.snapshot("v").unwrap().unwrap();
            arrow::util::pretty::pretty_format_batches(&[rows])
                .unwrap()
                .to_string()
        };
        assert!(
            text(&mut engine).contains("| a        | 3 | 30.0 | 5   |"),
            "{}",
            text(&mut engine)
        );
        // p1 drops its price: 30.0 is still held by p3. Its stock goes up: p2 holds the least.
        let (i, b) = products(&s, &[("p1", "a", 10.0, 50, 2000)]);
        engine.process(i, b).await.unwrap();
        assert!(
            text(&mut engine).contains("| a        | 3 | 30.0 | 7   |"),
            "{}",
            text(&mut engine)
        );
        // A checkpoint and a fresh engine: the kept values are rebuilt from the table.
        // Taking the state must leave the running engine's kept values in place too.
        let saved = engine.save_state().unwrap();
        let mut restored = Engine::new(s.clone(), &[view("v", sql)]).await.unwrap();
        restored.restore_state(&saved).unwrap();
        // p3 leaves for b: a's max is now 20.0, b has p3 alone.
        for e in [&mut engine, &mut restored] {
            let (i, b) = products(&s, &[("p3", "b", 30.0, 9, 3000)]);
            e.process(i, b).await.unwrap();
            let t = text(e);
            assert!(t.contains("| a        | 2 | 20.0 | 7   |"), "{t}");
            assert!(t.contains("| b        | 1 | 30.0 | 9   |"), "{t}");
        }
    }

    /// Transactions as JSON lines: (product, customer, transaction_time ms).
    fn sales(streams: &Streams, rows: &[(&str, &str, i64)]) -> (usize, RecordBatch) {
        let i = streams.index_of("transactions").unwrap();
        let mut text = String::new();
        for (n, (p, c, t)) in rows.iter().enumerate() {
            text.push_str(&format!(
                r#"{{"transaction_id":"t{n}","customer_id":"{c}","product_id":"{p}","quantity":1,"price":1.0,"total_amount":1.0,"payment_method":"card","status":"completed","transaction_time":{t}}}"#
            ));
            text.push('\n');
        }
        (i, decoded(streams, i, text))
    }

    /// A view no other view reads derives its rows from its groups instead of storing them,
    /// and emits exactly what the same view emits when another view reads it (and its rows are
    /// stored): rows that came out the same are not sent again, HAVING takes rows out and puts
    /// them back, a checkpoint restores what was sent, and a view added later that reads it
    /// makes it store its rows again.
    #[tokio::test]
    async fn a_view_nobody_reads_derives_its_rows_and_emits_what_a_stored_one_would() {
        let s = streams();
        let sql = "SELECT customer_id, CASE WHEN count(*) >= 2 THEN 'many' ELSE 'one' END AS seg \
                   FROM transactions GROUP BY customer_id HAVING count(*) < 4 OR count(*) >= 6";
        let reader = view("w", "SELECT seg, count(*) AS k FROM v GROUP BY seg");
        let mut derived = Engine::new(s.clone(), &[view("v", sql)]).await.unwrap();
        let mut stored = Engine::new(s.clone(), &[view("v", sql), reader])
            .await
            .unwrap();
        let derives = |e: &Engine| {
            e.plan_text("v")
                .unwrap()
                .contains("derived from the groups")
        };
        assert!(derives(&derived), "{}", derived.plan_text("v").unwrap());
        assert!(!derives(&stored), "{}", stored.plan_text("v").unwrap());
        let sorted = |b: Option<&RecordBatch>| -> Vec<String> {
            let Some(b) = b else { return Vec::new() };
            let text = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
                .unwrap()
                .to_string();
            let mut lines: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("| c") && !l.contains("customer_id"))
                .map(String::from)
                .collect();
            lines.sort();
            lines
        };
        // (upserts, deletes) of view v in one round.
        let changes_of = |out: &StepOutput| -> (Vec<String>, Vec<String>) {
            match out.outputs.iter().find(|o| o.view.name == "v") {
                Some(o) => (
                    sorted(o.changes.upserts.as_ref()),
                    // Deletes are compared by key: a stored view sends the row last sent, a
                    // derived one the row it has now (sinks need only the key).
                    sorted(o.changes.deletes.as_ref())
                        .iter()
                        .map(|l| l.split('|').nth(1).unwrap_or("").trim().to_string())
                        .collect(),
                ),
                None => (Vec::new(), Vec::new()),
            }
        };
        // c1 is bought in every round (its count goes 1, 2, ... 7); c2 in rounds 0 and 3.
        // Round 2: c1 stays 'many' (nothing sent). Round 3: c1 reaches 4 and leaves. Round 5:
        // back at 6.
        let mut want_upserts = Vec::new();
        let mut restored = None;
        for round in 0..7i64 {
            let mut rows = vec![("p1", "c1", 1000 * round)];
            if round == 0 || round == 3 {
                rows.push(("p2", "c2", 1000 * round));
            }
            let (i, b) = sales(&s, &rows);
            let mut outs = vec![
                derived.process(i, b.clone()).await.unwrap(),
                stored.process(i, b.clone()).await.unwrap(),
            ];
            if let Some(r) = restored.as_mut() {
                let r: &mut Engine = r;
                outs.push(r.process(i, b).await.unwrap());
            }
            let want = changes_of(&outs[1]);
            for (n, out) in outs.iter().enumerate() {
                assert_eq!(changes_of(out), want, "round {round}, engine {n}");
            }
            want_upserts.push(want.0.len());
            let want_rows = sorted(stored.snapshot("v").unwrap().as_ref());
            assert_eq!(sorted(derived.snapshot("v").unwrap().as_ref()), want_rows);
            if round == 1 {
                // A checkpoint of the derived view, restored into a fresh engine.
                let saved = derived.save_state().unwrap();
                let mut r = Engine::new(s.clone(), &[view("v", sql)]).await.unwrap();
                r.restore_state(&saved).unwrap();
                assert!(derives(&r));
                assert_eq!(sorted(r.snapshot("v").unwrap().as_ref()), want_rows);
                restored = Some(r);
            }
        }
        // Sent: c1 and c2 new; c1 to 'many'; nothing; c2 to 'many' (c1 left); nothing; c1
        // back; c1 unchanged.
        assert_eq!(want_upserts, [2, 1, 0, 1, 0, 1, 0]);
        // A view added later (as the REPL adds one) that reads v: v stores its rows again,
        // starting from what it derived, and goes on emitting the same changes.
        derived
            .add_view(&view("w2", "SELECT * FROM v"))
            .await
            .unwrap();
        assert!(!derives(&derived));
        let (i, b) = sales(&s, &[("p3", "c3", 7000), ("p1", "c1", 7000)]);
        let (a, b2) = (
            derived.process(i, b.clone()).await.unwrap(),
            stored.process(i, b).await.unwrap(),
        );
        assert_eq!(changes_of(&a), changes_of(&b2));
        assert_eq!(changes_of(&a).0.len(), 1, "c3 is new; c1 stays 'many'");
        assert_eq!(
            sorted(derived.snapshot("w2").unwrap().as_ref()),
            sorted(stored.snapshot("v").unwrap().as_ref())
        );
    }

    /// Rounds absorbed and emitted every few rounds leave every shipped view with the rows
    /// that emitting every round gives, sending fewer changes; a checkpoint waits for the emit.
    /// So do rounds whose input rows are aggregated at a cap, or by a round not absorbed.
    #[tokio::test]
    async fn absorbed_rounds_emit_the_rows_of_emitting_every_round() {
        use crate::generate::{Clock, Generator, Topic, DEFAULT_START_MS};
        let s = streams();
        let mut names: Vec<String> =
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("queries"))
                .unwrap()
                .filter_map(|e| {
                    let p = e.unwrap().path();
                    (p.extension()? == "sql").then(|| p.file_stem()?.to_str().map(String::from))?
                })
                .collect();
        names.sort();
        assert!(names.len() >= 9, "{names:?}");
        let defs: Vec<ViewDef> = names.iter().map(|n| shipped_view(n)).collect();
        let mut every = Engine::new(s.clone(), &defs).await.unwrap();
        let mut absorbed = Engine::new(s.clone(), &defs).await.unwrap();
        // Another that aggregates its kept rows whenever a view keeps 400, and processes
        // every fourth round without absorbing it (its kept rows go in first).
        let mut capped = Engine::new(s.clone(), &defs).await.unwrap();
        capped.keep_rows = 400;
        let kept_views = capped
            .views
            .iter()
            .filter(|v| matches!(&v.kind, ViewKind::Aggregate(a) if a.buffered.is_some()))
            .count();
        assert!(kept_views >= 4, "{kept_views} views keep their input rows");
        // Only views whose results cannot depend on how their rows are split: a sum of
        // fractions (revenue) is not kept, counts and sums of integers are.
        let keeps = |name: &str| {
            capped.views.iter().any(|v| {
                v.info.name == name
                    && matches!(&v.kind, ViewKind::Aggregate(a) if a.buffered.is_some())
            })
        };
        assert!(!keeps("product_sales") && !keeps("review_sentiment"));
        assert!(keeps("customer_interactions") && keeps("gender_engagement"));
        let sent = StepOutput::rows_changed;
        let rows = |e: &mut Engine, v: &str| -> Vec<String> {
            let Some(b) = e.snapshot(v).unwrap() else {
                return Vec::new();
            };
            let text = arrow::util::pretty::pretty_format_batches(&[b])
                .unwrap()
                .to_string();
            let mut lines: Vec<String> = text.lines().map(String::from).collect();
            lines.sort();
            lines
        };
        let mut gen = Generator::new(
            11,
            Clock::Simulated {
                start_ms: DEFAULT_START_MS,
            },
        );
        let (mut sent_every, mut sent_absorbed) = (0, 0);
        for round in 0..26 {
            let mut bufs: [Vec<u8>; 6] = Default::default();
            for _ in 0..1500 {
                gen.next_into(&mut bufs);
            }
            let mut batches = Vec::new();
            for t in Topic::ALL {
                let data = std::mem::take(&mut bufs[t as usize]);
                if !data.is_empty() {
                    let i = s.index_of(t.stream()).unwrap();
                    batches.push((i, decoded(&s, i, String::from_utf8(data).unwrap())));
                }
            }
            sent_every += sent(&every.process_round(batches.clone()).await.unwrap());
            let events: usize = batches.iter().map(|(_, b)| b.num_rows()).sum();
            if round % 4 == 1 {
                capped.process_round(batches.clone()).await.unwrap();
                assert_eq!(capped.kept_rows(), 0);
            } else {
                capped.absorb_round(batches.clone()).await.unwrap();
                assert!(capped.kept_rows() < kept_views * (400 + events));
            }
            sent_absorbed += sent(&absorbed.absorb_round(batches).await.unwrap());
            assert!(absorbed.kept_rows() > 0, "rows kept for the emit");
            if round % 4 == 3 {
                capped.emit().await.unwrap();
                assert!(!capped.has_pending());
                assert!(absorbed.has_pending());
                assert!(
                    absorbed.save_state().is_err(),
                    "a checkpoint before the emit"
                );
                sent_absorbed += sent(&absorbed.emit().await.unwrap());
                assert!(!absorbed.has_pending());
                absorbed.save_state().unwrap();
                for v in &names {
                    let want = rows(&mut every, v);
                    assert_eq!(rows(&mut absorbed, v), want, "view {v} after round {round}");
                    assert_eq!(rows(&mut capped, v), want, "view {v} after round {round}");
                }
            }
        }
        // Two rounds absorbed and not emitted: the end of input emits them.
        assert!(absorbed.has_pending());
        sent_every += sent(&every.finish().await.unwrap());
        sent_absorbed += sent(&absorbed.finish().await.unwrap());
        capped.finish().await.unwrap();
        assert!(!absorbed.has_pending() && !capped.has_pending());
        for v in &names {
            let want = rows(&mut every, v);
            assert_eq!(rows(&mut absorbed, v), want, "view {v} at the end");
            assert_eq!(rows(&mut capped, v), want, "view {v} at the end");
        }
        assert!(
            sent_absorbed * 10 < sent_every * 9,
            "changes sent: {sent_absorbed} absorbed, {sent_every} every round"
        );
    }

    /// count(DISTINCT) keeps each group's values across batches and through a checkpoint, and
    /// a closed window's values leave with it (its slot is reused by a later window).
    #[tokio::test]
    async fn count_distinct_remembers_values_across_batches_checkpoints_and_windows() {
        let s = streams();
        let by_product = view(
            "buyers",
            "SELECT product_id, count(DISTINCT customer_id) AS buyers, count(*) AS n \
             FROM transactions GROUP BY product_id",
        );
        let by_minute = view(
            "per_minute",
            "SELECT date_bin(INTERVAL '1 minute', transaction_time) AS w, \
             count(DISTINCT customer_id) AS buyers FROM transactions GROUP BY 1",
        );
        let defs = [by_product, by_minute];
        let text = |e: &mut Engine, v: &str| {
            let rows = e.snapshot(v).unwrap().unwrap();
            arrow::util::pretty::pretty_format_batches(&[rows])
                .unwrap()
                .to_string()
        };
        let t0 = 1_700_000_000_000i64 / 60_000 * 60_000;
        let mut engine = Engine::new(s.clone(), &defs).await.unwrap();
        let (i, b) = sales(
            &s,
            &[
                ("P1", "c1", t0),
                ("P1", "c2", t0),
                ("P1", "c1", t0),
                ("P2", "c3", t0),
            ],
        );
        engine.process(i, b).await.unwrap();
        let (i, b) = sales(&s, &[("P1", "c2", t0 + 1), ("P1", "c4", t0 + 1)]);
        engine.process(i, b).await.unwrap();
        let t = text(&mut engine, "buyers");
        assert!(t.contains("| P1         | 3      | 5 |"), "{t}");
        assert!(t.contains("| P2         | 1      | 1 |"), "{t}");

        let saved = engine.save_state().unwrap();
        // Not into an engine that took in events: the checkpoint would add to its rows.
        let e = engine.restore_state(&saved).unwrap_err().to_string();
        assert!(e.contains("freshly planned engine"), "{e}");
        let mut restored = Engine::new(s.clone(), &defs).await.unwrap();
        restored.restore_state(&saved).unwrap();
        for e in [&mut engine, &mut restored] {
            let (i, b) = sales(
                &s,
                &[
                    ("P1", "c4", t0 + 2),
                    ("P1", "c5", t0 + 2),
                    ("P2", "c3", t0 + 2),
                ],
            );
            e.process(i, b).await.unwrap();
            let t = text(e, "buyers");
            assert!(t.contains("| P1         | 4      | 7 |"), "{t}");
            assert!(t.contains("| P2         | 1      | 2 |"), "{t}");
        }

        // Minute 0 closes once minute 2 is seen (5 s watermark delay) and gives up its slot;
        // minute 3 takes that slot and must start with no values: c1 counts there once.
        let mut emitted = Vec::new();
        for (m, who) in [(1, "c9"), (2, "c9"), (3, "c1"), (5, "c7")] {
            let (i, b) = sales(&s, &[("P9", who, t0 + m * 60_000)]);
            let out = engine.process(i, b).await.unwrap();
            for o in out.outputs.iter().filter(|o| o.view.name == "per_minute") {
                emitted.extend(o.changes.upserts.clone());
            }
        }
        let t = arrow::util::pretty::pretty_format_batches(&emitted)
            .unwrap()
            .to_string();
        assert!(t.contains("| 2023-11-14T22:16:00 | 1      |"), "{t}");
        assert!(!t.contains("| 2023-11-14T22:16:00 | 0      |"), "{t}");
    }
}
