//! Kafka experiments, end to end against librdkafka's mock cluster (real brokers on loopback
//! TCP, in this process): the producer's rate; throughput through decode and all shipped views but the day-long self-join
//! with 1, 2 and 3 brokers and 12 partitions; 1 and 2 instances in one consumer group; and
//! end-to-end latency (the producer's message timestamp to the view changes being handed to
//! the sink) at fixed rates. Prints markdown tables and writes SVG charts to `docs/bench/`.
//!
//! `cargo bench --bench kafka`. `RUNNEL_BENCH_EVENTS` sets the events per throughput run
//! (default 1000000).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel::decode::{Origin, StreamDecoder};
use runnel::engine::{view_file, Engine, ViewDef};
use runnel::generate::{Clock, Generator, Topic, DEFAULT_START_MS};
use runnel::kafka::{broker::LocalBroker, producer, KafkaOptions};
use runnel::schema::Streams;
use runnel::source::kafka::{AssignmentProbe, KafkaSource, KafkaSourceConfig};
use runnel::source::Source;

const PARTITIONS: i32 = 12;

/// librdkafka properties from an environment variable (`key=value,key=value`), for trying
/// settings without editing the bench.
fn env_options(var: &str) -> KafkaOptions {
    let items: Vec<String> = std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    KafkaOptions::parse(&items).unwrap()
}

/// Whether the section `name` runs: all do unless `RUNNEL_BENCH_ONLY` lists some.
fn section(name: &str) -> bool {
    std::env::var("RUNNEL_BENCH_ONLY").map_or(true, |v| v.split(',').any(|s| s == name))
}

fn catalog() -> (Streams, Vec<ViewDef>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let streams = Streams::load(&root.join("schemas")).unwrap();
    let (defs, errs) = view_file::load_dir(&root.join("queries")).unwrap();
    assert!(errs.is_empty());
    // The day-long self-join is measured on its own in benches/pipeline.rs (`flatness`): its
    // cost grows with each customer's purchases of the last day.
    let defs = defs
        .into_iter()
        .filter(|d| !["product_pairs", "product_affinity"].contains(&d.name.as_str()))
        .collect();
    (streams, defs)
}

/// One consumer instance: source -> decode -> every view, counting events and recording
/// per-event latency. Runs on its own thread and runtime (one core's worth of work).
struct Instance {
    probe: AssignmentProbe,
    thread: std::thread::JoinHandle<Vec<i64>>,
}

fn start_instance(
    bootstrap: &str,
    group: &str,
    max_wait: Duration,
    counted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
) -> Instance {
    let (streams, defs) = catalog();
    let source = KafkaSource::start(
        KafkaSourceConfig {
            bootstrap: bootstrap.to_string(),
            group: group.to_string(),
            options: env_options("RUNNEL_BENCH_CONSUMER_OPTS"),
            max_records: 8192,
            max_wait,
            until_end: false,
            resume: Default::default(),
            stop_at: None,
        },
        &streams,
    )
    .unwrap();
    let probe = source.assignment_probe();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut source = source;
            let mut engine = Engine::new(streams.clone(), &defs).await.unwrap();
            let mut decoders: Vec<StreamDecoder> = streams
                .streams
                .iter()
                .map(|s| StreamDecoder::new(s.clone()).unwrap())
                .collect();
            let mut latencies = Vec::new();
            // Held back (a backlog is being produced): the source's poller still joins the
            // group and prefetches a bounded amount.
            while !go.load(Ordering::SeqCst) && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            while !stop.load(Ordering::Relaxed) {
                let round = tokio::select! {
                    r = source.next() => r.unwrap(),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                };
                let Some(round) = round else { break };
                let mut stamps = Vec::new();
                let mut decoded = Vec::new();
                for raw in round {
                    if let Origin::Kafka { timestamps, .. } = &raw.origin {
                        stamps.extend(timestamps.iter().flatten().copied());
                    }
                    let d = decoders[raw.stream].decode(&raw).unwrap();
                    decoded.push((raw.stream, d.batch));
                }
                let n: usize = decoded.iter().map(|(_, b)| b.num_rows()).sum();
                let _changes = engine.process_round(decoded).await.unwrap();
                // The changes are ready for the sinks now.
                let now = chrono::Utc::now().timestamp_millis();
                latencies.extend(stamps.iter().map(|t| now - t));
                counted.fetch_add(n as u64, Ordering::SeqCst);
            }
            latencies
        })
    });
    Instance { probe, thread }
}

