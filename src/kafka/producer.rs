//! `runnel generate --kafka`: the generator's events, produced to the six topics, keyed by
//! entity id so that all events of one product (or customer, for customer rows) land in one
//! partition. One producer for everything, batching and lz4-compressing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientConfig, Message};

use super::KafkaOptions;
use crate::error::{Error, Result};
use crate::generate::{Generator, Topic};

fn err(m: impl Into<String>) -> Error {
    Error::Source {
        source_name: "kafka producer".into(),
        message: m.into(),
    }
}

/// `"<field>":"`, the bytes that precede an event's partitioning key in its JSON line: the
/// product for events about products, the customer for customer rows, the service for logs.
/// Fixed, so that finding a message's key allocates nothing.
fn key_needle(t: Topic) -> &'static [u8] {
    match t {
        Topic::Customers => b"\"customer_id\":\"",
        Topic::SystemLogs => b"\"service\":\"",
        _ => b"\"product_id\":\"",
    }
}

/// The bytes between `needle` and the next `"` in `line`.
fn value_after<'a>(line: &'a [u8], needle: &[u8]) -> Option<&'a [u8]> {
    let pos = memchr::memmem::find(line, needle)?;
    let rest = &line[pos + needle.len()..];
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// Counts messages the brokers did not take (librdkafka reports only failures: see
/// `delivery.report.only.error`), so that a run that lost events says so.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                if first.is_none() {
                    tracing::warn!(topic = m.topic(), error = %e, "a message was not delivered");
                    *first = Some(format!("{}: {e}", m.topic()));
                }
            }
        }
    }
}

type Producer = BaseProducer<Deliveries>;

/// Waits for every queued message, then fails if any was not delivered.
fn finish(producer: &Producer) -> Result<()> {
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| err(format!("flushing: {e}")))?;
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = ctx
            .first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        return Err(err(format!(
            "{failed} events were not delivered (first: {first})"
        )));
    }
    Ok(())
}

/// The topics the cluster has ([`super::existing_topics`]): an unreachable address is an error
/// within ten seconds, rather than topic creation and then every message timing out.
pub fn existing_topics(bootstrap: &str, opts: &KafkaOptions) -> Result<Vec<String>> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    opts.apply(&mut c);
    let client: BaseProducer = c.create().map_err(|e| err(e.to_string()))?;
    super::existing_topics(client.client(), bootstrap).map_err(err)
}

/// Creates those of the six topics not in `existing` (admin API; brokers that refuse it are
/// reported). Nothing to create: no request at all.
pub async fn ensure_topics(
    bootstrap: &str,
    opts: &KafkaOptions,
    existing: &[String],
    partitions: i32,
    replication: i32,
) -> Result<()> {
    let topics: Vec<NewTopic> = Topic::ALL
        .iter()
        .filter(|t| !existing.iter().any(|e| e == t.topic()))
        .map(|t| NewTopic::new(t.topic(), partitions, TopicReplication::Fixed(replication)))
        .collect();
    if topics.is_empty() {
        return Ok(());
    }
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    opts.apply(&mut c);
    let admin: AdminClient<DefaultClientContext> = c.create().map_err(|e| err(e.to_string()))?;
    let res = admin
        .create_topics(
            &topics,
            &AdminOptions::new()
                .operation_timeout(Some(Duration::from_secs(10)))
                .request_timeout(Some(Duration::from_secs(15))),
        )
        .await
        .map_err(|e| err(format!("creating topics: {e}")))?;
    for r in res {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(err(format!("creating topic {t}: {e}"))),
        }
    }
    Ok(())
}

fn producer(bootstrap: &str, opts: &KafkaOptions) -> Result<Producer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000")
        // A report per delivered message cost a fifth of the producing thread's time;
        // failures are still reported (and counted by `Deliveries`).
        .set("delivery.report.only.error", "true");
    opts.apply(&mut c);
    c.create_with_context(Deliveries::default())
        .map_err(|e| err(e.to_string()))
}

