//! Crash recovery: the real binary is killed with SIGKILL at ten points during a run, each time
//! restarted from its checkpoint directory, and the final results must equal an uninterrupted
//! run. Once replaying files (every shipped view), once consuming a real Kafka-protocol broker
//! (librdkafka's mock cluster, three brokers, in this process) into the ndjson sink and a real
//! Elasticsearch-API server (osmem-server) at once.
//!
//! Kill points are drawn from a fixed seed over the run's duration, so they fall before the
//! first checkpoint, between checkpoints, during checkpoint writes and while sinks flush.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::osmem::{documents, Server};
use common::{assert_same, read_ndjson, root, Rows};
use runnel::generate::DEFAULT_START_MS;

const BIN: &str = env!("CARGO_BIN_EXE_runnel");

/// Kill delays in milliseconds within [lo, hi), from a fixed seed.
fn delays(seed: u64, n: usize, lo: u64, hi: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (x >> 33) % (hi - lo)
        })
        .collect()
}

fn command(args: &[String], queries: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .args(args)
        .arg("--queries")
        .arg(queries)
        .arg("--schemas")
        .arg(root().join("schemas"))
        .env("RUNNEL_LOG", "warn")
        .env_remove("RUNNEL_SINK")
        .stdout(Stdio::null());
    cmd
}