fn fresh_cluster(brokers: i32) -> LocalBroker {
    cluster_with(brokers, PARTITIONS, 1)
}

fn cluster_with(brokers: i32, partitions: i32, replication: i32) -> LocalBroker {
    let b = LocalBroker::start(brokers).unwrap();
    for t in Topic::ALL {
        b.create_topic(t.topic(), partitions, replication).unwrap();
    }
    b
}

/// Waits until `counted` reaches `n`; panics (naming the shortfall) after five minutes.
fn wait_for(counted: &AtomicU64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while counted.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events arrived",
            counted.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Timings of one experiment over a fresh cluster.
struct Timed {
    events: u64,
    produce_secs: f64,
    /// From the start of producing to every event through every view.
    total_secs: f64,
    /// From releasing the consumers (after the backlog was produced) to every event through
    /// every view.
    drain_secs: f64,
}

/// `instances` consumers (a thread each) in one group settle on a fresh cluster; then
/// `produce` fills the topics. With `backlog`, the consumers are held back until it is done
/// and the drain is timed on its own; otherwise they consume while it produces.
fn experiment(
    cluster: &LocalBroker,
    partitions: i32,
    instances: usize,
    backlog: bool,
    produce: impl FnOnce(&str) -> u64,
) -> Timed {
    let counted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(!backlog));
    let insts: Vec<Instance> = (0..instances)
        .map(|_| {
            start_instance(
                cluster.bootstrap(),
                "experiment",
                Duration::from_millis(100),
                counted.clone(),
                stop.clone(),
                go.clone(),
            )
        })
        .collect();
    settle(&insts, partitions);
    let started = Instant::now();
    let events = produce(cluster.bootstrap());
    let produce_secs = started.elapsed().as_secs_f64();
    let released = Instant::now();
    go.store(true, Ordering::SeqCst);
    wait_for(&counted, events);
    let t = Timed {
        events,
        produce_secs,
        total_secs: started.elapsed().as_secs_f64(),
        drain_secs: released.elapsed().as_secs_f64(),
    };
    stop.store(true, Ordering::SeqCst);
    for i in insts {
        i.thread.join().unwrap();
    }
    t
}

fn generator() -> Generator {
    Generator::new(
        7,
        Clock::Simulated {
            start_ms: DEFAULT_START_MS,
        },
    )
}

