//! The binary, driven as a user drives it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn runnel() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runnel"));
    c.current_dir(common::root());
    c.env_remove("RUNNEL_LOG");
    c
}

fn output(c: &mut Command) -> (bool, String) {
    let o = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn help_is_complete() {
    let (ok, text) = output(runnel().arg("--help"));
    assert!(ok);
    for cmd in ["run", "generate", "check", "repl", "broker"] {
        assert!(text.contains(cmd), "{text}");
    }
    let (ok, text) = output(runnel().args(["run", "--help"]));
    assert!(ok);
    for flag in [
        "--queries",
        "--source",
        "--sink",
        "--until-drained",
        "--dead-letters",
        "--batch-size",
        "--checkpoint",
        "--checkpoint-every",
        "--metrics",
    ] {
        assert!(text.contains(flag), "run --help lacks {flag}: {text}");
    }
    let (ok, text) = output(runnel().args(["repl", "--help"]));
    assert!(
        ok && text.contains("--command") && text.contains("--repl-window"),
        "{text}"
    );
    let (ok, text) = output(runnel().args(["generate", "--help"]));
    assert!(ok && text.contains("--seed") && text.contains("--rate") && text.contains("--count"));
}

#[test]
fn check_accepts_the_shipped_views() {
    let (ok, text) = output(runnel().arg("check"));
    assert!(ok, "{text}");
    assert!(
        text.contains("views OK") && text.contains("low_stock"),
        "{text}"
    );
}

#[test]
fn check_reports_every_problem_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "syntax.sql",
        "-- a comment\nSELECT product_id,\n  count(* AS n\nFROM transactions GROUP BY product_id\n",
    );
    write(
        "unknown_col.sql",
        "SELECT product_id, sum(quantty) AS q\nFROM transactions GROUP BY product_id\n",
    );
    write("stream_join.sql", "SELECT t.product_id, count(*) AS n FROM transactions t\nJOIN product_views v ON t.product_id = v.product_id GROUP BY t.product_id\n");
    write(
        "raw_topn.sql",
        "SELECT * FROM transactions ORDER BY total_amount DESC LIMIT 5\n",
    );
    write("bad_option.sql", "-- @mdoe: append\nSELECT 1 AS x\n");
    write("append_nowindow.sql", "-- @mode: append\nSELECT product_id, count(*) AS n FROM transactions GROUP BY product_id\n");
    write(
        "fine.sql",
        "SELECT level, count(*) AS n FROM system_logs GROUP BY level\n",
    );
    let (ok, text) = output(runnel().args(["check", "--queries"]).arg(dir.path()));
    assert!(!ok, "{text}");
    let p = |f: &str| dir.path().join(f).display().to_string();
    assert!(text.contains(&format!("{}:3:", p("syntax.sql"))), "{text}");
    assert!(
        text.contains(&p("unknown_col.sql")) && text.contains("quantty"),
        "{text}"
    );
    assert!(
        text.contains(&p("stream_join.sql")) && text.contains("needs unbounded state"),
        "{text}"
    );
    assert!(
        text.contains(&p("raw_topn.sql")) && text.contains("aggregate first"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}:1:", p("bad_option.sql"))) && text.contains("@mdoe"),
        "{text}"
    );
    assert!(
        text.contains(&p("append_nowindow.sql")) && text.contains("needs a window"),
        "{text}"
    );
    assert!(!text.contains("fine.sql"), "{text}");
    assert!(text.contains("6 problem(s)"), "{text}");
    // The same views are refused at start, with the reason.
    let (ok, text) = output(
        runnel()
            .args([
                "run",
                "--until-drained",
                "--count",
                "10",
                "--sink",
                "ndjson:/tmp/unused",
                "--queries",
            ])
            .arg(dir.path()),
    );
    assert!(!ok && text.contains("runnel check"), "{text}");
}

#[test]
fn replay_from_files_sets_bad_and_late_records_aside() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (ok, text) = output(
        runnel()
            .args(["generate", "--count", "20000", "--seed", "3", "--out"])
            .arg(data.path()),
    );
    assert!(ok, "{text}");
    // Garbage, and one event an hour behind everything else (late for the windowed views).
    let tx = data.path().join("transaction_data.ndjson");
    let mut body = std::fs::read_to_string(&tx).unwrap();
    body.push_str("{\"transaction_id\": 12\n");
    body.push_str("{\"transaction_id\":\"X\",\"customer_id\":\"CUST-000001\",\"product_id\":\"PROD-00001\",\"quantity\":1,\"price\":1.0,\"total_amount\":1.0,\"payment_method\":\"paypal\",\"status\":\"completed\",\"transaction_time\":\"2025-12-31T00:00:00.000Z\"}\n");
    std::fs::write(&tx, body).unwrap();
    let dead = out.path().join("dead.ndjson");
    let (ok, text) = output(
        runnel()
            .args(["run", "--until-drained", "--batch-size", "500", "--source"])
            .arg(format!("files:{}", data.path().display()))
            .arg("--sink")
            .arg(format!("ndjson:{}", out.path().display()))
            .arg("--dead-letters")
            .arg(&dead),
    );
    assert!(ok, "{text}");
    assert!(text.contains("1 late, 1 malformed"), "{text}");
    let lines = std::fs::read_to_string(&dead).unwrap();
    let rows: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{lines}");
    let malformed = rows.iter().find(|r| r["kind"] == "malformed").unwrap();
    let n = body_lines(&tx) - 1;
    assert!(
        malformed["position"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{n}")),
        "{malformed}"
    );
    let late = rows.iter().find(|r| r["kind"] == "late").unwrap();
    assert_eq!(late["payload"]["transaction_id"], "X");
    for view in [
        "sales_velocity",
        "low_stock",
        "top_sellers",
        "review_sentiment",
        "system_health",
    ] {
        let p = out.path().join(format!("{view}.ndjson"));
        assert!(
            std::fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false),
            "{view} has no output"
        );
    }
}

