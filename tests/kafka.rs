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

use runnel::kafka::KafkaOptions;
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
        "tests/views/kafka_partitions.sql",
    ])
}

/// A source reading the six topics in `group` to their end, in micro-batches of up to
/// `max_records` (50 ms at most).
fn source_config(bootstrap: &str, group: &str, max_records: usize) -> KafkaSourceConfig {
    KafkaSourceConfig {
        bootstrap: bootstrap.to_string(),
        group: group.to_string(),
        options: KafkaOptions::default(),
        max_records,
        max_wait: Duration::from_millis(50),
        until_end: true,
        resume: Default::default(),
        stop_at: None,
    }
}

async fn consume(
    bootstrap: &str,
    group: &str,
    out: &std::path::Path,
) -> std::collections::BTreeMap<String, Rows> {
    let source = KafkaSource::start(source_config(bootstrap, group, 5000), &streams()).unwrap();
    run_pipeline(&kafka_views(), source, out).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_replay_equals_file_replay() {
    let (_broker, bootstrap) = kafka_cluster(3, 4);
    let n = 30_000u64;
    produce_generated(&bootstrap, 21, n).await;

    let out = tempfile::tempdir().unwrap();
    let got = consume(&bootstrap, "g1", out.path()).await;

    let files = tempfile::tempdir().unwrap();
    generate(files.path(), 21, n as usize);
    let defs = kafka_views();
    let want = oracle(files.path(), &defs).await;
    for d in defs.iter().filter(|d| d.name != "kafka_partitions") {
        assert!(!want[&d.name].is_empty());
        assert_same(&d.name, &got[&d.name], &want[&d.name]);
    }
    // The Kafka metadata columns: four partitions, offsets from 0 without gaps, every message
    // stamped; files have none.
    let parts = &got["kafka_partitions"];
    assert_eq!(parts.len(), 4, "{parts:?}");
    let mut total = 0;
    for p in parts {
        let m = p["messages"].as_i64().unwrap();
        assert!(p["kafka_partition"]
            .as_i64()
            .is_some_and(|x| (0..4).contains(&x)));
        assert_eq!(p["first_offset"].as_i64(), Some(0));
        assert_eq!(p["last_offset"].as_i64(), Some(m - 1));
        assert_eq!(p["stamped"].as_i64(), Some(m));
        total += m;
    }
    let in_files = std::fs::read_to_string(files.path().join("transaction_data.ndjson"))
        .unwrap()
        .lines()
        .count() as i64;
    assert_eq!(total, in_files);
    assert_eq!(want["kafka_partitions"].len(), 1);
    assert!(want["kafka_partitions"][0]["kafka_partition"].is_null());

    // The same group again: everything is committed, so nothing is read twice.
    let out2 = tempfile::tempdir().unwrap();
    let again = consume(&bootstrap, "g1", out2.path()).await;
    assert!(
        again.values().all(|rows| rows.is_empty()),
        "a restarted group re-read committed events"
    );
}

/// Two instances in one consumer group over 4-partition topics: each owns whole products
/// (the producer keys by product id), so their product-keyed results are disjoint and their
/// union equals one instance's result (the batch oracle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_in_one_group_split_the_work_and_their_union_is_exact() {
    use runnel::engine::Engine;
    use runnel::pipeline::{self, PipelineOptions};
    use runnel::sink::{ndjson::NdjsonSink, Sink};

    let (_broker, bootstrap) = kafka_cluster(3, 4);
    let defs = views_named(&[
        "queries/product_sales.sql",
        "queries/review_sentiment.sql",
        "tests/views/kafka_partitions.sql",
    ]);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut stops = Vec::new();
    let mut runs = Vec::new();
    let mut probes = Vec::new();
    for dir in &dirs {
        let source = KafkaSource::start(
            KafkaSourceConfig {
                until_end: false,
                ..source_config(&bootstrap, "pair", 2000)
            },
            &streams(),
        )
        .unwrap();
        probes.push(source.assignment_probe());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(tx);
        let out = dir.path().to_path_buf();
        let defs = defs.clone();
        runs.push(tokio::spawn(async move {
            let mut source = source;
            let mut engine = Engine::new(streams(), &defs).await.unwrap();
            let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(NdjsonSink::new(&out).unwrap())];
            let opts = PipelineOptions {
                flush_every: Duration::from_millis(100),
                dead_letters: out.join("dead_letters.ndjson"),
                status: None,
                checkpoints: None,
                reload: None,
                shutdown_timeout: None,
            };
            pipeline::run(&mut engine, &mut source, &mut sinks, &opts, async {
                let _ = rx.await;
            })
            .await
            .unwrap()
        }));
    }
    // Both have joined, and split the 24 partitions, before anything is produced: no
    // partition changes hands mid-stream (a rebalance hands partitions over at least once,
    // see README, Kafka).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let a: Vec<Vec<(String, i32)>> = probes.iter().map(|p| p.get()).collect();
        let all: std::collections::BTreeSet<_> = a.iter().flatten().collect();
        if a.iter().all(|x| !x.is_empty()) && all.len() == 24 && a[0].len() + a[1].len() == 24 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the group never settled: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = 20_000u64;
    produce_generated(&bootstrap, 33, n).await;
    let files = tempfile::tempdir().unwrap();
    generate(files.path(), 33, n as usize);
    let want = oracle(files.path(), &defs).await;

    let union = |view: &str| -> (Rows, Vec<usize>, usize) {
        let mut all = Rows::new();
        let mut per = Vec::new();
        let mut keys = std::collections::BTreeSet::new();
        let mut overlap = 0;
        for d in &dirs {
            let rows = read_ndjson(&d.path().join(format!("{view}.ndjson")));
            per.push(rows.len());
            for r in &rows {
                if !keys.insert(r["product_id"].to_string()) {
                    overlap += 1;
                }
            }
            all.extend(rows);
        }
        all.sort_by_key(|r| r["product_id"].to_string());
        (all, per, overlap)
    };
    let done = |rows: &Rows, want: &Rows| {
        let sum = |rs: &Rows, c: &str| rs.iter().filter_map(|r| r[c].as_i64()).sum::<i64>();
        rows.len() == want.len() && sum(rows, "orders") == sum(want, "orders")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !done(&union("product_sales").0, &want["product_sales"])
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A last flush interval for the other view, then stop both.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for s in stops {
        let _ = s.send(());
    }
    let mut events = Vec::new();
    for r in runs {
        events.push(r.await.unwrap().events);
    }
    assert!(
        events.iter().all(|&e| e > 0),
        "one instance did no work: {events:?}"
    );
    let partitions: Vec<Rows> = dirs
        .iter()
        .map(|d| read_ndjson(&d.path().join("kafka_partitions.ndjson")))
        .collect();
    for view in ["product_sales", "review_sentiment"] {
        let (rows, per, overlap) = union(view);
        if overlap > 0 {
            eprintln!("partitions per instance: {partitions:#?}");
        }
        assert_eq!(
            overlap, 0,
            "{view}: a product was counted by both instances"
        );
        assert!(per.iter().all(|&k| k > 0), "{view}: {per:?}");
        let mut want_rows = want[view].clone();
        want_rows.sort_by_key(|r| r["product_id"].to_string());
        assert_same(view, &rows, &want_rows);
    }
}

