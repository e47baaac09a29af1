//! `--metrics ADDR`: a small HTTP endpoint for operators. `GET /metrics` answers in the
//! Prometheus text format; `GET /health` answers 200 while the pipeline runs. Both read the
//! pipeline's status between micro-batches (a [`Request::Status`]), so they cost nothing while
//! nobody asks.

use std::fmt::Write as _;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::pipeline::{Request, Status};

/// Binds `addr` and serves until the pipeline goes away. Returns the bound address.
pub async fn serve(addr: &str, requests: mpsc::Sender<Request>) -> Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("--metrics {addr}: cannot listen: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("--metrics {addr}: {e}")))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let requests = requests.clone();
            tokio::spawn(async move {
                // Read the request head whole (a client may send it in pieces).
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let status = ask(&requests).await;
                let (code, ctype, body) = match (path, status) {
                    ("/metrics", Some(s)) => (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        prometheus(&s),
                    ),
                    ("/health", Some(s)) => (
                        "200 OK",
                        "application/json",
                        format!(
                            "{{\"status\":\"ok\",\"events\":{},\"drained\":{}}}\n",
                            s.summary.events, s.drained
                        ),
                    ),
                    ("/metrics" | "/health", None) => (
                        "503 Service Unavailable",
                        "text/plain",
                        "pipeline stopped\n".to_string(),
                    ),
                    _ => (
                        "404 Not Found",
                        "text/plain",
                        "try /metrics or /health\n".to_string(),
                    ),
                };
                let reply = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(local)
}

/// A latency histogram with Prometheus' cumulative buckets (seconds).
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Bucket upper bounds in seconds: 1 ms to 30 s.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS.len()],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    pub fn observe(&mut self, secs: f64) {
        let secs = secs.max(0.0);
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.counts[i] += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    fn write(&self, o: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(o, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(
            o,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(o, "{name}_sum{braces} {:.6}", self.sum);
        let _ = writeln!(o, "{name}_count{braces} {}", self.count);
    }
}

async fn ask(requests: &mpsc::Sender<Request>) -> Option<Status> {
    let (tx, rx) = oneshot::channel();
    requests.send(Request::Status(tx)).await.ok()?;
    rx.await.ok()
}

/// The status in Prometheus' text exposition format.
pub fn prometheus(s: &Status) -> String {
    let now = chrono::Utc::now().timestamp_millis();
    let mut o = String::new();
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut o,
        "runnel_events_total",
        "counter",
        "Events decoded, per stream.",
    );
    for (name, st, _) in &s.streams {
        let _ = writeln!(o, "runnel_events_total{{stream=\"{name}\"}} {}", st.events);
    }
    family(
        &mut o,
        "runnel_late_events_total",
        "counter",
        "Events behind their stream's watermark (dead-lettered, kept out of windows).",
    );
    for (name, st, _) in &s.streams {
        let _ = writeln!(
            o,
            "runnel_late_events_total{{stream=\"{name}\"}} {}",
            st.late
        );
    }
    family(
        &mut o,
        "runnel_watermark_lag_seconds",
        "gauge",
        "Wall clock minus the stream's watermark.",
    );
    for (name, _, wm) in &s.streams {
        if let Some(w) = wm {
            let _ = writeln!(
                o,
                "runnel_watermark_lag_seconds{{stream=\"{name}\"}} {:.3}",
                (now - w) as f64 / 1000.0
            );
        }
    }
    family(
        &mut o,
        "runnel_malformed_records_total",
        "counter",
        "Records set aside as malformed (dead-lettered).",
    );
    let _ = writeln!(o, "runnel_malformed_records_total {}", s.summary.malformed);
    family(
        &mut o,
        "runnel_batches_total",
        "counter",
        "Micro-batches decoded.",
    );
    let _ = writeln!(o, "runnel_batches_total {}", s.summary.batches);
    family(
        &mut o,
        "runnel_events_per_second",
        "gauge",
        "Events per second over the last flush interval.",
    );
    let _ = writeln!(o, "runnel_events_per_second {:.1}", s.rate);
    type PerView = fn(&crate::engine::ViewStats) -> String;
    let per_view: [(&str, &str, &str, PerView); 4] = [
        (
            "runnel_view_rows",
            "gauge",
            "Rows in a view's current result.",
            |v| v.rows.to_string(),
        ),
        (
            "runnel_view_groups",
            "gauge",
            "Live groups in a view's state.",
            |v| v.groups.to_string(),
        ),
        (
            "runnel_view_state_bytes",
            "gauge",
            "Approximate bytes of a view's aggregate state.",
            |v| v.state_bytes.to_string(),
        ),
        (
            "runnel_view_busy_seconds_total",
            "counter",
            "Time spent updating a view.",
            |v| format!("{:.6}", v.busy.as_secs_f64()),
        ),
    ];
    for (name, kind, help, value) in per_view {
        family(&mut o, name, kind, help);
        for v in &s.views {
            let _ = writeln!(o, "{name}{{view=\"{}\"}} {}", v.name, value(v));
        }
    }
    family(
        &mut o,
        "runnel_batch_seconds",
        "histogram",
        "Time to decode one round of micro-batches, update every view and hand the changes to the sinks.",
    );
    s.batch_latency.write(&mut o, "runnel_batch_seconds", "");
    family(
        &mut o,
        "runnel_end_to_end_seconds",
        "histogram",
        "From an event's Kafka timestamp (or when it was read, for other sources) to the sinks acknowledging the results it changed; one observation per round, for its oldest event.",
    );
    s.end_to_end.write(&mut o, "runnel_end_to_end_seconds", "");
    if let Some(lag) = s.consumer_lag {
        family(
            &mut o,
            "runnel_consumer_lag_messages",
            "gauge",
            "Kafka messages behind the end of the assigned partitions.",
        );
        let _ = writeln!(o, "runnel_consumer_lag_messages {lag}");
    }
    for (name, kind, help, pick) in [
        (
            "runnel_sink_retries_total",
            "counter",
            "Requests or items a sink retried.",
            0,
        ),
        (
            "runnel_sink_rejected_total",
            "counter",
            "Documents a sink rejected for good (dead-lettered).",
            1,
        ),
    ] {
        family(&mut o, name, kind, help);
        for (sink, c) in &s.sinks {
            let v = if pick == 0 { c.retries } else { c.rejected };
            let _ = writeln!(o, "{name}{{sink=\"{sink}\"}} {v}");
        }
    }
    if let Some(c) = &s.checkpoint {
        family(
            &mut o,
            "runnel_checkpoints_total",
            "counter",
            "Checkpoints written by this process.",
        );
        let _ = writeln!(o, "runnel_checkpoints_total {}", c.written);
        family(
            &mut o,
            "runnel_checkpoint_bytes",
            "gauge",
            "Size of the last checkpoint written.",
        );
        let _ = writeln!(o, "runnel_checkpoint_bytes {}", c.last_bytes);
        family(
            &mut o,
            "runnel_checkpoint_epoch",
            "gauge",
            "Epoch of the latest checkpoint (loaded or written).",
        );
        let _ = writeln!(o, "runnel_checkpoint_epoch {}", c.epoch);
    }
    family(&mut o, "runnel_up", "gauge", "1 while the pipeline runs.");
    let _ = writeln!(o, "runnel_up {}", if s.drained { 0 } else { 1 });
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{CheckpointStatus, Summary};
    use crate::sink::SinkCounters;

    #[test]
    fn histograms_sinks_lag_and_checkpoints_are_exposed() {
        let mut h = Histogram::default();
        for s in [0.0005, 0.003, 0.003, 0.2, 99.0] {
            h.observe(s);
        }
        let st = Status {
            summary: Summary::default(),
            rate: 0.0,
            drained: false,
            streams: Vec::new(),
            views: Vec::new(),
            dead_letters: "dl".into(),
            batch_latency: h,
            end_to_end: Histogram::default(),
            consumer_lag: Some(42),
            sinks: vec![(
                "elasticsearch".into(),
                SinkCounters {
                    retries: 7,
                    rejected: 2,
                },
            )],
            checkpoint: Some(CheckpointStatus {
                epoch: 5,
                written: 4,
                last_bytes: 1000,
            }),
        };
        let m = prometheus(&st);
        for line in [
            "# TYPE runnel_batch_seconds histogram",
            "runnel_batch_seconds_bucket{le=\"0.001\"} 1",
            "runnel_batch_seconds_bucket{le=\"0.005\"} 3",
            "runnel_batch_seconds_bucket{le=\"0.25\"} 4",
            "runnel_batch_seconds_bucket{le=\"30\"} 4",
            "runnel_batch_seconds_bucket{le=\"+Inf\"} 5",
            "runnel_batch_seconds_count 5",
            "runnel_end_to_end_seconds_count 0",
            "runnel_consumer_lag_messages 42",
            "runnel_sink_retries_total{sink=\"elasticsearch\"} 7",
            "runnel_sink_rejected_total{sink=\"elasticsearch\"} 2",
            "runnel_checkpoints_total 4",
            "runnel_checkpoint_epoch 5",
        ] {
            assert!(m.lines().any(|l| l == line), "no `{line}` in\n{m}");
        }
    }
}
