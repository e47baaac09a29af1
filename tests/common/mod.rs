//! Test support: data sets from the generator, replays through the real pipeline, the batch
//! oracle, and a tolerant comparison of results.
#![allow(dead_code)]

pub mod osmem;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runnel::decode::{Origin, RawBatch, StreamDecoder};
use runnel::engine::{view_file, Engine, ViewDef};
use runnel::generate::{Clock, Generator, Topic, DEFAULT_START_MS};
use runnel::pipeline::{self, PipelineOptions};
use runnel::schema::Streams;
use runnel::sink::{ndjson::NdjsonSink, rows_to_json, Sink};
use runnel::source::files::FileSource;
use serde_json::{Map, Value};

pub type Rows = Vec<Map<String, Value>>;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn streams() -> Streams {
    Streams::load(&root().join("schemas")).expect("schemas load")
}

/// Writes `count` generated events as `<topic>.ndjson` files under `dir`.
pub fn generate(dir: &Path, seed: u64, count: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut g = Generator::new(
        seed,
        Clock::Simulated {
            start_ms: DEFAULT_START_MS,
        },
    );
    let mut bufs: [Vec<u8>; 6] = Default::default();
    for _ in 0..count {
        g.next_into(&mut bufs);
    }
    for t in Topic::ALL {
        std::fs::write(dir.join(format!("{}.ndjson", t.topic())), &bufs[t as usize]).unwrap();
    }
}

/// Shuffles each file's lines within blocks spanning at most `span_ms` of event time, so the
/// disorder stays within the watermark delay.
pub fn shuffle_within(dir: &Path, span_ms: i64, seed: u64) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for s in streams().streams {
        let p = dir.join(format!("{}.ndjson", s.topic));
        let text = std::fs::read_to_string(&p).unwrap();
        let needle = format!("\"{}\":", s.event_time);
        let mut out: Vec<&str> = Vec::new();
        let mut block: Vec<&str> = Vec::new();
        let mut start = i64::MIN;
        for line in text.lines() {
            let t = runnel::source::files::line_time(line.as_bytes(), needle.as_bytes()).unwrap();
            if t.saturating_sub(start) > span_ms {
                block.shuffle(&mut rng);
                out.append(&mut block);
                start = t;
            }
            block.push(line);
        }
        block.shuffle(&mut rng);
        out.append(&mut block);
        std::fs::write(&p, out.join("\n") + "\n").unwrap();
    }
}

pub fn load_views(dir: &Path) -> Vec<ViewDef> {
    let (defs, errors) = view_file::load_dir(dir).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    defs
}

pub fn read_ndjson(path: &Path) -> Rows {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Loads the named view files (paths relative to the repository root).
pub fn views_named(paths: &[&str]) -> Vec<ViewDef> {
    paths
        .iter()
        .map(|p| {
            let path = root().join(p);
            ViewDef::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
        })
        .collect()
}

/// Replays `data` through the real pipeline (file source, ndjson sink); returns each view's rows.
pub async fn replay(
    data: &Path,
    defs: &[ViewDef],
    batch: usize,
    out: &Path,
) -> BTreeMap<String, Rows> {
    replay_engine(data, defs, batch, out).await.0
}

/// [`replay`], and the engine as the replay left it.
pub async fn replay_engine(
    data: &Path,
    defs: &[ViewDef],
    batch: usize,
    out: &Path,
) -> (BTreeMap<String, Rows>, Engine) {
    let source = FileSource::open(data, &streams(), batch).unwrap();
    run_pipeline_engine(defs, source, out).await
}

/// Runs the views over `source` into an ndjson sink at `out` until the source is drained.
pub async fn run_pipeline(
    defs: &[ViewDef],
    source: impl runnel::source::Source,
    out: &Path,
) -> BTreeMap<String, Rows> {
    run_pipeline_engine(defs, source, out).await.0
}

/// [`run_pipeline`], and the engine as the run left it.
pub async fn run_pipeline_engine(
    defs: &[ViewDef],
    mut source: impl runnel::source::Source,
    out: &Path,
) -> (BTreeMap<String, Rows>, Engine) {
    let mut engine = match Engine::new(streams(), defs).await {
        Ok(e) => e,
        Err(e) => panic!("views do not plan: {e}"),
    };
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(NdjsonSink::new(out).unwrap())];
    let opts = PipelineOptions {
        flush_every: Duration::from_millis(200),
        dead_letters: out.join("dead_letters.ndjson"),
        status: None,
        checkpoints: None,
        reload: None,
        shutdown_timeout: None,
    };
    let summary = pipeline::run(
        &mut engine,
        &mut source,
        &mut sinks,
        &opts,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(summary.malformed, 0);
    let rows = defs
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                read_ndjson(&out.join(format!("{}.ndjson", d.name))),
            )
        })
        .collect();
    (rows, engine)
}

