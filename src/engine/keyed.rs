//! Keyed tables (customers, products): the latest row per key, by event time.
//!
//! A later row for a key replaces the earlier one; a row older (by event time) than the one
//! already held is ignored. Held as one `RecordBatch` that lookup joins and table views scan;
//! an update costs the batch plus the table's size, bounded by the number of keys.

use std::collections::HashMap;

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};

use crate::error::{Error, Result};

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

    /// Applies a batch of new rows; returns whether anything changed.
    pub fn upsert(&mut self, batch: &RecordBatch) -> Result<bool> {
        if batch.num_rows() == 0 {
            return Ok(false);
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
        for (k, &i) in &winners {
            match self.index.get(*k) {
                Some(&r) if old_t.value(r) > new_t.value(i) => {}
                Some(&r) => {
                    keep[r] = false;
                    take.push(i as u32);
                }
                None => take.push(i as u32),
            }
        }
        if take.is_empty() {
            return Ok(false);
        }
        take.sort_unstable();
        let kept = filter_record_batch(&self.rows, &BooleanArray::from(keep))?;
        let added = take_record_batch(batch, &UInt32Array::from(take))?;
        self.rows = concat_batches(&self.schema, [&kept, &added])?;
        self.reindex()?;
        Ok(true)
    }

    fn reindex(&mut self) -> Result<()> {
        let col: ArrayRef = self.rows.column(self.key_col).clone();
        let keys = self.converter.convert_columns(&[col])?;
        self.index.clear();
        for (i, k) in keys.iter().enumerate() {
            self.index.insert(k.as_ref().into(), i);
        }
        Ok(())
    }

    pub fn null_count(&self) -> usize {
        self.rows.column(self.key_col).null_count()
    }
}
