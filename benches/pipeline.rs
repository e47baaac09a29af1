//! Throughput of the data path, measured with criterion, plus the flat-cost and flat-memory
//! checks (printed as a table; copy into docs/BENCHMARKS.md).
//!
//! `cargo bench --bench pipeline` runs everything. Set `RUNNEL_BENCH_LONG=10000000` for the
//! 10M-event flatness run (default 2M), `RUNNEL_BENCH_FLATNESS=default|fixed|join` for one of
//! the three flatness tables only, `RUNNEL_BENCH_BREAKDOWN=1` for the time spent in each
//! view and keyed table over each measured slice, and `RUNNEL_BENCH_VIEWS=a,b` to run the
//! flatness tables over some views only (for profiling one). `RUNNEL_BENCH_BATCH=N` sets the
//! events per round of the `pipeline` group and the flatness tables (default: `runnel run
//! --batch-size`'s default, 32768); the events measured stay about the same.
//! `RUNNEL_BENCH_HOLD=N` replaces the flatness tables with a steady run for a profiler (see
//! `hold`).

use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, Criterion, Throughput};
use runnel::decode::{Origin, RawBatch, StreamDecoder};
use runnel::engine::state::EngineState;
use runnel::engine::{view_file, Engine, ViewDef};
use runnel::generate::{Clock, Generator, Topic, DEFAULT_START_MS};
use runnel::schema::Streams;

/// Events per round of the benchmarks that fix their rounds (decode, lookup join, checkpoint),
/// and the unit the others size their runs in.
const BATCH: usize = 8192;

/// `runnel run --batch-size`'s default.
const RUN_BATCH: usize = 32768;

/// Events per round of the `pipeline` group and the flatness tables: `RUNNEL_BENCH_BATCH`, or
/// [`RUN_BATCH`], as `runnel run` takes them from a backlog.
fn batch() -> usize {
    std::env::var("RUNNEL_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(RUN_BATCH)
}

/// Rounds of `batch()` events that make up about `events` events (at least one).
fn rounds_for(events: usize) -> usize {
    events.div_ceil(batch()).max(1)
}

struct Feed {
    gen: Generator,
    stream_of: [usize; 6],
    seq: u64,
}

impl Feed {
    fn new(streams: &Streams, seed: u64) -> Self {
        let gen = Generator::new(
            seed,
            Clock::Simulated {
                start_ms: DEFAULT_START_MS,
            },
        );
        Self::with(streams, gen)
    }
    fn with(streams: &Streams, gen: Generator) -> Self {
        let mut stream_of = [0; 6];
        for t in Topic::ALL {
            stream_of[t as usize] = streams.index_of(t.stream()).unwrap();
        }
        Feed {
            gen,
            stream_of,
            seq: 0,
        }
    }
    /// One round of `n` events, split per stream.
    fn round(&mut self, n: usize) -> Vec<RawBatch> {
        let mut bufs: [Vec<u8>; 6] = Default::default();
        for _ in 0..n {
            self.gen.next_into(&mut bufs);
        }
        let mut out = Vec::new();
        for t in Topic::ALL {
            let data = std::mem::take(&mut bufs[t as usize]);
            if data.is_empty() {
                continue;
            }
            self.seq += 1;
            out.push(RawBatch::from_lines(
                self.stream_of[t as usize],
                data,
                Origin::Generator { first: self.seq },
            ));
        }
        out
    }
}

struct Pipe {
    engine: Engine,
    decoders: Vec<StreamDecoder>,
    /// Time spent decoding, and in `Engine::process_round`, so far.
    decoding: std::time::Duration,
    processing: std::time::Duration,
}

impl Pipe {
    async fn new(streams: &Streams, defs: &[ViewDef]) -> Self {
        let engine = Engine::new(streams.clone(), defs).await.unwrap();
        let decoders = streams
            .streams
            .iter()
            .map(|s| StreamDecoder::new(s.clone()).unwrap())
            .collect();
        Pipe {
            engine,
            decoders,
            decoding: std::time::Duration::ZERO,
            processing: std::time::Duration::ZERO,
        }
    }
    /// Runs the rounds; returns the number of view rows they changed (upserts and deletes
    /// the sinks would get).
    async fn run(&mut self, rounds: &[Vec<RawBatch>]) -> usize {
        let mut changed = 0;
        for round in rounds {
            let t = Instant::now();
            let mut batches = Vec::with_capacity(round.len());
            for raw in round {
                let d = self.decoders[raw.stream].decode(raw).unwrap();
                batches.push((raw.stream, d.batch));
            }
            let t1 = Instant::now();
            self.decoding += t1 - t;
            let out = self.engine.absorb_round(batches).await.unwrap();
            self.processing += t1.elapsed();
            changed += out.rows_changed();
        }
        // `runnel run` emits when it flushes its sinks (every `--refresh`, 1 s); these runs
        // emit at the end of each call, every slice (two rounds in the flatness tables),
        // so they count the emits' cost at least as often as a live run pays it.
        let t = Instant::now();
        let out = self.engine.emit().await.unwrap();
        self.processing += t.elapsed();
        changed + out.rows_changed()
    }
}

/// 2024-06-01T00:00:00Z plus `seconds`, as the JSON of an event time.
fn june_first_plus(seconds: usize) -> String {
    const JUNE_FIRST_2024_MS: i64 = 1_717_200_000_000;
    let mut out = Vec::with_capacity(24);
    runnel::generate::format_timestamp_ms(&mut out, JUNE_FIRST_2024_MS + 1000 * seconds as i64);
    String::from_utf8(out).unwrap_or_default()
}

/// The next number of a linear congruential sequence kept in `x`: the benches' random ids.
fn lcg(x: &mut u64) -> usize {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*x >> 33) as usize
}

