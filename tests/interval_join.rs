//! Interval joins of two event streams: state stays bounded by the time bound (evicted by both
//! watermarks), the join's state survives a checkpoint, and `runnel check` explains every join
//! that would need unbounded state. (Equality with the batch oracle, in order and shuffled
//! within the watermark, is in `replay_equals_batch`: `tests/views/view_then_buy.sql`,
//! `tests/views/join_rows.sql` and the shipped `product_pairs`.)

mod common;

use std::path::Path;

use common::*;
use runnel::decode::StreamDecoder;
use runnel::engine::{Engine, ViewDef};
use runnel::source::files::FileSource;
use runnel::source::Source;

/// Decoded rounds of micro-batches, as the pipeline would hand them to the engine.
async fn rounds(data: &Path, batch: usize) -> Vec<Vec<(usize, arrow::array::RecordBatch)>> {
    let streams = streams();
    let mut decoders: Vec<StreamDecoder> = streams
        .streams
        .iter()
        .map(|s| StreamDecoder::new(s.clone()).unwrap())
        .collect();
    let mut src = FileSource::open(data, &streams, batch).unwrap();
    let mut out = Vec::new();
    while let Some(round) = src.next().await.unwrap() {
        out.push(
            round
                .iter()
                .map(|raw| {
                    let d = decoders[raw.stream].decode(raw).unwrap();
                    (raw.stream, d.batch)
                })
                .collect(),
        );
    }
    out
}

fn state_rows(engine: &Engine, view: &str) -> usize {
    engine
        .view_stats()
        .into_iter()
        .find(|s| s.name == view)
        .map(|s| s.groups)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_state_is_bounded_by_the_time_bound_and_both_watermarks() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path(), 21, 120_000);
    let defs = views_named(&["tests/views/view_then_buy.sql"]);
    let mut engine = Engine::new(streams(), &defs).await.unwrap();
    let rounds = rounds(data.path(), 1000).await;
    let n = rounds.len();
    let st = streams();
    let joined: Vec<usize> = ["product_views", "transactions"]
        .iter()
        .map(|name| st.streams.iter().position(|s| s.name == *name).unwrap())
        .collect();
    let (mut fed, mut at_half, mut peak) = (0usize, 0usize, 0usize);
    for (i, round) in rounds.into_iter().enumerate() {
        fed += round
            .iter()
            .filter(|(s, _)| joined.contains(s))
            .map(|(_, b)| b.num_rows())
            .sum::<usize>();
        engine.process_round(round).await.unwrap();
        let rows = state_rows(&engine, "view_then_buy");
        peak = peak.max(rows);
        if i == n / 2 {
            at_half = rows;
        }
    }
    let end = state_rows(&engine, "view_then_buy");
    eprintln!("join state: {at_half} rows half way, {end} at the end, peak {peak}; {fed} rows fed");
    // The data set spans about 20 minutes of event time; a 2-minute bound (plus the 5 s
    // watermark delay and a micro-batch of slack) keeps a small fraction of it.
    assert!(
        at_half > 0 && end > 0,
        "the join retains nothing: {at_half} {end}"
    );
    assert!(
        peak * 4 < fed,
        "join state {peak} rows is not bounded ({fed} rows fed)"
    );
    assert!(
        end < at_half * 2 && at_half < end * 2,
        "join state grows with history: {at_half} rows half way, {end} at the end"
    );
    let plan = engine.plan_text("view_then_buy").unwrap();
    assert!(plan.contains("interval join"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_state_survives_a_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path(), 4, 40_000);
    let defs = views_named(&["tests/views/view_then_buy.sql", "queries/product_pairs.sql"]);
    let rounds = rounds(data.path(), 700).await;
    let mut whole = Engine::new(streams(), &defs).await.unwrap();
    let mut first = Engine::new(streams(), &defs).await.unwrap();
    let mid = rounds.len() / 2;
    for (i, round) in rounds.iter().enumerate() {
        whole.process_round(round.clone()).await.unwrap();
        if i < mid {
            first.process_round(round.clone()).await.unwrap();
        }
    }
    let state = first.save_state().unwrap();
    let saved_join = state
        .views
        .iter()
        .filter_map(|v| v.join.as_ref())
        .map(|(l, r)| l.num_rows() + r.num_rows())
        .sum::<usize>();
    assert!(saved_join > 0, "no join rows in the checkpoint");
    let mut second = Engine::new(streams(), &defs).await.unwrap();
    second.restore_state(&state).unwrap();
    for round in &rounds[mid..] {
        second.process_round(round.clone()).await.unwrap();
    }
    for d in &defs {
        let (a, b) = (
            whole.snapshot(&d.name).unwrap().unwrap(),
            second.snapshot(&d.name).unwrap().unwrap(),
        );
        let (a, b) = (
            runnel::sink::rows_to_json(&a).unwrap(),
            runnel::sink::rows_to_json(&b).unwrap(),
        );
        assert!(!a.is_empty(), "{} is empty", d.name);
        assert_same(&d.name, &b, &a);
    }
}

