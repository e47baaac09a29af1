//! The pipeline: source -> decode -> engine -> sinks, with dead letters and a status line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::Checkpoints;
use crate::deadletter::DeadLetters;
use crate::decode::StreamDecoder;
use crate::engine::{Engine, NamedTable, StreamStats, ViewDef, ViewInfo, ViewStats};
use crate::error::{Error, Result};
use crate::metrics::Histogram;
use crate::reload::Reloader;
use crate::sink::{Sink, SinkCounters};
use crate::source::Source;

/// How the pipeline runs.
pub struct PipelineOptions {
    /// How often sinks are flushed and the status refreshed.
    pub flush_every: Duration,
    /// Where malformed and late records go.
    pub dead_letters: std::path::PathBuf,
    /// Updated with a one-line summary on every flush (shown by the console sink).
    pub status: Option<Arc<Mutex<String>>>,
    /// Periodic checkpoints (`--checkpoint DIR`). With them, the source is committed only
    /// when a checkpoint holding its positions is on disk.
    pub checkpoints: Option<Mutex<Checkpoints>>,
    /// Hot reload of the queries directory (see [`crate::reload`]).
    pub reload: Option<Mutex<Reloader>>,
    /// After a stop signal, how long sinks get to acknowledge before the run gives up.
    pub shutdown_timeout: Option<Duration>,
}

/// Totals of one run.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub events: u64,
    pub batches: u64,
    pub malformed: u64,
    pub late: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn line(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "{} events in {:.1}s ({:.0} events/s), {} batches, {} late, {} malformed",
            self.events,
            secs,
            self.events as f64 / secs,
            self.batches,
            self.late,
            self.malformed
        )
    }
}

/// Requests from an interactive client (the REPL), served between rounds so that every
/// answer reflects whole micro-batches.
pub enum Request {
    /// Every stream, table and view as it is now.
    Tables(oneshot::Sender<Result<Vec<NamedTable>>>),
    /// Adds a temporary view: it runs like the others but never reaches a sink.
    AddView(Box<ViewDef>, oneshot::Sender<Result<Arc<ViewInfo>>>),
    /// How a view runs (see `Engine::plan_text`).
    Plan(String, oneshot::Sender<Option<String>>),
    Status(oneshot::Sender<Status>),
}

/// The pipeline as a status display sees it.
#[derive(Debug, Clone)]
pub struct Status {
    pub summary: Summary,
    /// Events per second over the last flush interval.
    pub rate: f64,
    /// The source has no more input (replays and `--count` runs).
    pub drained: bool,
    /// Per stream: name, counters, watermark (ms since the epoch).
    pub streams: Vec<(String, StreamStats, Option<i64>)>,
    pub views: Vec<ViewStats>,
    pub dead_letters: std::path::PathBuf,
    /// Time per round (decode, views, hand-over to sinks).
    pub batch_latency: Histogram,
    /// Oldest event of a round to the sinks' acknowledgement.
    pub end_to_end: Histogram,
    /// Kafka consumer lag in messages.
    pub consumer_lag: Option<i64>,
    pub sinks: Vec<(String, SinkCounters)>,
    pub checkpoint: Option<CheckpointStatus>,
}

/// The checkpoint writer as status displays see it.
#[derive(Debug, Clone)]
pub struct CheckpointStatus {
    pub epoch: u64,
    pub written: u64,
    pub last_bytes: u64,
}

/// Latencies measured by the loop.
#[derive(Default)]
struct Meters {
    batch: Histogram,
    end_to_end: Histogram,
    /// Oldest event time (ms) of each round handed to the sinks since their last flush.
    unacknowledged: Vec<i64>,
}

/// Everything `status` reads besides the engine.
struct Ctx<'a> {
    summary: &'a Summary,
    rate: f64,
    drained: bool,
    opts: &'a PipelineOptions,
    meters: &'a Meters,
    sinks: Vec<(String, SinkCounters)>,
    lag: Option<i64>,
}

/// What the sinks count, read before a request is served (sinks and sources are not `Sync`).
fn sink_counters(sinks: &[Box<dyn Sink>]) -> Vec<(String, SinkCounters)> {
    sinks
        .iter()
        .map(|s| (s.name().to_string(), s.counters()))
        .collect()
}

fn status(engine: &Engine, c: &Ctx) -> Status {
    let (summary, rate, drained, opts) = (c.summary, c.rate, c.drained, c.opts);
    Status {
        batch_latency: c.meters.batch.clone(),
        end_to_end: c.meters.end_to_end.clone(),
        consumer_lag: c.lag,
        sinks: c.sinks.clone(),
        checkpoint: opts.checkpoints.as_ref().and_then(|m| {
            m.lock().ok().map(|cp| CheckpointStatus {
                epoch: cp.epoch(),
                written: cp.written,
                last_bytes: cp.last_bytes,
            })
        }),
        summary: summary.clone(),
        rate,
        drained,
        streams: engine
            .streams()
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    s.name.clone(),
                    engine.stream_stats()[i].clone(),
                    engine.watermark(i),
                )
            })
            .collect(),
        views: engine.view_stats(),
        dead_letters: opts.dead_letters.clone(),
    }
}

