//! Hostile input, with proptest: the decoder and the view-file parser never panic, and every
//! record of a batch is either decoded or set aside with a reason; nothing is lost. Plus the
//! classic poison cases: deeply nested JSON, NaN/Infinity, far-away timestamps, another
//! stream's schema. A kept corpus (`tests/corpus/decoder/`, plus every view file) seeds
//! mutation-based fuzzing; `cargo test` runs a short pass of it (CI included), and
//! `PROPTEST_CASES=100000 cargo test --test hostile_input` a long one.

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use runnel::decode::{Origin, RawBatch, StreamDecoder};
use runnel::engine::ViewDef;
use runnel::schema::StreamSchema;

fn stream(name: &str) -> (usize, Arc<StreamSchema>) {
    let streams = common::streams();
    let i = streams.index_of(name).expect("stream");
    (i, streams.streams[i].clone())
}

fn decode(name: &str, lines: &[Vec<u8>]) -> (usize, usize, usize) {
    let (i, s) = stream(name);
    let mut data = Vec::new();
    for l in lines {
        data.extend_from_slice(l);
        data.push(b'\n');
    }
    let raw = RawBatch::from_lines(
        i,
        data,
        Origin::Lines {
            file: "fuzz.ndjson".into(),
            first_line: 1,
        },
    );
    let mut d = StreamDecoder::new(s).unwrap();
    let out = d.decode(&raw).expect("decode never fails as a whole");
    for r in &out.rejected {
        assert!(!r.reason.is_empty());
        assert!(r.position.starts_with("fuzz.ndjson:"));
    }
    (raw.len(), out.batch.num_rows(), out.rejected.len())
}

/// Cases per property: `PROPTEST_CASES` for a long fuzz pass, else a short one.
fn cases(short: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(short)
}

const GOOD: &str = r#"{"transaction_id":"T1","customer_id":"CUST-000001","product_id":"PROD-00001","quantity":2,"price":9.5,"total_amount":19.0,"payment_method":"card","status":"completed","transaction_time":"2026-01-01T00:00:00.000Z"}"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Arbitrary bytes, line by line: every line is accounted for.
    #[test]
    fn arbitrary_lines_are_decoded_or_set_aside(lines in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..200), 1..20)) {
        let (n, ok, bad) = decode("transactions", &lines);
        prop_assert_eq!(ok + bad, n);
    }

    /// A valid event with bytes overwritten: decoded or set aside, never lost or fatal.
    #[test]
    fn mutated_events_are_decoded_or_set_aside(edits in prop::collection::vec((0usize..GOOD.len(), any::<u8>()), 1..6), copies in 1usize..5) {
        let mut bad = GOOD.as_bytes().to_vec();
        for (at, b) in edits {
            bad[at] = if b == b'\n' { b' ' } else { b };
        }
        let mut lines = vec![GOOD.as_bytes().to_vec(); copies];
        lines.push(bad);
        let (n, ok, rejected) = decode("transactions", &lines);
        prop_assert_eq!(ok + rejected, n);
        prop_assert!(ok >= copies);
    }

    /// The view-file parser takes anything without panicking.
    #[test]
    fn view_files_never_panic(text in ".{0,400}") {
        let _ = ViewDef::parse(std::path::Path::new("queries/fuzz.sql"), &text);
    }

    /// Option lines with arbitrary values: parsed or refused with file and line.
    #[test]
    fn view_options_are_parsed_or_refused(key in "[a-z]{1,8}", value in "[ -~]{0,40}") {
        let text = format!("-- @{key}: {value}\nSELECT product_id FROM transactions\n");
        if let Err(e) = ViewDef::parse(std::path::Path::new("queries/fuzz.sql"), &text) {
            prop_assert!(e.to_string().starts_with("queries/fuzz.sql:"), "{}", e);
        }
    }
}

/// The kept corpus: `tests/corpus/decoder/<stream>-<case>.json` (one record each, good and
/// poison), and every view file the project ships or tests with.
fn decoder_corpus() -> Vec<(String, Vec<u8>)> {
    let dir = common::root().join("tests/corpus/decoder");
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let stream = name.split('-').next().unwrap().to_string();
            let mut bytes = std::fs::read(e.path()).unwrap();
            while bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            (stream, bytes)
        })
        .collect();
    v.sort();
    v
}

