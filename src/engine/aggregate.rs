//! Incremental GROUP BY state: one set of DataFusion accumulators per group.
//!
//! Each micro-batch first goes through DataFusion's own *partial* aggregate (vectorised, one
//! row of partial state per group the batch touches). Those rows are merged here into the
//! accumulators of their groups (`Accumulator::merge_batch`), and only the touched groups are
//! evaluated. So the cost of a batch is the batch plus the groups it touches, never the
//! history; the state is one accumulator set per live group. Windowed groups are indexed by
//! window end so the watermark can finalize and evict them.
//!
//! The common aggregates — count, sum, min, max over integers, floats and timestamps, and avg
//! over floats — skip DataFusion's per-group `Accumulator`: each is a [`Column`] whose state
//! is a cell or two in its group's row of [`Cells`] (a group's cells share one cache line,
//! indexed by group slot), and a batch of partial rows is merged in one loop per aggregate
//! with no per-row allocation. `count(DISTINCT x)` gives each value it has seen a small id
//! and keeps each group's ids in a set of its own: a short sorted list, a bitmap over the ids
//! once that is smaller, or a hash set for a long but sparse one ([`Distinct`], [`IdSet`]).
//! Every other aggregate keeps one `Accumulator` per group.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, TimeUnit, UInt64Type};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

use crate::engine::key_index::{prefetch, KeyIndex, AHEAD};
use crate::engine::result::{row_converter, SlotHint};
use crate::error::{Error, Result};

/// Which group column is a window start, and the window's length.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    pub group_col: usize,
    pub size_ms: i64,
}

struct Slot {
    key: Box<[u8]>,
    /// One per aggregate; `None` where the aggregate's state is a [`Column`].
    accs: Vec<Option<Box<dyn Accumulator>>>,
}

/// See [`GroupState`]'s `meta`. 32 bytes, aligned: two per cache line, none straddling two.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(32))]
struct GroupMeta {
    /// The slot holds a group.
    live: bool,
    /// For a view whose rows are derived from its groups ([`crate::engine::derived`]): the
    /// group's row is in the view (it passed HAVING when last evaluated).
    shown: bool,
    /// Where the group's row was put in the view's result last time ([`GroupState::result_hint`]).
    hint: SlotHint,
    /// For a view whose rows are derived from its groups: a digest of the row last emitted.
    digest: u64,
}
const _: () = assert!(std::mem::size_of::<GroupMeta>() == 32);

/// How a common aggregate merges and evaluates, with its state in columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fast {
    Count,
    SumInt,
    SumFloat,
    MinInt,
    MaxInt,
    MinFloat,
    MaxFloat,
    /// avg over floats: state (count, sum).
    Avg,
    /// count(DISTINCT x): state, a list of the distinct values (see [`Distinct`]).
    CountDistinct,
}

/// A cache line of aggregate state: eight cells.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Line([u64; 8]);

/// The state of every aggregate kept in columns ([`Column`]), for every slot: a group's
/// cells side by side, cell 0 its flags (bit `k` set once column `k` has seen a non-NULL
/// value), then each column's cells (an integer, or a float's bits; avg, a count and a sum).
///
/// A round touches thousands of groups whose state its decoding has pushed out of the caches.
/// With one array per aggregate, merging a group's partial row loaded one cache line per
/// aggregate (two for a sum, with its flag); here a group's cells are one line (up to eight
/// cells; a group never straddles two), loaded once, ahead of the merge ([`Cells::prefetch`]).
#[derive(Debug, Default)]
struct Cells {
    lines: Vec<Line>,
    /// Cells per group: a power of two up to 8, or a multiple of 8 (0: no column state).
    stride: usize,
}

impl Cells {
    fn new(width: usize) -> Cells {
        let stride = match width {
            0 => 0,
            1..=8 => width.next_power_of_two(),
            _ => width.div_ceil(8) * 8,
        };
        Cells {
            lines: Vec::new(),
            stride,
        }
    }

    #[inline]
    fn get(&self, slot: usize, cell: usize) -> u64 {
        let i = slot * self.stride + cell;
        self.lines[i >> 3].0[i & 7]
    }

    #[inline]
    fn set(&mut self, slot: usize, cell: usize, v: u64) {
        let i = slot * self.stride + cell;
        self.lines[i >> 3].0[i & 7] = v;
    }

    /// Whether `slot` has cells (it had a group once).
    fn holds(&self, slot: usize) -> bool {
        (slot + 1) * self.stride <= self.lines.len() * 8
    }

    /// Makes room for `slot` and zeroes its cells.
    fn reset(&mut self, slot: usize) {
        if self.stride == 0 {
            return;
        }
        let end = ((slot + 1) * self.stride).div_ceil(8);
        if self.lines.len() < end {
            self.lines
                .resize(end.max(self.lines.len() * 2), Line::default());
        }
        for c in 0..self.stride {
            self.set(slot, c, 0);
        }
    }

    /// Starts loading `slot`'s cells.
    #[inline]
    fn prefetch(&self, slot: usize) {
        if let Some(l) = self.lines.get((slot * self.stride) >> 3) {
            prefetch(l);
        }
    }

    fn clear(&mut self) {
        self.lines.clear();
    }

    fn size_bytes(&self) -> usize {
        self.lines.len() * 64
    }
}

/// One aggregate's state for every slot: its cells in [`Cells`].
#[derive(Debug)]
struct Column {
    kind: Fast,
    /// Its first cell in each group's cells.
    cell: usize,
    /// Its flag in cell 0: the slot has seen a non-NULL value (sum, min, max: NULL until then;
    /// count: always set).
    bit: u64,
    /// min/max over a changelog: every value each group holds, with its multiplicity (floats
    /// as their total-order bits, see [`float_key`]), so a value can be taken back out.
    bags: Option<Vec<BTreeMap<i64, u32>>>,
    /// count(DISTINCT x): the values each group has seen (its count is in its cell).
    distinct: Option<Distinct>,
}

/// The values every group of a `count(DISTINCT x)` has seen. Each distinct value gets a small
/// id (`ids`, by its row-format bytes; counted by the groups that hold it, and given back when
/// none does), so a value is looked up in a table as large as the values, and each group
/// holds its values' ids in an [`IdSet`] of its own. A few groups with many values each (the
/// distinct viewers per gender and category) keep a bitmap over the ids: a kilobyte or two per
/// group that stays in the caches, where one set of every (group, value) pair grew to
/// megabytes. Many groups with few values each keep short sorted lists.
struct Distinct {
    /// Row format of the values.
    converter: RowConverter,
    /// A value's row-format bytes -> its id.
    ids: KeyIndex,
    /// Per id: the value's row-format bytes (`None`: a free id) and how many groups hold it.
    values: Vec<Option<Box<[u8]>>>,
    refs: Vec<u32>,
    free_ids: Vec<u32>,
    /// Per slot: the ids of its values.
    members: Vec<IdSet>,
}

impl std::fmt::Debug for Distinct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Distinct({} pairs)", self.pairs())
    }
}

/// A group's distinct value ids, in the smallest of three forms that keeps an insert cheap:
/// a sorted list (4 bytes an id) while it is short; a bitmap over every id given out (one bit
/// an id given out) once that is smaller; a hash set (about 8 bytes an id) for a long list
/// that is still far smaller than a bitmap, where inserting into the middle of the list
/// would move kilobytes.
#[derive(Debug, Clone)]
enum IdSet {
    Sorted(Vec<u32>),
    Bits { words: Vec<u64>, len: usize },
    Hashed(std::collections::HashSet<u32, ahash::RandomState>),
}