/// How many views ship in queries/.
fn shipped_views() -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "sql"))
        .count()
}

fn body_lines(p: &Path) -> usize {
    std::fs::read_to_string(p).unwrap().lines().count()
}

#[test]
fn generate_is_deterministic_and_stdout_works() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [&a, &b] {
        let (ok, text) = output(
            runnel()
                .args(["generate", "--count", "5000", "--seed", "9", "--out"])
                .arg(d.path()),
        );
        assert!(ok, "{text}");
    }
    for t in [
        "customer_data",
        "product_data",
        "transaction_data",
        "product_view_data",
        "user_interaction_data",
        "system_log_data",
    ] {
        let f = format!("{t}.ndjson");
        assert_eq!(
            std::fs::read(a.path().join(&f)).unwrap(),
            std::fs::read(b.path().join(&f)).unwrap(),
            "{t}"
        );
    }
    let o = runnel()
        .args(["generate", "--count", "700", "--stdout"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().count(), 700);
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(v["topic"].is_string() && v["value"].is_object());
}

#[test]
fn default_run_shows_views_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let child = runnel()
        .args([
            "run",
            "--rate",
            "5000",
            "--refresh",
            "0.3",
            "--dead-letters",
        ])
        .arg(dir.path().join("dl.ndjson"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for v in ["gender_engagement", "customer_interactions", "events/s"] {
        assert!(text.contains(v), "console lacks {v}:\n{text}");
    }
}

#[test]
fn a_config_file_supplies_options_below_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (ok, text) = output(
        runnel()
            .args(["generate", "--count", "3000", "--out"])
            .arg(&data),
    );
    assert!(ok, "{text}");
    let out = tmp.path().join("out");
    let cfg = tmp.path().join("runnel.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nsource = \"files:{}\"\nsink = [\"ndjson:{}\"]\nuntil-drained = true\nbatch-size = 500\n",
            data.display(),
            out.display()
        ),
    )
    .unwrap();
    let (ok, text) = output(runnel().arg("--config").arg(&cfg).arg("run"));
    assert!(ok, "{text}");
    assert!(out.join("product_sales.ndjson").exists(), "{text}");
    // A flag beats the file: a second output directory.
    let out2 = tmp.path().join("out2");
    let (ok, text) = output(
        runnel()
            .env("RUNNEL_CONFIG", &cfg)
            .arg("run")
            .arg("--sink")
            .arg(format!("ndjson:{}", out2.display())),
    );
    assert!(ok, "{text}");
    assert!(out2.join("product_sales.ndjson").exists(), "{text}");
    // A misspelt key is an error naming the file and the key.
    std::fs::write(&cfg, "[run]\nsorce = \"files:x\"\n").unwrap();
    let (ok, text) = output(runnel().arg("--config").arg(&cfg));
    assert!(!ok);
    assert!(
        text.contains("runnel.toml") && text.contains("sorce"),
        "{text}"
    );
}

