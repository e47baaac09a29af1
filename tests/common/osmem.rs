//! osmem-server, a real Elasticsearch-API server from PyPI (`pip install osmem-server`),
//! started per test, and the requests the tests read it with.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::transport::Transport;
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::{json, Map, Value};

/// A running osmem-server, stopped on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
}

pub fn osmem_binary() -> PathBuf {
    let find = || {
        Command::new("python3")
            .args([
                "-c",
                "import osmem_server, os; print(os.path.join(os.path.dirname(osmem_server.__file__), 'bin', 'osmem-server'))",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    };
    if let Some(p) = find() {
        return p;
    }
    let st = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "osmem-server"])
        .status()
        .expect("python3 is needed to install osmem-server");
    assert!(st.success(), "pip install osmem-server failed");
    find().expect("osmem-server installed but not found")
}

impl Server {
    pub fn start() -> Server {
        let mut child = Command::new(osmem_binary())
            .args([
                "-addr",
                "127.0.0.1:0",
                "-no-stdin-watch",
                "-parent-pid",
                &std::process::id().to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("osmem-server starts");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        BufReader::new(out).read_line(&mut line).expect("banner");
        let v: Value = serde_json::from_str(&line).expect("osmem prints its address as JSON");
        let url = v["url"].as_str().expect("url").to_string();
        Server { child, url }
    }
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn call(url: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = Elasticsearch::new(Transport::single_node(url).expect("transport"));
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let r = client
        .send::<String, ()>(
            method,
            path,
            headers,
            None,
            body.map(|b| b.to_string()),
            None,
        )
        .await
        .expect("request");
    let status = r.status_code().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Creates an index the way another tool might have, with these mapped properties.
pub async fn create_index(url: &str, index: &str, properties: Value) {
    let (st, v) = call(
        url,
        Method::Put,
        &format!("/{index}"),
        Some(json!({"mappings": {"properties": properties}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
}

/// Every document of an index by id, `@timestamp` checked and removed.
pub async fn documents(url: &str, index: &str) -> BTreeMap<String, Map<String, Value>> {
    call(url, Method::Post, &format!("/{index}/_refresh"), None).await;
    let (status, v) = call(
        url,
        Method::Post,
        &format!("/{index}/_search"),
        Some(json!({"size": 10000})),
    )
    .await;
    assert_eq!(status, 200, "search {index}: {v}");
    let hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
    let (_, count) = call(url, Method::Get, &format!("/{index}/_count"), None).await;
    assert_eq!(count["count"].as_u64(), Some(hits.len() as u64));
    hits.into_iter()
        .map(|h| {
            let mut src = h["_source"].as_object().cloned().expect("source");
            let ts = src
                .remove("@timestamp")
                .expect("every document has @timestamp");
            assert!(ts.as_str().is_some_and(|t| t.ends_with('Z')), "{ts}");
            (h["_id"].as_str().expect("id").to_string(), src)
        })
        .collect()
}