impl Default for IdSet {
    fn default() -> Self {
        IdSet::Sorted(Vec::new())
    }
}

impl IdSet {
    /// A list longer than this many ids is a bitmap if that is smaller.
    const SHORT: usize = 16;
    /// A list is never longer than this many ids (an insert moves at most 4 KiB).
    const LONG: usize = 1024;

    /// Adds `id`; `ids_out` is the number of ids given out (all below it). Returns whether
    /// the id is new to the set.
    fn insert(&mut self, id: u32, ids_out: usize) -> bool {
        match self {
            IdSet::Sorted(v) => {
                let Err(at) = v.binary_search(&id) else {
                    return false;
                };
                v.insert(at, id);
                if v.len() > Self::SHORT && v.len() * 32 > ids_out {
                    *self = Self::bitmap(v.iter().copied(), v.len(), ids_out);
                } else if v.len() > Self::LONG {
                    *self = IdSet::Hashed(v.iter().copied().collect());
                }
                true
            }
            IdSet::Hashed(set) => {
                if !set.insert(id) {
                    return false;
                }
                if set.len() * 64 > ids_out {
                    *self = Self::bitmap(set.iter().copied(), set.len(), ids_out);
                }
                true
            }
            IdSet::Bits { words, len } => {
                let (w, bit) = (id as usize / 64, 1u64 << (id % 64));
                if w >= words.len() {
                    words.resize(ids_out.div_ceil(64).max(w + 1), 0);
                }
                if words[w] & bit != 0 {
                    return false;
                }
                words[w] |= bit;
                *len += 1;
                true
            }
        }
    }

    /// A bitmap holding `ids` (`len` of them, all below `ids_out`).
    fn bitmap(ids: impl Iterator<Item = u32>, len: usize, ids_out: usize) -> IdSet {
        let mut words = vec![0u64; ids_out.div_ceil(64)];
        for i in ids {
            words[i as usize / 64] |= 1 << (i % 64);
        }
        IdSet::Bits { words, len }
    }

    fn len(&self) -> usize {
        match self {
            IdSet::Sorted(v) => v.len(),
            IdSet::Bits { len, .. } => *len,
            IdSet::Hashed(set) => set.len(),
        }
    }

    /// The ids held (in increasing order but for a hash set's).
    fn iter(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            IdSet::Sorted(v) => Box::new(v.iter().copied()),
            IdSet::Bits { words, .. } => Box::new(
                words
                    .iter()
                    .enumerate()
                    .flat_map(|(w, &bits)| BitIter(bits).map(move |b| (w * 64) as u32 + b)),
            ),
            IdSet::Hashed(set) => Box::new(set.iter().copied()),
        }
    }

    /// Where the set keeps `id`, to load ahead of [`IdSet::insert`].
    fn prefetch(&self, id: u32) {
        match self {
            IdSet::Sorted(v) => {
                if let Some(x) = v.get(v.len() / 2) {
                    prefetch(x);
                }
            }
            IdSet::Bits { words, .. } => {
                if let Some(x) = words.get(id as usize / 64) {
                    prefetch(x);
                }
            }
            IdSet::Hashed(_) => {}
        }
    }

    fn size_bytes(&self) -> usize {
        24 + match self {
            IdSet::Sorted(v) => v.capacity() * 4,
            IdSet::Bits { words, .. } => words.capacity() * 8,
            IdSet::Hashed(set) => set.capacity() * 5,
        }
    }
}

/// The positions of the set bits of a word, lowest first.
struct BitIter(u64);

impl Iterator for BitIter {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(b)
    }
}

impl Distinct {
    fn new(value_type: &DataType) -> Result<Self> {
        Ok(Distinct {
            converter: RowConverter::new(vec![SortField::new(value_type.clone())])?,
            ids: KeyIndex::default(),
            values: Vec::new(),
            refs: Vec::new(),
            free_ids: Vec::new(),
            members: Vec::new(),
        })
    }

    /// Number of (group, value) pairs held.
    fn pairs(&self) -> usize {
        self.members.iter().map(IdSet::len).sum()
    }

    /// The id of `value`, given one if it has none.
    fn id_of(&mut self, value: &[u8], held: Option<usize>) -> u32 {
        if let Some(id) = held.or_else(|| self.ids.get(value)) {
            return id as u32;
        }
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.values[id as usize] = Some(value.into());
                id
            }
            None => {
                self.values.push(Some(value.into()));
                self.refs.push(0);
                (self.values.len() - 1) as u32
            }
        };
        self.ids.insert(value, id as usize);
        id
    }

    /// Adds each partial row's list of values to its slot's set; returns, per row, how many
    /// of its values were new to the set.
    fn merge(&mut self, lists: &ArrayRef, slots: &[usize]) -> Result<Vec<i64>> {
        let lists = lists
            .as_list_opt::<i32>()
            .ok_or_else(|| Error::Config("internal: count(DISTINCT) state is not a list".into()))?;
        // Only the values these lists cover: a slice of a longer list (a chunk of a batch's
        // partial rows) shares all of its values.
        let offsets = lists.value_offsets();
        let first = offsets.first().copied().unwrap_or(0) as usize;
        let last = offsets.last().copied().unwrap_or(0) as usize;
        let values = lists.values().slice(first, last - first);
        let rows = self
            .converter
            .convert_columns(std::slice::from_ref(&values))?;
        // Every value's id, looked up together (a value in several lists is looked up again,
        // by then in the caches); values new to every set get theirs below.
        let held = self
            .ids
            .get_batch(rows.num_rows(), |v| Some(rows.row(v).data()));
        let mut pairs = Vec::with_capacity(rows.num_rows());
        for i in 0..slots.len() {
            if lists.is_null(i) {
                continue;
            }
            let start = offsets[i] as usize - first;
            let end = offsets[i + 1] as usize - first;
            for (v, &held) in held[start..end].iter().enumerate() {
                let v = start + v;
                if values.is_null(v) {
                    continue;
                }
                let id = self.id_of(rows.row(v).data(), held);
                pairs.push((i, id));
            }
        }
        if let Some(&top) = slots.iter().max() {
            if self.members.len() <= top {
                self.members.resize_with(top + 1, IdSet::default);
            }
        }
        let ids_out = self.values.len();
        let mut added = vec![0i64; slots.len()];
        for k in 0..pairs.len() {
            if let Some(&(i, id)) = pairs.get(k + AHEAD) {
                self.members[slots[i]].prefetch(id);
            }
            let (i, id) = pairs[k];
            if !self.members[slots[i]].insert(id, ids_out) {
                continue;
            }
            self.refs[id as usize] += 1;
            added[i] += 1;
        }
        Ok(added)
    }

    /// Forgets a slot's values; a value no other slot holds gives its id back.
    fn reset(&mut self, slot: usize) {
        let Some(ids) = self.members.get_mut(slot).map(std::mem::take) else {
            return;
        };
        for id in ids.iter() {
            let n = &mut self.refs[id as usize];
            *n -= 1;
            if *n == 0 {
                if let Some(v) = self.values[id as usize].take() {
                    self.ids.remove(&v);
                }
                self.free_ids.push(id);
            }
        }
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.values.clear();
        self.refs.clear();
        self.free_ids.clear();
        self.members.clear();
    }

    /// The state of the given slots: a list of each one's values, typed `field`.
    fn state(&self, slots: &[usize], field: &DataType) -> Result<ArrayRef> {
        let none = IdSet::default();
        let held: Vec<&IdSet> = slots
            .iter()
            .map(|&s| self.members.get(s).unwrap_or(&none))
            .collect();
        let lengths = held.iter().map(|ids| ids.len());
        let parser = self.converter.parser();
        let values = self
            .converter
            .convert_rows(
                held.iter()
                    .flat_map(|ids| ids.iter())
                    .filter_map(|id| self.values.get(id as usize)?.as_deref())
                    .map(|v| parser.parse(v)),
            )?
            .remove(0);
        let item = match field {
            DataType::List(f) => f.clone(),
            _ => Arc::new(arrow::datatypes::Field::new_list_field(
                values.data_type().clone(),
                true,
            )),
        };
        let list = arrow::array::ListArray::try_new(
            item,
            arrow::buffer::OffsetBuffer::from_lengths(lengths),
            values,
            None,
        )?;
        let list: ArrayRef = Arc::new(list);
        Ok(if list.data_type() == field {
            list
        } else {
            cast(&list, field)?
        })
    }

    fn size_bytes(&self) -> usize {
        self.ids.len() * 128
            + self
                .values
                .iter()
                .flatten()
                .map(|v| v.len() + 16)
                .sum::<usize>()
            + self.refs.len() * 4
            + self.members.iter().map(IdSet::size_bytes).sum::<usize>()
    }
}