/// Times `run` on what `prepare` makes, one iteration at a time; preparing (and dropping
/// what it made) is not timed.
fn time_prepared<T>(
    b: &mut criterion::Bencher,
    mut prepare: impl FnMut() -> T,
    mut run: impl FnMut(&mut T),
) {
    b.iter_custom(|iters| {
        let mut spent = std::time::Duration::ZERO;
        for _ in 0..iters {
            let mut input = prepare();
            let t = Instant::now();
            run(&mut input);
            spent += t.elapsed();
        }
        spent
    })
}

/// Times `rounds_at(k)` run through `pipe` for iterations k = 1, 2, ...: each iteration
/// gets rounds of its own, later than the last ones, so none of them is history the engine
/// would skip (a keyed table keeps a row only if it is newer than the one it holds). Making
/// the rounds is not timed.
fn fresh_rounds(
    b: &mut criterion::Bencher,
    rt: &tokio::runtime::Runtime,
    pipe: &mut Pipe,
    next: &mut usize,
    rounds_at: &mut dyn FnMut(usize) -> Vec<Vec<RawBatch>>,
) {
    time_prepared(
        b,
        || {
            *next += 1;
            rounds_at(*next)
        },
        |rounds| {
            std::hint::black_box(rt.block_on(pipe.run(rounds)));
        },
    )
}

/// Hand-written batches of JSON lines, numbered as the generator's would be.
#[derive(Default)]
struct Batches {
    seq: u64,
}

impl Batches {
    fn of(&mut self, stream: usize, lines: String) -> RawBatch {
        self.seq += 1;
        RawBatch::from_lines(
            stream,
            lines.into_bytes(),
            Origin::Generator { first: self.seq },
        )
    }
    /// Rounds that load rows `0..n` (`line(i)` each) into a table, 50,000 per round.
    fn load(
        &mut self,
        stream: usize,
        n: usize,
        line: impl Fn(usize) -> String,
    ) -> Vec<Vec<RawBatch>> {
        (0..n)
            .step_by(50_000)
            .map(|from| vec![self.of(stream, (from..(from + 50_000).min(n)).map(&line).collect())])
            .collect()
    }
}

/// The day-long self-join of purchases and the ranking over it. Its cost per purchase grows
/// with the same customer's purchases of the last day (with the generator's traffic, every
/// customer buys every half minute or so), so it is measured on its own (`flatness`) and kept
/// out of the figures for the other views.
const DAY_JOIN: [&str; 2] = ["product_pairs", "product_affinity"];

/// The shipped views but the day-long self-join.
fn catalog() -> (Streams, Vec<ViewDef>) {
    let (streams, defs) = shipped();
    let defs = defs
        .into_iter()
        .filter(|d| !DAY_JOIN.contains(&d.name.as_str()))
        .collect();
    (streams, defs)
}

/// The day-long self-join alone.
fn day_join() -> (Streams, Vec<ViewDef>) {
    let (streams, defs) = shipped();
    let defs = defs
        .into_iter()
        .filter(|d| DAY_JOIN.contains(&d.name.as_str()))
        .collect();
    (streams, defs)
}

