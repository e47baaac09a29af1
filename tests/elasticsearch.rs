//! The Elasticsearch sink against a real server speaking the Elasticsearch REST API:
//! osmem-server (`pip install osmem-server`, an in-memory OpenSearch/Elasticsearch-API server
//! whose `_bulk`, `_mapping`, `_count` and `_search` answer in the real API's shapes, per-item
//! mapping errors included). The test installs it with pip when it is missing.
//!
//! Faults the server cannot produce by itself (429, 503, dropped connections) come from a small
//! TCP proxy in front of it that answers with the bodies Elasticsearch documents; an outage is
//! the server process stopped with SIGSTOP and resumed with SIGCONT.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elasticsearch::http::Method;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_runnel");

use common::osmem::{call, create_index, documents, Server};

fn view_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(common::root().join("queries"))
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "sql").then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    v.sort();
    v
}

/// The ndjson sink's rows of a view, sorted by their JSON text.
fn ndjson_rows(out: &Path, view: &str) -> Vec<String> {
    let mut rows: Vec<String> = common::read_ndjson(&out.join(format!("{view}.ndjson")))
        .into_iter()
        .map(|r| Value::Object(r).to_string())
        .collect();
    rows.sort();
    rows
}

fn es_rows(docs: &BTreeMap<String, Map<String, Value>>) -> Vec<String> {
    let mut rows: Vec<String> = docs
        .values()
        .map(|r| Value::Object(r.clone()).to_string())
        .collect();
    rows.sort();
    rows
}

