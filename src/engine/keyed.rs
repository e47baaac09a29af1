//! Keyed tables (customers, products): the latest row per key, by event time.
//!
//! A later row for a key replaces the earlier one; a row older (by event time) than the one
//! already held is ignored. Rows are held in a few append-only chunks with a key index kept
//! current in place, so an update costs in proportion to its rows, not to the table: lookup
//! joins probe the index ([`KeyedTable::find`], [`KeyedTable::gather`]), and the table as one
//! batch ([`KeyedTable::rows`]) is built only when a view scans all of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use arrow::array::{
    make_array, new_null_array, Array, ArrayData, ArrayRef, MutableArrayData, RecordBatch,
    RecordBatchOptions, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{interleave, take, take_record_batch};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};

use crate::engine::key_index::KeyIndex;
use crate::error::{Error, Result};

/// What one upsert changed: the rows it replaced and the rows it put in their place or added.
#[derive(Debug, Clone)]
pub struct TableDelta {
    pub removed: RecordBatch,
    pub added: RecordBatch,
}

/// A keyed table shared by the engine, which updates it between executions, and the lookup
/// joins that probe it while a plan runs.
pub type SharedTable = Arc<RwLock<KeyedTable>>;

/// Reads a shared table. A poisoned lock is used as it is: nothing in an upsert panics on its
/// input, so a panic elsewhere while holding the lock leaves the table as it was.
pub fn read(t: &SharedTable) -> RwLockReadGuard<'_, KeyedTable> {
    t.read().unwrap_or_else(|e| e.into_inner())
}

/// Updates a shared table; see [`read`].
pub fn write(t: &SharedTable) -> RwLockWriteGuard<'_, KeyedTable> {
    t.write().unwrap_or_else(|e| e.into_inner())
}

pub struct KeyedTable {
    schema: SchemaRef,
    key_col: usize,
    time_col: usize,
    converter: RowConverter,
    /// The rows ever appended and not compacted away, in chunks; `starts[c]` is the position
    /// of chunk `c`'s first row. A replaced row stays where it is, marked dead in `alive`.
    chunks: Vec<RecordBatch>,
    starts: Vec<usize>,
    alive: Vec<bool>,
    live: usize,
    /// Key -> position of its live row.
    index: KeyIndex,
    /// Some view scans the whole table every round: keep its live rows in one chunk (see
    /// [`KeyedTable::set_scanned`]).
    scanned: bool,
    /// The live rows as one batch, built when first asked for after a change.
    snapshot: Mutex<Option<RecordBatch>>,
    /// The columns of replaced rows that the readers of this table's changes use, ascending
    /// (`None`: all); see [`KeyedTable::set_delta_columns`].
    delta_columns: Option<Vec<usize>>,
}

impl KeyedTable {
    pub fn new(schema: SchemaRef, key_col: usize, time_col: usize) -> Result<Self> {
        let converter = RowConverter::new(vec![SortField::new(
            schema.field(key_col).data_type().clone(),
        )])?;
        Ok(KeyedTable {
            key_col,
            time_col,
            converter,
            chunks: Vec::new(),
            starts: Vec::new(),
            alive: Vec::new(),
            live: 0,
            index: KeyIndex::default(),
            scanned: false,
            snapshot: Mutex::new(None),
            delta_columns: None,
            schema,
        })
    }

    /// Which columns the rows an upsert replaces ([`TableDelta::removed`]) carry: `None`, all;
    /// otherwise only these, and the others are null. Gathering a replaced row is a random
    /// read per column from chunks that grow with the table, so the engine asks only for the
    /// columns that the views reading this table's changes use (the customers' changes are
    /// read for their gender and login time, not for names, e-mails and cities).
    pub fn delta_columns(&self) -> Option<&[usize]> {
        self.delta_columns.as_deref()
    }
    /// Sets [`KeyedTable::delta_columns`].
    pub fn set_delta_columns(&mut self, columns: Option<Vec<usize>>) {
        self.delta_columns = columns.map(|mut c| {
            c.sort_unstable();
            c.dedup();
            c
        });
    }

