//! Keyed tables (customers, products): the latest row per key, by event time.
//!
//! A later row for a key replaces the earlier one; a row older (by event time) than the one
//! already held is ignored. Held as one `RecordBatch` that lookup joins and table views scan,
//! plus a key index kept current in place. An update copies the table's rows once (a memcpy
//! bounded by the number of keys) and touches the index only for the keys it changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};

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

/// Reads a shared table (a panic elsewhere cannot leave it half-updated: upserts build the new
/// rows before swapping them in, so a poisoned lock still guards a consistent table).
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
    rows: RecordBatch,
    /// Key -> row in `rows`.
    index: HashMap<Box<[u8]>, usize, ahash::RandomState>,
}

impl KeyedTable {
    pub fn new(schema: SchemaRef, key_col: usize, time_col: usize) -> Result<Self> {
        let converter = RowConverter::new(vec![SortField::new(
            schema.field(key_col).data_type().clone(),
        )])?;
        Ok(KeyedTable {
            rows: RecordBatch::new_empty(schema.clone()),
            schema,
            key_col,
            time_col,
            converter,
            index: HashMap::default(),
        })
    }

    pub fn rows(&self) -> &RecordBatch {
        &self.rows
    }
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
    /// Column holding the key.
    pub fn key_col(&self) -> usize {
        self.key_col
    }

    /// The row of [`KeyedTable::rows`] holding each key (null: no such key, or a null key).
    /// Keys of another type are cast to the key column's type first.
    pub fn find(&self, keys: &ArrayRef) -> Result<UInt32Array> {
        let key_type = self.schema.field(self.key_col).data_type();
        let keys = if keys.data_type() == key_type {
            keys.clone()
        } else {
            arrow::compute::cast(keys, key_type)?
        };
        let rows = self.converter.convert_columns(std::slice::from_ref(&keys))?;
        Ok((0..keys.len())
            .map(|i| {
                if keys.is_null(i) {
                    return None;
                }
                self.index.get(rows.row(i).data()).map(|&r| r as u32)
            })
            .collect())
    }
    pub fn len(&self) -> usize {
        self.rows.num_rows()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.num_rows() == 0
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
    pub fn upsert(&mut self, batch: &RecordBatch) -> Result<Option<TableDelta>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let keys = self
            .converter
            .convert_columns(&[batch.column(self.key_col).clone()])?;
        let new_t = Self::times(batch, self.time_col)?;
        let old_t = Self::times(&self.rows, self.time_col)?;
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
        let mut keep = vec![true; self.rows.num_rows()];
        let mut take: Vec<u32> = Vec::new();
        let mut replaced: Vec<u32> = Vec::new();
        for (k, &i) in &winners {
            match self.index.get(*k) {
                Some(&r) if old_t.value(r) > new_t.value(i) => {}
                Some(&r) => {
                    keep[r] = false;
                    replaced.push(r as u32);
                    take.push(i as u32);
                }
                None => take.push(i as u32),
            }
        }
        if take.is_empty() {
            return Ok(None);
        }
        replaced.sort_unstable();
        let removed = take_record_batch(&self.rows, &UInt32Array::from(replaced))?;
        take.sort_unstable();
        // Rows removed before each old position, as one prefix count.
        let mut shift = Vec::with_capacity(keep.len());
        let mut gone = 0;
        for &k in &keep {
            shift.push(gone);
            gone += usize::from(!k);
        }
        let kept = filter_record_batch(&self.rows, &BooleanArray::from(keep))?;
        let added = take_record_batch(batch, &UInt32Array::from(take.clone()))?;
        self.rows = concat_batches(&self.schema, [&kept, &added])?;
        // Keep the index current without rebuilding it: surviving rows move up by the number
        // of removed rows before them; replaced and new keys point at the appended rows.
        if gone > 0 {
            for pos in self.index.values_mut() {
                *pos -= shift[*pos];
            }
        }
        let base = kept.num_rows();
        for (j, &i) in take.iter().enumerate() {
            self.index
                .insert(keys.row(i as usize).data().into(), base + j);
        }
        Ok(Some(TableDelta { removed, added }))
    }

    pub fn null_count(&self) -> usize {
        self.rows.column(self.key_col).null_count()
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

    /// Many small upserts with repeated, new and out-of-date keys agree with a plain map.
    #[test]
    fn upserts_match_a_latest_row_per_key_model() {
        let mut table = KeyedTable::new(schema(), 0, 2).unwrap();
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
            let before = table.rows().clone();
            let delta = table.upsert(&batch(&rows)).unwrap();
            let got = table.rows();
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
            // The index points at each key's row.
            for (k, &pos) in &table.index {
                let key = table
                    .converter
                    .convert_columns(&[got.column(0).slice(pos, 1)])
                    .unwrap();
                assert_eq!(key.row(0).data(), &k[..]);
            }
        }
    }
}