async fn next_request(rx: &mut Option<&mut mpsc::Receiver<Request>>) -> Option<Request> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Answers one request; returns the name of a view it added.
async fn serve(engine: &mut Engine, req: Request, ctx: Ctx<'_>) {
    match req {
        Request::Tables(tx) => {
            let _ = tx.send(engine.tables());
        }
        Request::AddView(def, tx) => {
            let _ = tx.send(engine.add_view(&def).await);
        }
        Request::Plan(view, tx) => {
            let _ = tx.send(engine.plan_text(&view));
        }
        Request::Status(tx) => {
            let _ = tx.send(status(engine, &ctx));
        }
    }
}

/// Runs until the source is drained (then closes all windows) or `stop` resolves. Sinks are
/// flushed and the source committed every `flush_every`, also while the source is idle.
/// Sources must be cancel-safe in `next` (a flush may interrupt a wait for input).
pub async fn run(
    engine: &mut Engine,
    source: &mut dyn Source,
    sinks: &mut [Box<dyn Sink>],
    opts: &PipelineOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Summary> {
    run_serving(engine, source, sinks, opts, stop, None, false).await
}

/// [`run`], also answering `requests` between rounds. With `serve_after_drain` (the REPL), a
/// drained source keeps the pipeline answering until `stop` resolves or the requesters go
/// away; otherwise the run ends with its input.
pub async fn run_serving(
    engine: &mut Engine,
    source: &mut dyn Source,
    sinks: &mut [Box<dyn Sink>],
    opts: &PipelineOptions,
    stop: impl std::future::Future<Output = ()>,
    mut requests: Option<&mut mpsc::Receiver<Request>>,
    serve_after_drain: bool,
) -> Result<Summary> {
    let mut decoders = engine
        .streams()
        .streams
        .iter()
        .map(|s| StreamDecoder::new(s.clone()))
        .collect::<Result<Vec<_>>>()?;
    let mut dead = DeadLetters::new(&opts.dead_letters);
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut progress = Progress {
        started,
        last_flush: Instant::now(),
        last_events: 0,
        rate: 0.0,
    };
    tokio::pin!(stop);
    let mut drained = false;
    let mut meters = Meters::default();
    // Set when a stop signal interrupts a round or a flush (a sink not acknowledging).
    let mut interrupted = false;
    loop {
        // An idle source still gets its results flushed and offsets committed on time.
        let flush_due = tokio::time::Instant::from_std(progress.last_flush + opts.flush_every);
        let round = tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(req) = next_request(&mut requests) => {
                let ctx = Ctx {
                    summary: &summary,
                    rate: progress.rate,
                    drained: false,
                    opts,
                    meters: &meters,
                    sinks: sink_counters(sinks),
                    lag: source.lag(),
                };
                // A query sees every round so far.
                let out = engine.emit().await?;
                ship(sinks, out.outputs, engine.temporary(), opts).await?;
                serve(engine, req, ctx).await;
                continue;
            }
            r = source.next() => Tick::Round(r?),
            _ = tokio::time::sleep_until(flush_due) => Tick::Flush,
        };
        let work = async {
            match round {
                // The flush clock.
                Tick::Flush => {}
                Tick::Round(None) => return Ok(true),
                Tick::Round(Some(round)) => {
                    let round_started = Instant::now();
                    if let Some(oldest) = round.iter().filter_map(oldest_event_ms).min() {
                        meters.unacknowledged.push(oldest);
                    }
                    let mut decoded_round = Vec::with_capacity(round.len());
                    for raw in round {
                        let decoded = decoders[raw.stream].decode(&raw)?;
                        let name = &engine.streams().streams[raw.stream].name;
                        dead.rejected(name, &decoded.rejected)?;
                        summary.events += decoded.batch.num_rows() as u64;
                        summary.batches += 1;
                        decoded_round.push((raw.stream, decoded.batch));
                    }
                    // Changed rows are emitted when the sinks flush (see `Progress::flush`).
                    let out = engine.absorb_round(decoded_round).await?;
                    for (s, rows) in &out.late {
                        let name = engine.streams().streams[*s].name.clone();
                        dead.late(&name, engine.watermark(*s), rows)?;
                    }
                    ship(sinks, out.outputs, engine.temporary(), opts).await?;
                    meters.batch.observe(round_started.elapsed().as_secs_f64());
                    if progress.last_flush.elapsed() < opts.flush_every {
                        return Ok(false);
                    }
                }
            }
            progress
                .flush(
                    engine,
                    opts,
                    &mut summary,
                    &mut dead,
                    sinks,
                    source,
                    &mut meters,
                )
                .await?;
            reload(engine, sinks, source, opts, &mut dead).await?;
            Ok::<bool, Error>(false)
        };
        // A stop signal also ends a round or flush that waits on a sink.
        tokio::select! {
            biased;
            r = work => {
                if r? {
                    drained = true;
                    break;
                }
            }
            _ = &mut stop => {
                interrupted = true;
                break;
            }
        }
    }
    if interrupted {
        let _ = dead.flush();
        return Err(Error::Sink {
            sink: "all".into(),
            message: "stopped while a sink had not acknowledged the latest results; nothing after the last commit or checkpoint was committed (a restart delivers it again)".into(),
        });
    }
    if drained {
        let out = engine.finish().await?;
        ship(sinks, out.outputs, engine.temporary(), opts).await?;
    }
    summary.elapsed = started.elapsed();
    summary.malformed = dead.malformed;
    summary.late = dead.late;
    update_status(
        opts,
        &summary,
        summary.events as f64 / summary.elapsed.as_secs_f64().max(1e-9),
        started,
    );
    // A clean stop (end of input, Ctrl-C, SIGTERM) leaves a checkpoint of everything done.
    // Stopped by a signal, the sinks get `shutdown_timeout` to acknowledge: a sink that is
    // down must not keep the process from exiting (nothing unacknowledged is committed, so a
    // restart re-delivers it).
    let wrap_up = async {
        let out = engine.emit().await?;
        ship(sinks, out.outputs, engine.temporary(), opts).await?;
        flush_all(sinks, &mut dead).await?;
        checkpoint(engine, source, opts, true)?;
        source.commit().await
    };
    match opts.shutdown_timeout.filter(|_| !drained) {
        None => wrap_up.await?,
        Some(limit) => match tokio::time::timeout(limit, wrap_up).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Sink {
                    sink: "all".into(),
                    message: format!(
                        "results not acknowledged within {:.0} s of the stop signal; stopping without committing them (a restart delivers them again)",
                        limit.as_secs_f64()
                    ),
                })
            }
        },
    }
    if drained && serve_after_drain && requests.is_some() {
        // Input is over but the requester is still asking (a REPL over a replay).
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                r = next_request(&mut requests) => match r {
                    Some(req) => {
                        let ctx = Ctx {
                            summary: &summary,
                            rate: 0.0,
                            drained: true,
                            opts,
                            meters: &meters,
                            sinks: sink_counters(sinks),
                            lag: source.lag(),
                        };
                        let _ = serve(engine, req, ctx).await;
                    }
                    None => break,
                },
            }
        }
    }
    Ok(summary)
}

