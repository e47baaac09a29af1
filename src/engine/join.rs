//! Interval joins of two event streams: `a JOIN b ON a.k = b.k AND b.t BETWEEN a.t - x AND
//! a.t + y`.
//!
//! Each side keeps the rows it has seen (after its own filters and projections) that a future
//! row of the other side could still match, indexed by the equality key. A new batch of one
//! side is probed against the other side's retained rows only, so a step costs what the batch
//! and its matches cost, never the history. With `lo <= b.t - a.t <= hi`, the other side's
//! future rows are on time (at or after its watermark), which lets a side drop rows:
//! - a left row can only meet right rows with `b.t <= a.t + hi`: it goes once
//!   `a.t + hi < watermark(b)`;
//! - a right row can only meet left rows with `a.t <= b.t - lo`: it goes once
//!   `b.t - lo < watermark(a)`.
//!
//! State is thus bounded by the rows of `hi - lo` plus the watermark delay of event time. Late
//! rows (behind their stream's watermark) never enter a join; the engine counts and sets them
//! aside like every late event. The output is append-only: a pair, once joined, stays.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, filter_record_batch, interleave_record_batch, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimestampMillisecondType};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use crate::error::Result;

/// Pairs probed per output batch: bounds the memory of one step's output.
const PAIRS_PER_BATCH: usize = 64 * 1024;

/// One side of an interval join.
pub(crate) struct Side {
    /// The event stream this side reads.
    pub stream: usize,
    /// Row-local work (filters, projections, lookup joins) over one batch of the stream.
    pub plan: Arc<dyn ExecutionPlan>,
    /// Equality key expressions, over this side's rows.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// This side's event-time column.
    pub time_col: usize,
    store: Store,
}

impl Side {
    pub fn new(
        stream: usize,
        plan: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        time_col: usize,
    ) -> Self {
        Side {
            stream,
            plan,
            keys,
            time_col,
            store: Store::default(),
        }
    }
}

/// Rows retained by one side, in arrival chunks, with an index from key to (chunk, row).
#[derive(Default)]
struct Store {
    chunks: VecDeque<Chunk>,
    index: HashMap<Box<[u8]>, Vec<(u64, u32)>>,
    next_id: u64,
    rows: usize,
    bytes: usize,
}

/// One batch's join keys, and which rows have no NULL in them.
struct Keys {
    rows: Rows,
    valid: Vec<bool>,
}

struct Chunk {
    id: u64,
    rows: RecordBatch,
    keys: Rows,
    max_time: i64,
}

/// One end of the bound on `right.t - left.t`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bound {
    pub ms: i64,
    /// `<` / `>` rather than `<=` / `>=`.
    pub strict: bool,
}

impl Bound {
    pub fn tighter_lower(self, o: Bound) -> Bound {
        if o.ms > self.ms || (o.ms == self.ms && o.strict) {
            o
        } else {
            self
        }
    }
    pub fn tighter_upper(self, o: Bound) -> Bound {
        if o.ms < self.ms || (o.ms == self.ms && o.strict) {
            o
        } else {
            self
        }
    }
}

/// A join of two event streams bounded in event time.
pub(crate) struct IntervalJoin {
    pub left: Side,
    pub right: Side,
    /// `lo <= right.t - left.t <= hi` (`<` where strict), checked on event times before a
    /// pair is gathered.
    pub lo: Bound,
    pub hi: Bound,
    /// The rest of the ON clause, over the joined row.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The joined row: left columns, then right columns.
    pub schema: SchemaRef,
    converter: RowConverter,
    key_types: Vec<DataType>,
}

impl IntervalJoin {
    pub fn new(
        left: Side,
        right: Side,
        lo: Bound,
        hi: Bound,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
        key_types: Vec<DataType>,
    ) -> Result<Self> {
        let converter = RowConverter::new(
            key_types
                .iter()
                .map(|t| SortField::new(t.clone()))
                .collect(),
        )?;
        Ok(IntervalJoin {
            left,
            right,
            lo,
            hi,
            filter,
            schema,
            converter,
            key_types,
        })
    }

