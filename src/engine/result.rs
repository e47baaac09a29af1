//! A view's current result, keyed by its key columns, and the changelog between two versions.
//!
//! Rows are held in Arrow's row format (`arrow::row`), so comparing a new row with the old one
//! is a byte comparison, and turning the live rows back into a `RecordBatch` is one call.

use std::collections::HashMap;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};

use crate::error::Result;

/// What one step changed in a view.
#[derive(Debug, Clone)]
pub struct Changes {
    /// Rows inserted or updated (full rows).
    pub upserts: Option<RecordBatch>,
    /// Rows that left the view (their last values; sinks derive ids from the key columns).
    pub deletes: Option<RecordBatch>,
}

impl Changes {
    pub fn none() -> Self {
        Changes {
            upserts: None,
            deletes: None,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.upserts.as_ref().is_none_or(|b| b.num_rows() == 0)
            && self.deletes.as_ref().is_none_or(|b| b.num_rows() == 0)
    }
    pub fn num_upserts(&self) -> usize {
        self.upserts.as_ref().map_or(0, |b| b.num_rows())
    }
    pub fn num_deletes(&self) -> usize {
        self.deletes.as_ref().map_or(0, |b| b.num_rows())
    }
}

/// The live rows of a view, one per key.
pub struct ViewResult {
    schema: SchemaRef,
    key_cols: Vec<usize>,
    key_conv: RowConverter,
    row_conv: RowConverter,
    index: HashMap<OwnedRow, usize, ahash::RandomState>,
    rows: Vec<Option<OwnedRow>>,
    seen: Vec<u64>,
    generation: u64,
    free: Vec<usize>,
    snapshot: Option<RecordBatch>,
}

impl ViewResult {
    pub fn new(schema: SchemaRef, key_cols: Vec<usize>) -> Result<Self> {
        let fields = |cols: &mut dyn Iterator<Item = usize>| {
            cols.map(|i| SortField::new(schema.field(i).data_type().clone()))
                .collect::<Vec<_>>()
        };
        // A view without key columns has one row: its key is a constant.
        let key_conv = if key_cols.is_empty() {
            RowConverter::new(vec![SortField::new(arrow::datatypes::DataType::Int8)])?
        } else {
            RowConverter::new(fields(&mut key_cols.iter().copied()))?
        };
        let row_conv = RowConverter::new(fields(&mut (0..schema.fields().len())))?;
        Ok(ViewResult {
            schema,
            key_cols,
            key_conv,
            row_conv,
            index: HashMap::default(),
            rows: Vec::new(),
            seen: Vec::new(),
            generation: 0,
            free: Vec::new(),
            snapshot: None,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
    pub fn key_cols(&self) -> &[usize] {
        &self.key_cols
    }
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn keys(&self, batch: &RecordBatch) -> Result<arrow::row::Rows> {
        if self.key_cols.is_empty() {
            let c: ArrayRef =
                std::sync::Arc::new(arrow::array::Int8Array::from(vec![0i8; batch.num_rows()]));
            return Ok(self.key_conv.convert_columns(&[c])?);
        }
        let cols: Vec<ArrayRef> = self
            .key_cols
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        Ok(self.key_conv.convert_columns(&cols)?)
    }

    fn slot_for(&mut self, key: OwnedRow) -> usize {
        if let Some(&s) = self.index.get(&key) {
            return s;
        }
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                self.rows.push(None);
                self.seen.push(0);
                self.rows.len() - 1
            }
        };
        self.index.insert(key, s);
        s
    }

    /// Inserts or updates rows; returns those whose values actually changed.
    pub fn upsert(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        self.generation += 1;
        let keys = self.keys(batch)?;
        let rows = self.row_conv.convert_columns(batch.columns())?;
        let mut changed = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let s = self.slot_for(key.owned());
            let new = rows.row(i);
            if self.rows[s].as_ref().is_some_and(|old| old.row() == new) {
                continue;
            }
            self.rows[s] = Some(new.owned());
            if self.seen[s] != self.generation {
                self.seen[s] = self.generation;
                changed.push(s);
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        self.snapshot = None;
        Ok(Some(self.materialize(changed.iter().copied())?))
    }

    /// Removes the rows whose keys appear in `batch`; returns their last values.
    pub fn delete(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 || self.index.is_empty() {
            return Ok(None);
        }
        let keys = self.keys(batch)?;
        let mut gone = Vec::new();
        for key in keys.iter() {
            if let Some(s) = self.index.remove(&key.owned()) {
                if let Some(old) = self.rows[s].take() {
                    gone.push(old);
                }
                self.free.push(s);
            }
        }
        if gone.is_empty() {
            return Ok(None);
        }
        self.snapshot = None;
        let cols = self.row_conv.convert_rows(gone.iter().map(|r| r.row()))?;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), cols)?))
    }

    /// Replaces the whole result with `new` and returns the difference.
    pub fn replace_all(&mut self, new: &RecordBatch) -> Result<Changes> {
        self.generation += 1;
        let generation = self.generation;
        let keys = self.keys(new)?;
        let rows = self.row_conv.convert_columns(new.columns())?;
        let mut changed = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let s = self.slot_for(key.owned());
            let row = rows.row(i);
            let same = self.rows[s].as_ref().is_some_and(|old| old.row() == row);
            if !same {
                self.rows[s] = Some(row.owned());
                if self.seen[s] != generation {
                    changed.push(s);
                }
            }
            self.seen[s] = generation;
        }
        let stale: Vec<OwnedRow> = self
            .index
            .iter()
            .filter(|(_, &s)| self.seen[s] != generation)
            .map(|(k, _)| k.clone())
            .collect();
        let mut gone = Vec::new();
        for k in stale {
            if let Some(s) = self.index.remove(&k) {
                if let Some(old) = self.rows[s].take() {
                    gone.push(old);
                }
                self.free.push(s);
            }
        }
        if !changed.is_empty() || !gone.is_empty() {
            self.snapshot = None;
        }
        let upserts = if changed.is_empty() {
            None
        } else {
            Some(self.materialize(changed.iter().copied())?)
        };
        let deletes = if gone.is_empty() {
            None
        } else {
            let cols = self.row_conv.convert_rows(gone.iter().map(|r| r.row()))?;
            Some(RecordBatch::try_new(self.schema.clone(), cols)?)
        };
        Ok(Changes { upserts, deletes })
    }

    fn materialize(&self, slots: impl Iterator<Item = usize>) -> Result<RecordBatch> {
        let rows: Vec<_> = slots
            .filter_map(|s| self.rows[s].as_ref().map(|r| r.row()))
            .collect();
        let cols = self.row_conv.convert_rows(rows)?;
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }

    /// All live rows (cached until the next change).
    pub fn snapshot(&mut self) -> Result<RecordBatch> {
        if let Some(s) = &self.snapshot {
            return Ok(s.clone());
        }
        let slots: Vec<usize> = self.index.values().copied().collect();
        let b = self.materialize(slots.into_iter())?;
        self.snapshot = Some(b.clone());
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(keys: &[&str], vals: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(vals.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn upsert_reports_only_real_changes() {
        let b = batch(&["a", "b"], &[1, 2]);
        let mut r = ViewResult::new(b.schema(), vec![0]).unwrap();
        assert_eq!(r.upsert(&b).unwrap().unwrap().num_rows(), 2);
        assert!(r.upsert(&b).unwrap().is_none());
        let c = r.upsert(&batch(&["a", "b"], &[1, 3])).unwrap().unwrap();
        assert_eq!(c.num_rows(), 1);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn replace_all_diffs() {
        let b = batch(&["a", "b", "c"], &[1, 2, 3]);
        let mut r = ViewResult::new(b.schema(), vec![0]).unwrap();
        r.replace_all(&b).unwrap();
        let ch = r
            .replace_all(&batch(&["b", "c", "d"], &[2, 30, 4]))
            .unwrap();
        assert_eq!(ch.num_upserts(), 2); // c changed, d new
        assert_eq!(ch.num_deletes(), 1); // a left
        assert_eq!(r.snapshot().unwrap().num_rows(), 3);
    }
}
