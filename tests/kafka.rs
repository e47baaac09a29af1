//! Against a real Kafka-protocol broker: librdkafka's mock cluster (three brokers on loopback
//! TCP ports, in this process). Events are produced with the same producer as
//! `runnel generate --kafka`, consumed with the Kafka source in a consumer group, and the
//! views' results compared with a file replay of the same events.
//!
//! The views here are order-insensitive (no windows, no lookups): Kafka interleaves a topic's
//! partitions freely when a backlog is read, so windowed views are exact only while the
//! partitions' disorder stays within the watermark delay (see README, Kafka).

mod common;

use std::time::Duration;

use common::*;
use runnel::generate::{Clock, Generator, Topic, DEFAULT_START_MS};
use runnel::kafka::{broker::LocalBroker, producer, KafkaOptions};
use runnel::source::kafka::{KafkaSource, KafkaSourceConfig};

/// Order-insensitive views: no windows, no lookups.
fn kafka_views() -> Vec<runnel::engine::ViewDef> {
    views_named(&[
        "queries/product_sales.sql",
        "queries/customer_interactions.sql",
        "queries/review_sentiment.sql",
        "tests/views/agg_kinds.sql",
        "tests/views/segments.sql",
        "tests/views/global_total.sql",
    ])
}

async fn consume(
    bootstrap: &str,
    group: &str,
    out: &std::path::Path,
) -> std::collections::BTreeMap<String, Rows> {
    let source = KafkaSource::start(
        KafkaSourceConfig {
            bootstrap: bootstrap.to_string(),
            group: group.to_string(),
            options: KafkaOptions::default(),
            max_records: 5000,
            max_wait: Duration::from_millis(50),
            until_end: true,
        },
        &streams(),
    )
    .unwrap();
    run_pipeline(&kafka_views(), source, out).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_replay_equals_file_replay() {
    let broker = LocalBroker::start(3).unwrap();
    for t in Topic::ALL {
        broker.create_topic(t.topic(), 4, 1).unwrap();
    }
    let bootstrap = broker.bootstrap().to_string();
    let n = 30_000u64;
    let b2 = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let mut g = Generator::new(
            21,
            Clock::Simulated {
                start_ms: DEFAULT_START_MS,
            },
        );
        producer::produce(&b2, &KafkaOptions::default(), &mut g, Some(n), None).unwrap()
    })
    .await
    .unwrap();

    let out = tempfile::tempdir().unwrap();
    let got = consume(&bootstrap, "g1", out.path()).await;

    let files = tempfile::tempdir().unwrap();
    generate(files.path(), 21, n as usize);
    let defs = kafka_views();
    let want = oracle(files.path(), &defs).await;
    for d in &defs {
        assert!(!want[&d.name].is_empty());
        assert_same(&d.name, &got[&d.name], &want[&d.name]);
    }

    // The same group again: everything is committed, so nothing is read twice.
    let out2 = tempfile::tempdir().unwrap();
    let again = consume(&bootstrap, "g1", out2.path()).await;
    assert!(
        again.values().all(|rows| rows.is_empty()),
        "a restarted group re-read committed events"
    );
}

#[test]
fn unreachable_broker_is_a_clear_error() {
    let streams = streams();
    let e = KafkaSource::start(
        KafkaSourceConfig {
            bootstrap: "127.0.0.1:1".into(),
            group: "g".into(),
            options: KafkaOptions::parse(&["socket.connection.setup.timeout.ms=1000".into()])
                .unwrap(),
            max_records: 10,
            max_wait: Duration::from_millis(10),
            until_end: true,
        },
        &streams,
    )
    .err()
    .expect("must fail");
    assert!(
        e.to_string().contains("cannot reach Kafka at 127.0.0.1:1"),
        "{e}"
    );
}
