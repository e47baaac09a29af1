//! The pipeline: source -> decode -> engine -> sinks, with dead letters and a status line.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::deadletter::DeadLetters;
use crate::decode::StreamDecoder;
use crate::engine::Engine;
use crate::error::Result;
use crate::sink::Sink;
use crate::source::Source;

/// How the pipeline runs.
pub struct PipelineOptions {
    /// How often sinks are flushed and the status refreshed.
    pub flush_every: Duration,
    /// Where malformed and late records go.
    pub dead_letters: std::path::PathBuf,
    /// Updated with a one-line summary on every flush (shown by the console sink).
    pub status: Option<Arc<Mutex<String>>>,
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

/// Runs until the source is drained (then closes all windows) or `stop` resolves.
pub async fn run(
    engine: &mut Engine,
    source: &mut dyn Source,
    sinks: &mut [Box<dyn Sink>],
    opts: &PipelineOptions,
    stop: impl std::future::Future<Output = ()>,
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
    let mut last_flush = Instant::now();
    let mut last_events = 0u64;
    tokio::pin!(stop);
    let mut drained = false;
    loop {
        let round = tokio::select! {
            biased;
            _ = &mut stop => break,
            r = source.next() => r?,
        };
        let Some(round) = round else {
            drained = true;
            break;
        };
        let mut decoded_round = Vec::with_capacity(round.len());
        for raw in round {
            let decoded = decoders[raw.stream].decode(&raw)?;
            let name = &engine.streams().streams[raw.stream].name;
            dead.rejected(name, &decoded.rejected)?;
            summary.events += decoded.batch.num_rows() as u64;
            summary.batches += 1;
            decoded_round.push((raw.stream, decoded.batch));
        }
        let out = engine.process_round(decoded_round).await?;
        for (s, rows) in &out.late {
            let name = engine.streams().streams[*s].name.clone();
            dead.late(&name, engine.watermark(*s), rows)?;
        }
        if !out.outputs.is_empty() {
            for sink in sinks.iter_mut() {
                sink.write(&out.outputs).await?;
            }
        }
        if last_flush.elapsed() >= opts.flush_every {
            let dt = last_flush.elapsed().as_secs_f64();
            let rate = (summary.events - last_events) as f64 / dt;
            last_events = summary.events;
            last_flush = Instant::now();
            summary.malformed = dead.malformed;
            summary.late = dead.late;
            update_status(opts, &summary, rate, started);
            flush_all(sinks, &mut dead).await?;
            source.commit().await?;
        }
    }
    if drained {
        let out = engine.finish().await?;
        if !out.outputs.is_empty() {
            for sink in sinks.iter_mut() {
                sink.write(&out.outputs).await?;
            }
        }
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
    flush_all(sinks, &mut dead).await?;
    source.commit().await?;
    Ok(summary)
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