fn view_corpus() -> Vec<String> {
    let mut v = Vec::new();
    for d in ["queries", "tests/views"] {
        for e in std::fs::read_dir(common::root().join(d)).unwrap().flatten() {
            v.push(std::fs::read_to_string(e.path()).unwrap());
        }
    }
    v.sort();
    v
}

#[test]
fn every_corpus_record_is_decoded_or_set_aside() {
    let corpus = decoder_corpus();
    assert!(corpus.len() >= 20);
    for (stream, bytes) in &corpus {
        let (n, ok, bad) = decode(stream, std::slice::from_ref(bytes));
        assert_eq!(
            (n, ok + bad),
            (1, 1),
            "{stream}: {}",
            String::from_utf8_lossy(bytes)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    /// Corpus records mutated: bytes overwritten, cut short, spliced with another record.
    #[test]
    fn mutated_corpus_records_are_decoded_or_set_aside(
        pick in any::<prop::sample::Index>(),
        other in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        how in 0u8..3,
    ) {
        let corpus = decoder_corpus();
        let (stream, base) = &corpus[pick.index(corpus.len())];
        let mut rec = base.clone();
        match how {
            0 => {}
            1 => rec.truncate(cut.index(rec.len() + 1)),
            _ => {
                let (_, o) = &corpus[other.index(corpus.len())];
                let at = cut.index(rec.len() + 1);
                rec.truncate(at);
                rec.extend_from_slice(&o[at.min(o.len())..]);
            }
        }
        for (at, b) in edits {
            if !rec.is_empty() {
                let i = at.index(rec.len());
                rec[i] = if b == b'\n' { b' ' } else { b };
            }
        }
        let lines = vec![base.clone(), rec, base.clone()];
        let (n, ok, bad) = decode(stream, &lines);
        prop_assert_eq!(ok + bad, n);
    }

    /// Shipped and test view files with characters deleted or inserted: parsed or refused
    /// with the file and a position, never a panic.
    #[test]
    fn mutated_view_files_are_parsed_or_refused(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::option::of(any::<char>())), 1..6),
    ) {
        let corpus = view_corpus();
        let mut text: Vec<char> = corpus[pick.index(corpus.len())].chars().collect();
        for (at, c) in edits {
            let i = at.index(text.len() + 1);
            match c {
                Some(c) => text.insert(i, c),
                None if i < text.len() => {
                    text.remove(i);
                }
                None => {}
            }
        }
        let text: String = text.into_iter().collect();
        if let Err(e) = ViewDef::parse(std::path::Path::new("queries/fuzz.sql"), &text) {
            prop_assert!(e.to_string().starts_with("queries/fuzz.sql:"), "{}", e);
        }
    }
}

#[test]
fn poison_records_are_set_aside_with_reasons() {
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    let nan = GOOD.replace("\"price\":9.5", "\"price\":NaN");
    let inf = GOOD.replace("\"price\":9.5", "\"price\":Infinity");
    let huge_number = GOOD.replace("\"quantity\":2", "\"quantity\":1e400");
    let far_future = GOOD.replace("2026-01-01T00:00:00.000Z", "+275760-09-13T00:00:00.000Z");
    let far_past = GOOD.replace("2026-01-01T00:00:00.000Z", "0001-01-01T00:00:00.000Z");
    // A line of another stream (a product) on the transactions topic.
    let other = r#"{"product_id":"PROD-00001","name":"Lamp","category":"Home","price":10.0,"stock_quantity":3,"supplier":"ACME","rating":4.5,"updated_at":"2026-01-01T00:00:00.000Z"}"#;
    let lines: Vec<Vec<u8>> = [
        GOOD,
        &nested,
        &deep_object,
        &nan,
        &inf,
        &huge_number,
        other,
        GOOD,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let (n, ok, rejected) = decode("transactions", &lines);
    assert_eq!(n, 8);
    assert_eq!(ok, 2, "only the two good records decode");
    assert_eq!(rejected, 6);
    // Event times before 1970 or more than a day in the future are set aside: taken as data,
    // one would push the watermark so far that every later event counted as late.
    let (n, ok, rejected) = decode(
        "transactions",
        &[
            GOOD.as_bytes().to_vec(),
            far_past.into_bytes(),
            far_future.into_bytes(),
            GOOD.as_bytes().to_vec(),
        ],
    );
    assert_eq!((n, ok, rejected), (4, 2, 2));
}