/// An `f64` as an `i64` ordered as `f64::total_cmp` orders floats.
fn float_key(f: f64) -> i64 {
    let b = f.to_bits() as i64;
    b ^ ((((b >> 63) as u64) >> 1) as i64)
}

/// The inverse of [`float_key`].
fn key_float(k: i64) -> f64 {
    f64::from_bits((k ^ ((((k >> 63) as u64) >> 1) as i64)) as u64)
}

impl Fast {
    fn of(agg: &AggregateFunctionExpr, state: &[DataType]) -> Option<Fast> {
        use DataType::*;
        if agg.is_distinct() {
            return match (agg.fun().name(), state) {
                ("count", [List(_)]) if agg.expressions().len() == 1 => Some(Fast::CountDistinct),
                _ => None,
            };
        }
        let int = |t: &DataType| matches!(t, Int64 | Timestamp(TimeUnit::Millisecond, _));
        let ret = agg.field().data_type().clone();
        match (agg.fun().name(), state) {
            ("count", [Int64]) => Some(Fast::Count),
            ("sum", [Int64]) if ret == Int64 => Some(Fast::SumInt),
            ("sum", [Float64]) if ret == Float64 => Some(Fast::SumFloat),
            ("min", [t]) if int(t) && ret == *t => Some(Fast::MinInt),
            ("max", [t]) if int(t) && ret == *t => Some(Fast::MaxInt),
            ("min", [Float64]) if ret == Float64 => Some(Fast::MinFloat),
            ("max", [Float64]) if ret == Float64 => Some(Fast::MaxFloat),
            ("avg", [UInt64, Float64]) if ret == Float64 => Some(Fast::Avg),
            _ => None,
        }
    }
}

/// Folds non-NULL partial values into their slots' cell: the first value a slot sees is
/// taken as it is, later ones are combined with what the slot holds.
fn merge_values<T: arrow::datatypes::ArrowPrimitiveType>(
    values: &arrow::array::PrimitiveArray<T>,
    slots: &[usize],
    cells: &mut Cells,
    (cell, bit): (usize, u64),
    (to, from): Bits<T::Native>,
    combine: fn(T::Native, T::Native) -> T::Native,
) {
    for (i, &s) in slots.iter().enumerate() {
        if values.is_null(i) {
            continue;
        }
        let v = values.value(i);
        let flags = cells.get(s, 0);
        let merged = if flags & bit != 0 {
            combine(from(cells.get(s, cell)), v)
        } else {
            v
        };
        cells.set(s, cell, to(merged));
        cells.set(s, 0, flags | bit);
    }
}

/// How a value is kept in a cell, and read back.
type Bits<T> = (fn(T) -> u64, fn(u64) -> T);

const INT: Bits<i64> = (|v| v as u64, |c| c as i64);
const FLOAT: Bits<f64> = (f64::to_bits, f64::from_bits);

impl Column {
    /// The number of cells a column of `kind` takes in each group's cells.
    fn width(kind: Fast) -> usize {
        if kind == Fast::Avg {
            2
        } else {
            1
        }
    }

    /// A column for aggregates of `kind`, whose partial state has the types `state`, at `cell`
    /// with flag `bit`.
    fn new(kind: Fast, state: &[DataType], cell: usize, bit: u64) -> Result<Self> {
        let distinct = match (kind, state) {
            (Fast::CountDistinct, [DataType::List(item)]) => Some(Distinct::new(item.data_type())?),
            _ => None,
        };
        Ok(Column {
            kind,
            cell,
            bit,
            bags: None,
            distinct,
        })
    }

    fn is_min_max(&self) -> bool {
        matches!(
            self.kind,
            Fast::MinInt | Fast::MaxInt | Fast::MinFloat | Fast::MaxFloat
        )
    }