/// Waits until the instances together own every partition, each a share.
fn settle(instances: &[Instance], partitions: i32) {
    let total = (Topic::ALL.len() as i32 * partitions) as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a: Vec<usize> = instances.iter().map(|i| i.probe.get().len()).collect();
        if a.iter().all(|&n| n > 0) && a.iter().sum::<usize>() == total {
            return;
        }
        assert!(Instant::now() < deadline, "group never settled: {a:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Run {
    produce_secs: f64,
    total_secs: f64,
    events: u64,
    latencies: Vec<i64>,
}

/// Produces `events` (at `rate`, or as fast as possible) into a fresh cluster that
/// `instances` consumers in one group already share; returns when all are processed.
fn run(brokers: i32, instances: usize, events: u64, rate: Option<u64>, max_wait: Duration) -> Run {
    let cluster = fresh_cluster(brokers);
    let counted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let group = format!("bench-{brokers}-{instances}");
    let insts: Vec<Instance> = (0..instances)
        .map(|_| {
            start_instance(
                cluster.bootstrap(),
                &group,
                max_wait,
                counted.clone(),
                stop.clone(),
                Arc::new(AtomicBool::new(true)),
            )
        })
        .collect();
    settle(&insts, PARTITIONS);
    let mut gen = Generator::new(
        7,
        Clock::Simulated {
            start_ms: DEFAULT_START_MS,
        },
    );
    let started = Instant::now();
    let produced = producer::produce(
        cluster.bootstrap(),
        &env_options("RUNNEL_BENCH_PRODUCER_OPTS"),
        &mut gen,
        Some(events),
        rate,
    )
    .unwrap();
    let produce_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    while counted.load(Ordering::SeqCst) < produced && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let total_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let mut latencies = Vec::new();
    for i in insts {
        latencies.extend(i.thread.join().unwrap());
    }
    Run {
        produce_secs,
        total_secs,
        events: counted.load(Ordering::SeqCst),
        latencies,
    }
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A horizontal bar chart as SVG: one bar per (label, value), values labelled.
fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let w = 640.0;
    let left = 150.0;
    let row = 34.0;
    let h = 50.0 + row * bars.len() as f64;
    let max = bars.iter().map(|b| b.1).fold(1e-9, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{title}</text>\n"
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 40.0 + row * i as f64;
        let bw = (w - left - 110.0) * v / max;
        s.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{label}</text>\n<rect x=\"{left}\" y=\"{:.0}\" width=\"{bw:.1}\" height=\"22\" fill=\"#3b7dd8\"/>\n<text x=\"{:.0}\" y=\"{:.0}\">{} {unit}</text>\n",
            left - 8.0,
            y + 16.0,
            y,
            left + bw + 6.0,
            y + 16.0,
            human(*v)
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events: u64 = std::env::var("RUNNEL_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench");
    std::fs::create_dir_all(&out).unwrap();
    let wait = Duration::from_millis(100);

    if section("brokers") {
        println!("\n## Brokers (12 partitions per topic, one instance, {events} events)\n");
        println!("| brokers | producer events/s | produce -> all views processed, events/s |");
        println!("|---:|---:|---:|");
        let mut broker_bars = Vec::new();
        let mut producer_bars = Vec::new();
        for brokers in 1..=3 {
            let r = run(brokers, 1, events, None, wait);
            let p = r.events as f64 / r.produce_secs;
            let t = r.events as f64 / r.total_secs;
            println!("| {brokers} | {p:.0} | {t:.0} |");
            broker_bars.push((format!("{brokers} broker(s)"), t));
            producer_bars.push((format!("{brokers} broker(s)"), p));
        }
        std::fs::write(
            out.join("kafka-brokers.svg"),
            bar_chart(
                "Produce + decode + all 12 views, 12 partitions",
                "events/s",
                &broker_bars,
            ),
        )
        .unwrap();
        std::fs::write(
            out.join("kafka-producer.svg"),
            bar_chart(
                "runnel generate --kafka: producer rate",
                "events/s",
                &producer_bars,
            ),
        )
        .unwrap();
    }
    if section("instances") {
        println!(
            "\n## Instances in one consumer group (3 brokers, 12 partitions, {events} events)\n"
        );
        println!("| instances (one thread each) | events/s |");
        println!("|---:|---:|");
        let mut inst_bars = Vec::new();
        for n in 1..=2 {
            let r = run(3, n, events, None, wait);
            let t = r.events as f64 / r.total_secs;
            println!("| {n} | {t:.0} |");
            inst_bars.push((format!("{n} instance(s)"), t));
        }
        std::fs::write(
            out.join("kafka-instances.svg"),
            bar_chart("Instances (threads) in one group", "events/s", &inst_bars),
        )
        .unwrap();
    }
    if section("drain") {
        println!(
        "\n## Draining a backlog (3 brokers, 12 partitions, {events} events of all six streams)\n"
    );
        println!(
            "The consumers are held back while the backlog is produced, then timed alone: decode"
        );
        println!(
        "and all shipped views but the day-long self-join, with the brokers but not the producer sharing the two cores.\n"
    );
        println!("| instances (one thread each) | drain seconds | events/s |");
        println!("|---:|---:|---:|");
        let mut drain_bars = Vec::new();
        for n in 1..=2 {
            let cluster = fresh_cluster(3);
            let t = experiment(&cluster, PARTITIONS, n, true, |b| {
                producer::produce(
                    b,
                    &env_options("RUNNEL_BENCH_PRODUCER_OPTS"),
                    &mut generator(),
                    Some(events),
                    None,
                )
                .unwrap()
            });
            let r = t.events as f64 / t.drain_secs;
            println!("| {n} | {:.2} | {r:.0} |", t.drain_secs);
            drain_bars.push((format!("{n} instance(s)"), r));
        }
        std::fs::write(
            out.join("kafka-drain.svg"),
            bar_chart(
                "Draining a backlog through all views",
                "events/s",
                &drain_bars,
            ),
        )
        .unwrap();
    }
    let tx: u64 = std::env::var("RUNNEL_BENCH_TRANSACTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let produce_transactions = |b: &str| {
        producer::produce_topic(
            b,
            &env_options("RUNNEL_BENCH_PRODUCER_OPTS"),
            &mut generator(),
            Topic::Transactions,
            tx,
        )
        .unwrap()
    };
    if section("replication") {
        println!("\n## Replication factor ({tx} transaction messages, 3 brokers, 24 partitions, one instance consuming while they are produced)\n");
        println!("| replication | produce seconds | produce + consume through all views, seconds | original design, seconds |");
        println!("|---:|---:|---:|---:|");
        let mut repl_bars = Vec::new();
        for r in 1..=3 {
            let cluster = cluster_with(3, 24, r);
            let t = experiment(&cluster, 24, 1, false, produce_transactions);
            println!(
                "| {r} | {:.2} | {:.2} | about 17-18 |",
                t.produce_secs, t.total_secs
            );
            repl_bars.push((format!("runnel, replication {r}"), t.total_secs));
        }
        repl_bars.push(("original (Spark)".to_string(), 17.5));
        std::fs::write(
            out.join("kafka-replication.svg"),
            bar_chart(
                "Produce + consume 500k transactions (lower is better)",
                "s",
                &repl_bars,
            ),
        )
        .unwrap();
    }
    if section("threads") {
        println!("\n## Worker threads ({tx} transaction messages already in the topics, 3 brokers, 24 partitions)\n");
        println!(
            "runnel's engine is single-threaded per instance; threads scale it as instances in one"
        );
        println!("consumer group, each owning whole partitions.\n");
        println!(
            "| threads (instances) | processing seconds | events/s | original design, seconds |"
        );
        println!("|---:|---:|---:|---:|");
        let mut thread_bars = Vec::new();
        for (n, original) in [(1usize, 41.8), (2, 24.0)] {
            let cluster = cluster_with(3, 24, 1);
            let t = experiment(&cluster, 24, n, true, produce_transactions);
            println!(
                "| {n} | {:.2} | {:.0} | {original} |",
                t.drain_secs,
                t.events as f64 / t.drain_secs
            );
            thread_bars.push((format!("runnel, {n} thread(s)"), t.drain_secs));
            thread_bars.push((format!("original, {n} core(s)"), original));
        }
        std::fs::write(
            out.join("kafka-threads.svg"),
            bar_chart(
                "Process 500k transactions (lower is better)",
                "s",
                &thread_bars,
            ),
        )
        .unwrap();
    }
    if section("latency") {
        println!("\n## End-to-end latency (producer timestamp -> changes handed to the sinks; 3 brokers, one instance, --max-wait-ms 10)\n");
        println!("| offered events/s | events | p50 ms | p99 ms | max ms |");
        println!("|---:|---:|---:|---:|---:|");
        let mut lat_bars = Vec::new();
        // The last row offers everything at once: the highest rate this machine sustains.
        let rates = [
            (Some(100u64), 500u64),
            (Some(1_000), 5_000),
            (Some(10_000), 50_000),
            (Some(100_000), 400_000),
            (None, events),
        ];
        for (rate, n) in rates {
            let r = run(3, 1, n, rate, Duration::from_millis(10));
            let achieved = r.events as f64 / r.total_secs;
            let mut l = r.latencies;
            l.sort_unstable();
            let (p50, p99, max) = (pct(&l, 0.5), pct(&l, 0.99), *l.last().unwrap_or(&0));
            let label = match rate {
                Some(rate) => rate.to_string(),
                None => format!("unthrottled ({achieved:.0} achieved)"),
            };
            println!("| {label} | {} | {p50} | {p99} | {max} |", r.events);
            let short = match rate {
                Some(rate) => format!("{} /s", human(rate as f64)),
                None => format!("max {} /s", human(achieved)),
            };
            lat_bars.push((format!("{short} p50"), p50 as f64));
            lat_bars.push((format!("{short} p99"), p99 as f64));
        }
        std::fs::write(
            out.join("kafka-latency.svg"),
            bar_chart("End-to-end latency by offered rate", "ms", &lat_bars),
        )
        .unwrap();
    }
}
