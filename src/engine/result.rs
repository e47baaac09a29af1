//! A view's current result, keyed by its key columns, and the changelog between two versions.
//!
//! Rows are held in Arrow's row format (`arrow::row`), so comparing a new row with the old one
//! is a byte comparison, and turning the live rows back into a `RecordBatch` is one call.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, RowParser, Rows, SortField};

use crate::engine::key_index::{prefetch, KeyIndex, AHEAD};
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

/// Values handed out as slot epochs, unique in the process: a slot's epoch changes whenever
/// its row is removed, so a remembered (slot, epoch) still names the same key only if the
/// epoch is unchanged.
static NEXT_EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_epoch() -> u64 {
    NEXT_EPOCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Where a row's key was found last time ([`ViewResult::upsert_hinted`]); the default is no
/// hint (epochs start at 1).
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotHint {
    pub slot: u32,
    pub epoch: u64,
}

/// The live rows of a view, one per key.
///
/// Keys and rows are held as row-format bytes, so looking a key up or comparing a new row with
/// the old one is a hash and a byte comparison with no allocation. The snapshot that views
/// reading this one scan is kept between changes and patched: the rows that changed since it
/// was built are dropped from it (one vectorised filter) and appended anew, so refreshing it
/// costs a copy of the live rows plus decoding only the changed ones.
pub struct ViewResult {
    schema: SchemaRef,
    key_cols: Vec<usize>,
    key_conv: RowConverter,
    row_conv: RowConverter,
    index: KeyIndex,
    slots: Vec<RowSlot>,
    generation: u64,
    free: Vec<usize>,
    snap: Snapshot,
    /// Whether to keep the values that upserts replace (a view over this one's changelog
    /// takes them back out of its groups).
    track_replaced: bool,
    /// Those values (one buffer, so keeping a value costs no allocation).
    replaced: Rows,
    /// Reads the stored rows back as rows of `row_conv` (to decode them, or keep them in
    /// `replaced`).
    parser: RowParser,
}

/// One slot: a key's row and what a change of it checks and sets, side by side in two cache
/// lines, so that a changed row costs one load of adjacent lines (not one line per field, and
/// no pointer to follow to its row's bytes while the row is short).
#[repr(align(64))]
struct RowSlot {
    /// The row, in row format; empty while the slot is free.
    row: RowBytes,
    /// Changes when the slot's key leaves (see [`SlotHint`]).
    epoch: u64,
    /// The last call (generation) that set this slot.
    seen: u64,
    /// Changed (updated, inserted or removed) since the last snapshot was built.
    dirty: bool,
    /// In the upsert call that last changed this slot: where the slot's entry is in that
    /// call's list of changed rows.
    changed_at: u32,
}

/// Rows up to this many bytes are held inside their slot (which is then 128 bytes).
const INLINE_ROW: usize = 94;
const _: () = assert!(std::mem::size_of::<RowSlot>() == 128);

/// A slot's row: none, short ones inline, longer ones on the heap.
enum RowBytes {
    None,
    Inline { len: u8, bytes: [u8; INLINE_ROW] },
    Heap(Box<[u8]>),
}

impl RowBytes {
    fn as_deref(&self) -> Option<&[u8]> {
        match self {
            RowBytes::None => None,
            RowBytes::Inline { len, bytes } => Some(&bytes[..*len as usize]),
            RowBytes::Heap(b) => Some(b),
        }
    }

    fn is_some(&self) -> bool {
        !matches!(self, RowBytes::None)
    }

    /// The bytes on the heap, if that is where they are (to load them ahead).
    fn heap(&self) -> Option<&[u8]> {
        match self {
            RowBytes::Heap(b) => Some(b),
            _ => None,
        }
    }

    fn take(&mut self) -> Option<Box<[u8]>> {
        match std::mem::replace(self, RowBytes::None) {
            RowBytes::None => None,
            RowBytes::Inline { len, bytes } => Some(bytes[..len as usize].into()),
            RowBytes::Heap(b) => Some(b),
        }
    }

    fn set(&mut self, new: &[u8]) {
        match self {
            RowBytes::Heap(old) if old.len() == new.len() => old.copy_from_slice(new),
            _ if new.len() <= INLINE_ROW => {
                let mut bytes = [0u8; INLINE_ROW];
                bytes[..new.len()].copy_from_slice(new);
                *self = RowBytes::Inline {
                    len: new.len() as u8,
                    bytes,
                };
            }
            _ => *self = RowBytes::Heap(new.into()),
        }
    }
}

/// The last snapshot built, and which slots changed since.
#[derive(Default)]
struct Snapshot {
    batch: Option<RecordBatch>,
    /// Slot of each row of `batch`.
    slots: Vec<usize>,
    /// Slots changed since `batch` was built (each flagged `dirty` in its [`RowSlot`]).
    dirty: Vec<usize>,
}

/// A converter to Arrow's row format for columns of the given fields, in order.
pub fn row_converter<'a>(
    fields: impl IntoIterator<Item = &'a arrow::datatypes::FieldRef>,
) -> Result<RowConverter> {
    Ok(RowConverter::new(
        fields
            .into_iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect(),
    )?)
}

