//! Raw payloads to Arrow: one micro-batch of JSON records becomes one `RecordBatch`.
//!
//! The fast path hands the whole micro-batch to arrow-json's tape decoder. Only when that fails
//! (bad JSON, a wrong type, a missing required field, not exactly one object per record) does the
//! batch go record by record, so the bad records are set aside with their reason and position
//! and every good record still gets through.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow_json::reader::{Decoder, ReaderBuilder};

use crate::error::Result;
use crate::schema::StreamSchema;

/// Where a micro-batch's records came from, so a rejected one can be found again.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Lines of a file; record `i` is line `first_line + i`.
    Lines { file: Arc<str>, first_line: u64 },
    /// Kafka messages; one (partition, offset) and message timestamp per record.
    Kafka {
        topic: Arc<str>,
        offsets: Vec<(i32, i64)>,
        timestamps: Vec<Option<i64>>,
    },
    /// The in-process generator; record `i` is event `first + i` of this stream.
    Generator { first: u64 },
}

impl Origin {
    /// A human-readable position for record `i`.
    pub fn position(&self, i: usize) -> String {
        match self {
            Origin::Lines { file, first_line } => format!("{file}:{}", first_line + i as u64),
            Origin::Kafka { topic, offsets, .. } => match offsets.get(i) {
                Some((p, o)) => format!("{topic}/{p}@{o}"),
                None => format!("{topic}/?"),
            },
            Origin::Generator { first } => format!("generator#{}", first + i as u64),
        }
    }
}

/// A micro-batch of raw records for one stream.
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// Index of the stream in [`crate::schema::Streams`].
    pub stream: usize,
    /// The records' bytes, back to back (separated by whitespace or not at all).
    pub data: Vec<u8>,
    /// End offset (exclusive) of each record in `data`.
    pub ends: Vec<usize>,
    pub origin: Origin,
    /// When the batch was read (ms since the epoch), for end-to-end latency.
    pub read_at_ms: i64,
}