    /// Joins new rows of either side (or both, for a self-join) with what the other side
    /// retains and with each other, then retains them. Returns the new joined rows.
    pub fn step(
        &mut self,
        left_new: Option<RecordBatch>,
        right_new: Option<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let left_new = left_new.filter(|b| b.num_rows() > 0);
        let right_new = right_new.filter(|b| b.num_rows() > 0);
        let left_keys = match &left_new {
            Some(b) => Some(self.keys(&self.left.keys, b)?),
            None => None,
        };
        let right_keys = match &right_new {
            Some(b) => Some(self.keys(&self.right.keys, b)?),
            None => None,
        };
        // Old left × new right first, then new left × (old right ∪ new right).
        if let (Some(b), Some(k)) = (&right_new, &right_keys) {
            self.probe(&self.left.store, b, k, false, &mut out)?;
        }
        if let (Some(b), Some(k)) = (right_new, right_keys) {
            let t = self.right.time_col;
            self.right.store.insert(b, k, t)?;
        }
        if let (Some(b), Some(k)) = (&left_new, &left_keys) {
            self.probe(&self.right.store, b, k, true, &mut out)?;
        }
        if let (Some(b), Some(k)) = (left_new, left_keys) {
            let t = self.left.time_col;
            self.left.store.insert(b, k, t)?;
        }
        Ok(out)
    }

    /// Drops rows no future on-time row of the other side can match.
    pub fn evict(&mut self, left_watermark: Option<i64>, right_watermark: Option<i64>) {
        if let Some(wm) = right_watermark {
            self.left.store.evict_before(wm.saturating_sub(self.hi.ms));
        }
        if let Some(wm) = left_watermark {
            self.right.store.evict_before(wm.saturating_add(self.lo.ms));
        }
    }

    /// Rows retained by both sides.
    pub fn retained_rows(&self) -> usize {
        self.left.store.rows + self.right.store.rows
    }

    pub fn retained_bytes(&self) -> usize {
        self.left.store.bytes + self.right.store.bytes
    }

    /// Each side's retained rows (for checkpoints).
    pub fn retained(&self) -> Result<(RecordBatch, RecordBatch)> {
        Ok((
            self.left.store.concat(&self.left.plan.schema())?,
            self.right.store.concat(&self.right.plan.schema())?,
        ))
    }

    /// Replaces both sides' retained rows (from a checkpoint).
    pub fn restore(&mut self, left: RecordBatch, right: RecordBatch) -> Result<()> {
        self.left.store = Store::default();
        self.right.store = Store::default();
        if left.num_rows() > 0 {
            let k = self.keys(&self.left.keys, &left)?;
            let t = self.left.time_col;
            self.left.store.insert(left, k, t)?;
        }
        if right.num_rows() > 0 {
            let k = self.keys(&self.right.keys, &right)?;
            let t = self.right.time_col;
            self.right.store.insert(right, k, t)?;
        }
        Ok(())
    }

