//! The `runnel` command line. Arguments only; the work is in the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use runnel::checkpoint::{Checkpoints, Positions, Restored};
use runnel::engine::{view_file, Engine, ViewDef};
use runnel::generate::{Clock, Generator, Topic, DEFAULT_START_MS};
use runnel::kafka::{broker::LocalBroker, producer, KafkaOptions};
use runnel::pipeline::{self, PipelineOptions};
use runnel::schema::Streams;
use runnel::sink::elasticsearch::{EsAuth, EsOptions};
use runnel::sink::{self, console::ConsoleOptions, SinkSpec};
use runnel::source::kafka::{KafkaSource, KafkaSourceConfig};
use runnel::source::{self, files::FileSource, generator::GeneratorSource, SourceSpec};

/// SQL-first streaming analytics: continuous SQL views over e-commerce event streams.
///
/// Each .sql file under queries/ is one continuous view. runnel decodes events into Arrow,
/// keeps every view up to date incrementally, and ships results to sinks.
#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    propagate_version = true,
    after_help = "Options can also come from a TOML file: --config FILE (or RUNNEL_CONFIG), one \
section per command ([run], [generate], [repl], ...), keys named as the long flags. Flags beat \
environment variables, which beat the file."
)]
struct Cli {
    /// TOML file of options, one section per command (see below).
    #[arg(long, global = true, env = "RUNNEL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every view continuously (default: built-in generator in, live tables on the console).
    Run(Box<RunArgs>),
    /// Generate synthetic e-commerce traffic as NDJSON (one file per topic) or to stdout.
    Generate(GenerateArgs),
    /// Validate view files against the schemas; report every problem with file:line:column.
    Check(CheckArgs),
    /// Interactive SQL over the live streams and views (same sources and options as `run`;
    /// no sinks unless given). `-c` or statements on stdin run without a prompt.
    Repl(Box<ReplArgs>),
    /// Start a local Kafka-protocol broker for trials and tests (librdkafka's mock cluster,
    /// in memory, not for production) and print its bootstrap address.
    Broker(BrokerArgs),
}

#[derive(Args)]
struct BrokerArgs {
    /// Number of brokers in the cluster.
    #[arg(long, default_value_t = 1)]
    brokers: i32,
    /// Partitions of each of the six topics, created at start.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Replication factor of the topics (at most --brokers).
    #[arg(long, default_value_t = 1)]
    replication: i32,
}

#[derive(Args, Clone)]
struct KafkaArgs {
    /// librdkafka property for every Kafka client, `key=value` (repeatable), e.g.
    /// `security.protocol=SASL_SSL`, `sasl.username=...`. Secrets are never logged.
    #[arg(
        long = "kafka-option",
        env = "RUNNEL_KAFKA_OPTIONS",
        value_delimiter = ';'
    )]
    kafka_options: Vec<String>,
}

/// Settings shared by every `elasticsearch:URL` sink.
#[derive(Args, Clone)]
struct EsArgs {
    /// Elasticsearch: user for basic authentication.
    #[arg(long, env = "RUNNEL_ES_USER")]
    es_user: Option<String>,
    /// Elasticsearch: password for basic authentication (prefer the environment variable).
    #[arg(long, env = "RUNNEL_ES_PASSWORD", hide_env_values = true)]
    es_password: Option<String>,
    /// Elasticsearch: API key (the base64 `encoded` value, or `id:key`).
    #[arg(long, env = "RUNNEL_ES_API_KEY", hide_env_values = true)]
    es_api_key: Option<String>,
    /// Elasticsearch: PEM file of the CA that signed the cluster's certificate (https).
    #[arg(long, env = "RUNNEL_ES_CA_CERT")]
    es_ca_cert: Option<PathBuf>,
    /// Elasticsearch: most documents per bulk request.
    #[arg(long, default_value_t = 1000)]
    es_batch_docs: usize,
    /// Elasticsearch: most bytes per bulk request.
    #[arg(long, default_value_t = 5 << 20)]
    es_batch_bytes: usize,
    /// Elasticsearch: most bulk requests in flight at once.
    #[arg(long, default_value_t = 2)]
    es_max_in_flight: usize,
    /// Elasticsearch: seconds before one request times out (then it is retried).
    #[arg(long, default_value_t = 30.0)]
    es_timeout: f64,
    /// Elasticsearch: give up after retrying a request this many seconds (default: retry
    /// forever, warning on every attempt, with nothing committed meanwhile).
    #[arg(long)]
    es_max_retry: Option<f64>,
}