/// Runs to completion; panics with its stderr if it fails.
fn run_to_end(args: &[String], queries: &Path, log: &Path) {
    let err = std::fs::File::create(log).unwrap();
    let st = command(args, queries)
        .stderr(err)
        .status()
        .expect("runnel runs");
    assert!(
        st.success(),
        "runnel failed:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// What the restarts reported.
#[derive(Default, Debug)]
struct Kills {
    /// Kills that hit a running process.
    mid_stream: usize,
    /// Restarts that loaded a checkpoint.
    resumed: usize,
    /// Restarts that set journaled keys back in the sinks.
    resynced: usize,
    /// Events each restart found already processed.
    events: Vec<u64>,
}

/// The latest complete checkpoint's epoch in `dir` (0: none).
fn epoch(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.strip_prefix("ckpt-")?.parse::<u64>().ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Starts the run and kills it with SIGKILL once it has written 1 or 2 more checkpoints
/// (so every life makes progress) plus 0 to 150 ms (so kills land anywhere: mid-round,
/// mid-flush, mid-checkpoint-write), ten times; returns what the restarts reported. Every
/// other life is killed only once rows have been handed to the sinks after its latest
/// checkpoint (its journal is not empty), whatever a round takes on this machine. The
/// caller then runs it once more to the end.
fn kill_repeatedly(args: &[String], queries: &Path, logs: &Path, ckpt: &Path, seed: u64) -> Kills {
    let mut k = Kills::default();
    let extra = delays(seed, 10, 1, 3);
    let jitter = delays(seed + 1, 10, 0, 150);
    for i in 0..10 {
        let log = logs.join(format!("run-{i}.log"));
        let start = epoch(ckpt);
        let mut child = command(args, queries)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("runnel starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while epoch(ckpt) < start + extra[i] && std::time::Instant::now() < deadline {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if i % 2 == 1 {
            let journaled = || {
                let path = ckpt.join(format!("journal-{:09}.ndjson", epoch(ckpt)));
                std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
            };
            while !journaled() && std::time::Instant::now() < deadline {
                if child.try_wait().expect("wait").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::thread::sleep(Duration::from_millis(jitter[i]));
        if child.try_wait().expect("wait").is_none() {
            k.mid_stream += 1;
        }
        let _ = child.kill(); // SIGKILL: no cleanup of any kind
        let _ = child.wait();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("resumed from checkpoint"))
        {
            k.resumed += 1;
            let events = line
                .split(": ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            k.events.push(events);
            if !line.contains("; 0 keys") {
                k.resynced += 1;
            }
        }
    }
    k
}

fn queries_dir(dir: &Path, views: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for v in views {
        std::fs::copy(
            root().join("queries").join(format!("{v}.sql")),
            dir.join(format!("{v}.sql")),
        )
        .unwrap();
    }
    dir.to_path_buf()
}

fn results(out: &Path, views: &[String]) -> BTreeMap<String, Rows> {
    views
        .iter()
        .map(|v| (v.clone(), read_ndjson(&out.join(format!("{v}.ndjson")))))
        .collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn a_file_replay_killed_at_ten_points_ends_equal_to_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::generate(&data, 11, 400_000);
    // Every shipped view but the day-long self-join (product_pairs, product_affinity), whose
    // fan-out is too slow in a debug build for kills timed by checkpoints; a two-minute
    // interval join stands in for it (product_pairs' own state is restored in
    // tests/interval_join.rs).
    let queries = tmp.path().join("queries");
    std::fs::create_dir_all(&queries).unwrap();
    for d in common::load_views(&root().join("queries")) {
        if !d.name.starts_with("product_pairs") && d.name != "product_affinity" {
            std::fs::copy(&d.path, queries.join(format!("{}.sql", d.name))).unwrap();
        }
    }
    std::fs::copy(
        root().join("tests/views/view_then_buy.sql"),
        queries.join("view_then_buy.sql"),
    )
    .unwrap();
    let views: Vec<String> = common::load_views(&queries)
        .iter()
        .map(|d| d.name.clone())
        .collect();
    let base = |out: &Path| {
        s(&[
            "--source",
            &format!("files:{}", data.display()),
            "--sink",
            &format!("ndjson:{}", out.display()),
            "--until-drained",
            "--batch-size",
            "2000",
            "--refresh",
            "0.1",
            "--dead-letters",
            &tmp.path().join("dead.ndjson").display().to_string(),
        ])
    };
    let full = tmp.path().join("full");
    run_to_end(&base(&full), &queries, &tmp.path().join("full.log"));

    let out = tmp.path().join("out");
    let mut args = base(&out);
    let ckpt = tmp.path().join("ckpt");
    args.extend(s(&[
        "--checkpoint",
        &ckpt.display().to_string(),
        "--checkpoint-every",
        "0.1",
    ]));
    let kills = kill_repeatedly(&args, &queries, tmp.path(), &ckpt, 7);
    eprintln!("{kills:?}");
    run_to_end(&args, &queries, &tmp.path().join("last.log"));

    assert_eq!(kills.mid_stream, 10, "{kills:?}");
    assert_eq!(kills.resumed, 9, "{kills:?}");
    assert!(
        kills.resynced >= 1,
        "no kill fell after a sink flush: {kills:?}"
    );
    let last = std::fs::read_to_string(tmp.path().join("last.log")).unwrap();
    assert!(last.contains("resumed from checkpoint"), "{last}");
    let (want, got) = (results(&full, &views), results(&out, &views));
    for v in &views {
        assert!(!want[v].is_empty() || v == "low_stock", "{v} is empty");
        assert_same(v, &got[v], &want[v]);
    }
}

/// Views whose final result does not depend on how Kafka interleaves partitions (no windows,
/// no lookups into a table as it was at the time): two runs over one topic agree exactly.
const KAFKA_VIEWS: [&str; 6] = [
    "product_sales",
    "top_sellers",
    "customer_interactions",
    "customer_retention",
    "retention_segments",
    "review_sentiment",
];

#[test]
fn a_kafka_consumer_killed_at_ten_points_ends_equal_to_an_uninterrupted_run_in_ndjson_and_elasticsearch(
) {
    let tmp = tempfile::tempdir().unwrap();
    let (_broker, bootstrap) = common::kafka_cluster(3, 4);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(common::produce_generated(&bootstrap, 5, 150_000));
    let es = Server::start();
    let queries = queries_dir(&tmp.path().join("queries"), &KAFKA_VIEWS);
    let views = s(&KAFKA_VIEWS);
    let base = |group: &str, out: &Path| {
        s(&[
            "--source",
            &format!("kafka:{bootstrap}"),
            "--group",
            group,
            "--sink",
            &format!("ndjson:{}", out.display()),
            "--until-drained",
            "--refresh",
            "0.1",
            "--dead-letters",
            &tmp.path().join("dead.ndjson").display().to_string(),
            // A killed member is noticed within 1.5 s instead of librdkafka's 10 s.
            "--kafka-option",
            "session.timeout.ms=1500",
            "--kafka-option",
            "heartbeat.interval.ms=300",
        ])
    };
    let full = tmp.path().join("full");
    run_to_end(
        &base("whole", &full),
        &queries,
        &tmp.path().join("full.log"),
    );

    let out = tmp.path().join("out");
    let ckpt = tmp.path().join("ckpt");
    let mut args = base("killed", &out);
    args.extend(s(&[
        "--sink",
        &format!("elasticsearch:{}", es.url),
        "--checkpoint",
        &ckpt.display().to_string(),
        "--checkpoint-every",
        "0.1",
        "--batch-size",
        "2000",
    ]));
    let kills = kill_repeatedly(&args, &queries, tmp.path(), &ckpt, 3);
    eprintln!("{kills:?}");
    run_to_end(&args, &queries, &tmp.path().join("last.log"));

    assert_eq!(kills.mid_stream, 10, "{kills:?}");
    assert_eq!(kills.resumed, 9, "{kills:?}");
    let (want, got) = (results(&full, &views), results(&out, &views));
    for v in &views {
        assert!(!want[v].is_empty(), "{v} is empty");
        assert_same(v, &got[v], &want[v]);
        let docs: Rows = rt.block_on(documents(&es.url, v)).into_values().collect();
        assert_same(&format!("{v} (Elasticsearch)"), &docs, &want[v]);
    }
}

/// Transactions as a decoded batch, one per product id given.
fn transactions(products: &[&str], t0: i64) -> arrow::array::RecordBatch {
    use runnel::decode::{Origin, RawBatch, StreamDecoder};
    let streams = common::streams();
    let i = streams
        .streams
        .iter()
        .position(|s| s.name == "transactions")
        .unwrap();
    let mut data = Vec::new();
    for (n, p) in products.iter().enumerate() {
        let line = serde_json::json!({
            "transaction_id": format!("T{t0}-{n}"), "customer_id": "C1", "product_id": p,
            "quantity": 1, "price": 2.5, "total_amount": 2.5, "payment_method": "card",
            "status": "completed", "transaction_time": t0 + n as i64,
        });
        data.extend(line.to_string().into_bytes());
        data.push(b'\n');
    }
    let raw = RawBatch::from_lines(
        i,
        data,
        Origin::Lines {
            file: "test".into(),
            first_line: 1,
        },
    );
    let d = StreamDecoder::new(streams.streams[i].clone())
        .unwrap()
        .decode(&raw)
        .unwrap();
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    d.batch
}

/// A row that reached a sink after the last checkpoint, and that re-processing would never
/// emit again (it enters and leaves the view within one round the second time), is deleted on
/// restart because the journal names it. Without the journal the sink would keep it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_shipped_after_the_checkpoint_is_set_back_from_the_journal() {
    use runnel::checkpoint::Checkpoints;
    use runnel::engine::{Engine, ViewDef};
    use runnel::pipeline::{ship, PipelineOptions};
    use runnel::sink::{ndjson::NdjsonSink, Sink};
    use std::sync::Mutex;

    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, out) = (tmp.path().join("ckpt"), tmp.path().join("out"));
    let def = ViewDef::parse(
        Path::new("sold_once.sql"),
        "-- Products sold exactly once.\nSELECT product_id, count(*) AS sales FROM transactions \
         GROUP BY product_id HAVING count(*) = 1",
    )
    .unwrap();
    let defs = vec![def];
    let none = Default::default();
    let t0 = DEFAULT_START_MS;
    let tx = common::streams()
        .streams
        .iter()
        .position(|s| s.name == "transactions")
        .unwrap();

    // First life: P1 sold, checkpoint, then P2 sold and shipped; then the process dies.
    {
        let (cp, restored) = Checkpoints::open(&ckpt, Duration::ZERO).unwrap();
        assert!(restored.state.is_none());
        let opts = PipelineOptions {
            flush_every: Duration::from_secs(1),
            dead_letters: tmp.path().join("dead.ndjson"),
            status: None,
            checkpoints: Some(Mutex::new(cp)),
            reload: None,
            shutdown_timeout: None,
        };
        let mut engine = Engine::new(common::streams(), &defs).await.unwrap();
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(NdjsonSink::new(&out).unwrap())];
        let a = engine.process(tx, transactions(&["P1"], t0)).await.unwrap();
        ship(&mut sinks, a.outputs, &none, &opts).await.unwrap();
        sinks[0].flush().await.unwrap();
        let state = engine.save_state().unwrap();
        let cp = opts.checkpoints.as_ref().unwrap();
        cp.lock()
            .unwrap()
            .write(&state, &Default::default())
            .unwrap();
        let b = engine
            .process(tx, transactions(&["P2"], t0 + 10))
            .await
            .unwrap();
        ship(&mut sinks, b.outputs, &none, &opts).await.unwrap();
        sinks[0].flush().await.unwrap();
    }
    let shipped = read_ndjson(&out.join("sold_once.ndjson"));
    assert_eq!(shipped.len(), 2, "{shipped:?}");

    // Second life: restore; the sink is set back to the checkpoint (P2 deleted).
    let (_cp, restored) = Checkpoints::open(&ckpt, Duration::ZERO).unwrap();
    assert_eq!(restored.epoch, 1);
    assert_eq!(restored.journaled_keys(), 1);
    let mut engine = Engine::new(common::streams(), &defs).await.unwrap();
    engine
        .restore_state(restored.state.as_ref().unwrap())
        .unwrap();
    let mut sink = NdjsonSink::new(&out).unwrap();
    let views: Vec<_> = engine.views().cloned().collect();
    sink.resume(&views).unwrap();
    let back = restored.resync(&mut engine).unwrap();
    sink.write(&back).await.unwrap();
    sink.flush().await.unwrap();
    let now = read_ndjson(&out.join("sold_once.ndjson"));
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0]["product_id"], "P1");

    // Re-processing P2's sale with a second one in the same round emits nothing for P2.
    let c = engine
        .process(tx, transactions(&["P2", "P2"], t0 + 10))
        .await
        .unwrap();
    assert!(c.outputs.is_empty(), "{:?}", c.outputs);
    assert_eq!(
        engine.snapshot("sold_once").unwrap().unwrap().num_rows(),
        1,
        "P1 only"
    );
}