impl ViewResult {
    pub fn new(schema: SchemaRef, key_cols: Vec<usize>) -> Result<Self> {
        // A view without key columns has one row: its key is a constant.
        let key_conv = if key_cols.is_empty() {
            RowConverter::new(vec![SortField::new(arrow::datatypes::DataType::Int8)])?
        } else {
            row_converter(key_cols.iter().map(|&i| &schema.fields()[i]))?
        };
        let row_conv = row_converter(schema.fields())?;
        let (replaced, parser) = (row_conv.empty_rows(0, 0), row_conv.parser());
        Ok(ViewResult {
            schema,
            key_cols,
            key_conv,
            row_conv,
            index: KeyIndex::default(),
            slots: Vec::new(),
            generation: 0,
            free: Vec::new(),
            snap: Snapshot::default(),
            track_replaced: false,
            replaced,
            parser,
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

    fn slot_for(&mut self, key: &[u8]) -> usize {
        if let Some(s) = self.index.get(key) {
            return s;
        }
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(RowSlot {
                    row: RowBytes::None,
                    epoch: next_epoch(),
                    seen: 0,
                    dirty: false,
                    changed_at: 0,
                });
                self.slots.len() - 1
            }
        };
        self.index.insert(key, s);
        s
    }

    /// Marks a slot changed since the last snapshot.
    fn touch(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if !s.dirty {
            s.dirty = true;
            self.snap.dirty.push(slot);
        }
    }

    /// Forgets the changes since the last snapshot (a new one was just built).
    fn clean(&mut self) {
        for &s in &self.snap.dirty {
            self.slots[s].dirty = false;
        }
        self.snap.dirty.clear();
    }

    /// From now on, keep the values that upserts replace, for [`ViewResult::take_replaced`].
    pub fn track_replaced(&mut self) {
        self.track_replaced = true;
    }

    /// The old values of the rows updated since the last call (each row's value before its
    /// first update since then). With [`Changes::deletes`] these are what left the view.
    pub fn take_replaced(&mut self) -> Result<Option<RecordBatch>> {
        if self.replaced.num_rows() == 0 {
            return Ok(None);
        }
        let cols = self.row_conv.convert_rows(self.replaced.iter())?;
        self.replaced.clear();
        Ok(Some(RecordBatch::try_new(self.schema.clone(), cols)?))
    }

    /// Stores `new` as the row of `slot`; false if it already held exactly that row. `first`:
    /// the first change of the slot in this call (its old value is what left the view).
    fn set_row(&mut self, slot: usize, new: &[u8], first: bool) -> bool {
        if first && self.track_replaced {
            if let Some(old) = self.slots[slot].row.as_deref() {
                if old != new {
                    self.replaced.push(self.parser.parse(old));
                }
            }
        }
        let row = &mut self.slots[slot].row;
        if row.as_deref() == Some(new) {
            return false;
        }
        row.set(new);
        self.touch(slot);
        true
    }

    /// Removes the row of `key`; returns its last value.
    fn remove(&mut self, key: &[u8]) -> Option<Box<[u8]>> {
        let s = self.index.remove(key)?;
        self.slots[s].epoch = next_epoch();
        self.free.push(s);
        self.touch(s);
        self.slots[s].row.take()
    }

    /// Inserts or updates rows; returns those whose values actually changed.
    pub fn upsert(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        self.upsert_hinted(batch, &mut vec![SlotHint::default(); batch.num_rows()])
    }

    /// [`ViewResult::upsert`], with a hint per row of where its key was last time (from an
    /// earlier call; updated here). A row whose hint still holds skips encoding and looking up
    /// its key.
    pub fn upsert_hinted(
        &mut self,
        batch: &RecordBatch,
        hints: &mut [SlotHint],
    ) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        if hints.len() != batch.num_rows() {
            return Err(crate::error::Error::Config(
                "internal: one slot hint per row".into(),
            ));
        }
        self.generation += 1;
        let rows = self.row_conv.convert_columns(batch.columns())?;
        let mut keys = None;
        let mut changed = Vec::new();
        for i in 0..hints.len() {
            // The slots of rows a little ahead, then their rows' bytes: their loads overlap.
            if let Some(h) = hints.get(i + 2 * AHEAD) {
                if let Some(x) = self.slots.get(h.slot as usize) {
                    let p: *const RowSlot = x;
                    prefetch(p);
                    prefetch(p.cast::<u8>().wrapping_add(64));
                }
            }
            if let Some(h) = hints.get(i + AHEAD) {
                if let Some(r) = self.slots.get(h.slot as usize).and_then(|x| x.row.heap()) {
                    prefetch(r.as_ptr());
                }
            }
            let hint = &mut hints[i];
            let h = hint.slot as usize;
            let held = self
                .slots
                .get(h)
                .is_some_and(|x| x.epoch == hint.epoch && x.row.is_some());
            let s = if held {
                h
            } else {
                if keys.is_none() {
                    keys = Some(self.keys(batch)?);
                }
                let Some(k) = keys.as_ref() else { continue };
                let s = self.slot_for(k.row(i).data());
                *hint = SlotHint {
                    slot: s as u32,
                    epoch: self.slots[s].epoch,
                };
                s
            };
            let first = self.slots[s].seen != self.generation;
            if !self.set_row(s, rows.row(i).data(), first) {
                continue;
            }
            // The batch row that last changed each changed slot: its value is the slot's now.
            if first {
                self.slots[s].seen = self.generation;
                self.slots[s].changed_at = changed.len() as u32;
                changed.push(i as u32);
            } else {
                changed[self.slots[s].changed_at as usize] = i as u32;
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        // Taken from the batch, not decoded from the slots: the same values, at a copy's cost.
        let taken =
            arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(changed))?;
        Ok(Some(RecordBatch::try_new(
            self.schema.clone(),
            taken.columns().to_vec(),
        )?))
    }

    /// Removes the rows whose keys appear in `batch`; returns their last values.
    pub fn delete(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 || self.index.is_empty() {
            return Ok(None);
        }
        let keys = self.keys(batch)?;
        let gone: Vec<Box<[u8]>> = keys.iter().filter_map(|k| self.remove(k.data())).collect();
        if gone.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.decode(gone.iter().map(|r| &r[..]))?))
    }

    /// Columns `cols` of the rows of the given keys (of the view's one key column), one value
    /// per key: null where the view holds no row for it.
    pub fn columns_for_keys(&self, keys: &ArrayRef, cols: &[usize]) -> Result<Vec<ArrayRef>> {
        let keys = self.key_rows(keys)?;
        let mut rows: Vec<&[u8]> = Vec::new();
        let at: arrow::array::UInt32Array = self
            .index
            .get_batch(keys.num_rows(), |i| Some(keys.row(i).data()))
            .into_iter()
            .map(|s| {
                let row = s.and_then(|s| self.slots[s].row.as_deref())?;
                rows.push(row);
                Some(rows.len() as u32 - 1)
            })
            .collect();
        let found = self.decode(rows.into_iter())?;
        cols.iter()
            .map(|&c| Ok(arrow::compute::take(found.column(c), &at, None)?))
            .collect()
    }

    /// The live rows of the given keys (a view keyed by one column; keys without a row are
    /// skipped).
    pub fn rows_for_keys(&self, keys: &ArrayRef) -> Result<RecordBatch> {
        let keys = self.key_rows(keys)?;
        let rows: Vec<&[u8]> = self
            .index
            .get_batch(keys.num_rows(), |i| Some(keys.row(i).data()))
            .into_iter()
            .flatten()
            .filter_map(|s| self.slots[s].row.as_deref())
            .collect();
        self.decode(rows.into_iter())
    }

    /// The given values of a one-column key in row format.
    fn key_rows(&self, keys: &ArrayRef) -> Result<arrow::row::Rows> {
        let t = match &self.key_cols[..] {
            [k] => self.schema.field(*k).data_type(),
            _ => {
                return Err(crate::error::Error::Config(
                    "internal: rows by key need a view keyed by one column".into(),
                ))
            }
        };
        let keys = if keys.data_type() == t {
            keys.clone()
        } else {
            arrow::compute::cast(keys, t)?
        };
        Ok(self.key_conv.convert_columns(&[keys])?)
    }

    /// Replaces the rows of the given keys (one column) with `new`, whose rows all have one of
    /// those keys: keys without a row in `new` leave the view. Returns the difference.
    pub fn replace_keys(&mut self, keys: &ArrayRef, new: &RecordBatch) -> Result<Changes> {
        let upserts = self.upsert(new)?;
        let new_keys = self.keys(new)?;
        let kept: std::collections::HashSet<&[u8]> = new_keys.iter().map(|k| k.data()).collect();
        let keys = self.key_rows(keys)?;
        let gone: Vec<Box<[u8]>> = keys
            .iter()
            .filter(|k| !kept.contains(k.data()))
            .filter_map(|k| self.remove(k.data()))
            .collect();
        let deletes = if gone.is_empty() {
            None
        } else {
            Some(self.decode(gone.iter().map(|r| &r[..]))?)
        };
        Ok(Changes { upserts, deletes })
    }

    /// Replaces the whole result with `new` and returns the difference.
    pub fn replace_all(&mut self, new: &RecordBatch) -> Result<Changes> {
        self.generation += 1;
        let generation = self.generation;
        let keys = self.keys(new)?;
        let rows = self.row_conv.convert_columns(new.columns())?;
        let mut changed = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let s = self.slot_for(key.data());
            let first = self.slots[s].seen != generation;
            if self.set_row(s, rows.row(i).data(), first) && first {
                changed.push(s);
            }
            self.slots[s].seen = generation;
        }
        let stale: Vec<Box<[u8]>> = self
            .index
            .iter()
            .filter(|&(_, s)| self.slots[s].seen != generation)
            .map(|(k, _)| k.into())
            .collect();
        let gone: Vec<Box<[u8]>> = stale.iter().filter_map(|k| self.remove(k)).collect();
        let upserts = if changed.is_empty() {
            None
        } else {
            Some(self.materialize(changed.iter().copied())?)
        };
        let deletes = if gone.is_empty() {
            None
        } else {
            Some(self.decode(gone.iter().map(|r| &r[..]))?)
        };
        Ok(Changes { upserts, deletes })
    }

    /// Row-format bytes back to a batch of the view's schema.
    fn decode<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> Result<RecordBatch> {
        let cols = self
            .row_conv
            .convert_rows(rows.map(|r| self.parser.parse(r)))?;
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }

    fn materialize(&self, slots: impl Iterator<Item = usize>) -> Result<RecordBatch> {
        let rows: Vec<&[u8]> = slots.filter_map(|s| self.slots[s].row.as_deref()).collect();
        self.decode(rows.into_iter())
    }

    /// All live rows. Kept between calls: rows that did not change since the last snapshot are
    /// copied from it, only the changed ones are decoded.
    pub fn snapshot(&mut self) -> Result<RecordBatch> {
        let (batch, slots) = match self.snap.batch.clone() {
            Some(b) if self.snap.dirty.is_empty() => return Ok(b),
            // Patching pays off while most rows are unchanged.
            Some(b) if self.snap.dirty.len() * 2 < b.num_rows() => self.patched(&b)?,
            _ => {
                let slots: Vec<usize> = self.index.slots().collect();
                (self.materialize(slots.iter().copied())?, slots)
            }
        };
        self.clean();
        self.snap.batch = Some(batch.clone());
        self.snap.slots = slots;
        Ok(batch)
    }

    /// `base` (the last snapshot) without its changed rows, then the changed rows still live;
    /// with the slot of each row.
    fn patched(&self, base: &RecordBatch) -> Result<(RecordBatch, Vec<usize>)> {
        let dirty = |s: usize| self.slots.get(s).is_some_and(|x| x.dirty);
        let keep: arrow::array::BooleanArray =
            self.snap.slots.iter().map(|&s| Some(!dirty(s))).collect();
        let kept = arrow::compute::filter_record_batch(base, &keep)?;
        let mut slots: Vec<usize> = self
            .snap
            .slots
            .iter()
            .copied()
            .filter(|&s| !dirty(s))
            .collect();
        let fresh = slots.len();
        slots.extend(
            self.snap
                .dirty
                .iter()
                .copied()
                .filter(|&s| self.slots[s].row.is_some()),
        );
        let added = self.materialize(slots[fresh..].iter().copied())?;
        Ok((
            arrow::compute::concat_batches(&self.schema, [&kept, &added])?,
            slots,
        ))
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

    /// A hint skips the key lookup only while its slot still holds that key: after the key
    /// leaves and another takes its slot, the old hint must not write over the newcomer.
    #[test]
    fn stale_hints_fall_back_to_the_key() {
        let mut r = ViewResult::new(batch(&[], &[]).schema(), vec![0]).unwrap();
        let mut hints = [SlotHint::default(); 2];
        r.upsert_hinted(&batch(&["a", "b"], &[1, 2]), &mut hints)
            .unwrap();
        let a_hint = hints[0];
        // Held hints: both rows update in place.
        let out = r
            .upsert_hinted(&batch(&["a", "b"], &[10, 20]), &mut hints)
            .unwrap()
            .unwrap();
        assert_eq!(contents(&out), contents(&batch(&["a", "b"], &[10, 20])));
        // a leaves; c takes its slot.
        r.delete(&batch(&["a"], &[0])).unwrap();
        r.upsert(&batch(&["c"], &[3])).unwrap();
        let mut stale = [a_hint];
        r.upsert_hinted(&batch(&["a"], &[100]), &mut stale).unwrap();
        assert_eq!(
            contents(&r.snapshot().unwrap()),
            contents(&batch(&["a", "b", "c"], &[100, 20, 3]))
        );
        // A hint whose length does not match the batch is refused.
        assert!(r.upsert_hinted(&batch(&["a"], &[1]), &mut []).is_err());
    }

    fn contents(b: &RecordBatch) -> std::collections::BTreeMap<String, i64> {
        let k = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        let map: std::collections::BTreeMap<_, _> = (0..b.num_rows())
            .map(|i| (k.value(i).to_string(), v.value(i)))
            .collect();
        assert_eq!(map.len(), b.num_rows(), "a key appears twice");
        map
    }

    /// A row moves between its slot (short) and the heap (long) as its value changes length,
    /// and every path that reads it back (changes, replaced values, snapshot, delete) sees
    /// the value it holds at that moment.
    #[test]
    fn rows_move_between_slot_and_heap() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let row = |k: &str, v: &str| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(vec![k])),
                    Arc::new(StringArray::from(vec![v])),
                ],
            )
            .unwrap()
        };
        let value = |b: &RecordBatch| {
            let s = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            (0..b.num_rows())
                .map(|i| s.value(i).to_string())
                .collect::<Vec<_>>()
        };
        let long = "x".repeat(INLINE_ROW * 2);
        let long2 = "y".repeat(INLINE_ROW * 2);
        let mut r = ViewResult::new(schema.clone(), vec![0]).unwrap();
        r.track_replaced();
        let mut last = String::new();
        for v in [
            "a",
            long.as_str(),
            long.as_str(),
            "bc",
            long2.as_str(),
            long.as_str(),
            "d",
        ] {
            let changed = r.upsert(&row("key", v)).unwrap();
            // A value equal to the held one is no change, inline or not.
            assert_eq!(changed.is_some(), v != last, "{v:.3}");
            if let Some(c) = changed {
                assert_eq!(value(&c), [v]);
                let replaced = r.take_replaced().unwrap();
                let expected: Vec<String> = if last.is_empty() { vec![] } else { vec![last] };
                assert_eq!(replaced.map(|b| value(&b)).unwrap_or_default(), expected);
            }
            assert_eq!(value(&r.snapshot().unwrap()), [v]);
            last = v.to_string();
        }
        r.upsert(&row("key", &long)).unwrap();
        let gone = r.delete(&row("key", "")).unwrap().unwrap();
        assert_eq!(value(&gone), [long]);
        assert_eq!(r.len(), 0);
        assert_eq!(r.snapshot().unwrap().num_rows(), 0);
    }

    /// The patched snapshot always holds exactly the live rows, through updates, deletes,
    /// reused slots, replace_all and snapshots taken after few or many changes.
    #[test]
    fn patched_snapshot_matches_the_model() {
        let b = batch(&[], &[]);
        let mut r = ViewResult::new(b.schema(), vec![0]).unwrap();
        let mut model = std::collections::BTreeMap::new();
        let mut x: u64 = 11;
        let mut next = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        for round in 0..300 {
            let n = next(if round % 7 == 0 { 60 } else { 4 }) as usize;
            let keys: Vec<String> = (0..n).map(|_| format!("k{}", next(40))).collect();
            let vals: Vec<i64> = (0..n).map(|_| next(5) as i64).collect();
            let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
            match next(10) {
                0 => {
                    r.delete(&batch(&refs, &vals)).unwrap();
                    for k in &keys {
                        model.remove(k);
                    }
                }
                1 => {
                    let mut fresh = std::collections::BTreeMap::new();
                    for (k, v) in keys.iter().zip(&vals) {
                        fresh.insert(k.clone(), *v);
                    }
                    let (ks, vs): (Vec<&str>, Vec<i64>) =
                        fresh.iter().map(|(k, v)| (k.as_str(), *v)).unzip();
                    r.replace_all(&batch(&ks, &vs)).unwrap();
                    model = fresh;
                }
                _ => {
                    let before = model.clone();
                    let out = r.upsert(&batch(&refs, &vals)).unwrap();
                    for (k, v) in keys.iter().zip(&vals) {
                        model.insert(k.clone(), *v);
                    }
                    // Every key whose value changed, each once, with its new value (a key
                    // changed and changed back within the batch may be reported too).
                    let got = out.map(|b| contents(&b)).unwrap_or_default();
                    for (k, v) in &model {
                        if before.get(k) != Some(v) {
                            assert_eq!(got.get(k), Some(v), "round {round}: {k}");
                        }
                    }
                    for (k, v) in &got {
                        assert_eq!(model.get(k), Some(v), "round {round}: {k}");
                    }
                }
            }
            if next(3) == 0 {
                assert_eq!(contents(&r.snapshot().unwrap()), model, "round {round}");
            }
        }
    }
}