fn runnel(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let root = common::root();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--queries")
        .arg(root.join("queries"))
        .arg("--schemas")
        .arg(root.join("schemas"))
        .env("RUNNEL_LOG", "warn")
        .env_remove("RUNNEL_SINK");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("runnel runs")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `name: N documents indexed, M deleted, ...` from the run's last lines.
fn sink_counts(err: &str) -> (u64, u64, u64, u64) {
    let line = err
        .lines()
        .find(|l| l.contains("documents indexed"))
        .unwrap_or_else(|| panic!("no sink summary in:\n{err}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let n = nums.len();
    (nums[n - 4], nums[n - 3], nums[n - 2], nums[n - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_into_elasticsearch_equals_ndjson_and_a_rerun_makes_no_duplicates() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::generate(&data, 11, 40_000);
    let sink = format!("elasticsearch:{}", server.url);
    let mut results = Vec::new();
    for run in 0..2 {
        let out = tmp.path().join(format!("out{run}"));
        let o = runnel(
            &[
                "run",
                "--source",
                &format!("files:{}", data.display()),
                "--until-drained",
                "--batch-size",
                "256",
                "--refresh",
                "0.05",
                "--sink",
                &format!("ndjson:{}", out.display()),
                "--sink",
                &sink,
                "--dead-letters",
                tmp.path().join("dl.ndjson").to_str().unwrap(),
            ],
            &[],
        );
        let err = stderr(&o);
        assert!(o.status.success(), "run {run} failed:\n{err}");
        let (indexed, deleted, rejected, _) = sink_counts(&err);
        assert_eq!(rejected, 0, "{err}");
        assert!(indexed > 1000, "{err}");
        // Rows leave top_sellers, slow_movers and low_stock as sales accumulate: those
        // documents must be deleted, or the counts below would exceed the views' rows.
        if run == 0 {
            assert!(deleted > 0, "no deletes were sent:\n{err}");
        }
        let mut per_view = BTreeMap::new();
        for view in view_names() {
            let docs = documents(&server.url, &view).await;
            let want = ndjson_rows(&out, &view);
            assert!(!want.is_empty(), "{view} produced nothing");
            assert_eq!(
                es_rows(&docs),
                want,
                "run {run}: index {view} differs from the ndjson sink"
            );
            per_view.insert(view, docs);
        }
        // Ids are the key columns, readable.
        let sv = &per_view["sales_velocity"];
        let (id, row) = sv.iter().next().unwrap();
        assert_eq!(
            id,
            &format!(
                "{}|{}",
                row["product_id"].as_str().unwrap(),
                row["window_start"].as_str().unwrap()
            )
        );
        assert_eq!(per_view["top_sellers"].len(), 10);
        results.push(per_view);
    }
    // A restart re-delivers everything: same documents, no duplicates.
    assert_eq!(results[0], results[1]);
    // The mapping follows the view's types.
    let (_, m) = call(&server.url, Method::Get, "/sales_velocity/_mapping", None).await;
    let props = &m["sales_velocity"]["mappings"]["properties"];
    assert_eq!(props["window_start"]["type"], "date");
    assert_eq!(props["product_id"]["type"], "keyword");
    assert_eq!(props["units"]["type"], "long");
    assert_eq!(props["revenue"]["type"], "double");
    assert_eq!(props["@timestamp"]["type"], "date");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_document_is_dead_lettered_and_the_rest_lands() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::generate(&data, 5, 20_000);
    let queries = tmp.path().join("queries");
    std::fs::create_dir_all(&queries).unwrap();
    // One product's units overflow the `integer` field someone else declared.
    std::fs::write(
        queries.join("units_by_product.sql"),
        "-- Units per product, one of them too large for the index's integer field.\n\
         SELECT product_id,\n\
                sum(quantity) * CASE WHEN product_id = 'PROD-00001' THEN 10000000000 ELSE 1 END AS units\n\
         FROM transactions GROUP BY product_id\n",
    )
    .unwrap();
    create_index(
        &server.url,
        "units_by_product",
        json!({"units": {"type": "integer"}}),
    )
    .await;
    let out = tmp.path().join("out");
    let dl = tmp.path().join("dl.ndjson");
    let o = Command::new(BIN)
        .args(["run", "--until-drained", "--source"])
        .arg(format!("files:{}", data.display()))
        .arg("--queries")
        .arg(&queries)
        .arg("--sink")
        .arg(format!("ndjson:{}", out.display()))
        .arg("--sink")
        .arg(format!("elasticsearch:{}", server.url))
        .arg("--dead-letters")
        .arg(&dl)
        .env("RUNNEL_LOG", "warn")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("is `integer` there"), "no warning:\n{err}");
    let docs = documents(&server.url, "units_by_product").await;
    let want = common::read_ndjson(&out.join("units_by_product.ndjson"));
    assert_eq!(docs.len(), want.len() - 1, "all but the poisoned row land");
    assert!(!docs.contains_key("PROD-00001"));
    let letters: Vec<Value> = std::fs::read_to_string(&dl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["kind"] == "rejected")
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["view"], "units_by_product");
    assert_eq!(letters[0]["position"], "units_by_product/_doc/PROD-00001");
    assert!(
        letters[0]["reason"].as_str().unwrap().contains("units"),
        "{}",
        letters[0]
    );
    assert_eq!(letters[0]["payload"]["product_id"], "PROD-00001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_index_mapping_is_reported() {
    let server = Server::start();
    create_index(
        &server.url,
        "product_sales",
        json!({"units": {"type": "date"}}),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    common::generate(&tmp.path().join("data"), 1, 5_000);
    let o = runnel(
        &[
            "run",
            "--until-drained",
            "--source",
            &format!("files:{}", tmp.path().join("data").display()),
            "--sink",
            &format!("elasticsearch:{}", server.url),
        ],
        &[],
    );
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("index `product_sales` exists with a mapping that conflicts")
            && err.contains("field `units` is `date` there"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_30_seconds_loses_nothing() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let child = Command::new(BIN)
        .args([
            "run",
            "--rate",
            "1000",
            "--count",
            "40000",
            "--refresh",
            "0.2",
        ])
        .arg("--queries")
        .arg(common::root().join("queries"))
        .arg("--sink")
        .arg(format!("ndjson:{}", out.display()))
        .arg("--sink")
        .arg(format!("elasticsearch:{}", server.url))
        .args(["--es-timeout", "2"])
        .arg("--dead-letters")
        .arg(tmp.path().join("dl.ndjson"))
        .env("RUNNEL_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, c) = call(&server.url, Method::Get, "/product_sales/_count", None).await;
    assert!(
        c["count"].as_u64().unwrap_or(0) > 0,
        "nothing landed before the outage"
    );
    server.signal("-STOP");
    tokio::time::sleep(Duration::from_secs(30)).await;
    server.signal("-CONT");
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("retrying"),
        "the outage went unnoticed:\n{err}"
    );
    let (_, _, rejected, retries) = sink_counts(&err);
    assert_eq!(rejected, 0);
    assert!(retries > 0);
    for view in view_names() {
        let docs = documents(&server.url, &view).await;
        assert_eq!(es_rows(&docs), ndjson_rows(&out, &view), "index {view}");
    }
}

/// SIGTERM while Elasticsearch is down: the sinks get `--shutdown-timeout` seconds, then runnel
/// exits with an error that says nothing unacknowledged was committed, instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_during_an_outage_ends_within_the_shutdown_timeout() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .args(["run", "--rate", "1000", "--refresh", "0.2"])
        .args(["--shutdown-timeout", "2", "--es-timeout", "1"])
        .arg("--queries")
        .arg(common::root().join("queries"))
        .arg("--sink")
        .arg(format!("elasticsearch:{}", server.url))
        .arg("--dead-letters")
        .arg(tmp.path().join("dl.ndjson"))
        .env("RUNNEL_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.signal("-STOP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = std::time::Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let o = child.wait_with_output().unwrap();
    let took = t.elapsed();
    server.signal("-CONT");
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(took < Duration::from_secs(15), "took {took:?}:\n{err}");
    assert!(
        err.contains("not acknowledged") && err.contains("a restart delivers"),
        "{err}"
    );
}

/// Faults injected in front of the real server, in order, one per connection; then requests
/// pass through. Records every request head.
struct FaultProxy {
    addr: String,
    faults_served: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

const THROTTLED: &str = r#"{"error":{"root_cause":[{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=1024, max_coordinating_and_primary_bytes=0]"}],"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"},"status":429}"#;
const UNAVAILABLE: &str = r#"{"error":{"root_cause":[{"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/2/no master];"}],"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/2/no master];"},"status":503}"#;

/// A request rewritten to close its connection after the answer, so the proxy sees every
/// request on a connection of its own.
fn one_shot(head: &str, body_start: &[u8]) -> Vec<u8> {
    let mut fwd: Vec<u8> = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .filter(|l| !l.is_empty())
        .flat_map(|l| format!("{l}\r\n").into_bytes())
        .collect();
    fwd.extend_from_slice(b"connection: close\r\n\r\n");
    fwd.extend_from_slice(body_start);
    fwd
}

/// The rest of a request's body read from `conn`, the request sent upstream on a connection
/// of its own (HTTP/1.0 and close, so the answer is plain bytes up to EOF), and the answer's
/// body; `None` if any of it fails.
async fn through(
    conn: &mut tokio::net::TcpStream,
    mut buf: Vec<u8>,
    head: &str,
    head_end: usize,
    up: &str,
) -> Option<Vec<u8>> {
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut chunk = [0u8; 8192];
    while buf.len() < head_end + len {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut upstream = tokio::net::TcpStream::connect(up).await.ok()?;
    let fwd = one_shot(&head.replacen("HTTP/1.1", "HTTP/1.0", 1), &buf[head_end..]);
    upstream.write_all(&fwd).await.ok()?;
    let mut resp = Vec::new();
    upstream.read_to_end(&mut resp).await.ok()?;
    let p = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(resp.split_off(p + 4))
}

impl FaultProxy {
    async fn start(upstream: String, faults: Vec<Option<(u16, &'static str)>>) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let faults_served = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let up = upstream.trim_start_matches("http://").to_string();
        let (served, seen) = (faults_served.clone(), heads.clone());
        let faults = Arc::new(Mutex::new(faults.into_iter()));
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (up, served, seen, faults) =
                    (up.clone(), served.clone(), seen.clone(), faults.clone());
                tokio::spawn(async move {
                    // Read one request head (and its body) to record it and pick a fault.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let head_end = loop {
                        let Ok(n) = conn.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    seen.lock().unwrap().push(head.clone());
                    let is_bulk = head.contains("/_bulk");
                    let fault = if is_bulk {
                        faults.lock().unwrap().next()
                    } else {
                        None
                    };
                    match fault {
                        Some(Some((0, _))) => {
                            // The request goes through, but the answer says its first item
                            // was throttled (as a busy cluster answers): it must be retried.
                            served.fetch_add(1, Ordering::SeqCst);
                            let Some(resp) = through(&mut conn, buf, &head, head_end, &up).await
                            else {
                                return;
                            };
                            let mut v: Value = serde_json::from_slice(&resp).unwrap();
                            v["errors"] = json!(true);
                            let item = v["items"][0].as_object_mut().unwrap();
                            let op = item.values_mut().next().unwrap();
                            op["status"] = json!(429);
                            op["error"] = json!({"type": "es_rejected_execution_exception", "reason": "rejected execution of primary operation"});
                            let body = v.to_string();
                            let reply = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = conn.write_all(reply.as_bytes()).await;
                            let _ = conn.shutdown().await;
                        }
                        Some(Some((1, _))) => {
                            // The request goes through, but the connection breaks halfway
                            // through the answer (a node going down): whether it was applied
                            // is unknown to the client, which must send it again.
                            served.fetch_add(1, Ordering::SeqCst);
                            let Some(resp) = through(&mut conn, buf, &head, head_end, &up).await
                            else {
                                return;
                            };
                            let reply = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                resp.len()
                            );
                            let _ = conn.write_all(reply.as_bytes()).await;
                            let _ = conn.write_all(&resp[..resp.len() / 2]).await;
                            let _ = conn.shutdown().await;
                        }
                        Some(Some((status, body))) => {
                            served.fetch_add(1, Ordering::SeqCst);
                            let reply = format!(
                                "HTTP/1.1 {status} Err\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = conn.write_all(reply.as_bytes()).await;
                            let _ = conn.shutdown().await;
                        }
                        Some(None) => {
                            // Dropped connection: close without answering.
                            served.fetch_add(1, Ordering::SeqCst);
                            drop(conn);
                        }
                        None => {
                            // One request per connection, so every request is seen here.
                            let Ok(mut upstream) = tokio::net::TcpStream::connect(&up).await else {
                                return;
                            };
                            let fwd = one_shot(&head, &buf[head_end..]);
                            if upstream.write_all(&fwd).await.is_err() {
                                return;
                            }
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                        }
                    }
                });
            }
        });
        FaultProxy {
            addr,
            faults_served,
            heads,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_errors_and_dropped_connections_are_retried_with_credentials_kept_secret() {
    let server = Server::start();
    let faults = vec![
        Some((429, THROTTLED)),
        Some((429, THROTTLED)),
        Some((503, UNAVAILABLE)),
        None,
        Some((502, UNAVAILABLE)),
        Some((0, "first item throttled")),
        Some((1, "answer cut off")),
    ];
    let proxy = FaultProxy::start(server.url.clone(), faults).await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::generate(&data, 3, 20_000);
    let out = tmp.path().join("out");
    let started = Instant::now();
    let o = runnel(
        &[
            "run",
            "--until-drained",
            "--source",
            &format!("files:{}", data.display()),
            "--sink",
            &format!("ndjson:{}", out.display()),
            "--sink",
            &format!("elasticsearch:{}", proxy.addr),
            "--es-user",
            "runnel_writer",
            "--dead-letters",
            tmp.path().join("dl.ndjson").to_str().unwrap(),
        ],
        &[("RUNNEL_ES_PASSWORD", "s3cret-pw")],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(proxy.faults_served.load(Ordering::SeqCst), 7, "{err}");
    let (_, _, rejected, retries) = sink_counts(&err);
    assert_eq!(rejected, 0);
    assert!(retries >= 7, "{err}");
    assert!(
        err.contains("bulk response cut off"),
        "the answer cut off was not retried:\n{err}"
    );
    assert!(err.contains("HTTP 429"), "{err}");
    assert!(
        err.contains("item HTTP 429"),
        "the throttled item was not retried:\n{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    for view in view_names() {
        let docs = documents(&server.url, &view).await;
        assert_eq!(es_rows(&docs), ndjson_rows(&out, &view), "index {view}");
    }
    // Basic auth on every request; the password never printed.
    let heads = proxy.heads.lock().unwrap().clone();
    assert!(!heads.is_empty());
    let expected = "authorization: basic cnVubmVsX3dyaXRlcjpzM2NyZXQtcHc="; // runnel_writer:s3cret-pw
    for h in &heads {
        assert!(
            h.to_ascii_lowercase()
                .contains(&expected.to_ascii_lowercase()),
            "{h}"
        );
    }
    assert!(!err.contains("s3cret-pw"));

    // An API key instead: sent as `Authorization: ApiKey <key>`, never printed.
    let before = proxy.heads.lock().unwrap().len();
    let o = runnel(
        &[
            "run",
            "--until-drained",
            "--source",
            &format!("files:{}", data.display()),
            "--sink",
            &format!("elasticsearch:{}", proxy.addr),
            "--es-batch-docs",
            "50",
            "--es-batch-bytes",
            "20000",
            "--dead-letters",
            tmp.path().join("dl.ndjson").to_str().unwrap(),
        ],
        &[(
            "RUNNEL_ES_API_KEY",
            "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==",
        )],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let heads = proxy.heads.lock().unwrap()[before..].to_vec();
    assert!(!heads.is_empty());
    for h in &heads {
        assert!(
            h.contains("ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="),
            "{h}"
        );
    }
    assert!(!err.contains("VnVhQ2ZH"));
    // Bulk requests stay within the document and byte bounds.
    let (indexed, deleted, _, _) = sink_counts(&err);
    let bulks: Vec<usize> = heads
        .iter()
        .filter(|h| h.contains("/_bulk"))
        .map(|h| {
            h.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length")
        })
        .collect();
    assert!(
        bulks.len() as u64 >= (indexed + deleted).div_ceil(50),
        "{} bulk requests for {} operations",
        bulks.len(),
        indexed + deleted
    );
    assert!(bulks.iter().all(|&n| n <= 20_000 + 1024), "{bulks:?}");
}

/// A TLS endpoint in front of the real server, with a certificate from a private CA.
async fn tls_front(upstream: String, dir: &Path) -> (String, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use tokio_rustls::rustls;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "runnel test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let up = upstream.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (acceptor, up) = (acceptor.clone(), up.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&up).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (format!("https://localhost:{port}"), ca_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let (url, ca) = tls_front(server.url.clone(), tmp.path()).await;
    let data = tmp.path().join("data");
    common::generate(&data, 9, 5_000);
    let source = format!("files:{}", data.display());
    let sink = format!("elasticsearch:{url}");
    // Without the CA the certificate is refused (and the run gives up as told).
    let o = runnel(
        &[
            "run",
            "--until-drained",
            "--source",
            &source,
            "--sink",
            &sink,
            "--es-max-retry",
            "1",
        ],
        &[],
    );
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // With it, everything lands.
    let out = tmp.path().join("out");
    let o = runnel(
        &[
            "run",
            "--until-drained",
            "--source",
            &source,
            "--sink",
            &format!("ndjson:{}", out.display()),
            "--sink",
            &sink,
            "--es-ca-cert",
            ca.to_str().unwrap(),
        ],
        &[],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let docs = documents(&server.url, "product_sales").await;
    assert_eq!(es_rows(&docs), ndjson_rows(&out, "product_sales"));
}