impl EsArgs {
    fn options(&self, dead_letters: &std::path::Path) -> anyhow::Result<EsOptions> {
        let mut o = EsOptions::new("", dead_letters);
        o.auth = match (&self.es_user, &self.es_password, &self.es_api_key) {
            (_, _, Some(k)) => EsAuth::ApiKey(k.clone()),
            (Some(u), p, None) => EsAuth::Basic {
                user: u.clone(),
                password: p.clone().unwrap_or_default(),
            },
            (None, Some(_), None) => bail!("--es-password needs --es-user"),
            (None, None, None) => EsAuth::None,
        };
        o.ca_cert = self.es_ca_cert.clone();
        o.batch_docs = self.es_batch_docs.max(1);
        o.batch_bytes = self.es_batch_bytes.max(1024);
        o.max_in_flight = self.es_max_in_flight.max(1);
        o.request_timeout = Duration::from_secs_f64(self.es_timeout.max(0.1));
        o.max_retry = self
            .es_max_retry
            .map(|s| Duration::from_secs_f64(s.max(0.0)));
        Ok(o)
    }
}

#[derive(Args, Clone)]
struct Catalog {
    /// Directory of view files (*.sql). Default: ./queries, or the built-in views if missing.
    #[arg(long, env = "RUNNEL_QUERIES")]
    queries: Option<PathBuf>,
    /// Directory of stream schemas (*.toml). Default: ./schemas, or the built-in schemas.
    #[arg(long, env = "RUNNEL_SCHEMAS")]
    schemas: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    catalog: Catalog,
    /// Where events come from: `generator` (built in) or `files:DIR` (DIR/<topic>.ndjson).
    #[arg(long, default_value = "generator", env = "RUNNEL_SOURCE")]
    source: SourceSpec,
    /// Where results go: `console`, `ndjson:DIR`, `elasticsearch:URL` (one index per view,
    /// idempotent upserts and deletes by key). Repeatable. Default: console.
    #[arg(long = "sink", env = "RUNNEL_SINK", value_delimiter = ';')]
    sinks: Vec<SinkSpec>,
    /// Kafka: stop at the end offsets seen at start. Any source: at the end of input every
    /// window is closed and flushed (files and `--count` runs end there by themselves).
    #[arg(long)]
    until_drained: bool,
    /// Generator: random seed (same seed, same events).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Generator: events per second, with wall-clock event times. Default 1000 unless --count.
    #[arg(long)]
    rate: Option<u64>,
    /// Generator: stop after this many events (simulated event times, as fast as possible).
    #[arg(long)]
    count: Option<u64>,
    /// Records per micro-batch at most: generator and Kafka count all streams together, file
    /// replay reads up to this many lines ahead per file. Rounds fill up only while a backlog
    /// is waiting (Kafka also stops at --max-wait-ms); larger rounds fold more of a group's
    /// updates into one change (docs/BENCHMARKS.md).
    #[arg(long, default_value_t = 32768)]
    batch_size: usize,
    /// File for malformed and late records (JSON lines with reason and position).
    #[arg(
        long,
        default_value = "runnel-dead-letters.ndjson",
        env = "RUNNEL_DEAD_LETTERS"
    )]
    dead_letters: PathBuf,
    /// Seconds between sink flushes and console refreshes; the views' changed rows are
    /// computed once per flush (not once per round).
    #[arg(long, default_value_t = 1.0)]
    refresh: f64,
    /// Rows shown per view on the console.
    #[arg(long, default_value_t = 8)]
    rows: usize,
    /// Kafka: consumer group (instances in one group split the partitions).
    #[arg(long, default_value = "runnel", env = "RUNNEL_GROUP")]
    group: String,
    /// Kafka: longest wait (ms) for a micro-batch to fill before it is processed.
    #[arg(long, default_value_t = 100)]
    max_wait_ms: u64,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    es: EsArgs,
    /// Also open the SQL prompt over the running pipeline (see `runnel repl`); without
    /// `--sink`, nothing is shipped while the prompt is open.
    #[arg(long)]
    repl: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics and a health check at /health
    /// (e.g. 127.0.0.1:9464; port 0 picks one and prints it).
    #[arg(long, env = "RUNNEL_METRICS")]
    metrics: Option<String>,
    /// REPL: most recent events of each stream kept for queries.
    #[arg(long, default_value_t = 10_000)]
    repl_window: usize,
    /// REPL: history file (default ~/.runnel_history).
    #[arg(long, env = "RUNNEL_HISTORY")]
    history: Option<PathBuf>,
    /// Keep checkpoints of all view state and source positions here; a restart resumes from
    /// the latest one instead of replaying history (kafka: and files: sources). One
    /// directory per runnel process.
    #[arg(long, env = "RUNNEL_CHECKPOINT")]
    checkpoint: Option<PathBuf>,
    /// Seconds between checkpoints. Kafka offsets are committed with each checkpoint.
    #[arg(long, default_value_t = 10.0)]
    checkpoint_every: f64,
    /// Seconds the sinks get to acknowledge the last results after Ctrl-C or SIGTERM; past
    /// that, runnel exits with an error without committing them (a restart re-delivers).
    #[arg(long, default_value_t = 30.0)]
    shutdown_timeout: f64,
    /// Do not apply edits to the queries directory while running (by default a changed,
    /// added or deleted view file takes effect within a second, rebuilt from the input).
    #[arg(long)]
    no_reload: bool,
}