    /// Adds (or with `retract` removes) raw values to their slots' bags.
    fn bag_values(
        &mut self,
        values: &ArrayRef,
        slots: &[Option<usize>],
        retract: bool,
    ) -> Result<()> {
        let Some(bags) = self.bags.as_mut() else {
            return Ok(());
        };
        // Bag keys: integers as they are, floats by their total-order bits.
        let keys: Vec<Option<i64>> = match self.kind {
            Fast::MinFloat | Fast::MaxFloat => cast(values, &DataType::Float64)?
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map(float_key))
                .collect(),
            _ => cast(values, &DataType::Int64)?
                .as_primitive::<Int64Type>()
                .iter()
                .collect(),
        };
        for (slot, key) in slots.iter().zip(keys) {
            let (Some(s), Some(key)) = (*slot, key) else {
                continue;
            };
            if bags.len() <= s {
                bags.resize_with(s + 1, BTreeMap::new);
            }
            let n = bags[s].entry(key).or_insert(0);
            if retract {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    bags[s].remove(&key);
                }
            } else {
                *n += 1;
            }
        }
        Ok(())
    }

    fn valid(&self, cells: &Cells, slot: usize) -> bool {
        cells.get(slot, 0) & self.bit != 0
    }

    fn set_valid(&self, cells: &mut Cells, slot: usize, valid: bool) {
        let flags = cells.get(slot, 0);
        let flags = if valid {
            flags | self.bit
        } else {
            flags & !self.bit
        };
        cells.set(slot, 0, flags);
    }

    fn int(&self, cells: &Cells, slot: usize) -> i64 {
        cells.get(slot, self.cell) as i64
    }

    fn float(&self, cells: &Cells, slot: usize) -> f64 {
        f64::from_bits(cells.get(slot, self.cell))
    }

    /// avg: the count of values, and their sum.
    fn avg_state(&self, cells: &Cells, slot: usize) -> (u64, f64) {
        (
            cells.get(slot, self.cell),
            f64::from_bits(cells.get(slot, self.cell + 1)),
        )
    }

    fn set_avg_state(&self, cells: &mut Cells, slot: usize, (n, sum): (u64, f64)) {
        cells.set(slot, self.cell, n);
        cells.set(slot, self.cell + 1, sum.to_bits());
    }

    /// Sets each slot's min or max from its bag.
    fn refresh(&mut self, cells: &mut Cells, slots: &[usize]) {
        let Some(bags) = self.bags.as_ref() else {
            return;
        };
        let max = matches!(self.kind, Fast::MaxInt | Fast::MaxFloat);
        for &s in slots {
            let Some(bag) = bags.get(s) else { continue };
            let held = if max {
                bag.last_key_value()
            } else {
                bag.first_key_value()
            };
            self.set_valid(cells, s, held.is_some());
            let k = held.map_or(0, |(&k, _)| k);
            let cell = match self.kind {
                Fast::MinFloat | Fast::MaxFloat => key_float(k).to_bits(),
                _ => k as u64,
            };
            cells.set(s, self.cell, cell);
        }
    }

    /// Resets `slot` to the empty state, its cells zeroed by [`Cells::reset`] already.
    fn reset(&mut self, cells: &mut Cells, slot: usize) {
        if matches!(self.kind, Fast::Count | Fast::CountDistinct) {
            self.set_valid(cells, slot, true);
        }
        if let Some(bag) = self.bags.as_mut().and_then(|b| b.get_mut(slot)) {
            bag.clear();
        }
        if let Some(d) = self.distinct.as_mut() {
            d.reset(slot);
        }
    }

    /// Merges partial state rows into their slots (`slots[i]` for row `i`). With `retract`,
    /// the rows are taken out instead (count, sum and avg; min and max take theirs out of their
    /// bags through [`GroupState::apply_raw`]: see [`GroupState::retractable`]).
    fn merge(
        &mut self,
        cells: &mut Cells,
        state: &[ArrayRef],
        slots: &[usize],
        retract: bool,
    ) -> Result<()> {
        if retract {
            return self.retract(cells, state, slots);
        }
        let at = (self.cell, self.bit);
        match self.kind {
            Fast::CountDistinct => {
                let Some(d) = self.distinct.as_mut() else {
                    return Err(Error::Config(
                        "internal: count(DISTINCT) without its sets".into(),
                    ));
                };
                for (&s, n) in slots.iter().zip(d.merge(&state[0], slots)?) {
                    let held = cells.get(s, at.0) as i64;
                    cells.set(s, at.0, (held + n) as u64);
                }
            }
            Fast::Count | Fast::SumInt | Fast::MinInt | Fast::MaxInt => {
                let a = cast(&state[0], &DataType::Int64)?;
                let combine: fn(i64, i64) -> i64 = match self.kind {
                    Fast::MinInt => i64::min,
                    Fast::MaxInt => i64::max,
                    _ => i64::wrapping_add,
                };
                merge_values(
                    a.as_primitive::<Int64Type>(),
                    slots,
                    cells,
                    at,
                    INT,
                    combine,
                );
            }
            Fast::SumFloat | Fast::MinFloat | Fast::MaxFloat => {
                let combine: fn(f64, f64) -> f64 = match self.kind {
                    Fast::MinFloat => |a, b| if b.total_cmp(&a).is_lt() { b } else { a },
                    Fast::MaxFloat => |a, b| if b.total_cmp(&a).is_gt() { b } else { a },
                    _ => |a, b| a + b,
                };
                merge_values(
                    state[0].as_primitive::<Float64Type>(),
                    slots,
                    cells,
                    at,
                    FLOAT,
                    combine,
                );
            }
            Fast::Avg => {
                let c = state[0].as_primitive::<UInt64Type>();
                let v = state[1].as_primitive::<Float64Type>();
                for (i, &s) in slots.iter().enumerate() {
                    let (mut n, mut sum) = self.avg_state(cells, s);
                    if !c.is_null(i) {
                        n += c.value(i);
                    }
                    if !v.is_null(i) {
                        sum += v.value(i);
                    }
                    self.set_avg_state(cells, s, (n, sum));
                }
            }
        }
        Ok(())
    }

    /// Takes partial state rows out of their slots. Wrapping arithmetic: a retraction that
    /// arrives before the row it retracts (both in one round) comes out even.
    fn retract(&mut self, cells: &mut Cells, state: &[ArrayRef], slots: &[usize]) -> Result<()> {
        match self.kind {
            Fast::Count | Fast::SumInt => {
                let a = cast(&state[0], &DataType::Int64)?;
                let a = a.as_primitive::<Int64Type>();
                for (i, &s) in slots.iter().enumerate() {
                    if !a.is_null(i) {
                        let held = if self.valid(cells, s) {
                            self.int(cells, s)
                        } else {
                            0
                        };
                        cells.set(s, self.cell, held.wrapping_sub(a.value(i)) as u64);
                        self.set_valid(cells, s, true);
                    }
                }
            }
            Fast::SumFloat => {
                let v = state[0].as_primitive::<Float64Type>();
                for (i, &s) in slots.iter().enumerate() {
                    if !v.is_null(i) {
                        let held = if self.valid(cells, s) {
                            self.float(cells, s)
                        } else {
                            0.0
                        };
                        cells.set(s, self.cell, (held - v.value(i)).to_bits());
                        self.set_valid(cells, s, true);
                    }
                }
            }
            Fast::Avg => {
                let c = state[0].as_primitive::<UInt64Type>();
                let v = state[1].as_primitive::<Float64Type>();
                for (i, &s) in slots.iter().enumerate() {
                    let (mut n, mut sum) = self.avg_state(cells, s);
                    if !c.is_null(i) {
                        n = n.wrapping_sub(c.value(i));
                    }
                    if !v.is_null(i) {
                        sum -= v.value(i);
                    }
                    self.set_avg_state(cells, s, (n, sum));
                }
            }
            // Kept in bags: the raw values come back out through `GroupState::apply_raw`.
            _ if self.bags.is_some() => {}
            _ => {
                return Err(Error::Config(
                    "internal: min, max and count(DISTINCT) cannot take rows back".into(),
                ))
            }
        }
        Ok(())
    }

    /// Final values of the given slots, typed `out`.
    fn evaluate(&self, cells: &Cells, slots: &[usize], out: &DataType) -> Result<ArrayRef> {
        let arr: ArrayRef = match self.kind {
            Fast::Count | Fast::CountDistinct | Fast::SumInt | Fast::MinInt | Fast::MaxInt => {
                Arc::new(
                    slots
                        .iter()
                        .map(|&s| self.valid(cells, s).then(|| self.int(cells, s)))
                        .collect::<Int64Array>(),
                )
            }
            Fast::SumFloat | Fast::MinFloat | Fast::MaxFloat => Arc::new(
                slots
                    .iter()
                    .map(|&s| self.valid(cells, s).then(|| self.float(cells, s)))
                    .collect::<Float64Array>(),
            ),
            Fast::Avg => Arc::new(
                slots
                    .iter()
                    .map(|&s| {
                        let (n, sum) = self.avg_state(cells, s);
                        (n > 0).then(|| sum / n as f64)
                    })
                    .collect::<Float64Array>(),
            ),
        };
        Ok(if arr.data_type() == out {
            arr
        } else {
            cast(&arr, out)?
        })
    }

    /// Partial state of the given slots, typed as `fields` (the partial plan's state columns).
    fn state(&self, cells: &Cells, slots: &[usize], fields: &[DataType]) -> Result<Vec<ArrayRef>> {
        Ok(match self.kind {
            Fast::Avg => vec![
                Arc::new(
                    slots
                        .iter()
                        .map(|&s| Some(self.avg_state(cells, s).0))
                        .collect::<UInt64Array>(),
                ),
                Arc::new(
                    slots
                        .iter()
                        .map(|&s| Some(self.avg_state(cells, s).1))
                        .collect::<Float64Array>(),
                ),
            ],
            Fast::CountDistinct => match &self.distinct {
                Some(d) => vec![d.state(slots, &fields[0])?],
                None => {
                    return Err(Error::Config(
                        "internal: count(DISTINCT) without its sets".into(),
                    ))
                }
            },
            _ => vec![self.evaluate(cells, slots, &fields[0])?],
        })
    }

    fn size_bytes(&self) -> usize {
        self.bags
            .iter()
            .flatten()
            .map(|b| b.len() * 32)
            .sum::<usize>()
            + self.distinct.as_ref().map_or(0, |d| d.size_bytes())
    }
}