    /// Whether some view scans the whole table every round. A scanned table compacts all its
    /// live rows into one chunk after each upsert, instead of merging chunks as a log: the
    /// scan needs the live rows as one batch anyway, so each upsert copies the table once
    /// (not once for the log's merges and again for the scan), and [`KeyedTable::rows`] and
    /// the lookups' gathers read that one chunk as it is.
    pub fn set_scanned(&mut self, scanned: bool) -> Result<()> {
        self.scanned = scanned;
        if scanned {
            self.compact_whole()?;
        }
        Ok(())
    }

    /// The live rows, one per key, as one batch (built once per change, then shared).
    pub fn rows(&self) -> Result<RecordBatch> {
        let mut snap = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = snap.as_ref() {
            return Ok(b.clone());
        }
        if self.chunks.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let b = self.live_rows(0)?;
        *snap = Some(b.clone());
        Ok(b)
    }
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
    /// Column holding the key.
    pub fn key_col(&self) -> usize {
        self.key_col
    }
    pub fn len(&self) -> usize {
        self.live
    }
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
    /// Number of chunks the rows are held in (logarithmic in the number of rows).
    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }

    /// The position of each key's row (null: no such key, or a null key), for
    /// [`KeyedTable::gather`]. Keys of another type are cast to the key column's type first.
    pub fn find(&self, keys: &ArrayRef) -> Result<UInt32Array> {
        let key_type = self.schema.field(self.key_col).data_type();
        let keys = if keys.data_type() == key_type {
            keys.clone()
        } else {
            arrow::compute::cast(keys, key_type)?
        };
        let rows = self
            .converter
            .convert_columns(std::slice::from_ref(&keys))?;
        let at = self
            .index
            .get_batch(keys.len(), |i| keys.is_valid(i).then(|| rows.row(i).data()));
        Ok(at.into_iter().map(|p| p.map(|r| r as u32)).collect())
    }

    /// Columns `cols` of the rows at positions `at` (from [`KeyedTable::find`]; null
    /// positions give null values).
    pub fn gather(&self, cols: &[usize], at: &UInt32Array) -> Result<Vec<ArrayRef>> {
        if let [chunk] = &self.chunks[..] {
            return cols
                .iter()
                .map(|&c| Ok(take(chunk.column(c), at, None)?))
                .collect();
        }
        // Null positions read the one row of an all-null array after the chunks.
        let nulls = self.chunks.len();
        let picks: Vec<(usize, usize)> = at
            .iter()
            .map(|p| match p {
                Some(p) => self.locate(p as usize),
                None => (nulls, 0),
            })
            .collect();
        cols.iter()
            .map(|&c| {
                let null = new_null_array(self.schema.field(c).data_type(), 1);
                let mut values: Vec<&dyn Array> =
                    self.chunks.iter().map(|b| b.column(c).as_ref()).collect();
                values.push(null.as_ref());
                Ok(interleave(&values, &picks)?)
            })
            .collect()
    }

    /// Columns `cols` of the rows of the given keys, one value per key: null where the table
    /// holds no row for it. The key column is the key itself where the table holds it, with
    /// nothing to gather.
    pub fn columns_for_keys(&self, keys: &ArrayRef, cols: &[usize]) -> Result<Vec<ArrayRef>> {
        let at = self.find(keys)?;
        let others: Vec<usize> = cols
            .iter()
            .copied()
            .filter(|&c| c != self.key_col)
            .collect();
        let gathered = if others.is_empty() {
            Vec::new()
        } else {
            self.gather(&others, &at)?
        };
        let mut gathered = gathered.into_iter();
        cols.iter()
            .map(|&c| {
                if c != self.key_col {
                    return gathered
                        .next()
                        .ok_or_else(|| Error::Config("internal: a column not gathered".into()));
                }
                let key_type = self.schema.field(c).data_type();
                Ok(arrow::compute::nullif(
                    &arrow::compute::cast(keys, key_type)?,
                    &arrow::compute::is_null(&at)?,
                )?)
            })
            .collect()
    }

    /// The live rows of the given keys (keys without a row are skipped).
    /// With `columns` (ascending), only those are gathered; see [`KeyedTable::rows_at`].
    pub fn rows_for_keys(&self, keys: &ArrayRef, columns: Option<&[usize]>) -> Result<RecordBatch> {
        let at: UInt32Array = self.find(keys)?.iter().flatten().map(Some).collect();
        if at.is_empty() || self.chunks.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        self.rows_at(&at, columns)
    }

    /// Chunk and row within it of a position.
    fn locate(&self, pos: usize) -> (usize, usize) {
        let c = self.starts.partition_point(|&s| s <= pos) - 1;
        (c, pos - self.starts[c])
    }

    fn times(batch: &RecordBatch, col: usize) -> Result<TimestampMillisecondArray> {
        batch
            .column(col)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .cloned()
            .ok_or_else(|| Error::Config("keyed table event time is not a timestamp".into()))
    }

    /// Applies a batch of new rows; returns what changed (`None`: nothing).
    ///
    /// Costs in proportion to the batch: replaced rows are marked dead and the new ones
    /// appended as a chunk. Chunks are merged as in a log-structured merge (a chunk at least
    /// half the size of the one before it merges into it), so there are logarithmically many
    /// and each row is copied a logarithmic number of times; once dead rows outnumber live
    /// ones, everything is compacted into one chunk.
    pub fn upsert(&mut self, batch: &RecordBatch) -> Result<Option<TableDelta>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let keys = self
            .converter
            .convert_columns(&[batch.column(self.key_col).clone()])?;
        let new_t = Self::times(batch, self.time_col)?;
        let old_t = self
            .chunks
            .iter()
            .map(|c| Self::times(c, self.time_col))
            .collect::<Result<Vec<_>>>()?;
        // Winner per key within the batch: latest event time, later position on ties.
        let mut winners: HashMap<&[u8], usize, ahash::RandomState> = HashMap::default();
        for i in 0..batch.num_rows() {
            let k: &[u8] = keys.row(i).data();
            match winners.get(k) {
                Some(&j) if new_t.value(j) > new_t.value(i) => {}
                _ => {
                    winners.insert(k, i);
                }
            }
        }
        let mut take_rows: Vec<u32> = Vec::new();
        let mut replaced: Vec<u32> = Vec::new();
        let winners: Vec<(&[u8], usize)> = winners.into_iter().collect();
        let held = self.index.get_batch(winners.len(), |w| Some(winners[w].0));
        for (&(_, i), p) in winners.iter().zip(held) {
            match p {
                Some(p) => {
                    let (c, r) = self.locate(p);
                    if old_t[c].value(r) > new_t.value(i) {
                        continue;
                    }
                    replaced.push(p as u32);
                    take_rows.push(i as u32);
                }
                None => take_rows.push(i as u32),
            }
        }
        if take_rows.is_empty() {
            return Ok(None);
        }
        replaced.sort_unstable();
        let replaced = UInt32Array::from(replaced);
        let removed = self.rows_at(&replaced, self.delta_columns.as_deref())?;
        for &p in replaced.values() {
            self.alive[p as usize] = false;
        }
        self.live -= replaced.len();
        take_rows.sort_unstable();
        let take_rows = UInt32Array::from(take_rows);
        let added = take_record_batch(batch, &take_rows)?;
        let start = self.alive.len();
        self.chunks.push(added.clone());
        self.starts.push(start);
        self.alive.resize(start + added.num_rows(), true);
        self.live += added.num_rows();
        for (j, &i) in take_rows.values().iter().enumerate() {
            self.index.insert(keys.row(i as usize).data(), start + j);
        }
        *self.snapshot.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        self.merge_chunks()?;
        Ok(Some(TableDelta { removed, added }))
    }

    /// The rows at positions `at`, with only `columns` (ascending) gathered where given: the
    /// others are null, and nullable in the batch's schema. A scan that reads only those
    /// columns sees the table's own rows.
    fn rows_at(&self, at: &UInt32Array, columns: Option<&[usize]>) -> Result<RecordBatch> {
        let width = self.schema.fields().len();
        let opts = RecordBatchOptions::new().with_row_count(Some(at.len()));
        let Some(cols) = columns else {
            let all: Vec<usize> = (0..width).collect();
            let gathered = self.gather(&all, at)?;
            return Ok(RecordBatch::try_new_with_options(
                self.schema.clone(),
                gathered,
                &opts,
            )?);
        };
        let mut gathered = self.gather(cols, at)?.into_iter();
        let (mut fields, mut out) = (Vec::with_capacity(width), Vec::with_capacity(width));
        for (i, f) in self.schema.fields().iter().enumerate() {
            if cols.binary_search(&i).is_ok() {
                fields.push(f.clone());
                out.push(gathered.next().ok_or_else(|| {
                    Error::Config("internal: a table column not gathered".into())
                })?);
            } else {
                fields.push(Arc::new(f.as_ref().clone().with_nullable(true)));
                out.push(new_null_array(f.data_type(), at.len()));
            }
        }
        let schema = Schema::new_with_metadata(fields, self.schema.metadata().clone());
        Ok(RecordBatch::try_new_with_options(
            Arc::new(schema),
            out,
            &opts,
        )?)
    }

    fn merge_chunks(&mut self) -> Result<()> {
        if self.scanned {
            return self.compact_whole();
        }
        if self.alive.len() - self.live > self.live {
            return self.compact(0);
        }
        while let [.., before, last] = &self.chunks[..] {
            if last.num_rows() * 2 < before.num_rows() {
                break;
            }
            self.compact(self.chunks.len() - 2)?;
        }
        Ok(())
    }

    /// The live rows of chunks `first..` as one batch, copied once: each column is built from
    /// the runs of live rows of each chunk in turn (not filtered chunk by chunk and then
    /// concatenated, which copies every row twice).
    fn live_rows(&self, first: usize) -> Result<RecordBatch> {
        let chunks = &self.chunks[first..];
        // (chunk, first row, end) of each run of live rows.
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        for (c, (b, &s)) in chunks.iter().zip(&self.starts[first..]).enumerate() {
            let alive = &self.alive[s..s + b.num_rows()];
            let mut r = 0;
            while r < alive.len() {
                if !alive[r] {
                    r += 1;
                    continue;
                }
                let from = r;
                while r < alive.len() && alive[r] {
                    r += 1;
                }
                runs.push((c, from, r));
            }
        }
        if let ([one], [(0, 0, end)]) = (chunks, &runs[..]) {
            if *end == one.num_rows() {
                return Ok(one.clone());
            }
        }
        let rows: usize = runs.iter().map(|&(_, from, end)| end - from).sum();
        let columns = (0..self.schema.fields().len())
            .map(|col| {
                let data: Vec<ArrayData> = chunks.iter().map(|b| b.column(col).to_data()).collect();
                let mut out = MutableArrayData::new(data.iter().collect(), false, rows);
                for &(c, from, end) in &runs {
                    out.try_extend(c, from, end)?;
                }
                Ok(make_array(out.freeze()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }

    /// Holds every live row in one chunk (a no-op if they already are).
    fn compact_whole(&mut self) -> Result<()> {
        if self.chunks.len() <= 1 && self.alive.len() == self.live {
            return Ok(());
        }
        self.compact(0)
    }

    /// Replaces chunks `first..` with one chunk of their live rows, and repoints their keys.
    fn compact(&mut self, first: usize) -> Result<()> {
        let merged = self.live_rows(first)?;
        let start = self.starts[first];
        if first == 0 {
            // Every key moves: shift each position down by the dead rows before it, in one
            // pass over the index (no key is hashed again).
            let mut rank = Vec::with_capacity(self.alive.len());
            let mut live = 0;
            for &a in &self.alive {
                rank.push(live);
                live += usize::from(a);
            }
            for p in self.index.slots_mut() {
                *p = rank[*p];
            }
        } else {
            // A few small chunks at the end: repoint just their keys.
            let keys = self
                .converter
                .convert_columns(&[merged.column(self.key_col).clone()])?;
            for r in 0..merged.num_rows() {
                if let Some(p) = self.index.get_mut(keys.row(r).data()) {
                    *p = start + r;
                }
            }
        }
        self.chunks.truncate(first);
        self.starts.truncate(first);
        self.alive.truncate(start);
        self.alive.resize(start + merged.num_rows(), true);
        self.chunks.push(merged);
        self.starts.push(start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        ]))
    }

    fn batch(rows: &[(String, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    /// The replaced rows of an upsert, and the rows of given keys, carry the columns asked
    /// for (all of them by default) and nulls for the rest, across chunks.
    #[test]
    fn replaced_rows_carry_the_columns_asked_for_and_nulls_for_the_rest() {
        let rows = |r: &[(&str, i64, i64)]| -> Vec<(String, i64, i64)> {
            r.iter().map(|&(k, v, t)| (k.to_string(), v, t)).collect()
        };
        let first = rows(&[("a", 1, 10), ("b", 2, 10), ("c", 3, 10), ("e", 5, 10)]);
        let then = rows(&[("f", 6, 10)]);
        let later = rows(&[("f", 60, 20), ("a", 10, 20), ("d", 4, 20)]);
        for asked in [None, Some(vec![2, 0]), Some(vec![])] {
            let mut t = KeyedTable::new(schema(), 0, 2).unwrap();
            t.set_delta_columns(asked.clone());
            // Rows in two chunks, so that the replaced rows are gathered across them.
            t.upsert(&batch(&first)).unwrap();
            t.upsert(&batch(&then)).unwrap();
            assert_eq!(t.num_chunks(), 2);
            let d = t.upsert(&batch(&later)).unwrap().expect("rows replaced");
            let removed = &d.removed;
            assert_eq!(removed.num_rows(), 2, "{asked:?}");
            let gathered = |c: usize| asked.as_ref().is_none_or(|a| a.contains(&c));
            for c in 0..3 {
                let col = removed.column(c);
                if gathered(c) {
                    assert_eq!(col.null_count(), 0, "{asked:?} column {c}");
                    assert_eq!(removed.schema().field(c), schema().field(c));
                } else {
                    assert_eq!(col.null_count(), 2, "{asked:?} column {c}");
                    assert!(removed.schema().field(c).is_nullable());
                }
            }
            // The replaced rows are the old a and f, in table order.
            use arrow::array::AsArray;
            use arrow::datatypes::Int64Type;
            if gathered(0) {
                let keys: Vec<_> = removed.column(0).as_string::<i32>().iter().collect();
                assert_eq!(keys, [Some("a"), Some("f")]);
            }
            if gathered(1) {
                let v = removed.column(1).as_primitive::<Int64Type>();
                assert_eq!(v.values().to_vec(), [1, 6]);
            }
            if gathered(2) {
                assert_eq!(
                    KeyedTable::times(removed, 2).unwrap().values().to_vec(),
                    [10, 10]
                );
            }
            // The rows of given keys, with one column asked for.
            let keys: ArrayRef = Arc::new(StringArray::from(vec!["d", "b", "x"]));
            let got = t.rows_for_keys(&keys, Some(&[1])).unwrap();
            let v = got.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            assert_eq!(v.values().to_vec(), [4, 2]);
            assert_eq!(got.column(0).null_count(), 2);
            assert_eq!(
                t.rows_for_keys(&keys, None).unwrap().column(0).null_count(),
                0
            );
        }
    }

    /// Many small upserts with repeated, new and out-of-date keys agree with a plain map.
    #[test]
    fn upserts_match_a_latest_row_per_key_model() {
        check_against_model(false);
    }

    /// The same, for a table some view scans: its live rows stay in one chunk.
    #[test]
    fn a_scanned_table_matches_the_model_in_one_chunk() {
        check_against_model(true);
    }

    fn check_against_model(scanned: bool) {
        let mut table = KeyedTable::new(schema(), 0, 2).unwrap();
        table.set_scanned(scanned).unwrap();
        let mut model: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let mut x: u64 = 7;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        for round in 0..200 {
            let rows: Vec<(String, i64, i64)> = (0..(next() % 20))
                .map(|_| {
                    let k = format!("k{}", next() % (10 + round / 4));
                    (
                        k,
                        next() as i64 % 1000,
                        (next() % 500) as i64 + round as i64 * 3,
                    )
                })
                .collect();
            // Model: within the batch the later position wins ties; older than held is ignored.
            let mut winners: BTreeMap<&String, (i64, i64)> = BTreeMap::new();
            for (k, v, t) in &rows {
                match winners.get(k) {
                    Some(&(_, wt)) if wt > *t => {}
                    _ => {
                        winners.insert(k, (*v, *t));
                    }
                }
            }
            for (k, (v, t)) in winners {
                match model.get(k) {
                    Some(&(_, mt)) if mt > t => {}
                    _ => {
                        model.insert(k.clone(), (v, t));
                    }
                }
            }
            let before = table.rows().unwrap();
            let delta = table.upsert(&batch(&rows)).unwrap();
            let got = &table.rows().unwrap();
            // The delta is the difference: before - removed + added = after, as multisets.
            let as_set = |b: &RecordBatch| -> Vec<(String, i64, i64)> {
                let ks = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                let vs = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                let ts = KeyedTable::times(b, 2).unwrap();
                let mut v: Vec<_> = (0..b.num_rows())
                    .map(|i| (ks.value(i).to_string(), vs.value(i), ts.value(i)))
                    .collect();
                v.sort();
                v
            };
            let mut expect = as_set(&before);
            if let Some(d) = &delta {
                for r in as_set(&d.removed) {
                    let at = expect
                        .iter()
                        .position(|x| *x == r)
                        .expect("removed row was held");
                    expect.remove(at);
                }
                expect.extend(as_set(&d.added));
                expect.sort();
            }
            assert_eq!(expect, as_set(got), "delta of round {round}");
            if delta.is_none() {
                assert_eq!(as_set(&before), as_set(got));
            }
            let ks = got
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let vs = got.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            let ts = KeyedTable::times(got, 2).unwrap();
            let mut seen: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            for i in 0..got.num_rows() {
                assert!(seen
                    .insert(ks.value(i).to_string(), (vs.value(i), ts.value(i)))
                    .is_none());
            }
            assert_eq!(seen, model, "round {round}");
            // Every key is found, at its row; keys never written are not.
            let found = table.find(got.column(0)).unwrap();
            assert_eq!(found.null_count(), 0);
            let back = table.gather(&[0, 1, 2], &found).unwrap();
            let back = RecordBatch::try_new(schema(), back).unwrap();
            assert_eq!(&back, got, "round {round}");
            // A null position gathers nulls (an outer join's missing row).
            let at = UInt32Array::from(vec![found.values().first().copied(), None]);
            let outer = table.gather(&[1], &at).unwrap();
            assert_eq!(outer[0].null_count(), 1 + usize::from(got.num_rows() == 0));
            let missing: ArrayRef = Arc::new(StringArray::from(vec![Some("none"), None]));
            assert_eq!(table.find(&missing).unwrap().null_count(), 2);
            // Chunks stay logarithmic in the number of rows ever written.
            let written = table.alive.len().max(2);
            assert!(
                table.num_chunks() <= 2 + written.ilog2() as usize,
                "{} chunks for {written} rows",
                table.num_chunks()
            );
            assert!(table.alive.len() - table.len() <= table.len());
            if scanned && !table.is_empty() {
                assert_eq!(table.num_chunks(), 1, "round {round}");
                assert_eq!(table.alive.len(), table.len(), "round {round}");
            }
        }
    }
}