/// Sends one event, keyed by its entity id, waiting while the local queue is full.
fn send(producer: &Producer, t: Topic, line: &[u8]) -> Result<()> {
    let key = value_after(line, key_needle(t)).unwrap_or_default();
    let mut record = BaseRecord::to(t.topic()).payload(line).key(key);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(err(format!("producing to {}: {e}", t.topic()))),
        }
    }
}

/// Produces `count` events (or forever) at `rate` events/s (or as fast as possible).
pub fn produce(
    bootstrap: &str,
    opts: &KafkaOptions,
    gen: &mut Generator,
    count: Option<u64>,
    rate: Option<u64>,
) -> Result<u64> {
    let producer = producer(bootstrap, opts)?;
    let mut bufs: [Vec<u8>; 6] = Default::default();
    let started = Instant::now();
    let mut last_report = started;
    let mut produced = 0u64;
    let chunk = 1024u64;
    loop {
        let mut n = match count {
            Some(c) if produced >= c => break,
            Some(c) => chunk.min(c - produced),
            None => chunk,
        };
        if let Some(r) = rate {
            n = n.min((r / 20).max(1));
            let due = Duration::from_secs_f64(produced as f64 / r.max(1) as f64);
            let el = started.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
        for _ in 0..n {
            gen.next_into(&mut bufs);
        }
        for t in Topic::ALL {
            for line in bufs[t as usize]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                send(&producer, t, line)?;
            }
            bufs[t as usize].clear();
        }
        produced += n;
        producer.poll(Duration::ZERO);
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let failed = producer.context().failed.load(Ordering::Relaxed);
            tracing::info!(
                produced,
                events_per_s = (produced as f64 / started.elapsed().as_secs_f64()) as u64,
                not_delivered = failed,
                "producing"
            );
        }
    }
    finish(&producer)?;
    Ok(produced)
}

/// Produces `count` events of one topic only, as fast as possible (the generator's other
/// events are dropped): for experiments on a single stream, such as the transactions-only
/// runs of the original design.
pub fn produce_topic(
    bootstrap: &str,
    opts: &KafkaOptions,
    gen: &mut Generator,
    topic: Topic,
    count: u64,
) -> Result<u64> {
    let producer = producer(bootstrap, opts)?;
    let mut bufs: [Vec<u8>; 6] = Default::default();
    let mut produced = 0u64;
    while produced < count {
        for _ in 0..1024 {
            gen.next_into(&mut bufs);
        }
        for line in bufs[topic as usize]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            if produced == count {
                break;
            }
            send(&producer, topic, line)?;
            produced += 1;
        }
        for b in bufs.iter_mut() {
            b.clear();
        }
        producer.poll(Duration::ZERO);
    }
    finish(&producer)?;
    Ok(produced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Clock, DEFAULT_START_MS};

    #[test]
    fn keys_are_read_from_the_line() {
        let line = br#"{"view_id":"V-1","customer_id":"CUST-000001","product_id":"PROD-00042","view_duration":3}"#;
        assert_eq!(
            value_after(line, key_needle(Topic::ProductViews)),
            Some(&b"PROD-00042"[..])
        );
        assert_eq!(
            value_after(line, key_needle(Topic::Customers)),
            Some(&b"CUST-000001"[..])
        );
        assert_eq!(value_after(line, key_needle(Topic::SystemLogs)), None);
        assert_eq!(
            value_after(
                br#"{"service":"unterminated"#,
                key_needle(Topic::SystemLogs)
            ),
            None
        );
    }

    /// Nothing listens on the address: every message times out, and the run says how many
    /// were lost instead of reporting success.
    #[test]
    fn undelivered_events_fail_the_run() {
        let opts = KafkaOptions::parse(&["message.timeout.ms=300".to_string()]).unwrap();
        let mut gen = Generator::new(
            1,
            Clock::Simulated {
                start_ms: DEFAULT_START_MS,
            },
        );
        let e = produce("127.0.0.1:1", &opts, &mut gen, Some(50), None)
            .expect_err("no broker took the events");
        let msg = e.to_string();
        assert!(msg.contains("50 events were not delivered"), "{msg}");
    }
}
