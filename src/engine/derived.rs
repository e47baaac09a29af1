//! The result of an aggregate view that no other view reads: derived from its groups, not
//! stored beside them.
//!
//! Such a view has one row per group (its key columns are its GROUP BY columns), so its rows
//! are the groups' values run through the view's HAVING and SELECT. Keeping them a second time
//! in a [`crate::engine::result::ViewResult`] costs every touched group a lookup and a store in
//! a second table, cache lines that grow colder as the groups grow. Instead each group's entry
//! in [`GroupState`] carries two things: whether its row is in the view (`shown`), and a 64-bit
//! digest of the row last emitted, so that a touched group whose row came out the same emits
//! nothing. The current rows, when asked for (the REPL, a checkpoint, a view added later that
//! reads this one), are evaluated from the groups.
//!
//! A digest is not the row: two different rows with the same digest would hide an update.
//! The digest hashes the row's whole row-format encoding into 64 bits, so a changed row goes
//! unsent with a chance of about 2^-64, rows that differ in one byte included.

use arrow::array::{Array, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::row::RowConverter;

use crate::engine::aggregate::GroupState;
use crate::engine::result::{row_converter, Changes};
use crate::error::Result;

/// How to digest a view's rows.
pub struct Derived {
    conv: RowConverter,
    hasher: ahash::RandomState,
}

impl Derived {
    pub fn new(schema: &SchemaRef) -> Result<Self> {
        let conv = row_converter(schema.fields())?;
        // Fixed seeds: digests stay comparable for the life of the process (they are never
        // written anywhere).
        let hasher = ahash::RandomState::with_seeds(
            0x9e37_79b9_7f4a_7c15,
            0x2545_f491_4f6c_dd1d,
            0x1656_67b1_9e37_79f9,
            0x85eb_ca77_c2b2_ae63,
        );
        Ok(Derived { conv, hasher })
    }

    /// Brings the touched groups' view rows up to date. `rows` are their values through the
    /// view's SELECT, one per slot of `touched` in order; `mask`, which passed HAVING. Returns
    /// the rows that entered or changed, and the rows that left (with their values now; sinks
    /// and the console need only their keys).
    pub fn apply(
        &self,
        groups: &mut GroupState,
        touched: &[usize],
        rows: &RecordBatch,
        mask: &BooleanArray,
    ) -> Result<Changes> {
        let encoded = self.conv.convert_columns(rows.columns())?;
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for (k, &slot) in touched.iter().enumerate() {
            let (shown, old) = groups.shown(slot);
            if mask.is_valid(k) && mask.value(k) {
                let digest = self.hasher.hash_one(encoded.row(k).data());
                if !shown || digest != old {
                    groups.set_shown(slot, true, digest);
                    upserts.push(k as u32);
                }
            } else if shown {
                groups.set_shown(slot, false, 0);
                deletes.push(k as u32);
            }
        }
        let pick = |idx: Vec<u32>| -> Result<Option<RecordBatch>> {
            if idx.is_empty() {
                return Ok(None);
            }
            Ok(Some(take_record_batch(rows, &UInt32Array::from(idx))?))
        };
        Ok(Changes {
            upserts: pick(upserts)?,
            deletes: pick(deletes)?,
        })
    }

    /// Records, with no changes to emit, which of the given groups have their row in the view
    /// and its digest (after the groups were restored, or when a view's stored result is
    /// dropped for this).
    pub fn settle(
        &self,
        groups: &mut GroupState,
        slots: &[usize],
        rows: &RecordBatch,
        mask: &BooleanArray,
    ) -> Result<()> {
        let encoded = self.conv.convert_columns(rows.columns())?;
        for (k, &slot) in slots.iter().enumerate() {
            if mask.is_valid(k) && mask.value(k) {
                groups.set_shown(slot, true, self.hasher.hash_one(encoded.row(k).data()));
            } else {
                groups.set_shown(slot, false, 0);
            }
        }
        Ok(())
    }
}