fn shipped() -> (Streams, Vec<ViewDef>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let streams = Streams::load(&root.join("schemas")).unwrap();
    let (defs, errs) = view_file::load_dir(&root.join("queries")).unwrap();
    assert!(errs.is_empty());
    (streams, defs)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bench_generator(c: &mut Criterion) {
    let mut g = c.benchmark_group("generate");
    let n = 100_000;
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("100k events to NDJSON buffers", |b| {
        let mut gen = Generator::new(
            1,
            Clock::Simulated {
                start_ms: DEFAULT_START_MS,
            },
        );
        let mut bufs: [Vec<u8>; 6] = Default::default();
        b.iter(|| {
            for x in bufs.iter_mut() {
                x.clear();
            }
            for _ in 0..n {
                gen.next_into(&mut bufs);
            }
        })
    });
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let (streams, _) = catalog();
    let mut feed = Feed::new(&streams, 2);
    let rounds: Vec<_> = (0..25).map(|_| feed.round(BATCH)).collect();
    let n: usize = rounds.iter().flatten().map(|r| r.len()).sum();
    let mut decoders: Vec<StreamDecoder> = streams
        .streams
        .iter()
        .map(|s| StreamDecoder::new(s.clone()).unwrap())
        .collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("arrow-json, all streams", |b| {
        b.iter(|| {
            for raw in rounds.iter().flatten() {
                decoders[raw.stream].decode(raw).unwrap();
            }
        })
    });
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let (streams, defs) = catalog();
    let rt = rt();
    let mut pipe = rt.block_on(Pipe::new(&streams, &defs));
    let mut feed = Feed::new(&streams, 3);
    // Warm up: the initial customers/products and some history.
    let warm: Vec<_> = (0..rounds_for(30 * BATCH))
        .map(|_| feed.round(batch()))
        .collect();
    rt.block_on(pipe.run(&warm));
    let rounds: Vec<_> = (0..rounds_for(25 * BATCH))
        .map(|_| feed.round(batch()))
        .collect();
    let n: usize = rounds.iter().flatten().map(|r| r.len()).sum();
    // Every iteration runs the rounds on a freshly planned engine holding the state after the
    // warm-up. Run twice on one engine, the rounds would be history the second time: windowed
    // views would drop their events as late and the keyed tables would ignore rows older than
    // the ones they hold, so the figure would leave out work a live run does. Planning and
    // restoring are not timed.
    let restored = |warmed: &EngineState| {
        let mut p = rt.block_on(Pipe::new(&streams, &defs));
        p.engine.restore_state(warmed).unwrap();
        p
    };
    let mut warmed: Option<EngineState> = None;
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    g.bench_function(
        "decode + all shipped views but the day-long self-join",
        |b| {
            // Only when this bench is selected: the flatness tables measure the process's RSS.
            let warmed = warmed.get_or_insert_with(|| {
                let warmed = pipe.engine.save_state().unwrap();
                let first = rt.block_on(pipe.run(&rounds));
                let again = rt.block_on(restored(&warmed).run(&rounds));
                assert_eq!(first, again, "the rounds did other work after a restore");
                warmed
            });
            time_prepared(
                b,
                || restored(warmed),
                |p| {
                    std::hint::black_box(rt.block_on(p.run(&rounds)));
                },
            )
        },
    );
    g.finish();
}

/// A lookup join against a large customers table: each round is 8,192 product views joined
/// with `customers` on its key, plus 100 customer updates (the table is updated every round).
/// Run with 10k and with 1M customers: a join that read the whole table, or an update that
/// copied it, would make the second 100 times slower. Set up only when selected (it loads a
/// million customers).
fn bench_large_table(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let streams = Streams::load(&root.join("schemas")).unwrap();
    let view = ViewDef::parse(
        Path::new("views_by_gender.sql"),
        "SELECT c.gender, count(*) AS views, sum(v.view_duration) AS seconds \
         FROM product_views v JOIN customers c ON v.customer_id = c.customer_id \
         GROUP BY c.gender",
    )
    .unwrap();
    let customers = streams.index_of("customers").unwrap();
    let views = streams.index_of("product_views").unwrap();
    let customer = |i: usize, login_s: usize| {
        format!(
            "{{\"customer_id\":\"CUST-{i:07}\",\"name\":\"Name {i}\",\"email\":\"c{i}@example.com\",\
             \"gender\":\"{}\",\"age\":{},\"location\":\"Town {}\",\
             \"signup_date\":\"2024-01-01T00:00:00Z\",\"last_login\":\"{}\"}}\n",
            ["Male", "Female", "Other"][i % 3],
            18 + i % 60,
            i % 500,
            june_first_plus(login_s)
        )
    };
    let rt = rt();
    let mut g = c.benchmark_group("lookup join, 8192 views + 100 customer updates per round");
    g.sample_size(10);
    for table_rows in [10_000usize, 1_000_000] {
        // Set up only when selected: loading a million customers takes a while.
        let mut setup: Option<(Pipe, Batches, u64, usize)> = None;
        g.throughput(Throughput::Elements(20 * (BATCH as u64 + 100)));
        g.bench_function(format!("{table_rows} customers"), |b| {
            let (pipe, batches, x, iteration) = setup.get_or_insert_with(|| {
                let mut pipe = rt.block_on(Pipe::new(&streams, std::slice::from_ref(&view)));
                let mut batches = Batches::default();
                rt.block_on(pipe.run(&batches.load(customers, table_rows, |i| customer(i, 0))));
                (pipe, batches, 11, 0)
            });
            let mut next = || lcg(x);
            // Iteration k's 20 rounds: seconds 20(k - 1) + 1 to 20k.
            let mut rounds_at = |k: usize| -> Vec<Vec<RawBatch>> {
                (0..20)
                    .map(|r| {
                        let second = 20 * (k - 1) + r + 1;
                        let updates: String = (0..100)
                            .map(|_| customer(next() % table_rows, second))
                            .collect();
                        let at = june_first_plus(second);
                        let views_lines: String = (0..BATCH)
                            .map(|j| {
                                format!(
                                    "{{\"view_id\":\"V-{second}-{j}\",\"customer_id\":\"CUST-{:07}\",\
                                     \"product_id\":\"PROD-{:04}\",\"view_duration\":{},\
                                     \"view_time\":\"{at}\"}}\n",
                                    next() % table_rows,
                                    next() % 100,
                                    next() % 300,
                                )
                            })
                            .collect();
                        vec![
                            batches.of(customers, updates),
                            batches.of(views, views_lines),
                        ]
                    })
                    .collect()
            };
            fresh_rounds(b, &rt, pipe, iteration, &mut rounds_at);
        });
    }
    g.finish();
}

/// A GROUP BY customer over 10k and over 1M customers already held, 8192 product views of
/// random customers per round: each round touches about 8,000 groups, and the second size's
/// groups are far out of the caches. The cost per round grows with the state only through
/// cache misses (the groups' index entries and cells), which the engine overlaps by asking
/// for them ahead. (No `count(DISTINCT)`: over this many groups DataFusion's partial
/// aggregate, one accumulator per group, would take more than half the time.)
fn bench_many_groups(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let streams = Streams::load(&root.join("schemas")).unwrap();
    let view = ViewDef::parse(
        Path::new("per_customer.sql"),
        "SELECT customer_id, count(*) AS views, sum(view_duration) AS seconds, \
         max(view_duration) AS longest, avg(view_duration) AS mean \
         FROM product_views GROUP BY customer_id",
    )
    .unwrap();
    let views = streams.index_of("product_views").unwrap();
    let view_line = |id: &str, customer: usize, product: usize, seconds: usize, at: &str| {
        format!(
            "{{\"view_id\":\"{id}\",\"customer_id\":\"CUST-{customer:07}\",\
             \"product_id\":\"PROD-{product:04}\",\"view_duration\":{seconds},\
             \"view_time\":\"{at}\"}}\n"
        )
    };
    let rt = rt();
    let mut g = c.benchmark_group("group by customer, 8192 views per round");
    g.sample_size(10);
    for customers in [10_000usize, 1_000_000] {
        let mut setup: Option<(Pipe, Batches, u64, usize)> = None;
        g.throughput(Throughput::Elements(20 * BATCH as u64));
        g.bench_function(format!("{customers} customers held"), |b| {
            let (pipe, batches, x, iteration) = setup.get_or_insert_with(|| {
                let mut pipe = rt.block_on(Pipe::new(&streams, std::slice::from_ref(&view)));
                let mut batches = Batches::default();
                let at = june_first_plus(0);
                let load = batches.load(views, customers, |i| {
                    view_line(&format!("V-0-{i}"), i, i % 100, 30, &at)
                });
                rt.block_on(pipe.run(&load));
                (pipe, batches, 7, 0)
            });
            let mut next = || lcg(x);
            let mut rounds_at = |k: usize| -> Vec<Vec<RawBatch>> {
                (0..20)
                    .map(|r| {
                        let second = 20 * (k - 1) + r + 1;
                        let at = june_first_plus(second);
                        let lines: String = (0..BATCH)
                            .map(|j| {
                                view_line(
                                    &format!("V-{second}-{j}"),
                                    next() % customers,
                                    next() % 100,
                                    next() % 300,
                                    &at,
                                )
                            })
                            .collect();
                        vec![batches.of(views, lines)]
                    })
                    .collect()
            };
            fresh_rounds(b, &rt, pipe, iteration, &mut rounds_at);
        });
    }
    g.finish();
}

/// `low_stock` (products LEFT JOIN product_sales, both keyed by product_id) over a catalog of
/// 10k and of 200k products, with 100 products changing per round (stock going below and
/// above the threshold) and 100 sales. The view is recomputed for the changed keys only, so
/// both sizes cost about the same per round; recomputing it in full would make the second 20
/// times slower.
///
/// The same rounds through `top_sellers` and `slow_movers` (the first 10 products by units
/// sold, fewest first): they are recomputed over the keys changed and the keys ranked first
/// last round, so the larger catalog costs about the same per round too.
fn bench_keyed_recompute(c: &mut Criterion) {
    keyed_recompute(c, "low_stock", &["product_sales", "low_stock"]);
    keyed_recompute(
        c,
        "top_sellers and slow_movers",
        &["product_sales", "top_sellers", "slow_movers"],
    );
}

fn keyed_recompute(c: &mut Criterion, group: &str, views: &[&str]) {
    let (streams, defs) = shipped();
    let defs: Vec<ViewDef> = defs
        .into_iter()
        .filter(|d| views.contains(&d.name.as_str()))
        .collect();
    let products = streams.index_of("products").unwrap();
    let transactions = streams.index_of("transactions").unwrap();
    let sale = |r: usize, j: usize, i: usize| {
        format!(
            "{{\"transaction_id\":\"T{r}-{j}\",\"customer_id\":\"CUST-000001\",\
             \"product_id\":\"PROD-{i:07}\",\"quantity\":{},\"price\":1.5,\"total_amount\":1.5,\
             \"payment_method\":\"paypal\",\"status\":\"completed\",\
             \"transaction_time\":\"{}\"}}\n",
            1 + j % 3,
            june_first_plus(r)
        )
    };
    let product = |i: usize, stock: usize, t: usize| {
        format!(
            "{{\"product_id\":\"PROD-{i:07}\",\"name\":\"Product {i}\",\"category\":\"C{}\",\
             \"price\":{}.5,\"stock_quantity\":{stock},\"supplier\":\"S\",\"rating\":4.0,\
             \"updated_at\":\"{}\"}}\n",
            i % 20,
            10 + i % 90,
            june_first_plus(t)
        )
    };
    let rt = rt();
    let mut g = c.benchmark_group(format!("{group}, 100 product changes per round"));
    g.sample_size(10);
    for catalog in [10_000usize, 200_000] {
        let mut setup: Option<(Pipe, Batches, usize)> = None;
        g.throughput(Throughput::Elements(20 * 200));
        g.bench_function(format!("{catalog} products"), |b| {
            let (pipe, batches, iteration) = setup.get_or_insert_with(|| {
                let mut pipe = rt.block_on(Pipe::new(&streams, &defs));
                let mut batches = Batches::default();
                rt.block_on(pipe.run(&batches.load(products, catalog, |i| product(i, 100, 0))));
                (pipe, batches, 0)
            });
            // Iteration k's 20 rounds: rounds 20(k - 1) + 1 to 20k, one second apart.
            let mut rounds_at = |k: usize| -> Vec<Vec<RawBatch>> {
                (20 * (k - 1)..20 * k)
                    .map(|r| {
                        let lines: String = (0..100)
                            .map(|j| {
                                product(
                                    (r * 7919 + j * 104_729) % catalog,
                                    (r + j) % 2 * 100,
                                    r + 1,
                                )
                            })
                            .collect();
                        let sales: String = (0..100)
                            .map(|j| sale(r + 1, j, (r * 104_723 + j * j * 7919) % catalog))
                            .collect();
                        vec![batches.of(products, lines), batches.of(transactions, sales)]
                    })
                    .collect()
            };
            fresh_rounds(b, &rt, pipe, iteration, &mut rounds_at);
        });
    }
    g.finish();
}

/// Checkpoint cost with every shipped view after ~450k events of default traffic: taking the
/// engine's state and writing it (Arrow IPC, fsync, rename), and reading it back into an
/// engine.
fn bench_checkpoint(c: &mut Criterion) {
    use runnel::checkpoint::Checkpoints;
    let (streams, defs) = catalog();
    let rt = rt();
    let mut pipe = rt.block_on(Pipe::new(&streams, &defs));
    let mut feed = Feed::new(&streams, 3);
    let rounds: Vec<_> = (0..55).map(|_| feed.round(BATCH)).collect();
    rt.block_on(pipe.run(&rounds));
    let dir = tempfile::tempdir().unwrap();
    let (mut cp, _) = Checkpoints::open(dir.path(), std::time::Duration::ZERO).unwrap();
    let positions: runnel::checkpoint::Positions = [("transaction_data/0".to_string(), 1)].into();
    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(20);
    g.bench_function("save state + write (16 views, 450k events in)", |b| {
        b.iter(|| {
            let st = pipe.engine.save_state().unwrap();
            cp.write(&st, &positions).unwrap();
        })
    });
    println!("checkpoint size: {} bytes", cp.last_bytes);
    let mut fresh = rt.block_on(Pipe::new(&streams, &defs));
    g.bench_function("read + restore", |b| {
        b.iter(|| {
            let (_, r) = Checkpoints::open(dir.path(), std::time::Duration::ZERO).unwrap();
            fresh
                .engine
                .restore_state(r.state.as_ref().unwrap())
                .unwrap();
        })
    });
    g.finish();
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<f64>().ok())
        })
        .map(|pages| pages * 4096.0 / (1 << 20) as f64)
        .unwrap_or(0.0)
}

