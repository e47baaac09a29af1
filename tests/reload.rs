//! Hot reload against a running binary consuming a real Kafka-protocol broker (librdkafka's
//! mock cluster, in this process): a view edited, one added and one deleted while runnel runs;
//! the edited and added views are rebuilt from the topics' retained events and equal the
//! batch oracle of their new SQL, the deleted view's rows leave the sink, the untouched view's
//! output is not rewritten, a broken edit is reported and changes nothing, and everything
//! keeps up with events produced afterwards.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{oracle, read_ndjson, root, same, Rows};
use runnel::engine::ViewDef;
use runnel::generate::{Clock, Generator, Topic, DEFAULT_START_MS};
use runnel::kafka::{broker::LocalBroker, producer, KafkaOptions};

const BIN: &str = env!("CARGO_BIN_EXE_runnel");

const BIG_SELLERS: &str = "-- Products with more than 200 units sold.\nSELECT product_id, \
    sum(quantity) AS units FROM transactions WHERE status = 'completed' GROUP BY product_id \
    HAVING sum(quantity) > 200\n";

fn defs(dir: &Path) -> Vec<ViewDef> {
    common::load_views(dir)
}

/// Waits until every view's output equals the batch oracle over `data`.
async fn converges(out: &Path, data: &Path, queries: &Path, log: &Path) {
    let want = oracle(data, &defs(queries)).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got: Vec<(String, Rows)> = want
            .keys()
            .map(|v| (v.clone(), read_ndjson(&out.join(format!("{v}.ndjson")))))
            .collect();
        let off: Vec<&String> = got
            .iter()
            .filter(|(v, rows)| !same(rows, &want[v]))
            .map(|(v, _)| v)
            .collect();
        if off.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "views {off:?} never matched the oracle; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_edited_added_and_deleted_while_running() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = LocalBroker::start(1).unwrap();
    for t in Topic::ALL {
        broker.create_topic(t.topic(), 2, 1).unwrap();
    }
    let bootstrap = broker.bootstrap().to_string();
    let (n1, n2) = (30_000u64, 20_000u64);
    let b = bootstrap.clone();
    let mut g = tokio::task::spawn_blocking(move || {
        let mut g = Generator::new(
            9,
            Clock::Simulated {
                start_ms: DEFAULT_START_MS,
            },
        );
        producer::produce(&b, &KafkaOptions::default(), &mut g, Some(n1), None).unwrap();
        g
    })
    .await
    .unwrap();
    let queries = tmp.path().join("queries");
    std::fs::create_dir_all(&queries).unwrap();
    for v in ["product_sales", "customer_interactions", "review_sentiment"] {
        std::fs::copy(
            root().join(format!("queries/{v}.sql")),
            queries.join(format!("{v}.sql")),
        )
        .unwrap();
    }
    let (out, log) = (tmp.path().join("out"), tmp.path().join("run.log"));
    let mut child = Command::new(BIN)
        .args(["run", "--source", &format!("kafka:{bootstrap}")])
        .args(["--group", "reload", "--refresh", "0.2"])
        .arg("--queries")
        .arg(&queries)
        .arg("--schemas")
        .arg(root().join("schemas"))
        .arg("--sink")
        .arg(format!("ndjson:{}", out.display()))
        .arg("--dead-letters")
        .arg(tmp.path().join("dead.ndjson"))
        .env("RUNNEL_LOG", "info")
        .env_remove("RUNNEL_SINK")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let first = tmp.path().join("first");
    common::generate(&first, 9, n1 as usize);
    converges(&out, &first, &queries, &log).await;
    let untouched = std::fs::read(out.join("customer_interactions.ndjson")).unwrap();
    let untouched_at = std::fs::metadata(out.join("customer_interactions.ndjson"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(!read_ndjson(&out.join("review_sentiment.ndjson")).is_empty());

    // Edit one view (a new column), add one, delete one, all at once.
    let sales = std::fs::read_to_string(queries.join("product_sales.sql")).unwrap();
    let edited = sales.replace(
        "count(*)               AS orders,",
        "count(*)               AS orders,\n    max(quantity)          AS biggest_order,",
    );
    assert_ne!(sales, edited);
    std::fs::write(queries.join("product_sales.sql"), edited).unwrap();
    std::fs::write(queries.join("big_sellers.sql"), BIG_SELLERS).unwrap();
    std::fs::remove_file(queries.join("review_sentiment.sql")).unwrap();
    converges(&out, &first, &queries, &log).await;
    let rows = read_ndjson(&out.join("product_sales.ndjson"));
    assert!(rows.iter().all(|r| r.contains_key("biggest_order")));
    assert!(!read_ndjson(&out.join("big_sellers.ndjson")).is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read_ndjson(&out.join("review_sentiment.ndjson")).is_empty() {
        assert!(Instant::now() < deadline, "the deleted view's rows stay");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        std::fs::read(out.join("customer_interactions.ndjson")).unwrap(),
        untouched
    );
    assert_eq!(
        std::fs::metadata(out.join("customer_interactions.ndjson"))
            .unwrap()
            .modified()
            .unwrap(),
        untouched_at,
        "the untouched view was rewritten"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("queries reloaded")
            && text.contains("removed=[\"review_sentiment\"]")
            && text.contains("kept=1"),
        "{text}"
    );

    // A broken edit is reported with its position and changes nothing.
    std::fs::write(
        queries.join("broken.sql"),
        "SELECT product_id, sum(nope) FROM transactions GROUP BY product_id\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("broken.sql:1:") && text.contains("the running views are unchanged") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broken edit not reported:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_file(queries.join("broken.sql")).unwrap();

    // More events: the rebuilt views keep up like the others.
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        producer::produce(&b, &KafkaOptions::default(), &mut g, Some(n2), None).unwrap()
    })
    .await
    .unwrap();
    let all = tmp.path().join("all");
    common::generate(&all, 9, (n1 + n2) as usize);
    converges(&out, &all, &queries, &log).await;

    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}