/// A checkpoint only fits the views it was taken with: a changed, added or removed view is
/// refused by name, and nothing is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_other_views_is_refused_by_name() {
    use runnel::engine::{Engine, ViewDef};
    let v = |name: &str, sql: &str| {
        ViewDef::parse(Path::new(&format!("{name}.sql")), &format!("-- v\n{sql}")).unwrap()
    };
    let sales = "SELECT product_id, count(*) AS n FROM transactions GROUP BY product_id";
    let mut a = Engine::new(common::streams(), &[v("sales", sales)])
        .await
        .unwrap();
    let state = a.save_state().unwrap();
    let changed = sales.replace("count(*)", "sum(quantity)");
    for (defs, why) in [
        (vec![v("sales", &changed)], "view `sales` has changed"),
        (
            vec![v("sales", sales), v("more", sales)],
            "view `more` is not in the checkpoint",
        ),
        (
            vec![v("other", sales)],
            "view `other` is not in the checkpoint",
        ),
    ] {
        let mut b = Engine::new(common::streams(), &defs).await.unwrap();
        let e = b.restore_state(&state).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    let fresh = || async {
        Engine::new(common::streams(), &[v("sales", sales)])
            .await
            .unwrap()
    };
    let mut same = fresh().await;
    same.restore_state(&state).unwrap();
    // Only into a freshly planned engine: a second checkpoint would be added to the first.
    let e = same.restore_state(&state).unwrap_err().to_string();
    assert!(e.contains("freshly planned engine"), "{e}");
    // A temporary view (the REPL's CREATE VIEW) is not checkpointed: a restart without it
    // restores, and restoring into an engine that has one works too.
    a.add_view(&v("scratch", sales)).await.unwrap();
    let with_scratch = a.save_state().unwrap();
    assert!(with_scratch.views.iter().all(|v| v.name != "scratch"));
    fresh().await.restore_state(&with_scratch).unwrap();
    let mut with_temporary = fresh().await;
    with_temporary
        .add_view(&v("scratch2", sales))
        .await
        .unwrap();
    with_temporary.restore_state(&with_scratch).unwrap();
}