impl RawBatch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    pub fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }
    /// Builds a batch from newline-separated records (each line one record; blank lines kept
    /// as records so that line numbers stay right and blank lines are reported).
    pub fn from_lines(stream: usize, data: Vec<u8>, origin: Origin) -> Self {
        let mut ends = Vec::with_capacity(data.len() / 128 + 1);
        for (i, &b) in data.iter().enumerate() {
            if b == b'\n' {
                ends.push(i + 1);
            }
        }
        if data.last().is_some_and(|&b| b != b'\n') {
            ends.push(data.len());
        }
        RawBatch {
            stream,
            data,
            ends,
            origin,
            read_at_ms: now_ms(),
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A record that could not be decoded.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub position: String,
    pub reason: String,
    pub payload: Vec<u8>,
}

/// The result of decoding one micro-batch.
#[derive(Debug)]
pub struct Decoded {
    pub batch: RecordBatch,
    pub rejected: Vec<Rejected>,
}

/// Decodes one stream's micro-batches, reusing arrow-json's decoder between batches.
pub struct StreamDecoder {
    schema: Arc<StreamSchema>,
    decoder: Decoder,
    batch_size: usize,
    /// Columns that must not be null (arrow-json leaves a missing field null).
    required: Vec<usize>,
}

/// How far past the wall clock an event time may be (one day); later ones are set aside.
pub const MAX_FUTURE_MS: i64 = 86_400_000;

/// The largest record accepted; anything bigger is set aside without parsing.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// The deepest nesting of arrays and objects accepted. Stream schemas are flat; deeper input
/// is set aside before the JSON parser sees it (deep enough nesting overflows its stack).
pub const MAX_DEPTH: usize = 64;

/// Whether any record of a batch nests deeper than [`MAX_DEPTH`]. Nesting can be no deeper
/// than a record's count of `{` and `[`, found with a vectorised search, so only records with
/// more than `MAX_DEPTH` of them (none, for well-formed flat events) are scanned byte by byte.
fn any_too_deep(data: &[u8], ends: &[usize]) -> bool {
    let (mut rec, mut start, mut count) = (0usize, 0usize, 0usize);
    for pos in memchr::memchr2_iter(b'{', b'[', data) {
        while rec < ends.len() && pos >= ends[rec] {
            if count > MAX_DEPTH && too_deep(&data[start..ends[rec]]) {
                return true;
            }
            (start, count) = (ends[rec], 0);
            rec += 1;
        }
        count += 1;
    }
    count > MAX_DEPTH && too_deep(&data[start..])
}

/// Whether `data` nests arrays/objects deeper than [`MAX_DEPTH`] (outside strings).
fn too_deep(data: &[u8]) -> bool {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in data {
        if b == b'\n' {
            // A new record starts at depth 0 whatever the last one left open.
            (depth, in_str, esc) = (0, false, false);
            continue;
        }
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl StreamDecoder {
    pub fn new(schema: Arc<StreamSchema>) -> Result<Self> {
        let batch_size = 8192;
        let decoder = build(&schema.payload, batch_size)?;
        let required = schema
            .payload
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.is_nullable())
            .map(|(i, _)| i)
            .collect();
        Ok(StreamDecoder {
            schema,
            decoder,
            batch_size,
            required,
        })
    }

    pub fn schema(&self) -> &Arc<StreamSchema> {
        &self.schema
    }

    /// Decodes a micro-batch. Never fails on bad input: bad records come back in `rejected`.
    pub fn decode(&mut self, raw: &RawBatch) -> Result<Decoded> {
        let n = raw.len();
        if n == 0 {
            return Ok(Decoded {
                batch: RecordBatch::new_empty(self.schema.arrow.clone()),
                rejected: Vec::new(),
            });
        }
        if n >= self.batch_size {
            self.batch_size = n.next_power_of_two().max(8192);
            self.decoder = build(&self.schema.payload, self.batch_size)?;
        }
        if raw.data.len() <= n.saturating_mul(MAX_RECORD_BYTES) {
            if let Some(batch) = self.fast_path(raw) {
                let batch = self.with_metadata(batch, &raw.origin, None)?;
                return self.implausible_times(batch, raw, None, Vec::new());
            }
        }
        // Something is wrong in this batch: start from a clean decoder and go record by record.
        self.decoder = build(&self.schema.payload, self.batch_size)?;
        self.slow_path(raw)
    }

    /// Sets aside rows whose event time is before 1970 or more than [`MAX_FUTURE_MS`] past
    /// the wall clock: such a time is a producer's bug, and taken as data it would push the
    /// stream's watermark so far that every later event counted as late. `rows` maps batch
    /// rows to records of `raw` (identity when `None`).
    fn implausible_times(
        &self,
        batch: RecordBatch,
        raw: &RawBatch,
        rows: Option<&[usize]>,
        mut rejected: Vec<Rejected>,
    ) -> Result<Decoded> {
        use arrow::array::{Array, AsArray, BooleanArray};
        use arrow::datatypes::TimestampMillisecondType;
        let col = self.schema.event_time_index;
        let times = batch.column(col).as_primitive::<TimestampMillisecondType>();
        let hi = now_ms().saturating_add(MAX_FUTURE_MS);
        let ok = |t: i64| (0..=hi).contains(&t);
        let in_range =
            arrow::compute::min(times).is_none_or(ok) && arrow::compute::max(times).is_none_or(ok);
        if in_range {
            return Ok(Decoded { batch, rejected });
        }
        let keep: BooleanArray = (0..times.len())
            .map(|i| Some(times.is_null(i) || ok(times.value(i))))
            .collect();
        let name = self.schema.arrow.field(col).name();
        for i in (0..times.len()).filter(|&i| !times.is_null(i) && !ok(times.value(i))) {
            let r = rows.map_or(i, |r| r[i]);
            let rec = raw.record(r);
            let t = times.value(i);
            let shown = chrono::DateTime::from_timestamp_millis(t)
                .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                .unwrap_or_else(|| format!("{t} ms"));
            rejected.push(Rejected {
                position: raw.origin.position(r),
                reason: format!(
                    "event time `{name}` {shown} is outside the accepted range (1970-01-01 to one day past the wall clock)"
                ),
                payload: rec[..rec.len().min(4096)].to_vec(),
            });
        }
        let batch = arrow::compute::filter_record_batch(&batch, &keep)?;
        Ok(Decoded { batch, rejected })
    }

    /// Appends the Kafka metadata columns (`_kafka_partition`, `_kafka_offset`,
    /// `_kafka_timestamp`): the message's values for Kafka input, null otherwise. `rows`: the
    /// records of `origin` that `payload` holds (all of them when `None`).
    fn with_metadata(
        &self,
        payload: RecordBatch,
        origin: &Origin,
        rows: Option<&[usize]>,
    ) -> Result<RecordBatch> {
        use arrow::array::{new_null_array, Int32Array, Int64Array, TimestampMillisecondArray};
        let n = payload.num_rows();
        let mut cols = payload.columns().to_vec();
        let meta = &self.schema.arrow.fields()[payload.num_columns()..];
        match origin {
            Origin::Kafka {
                offsets,
                timestamps,
                ..
            } => {
                let pick = |i: usize| rows.map_or(i, |r| r[i]);
                let at = |i: usize| offsets.get(pick(i)).copied();
                cols.push(Arc::new(Int32Array::from_iter(
                    (0..n).map(|i| at(i).map(|o| o.0)),
                )));
                cols.push(Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| at(i).map(|o| o.1)),
                )));
                cols.push(Arc::new(TimestampMillisecondArray::from_iter(
                    (0..n).map(|i| timestamps.get(pick(i)).copied().flatten()),
                )));
            }
            _ => {
                for f in meta {
                    cols.push(new_null_array(f.data_type(), n));
                }
            }
        }
        Ok(RecordBatch::try_new(self.schema.arrow.clone(), cols)?)
    }

    fn fast_path(&mut self, raw: &RawBatch) -> Option<RecordBatch> {
        let (data, n) = (&raw.data[..], raw.len());
        if any_too_deep(data, &raw.ends) {
            return None;
        }
        let mut off = 0;
        while off < data.len() {
            match self.decoder.decode(&data[off..]) {
                Ok(0) => break,
                Ok(k) => off += k,
                Err(_) => return None,
            }
        }
        if off < data.len() {
            return None;
        }
        let batch = self.decoder.flush().ok()??;
        if batch.num_rows() != n || self.has_missing_required(&batch) {
            return None;
        }
        Some(batch)
    }

    fn has_missing_required(&self, batch: &RecordBatch) -> bool {
        self.required
            .iter()
            .any(|&i| batch.column(i).null_count() > 0)
    }

    fn slow_path(&mut self, raw: &RawBatch) -> Result<Decoded> {
        let mut good = Vec::new();
        let mut good_rows = Vec::new();
        let mut rejected = Vec::new();
        for i in 0..raw.len() {
            let rec = raw.record(i);
            match self.one(rec) {
                Ok(b) => {
                    good.push(b);
                    good_rows.push(i);
                }
                Err(reason) => {
                    self.decoder = build(&self.schema.payload, self.batch_size)?;
                    let keep = rec.len().min(4096);
                    rejected.push(Rejected {
                        position: raw.origin.position(i),
                        reason,
                        payload: rec[..keep].to_vec(),
                    })
                }
            }
        }
        let batch = concat_batches(&self.schema.payload, &good)?;
        let batch = self.with_metadata(batch, &raw.origin, Some(&good_rows))?;
        self.implausible_times(batch, raw, Some(&good_rows), rejected)
    }

    fn one(&mut self, rec: &[u8]) -> std::result::Result<RecordBatch, String> {
        if rec.len() > MAX_RECORD_BYTES {
            return Err(format!(
                "record of {} bytes is over the {} byte limit",
                rec.len(),
                MAX_RECORD_BYTES
            ));
        }
        if rec.iter().all(|b| b.is_ascii_whitespace()) {
            return Err("empty record".into());
        }
        if std::str::from_utf8(rec).is_err() {
            return Err("record is not valid UTF-8".into());
        }
        if too_deep(rec) {
            return Err(format!("JSON nested deeper than {MAX_DEPTH} levels"));
        }
        let k = self.decoder.decode(rec).map_err(|e| clean(e.to_string()))?;
        if k < rec.len() && !rec[k..].iter().all(|b| b.is_ascii_whitespace()) {
            return Err("more than one JSON value in one record".into());
        }
        let batch = self
            .decoder
            .flush()
            .map_err(|e| clean(e.to_string()))?
            .ok_or_else(|| "no JSON object in record".to_string())?;
        if batch.num_rows() != 1 {
            return Err(format!("{} JSON values in one record", batch.num_rows()));
        }
        for &i in &self.required {
            if batch.column(i).null_count() > 0 {
                return Err(format!(
                    "missing required field `{}`",
                    self.schema.arrow.field(i).name()
                ));
            }
        }
        Ok(batch)
    }
}