/// Writes a checkpoint if one is due (or `force`), after the sinks have flushed. Returns
/// whether the source may be committed now.
fn checkpoint(
    engine: &mut Engine,
    source: &dyn Source,
    opts: &PipelineOptions,
    force: bool,
) -> Result<bool> {
    let Some(cp) = &opts.checkpoints else {
        return Ok(true);
    };
    let mut cp = cp
        .lock()
        .map_err(|_| Error::Checkpoint("checkpoint writer poisoned".into()))?;
    let positions = source.positions().ok_or_else(|| {
        Error::Checkpoint("this source cannot resume from a position (use kafka: or files:)".into())
    })?;
    if !force && !cp.due(&positions) {
        return Ok(false);
    }
    let t = Instant::now();
    let state = engine.save_state()?;
    cp.write(&state, &positions)?;
    tracing::info!(
        epoch = cp.epoch(),
        bytes = cp.last_bytes,
        ms = t.elapsed().as_millis() as u64,
        "checkpoint"
    );
    Ok(true)
}

/// Applies edits to the queries directory, if any (see [`crate::reload`]). A broken edit is
/// logged and the running views carry on; a good one is applied, flushed and checkpointed.
async fn reload(
    engine: &mut Engine,
    sinks: &mut [Box<dyn Sink>],
    source: &mut dyn Source,
    opts: &PipelineOptions,
    dead: &mut DeadLetters,
) -> Result<()> {
    let Some(r) = &opts.reload else {
        return Ok(());
    };
    let (change, backfill) = {
        let mut r = r
            .lock()
            .map_err(|_| Error::Config("reloader poisoned".into()))?;
        (r.poll(), r.backfill.clone())
    };
    let defs = match change {
        None => return Ok(()),
        Some(Err(errors)) => {
            for e in errors {
                tracing::error!("{e} -- the running views are unchanged");
            }
            return Ok(());
        }
        Some(Ok(defs)) => defs,
    };
    let t = Instant::now();
    // The REPL's temporary views go with the old engine; their rows never reach a sink.
    let temporary = engine.temporary().clone();
    let to = crate::reload::Ship {
        sinks: &mut *sinks,
        temporary: &temporary,
        opts,
    };
    let shipped = crate::reload::apply(engine, &defs, source.positions(), backfill, to).await;
    match shipped {
        Ok(report) => {
            tracing::info!(
                rebuilt = ?report.rebuilt,
                removed = ?report.removed,
                kept = report.kept,
                replayed = report.replayed,
                ms = t.elapsed().as_millis() as u64,
                "queries reloaded"
            );
            flush_all(sinks, dead).await?;
            if checkpoint(engine, source, opts, true)? {
                source.commit().await?;
            }
        }
        Err(e) => tracing::error!("{e} -- the running views are unchanged"),
    }
    Ok(())
}