/// Decodes every file whole and runs the batch oracle.
pub async fn oracle(data: &Path, defs: &[ViewDef]) -> BTreeMap<String, Rows> {
    let streams = streams();
    let mut per_stream = vec![Vec::new(); streams.streams.len()];
    for (i, s) in streams.streams.iter().enumerate() {
        let p = data.join(format!("{}.ndjson", s.topic));
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        let raw = RawBatch::from_lines(
            i,
            bytes,
            Origin::Lines {
                file: "x".into(),
                first_line: 1,
            },
        );
        let mut d = StreamDecoder::new(s.clone()).unwrap();
        let decoded = d.decode(&raw).unwrap();
        assert!(decoded.rejected.is_empty());
        per_stream[i].push(decoded.batch);
    }
    let results = runnel::oracle::run(&streams, &per_stream, defs)
        .await
        .unwrap();
    results
        .into_iter()
        .map(|(k, b)| (k, rows_to_json(&b).unwrap()))
        .collect()
}

fn canon(v: &Value) -> String {
    match v {
        // Within `close`'s absolute tolerance of zero, a float is zero: an average of values
        // that cancel out comes out as 0 or as ±3e-17, depending on the order of the sum.
        Value::Number(n) if n.is_f64() => match n.as_f64().unwrap_or(0.0) {
            x if x.abs() <= 1e-9 => "0".to_string(),
            x => format!("{x:.6e}"),
        },
        other => other.to_string(),
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

/// Rows as sortable strings, sorted: the fields that are not floats first (they pair the rows
/// of two results whatever the floats' last digits), then the floats to 6 significant digits.
fn sorted(rows: &Rows) -> Vec<(String, &Map<String, Value>)> {
    let mut v: Vec<(String, &Map<String, Value>)> = rows
        .iter()
        .map(|r| {
            let mut keys: Vec<&String> = r.keys().collect();
            keys.sort_by_key(|k| (r[*k].is_f64(), *k));
            let s: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}={}", canon(&r[*k])))
                .collect();
            (s.join(","), r)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn same_row(g: &Map<String, Value>, w: &Map<String, Value>) -> bool {
    g.len() == w.len() && w.iter().all(|(k, v)| g.get(k).is_some_and(|x| close(x, v)))
}

/// Whether two results are equal as multisets of rows, floats within a relative 1e-9.
pub fn same(got: &Rows, want: &Rows) -> bool {
    got.len() == want.len()
        && sorted(got)
            .iter()
            .zip(sorted(want).iter())
            .all(|((_, g), (_, w))| same_row(g, w))
}

/// Compares two results as multisets of rows, floats within a relative 1e-9.
pub fn assert_same(view: &str, got: &Rows, want: &Rows) {
    assert_eq!(
        got.len(),
        want.len(),
        "view {view}: {} rows streamed, {} in the batch oracle",
        got.len(),
        want.len()
    );
    let (g, w) = (sorted(got), sorted(want));
    for ((gs, gr), (ws, wr)) in g.iter().zip(w.iter()) {
        assert!(
            same_row(gr, wr),
            "view {view}: streamed row\n  {gs}\ndiffers from the batch oracle's\n  {ws}"
        );
    }
}

/// A local Kafka-protocol broker (librdkafka's mock cluster) with the six topics, and its
/// bootstrap address.
pub fn kafka_cluster(
    brokers: i32,
    partitions: i32,
) -> (runnel::kafka::broker::LocalBroker, String) {
    let broker = runnel::kafka::broker::LocalBroker::start(brokers).unwrap();
    for t in Topic::ALL {
        broker.create_topic(t.topic(), partitions, 1).unwrap();
    }
    let bootstrap = broker.bootstrap().to_string();
    (broker, bootstrap)
}

/// Messages the six topics hold in their first `partitions` partitions (high minus low
/// watermark, summed).
pub fn messages_in_topics(bootstrap: &str, partitions: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let mut total = 0;
    for t in Topic::ALL {
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(t.topic(), p, Duration::from_secs(10))
                .unwrap();
            total += high - low;
        }
    }
    total
}

/// Produces the generator's first `n` events for `seed` (the events `generate` writes to
/// files for the same seed and count), as `runnel generate --kafka` does.
pub async fn produce_generated(bootstrap: &str, seed: u64, n: u64) -> u64 {
    let bootstrap = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        let mut g = Generator::new(
            seed,
            Clock::Simulated {
                start_ms: DEFAULT_START_MS,
            },
        );
        runnel::kafka::producer::produce(
            &bootstrap,
            &runnel::kafka::KafkaOptions::default(),
            &mut g,
            Some(n),
            None,
        )
        .unwrap()
    })
    .await
    .unwrap()
}

/// `GET path` on a plain HTTP/1.1 server; the whole answer, head and body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The address a `runnel run --metrics ...` child prints on stderr; the rest of its stderr
/// is drained in the background.
pub fn metrics_addr(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let addr = loop {
        let line = lines.next().expect("a metrics line").unwrap();
        if let Some(rest) = line.strip_prefix("metrics: http://") {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    addr
}