fn build(schema: &SchemaRef, batch_size: usize) -> Result<Decoder> {
    Ok(ReaderBuilder::new(schema.clone())
        .with_batch_size(batch_size)
        .with_strict_mode(false)
        .build_decoder()?)
}

fn clean(s: String) -> String {
    s.trim_start_matches("Json error: ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Streams;

    #[test]
    fn event_times_before_1970_or_far_ahead_are_set_aside_with_their_position() {
        let mut d = decoder();
        let past = GOOD.replace("2026-01-01T00:00:00.000Z", "1969-12-31T23:59:59.000Z");
        let future = GOOD.replace("2026-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z");
        let out = d.decode(&batch(&[GOOD, &past, GOOD, &future])).unwrap();
        assert_eq!(out.batch.num_rows(), 2);
        let r: Vec<(&str, &str)> = out
            .rejected
            .iter()
            .map(|r| (r.position.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].0.ends_with(":11") && r[1].0.ends_with(":13"), "{r:?}"); // lines from 10
        assert!(r[0].1.contains("1969-12-31T23:59:59.000Z"), "{r:?}");
        assert!(r
            .iter()
            .all(|(_, why)| why.contains("outside the accepted range")));
    }

    fn decoder() -> StreamDecoder {
        let s = Streams::builtin();
        StreamDecoder::new(s.get("transactions").unwrap().clone()).unwrap()
    }

    const GOOD: &str = r#"{"transaction_id":"T1","customer_id":"C1","product_id":"P1","quantity":2,"price":1.5,"total_amount":3.0,"payment_method":"paypal","status":"completed","transaction_time":"2026-01-01T00:00:00.000Z"}"#;

    fn batch(lines: &[&str]) -> RawBatch {
        let mut data = lines.join("\n").into_bytes();
        data.push(b'\n');
        RawBatch::from_lines(
            0,
            data,
            Origin::Lines {
                file: "t.ndjson".into(),
                first_line: 10,
            },
        )
    }

    #[test]
    fn good_batch_takes_the_fast_path() {
        let d = decoder().decode(&batch(&[GOOD, GOOD, GOOD])).unwrap();
        assert_eq!(d.batch.num_rows(), 3);
        assert!(d.rejected.is_empty());
    }

    #[test]
    fn bad_records_are_set_aside_with_reason_and_position() {
        let wrong_type = GOOD.replace("\"quantity\":2", "\"quantity\":\"lots\"");
        let missing = GOOD.replace("\"customer_id\":\"C1\",", "");
        let nan = GOOD.replace("\"price\":1.5", "\"price\":NaN");
        let lines = [
            GOOD,
            "{not json",
            &wrong_type,
            "",
            &missing,
            GOOD,
            "[1,2]",
            &nan,
            "{} {}",
            "\u{fffd}",
        ];
        let d = decoder().decode(&batch(&lines)).unwrap();
        assert_eq!(d.batch.num_rows(), 2, "{:?}", d.rejected);
        let pos: Vec<&str> = d.rejected.iter().map(|r| r.position.as_str()).collect();
        assert_eq!(
            pos,
            [
                "t.ndjson:11",
                "t.ndjson:12",
                "t.ndjson:13",
                "t.ndjson:14",
                "t.ndjson:16",
                "t.ndjson:17",
                "t.ndjson:18",
                "t.ndjson:19"
            ]
        );
        let reason = |i: usize| d.rejected[i].reason.clone();
        assert!(
            reason(1).contains("quantity") || reason(1).contains("lots"),
            "{}",
            reason(1)
        );
        assert_eq!(reason(2), "empty record");
        assert!(reason(3).contains("customer_id"), "{}", reason(3));
    }

    #[test]
    fn deep_records_are_found_among_flat_ones() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let flat = "{\"a\":[1,2]}";
        let raw = batch(&[flat, flat, &deep, flat]);
        assert!(any_too_deep(&raw.data, &raw.ends));
        let raw = batch(&[flat, flat, flat]);
        assert!(!any_too_deep(&raw.data, &raw.ends));
        // Many brackets spread over records are not nesting.
        let many = vec![flat; 200];
        let raw = batch(&many);
        assert!(!any_too_deep(&raw.data, &raw.ends));
    }

    #[test]
    fn nesting_depth_is_bounded_per_record() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(too_deep(deep.as_bytes()));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(!too_deep(ok.as_bytes()));
        // Brackets inside strings do not count, and each line starts afresh.
        assert!(!too_deep(
            format!("{{\"a\":\"{}\"}}", "[".repeat(500)).as_bytes()
        ));
        let open = "[".repeat(MAX_DEPTH);
        assert!(!too_deep(
            format!("{open}\n{open}\n\"unterminated\n{open}").as_bytes()
        ));
    }

    #[test]
    fn invalid_utf8_and_giant_records() {
        let mut data = GOOD.as_bytes().to_vec();
        data.extend_from_slice(b"\n{\"transaction_id\":\"\xff\xfe\"}\n");
        data.extend_from_slice(&vec![b' '; MAX_RECORD_BYTES + 10]);
        data.extend_from_slice(b"{}\n");
        let raw = RawBatch::from_lines(0, data, Origin::Generator { first: 0 });
        let d = decoder().decode(&raw).unwrap();
        assert_eq!(d.batch.num_rows(), 1);
        assert_eq!(d.rejected.len(), 2);
        assert!(
            d.rejected[0].reason.contains("UTF-8"),
            "{}",
            d.rejected[0].reason
        );
        assert!(
            d.rejected[1].reason.contains("byte limit"),
            "{}",
            d.rejected[1].reason
        );
    }
}