#[test]
fn unreachable_broker_is_a_clear_error() {
    let streams = streams();
    let e = KafkaSource::start(
        KafkaSourceConfig {
            options: KafkaOptions::parse(&["socket.connection.setup.timeout.ms=1000".into()])
                .unwrap(),
            max_wait: Duration::from_millis(10),
            ..source_config("127.0.0.1:1", "g", 10)
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

/// Consumer lag: the messages between the consumer's positions and the partitions' ends.
/// With a backlog it is positive and at most the backlog; once everything is consumed it
/// falls to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_is_measured() {
    use runnel::source::Source;
    let (_broker, bootstrap) = kafka_cluster(1, 2);
    let n = 20_000u64;
    produce_generated(&bootstrap, 3, n).await;
    let mut source = KafkaSource::start(source_config(&bootstrap, "lag", 500), &streams()).unwrap();
    // Read nothing yet: the poller fills its small queue and stops, far from the end.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(l) = source.lag().filter(|&l| l > 0) {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "no lag measured");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(first as u64 <= n, "lag {first} of {n} messages");
    let mut read = 0;
    while let Some(round) = source.next().await.unwrap() {
        read += round.iter().map(|r| r.len()).sum::<usize>();
    }
    assert_eq!(read as u64, n);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while source.lag() != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "lag stays at {:?} after everything was read",
            source.lag()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A cluster without any of the six topics: start-up says which topics it looked for and how
/// to create them, instead of waiting on an empty subscription.
#[test]
fn a_cluster_without_the_topics_is_a_clear_error() {
    let broker = runnel::kafka::broker::LocalBroker::start(1).unwrap();
    let e = KafkaSource::start(
        KafkaSourceConfig {
            max_wait: Duration::from_millis(10),
            ..source_config(broker.bootstrap(), "g", 10)
        },
        &streams(),
    )
    .err()
    .expect("must fail");
    let msg = e.to_string();
    assert!(msg.contains("none of the topics exist"), "{msg}");
    assert!(msg.contains("transaction_data"), "{msg}");
    assert!(msg.contains("runnel generate --kafka"), "{msg}");
}

/// Backpressure: while nobody takes rounds, the poller stops after the few rounds its bounded
/// queue holds (the consumer's position stops), however large the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_pull_holds_the_poller_back() {
    use runnel::source::Source;
    let (_broker, bootstrap) = kafka_cluster(1, 2);
    let n = 20_000u64;
    produce_generated(&bootstrap, 3, n).await;
    let max_records = 500usize;
    let mut source = KafkaSource::start(
        source_config(&bootstrap, "backpressure", max_records),
        &streams(),
    )
    .unwrap();
    // Wait until the poller has been reading (lag measured below the backlog) and then some.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while source.lag().is_none_or(|l| l as u64 >= n) {
        assert!(
            std::time::Instant::now() < deadline,
            "the poller never read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Two rounds in the channel, one blocked on sending it, one being filled: at most four.
    let polled = n - source.lag().unwrap() as u64;
    assert!(
        polled <= 4 * max_records as u64,
        "{polled} of {n} messages polled with no reader"
    );
    let mut read = 0;
    while let Some(round) = source.next().await.unwrap() {
        read += round.iter().map(|r| r.len()).sum::<usize>();
    }
    assert_eq!(read as u64, n);
}

/// noida-db (`pip install noida-db`): one process speaking the Kafka protocol, including the
/// admin CreateTopics that librdkafka's mock cluster never answers. Installed if missing.
struct Noida {
    child: std::process::Child,
    /// Its data directory, removed when the server is dropped.
    _dir: tempfile::TempDir,
}

impl Noida {
    fn start() -> (Noida, String) {
        use std::process::{Command, Stdio};
        let installed = || {
            Command::new("noida-db")
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !installed() {
            let st = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "noida-db"])
                .status()
                .expect("python3 is needed to install noida-db");
            assert!(st.success() && installed(), "pip install noida-db failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("noida-db")
            .args(["start", "--host", "127.0.0.1", "--only", "kafka"])
            .args(["--kafka-port", &port.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("noida-db starts");
        let addr = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "noida-db never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        (Noida { child, _dir: dir }, addr)
    }
}

impl Drop for Noida {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `generate --kafka` against a broker without the topics creates all six with
/// `--partitions`, and every event lands in them.
#[test]
fn generate_creates_the_missing_topics_with_the_partitions_asked() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (_noida, addr) = Noida::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args([
            "generate",
            "--kafka",
            &addr,
            "--count",
            "2000",
            "--partitions",
            "3",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("creating topics"), "{text}");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    for t in runnel::generate::Topic::ALL {
        let topic = md
            .topics()
            .iter()
            .find(|m| m.name() == t.topic())
            .unwrap_or_else(|| panic!("{} was not created", t.topic()));
        assert_eq!(topic.partitions().len(), 3, "{}", t.topic());
    }
    assert_eq!(messages_in_topics(&addr, 3), 2000);
}