#[test]
fn metrics_and_health_endpoints() {
    use common::{http_get, metrics_addr};
    let tmp = tempfile::tempdir().unwrap();
    let mut child = runnel()
        .args([
            "run",
            "--rate",
            "2000",
            "--metrics",
            "127.0.0.1:0",
            "--sink",
        ])
        .arg(format!("ndjson:{}", tmp.path().join("out").display()))
        .arg("--dead-letters")
        .arg(tmp.path().join("dl.ndjson"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = metrics_addr(&mut child);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let m = http_get(&addr, "/metrics");
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(m.contains("# TYPE runnel_events_total counter"), "{m}");
    let value = |prefix: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {m}"))
    };
    assert!(value("runnel_events_total{stream=\"transactions\"}") > 0.0);
    assert!(value("runnel_view_rows{view=\"product_sales\"}") > 0.0);
    assert!(value("runnel_view_busy_seconds_total{view=\"product_sales\"}") > 0.0);
    assert_eq!(value("runnel_up"), 1.0);
    // Latency histograms: every round is timed, every flushed round has an end-to-end time,
    // and the cumulative buckets end at the count.
    for h in ["runnel_batch_seconds", "runnel_end_to_end_seconds"] {
        let count = value(&format!("{h}_count "));
        assert!(count > 0.0, "{h}: {m}");
        assert_eq!(value(&format!("{h}_bucket{{le=\"+Inf\"}}")), count, "{h}");
        assert!(value(&format!("{h}_bucket{{le=\"30\"}}")) <= count, "{h}");
        assert!(value(&format!("{h}_sum ")) > 0.0, "{h}");
    }
    assert_eq!(value("runnel_sink_retries_total{sink=\"ndjson\"}"), 0.0);
    let h = http_get(&addr, "/health");
    assert!(
        h.starts_with("HTTP/1.1 200") && h.contains("\"status\":\"ok\""),
        "{h}"
    );
    assert!(http_get(&addr, "/nope").starts_with("HTTP/1.1 404"));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

#[test]
fn json_logs_and_sigterm_stops_cleanly_with_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::generate(&data, 4, 200_000);
    let ckpt = tmp.path().join("ckpt");
    let child = runnel()
        .args(["run", "--batch-size", "500", "--checkpoint-every", "60"])
        .arg("--source")
        .arg(format!("files:{}", data.display()))
        .arg("--sink")
        .arg(format!("ndjson:{}", tmp.path().join("out").display()))
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--dead-letters")
        .arg(tmp.path().join("dl.ndjson"))
        .env("RUNNEL_LOG", "info")
        .env("RUNNEL_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SIGTERM (what `docker stop` sends): drain, flush, checkpoint, exit 0.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t = Instant::now();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20), "slow stop");
    // Mid-replay (not drained) there is a checkpoint, written at the stop.
    assert!(
        std::fs::read_dir(&ckpt)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("ckpt-")),
        "{err}"
    );
    let logs: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        logs.iter().any(|l| l["level"] == "INFO"
            && l["fields"]["message"] == "running"
            && l["fields"]["views"] == shipped_views()),
        "{err}"
    );
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "checkpoint" && l["fields"]["epoch"] == 1),
        "{err}"
    );
}

/// `generate --kafka` at an address where nothing listens stops with a message naming the
/// address (before: topic creation and every message timed out, a minute with no answer).
#[test]
fn generate_to_an_unreachable_broker_is_a_clear_error() {
    let (ok, text) = output(runnel().args([
        "generate",
        "--kafka",
        "127.0.0.1:1",
        "--count",
        "10",
        "--kafka-option",
        "socket.connection.setup.timeout.ms=1000",
    ]));
    assert!(!ok, "{text}");
    assert!(text.contains("cannot reach Kafka at 127.0.0.1:1"), "{text}");
}

/// `generate --kafka` into a running broker whose topics exist: every event lands, keyed into
/// the topics' partitions, and the command reports how many it produced.
#[test]
fn generate_into_a_broker_produces_every_event() {
    let (_broker, bootstrap) = common::kafka_cluster(1, 3);
    let (ok, text) = output(runnel().args(["generate", "--kafka", &bootstrap, "--count", "2000"]));
    assert!(ok, "{text}");
    assert!(text.contains("2000 events produced"), "{text}");
    assert_eq!(common::messages_in_topics(&bootstrap, 3), 2000);
}

/// `runnel broker` starts a local Kafka-protocol broker and prints its address; `generate
/// --kafka` fills it; a topic that also holds garbage is consumed to its end, the garbage set
/// aside with its partition and offset and the views written.
#[test]
fn broker_generate_and_run_with_garbage_in_a_topic() {
    use std::io::BufRead;
    let mut broker = runnel()
        .args(["broker", "--brokers", "2", "--partitions", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(broker.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first.trim().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{first}");
    let (ok, text) = output(runnel().args(["generate", "--kafka", &addr, "--count", "3000"]));
    assert!(ok, "{text}");
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .unwrap();
    for garbage in ["{\"transaction_id\": 12", "not json at all"] {
        producer
            .send(rdkafka::producer::BaseRecord::<(), _>::to("transaction_data").payload(garbage))
            .unwrap();
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dead = out.path().join("dead.ndjson");
    let (ok, text) = output(
        runnel()
            .args(["run", "--until-drained", "--source"])
            .arg(format!("kafka:{addr}"))
            .arg("--sink")
            .arg(format!("ndjson:{}", out.path().display()))
            .arg("--dead-letters")
            .arg(&dead),
    );
    let _ = broker.kill();
    let _ = broker.wait();
    assert!(ok, "{text}");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let malformed: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r["kind"] == "malformed").collect();
    assert_eq!(malformed.len(), 2, "{rows:?}");
    for r in malformed {
        // topic/partition@offset
        let pos = r["position"].as_str().unwrap();
        let at = pos.strip_prefix("transaction_data/").unwrap_or_default();
        assert!(
            at.split_once('@')
                .is_some_and(|(p, o)| p.parse::<i32>().is_ok() && o.parse::<i64>().is_ok()),
            "{r}"
        );
    }
    for view in ["sales_velocity", "top_sellers", "system_health"] {
        let p = out.path().join(format!("{view}.ndjson"));
        assert!(
            std::fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false),
            "{view} has no output"
        );
    }
}
