//! The docker stack, checked without Docker (it does not run on this machine): the compose
//! file names the services and runs commands the real CLI accepts; every Grafana data source
//! points at a view's index; every dashboard panel queries fields that view produces.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use runnel::engine::Engine;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// View name -> (index, output columns), from the engine's own plan of `queries/`.
async fn views() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let defs = common::load_views(&common::root().join("queries"));
    let engine = Engine::new(common::streams(), &defs)
        .await
        .expect("views plan");
    engine
        .views()
        .filter(|v| !v.hidden)
        .map(|v| {
            let cols = v.schema.fields().iter().map(|f| f.name().clone()).collect();
            (v.name.clone(), (v.index.clone(), cols))
        })
        .collect()
}

fn yaml(path: &str) -> Yaml {
    let p = common::root().join(path);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .remove(0)
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        Yaml::String(s) => s.split_whitespace().map(String::from).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn compose_runs_the_five_services_with_commands_the_cli_accepts() {
    let c = yaml("docker/docker-compose.yml");
    let services = &c["services"];
    for s in ["kafka", "elasticsearch", "grafana", "generator", "runnel"] {
        assert!(!services[s].is_badvalue(), "service {s} missing");
    }
    assert!(services["elasticsearch"]["image"]
        .as_str()
        .unwrap()
        .contains("elasticsearch:8."));
    assert_eq!(
        services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller"),
        "Kafka runs in KRaft mode"
    );
    for s in ["kafka", "elasticsearch", "grafana"] {
        assert!(
            !services[s]["healthcheck"].is_badvalue(),
            "{s} has no health check"
        );
    }
    assert_eq!(
        services["runnel"]["depends_on"]["elasticsearch"]["condition"].as_str(),
        Some("service_healthy")
    );
    // The image's Dockerfile exists and builds the runnel binary.
    let dockerfile = services["runnel"]["build"]["dockerfile"].as_str().unwrap();
    let text = std::fs::read_to_string(common::root().join(dockerfile)).unwrap();
    assert!(text.contains("cargo build --release"));
    assert!(text.matches("FROM ").count() >= 2, "multi-stage build");
    // Each runnel command parses with the real CLI (clap validates every flag and value
    // before it honours --help).
    for s in ["generator", "runnel"] {
        let args = strings(&services[s]["command"]);
        assert!(!args.is_empty(), "{s} has no command");
        let o = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{s}: `runnel {}` is rejected:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let run = strings(&services["runnel"]["command"]).join(" ");
    assert!(run.contains("--sink elasticsearch:http://elasticsearch:9200"));
    assert!(run.contains("--source kafka:kafka:9092"));
}

#[tokio::test]
async fn every_datasource_and_dashboard_panel_refers_to_a_real_view_and_its_fields() {
    let views = views().await;
    // Data sources: uid es-<view>, bound to that view's index, time field @timestamp.
    let ds = yaml("docker/grafana/provisioning/datasources/elasticsearch.yml");
    let mut uids = BTreeMap::new();
    for d in ds["datasources"].as_vec().expect("datasources") {
        let uid = d["uid"].as_str().unwrap();
        let view = uid.strip_prefix("es-").expect("uid es-<view>");
        let (index, _) = views
            .get(view)
            .unwrap_or_else(|| panic!("data source {uid}: no view {view}"));
        assert_eq!(
            d["jsonData"]["index"].as_str(),
            Some(index.as_str()),
            "{uid}"
        );
        assert_eq!(d["jsonData"]["timeField"].as_str(), Some("@timestamp"));
        assert_eq!(d["type"].as_str(), Some("elasticsearch"));
        uids.insert(uid.to_string(), view.to_string());
    }
    // Dashboards: one per view at least; every field a panel names exists in its view.
    let dir = common::root().join("docker/grafana/dashboards");
    let mut dashboards_for: BTreeSet<String> = BTreeSet::new();
    let mut panels_checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let d: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
        let uid = d["uid"].as_str().unwrap_or_default();
        if uid == "runnel-operations" {
            // Prometheus panels: see the_operations_dashboard_queries_metrics_runnel_exposes.
            continue;
        }
        if let Some(v) = uid.strip_prefix("runnel-") {
            dashboards_for.insert(v.to_string());
        }
        let mut panels: Vec<&Value> = d["panels"].as_array().into_iter().flatten().collect();
        while let Some(p) = panels.pop() {
            panels.extend(p["panels"].as_array().into_iter().flatten());
            let Some(targets) = p["targets"].as_array() else {
                continue;
            };
            let where_ = format!("{} panel `{}`", path.display(), p["title"]);
            let mut panel_view = None;
            for t in targets {
                let ds_uid = t["datasource"]["uid"]
                    .as_str()
                    .or(p["datasource"]["uid"].as_str())
                    .unwrap_or_else(|| panic!("{where_}: no data source"));
                let view = uids
                    .get(ds_uid)
                    .unwrap_or_else(|| panic!("{where_}: unknown data source {ds_uid}"));
                let cols = &views[view].1;
                let mut fields = Vec::new();
                for m in t["metrics"].as_array().into_iter().flatten() {
                    fields.extend(m["field"].as_str());
                }
                for b in t["bucketAggs"].as_array().into_iter().flatten() {
                    fields.extend(b["field"].as_str());
                }
                fields.extend(t["timeField"].as_str());
                let query = t["query"].as_str().unwrap_or_default();
                for part in query.split_whitespace() {
                    if let Some((f, _)) = part.split_once(':') {
                        fields.push(f.trim_start_matches(['(', '-', '+', '!']));
                    }
                }
                let alias = t["alias"].as_str().unwrap_or_default();
                for part in alias.split("{{").skip(1) {
                    if let Some(f) = part.strip_prefix("term ") {
                        fields.push(f.split("}}").next().unwrap_or_default().trim());
                    }
                }
                for f in fields {
                    assert!(
                        f == "@timestamp" || cols.contains(f),
                        "{where_}: field `{f}` is not produced by view {view} ({cols:?})"
                    );
                }
                panel_view = Some(view.clone());
            }
            // Field names in transformations and options refer to the same view's columns.
            let view = panel_view.expect("panel with targets");
            let cols = &views[&view].1;
            let mut named: Vec<String> = Vec::new();
            for tr in p["transformations"].as_array().into_iter().flatten() {
                let o = &tr["options"];
                for n in o["include"]["names"].as_array().into_iter().flatten() {
                    named.extend(n.as_str().map(String::from));
                }
                for s in o["sort"].as_array().into_iter().flatten() {
                    named.extend(s["field"].as_str().map(String::from));
                }
                for key in ["indexByName", "renameByName", "excludeByName"] {
                    if let Some(m) = o[key].as_object() {
                        named.extend(m.keys().cloned());
                    }
                }
            }
            named.extend(p["options"]["xField"].as_str().map(String::from));
            for s in p["options"]["sortBy"].as_array().into_iter().flatten() {
                named.extend(s["displayName"].as_str().map(String::from));
            }
            for f in named {
                assert!(
                    f == "@timestamp" || cols.contains(&f),
                    "{where_}: `{f}` is not a column of view {view}"
                );
            }
            panels_checked += 1;
        }
    }
    for v in views.keys() {
        assert!(dashboards_for.contains(v), "no dashboard for view {v}");
        assert!(uids.values().any(|x| x == v), "no data source for view {v}");
    }
    assert!(panels_checked >= views.len());
}

/// The original system's panels, by view and panel type: site visits by gender over time,
/// average price by category, sentiment share (pie), engagement segmentation (bar), low stock
/// per category (bar), and the per-customer interactions table.
#[test]
fn the_original_systems_panels_are_there() {
    let dir = common::root().join("docker/grafana/dashboards");
    let mut found: BTreeSet<(String, String)> = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for p in d["panels"].as_array().into_iter().flatten() {
            let uid = p["datasource"]["uid"].as_str().unwrap_or_default();
            let view = uid.trim_start_matches("es-").to_string();
            found.insert((view, p["type"].as_str().unwrap_or_default().to_string()));
        }
    }
    for (view, kind) in [
        ("customer_logins", "timeseries"),
        ("category_prices", "barchart"),
        ("review_sentiment", "piechart"),
        ("retention_segments", "barchart"),
        ("low_stock", "barchart"),
        ("customer_interactions", "table"),
    ] {
        assert!(
            found.contains(&(view.to_string(), kind.to_string())),
            "no {kind} panel for {view}"
        );
    }
}