/// The accumulators of every live group of one view.
pub struct GroupState {
    aggs: Vec<Arc<AggregateFunctionExpr>>,
    /// Number of partial-state columns of each aggregate, in order.
    state_widths: Vec<usize>,
    /// Types of each aggregate's partial-state columns.
    state_types: Vec<Vec<DataType>>,
    /// Column state of the aggregates that have it (`None`: one `Accumulator` per group).
    columns: Vec<Option<Column>>,
    /// The columns' cells.
    cells: Cells,
    num_group_cols: usize,
    converter: RowConverter,
    /// Output schema: group columns, then one column per aggregate.
    out_schema: SchemaRef,
    index: KeyIndex,
    slots: Vec<Option<Slot>>,
    /// Per slot, what every touch of a group reads besides its aggregates, in one small entry
    /// (not in `slots`, whose entries are larger and hold pointers).
    meta: Vec<GroupMeta>,
    free: Vec<usize>,
    window: Option<WindowSpec>,
    /// Window end -> slots of groups in windows ending then.
    by_end: BTreeMap<i64, Vec<usize>>,
}

/// How many partial rows [`GroupState::merge_signed`] merges at a time, a chunk behind the
/// rows whose groups it is looking up.
const MERGE_CHUNK: usize = 256;

impl GroupState {
    pub fn new(
        aggs: Vec<Arc<AggregateFunctionExpr>>,
        group_schema: &SchemaRef,
        out_schema: SchemaRef,
        window: Option<WindowSpec>,
    ) -> Result<Self> {
        let state_types = aggs
            .iter()
            .map(|a| {
                a.state_fields()
                    .map(|f| f.iter().map(|x| x.data_type().clone()).collect::<Vec<_>>())
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let state_widths = state_types.iter().map(|t| t.len()).collect();
        // Cell 0 holds the flags, one bit per column: past 64 columns, an aggregate keeps an
        // `Accumulator` per group instead.
        let (mut width, mut bits) = (1, 0);
        let mut columns = Vec::with_capacity(aggs.len());
        for (a, t) in aggs.iter().zip(&state_types) {
            let column = match Fast::of(a, t) {
                Some(kind) if bits < 64 => {
                    let c = Column::new(kind, t, width, 1 << bits)?;
                    width += Column::width(kind);
                    bits += 1;
                    Some(c)
                }
                _ => None,
            };
            columns.push(column);
        }
        let cells = Cells::new(if bits == 0 { 0 } else { width });
        let converter = row_converter(group_schema.fields())?;
        Ok(GroupState {
            aggs,
            state_widths,
            state_types,
            columns,
            cells,
            num_group_cols: group_schema.fields().len(),
            converter,
            out_schema,
            index: KeyIndex::default(),
            slots: Vec::new(),
            meta: Vec::new(),
            free: Vec::new(),
            window,
            by_end: BTreeMap::new(),
        })
    }

    pub fn num_group_cols(&self) -> usize {
        self.num_group_cols
    }

    /// Where the group in `slot` put its row in the view's result last time (no hint for a
    /// group new to the slot: a slot taken over by another group starts without one).
    pub fn result_hint(&self, slot: usize) -> SlotHint {
        self.meta.get(slot).map_or(SlotHint::default(), |m| m.hint)
    }

    /// Remembers where the group in `slot` put its row (see [`GroupState::result_hint`]).
    pub fn set_result_hint(&mut self, slot: usize, hint: SlotHint) {
        if let Some(m) = self.meta.get_mut(slot).filter(|m| m.live) {
            m.hint = hint;
        }
    }

    /// Whether the group in `slot` has its row in the view, and the digest of that row
    /// (see [`crate::engine::derived`]).
    pub fn shown(&self, slot: usize) -> (bool, u64) {
        self.meta
            .get(slot)
            .map_or((false, 0), |m| (m.shown, m.digest))
    }

    /// Records whether the group in `slot` has its row in the view, and that row's digest.
    pub fn set_shown(&mut self, slot: usize, shown: bool, digest: u64) {
        if let Some(m) = self.meta.get_mut(slot).filter(|m| m.live) {
            m.shown = shown;
            m.digest = digest;
        }
    }

    /// Slots of every live group, in slot order.
    pub fn live_slots(&self) -> Vec<usize> {
        (0..self.meta.len())
            .filter(|&s| self.meta[s].live)
            .collect()
    }

    /// Number of live groups whose row is in the view (see [`GroupState::shown`]).
    pub fn shown_count(&self) -> usize {
        self.meta.iter().filter(|m| m.live && m.shown).count()
    }

    /// Number of live groups.
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Approximate bytes held by accumulators and keys.
    pub fn size_bytes(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.key.len() + s.accs.iter().flatten().map(|a| a.size()).sum::<usize>())
            .sum::<usize>()
            + self
                .columns
                .iter()
                .flatten()
                .map(|c| c.size_bytes())
                .sum::<usize>()
            + self.cells.size_bytes()
    }

    /// Merges one batch of partial aggregate state (group columns, then each aggregate's state
    /// columns) and returns the slots it touched, in first-touched order.
    pub fn merge(&mut self, partial: &RecordBatch, touched: &mut Vec<usize>) -> Result<()> {
        self.merge_signed(partial, touched, false)
    }

    /// [`GroupState::merge`], or with `retract` the opposite: takes the partial state of rows
    /// that left the input back out of their groups (only where [`GroupState::retractable`]
    /// said yes). A group may reach zero rows; the caller evicts it.
    pub fn merge_signed(
        &mut self,
        partial: &RecordBatch,
        touched: &mut Vec<usize>,
        retract: bool,
    ) -> Result<()> {
        let n = partial.num_rows();
        if n == 0 {
            return Ok(());
        }
        let g = self.num_group_cols;
        let keys = self.group_keys(partial)?;
        let window_starts = match self.window {
            Some(w) => Some(
                partial
                    .column(w.group_col)
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .ok_or_else(|| {
                        Error::Config("window column is not a millisecond timestamp".into())
                    })?
                    .clone(),
            ),
            None => None,
        };
        let slow = self.columns.iter().any(|c| c.is_none());
        if slow && retract {
            return Err(Error::Config(
                "internal: this aggregate cannot take rows back".into(),
            ));
        }
        let mut row_slots = Vec::with_capacity(n);
        let mut merged = 0;
        // The groups already held, looked up together (their loads overlap); a group new in
        // this batch is looked up again when its turn comes, in case an earlier row made it.
        let key_at = |i: usize| -> &[u8] { keys.as_ref().map_or(&[], |k| k.row(i).data()) };
        let held = self.index.get_batch(n, |i| Some(key_at(i)));
        for (i, held) in held.into_iter().enumerate() {
            let key = key_at(i);
            let slot = match held.or_else(|| self.index.get(key)) {
                Some(s) => s,
                None => {
                    let accs = self
                        .aggs
                        .iter()
                        .zip(&self.columns)
                        .map(|(a, c)| match c {
                            Some(_) => Ok(None),
                            None => a.create_accumulator().map(Some),
                        })
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    let s = match self.free.pop() {
                        Some(s) => s,
                        None => {
                            self.slots.push(None);
                            self.meta.push(GroupMeta::default());
                            self.slots.len() - 1
                        }
                    };
                    self.cells.reset(s);
                    for c in self.columns.iter_mut().flatten() {
                        c.reset(&mut self.cells, s);
                    }
                    self.slots[s] = Some(Slot {
                        key: key.into(),
                        accs,
                    });
                    self.meta[s] = GroupMeta {
                        live: true,
                        ..GroupMeta::default()
                    };
                    self.index.insert(key, s);
                    if let (Some(w), Some(starts)) = (self.window, &window_starts) {
                        let end = if starts.is_null(i) {
                            i64::MIN
                        } else {
                            starts.value(i) + w.size_ms
                        };
                        self.by_end.entry(end).or_default().push(s);
                    }
                    s
                }
            };
            // Its cells and its entry are loaded while the next rows are looked up.
            self.cells.prefetch(slot);
            if let Some(m) = self.meta.get(slot) {
                prefetch(m);
            }
            row_slots.push(slot);
            touched.push(slot);
            // The rows of the chunk before last are merged now: their cells, asked for a
            // chunk ago, have arrived and are still in the caches (merging all rows after
            // all lookups found the first rows' cells pushed out again by the later ones').
            if row_slots.len() - merged >= 2 * MERGE_CHUNK {
                self.merge_columns(partial, &row_slots, merged..merged + MERGE_CHUNK, retract)?;
                merged += MERGE_CHUNK;
            }
            if !slow {
                continue;
            }
            let Some(state) = self.slots[slot].as_mut() else {
                continue;
            };
            let mut col = g;
            for (acc, &w) in state.accs.iter_mut().zip(&self.state_widths) {
                if let Some(acc) = acc {
                    let cols: Vec<ArrayRef> = (col..col + w)
                        .map(|c| partial.column(c).slice(i, 1))
                        .collect();
                    acc.merge_batch(&cols)?;
                }
                col += w;
            }
        }
        self.merge_columns(partial, &row_slots, merged..n, retract)
    }

    /// Merges the partial rows `rows` into their slots (`slots[i]` for row `i`) in every
    /// column-state aggregate.
    fn merge_columns(
        &mut self,
        partial: &RecordBatch,
        slots: &[usize],
        rows: std::ops::Range<usize>,
        retract: bool,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut col = self.num_group_cols;
        for (c, &w) in self.columns.iter_mut().zip(&self.state_widths) {
            if let Some(c) = c {
                let state: Vec<ArrayRef> = partial.columns()[col..col + w]
                    .iter()
                    .map(|a| a.slice(rows.start, rows.len()))
                    .collect();
                c.merge(&mut self.cells, &state, &slots[rows.clone()], retract)?;
            }
            col += w;
        }
        Ok(())
    }

    /// The group columns of the given groups (none for a global aggregate).
    fn group_columns(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        if self.num_group_cols == 0 {
            return Ok(Vec::new());
        }
        let parser = self.converter.parser();
        let rows: Vec<_> = slots
            .iter()
            .filter_map(|&s| self.slots[s].as_ref())
            .map(|st| parser.parse(&st.key))
            .collect();
        Ok(self.converter.convert_rows(rows)?)
    }

    /// Current values of the given groups: group columns, then one column per aggregate.
    pub fn evaluate(&mut self, slots: &[usize]) -> Result<RecordBatch> {
        self.evaluate_keyed(slots, None)
    }

    /// [`GroupState::evaluate`], given the group columns of `slots` when the caller has them
    /// (the partial batch just merged, one row per slot in order), instead of decoding the
    /// groups' keys.
    pub fn evaluate_keyed(
        &mut self,
        slots: &[usize],
        group_cols: Option<&[ArrayRef]>,
    ) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.out_schema.fields().len());
        let given = group_cols.filter(|c| {
            c.len() == self.num_group_cols
                && c.iter()
                    .zip(self.out_schema.fields())
                    .all(|(a, f)| a.len() == slots.len() && a.data_type() == f.data_type())
        });
        match given {
            Some(c) => cols.extend(c.iter().cloned()),
            None => cols.extend(self.group_columns(slots)?),
        }
        // The first pass over the groups since their merge, which later rounds of lookups
        // have pushed out of the caches: each group's entry and cells are asked for a few
        // groups ahead, so that their loads overlap.
        let live: Vec<usize> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| {
                if let Some(&a) = slots.get(i + AHEAD) {
                    if let Some(m) = self.meta.get(a) {
                        prefetch(m);
                    }
                    self.cells.prefetch(a);
                }
                self.meta[s].live.then_some(s)
            })
            .collect();
        for j in 0..self.aggs.len() {
            let field = self.out_schema.field(self.num_group_cols + j);
            if let Some(c) = &self.columns[j] {
                cols.push(c.evaluate(&self.cells, &live, field.data_type())?);
                continue;
            }
            let mut vals = Vec::with_capacity(slots.len());
            for &s in slots {
                if let Some(Some(acc)) = self.slots[s].as_mut().map(|st| st.accs[j].as_mut()) {
                    vals.push(acc.evaluate()?);
                }
            }
            let arr = if vals.is_empty() {
                arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(vals)?
            };
            let arr = if arr.data_type() != field.data_type() {
                arrow::compute::cast(&arr, field.data_type())?
            } else {
                arr
            };
            cols.push(arr);
        }
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(slots.len()));
        Ok(RecordBatch::try_new_with_options(
            self.out_schema.clone(),
            cols,
            &opts,
        )?)
    }

    /// Slots of windows that end at or before `watermark`, oldest first; they are removed from
    /// the window index (call [`GroupState::evict`] after evaluating them).
    pub fn closing(&mut self, watermark: i64) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some((&end, _)) = self.by_end.first_key_value() {
            if end > watermark {
                break;
            }
            if let Some((_, slots)) = self.by_end.pop_first() {
                out.extend(slots);
            }
        }
        out
    }

    /// Every live group's partial state, in the shape [`GroupState::merge`] takes (group
    /// columns, then each aggregate's state columns, typed as `schema`, the partial plan's
    /// output). Reading an accumulator's state may consume it (count DISTINCT hands over its
    /// set), so the groups are rebuilt from the batch returned: afterwards the state is the
    /// same as before, as a restore from the batch would make it.
    pub fn take_state(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&s| self.slots[s].is_some())
            .collect();
        if live.is_empty() {
            return Ok(RecordBatch::new_empty(schema.clone()));
        }
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        cols.extend(self.group_columns(&live)?);
        for (j, &w) in self.state_widths.iter().enumerate() {
            if let Some(c) = &self.columns[j] {
                cols.extend(c.state(&self.cells, &live, &self.state_types[j])?);
                continue;
            }
            let mut per_col: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(live.len()); w];
            for &s in &live {
                if let Some(Some(acc)) = self.slots[s].as_mut().map(|st| st.accs[j].as_mut()) {
                    for (c, v) in acc.state()?.into_iter().enumerate().take(w) {
                        per_col[c].push(v);
                    }
                }
            }
            cols.extend(
                per_col
                    .into_iter()
                    .map(ScalarValue::iter_to_array)
                    .collect::<datafusion::error::Result<Vec<_>>>()?,
            );
        }
        let cols = cols
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    arrow::compute::cast(&c, f.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(live.len()));
        let batch = RecordBatch::try_new_with_options(
            Arc::new(arrow::datatypes::Schema::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            )),
            cols,
            &opts,
        )?;
        // Groups come back in slots 0.. in `live` order: move the kept values with them.
        let bags: Vec<Option<Vec<BTreeMap<i64, u32>>>> = self
            .columns
            .iter_mut()
            .map(|c| {
                c.as_mut().and_then(|c| c.bags.as_mut()).map(|b| {
                    live.iter()
                        .map(|&s| b.get_mut(s).map(std::mem::take).unwrap_or_default())
                        .collect()
                })
            })
            .collect();
        self.clear();
        self.merge(&batch, &mut Vec::new())?;
        for (c, b) in self.columns.iter_mut().zip(bags) {
            if let (Some(c), Some(b)) = (c.as_mut(), b) {
                c.bags = Some(b);
            }
        }
        Ok(batch)
    }

    /// Whether rows can be taken back out of these aggregates, as a view over a keyed table or
    /// another view needs when a row is replaced or removed: yes for count, for sum and avg
    /// whose inputs are never NULL (a sum of no values is NULL, which subtracting cannot
    /// know), and for min and max once [`GroupState::keep_values`] is on. Inside, the position
    /// among the aggregates of a count of every row (`count(*)`), which tells when a group is
    /// empty; `Some(None)` when nothing counts the rows, which is enough only for a group that
    /// can never empty. `input` is the aggregate's input schema.
    pub fn retractable(&self, input: &arrow::datatypes::Schema) -> Option<Option<usize>> {
        let never_null = |a: &AggregateFunctionExpr| {
            a.expressions()
                .iter()
                .all(|e| matches!(e.nullable(input), Ok(false)))
        };
        let mut count_star = None;
        for (j, (a, c)) in self.aggs.iter().zip(&self.columns).enumerate() {
            match c.as_ref()?.kind {
                Fast::Count if never_null(a) => count_star = count_star.or(Some(j)),
                Fast::Count | Fast::Avg => {}
                Fast::SumInt | Fast::SumFloat if never_null(a) => {}
                Fast::MinInt | Fast::MaxInt | Fast::MinFloat | Fast::MaxFloat
                    if c.as_ref()?.bags.is_some() => {}
                _ => return None,
            }
        }
        Some(count_star)
    }

    /// The value of the `j`th aggregate, a count, for a group.
    pub fn count(&self, j: usize, slot: usize) -> i64 {
        match &self.columns[j] {
            Some(c) if c.kind == Fast::Count && self.cells.holds(slot) => c.int(&self.cells, slot),
            _ => 0,
        }
    }

    /// The min and max aggregates (positions), whose raw values a view over a changelog keeps
    /// in per-group bags.
    pub fn min_max(&self) -> Vec<usize> {
        (0..self.aggs.len())
            .filter(|&j| self.columns[j].as_ref().is_some_and(|c| c.is_min_max()))
            .collect()
    }

    /// Keeps every raw value of the min and max aggregates per group, so that they can be
    /// taken back out ([`GroupState::apply_raw`]).
    pub fn keep_values(&mut self) {
        for c in self.columns.iter_mut().flatten() {
            if c.is_min_max() {
                c.bags = Some(Vec::new());
            }
        }
    }

    /// The row-format keys of `batch`'s leading group columns (`None` without GROUP BY: every
    /// row is in the one group, whose key is empty).
    fn group_keys(&self, batch: &RecordBatch) -> Result<Option<Rows>> {
        let g = self.num_group_cols;
        if g == 0 {
            return Ok(None);
        }
        Ok(Some(self.converter.convert_columns(&batch.columns()[..g])?))
    }

    /// Adds (or with `retract` removes) rows of raw values: the group columns, then one column
    /// per [`GroupState::min_max`] aggregate. Groups must exist (merge the rows' partial state
    /// first); call [`GroupState::refresh`] on the touched groups afterwards.
    pub fn apply_raw(&mut self, raw: &RecordBatch, retract: bool) -> Result<()> {
        if raw.num_rows() == 0 {
            return Ok(());
        }
        let g = self.num_group_cols;
        let keys = self.group_keys(raw)?;
        let slots: Vec<Option<usize>> = (0..raw.num_rows())
            .map(|i| {
                let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(i).data());
                self.index.get(key)
            })
            .collect();
        for (n, j) in self.min_max().into_iter().enumerate() {
            if let Some(c) = self.columns[j].as_mut() {
                c.bag_values(raw.column(g + n), &slots, retract)?;
            }
        }
        Ok(())
    }

    /// Sets the min and max of the given groups from their kept values.
    pub fn refresh(&mut self, slots: &[usize]) {
        for c in self.columns.iter_mut().flatten() {
            c.refresh(&mut self.cells, slots);
        }
    }

    /// Forgets every group.
    pub fn clear(&mut self) {
        for c in self.columns.iter_mut().flatten() {
            if let Some(b) = c.bags.as_mut() {
                b.clear();
            }
            if let Some(d) = c.distinct.as_mut() {
                d.clear();
            }
        }
        self.cells.clear();
        self.index.clear();
        self.slots.clear();
        self.meta.clear();
        self.free.clear();
        self.by_end.clear();
    }

    /// Drops the state of the given groups.
    pub fn evict(&mut self, slots: &[usize]) {
        for &s in slots {
            if let Some(st) = self.slots[s].take() {
                self.index.remove(&st.key);
                self.meta[s] = GroupMeta::default();
                self.free.push(s);
                for c in self.columns.iter_mut().flatten() {
                    if let Some(bag) = c.bags.as_mut().and_then(|b| b.get_mut(s)) {
                        *bag = BTreeMap::new();
                    }
                    if let Some(d) = c.distinct.as_mut() {
                        d.reset(s);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ListBuilder, StringBuilder};
    use arrow::datatypes::Field;

    fn lists(rows: &[Option<&[Option<&str>]>]) -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for r in rows {
            match r {
                Some(values) => {
                    for v in *values {
                        b.values().append_option(*v);
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        Arc::new(b.finish())
    }

    /// The values of each slot, sorted, as the state reports them.
    fn held(d: &Distinct, slots: &[usize]) -> Vec<Vec<String>> {
        let field = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        let state = d.state(slots, &field).unwrap();
        let state = state.as_list::<i32>();
        (0..slots.len())
            .map(|i| {
                let v = state.value(i);
                let mut v: Vec<String> = v
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.unwrap_or("").to_string())
                    .collect();
                v.sort();
                v
            })
            .collect()
    }

    /// New values counted once per slot; nulls and null lists skipped; a reset slot forgets
    /// its values, and ids given back are reused without mixing up the values of others.
    #[test]
    fn distinct_sets_count_reset_and_reuse_ids() {
        let mut d = Distinct::new(&DataType::Utf8).unwrap();
        let added = d
            .merge(
                &lists(&[
                    Some(&[Some("a"), Some("b"), Some("a")]),
                    Some(&[Some("b"), None]),
                    None,
                ]),
                &[0, 1, 2],
            )
            .unwrap();
        assert_eq!(added, vec![2, 1, 0]);
        let added = d
            .merge(&lists(&[Some(&[Some("b"), Some("c")])]), &[0])
            .unwrap();
        assert_eq!(added, vec![1]);
        assert_eq!(d.pairs(), 4);
        // Slot 0 goes: "a" and "c" are held by no slot and give their ids back; "b" stays.
        d.reset(0);
        assert_eq!(d.free_ids.len(), 2);
        assert_eq!(held(&d, &[0, 1]), vec![vec![], vec!["b".to_string()]]);
        // New values take the freed ids; "b" keeps its own.
        let added = d
            .merge(
                &lists(&[Some(&[Some("d"), Some("e"), Some("b")]), Some(&[Some("b")])]),
                &[0, 1],
            )
            .unwrap();
        assert_eq!(added, vec![3, 0]);
        assert!(d.free_ids.is_empty());
        assert_eq!(d.values.len(), 3);
        assert_eq!(
            held(&d, &[0, 1, 7]),
            vec![
                vec!["b".to_string(), "d".to_string(), "e".to_string()],
                vec!["b".to_string()],
                vec![]
            ]
        );
        d.reset(0);
        d.reset(1);
        assert_eq!((d.pairs(), d.ids.len(), d.free_ids.len()), (0, 0, 3));
    }

    /// Random merges and resets against a std set per slot. Two slots with many values each
    /// turn into bitmaps; many slots with few values stay sorted lists; once a slot with
    /// 200,000 values has given out that many ids, a slot growing past a list's length is a
    /// hash set, then a bitmap. Ids freed when slots go are reused, and every slot's count
    /// and values, and every id's count of holders, stay those of the model.
    #[test]
    fn distinct_sets_match_a_model_as_lists_bitmaps_and_hash_sets() {
        use rand::{Rng, SeedableRng};
        use std::collections::{BTreeSet, HashMap};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut d = Distinct::new(&DataType::Utf8).unwrap();
        let mut model: HashMap<usize, BTreeSet<String>> = HashMap::new();
        let mut seen = BTreeSet::new();
        for round in 0..300 {
            if round % 25 == 24 {
                // Any of slots 0..40 but 2, which is to grow through every form.
                let s = match rng.random_range(0..39) {
                    x if x >= 2 => x + 1,
                    x => x,
                };
                d.reset(s);
                model.remove(&s);
            }
            if round == 260 {
                // The big slot goes: 200,000 ids come free, for the values after.
                d.reset(41);
                model.remove(&41);
            }
            // Slots 0 and 1 see values from 2,000; slots 3..40 from 20 each; from round 150,
            // slot 2 from 5,000, after slot 41 took 200,000 values at once.
            let mut slots: Vec<usize> = vec![0, 1];
            slots.extend((0..4).map(|_| rng.random_range(3..40)));
            if round == 150 {
                slots.push(41);
            }
            if round >= 150 {
                slots.push(2);
            }
            slots.sort();
            slots.dedup();
            let owned: Vec<Vec<Option<String>>> = slots
                .iter()
                .map(|&s| match s {
                    41 => (0..200_000).map(|i| Some(format!("f{i}"))).collect(),
                    2 => (0..60)
                        .map(|_| Some(format!("h{}", rng.random_range(0..5000))))
                        .collect(),
                    _ => (0..rng.random_range(0..30))
                        .map(|_| {
                            if rng.random_ratio(1, 50) {
                                None
                            } else if s < 3 {
                                Some(format!("w{}", rng.random_range(0..2000)))
                            } else {
                                Some(format!("n{s}-{}", rng.random_range(0..20)))
                            }
                        })
                        .collect(),
                })
                .collect();
            let borrowed: Vec<Vec<Option<&str>>> = owned
                .iter()
                .map(|l| l.iter().map(|v| v.as_deref()).collect())
                .collect();
            let refs: Vec<Option<&[Option<&str>]>> =
                borrowed.iter().map(|l| Some(l.as_slice())).collect();
            let added = d.merge(&lists(&refs), &slots).unwrap();
            for (k, &s) in slots.iter().enumerate() {
                let set = model.entry(s).or_default();
                let before = set.len();
                set.extend(owned[k].iter().flatten().cloned());
                assert_eq!(
                    added[k],
                    (set.len() - before) as i64,
                    "round {round}, slot {s}"
                );
            }
            for (s, m) in d.members.iter().enumerate() {
                let form = match m {
                    IdSet::Sorted(v) if v.is_empty() => continue,
                    IdSet::Sorted(_) => "list",
                    IdSet::Bits { .. } => "bitmap",
                    IdSet::Hashed(_) => "hash set",
                };
                seen.insert((if s == 41 { 41 } else { s.min(3) }, form));
                assert_eq!(m.len(), model.get(&s).map_or(0, BTreeSet::len));
            }
        }
        // Slots 0 and 1 as bitmaps, the narrow ones (3..) as lists; slot 2 in all three forms.
        for want in [
            (0, "bitmap"),
            (1, "bitmap"),
            (2, "hash set"),
            (2, "bitmap"),
            (3, "list"),
            (41, "bitmap"),
        ] {
            assert!(seen.contains(&want), "{want:?} not in {seen:?}");
        }
        let all: Vec<usize> = (0..42).collect();
        let want: Vec<Vec<String>> = all
            .iter()
            .map(|s| {
                model
                    .get(s)
                    .map_or(Vec::new(), |v| v.iter().cloned().collect())
            })
            .collect();
        assert_eq!(held(&d, &all), want);
        assert_eq!(d.pairs(), want.iter().map(Vec::len).sum::<usize>());
        // Each id in use is counted by the slots that hold it; the others are free.
        let mut holders = vec![0u32; d.values.len()];
        for m in &d.members {
            for id in m.iter() {
                holders[id as usize] += 1;
            }
        }
        let free: std::collections::HashSet<u32> = d.free_ids.iter().copied().collect();
        for (id, v) in d.values.iter().enumerate() {
            match v {
                Some(_) => assert_eq!(holders[id], d.refs[id], "id {id}"),
                None => assert!(holders[id] == 0 && free.contains(&(id as u32)), "id {id}"),
            }
        }
        let in_use = d.values.iter().filter(|v| v.is_some()).count();
        assert_eq!(in_use + d.free_ids.len(), d.values.len());
        assert_eq!(d.ids.len(), in_use);
        // Values after the big slot went took its freed ids: no new ids were given out.
        assert!(d.values.len() < 210_000, "{}", d.values.len());
    }
}
