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
    family(&mut o, "runnel_up", "gauge", "1 while the pipeline runs.");
    let _ = writeln!(o, "runnel_up {}", if s.drained { 0 } else { 1 });
    o
}