#[derive(Args)]
struct ReplArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Run these `;`-separated statements and exit instead of prompting (a replay or a
    /// `--count` run is drained first, so results are complete).
    #[arg(short = 'c', long)]
    command: Option<String>,
}

#[derive(Args)]
struct GenerateArgs {
    /// Directory for <topic>.ndjson files (created if missing).
    #[arg(long, conflicts_with = "stdout")]
    out: Option<PathBuf>,
    /// Write to stdout instead: one `{"topic": ..., "value": {...}}` line per event.
    #[arg(long)]
    stdout: bool,
    /// Number of events (default 100000; unbounded with --rate).
    #[arg(long)]
    count: Option<u64>,
    /// Events per second with wall-clock event times (default: as fast as possible, with
    /// simulated event times starting 2026-01-01T00:00:00Z).
    #[arg(long)]
    rate: Option<u64>,
    /// Random seed: the same seed gives the same events.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Produce to Kafka at HOST:PORT[,HOST:PORT...] instead of writing files.
    #[arg(long, conflicts_with_all = ["out", "stdout"])]
    kafka: Option<String>,
    /// Kafka: partitions for topics that do not exist yet.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Kafka: replication factor for topics that do not exist yet.
    #[arg(long, default_value_t = 1)]
    replication: i32,
    #[command(flatten)]
    kafka_opts: KafkaArgs,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    catalog: Catalog,
}

const BUILTIN_VIEWS: &[(&str, &str)] = &[
    (
        "category_windows.sql",
        include_str!("../queries/category_windows.sql"),
    ),
    (
        "customer_logins.sql",
        include_str!("../queries/customer_logins.sql"),
    ),
    (
        "customer_retention.sql",
        include_str!("../queries/customer_retention.sql"),
    ),
    (
        "retention_segments.sql",
        include_str!("../queries/retention_segments.sql"),
    ),
    (
        "category_prices.sql",
        include_str!("../queries/category_prices.sql"),
    ),
    (
        "customer_activity.sql",
        include_str!("../queries/customer_activity.sql"),
    ),
    (
        "customer_interactions.sql",
        include_str!("../queries/customer_interactions.sql"),
    ),
    (
        "gender_engagement.sql",
        include_str!("../queries/gender_engagement.sql"),
    ),
    ("low_stock.sql", include_str!("../queries/low_stock.sql")),
    (
        "product_pairs.sql",
        include_str!("../queries/product_pairs.sql"),
    ),
    (
        "product_affinity.sql",
        include_str!("../queries/product_affinity.sql"),
    ),
    (
        "product_sales.sql",
        include_str!("../queries/product_sales.sql"),
    ),
    (
        "review_sentiment.sql",
        include_str!("../queries/review_sentiment.sql"),
    ),
    (
        "sales_velocity.sql",
        include_str!("../queries/sales_velocity.sql"),
    ),
    (
        "slow_movers.sql",
        include_str!("../queries/slow_movers.sql"),
    ),
    (
        "view_trends.sql",
        include_str!("../queries/view_trends.sql"),
    ),
    (
        "system_health.sql",
        include_str!("../queries/system_health.sql"),
    ),
    (
        "top_sellers.sql",
        include_str!("../queries/top_sellers.sql"),
    ),
];