/// When a raw batch's oldest event entered the system: its earliest Kafka timestamp (set by
/// the producer), else when the source read it.
fn oldest_event_ms(raw: &crate::decode::RawBatch) -> Option<i64> {
    match &raw.origin {
        crate::decode::Origin::Kafka { timestamps, .. } => timestamps
            .iter()
            .flatten()
            .min()
            .copied()
            .or(Some(raw.read_at_ms)),
        _ => Some(raw.read_at_ms),
    }
}

/// Changes to the sinks, leaving out `temporary` (REPL) views; journaled first when
/// checkpointing (see [`crate::checkpoint`]).
pub async fn ship(
    sinks: &mut [Box<dyn Sink>],
    mut outputs: Vec<crate::engine::ViewOutput>,
    temporary: &std::collections::HashSet<String>,
    opts: &PipelineOptions,
) -> Result<()> {
    if !temporary.is_empty() {
        outputs.retain(|o| !temporary.contains(&o.view.name));
    }
    if let (Some(cp), false) = (&opts.checkpoints, outputs.is_empty()) {
        cp.lock()
            .map_err(|_| Error::Checkpoint("checkpoint writer poisoned".into()))?
            .journal(&outputs)?;
    }
    if !outputs.is_empty() {
        for sink in sinks.iter_mut() {
            sink.write(&outputs).await?;
        }
    }
    Ok(())
}

/// What woke the loop: a round from the source (`None`: drained) or the flush clock.
enum Tick {
    Round(Option<Vec<crate::decode::RawBatch>>),
    Flush,
}

/// The flush clock and the rate it measures.
struct Progress {
    started: Instant,
    last_flush: Instant,
    last_events: u64,
    rate: f64,
}

impl Progress {
    /// Flushes dead letters and sinks, writes a checkpoint when one is due, then commits the
    /// source (offsets never run ahead of what the sinks hold, nor of the last checkpoint),
    /// and refreshes the rate and the status line.
    #[allow(clippy::too_many_arguments)]
    async fn flush(
        &mut self,
        engine: &mut Engine,
        opts: &PipelineOptions,
        summary: &mut Summary,
        dead: &mut DeadLetters,
        sinks: &mut [Box<dyn Sink>],
        source: &mut dyn Source,
        meters: &mut Meters,
    ) -> Result<()> {
        let dt = self.last_flush.elapsed().as_secs_f64();
        self.rate = (summary.events - self.last_events) as f64 / dt.max(1e-9);
        self.last_events = summary.events;
        self.last_flush = Instant::now();
        summary.malformed = dead.malformed;
        summary.late = dead.late;
        update_status(opts, summary, self.rate, self.started);
        let out = engine.emit().await?;
        ship(sinks, out.outputs, engine.temporary(), opts).await?;
        flush_all(sinks, dead).await?;
        let now = crate::decode::now_ms();
        for t in meters.unacknowledged.drain(..) {
            meters.end_to_end.observe((now - t) as f64 / 1000.0);
        }
        if checkpoint(engine, source, opts, false)? {
            source.commit().await?;
        }
        Ok(())
    }
}

fn update_status(opts: &PipelineOptions, s: &Summary, rate: f64, started: Instant) {
    if let Some(st) = &opts.status {
        if let Ok(mut g) = st.lock() {
            *g = format!(
                "runnel | {:>10.0} events/s | {} events | {} batches | {} late | {} malformed | up {:.0}s | Ctrl-C to stop",
                rate,
                s.events,
                s.batches,
                s.late,
                s.malformed,
                started.elapsed().as_secs_f64()
            );
        }
    }
    tracing::debug!(events = s.events, rate, "progress");
}

async fn flush_all(sinks: &mut [Box<dyn Sink>], dead: &mut DeadLetters) -> Result<()> {
    dead.flush()?;
    for sink in sinks.iter_mut() {
        sink.flush().await?;
    }
    Ok(())
}