    fn keys(&self, exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Keys> {
        let n = batch.num_rows();
        let cols = exprs
            .iter()
            .zip(&self.key_types)
            .map(|(e, t)| {
                let a = e.evaluate(batch)?.into_array(n)?;
                Ok(if a.data_type() == t { a } else { cast(&a, t)? })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let rows = self.converter.convert_columns(&cols)?;
        // A NULL key joins nothing (SQL equality): such rows are never indexed or probed.
        let valid = (0..n).map(|i| cols.iter().all(|c| c.is_valid(i))).collect();
        Ok(Keys { rows, valid })
    }

    /// Joins `batch` (new rows of one side) with `store` (the other side's retained rows).
    fn probe(
        &self,
        store: &Store,
        batch: &RecordBatch,
        keys: &Keys,
        batch_is_left: bool,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        if store.rows == 0 {
            return Ok(());
        }
        let chunks: Vec<&RecordBatch> = store.chunks.iter().map(|c| &c.rows).collect();
        let ids: Vec<u64> = store.chunks.iter().map(|c| c.id).collect();
        let (my_col, their_col) = if batch_is_left {
            (self.left.time_col, self.right.time_col)
        } else {
            (self.right.time_col, self.left.time_col)
        };
        let my_times = times(batch, my_col)?;
        let their_times = chunks
            .iter()
            .map(|c| times(c, their_col))
            .collect::<Result<Vec<_>>>()?;
        let (lo, hi) = (self.lo, self.hi);
        let within = |d: i64| {
            (if lo.strict { d > lo.ms } else { d >= lo.ms })
                && (if hi.strict { d < hi.ms } else { d <= hi.ms })
        };
        let mut mine: Vec<u32> = Vec::new();
        let mut theirs: Vec<(usize, usize)> = Vec::new();
        for i in 0..batch.num_rows() {
            if !keys.valid[i] {
                continue;
            }
            let k = keys.rows.row(i);
            let Some(hits) = store.index.get(k.as_ref()) else {
                continue;
            };
            let Some(t) = my_times.get(i) else {
                continue;
            };
            for &(id, r) in hits {
                let Ok(pos) = ids.binary_search(&id) else {
                    continue;
                };
                let Some(u) = their_times[pos].get(r as usize) else {
                    continue;
                };
                let d = if batch_is_left { u - t } else { t - u };
                if within(d) {
                    mine.push(i as u32);
                    theirs.push((pos, r as usize));
                }
            }
            if mine.len() >= PAIRS_PER_BATCH {
                self.emit(batch, &mine, &chunks, &theirs, batch_is_left, out)?;
                mine.clear();
                theirs.clear();
            }
        }
        if !mine.is_empty() {
            self.emit(batch, &mine, &chunks, &theirs, batch_is_left, out)?;
        }
        Ok(())
    }

    fn emit(
        &self,
        batch: &RecordBatch,
        mine: &[u32],
        chunks: &[&RecordBatch],
        theirs: &[(usize, usize)],
        batch_is_left: bool,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let a = take_record_batch(batch, &UInt32Array::from(mine.to_vec()))?;
        let b = interleave_record_batch(chunks, theirs)?;
        let (l, r) = if batch_is_left { (a, b) } else { (b, a) };
        let mut cols = l.columns().to_vec();
        cols.extend(r.columns().iter().cloned());
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(mine.len()));
        let joined = RecordBatch::try_new_with_options(self.schema.clone(), cols, &opts)?;
        let joined = match &self.filter {
            Some(f) => {
                let m = f.evaluate(&joined)?.into_array(joined.num_rows())?;
                filter_record_batch(&joined, &super::null_as_false(m.as_boolean()))?
            }
            None => joined,
        };
        if joined.num_rows() > 0 {
            out.push(joined);
        }
        Ok(())
    }
}

impl Store {
    fn insert(&mut self, rows: RecordBatch, keys: Keys, time_col: usize) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let Keys { rows: keys, valid } = keys;
        for (i, ok) in valid.iter().enumerate() {
            if !ok {
                continue;
            }
            let k = keys.row(i);
            match self.index.get_mut(k.as_ref()) {
                Some(v) => v.push((id, i as u32)),
                None => {
                    self.index.insert(k.as_ref().into(), vec![(id, i as u32)]);
                }
            }
        }
        let times = rows
            .column(time_col)
            .as_primitive_opt::<TimestampMillisecondType>()
            .and_then(arrow::compute::max)
            .unwrap_or(i64::MIN);
        self.rows += rows.num_rows();
        self.bytes += rows.get_array_memory_size() + keys.size();
        self.chunks.push_back(Chunk {
            id,
            rows,
            keys,
            max_time: times,
        });
        Ok(())
    }

    /// Drops every chunk whose rows all lie before `t`.
    fn evict_before(&mut self, t: i64) {
        if !self.chunks.iter().any(|c| c.max_time < t) {
            return;
        }
        let (gone, kept): (Vec<Chunk>, Vec<Chunk>) =
            self.chunks.drain(..).partition(|c| c.max_time < t);
        self.chunks = kept.into();
        for c in gone {
            for i in 0..c.rows.num_rows() {
                let k = c.keys.row(i);
                if let Some(v) = self.index.get_mut(k.as_ref()) {
                    v.retain(|(id, _)| *id != c.id);
                    if v.is_empty() {
                        self.index.remove(k.as_ref());
                    }
                }
            }
            self.rows -= c.rows.num_rows();
            self.bytes = self
                .bytes
                .saturating_sub(c.rows.get_array_memory_size() + c.keys.size());
        }
    }

    fn concat(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        let parts: Vec<&RecordBatch> = self.chunks.iter().map(|c| &c.rows).collect();
        Ok(arrow::compute::concat_batches(schema, parts)?)
    }
}

/// A batch's event times (`None` where NULL: such a row meets nothing).
struct Times<'a> {
    values: &'a [i64],
    nulls: Option<&'a arrow::buffer::NullBuffer>,
}

impl Times<'_> {
    fn get(&self, i: usize) -> Option<i64> {
        match self.nulls {
            Some(n) if n.is_null(i) => None,
            _ => self.values.get(i).copied(),
        }
    }
}

fn times(batch: &RecordBatch, col: usize) -> Result<Times<'_>> {
    let a = batch
        .column(col)
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| {
            crate::error::Error::Config(
                "internal: an interval join's time column is not a timestamp".into(),
            )
        })?;
    Ok(Times {
        values: a.values(),
        nulls: a.nulls(),
    })
}
