//! `kafka:HOST:PORT[,HOST:PORT...]`: subscribe to every stream's topic in a consumer group.
//!
//! A polling thread turns messages into per-stream micro-batches, flushed by size or time,
//! whichever comes first, into a bounded channel: a slow engine or sink stops the polling
//! (librdkafka then buffers a bounded amount), so memory stays bounded. Offsets are committed
//! by [`Source::commit`], which the pipeline calls only after every sink has flushed the
//! results of all rounds handed out so far.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::Source;
use crate::checkpoint::Positions;
use crate::decode::{now_ms, Origin, RawBatch};
use crate::error::{Error, Result};
use crate::kafka::KafkaOptions;
use crate::schema::Streams;

/// How the Kafka source batches and where it stops.
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    pub bootstrap: String,
    pub group: String,
    pub options: KafkaOptions,
    /// Records per round before it is handed on.
    pub max_records: usize,
    /// Longest a round waits to fill up.
    pub max_wait: Duration,
    /// Stop once every assigned partition has been read to its end (replay of a topic).
    pub until_end: bool,
    /// Positions of a checkpoint (`topic/partition` -> next offset): earlier messages are
    /// already in the restored state and are skipped.
    pub resume: Positions,
    /// Backfill: read these partitions from their start, outside any consumer group, up to
    /// these offsets (exclusive), then end.
    pub stop_at: Option<Positions>,
}

fn err(m: impl Into<String>) -> Error {
    Error::Source {
        source_name: "kafka".into(),
        message: m.into(),
    }
}

pub struct KafkaSource {
    consumer: Arc<BaseConsumer>,
    rx: mpsc::Receiver<Result<Vec<RawBatch>>>,
    stop: Arc<AtomicBool>,
    /// Next offset to commit per (topic, partition), from rounds handed out.
    handed_out: HashMap<(String, i32), i64>,
    committed: HashMap<(String, i32), i64>,
    /// Next offset per partition ever handed out here (or restored), for checkpoints.
    positions: Positions,
    /// Messages behind the partitions' ends, measured by the poller (-1: not yet known).
    lag: Arc<std::sync::atomic::AtomicI64>,
}

/// Reads which partitions an instance owns right now (for status and tests).
#[derive(Clone)]
pub struct AssignmentProbe(Arc<BaseConsumer>);