/// The operations dashboard reads Prometheus, which scrapes runnel at the port its compose
/// command serves metrics on; every metric a panel queries is one the real binary exposes
/// (scraped here from a run against a Kafka-protocol broker, with checkpoints on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_dashboard_queries_metrics_runnel_exposes() {
    let compose = yaml("docker/docker-compose.yml");
    let run = strings(&compose["services"]["runnel"]["command"]);
    let at = run
        .iter()
        .position(|a| a == "--metrics")
        .expect("runnel serves metrics");
    let port = run[at + 1].rsplit(':').next().unwrap().to_string();
    let prom = yaml("docker/prometheus/prometheus.yml");
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    let sd = &job["dns_sd_configs"][0];
    assert_eq!(strings(&sd["names"]), vec!["runnel".to_string()]);
    assert_eq!(sd["port"].as_i64().map(|p| p.to_string()), Some(port));
    assert!(!compose["services"]["prometheus"].is_badvalue());
    let ds = yaml("docker/grafana/provisioning/datasources/prometheus.yml");
    let ds = &ds["datasources"][0];
    assert_eq!(ds["url"].as_str(), Some("http://prometheus:9090"));
    let uid = ds["uid"].as_str().unwrap().to_string();

    let path = common::root().join("docker/grafana/dashboards/operations.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"].as_str(), Some(uid.as_str()));
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("runnel_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                names.insert(name);
            }
        }
    }
    assert!(names.len() >= 12, "{names:?}");

    let (_broker, bootstrap) = common::kafka_cluster(1, 2);
    common::produce_generated(&bootstrap, 1, 5000).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .current_dir(common::root())
        .args(["run", "--source", &format!("kafka:{bootstrap}")])
        .args(["--metrics", "127.0.0.1:0", "--checkpoint-every", "0.2"])
        .args(["--refresh", "0.2", "--checkpoint"])
        .arg(tmp.path().join("ckpt"))
        .arg("--sink")
        .arg(format!("ndjson:{}", tmp.path().join("out").display()))
        .arg("--dead-letters")
        .arg(tmp.path().join("dl.ndjson"))
        .env_remove("RUNNEL_LOG")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = common::metrics_addr(&mut child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let missing = loop {
        let m = common::http_get(&addr, "/metrics");
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| {
                !m.lines().any(|l| {
                    l.strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
                })
            })
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(
        missing.is_empty(),
        "the operations dashboard queries metrics runnel does not expose: {missing:?}"
    );
}