async fn check(sql: &str) -> String {
    let def = ViewDef::parse(Path::new("queries/j.sql"), sql).unwrap();
    let errors = Engine::check(streams(), &[def]).await.unwrap();
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn check_explains_joins_that_would_need_unbounded_state() {
    let cases = [
        (
            "no time bound",
            "SELECT t.product_id, count(*) AS n FROM transactions t JOIN product_views v ON t.customer_id = v.customer_id GROUP BY t.product_id",
            "needs unbounded state",
        ),
        (
            "only a lower bound",
            "SELECT t.product_id, count(*) AS n FROM transactions t JOIN product_views v ON t.customer_id = v.customer_id AND v.view_time >= t.transaction_time GROUP BY t.product_id",
            "nothing bounds how much later a `product_views` row",
        ),
        (
            "only an upper bound",
            "SELECT t.product_id, count(*) AS n FROM transactions t JOIN product_views v ON t.customer_id = v.customer_id AND v.view_time <= t.transaction_time + INTERVAL '1 minute' GROUP BY t.product_id",
            "nothing bounds how much earlier a `product_views` row",
        ),
        (
            "no equality key",
            "SELECT t.product_id, count(*) AS n FROM transactions t JOIN product_views v ON v.view_time BETWEEN t.transaction_time AND t.transaction_time + INTERVAL '1 minute' GROUP BY t.product_id",
            "needs an equality key",
        ),
        (
            "outer join",
            "SELECT t.product_id, count(*) AS n FROM transactions t LEFT JOIN product_views v ON t.customer_id = v.customer_id AND v.view_time BETWEEN t.transaction_time AND t.transaction_time + INTERVAL '1 minute' GROUP BY t.product_id",
            "only inner joins",
        ),
        (
            "empty bound",
            "SELECT t.product_id, count(*) AS n FROM transactions t JOIN product_views v ON t.customer_id = v.customer_id AND v.view_time BETWEEN t.transaction_time + INTERVAL '1 minute' AND t.transaction_time GROUP BY t.product_id",
            "time bound is empty",
        ),
        (
            "three streams",
            "SELECT t.product_id, count(*) AS n FROM transactions t JOIN product_views v ON t.customer_id = v.customer_id AND v.view_time BETWEEN t.transaction_time AND t.transaction_time + INTERVAL '1 minute' JOIN user_interactions i ON i.customer_id = t.customer_id AND i.interaction_time BETWEEN t.transaction_time AND t.transaction_time + INTERVAL '1 minute' GROUP BY t.product_id",
            "at most two event streams",
        ),
        (
            "window over the join",
            "SELECT date_bin(INTERVAL '1 minute', t.transaction_time) AS w, count(*) AS n FROM transactions t JOIN product_views v ON t.customer_id = v.customer_id AND v.view_time BETWEEN t.transaction_time AND t.transaction_time + INTERVAL '1 minute' GROUP BY 1",
            "windows over the rows of a stream–stream join",
        ),
        (
            "ranking raw joined rows",
            "SELECT t.transaction_id, v.view_id FROM transactions t JOIN product_views v ON t.customer_id = v.customer_id AND v.view_time BETWEEN t.transaction_time AND t.transaction_time + INTERVAL '1 minute' ORDER BY t.total_amount DESC LIMIT 5",
            "ORDER BY / LIMIT over the rows of a stream–stream join",
        ),
    ];
    for (what, sql, want) in cases {
        let got = check(sql).await;
        assert!(got.contains(want), "{what}: {got}");
        assert!(got.starts_with("queries/j.sql:1:1:"), "{what}: {got}");
    }
    // Every bound form reads the same: BETWEEN, two comparisons either way round, equality.
    for sql in [
        "SELECT t.product_id, count(*) AS n FROM transactions t JOIN product_views v ON t.customer_id = v.customer_id AND v.view_time BETWEEN t.transaction_time - INTERVAL '1 hour' AND t.transaction_time GROUP BY t.product_id",
        "SELECT t.product_id, count(*) AS n FROM transactions t JOIN product_views v ON t.customer_id = v.customer_id WHERE t.transaction_time >= v.view_time AND t.transaction_time - INTERVAL '10 minutes' < v.view_time GROUP BY t.product_id",
        "SELECT t.product_id, count(*) AS n FROM transactions t JOIN product_views v ON t.customer_id = v.customer_id AND v.view_time = t.transaction_time GROUP BY t.product_id",
    ] {
        let got = check(sql).await;
        assert!(got.is_empty(), "{sql}: {got}");
    }
}

/// Late rows never join: replaying the first rounds once the watermarks have moved on (every
/// row now late) leaves the joins' results as they were, and every row is counted late and
/// handed back for the dead-letter file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_are_set_aside_and_never_join() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path(), 8, 60_000);
    // A join of two streams, and a self-join, whose new rows meet each other in one batch.
    let defs = views_named(&["tests/views/view_then_buy.sql", "queries/product_pairs.sql"]);
    let joins = ["view_then_buy", "product_pairs"];
    let mut engine = Engine::new(streams(), &defs).await.unwrap();
    let rounds = rounds(data.path(), 1000).await;
    for round in &rounds {
        engine.process_round(round.clone()).await.unwrap();
    }
    let mut before = Vec::new();
    for v in joins {
        let rows = runnel::sink::rows_to_json(&engine.snapshot(v).unwrap().unwrap()).unwrap();
        assert!(!rows.is_empty(), "{v} is empty");
        before.push(rows);
    }
    let late_before: u64 = engine.stream_stats().iter().map(|s| s.late).sum();
    let mut replayed = 0usize;
    let mut handed_back = 0usize;
    for round in &rounds[..5] {
        replayed += round.iter().map(|(_, b)| b.num_rows()).sum::<usize>();
        let out = engine.process_round(round.clone()).await.unwrap();
        handed_back += out.late.iter().map(|(_, b)| b.num_rows()).sum::<usize>();
        assert!(
            out.outputs
                .iter()
                .all(|o| !joins.contains(&o.view.name.as_str())),
            "a late row changed a join's result"
        );
    }
    let late_after: u64 = engine.stream_stats().iter().map(|s| s.late).sum();
    for (v, want) in joins.iter().zip(&before) {
        let got = runnel::sink::rows_to_json(&engine.snapshot(v).unwrap().unwrap()).unwrap();
        assert_same(v, &got, want);
    }
    // Keyed tables (customers, products) have no lateness; every event-stream row is late.
    let table_rows: usize = rounds[..5]
        .iter()
        .flatten()
        .filter(|(s, _)| streams().streams[*s].key().is_some())
        .map(|(_, b)| b.num_rows())
        .sum();
    assert_eq!(handed_back, replayed - table_rows);
    assert_eq!((late_after - late_before) as usize, handed_back);
}