impl AssignmentProbe {
    /// (topic, partition) pairs currently assigned to this instance, sorted.
    pub fn get(&self) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = self
            .0
            .assignment()
            .map(|a| {
                a.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl KafkaSource {
    pub fn assignment_probe(&self) -> AssignmentProbe {
        AssignmentProbe(self.consumer.clone())
    }

    pub fn start(cfg: KafkaSourceConfig, streams: &Streams) -> Result<Self> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &cfg.bootstrap)
            .set("group.id", &cfg.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", "65536")
            .set("session.timeout.ms", "10000")
            // A fetch waits at most this long for data: the floor of end-to-end latency
            // when traffic is light (librdkafka's default is 500 ms).
            .set("fetch.wait.max.ms", "20")
            // When the local queue is over its thresholds, librdkafka postpones the next fetch
            // by this much (default 1000 ms): once the engine has caught up, a partition would
            // sit idle for up to a second. Measured on a backlog: 157k events/s at the default,
            // 800k+ at 10 ms.
            .set("fetch.queue.backoff.ms", "10");
        cfg.options.apply(&mut c);
        tracing::info!(bootstrap = %cfg.bootstrap, group = %cfg.group, options = ?cfg.options.redacted(), "connecting to Kafka");
        let consumer: BaseConsumer = c.create().map_err(|e| err(e.to_string()))?;
        let existing =
            crate::kafka::existing_topics(consumer.client(), &cfg.bootstrap).map_err(err)?;
        let exists = |t: &str| existing.iter().any(|e| e == t);
        let topics: Vec<&str> = streams.streams.iter().map(|s| s.topic.as_str()).collect();
        let missing: Vec<&&str> = topics.iter().filter(|t| !exists(t)).collect();
        if missing.len() == topics.len() {
            return Err(err(format!(
                "none of the topics exist at {}: {} (create them, or run `runnel generate --kafka {}`)",
                cfg.bootstrap,
                topics.join(", "),
                cfg.bootstrap
            )));
        }
        for t in &missing {
            tracing::warn!(topic = %t, "topic does not exist yet; its stream stays empty until it does");
        }
        let present: Vec<&str> = topics.iter().copied().filter(|t| exists(t)).collect();
        let stop_at: Option<PartMap> = cfg.stop_at.as_ref().map(part_map);
        match &stop_at {
            None => consumer
                .subscribe(&present)
                .map_err(|e| err(e.to_string()))?,
            Some(upto) => {
                let mut tpl = TopicPartitionList::new();
                for (t, parts) in upto.iter().filter(|(t, _)| present.contains(&t.as_str())) {
                    for (&p, _) in parts.iter().filter(|(_, &o)| o > 0) {
                        tpl.add_partition_offset(t, p, Offset::Beginning)
                            .map_err(|e| err(e.to_string()))?;
                    }
                }
                consumer.assign(&tpl).map_err(|e| err(e.to_string()))?;
            }
        }
        let consumer = Arc::new(consumer);
        let (tx, rx) = mpsc::channel(2);
        let stop = Arc::new(AtomicBool::new(false));
        let stream_of: HashMap<String, usize> = streams
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| (s.topic.clone(), i))
            .collect();
        let positions = cfg.resume.clone();
        let lag = Arc::new(std::sync::atomic::AtomicI64::new(-1));
        let poller = Poller {
            stop_at,
            skip: part_map(&cfg.resume),
            consumer: consumer.clone(),
            stream_of,
            cfg,
            stop: stop.clone(),
        };
        {
            let (consumer, lag, stop) = (consumer.clone(), lag.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kafka-lag".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(l) = measure_lag(&consumer) {
                            lag.store(l, Ordering::Relaxed);
                        }
                        for _ in 0..20 {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
                .map_err(|e| err(e.to_string()))?;
        }
        std::thread::Builder::new()
            .name("kafka-poll".into())
            .spawn(move || poller.run(tx))
            .map_err(|e| err(e.to_string()))?;
        Ok(KafkaSource {
            consumer,
            rx,
            stop,
            handed_out: HashMap::new(),
            committed: HashMap::new(),
            positions,
            lag,
        })
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Pending {
    data: Vec<u8>,
    ends: Vec<usize>,
    offsets: Vec<(i32, i64)>,
    timestamps: Vec<Option<i64>>,
}

/// Per topic, per partition: an offset (looked up by `&str`, without allocating).
type PartMap = HashMap<String, HashMap<i32, i64>>;

/// Positions (`topic/partition` -> offset) as a `PartMap`; malformed keys are ignored.
fn part_map(p: &Positions) -> PartMap {
    let mut out = PartMap::new();
    for (k, &o) in p {
        if let Some((t, part)) = k
            .rsplit_once('/')
            .and_then(|(t, p)| Some((t, p.parse().ok()?)))
        {
            out.entry(t.to_string()).or_default().insert(part, o);
        }
    }
    out
}

fn part_get(m: &PartMap, topic: &str, p: i32) -> Option<i64> {
    m.get(topic)?.get(&p).copied()
}

/// Whether every partition of `ends` has been read up to its end.
fn all_read(ends: &HashMap<(String, i32), i64>, read: &PartMap) -> bool {
    ends.iter()
        .all(|((t, p), &end)| part_get(read, t, *p).unwrap_or(0) >= end)
}

struct Poller {
    /// Backfill: end offset (exclusive) per partition.
    stop_at: Option<PartMap>,
    /// Per partition: offsets below this are in a restored checkpoint already.
    skip: PartMap,
    consumer: Arc<BaseConsumer>,
    stream_of: HashMap<String, usize>,
    cfg: KafkaSourceConfig,
    stop: Arc<AtomicBool>,
}

impl Poller {
    fn run(self, tx: mpsc::Sender<Result<Vec<RawBatch>>>) {
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut count = 0usize;
        let mut started = Instant::now();
        // until_end: the end offsets of the assigned partitions when first assigned, and how
        // far each has been read.
        let mut ends: Option<HashMap<(String, i32), i64>> = None;
        let mut read: PartMap = HashMap::new();
        let track_read = self.cfg.until_end || self.stop_at.is_some();
        let mut last_end_check = Instant::now();
        let mut last_check = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let mut idle = false;
            // With messages pending, wait no longer than the round is due: a quiet topic
            // must not hold a partial round (at 100 events/s this was a 50 ms latency floor).
            let wait = if count > 0 {
                self.cfg.max_wait.saturating_sub(started.elapsed())
            } else {
                Duration::from_millis(50)
            };
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    // Per message: no allocation but a topic's first (this loop runs at
                    // hundreds of thousands of messages a second).
                    let (topic, part, off) = (m.topic(), m.partition(), m.offset());
                    if track_read {
                        match read.get_mut(topic) {
                            Some(r) => {
                                r.insert(part, off + 1);
                            }
                            None => {
                                read.insert(topic.to_string(), HashMap::from([(part, off + 1)]));
                            }
                        }
                    }
                    let restored = (!self.skip.is_empty()
                        && part_get(&self.skip, topic, part).is_some_and(|o| off < o))
                        || self
                            .stop_at
                            .as_ref()
                            .is_some_and(|s| part_get(s, topic, part).is_none_or(|end| off >= end));
                    if !restored {
                        if !pending.contains_key(topic) {
                            pending.insert(
                                topic.to_string(),
                                Pending {
                                    data: Vec::new(),
                                    ends: Vec::new(),
                                    offsets: Vec::new(),
                                    timestamps: Vec::new(),
                                },
                            );
                        }
                        if let Some(p) = pending.get_mut(topic) {
                            p.data.extend_from_slice(m.payload().unwrap_or_default());
                            p.data.push(b'\n');
                            p.ends.push(p.data.len());
                            p.offsets.push((part, off));
                            p.timestamps.push(m.timestamp().to_millis());
                        }
                        if count == 0 {
                            started = Instant::now();
                        }
                        count += 1;
                    }
                }
                None => idle = true,
                Some(Err(e)) => tracing::warn!(error = %e, "kafka"),
            }
            let mut finished = false;
            // Whether the input is over is checked when idle or every 20 ms, not per message.
            let check_end = idle || last_end_check.elapsed() >= Duration::from_millis(20);
            if check_end {
                last_end_check = Instant::now();
            }
            if let (Some(upto), true) = (&self.stop_at, check_end) {
                finished = upto.iter().all(|(t, parts)| {
                    parts
                        .iter()
                        .all(|(p, &end)| part_get(&read, t, *p).unwrap_or(0) >= end)
                });
            } else if self.cfg.until_end && check_end {
                // A rebalance (another instance joining or leaving the group) changes which
                // partitions this instance must drain: take their end offsets afresh.
                if ends.is_some() && last_check.elapsed() >= Duration::from_millis(100) {
                    last_check = Instant::now();
                    let now: Option<std::collections::HashSet<(String, i32)>> =
                        self.consumer.assignment().ok().map(|a| {
                            a.elements()
                                .iter()
                                .map(|e| (e.topic().to_string(), e.partition()))
                                .collect()
                        });
                    let held: Option<std::collections::HashSet<(String, i32)>> =
                        ends.as_ref().map(|e| e.keys().cloned().collect());
                    if now.is_some() && now != held {
                        tracing::info!("partition assignment changed; re-reading end offsets");
                        ends = None;
                    }
                }
                if ends.is_none() {
                    ends = self.end_offsets();
                    // Partitions this group had already read start at their committed offset.
                    if let (Some(_), Ok(c)) =
                        (&ends, self.consumer.committed(Duration::from_secs(10)))
                    {
                        for e in c.elements() {
                            if let Offset::Offset(o) = e.offset() {
                                let r = read
                                    .entry(e.topic().to_string())
                                    .or_default()
                                    .entry(e.partition())
                                    .or_insert(0);
                                *r = (*r).max(o);
                            }
                        }
                    }
                }
                if let Some(e) = &ends {
                    finished = all_read(e, &read);
                }
            }
            let full = count >= self.cfg.max_records;
            let due = count > 0 && started.elapsed() >= self.cfg.max_wait;
            if full || due || (finished && count > 0) {
                let round = self.round(&mut pending);
                count = 0;
                if tx.blocking_send(Ok(round)).is_err() {
                    return;
                }
            }
            if finished {
                return;
            }
        }
    }

    /// High watermarks of the current assignment (None until partitions are assigned).
    fn end_offsets(&self) -> Option<HashMap<(String, i32), i64>> {
        let a = self.consumer.assignment().ok()?;
        if a.count() == 0 {
            return None;
        }
        let mut out = HashMap::new();
        for e in a.elements() {
            let (_, high) = self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                .ok()?;
            out.insert((e.topic().to_string(), e.partition()), high);
        }
        Some(out)
    }

    fn round(&self, pending: &mut HashMap<String, Pending>) -> Vec<RawBatch> {
        let mut out = Vec::new();
        let read_at = now_ms();
        for (topic, p) in pending.drain() {
            let Some(&stream) = self.stream_of.get(&topic) else {
                continue;
            };
            out.push(RawBatch {
                stream,
                data: p.data,
                ends: p.ends,
                origin: Origin::Kafka {
                    topic: Arc::from(topic.as_str()),
                    offsets: p.offsets,
                    timestamps: p.timestamps,
                },
                read_at_ms: read_at,
            });
        }
        // Keyed tables first, as the file source does.
        out.sort_by_key(|r| r.stream);
        out
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn next(&mut self) -> Result<Option<Vec<RawBatch>>> {
        match self.rx.recv().await {
            None => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok(round)) => {
                for raw in &round {
                    if let Origin::Kafka { topic, offsets, .. } = &raw.origin {
                        // The next offset per partition first (a handful of partitions), then
                        // the maps: keying them per message allocated twice per message.
                        let mut next: Vec<(i32, i64)> = Vec::new();
                        for &(p, o) in offsets {
                            match next.iter_mut().find(|(q, _)| *q == p) {
                                Some((_, n)) => *n = (*n).max(o + 1),
                                None => next.push((p, o + 1)),
                            }
                        }
                        for (p, n) in next {
                            let e = self.handed_out.entry((topic.to_string(), p)).or_insert(0);
                            *e = (*e).max(n);
                            let e = self.positions.entry(format!("{topic}/{p}")).or_insert(0);
                            *e = (*e).max(n);
                        }
                    }
                }
                Ok(Some(round))
            }
        }
    }

    fn positions(&self) -> Option<Positions> {
        Some(self.positions.clone())
    }

    fn lag(&self) -> Option<i64> {
        let l = self.lag.load(Ordering::Relaxed);
        (l >= 0).then_some(l)
    }

    async fn commit(&mut self) -> Result<()> {
        // Only partitions this instance still owns: after a rebalance another instance commits
        // the rest, and an older offset from here must not overwrite its progress.
        if let Ok(a) = self.consumer.assignment() {
            let owned: std::collections::HashSet<(String, i32)> = a
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            self.handed_out.retain(|k, _| owned.contains(k));
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &self.handed_out {
            if self.committed.get(&(t.clone(), *p)) != Some(o) {
                tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let done = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| err(e.to_string()))?;
        match done {
            Ok(()) => {
                self.committed = self.handed_out.clone();
                Ok(())
            }
            // The group is rebalancing (an instance joined or left): these offsets are
            // committed by the next flush, or re-read by the partition's new owner
            // (at-least-once, as after any crash).
            Err(rdkafka::error::KafkaError::ConsumerCommit(code)) if transient_commit(code) => {
                tracing::warn!(error = %code, "offsets not committed this time (group rebalancing); retrying at the next flush");
                Ok(())
            }
            Err(e) => Err(err(format!("committing offsets: {e}"))),
        }
    }
}

/// Messages between the consumer's positions and its assigned partitions' ends (one
/// watermark request per partition; run off the polling thread). A partition not read from
/// yet counts from its committed offset, or from its start (`auto.offset.reset=earliest`).
fn measure_lag(consumer: &BaseConsumer) -> Option<i64> {
    let pos = consumer.position().ok()?;
    let mut committed: Option<HashMap<(String, i32), i64>> = None;
    let mut lag = 0i64;
    let mut known = false;
    for e in pos.elements() {
        let Ok((low, high)) =
            consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
        else {
            continue;
        };
        let from = match e.offset() {
            Offset::Offset(p) => p,
            _ => {
                let c = committed.get_or_insert_with(|| committed_offsets(consumer));
                c.get(&(e.topic().to_string(), e.partition()))
                    .copied()
                    .unwrap_or(low)
            }
        };
        lag += (high - from).max(0);
        known = true;
    }
    known.then_some(lag)
}

/// The group's committed offsets of the assigned partitions (empty when unknown).
fn committed_offsets(consumer: &BaseConsumer) -> HashMap<(String, i32), i64> {
    let Ok(c) = consumer.committed(Duration::from_secs(2)) else {
        return HashMap::new();
    };
    c.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

/// Commit errors that a later commit resolves (rebalances, coordinator moves, timeouts).
fn transient_commit(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        C::RebalanceInProgress
            | C::IllegalGeneration
            | C::UnknownMemberId
            | C::NotCoordinator
            | C::CoordinatorLoadInProgress
            | C::CoordinatorNotAvailable
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::AssignmentLost
            | C::NoOffset
    )
}