/// Throughput of the events after each checkpoint (five slices of whole rounds, at least 40,960
/// events each); RSS after each checkpoint.
/// `fixed_catalog`: the generator keeps its first 500 customers and 100 products, so only
/// history grows; otherwise customers and products keep arriving (the default traffic).
fn flatness(fixed_catalog: bool, join_only: bool) {
    let long: usize = std::env::var("RUNNEL_BENCH_LONG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let (streams, mut defs) = if join_only { day_join() } else { catalog() };
    only_chosen(&mut defs);
    let rt = rt();
    let lane = || {
        let mut gen = Generator::new(
            4,
            Clock::Simulated {
                start_ms: DEFAULT_START_MS,
            },
        );
        if fixed_catalog {
            gen = gen.fixed_catalog();
        }
        (
            rt.block_on(Pipe::new(&streams, &defs)),
            Feed::with(&streams, gen),
        )
    };
    let (mut pipe, mut feed) = lane();
    let checkpoints = if join_only {
        vec![100_000usize, 500_000, 1_000_000]
    } else {
        vec![100_000usize, 1_000_000, long]
    };
    let mut done = 0usize;
    let mut breakdown = Vec::new();
    let catalog = if fixed_catalog {
        "fixed catalog: 500 customers, 100 products"
    } else {
        "default traffic: customers and products keep arriving"
    };
    let views = if join_only {
        "decode + the day-long self-join alone (product_pairs, product_affinity)"
    } else {
        "decode + all shipped views but the day-long self-join"
    };
    // This machine is shared and noisy (one 200k slice varies by up to a third between runs):
    // the events after each checkpoint are timed as SLICES slices of at least 40,960 events
    // (whole rounds), and the median slice is reported, with the range.
    const SLICES: usize = 5;
    let (batch, per_slice) = (batch(), rounds_for(5 * BATCH));
    let span = format!("{}k", SLICES * per_slice * batch / 1000);
    println!("\nflatness, {catalog} ({views}, one core, batches of {batch}; the next {span} events timed as {SLICES} slices of {per_slice} rounds)");
    println!("| events before | events/s over the next {span} (median slice) | slowest – fastest slice | RSS MiB | live groups | view rows changed in those {span} |");
    println!("|---:|---:|---:|---:|---:|---:|");
    // Feeds rounds until `done` events reach `to`.
    let advance = |pipe: &mut Pipe, feed: &mut Feed, done: &mut usize, to: usize| {
        while *done < to {
            let round = feed.round(batch);
            *done += batch;
            rt.block_on(pipe.run(&[round]));
        }
    };
    // Times `k` rounds and one emit: events/s, view rows changed, events.
    let timed = |pipe: &mut Pipe, feed: &mut Feed, k: usize| {
        let rounds: Vec<_> = (0..k).map(|_| feed.round(batch)).collect();
        let n: usize = rounds.iter().flatten().map(|r| r.len()).sum();
        let t = Instant::now();
        let changed = rt.block_on(pipe.run(&rounds));
        (n as f64 / t.elapsed().as_secs_f64(), changed, n)
    };
    // One slice: `per_slice` rounds.
    let slice = |pipe: &mut Pipe, feed: &mut Feed| timed(pipe, feed, per_slice);
    for &cp in &checkpoints {
        advance(&mut pipe, &mut feed, &mut done, cp);
        let before = busy(&pipe.engine);
        let (decoding, processing) = (pipe.decoding, pipe.processing);
        let mut rates = Vec::with_capacity(SLICES);
        let mut changed = 0;
        for _ in 0..SLICES {
            let (rate, c, n) = slice(&mut pipe, &mut feed);
            rates.push(rate);
            changed += c;
            done += n;
        }
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let mut counted = std::time::Duration::ZERO;
        for ((name, b0), (_, b1)) in before.iter().zip(busy(&pipe.engine)) {
            counted += b1 - *b0;
            breakdown.push(format!("{cp}\t{name}\t{:.1} ms", ms(b1 - *b0)));
        }
        breakdown.push(format!(
            "{cp}\tdecode\t{:.1} ms",
            ms(pipe.decoding - decoding)
        ));
        breakdown.push(format!(
            "{cp}\tengine, outside the views and tables above\t{:.1} ms",
            ms((pipe.processing - processing).saturating_sub(counted))
        ));
        for v in pipe.engine.view_stats() {
            if v.state_bytes > 0 {
                breakdown.push(format!(
                    "{cp}\t{} state\t{:.2} MiB in {} groups",
                    v.name,
                    v.state_bytes as f64 / (1 << 20) as f64,
                    v.groups
                ));
            }
            if let Some(r) = pipe.engine.rank_runs(&v.name) {
                breakdown.push(format!(
                    "{cp}\t{} runs so far\t{}, {} of them over every key \
                     ({} keeping only the rows shown); {} changed keys set aside",
                    v.name, r.runs, r.full, r.narrow, r.set_aside
                ));
            }
        }
        rates.sort_by(f64::total_cmp);
        let groups: usize = pipe
            .engine
            .view_stats()
            .iter()
            .map(|v| v.groups.max(v.rows))
            .sum();
        println!(
            "| {cp} | {:.0} | {:.0} – {:.0} | {:.0} | {groups} | {} |",
            rates[SLICES / 2],
            rates[0],
            rates[SLICES - 1],
            rss_mib(),
            changed
        );
    }
    // The table above times each checkpoint minutes apart, and this machine's speed drifts by
    // more than the effect measured over minutes. So the first and the last checkpoint are
    // also timed side by side: a second engine brought to the first checkpoint, then one
    // slice on each in turn (which goes first alternates), and the ratio taken pair by pair.
    let (mut early, mut early_feed) = lane();
    advance(&mut early, &mut early_feed, &mut 0, checkpoints[0]);
    let (mut e, mut l, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    // Where each lane's time goes over the pairs: decode, each view and keyed table, the rest.
    let parts = |p: &Pipe| {
        let mut v = busy(&p.engine);
        v.push(("decode".into(), p.decoding));
        v.push(("process_round, in all".into(), p.processing));
        v
    };
    let (early0, late0) = (parts(&early), parts(&pipe));
    for k in 0..SLICES {
        let (re, rl) = if k % 2 == 0 {
            let re = slice(&mut early, &mut early_feed).0;
            (re, slice(&mut pipe, &mut feed).0)
        } else {
            let rl = slice(&mut pipe, &mut feed).0;
            (slice(&mut early, &mut early_feed).0, rl)
        };
        e.push(re);
        l.push(rl);
        ratio.push(rl / re);
    }
    for v in [&mut e, &mut l, &mut ratio] {
        v.sort_by(f64::total_cmp);
    }
    let last = checkpoints[checkpoints.len() - 1];
    println!(
        "\nside by side, {SLICES} pairs of slices: after {} events {:.0} events/s, after {last} (and the {span} above) {:.0} events/s (medians); later / earlier, pair by pair: median {:.2}, range {:.2} – {:.2}",
        checkpoints[0],
        e[SLICES / 2],
        l[SLICES / 2],
        ratio[SLICES / 2],
        ratio[0],
        ratio[SLICES - 1]
    );
    let (early1, late1) = (parts(&early), parts(&pipe));
    drop(early);
    // The pairs above emit after every slice of two rounds. `runnel run` emits when it
    // flushes its sinks (every `--refresh`, 1 s: 30 – 45 rounds at these rates), so a group
    // touched in many rounds is evaluated and sent once per flush, not once per two rounds.
    // So the lanes are also timed over whole emit periods of the span above (`SLICES` slices'
    // worth of rounds, absorbed, then one emit), each early period on a fresh engine brought
    // to the first checkpoint: it covers the same events (100k to 427k) as the early lane's
    // slices above, and the late lane goes on from where it is.
    let period = SLICES * per_slice;
    let mut flush_ratio = Vec::with_capacity(SLICES);
    let (mut fe, mut fl) = (Vec::new(), Vec::new());
    // Time per part over all the periods of each lane.
    let zero = |p: &Pipe| -> Vec<(String, std::time::Duration)> {
        parts(p)
            .into_iter()
            .map(|(n, _)| (n, std::time::Duration::ZERO))
            .collect()
    };
    let (mut early_spent, mut late_spent) = (zero(&pipe), zero(&pipe));
    let add = |spent: &mut Vec<(String, std::time::Duration)>,
               before: &[(String, std::time::Duration)],
               p: &Pipe| {
        for ((s, (_, b0)), (_, b1)) in spent.iter_mut().zip(before).zip(parts(p)) {
            s.1 += b1 - *b0;
        }
    };
    let period_rate = |pipe: &mut Pipe, feed: &mut Feed| timed(pipe, feed, period).0;
    for k in 0..SLICES {
        let (mut early, mut early_feed) = lane();
        advance(&mut early, &mut early_feed, &mut 0, checkpoints[0]);
        let (e0, l0) = (parts(&early), parts(&pipe));
        let (re, rl) = if k % 2 == 0 {
            let re = period_rate(&mut early, &mut early_feed);
            (re, period_rate(&mut pipe, &mut feed))
        } else {
            let rl = period_rate(&mut pipe, &mut feed);
            (period_rate(&mut early, &mut early_feed), rl)
        };
        add(&mut early_spent, &e0, &early);
        add(&mut late_spent, &l0, &pipe);
        fe.push(re);
        fl.push(rl);
        flush_ratio.push(rl / re);
    }
    for v in [&mut fe, &mut fl, &mut flush_ratio] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "side by side, {SLICES} pairs of emit periods ({period} rounds, {span} events, one emit each; a fresh engine from {} events each time): after {} events {:.0} events/s, after {last}+ {:.0} events/s (medians); later / earlier, pair by pair: median {:.2}, range {:.2} – {:.2}",
        checkpoints[0],
        checkpoints[0],
        fe[SLICES / 2],
        fl[SLICES / 2],
        flush_ratio[SLICES / 2],
        flush_ratio[0],
        flush_ratio[SLICES - 1]
    );
    if std::env::var_os("RUNNEL_BENCH_BREAKDOWN").is_some() {
        println!("\nside by side, time over the {SLICES} slices of each lane (name, after {}, after {last}, later - earlier)", checkpoints[0]);
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        for (((name, e0), (_, e1)), ((_, l0), (_, l1))) in
            early0.iter().zip(&early1).zip(late0.iter().zip(&late1))
        {
            let (a, b) = (ms(*e1 - *e0), ms(*l1 - *l0));
            if a >= 0.05 || b >= 0.05 {
                println!("{name}\t{a:.1} ms\t{b:.1} ms\t{:+.1} ms", b - a);
            }
        }
        println!("\nside by side, time over the {SLICES} emit periods of each lane (name, after {}, after {last}+, later - earlier)", checkpoints[0]);
        for ((name, e), (_, l)) in early_spent.iter().zip(&late_spent) {
            let (a, b) = (ms(*e), ms(*l));
            if a >= 0.05 || b >= 0.05 {
                println!("{name}\t{a:.1} ms\t{b:.1} ms\t{:+.1} ms", b - a);
            }
        }
        println!("\ntime per view and keyed table, decode, and the engine's remainder over the {span} events after each checkpoint (events before, name)");
        for line in breakdown {
            println!("{line}");
        }
    }
}

/// `RUNNEL_BENCH_VIEWS=a,b`: only these views (name the views they read too), to profile one.
fn only_chosen(defs: &mut Vec<ViewDef>) {
    if let Ok(only) = std::env::var("RUNNEL_BENCH_VIEWS") {
        let only: Vec<&str> = only.split(',').collect();
        defs.retain(|d| only.contains(&d.name.as_str()));
    }
}

/// `RUNNEL_BENCH_HOLD=N` (for a profiler): default traffic, all views of the flatness tables,
/// brought to N events, then slices of the same size as theirs for `RUNNEL_BENCH_HOLD_SECS`
/// seconds (default 20), each slice's rate printed. "holding" is printed, with the process id,
/// when the steady part starts, so that `perf record -p` can attach to it alone.
fn hold(at: usize) {
    let secs: f64 = std::env::var("RUNNEL_BENCH_HOLD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20.0);
    // With RUNNEL_BENCH_HOLD_RESTART set, each slice starts from a new engine brought to N
    // events, so that a small N stays small (otherwise the slices carry the state onwards).
    let restart = std::env::var_os("RUNNEL_BENCH_HOLD_RESTART").is_some();
    let (streams, mut defs) = catalog();
    only_chosen(&mut defs);
    let rt = rt();
    let batch = batch();
    let lane = || {
        let gen = Generator::new(
            4,
            Clock::Simulated {
                start_ms: DEFAULT_START_MS,
            },
        );
        let mut pipe = rt.block_on(Pipe::new(&streams, &defs));
        let mut feed = Feed::with(&streams, gen);
        let mut done = 0;
        while done < at {
            let round = feed.round(batch);
            done += batch;
            rt.block_on(pipe.run(&[round]));
        }
        (pipe, feed)
    };
    let (mut pipe, mut feed) = lane();
    let per_slice = rounds_for(5 * BATCH);
    println!("holding after {at} events, pid {}", std::process::id());
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let rounds: Vec<_> = (0..per_slice).map(|_| feed.round(batch)).collect();
        let n: usize = rounds.iter().flatten().map(|r| r.len()).sum();
        let t = Instant::now();
        rt.block_on(pipe.run(&rounds));
        println!("{:.0} events/s", n as f64 / t.elapsed().as_secs_f64());
        if restart {
            (pipe, feed) = lane();
        }
    }
}

/// Cumulative time per view and per keyed table.
fn busy(engine: &Engine) -> Vec<(String, std::time::Duration)> {
    let mut out: Vec<_> = engine
        .view_stats()
        .into_iter()
        .map(|v| (v.name, v.busy))
        .collect();
    for (s, st) in engine.streams().streams.iter().zip(engine.stream_stats()) {
        out.push((format!("table {}", s.name), st.table_busy));
    }
    out
}

criterion_group!(
    benches,
    bench_generator,
    bench_decode,
    bench_pipeline,
    bench_checkpoint
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        if let Some(at) = std::env::var("RUNNEL_BENCH_HOLD")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            hold(at);
            return;
        }
        // RUNNEL_BENCH_FLATNESS=default|fixed|join runs one of the three tables only.
        let only = std::env::var("RUNNEL_BENCH_FLATNESS").ok();
        let want = |t: &str| only.as_deref().is_none_or(|o| o == t);
        if want("default") {
            flatness(false, false);
        }
        if want("fixed") {
            flatness(true, false);
        }
        if want("join") {
            flatness(false, true);
        }
    }
    // Last, so that its million-row table is not in the flatness tables' resident memory.
    let mut c = Criterion::default().configure_from_args();
    bench_large_table(&mut c);
    bench_many_groups(&mut c);
    bench_keyed_recompute(&mut c);
    c.final_summary();
}