fn load_catalog(c: &Catalog) -> anyhow::Result<(Streams, Vec<ViewDef>, Vec<runnel::Error>)> {
    let streams = match &c.schemas {
        Some(dir) => Streams::load(dir)?,
        None if Path::new("schemas").is_dir() => Streams::load(Path::new("schemas"))?,
        None => Streams::builtin(),
    };
    let (defs, errors) = match &c.queries {
        Some(dir) => view_file::load_dir(dir)?,
        None if Path::new("queries").is_dir() => view_file::load_dir(Path::new("queries"))?,
        None => {
            let mut defs = Vec::new();
            for (name, text) in BUILTIN_VIEWS {
                defs.push(ViewDef::parse(&Path::new("queries").join(name), text)?);
            }
            (defs, Vec::new())
        }
    };
    Ok((streams, defs, errors))
}

fn init_logs(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNNEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // RUNNEL_LOG_FORMAT=json: one JSON object per line, for log shippers.
    if std::env::var("RUNNEL_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> std::process::ExitCode {
    use clap::CommandFactory;
    let args = match runnel::config::expand_args(std::env::args().collect(), &Cli::command()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    // No subcommand means `runnel run` with its defaults (and its environment variables).
    let command = match cli.command {
        Some(c) => c,
        None => match Cli::parse_from(["runnel", "run"]).command {
            Some(c) => c,
            None => return std::process::ExitCode::FAILURE,
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Run(a) => run(*a).await,
            Command::Generate(a) => generate(a).await,
            Command::Check(a) => check(a).await,
            Command::Broker(a) => broker(a).await,
            Command::Repl(a) => {
                let mut r = a.run;
                r.repl = true;
                run_with_repl(r, a.command).await
            }
        }
    });
    // A prompt still waiting for a line must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(a: RunArgs) -> anyhow::Result<std::process::ExitCode> {
    if a.repl {
        return run_with_repl(a, None).await;
    }
    let sinks_spec = if a.sinks.is_empty() {
        vec![SinkSpec::Console]
    } else {
        a.sinks.clone()
    };
    init_logs(sinks_spec.contains(&SinkSpec::Console));
    let (streams, mut engine) = plan_views(&a.catalog).await?;
    let restored = restore(&a, &mut engine)?;
    let resume = restored.as_ref().map(|r| &r.1.positions);
    let mut source = build_source(&a, &streams, resume)?;
    let status = Arc::new(Mutex::new(String::from("runnel | starting")));
    let mut sinks = sink::build(
        &sinks_spec,
        ConsoleOptions {
            rows: a.rows,
            status: status.clone(),
        },
        &a.es.options(&a.dead_letters)?,
    )?;
    let checkpoints = resync(restored, &mut engine, &mut sinks).await?;
    let opts = PipelineOptions {
        flush_every: Duration::from_secs_f64(a.refresh.max(0.05)),
        dead_letters: a.dead_letters.clone(),
        status: Some(status),
        checkpoints,
        reload: reloader(&a, &streams),
        shutdown_timeout: Some(Duration::from_secs_f64(a.shutdown_timeout.max(0.0))),
    };
    tracing::info!(views = engine.views().count(), "running");
    // Ctrl-C or SIGTERM stops cleanly (sinks flushed, checkpoint written, offsets committed);
    // a drained source ends the run.
    let stop = shutdown_signal();
    let (req_tx, mut req_rx) = tokio::sync::mpsc::channel(16);
    let serving = match &a.metrics {
        Some(addr) => {
            let at = runnel::metrics::serve(addr, req_tx.clone()).await?;
            eprintln!("metrics: http://{at}/metrics  health: http://{at}/health");
            Some(&mut req_rx)
        }
        None => None,
    };
    let summary = pipeline::run_serving(
        &mut engine,
        source.as_mut(),
        &mut sinks,
        &opts,
        stop,
        serving,
        false,
    )
    .await?;
    drop(req_tx);
    eprintln!("{}", summary.line());
    for s in &sinks {
        if let Some(line) = s.summary() {
            eprintln!("{line}");
        }
    }
    if summary.malformed + summary.late > 0 {
        eprintln!("set-aside records: {}", a.dead_letters.display());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Loads the schemas and views and plans every view; the first problem stops the run.
async fn plan_views(catalog: &Catalog) -> anyhow::Result<(Streams, Engine)> {
    let (streams, defs, errors) = load_catalog(catalog)?;
    if let Some(e) = errors.into_iter().next() {
        bail!("{e}\n(run `runnel check` to see every problem)");
    }
    let engine = Engine::new(streams.clone(), &defs)
        .await
        .context("planning the views (run `runnel check` for every problem)")?;
    Ok((streams, engine))
}

/// Hot reload of the queries directory, with a replay of the source as the rebuild input.
fn reloader(a: &RunArgs, streams: &Streams) -> Option<Mutex<runnel::reload::Reloader>> {
    if a.no_reload {
        return None;
    }
    let dir = match &a.catalog.queries {
        Some(d) => d.clone(),
        None if Path::new("queries").is_dir() => PathBuf::from("queries"),
        None => return None, // the built-in views
    };
    let streams = streams.clone();
    let batch = a.batch_size;
    let backfill: Option<runnel::reload::Backfill> = match &a.source {
        SourceSpec::Generator => None,
        SourceSpec::Files(data) => {
            let data = data.clone();
            Some(Arc::new(move |upto: &Positions| {
                Ok(
                    Box::new(FileSource::open_until(&data, &streams, batch, upto)?)
                        as Box<dyn source::Source>,
                )
            }))
        }
        SourceSpec::Kafka(hosts) => {
            // The run's own settings; a replay reads by assignment, outside the group.
            let cfg = kafka_config(a, hosts, Positions::new()).ok()?;
            Some(Arc::new(move |upto: &Positions| {
                let mut c = cfg.clone();
                c.stop_at = Some(upto.clone());
                Ok(Box::new(KafkaSource::start(c, &streams)?) as Box<dyn source::Source>)
            }))
        }
    };
    Some(Mutex::new(runnel::reload::Reloader::new(&dir, backfill)))
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what `docker stop` and Kubernetes send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `--checkpoint DIR`: opens the directory and loads its latest checkpoint into the engine.
fn restore(a: &RunArgs, engine: &mut Engine) -> anyhow::Result<Option<(Checkpoints, Restored)>> {
    let Some(dir) = &a.checkpoint else {
        return Ok(None);
    };
    if matches!(a.source, SourceSpec::Generator) {
        bail!("--checkpoint needs a source that can resume from a position: kafka:HOST:PORT or files:DIR");
    }
    let every = Duration::from_secs_f64(a.checkpoint_every.max(0.0));
    let (cp, restored) = Checkpoints::open(dir, every)
        .with_context(|| format!("opening checkpoint directory {}", dir.display()))?;
    if let Some(state) = &restored.state {
        engine.restore_state(state).with_context(|| {
            format!(
                "restoring {} (delete the directory to start over from the beginning of the input)",
                dir.display()
            )
        })?;
        let events: u64 = state.streams.iter().map(|s| s.events).sum();
        eprintln!(
            "resumed from checkpoint {} in {}: {events} events already processed; {} keys handed to sinks after it are set back",
            restored.epoch,
            dir.display(),
            restored.journaled_keys()
        );
    }
    Ok(Some((cp, restored)))
}

/// After a restore: sinks take back what they held and get the checkpoint's rows, plus a
/// delete for every key handed to them after it that the checkpoint does not hold.
async fn resync(
    restored: Option<(Checkpoints, Restored)>,
    engine: &mut Engine,
    sinks: &mut [Box<dyn sink::Sink>],
) -> anyhow::Result<Option<Mutex<Checkpoints>>> {
    let Some((cp, restored)) = restored else {
        return Ok(None);
    };
    if restored.state.is_some() || restored.journaled_keys() > 0 {
        let views: Vec<Arc<runnel::engine::ViewInfo>> = engine.views().cloned().collect();
        for s in sinks.iter_mut() {
            s.resume(&views)?;
        }
        let outputs = restored.resync(engine)?;
        tracing::info!(
            journaled = restored.journaled_keys(),
            "sinks brought back to the checkpoint"
        );
        for s in sinks.iter_mut() {
            s.write(&outputs).await?;
            s.flush().await?;
        }
    }
    Ok(Some(Mutex::new(cp)))
}

fn build_source(
    a: &RunArgs,
    streams: &runnel::schema::Streams,
    resume: Option<&Positions>,
) -> anyhow::Result<Box<dyn source::Source>> {
    let resume = resume.cloned().unwrap_or_default();
    Ok(match &a.source {
        SourceSpec::Generator => {
            let (clock, rate) = match (a.rate, a.count) {
                (Some(r), _) => (Clock::Wall, Some(r)),
                (None, Some(_)) => (
                    Clock::Simulated {
                        start_ms: DEFAULT_START_MS,
                    },
                    None,
                ),
                (None, None) => (Clock::Wall, Some(1000)),
            };
            Box::new(GeneratorSource::new(
                streams,
                a.seed,
                clock,
                a.batch_size,
                rate,
                a.count,
            )?)
        }
        SourceSpec::Files(dir) => {
            Box::new(FileSource::open_at(dir, streams, a.batch_size, &resume)?)
        }
        SourceSpec::Kafka(hosts) => Box::new(KafkaSource::start(
            kafka_config(a, hosts, resume)?,
            streams,
        )?),
    })
}

/// The Kafka source as `run`'s flags configure it, resuming at `resume`.
fn kafka_config(a: &RunArgs, hosts: &str, resume: Positions) -> anyhow::Result<KafkaSourceConfig> {
    Ok(KafkaSourceConfig {
        bootstrap: hosts.to_string(),
        group: a.group.clone(),
        options: KafkaOptions::parse(&a.kafka.kafka_options).map_err(anyhow::Error::msg)?,
        max_records: a.batch_size,
        max_wait: Duration::from_millis(a.max_wait_ms),
        until_end: a.until_drained,
        resume,
        stop_at: None,
    })
}

/// `run --repl` / `runnel repl`: the pipeline answers the prompt's queries between rounds.
async fn run_with_repl(
    a: RunArgs,
    command: Option<String>,
) -> anyhow::Result<std::process::ExitCode> {
    use std::io::{IsTerminal, Read};
    use std::sync::atomic::AtomicBool;
    init_logs(true);
    let (streams, mut engine) = plan_views(&a.catalog).await?;
    engine.keep_recent_events(a.repl_window);
    let restored = restore(&a, &mut engine)?;
    let resume = restored.as_ref().map(|r| &r.1.positions);
    let mut source = build_source(&a, &streams, resume)?;
    let specs: Vec<SinkSpec> = a
        .sinks
        .iter()
        .filter(|s| **s != SinkSpec::Console)
        .cloned()
        .collect();
    let mut sinks = sink::build(
        &specs,
        ConsoleOptions {
            rows: a.rows,
            status: Arc::new(Mutex::new(String::new())),
        },
        &a.es.options(&a.dead_letters)?,
    )?;
    let checkpoints = resync(restored, &mut engine, &mut sinks).await?;
    let opts = PipelineOptions {
        flush_every: Duration::from_secs_f64(a.refresh.max(0.05)),
        dead_letters: a.dead_letters.clone(),
        status: None,
        checkpoints,
        reload: reloader(&a, &streams),
        shutdown_timeout: Some(Duration::from_secs_f64(a.shutdown_timeout.max(0.0))),
    };
    let script = match command {
        Some(c) => Some(c),
        None if !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading statements from stdin")?;
            Some(text)
        }
        None => None,
    };
    let finite = matches!(a.source, SourceSpec::Files(_))
        || (matches!(a.source, SourceSpec::Generator) && a.count.is_some() && a.rate.is_none())
        || a.until_drained;
    let (req_tx, mut req_rx) = tokio::sync::mpsc::channel(16);
    let req_tx_metrics = a.metrics.as_ref().map(|_| req_tx.clone());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    // Ctrl-C interrupts a push query (or the line being typed); it never stops the pipeline
    // while the prompt is open. In a script it ends the run.
    let interrupted = Arc::new(AtomicBool::new(false));
    let interactive = script.is_none();
    let flag = interrupted.clone();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if !interactive {
                std::process::exit(130);
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let queries_dir = a
        .catalog
        .queries
        .clone()
        .unwrap_or_else(|| PathBuf::from("queries"));
    let history = a
        .history
        .clone()
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".runnel_history")));
    let handle = tokio::runtime::Handle::current();
    let prompt = tokio::task::spawn_blocking(move || {
        let mut repl = runnel::repl::Repl::new(req_tx, handle, queries_dir, interrupted);
        let ok = match script {
            Some(text) => {
                // Let the data arrive: a finite source is drained first, a live one has
                // delivered something (or 10 s have passed).
                let started = std::time::Instant::now();
                while let Ok(s) = repl.status() {
                    let ready = if finite {
                        s.drained
                    } else {
                        s.summary.events > 0
                    };
                    if ready || (!finite && started.elapsed() > Duration::from_secs(10)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                repl.script(&text)
            }
            None => match repl.interactive(history) {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("error: {e}");
                    false
                }
            },
        };
        let _ = done_tx.send(());
        ok
    });
    let stop = async {
        let _ = done_rx.await;
    };
    if let (Some(addr), Some(tx)) = (&a.metrics, req_tx_metrics) {
        let at = runnel::metrics::serve(addr, tx).await?;
        eprintln!("metrics: http://{at}/metrics  health: http://{at}/health");
    }
    let summary = pipeline::run_serving(
        &mut engine,
        source.as_mut(),
        &mut sinks,
        &opts,
        stop,
        Some(&mut req_rx),
        true,
    )
    .await?;
    drop(req_rx);
    let ok = prompt.await.unwrap_or(false);
    tracing::info!("{}", summary.line());
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

async fn generate(a: GenerateArgs) -> anyhow::Result<std::process::ExitCode> {
    // Into Kafka, stdout carries nothing: progress is logged (every 5 s).
    init_logs(a.kafka.is_none());
    let clock = if a.rate.is_some() {
        Clock::Wall
    } else {
        Clock::Simulated {
            start_ms: DEFAULT_START_MS,
        }
    };
    if let Some(hosts) = &a.kafka {
        let opts = KafkaOptions::parse(&a.kafka_opts.kafka_options).map_err(anyhow::Error::msg)?;
        tracing::info!(bootstrap = %hosts, options = ?opts.redacted(), "connecting to Kafka");
        let existing = {
            let (hosts, opts) = (hosts.clone(), opts.clone());
            tokio::task::spawn_blocking(move || producer::existing_topics(&hosts, &opts)).await??
        };
        if let Err(e) =
            producer::ensure_topics(hosts, &opts, &existing, a.partitions, a.replication).await
        {
            eprintln!("warning: {e} (continuing: the topics may already exist)");
        }
        let count = match (a.count, a.rate) {
            (Some(c), _) => Some(c),
            (None, Some(_)) => None,
            (None, None) => Some(100_000),
        };
        let (rate, seed, hosts) = (a.rate, a.seed, hosts.clone());
        let started = std::time::Instant::now();
        let n = tokio::task::spawn_blocking(move || {
            let mut gen = Generator::new(seed, clock);
            producer::produce(&hosts, &opts, &mut gen, count, rate)
        })
        .await??;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{n} events produced in {secs:.2}s ({:.0} events/s)",
            n as f64 / secs.max(1e-9)
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let count = match (a.count, a.rate) {
        (Some(c), _) => Some(c),
        (None, Some(_)) => None,
        (None, None) => Some(100_000),
    };
    let mut gen = Generator::new(a.seed, clock);
    let mut bufs: [Vec<u8>; 6] = Default::default();
    let mut files: Vec<Box<dyn Write>> = Vec::new();
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for t in Topic::ALL {
            let path = dir.join(format!("{}.ndjson", t.topic()));
            let f = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            files.push(Box::new(std::io::BufWriter::with_capacity(1 << 20, f)));
        }
    } else if !a.stdout {
        bail!("say where the events go: --out DIR, --stdout or --kafka HOST:PORT");
    }
    let started = std::time::Instant::now();
    let mut produced: u64 = 0;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let chunk = 4096u64;
    loop {
        let n = match count {
            Some(c) if produced >= c => break,
            Some(c) => chunk.min(c - produced),
            None => chunk,
        };
        let n = match a.rate {
            Some(r) => {
                let n = n.min((r / 20).max(1));
                let due = Duration::from_secs_f64(produced as f64 / r.max(1) as f64);
                let el = started.elapsed();
                if due > el {
                    std::thread::sleep(due - el);
                }
                n
            }
            None => n,
        };
        for _ in 0..n {
            gen.next_into(&mut bufs);
        }
        produced += n;
        for t in Topic::ALL {
            let b = &mut bufs[t as usize];
            if b.is_empty() {
                continue;
            }
            if a.stdout {
                for line in b.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                    write!(stdout, "{{\"topic\":\"{}\",\"value\":", t.topic())?;
                    stdout.write_all(line)?;
                    stdout.write_all(b"}\n")?;
                }
            } else {
                files[t as usize].write_all(b)?;
            }
            b.clear();
        }
        if a.rate.is_some() {
            stdout.flush()?;
            for f in files.iter_mut() {
                f.flush()?;
            }
        }
    }
    stdout.flush()?;
    for f in files.iter_mut() {
        f.flush()?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{produced} events in {secs:.2}s ({:.0} events/s)",
        produced as f64 / secs.max(1e-9)
    );
    Ok(std::process::ExitCode::SUCCESS)
}

async fn broker(a: BrokerArgs) -> anyhow::Result<std::process::ExitCode> {
    init_logs(false);
    let b = LocalBroker::start(a.brokers)?;
    for t in Topic::ALL {
        b.create_topic(t.topic(), a.partitions, a.replication)?;
    }
    println!("{}", b.bootstrap());
    eprintln!(
        "local Kafka-protocol broker ({} broker(s), {} partitions per topic) at {} -- for trials and tests, not production. Ctrl-C stops it.",
        a.brokers,
        a.partitions,
        b.bootstrap()
    );
    eprintln!("  runnel generate --kafka {} --rate 1000", b.bootstrap());
    eprintln!("  runnel run --source kafka:{}", b.bootstrap());
    let _ = tokio::signal::ctrl_c().await;
    drop(b);
    Ok(std::process::ExitCode::SUCCESS)
}

async fn check(a: CheckArgs) -> anyhow::Result<std::process::ExitCode> {
    init_logs(true);
    let (streams, defs, mut errors) = load_catalog(&a.catalog)?;
    errors.extend(Engine::check(streams, &defs).await?);
    if errors.is_empty() {
        println!("{} views OK", defs.len());
        for d in &defs {
            println!("  {:<24} {}", d.name, d.description);
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for e in &errors {
        println!("{e}");
    }
    println!(
        "{} problem(s) in {} view file(s)",
        errors.len(),
        defs.len() + errors.len()
    );
    Ok(std::process::ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    /// The views built into the binary are exactly the files in queries/.
    #[test]
    fn builtin_views_are_the_shipped_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let n = e.ok()?.file_name().into_string().ok()?;
                n.ends_with(".sql").then_some(n)
            })
            .collect();
        files.sort();
        let mut builtin: Vec<String> = super::BUILTIN_VIEWS
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        builtin.sort();
        assert_eq!(builtin, files);
        for (n, text) in super::BUILTIN_VIEWS {
            assert_eq!(&std::fs::read_to_string(dir.join(n)).unwrap(), text, "{n}");
        }
    }
}
