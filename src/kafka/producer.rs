//! `runnel generate --kafka`: the generator's events, produced to the six topics, keyed by
//! entity id so that all events of one product (or customer, for customer rows) land in one
//! partition. One producer for everything, batching and lz4-compressing.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use super::KafkaOptions;
use crate::error::{Error, Result};
use crate::generate::{Generator, Topic};

fn err(m: impl Into<String>) -> Error {
    Error::Source {
        source_name: "kafka producer".into(),
        message: m.into(),
    }
}

/// The partitioning key of an event: the product for events about products, the customer for
/// customer rows, the service for logs.
pub fn key_field(t: Topic) -> &'static str {
    match t {
        Topic::Customers => "customer_id",
        Topic::SystemLogs => "service",
        _ => "product_id",
    }
}

/// The string value of `"field":"..."` in a JSON line, without parsing the line.
pub fn string_field<'a>(line: &'a [u8], field: &str) -> Option<&'a [u8]> {
    let needle = format!("\"{field}\":\"");
    let pos = line
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?;
    let rest = &line[pos + needle.len()..];
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

/// Creates the six topics where missing (admin API; brokers that refuse it are reported).
pub async fn ensure_topics(
    bootstrap: &str,
    opts: &KafkaOptions,
    partitions: i32,
    replication: i32,
) -> Result<()> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    opts.apply(&mut c);
    let admin: AdminClient<DefaultClientContext> = c.create().map_err(|e| err(e.to_string()))?;
    let topics: Vec<NewTopic> = Topic::ALL
        .iter()
        .map(|t| NewTopic::new(t.topic(), partitions, TopicReplication::Fixed(replication)))
        .collect();
    let res = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
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

fn producer(bootstrap: &str, opts: &KafkaOptions) -> Result<BaseProducer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000");
    opts.apply(&mut c);
    c.create().map_err(|e| err(e.to_string()))
}

/// Sends one event, keyed by its entity id, waiting while the local queue is full.
fn send(producer: &BaseProducer, t: Topic, line: &[u8]) -> Result<()> {
    let key = string_field(line, key_field(t)).unwrap_or_default();
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
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| err(format!("flushing: {e}")))?;
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
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| err(format!("flushing: {e}")))?;
    Ok(produced)
}
