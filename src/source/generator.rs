//! The in-process generator source: synthetic traffic straight into the pipeline.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::Source;
use crate::decode::{now_ms, Origin, RawBatch};
use crate::error::{Error, Result};
use crate::generate::{Clock, Generator, Topic};
use crate::schema::Streams;

pub struct GeneratorSource {
    gen: Generator,
    /// Stream index of each generator topic.
    stream_of: [usize; 6],
    batch: usize,
    /// Events per second; `None`: as fast as possible.
    rate: Option<u64>,
    remaining: Option<u64>,
    produced: u64,
    started: Instant,
    counts: [u64; 6],
}

impl GeneratorSource {
    pub fn new(
        streams: &Streams,
        seed: u64,
        clock: Clock,
        batch: usize,
        rate: Option<u64>,
        count: Option<u64>,
    ) -> Result<Self> {
        let mut stream_of = [0; 6];
        for t in Topic::ALL {
            stream_of[t as usize] = streams.index_of(t.stream()).ok_or_else(|| {
                Error::Config(format!(
                    "the generator needs a stream named `{}` in the schemas",
                    t.stream()
                ))
            })?;
        }
        Ok(GeneratorSource {
            gen: Generator::new(seed, clock),
            stream_of,
            batch: batch.max(1),
            rate,
            remaining: count,
            produced: 0,
            started: Instant::now(),
            counts: [0; 6],
        })
    }
}

#[async_trait]
impl Source for GeneratorSource {
    async fn next(&mut self) -> Result<Option<Vec<RawBatch>>> {
        let mut n = self.batch as u64;
        if let Some(r) = self.remaining {
            if r == 0 {
                return Ok(None);
            }
            n = n.min(r);
        }
        if let Some(rate) = self.rate {
            // Pace: never run ahead of rate x elapsed; small batches at low rates.
            n = n.min((rate / 10).max(1));
            let due = Duration::from_secs_f64(self.produced as f64 / rate.max(1) as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        let mut bufs: [Vec<u8>; 6] = Default::default();
        let mut ends: [Vec<usize>; 6] = Default::default();
        for _ in 0..n {
            let t = self.gen.next_into(&mut bufs) as usize;
            ends[t].push(bufs[t].len());
        }
        self.produced += n;
        if let Some(r) = self.remaining.as_mut() {
            *r -= n;
        }
        let read_at = now_ms();
        let mut out = Vec::new();
        for t in Topic::ALL {
            let i = t as usize;
            if ends[i].is_empty() {
                continue;
            }
            let first = self.counts[i];
            self.counts[i] += ends[i].len() as u64;
            out.push(RawBatch {
                stream: self.stream_of[i],
                data: std::mem::take(&mut bufs[i]),
                ends: std::mem::take(&mut ends[i]),
                origin: Origin::Generator { first },
                read_at_ms: read_at,
            });
        }
        Ok(Some(out))
    }
}
