//! `elasticsearch:URL`: each view's changelog as idempotent bulk operations, one index per view.
//!
//! - **Document ids** come from the view's key columns (group columns, window start), so a
//!   re-delivered change overwrites its document and a row leaving a view deletes it.
//! - **Indices** are created before the first write with a mapping derived from the view's Arrow
//!   schema (timestamps `date`, strings `keyword` or `text`, numbers as their types) plus
//!   `@timestamp`; an existing index whose mapping disagrees is reported, never written over.
//! - **Batching**: changes are coalesced per document (the latest state wins) and sent in bulk
//!   requests bounded by documents and bytes, at most `max_in_flight` at a time; `write` sends
//!   when a batch is full, so a slow cluster slows the pipeline instead of growing memory.
//! - **Failures**: connection errors, timeouts, 429 and 5xx are retried with exponential backoff
//!   and full jitter, and so are items a bulk response marks 429/5xx. Items rejected for good
//!   (mapping errors) go to the dead-letter file with the server's reason. `flush` returns only
//!   when every document is accepted or dead-lettered: offsets are committed after that.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::datatypes::{DataType, Schema};
use async_trait::async_trait;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use elasticsearch::{BulkParts, Elasticsearch};
use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::{rows_to_json, Sink, TIMESTAMP_FORMAT};
use crate::engine::{OutputMode, ViewInfo, ViewOutput};
use crate::error::{Error, Result};

/// How to reach the cluster and how to batch.
#[derive(Clone)]
pub struct EsOptions {
    pub url: String,
    pub auth: EsAuth,
    /// PEM file with the CA that signed the cluster's certificate.
    pub ca_cert: Option<PathBuf>,
    pub batch_docs: usize,
    pub batch_bytes: usize,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    /// Give up (and fail the run) after retrying one request this long. `None`: never give up.
    pub max_retry: Option<Duration>,
    /// First backoff; doubles per attempt up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Where rejected documents go (JSON lines, appended).
    pub dead_letters: PathBuf,
}

impl EsOptions {
    pub fn new(url: &str, dead_letters: &Path) -> Self {
        EsOptions {
            url: url.to_string(),
            auth: EsAuth::None,
            ca_cert: None,
            batch_docs: 1000,
            batch_bytes: 5 << 20,
            max_in_flight: 2,
            request_timeout: Duration::from_secs(30),
            max_retry: None,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            dead_letters: dead_letters.to_path_buf(),
        }
    }
}

/// Credentials. `Debug` never shows a secret.
#[derive(Clone, Default)]
pub enum EsAuth {
    #[default]
    None,
    Basic {
        user: String,
        password: String,
    },
    /// An API key as Elasticsearch prints it: base64 of `id:key`, or `id:key`.
    ApiKey(String),
}

impl std::fmt::Debug for EsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EsAuth::None => write!(f, "none"),
            EsAuth::Basic { user, .. } => write!(f, "basic({user}, password ***)"),
            EsAuth::ApiKey(_) => write!(f, "api key ***"),
        }
    }
}

/// A URL with any `user:password@` replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// One document's pending state: the latest wins.
enum Op {
    Index(String),
    Delete,
}

struct Pending {
    view: String,
    op: Op,
}

/// A bulk operation: the (index, document id) it is for, and what to do there.
type Operation = ((String, String), Pending);

/// A document the cluster refused for good.
struct Rejection {
    view: String,
    index: String,
    id: String,
    reason: String,
    /// The document's JSON (empty for a delete).
    doc: String,
}

pub struct ElasticsearchSink {
    name: String,
    client: Elasticsearch,
    opts: EsOptions,
    /// Index -> created/checked.
    ready: HashSet<String>,
    /// (index, id) -> latest operation.
    pending: BTreeMap<(String, String), Pending>,
    pending_bytes: usize,
    /// Documents rejected for good (written to the dead-letter file).
    pub rejected: u64,
    /// Documents accepted (indexed or deleted) and retried requests or items.
    indexed: std::sync::atomic::AtomicU64,
    deleted: std::sync::atomic::AtomicU64,
    retries: std::sync::atomic::AtomicU64,
}

impl ElasticsearchSink {
    pub fn new(opts: EsOptions) -> Result<Self> {
        let name = format!("elasticsearch {}", redact_url(&opts.url));
        let err = |m: String| Error::Sink {
            sink: name.clone(),
            message: m,
        };
        let mut url =
            elasticsearch::http::Url::parse(&opts.url).map_err(|e| err(format!("bad URL: {e}")))?;
        let mut auth = opts.auth.clone();
        if !url.username().is_empty() {
            auth = EsAuth::Basic {
                user: url.username().to_string(),
                password: url.password().unwrap_or_default().to_string(),
            };
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(opts.request_timeout)
            .disable_proxy();
        builder = match auth {
            EsAuth::None => builder,
            EsAuth::Basic { user, password } => builder.auth(Credentials::Basic(user, password)),
            EsAuth::ApiKey(k) => match k.split_once(':') {
                Some((id, key)) => builder.auth(Credentials::ApiKey(id.into(), key.into())),
                None => builder.auth(Credentials::EncodedApiKey(k)),
            },
        };
        if let Some(ca) = &opts.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| Error::io(ca, e))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| err(format!("{}: not a PEM certificate: {e}", ca.display())))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder
            .build()
            .map_err(|e| err(format!("cannot build the HTTP client: {e}")))?;
        Ok(ElasticsearchSink {
            name,
            client: Elasticsearch::new(transport),
            opts,
            ready: Default::default(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            rejected: 0,
            indexed: Default::default(),
            deleted: Default::default(),
            retries: Default::default(),
        })
    }

    fn err(&self, message: String) -> Error {
        Error::Sink {
            sink: self.name.clone(),
            message,
        }
    }

    /// Creates the view's index with its mapping, or checks an existing one agrees.
    async fn ensure_index(&mut self, view: &ViewInfo) -> Result<()> {
        if self.ready.contains(&view.index) {
            return Ok(());
        }
        let mapping = mapping_for(&view.schema, &view.text_fields);
        let body = json!({ "mappings": mapping }).to_string();
        let path = format!("/{}", view.index);
        let (status, resp) = self.request(Method::Put, &path, Some(body)).await?;
        if status >= 300 {
            let kind = resp["error"]["type"].as_str().unwrap_or_default();
            if kind != "resource_already_exists_exception" {
                return Err(self.err(format!(
                    "cannot create index `{}` for view {}: HTTP {status}: {}",
                    view.index,
                    view.name,
                    error_reason(&resp)
                )));
            }
            let (status, existing) = self
                .request(Method::Get, &format!("/{}/_mapping", view.index), None)
                .await?;
            if status >= 300 {
                return Err(self.err(format!(
                    "cannot read the mapping of index `{}`: HTTP {status}: {}",
                    view.index,
                    error_reason(&existing)
                )));
            }
            let props = existing
                .as_object()
                .and_then(|m| m.values().next())
                .map(|i| i["mappings"]["properties"].clone())
                .unwrap_or(Value::Null);
            let (conflicts, narrower) = mapping_conflicts(&mapping["properties"], &props);
            for n in &narrower {
                tracing::warn!(index = %view.index, view = %view.name, "existing mapping: {n}; documents it cannot hold go to the dead letters");
            }
            if !conflicts.is_empty() {
                return Err(self.err(format!(
                    "index `{}` exists with a mapping that conflicts with view {} ({}): {}. \
                     Delete the index, or give the view another one with `-- @index: NAME`.",
                    view.index,
                    view.name,
                    view.path.display(),
                    conflicts.join("; ")
                )));
            }
        }
        tracing::info!(index = %view.index, view = %view.name, "index ready");
        self.ready.insert(view.index.clone());
        Ok(())
    }

    /// One JSON request, retried like bulk requests on connection errors, 429 and 5xx.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Value)> {
        let mut attempt = 0u32;
        let started = std::time::Instant::now();
        loop {
            let mut headers = HeaderMap::new();
            headers.insert(
                elasticsearch::http::headers::CONTENT_TYPE,
                elasticsearch::http::headers::HeaderValue::from_static("application/json"),
            );
            let sent = self
                .client
                .send::<String, ()>(method, path, headers, None, body.clone(), None)
                .await;
            let problem = match sent {
                Ok(r) => {
                    let status = r.status_code().as_u16();
                    if status == 429 || status >= 500 {
                        format!("HTTP {status}")
                    } else {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        return Ok((status, v));
                    }
                }
                Err(e) => error_chain(&e),
            };
            attempt += 1;
            self.backoff(attempt, started, &problem, path).await?;
        }
    }

    /// Sleeps before retry `attempt`, or fails once `max_retry` has passed.
    async fn backoff(
        &self,
        attempt: u32,
        started: std::time::Instant,
        problem: &str,
        what: &str,
    ) -> Result<()> {
        if let Some(max) = self.opts.max_retry {
            if started.elapsed() >= max {
                return Err(self.err(format!(
                    "{what}: still failing after {:.0}s and {attempt} attempts: {problem}",
                    started.elapsed().as_secs_f64()
                )));
            }
        }
        let cap = self
            .opts
            .min_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.opts.max_backoff);
        let wait = cap.mul_f64(rand::rng().random_range(0.5..=1.0));
        self.retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            sink = %self.name,
            attempt,
            retry_in_ms = wait.as_millis() as u64,
            "{what}: {problem}; retrying (results are held, offsets not committed)"
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Sends every pending operation; returns when all are accepted or dead-lettered.
    async fn send_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut batches: Vec<Vec<Operation>> = Vec::new();
        let mut cur = Vec::new();
        let mut cur_bytes = 0usize;
        for (k, p) in pending {
            let size = k.0.len() + k.1.len() + 48 + op_len(&p.op);
            if !cur.is_empty()
                && (cur.len() >= self.opts.batch_docs || cur_bytes + size > self.opts.batch_bytes)
            {
                batches.push(std::mem::take(&mut cur));
                cur_bytes = 0;
            }
            cur_bytes += size;
            cur.push((k, p));
        }
        if !cur.is_empty() {
            batches.push(cur);
        }
        let this = &*self;
        let outcomes: Vec<Result<Vec<Rejection>>> = futures::stream::iter(batches)
            .map(|b| this.send_batch(b))
            .buffer_unordered(self.opts.max_in_flight.max(1))
            .collect()
            .await;
        let mut rejected = Vec::new();
        for o in outcomes {
            rejected.extend(o?);
        }
        if !rejected.is_empty() {
            self.dead_letter(&rejected)?;
        }
        Ok(())
    }

    /// One bulk request, with item-level retries.
    async fn send_batch(&self, mut batch: Vec<Operation>) -> Result<Vec<Rejection>> {
        let mut rejected = Vec::new();
        let started = std::time::Instant::now();
        let mut attempt = 0u32;
        while !batch.is_empty() {
            let mut body = Vec::with_capacity(batch.len() * 256);
            for ((index, id), p) in &batch {
                let action = match p.op {
                    Op::Index(_) => "index",
                    Op::Delete => "delete",
                };
                let _ = writeln!(
                    body,
                    "{}",
                    json!({ action: { "_index": index, "_id": id } })
                );
                if let Op::Index(doc) = &p.op {
                    body.extend_from_slice(doc.as_bytes());
                    body.push(b'\n');
                }
            }
            let sent = self
                .client
                .bulk(BulkParts::None)
                .body(vec![body])
                .send()
                .await;
            let problem = match sent {
                Err(e) => error_chain(&e),
                Ok(r) => {
                    let status = r.status_code().as_u16();
                    if status == 429 || status >= 500 {
                        format!("bulk: HTTP {status}")
                    } else if status >= 300 {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        return Err(self.err(format!(
                            "bulk request refused: HTTP {status}: {}",
                            error_reason(&v)
                        )));
                    } else {
                        // The connection can break while the response comes (a node going
                        // down): whether the request was applied is unknown, and the upserts
                        // are idempotent, so it is sent again. A body that arrives whole but
                        // is not a bulk response is an error.
                        match r.bytes().await {
                            Err(e) => format!("bulk response cut off: {}", error_chain(&e)),
                            Ok(body) => {
                                let (retry, last) = self.settle(&body, batch, &mut rejected)?;
                                batch = retry;
                                if batch.is_empty() {
                                    break;
                                }
                                last
                            }
                        }
                    }
                }
            };
            attempt += 1;
            self.backoff(attempt, started, &problem, "bulk").await?;
        }
        Ok(rejected)
    }

    /// Reads a bulk response to `batch`: counts what landed, adds what the cluster refused
    /// for good to `rejected`, and returns the operations to retry with the last reason.
    fn settle(
        &self,
        body: &[u8],
        batch: Vec<Operation>,
        rejected: &mut Vec<Rejection>,
    ) -> Result<(Vec<Operation>, String)> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| self.err(format!("unreadable bulk response: {e}")))?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() != batch.len() {
            return Err(self.err(format!(
                "bulk response has {} items for {} operations",
                items.len(),
                batch.len()
            )));
        }
        let mut retry = Vec::new();
        let mut last = String::new();
        for (item, (key, p)) in items.iter().zip(batch) {
            let result = item
                .as_object()
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or(Value::Null);
            let st = result["status"].as_u64().unwrap_or(0);
            let is_delete = matches!(p.op, Op::Delete);
            if (200..300).contains(&st) || (is_delete && st == 404) {
                let n = if is_delete {
                    &self.deleted
                } else {
                    &self.indexed
                };
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            if st == 429 || st >= 500 || st == 0 {
                last = format!("item HTTP {st}: {}", error_reason(&result));
                retry.push((key, p));
                continue;
            }
            let reason = format!("HTTP {st}: {}", error_reason(&result));
            let doc = match p.op {
                Op::Index(d) => d,
                Op::Delete => String::new(),
            };
            rejected.push(Rejection {
                view: p.view,
                index: key.0,
                id: key.1,
                reason,
                doc,
            });
        }
        Ok((retry, last))
    }

    fn dead_letter(&mut self, rejected: &[Rejection]) -> Result<()> {
        let path = &self.opts.dead_letters;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        for Rejection {
            view,
            index,
            id,
            reason,
            doc,
        } in rejected
        {
            tracing::warn!(sink = %self.name, %view, %index, %id, %reason, "document rejected");
            let payload: Value = serde_json::from_str(doc).unwrap_or(Value::Null);
            let line = json!({
                "kind": "rejected",
                "sink": "elasticsearch",
                "view": view,
                "position": format!("{index}/_doc/{id}"),
                "reason": reason,
                "payload": payload,
            });
            // One write per line: lines stay whole beside the pipeline's own dead letters.
            f.write_all(format!("{line}\n").as_bytes())
                .map_err(|e| Error::io(path, e))?;
        }
        self.rejected += rejected.len() as u64;
        Ok(())
    }
}

fn op_len(op: &Op) -> usize {
    match op {
        Op::Index(d) => d.len(),
        Op::Delete => 0,
    }
}

#[async_trait]
impl Sink for ElasticsearchSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, outputs: &[ViewOutput]) -> Result<()> {
        for o in outputs {
            let view = &o.view;
            self.ensure_index(view).await?;
            if let Some(d) = &o.changes.deletes {
                for row in rows_to_json(d)? {
                    let id = doc_id(view, &row);
                    let old = self.pending.insert(
                        (view.index.clone(), id),
                        Pending {
                            view: view.name.clone(),
                            op: Op::Delete,
                        },
                    );
                    self.pending_bytes -= old.map_or(0, |p| op_len(&p.op));
                }
            }
            if let Some(u) = &o.changes.upserts {
                let now = chrono::Utc::now().format(TIMESTAMP_FORMAT).to_string();
                let ts_col = timestamp_column(view);
                for mut row in rows_to_json(u)? {
                    let id = doc_id(view, &row);
                    let ts = ts_col
                        .and_then(|c| row.get(c).cloned())
                        .filter(|v| !v.is_null())
                        .unwrap_or_else(|| Value::String(now.clone()));
                    row.insert("@timestamp".into(), ts);
                    let doc = Value::Object(row).to_string();
                    self.pending_bytes += doc.len();
                    let old = self.pending.insert(
                        (view.index.clone(), id),
                        Pending {
                            view: view.name.clone(),
                            op: Op::Index(doc),
                        },
                    );
                    self.pending_bytes -= old.map_or(0, |p| op_len(&p.op));
                }
            }
        }
        // A full batch goes now: the pipeline waits for it (back-pressure).
        if self.pending.len() >= self.opts.batch_docs * self.opts.max_in_flight.max(1)
            || self.pending_bytes >= self.opts.batch_bytes
        {
            self.send_pending().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.send_pending().await
    }

    fn counters(&self) -> super::SinkCounters {
        super::SinkCounters {
            retries: self.retries.load(std::sync::atomic::Ordering::Relaxed),
            rejected: self.rejected,
        }
    }

    fn summary(&self) -> Option<String> {
        use std::sync::atomic::Ordering::Relaxed;
        Some(format!(
            "{}: {} documents indexed, {} deleted, {} rejected (dead-lettered), {} retries",
            self.name,
            self.indexed.load(Relaxed),
            self.deleted.load(Relaxed),
            self.rejected,
            self.retries.load(Relaxed)
        ))
    }
}

/// The column that fills `@timestamp`: the first timestamp among the key columns (a window
/// start), else none (the time the row was written).
fn timestamp_column(view: &ViewInfo) -> Option<&str> {
    view.key_cols
        .iter()
        .map(|&i| view.schema.field(i))
        .find(|f| matches!(f.data_type(), DataType::Timestamp(..) | DataType::Date32))
        .map(|f| f.name().as_str())
}

/// The document id of a row: its key values joined by `|` (`%` and `|` escaped, null as
/// `%00`), so ids are readable and the same row always gets the same id. A view without a
/// key has one document (`_all`), unless it is append-only (then all columns are the key).
/// Ids longer than Elasticsearch's 512-byte limit become a 128-bit FNV-1a hash.
pub fn doc_id(view: &ViewInfo, row: &Map<String, Value>) -> String {
    let names: Vec<&str> = if view.key_cols.is_empty() {
        if view.mode == OutputMode::Append {
            view.schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect()
        } else {
            return "_all".into();
        }
    } else {
        view.key_names()
    };
    let mut id = String::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            id.push('|');
        }
        match row.get(*n) {
            None | Some(Value::Null) => id.push_str("%00"),
            Some(Value::String(s)) => {
                for c in s.chars() {
                    match c {
                        '%' => id.push_str("%25"),
                        '|' => id.push_str("%7C"),
                        c => id.push(c),
                    }
                }
            }
            Some(v) => id.push_str(&v.to_string()),
        }
    }
    if id.len() > 512 {
        let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
        for b in id.as_bytes() {
            h ^= *b as u128;
            h = h.wrapping_mul(0x0000000001000000000000000000013B);
        }
        return format!("h{h:032x}");
    }
    id
}

/// The index mapping for a view: its columns by Arrow type, plus `@timestamp`.
pub fn mapping_for(schema: &Schema, text_fields: &[String]) -> Value {
    let mut props = Map::new();
    for f in schema.fields() {
        let t = match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                if text_fields.iter().any(|t| t == f.name()) {
                    props.insert(
                        f.name().clone(),
                        json!({"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}),
                    );
                    continue;
                }
                "keyword"
            }
            DataType::Int8 | DataType::Int16 | DataType::Int32 => "integer",
            DataType::UInt8 | DataType::UInt16 => "integer",
            DataType::Int64 | DataType::UInt32 => "long",
            DataType::UInt64 => "unsigned_long",
            DataType::Float16 | DataType::Float32 => "float",
            DataType::Float64 | DataType::Decimal128(..) | DataType::Decimal256(..) => "double",
            DataType::Boolean => "boolean",
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => "date",
            _ => continue,
        };
        props.insert(f.name().clone(), json!({ "type": t }));
    }
    props.insert("@timestamp".into(), json!({"type": "date"}));
    json!({ "properties": props })
}

/// Compares the mapping a view wants with an existing index's `properties`: returns the
/// conflicts (different families: a date where the view writes a number, say) and the
/// differences that still accept writes (`integer` where the view writes `long`: values out of
/// range are rejected per document and dead-lettered).
fn mapping_conflicts(wanted: &Value, existing: &Value) -> (Vec<String>, Vec<String>) {
    fn family(t: &str) -> &str {
        match t {
            "byte" | "short" | "integer" | "long" | "unsigned_long" | "half_float" | "float"
            | "double" | "scaled_float" => "number",
            "keyword" | "text" | "wildcard" | "match_only_text" | "constant_keyword" => "string",
            "date" | "date_nanos" => "date",
            t => t,
        }
    }
    let (mut conflicts, mut narrower) = (Vec::new(), Vec::new());
    let (Some(w), Some(e)) = (wanted.as_object(), existing.as_object()) else {
        return (conflicts, narrower);
    };
    for (name, spec) in w {
        let Some(have) = e.get(name) else { continue };
        let want_t = spec["type"].as_str().unwrap_or("object");
        let have_t = have["type"].as_str().unwrap_or("object");
        if want_t == have_t {
            continue;
        }
        let msg = format!("field `{name}` is `{have_t}` there, the view writes `{want_t}`");
        if family(want_t) == family(have_t) {
            narrower.push(msg);
        } else {
            conflicts.push(msg);
        }
    }
    (conflicts, narrower)
}

/// An error and its causes (`error sending request: ... : invalid peer certificate: ...`):
/// the HTTP client's top-level message alone rarely says what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = c.source();
    }
    out
}

/// The `reason` of an Elasticsearch error body (or the body itself).
fn error_reason(v: &Value) -> String {
    let e = if v.get("error").is_some() {
        &v["error"]
    } else {
        v
    };
    match (e["type"].as_str(), e["reason"].as_str()) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        (None, Some(r)) => r.to_string(),
        _ if e.is_string() => e.as_str().unwrap_or_default().to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};
    use std::sync::Arc;

    fn info(key_cols: Vec<usize>, mode: OutputMode) -> ViewInfo {
        let schema = Arc::new(Schema::new(vec![
            Field::new("product_id", DataType::Utf8, false),
            Field::new(
                "window_start",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new("units", DataType::Int64, true),
            Field::new("review", DataType::Utf8, true),
        ]));
        ViewInfo {
            name: "v".into(),
            hidden: false,
            schema,
            key_cols,
            mode,
            windowed: true,
            index: "v".into(),
            text_fields: vec!["review".into()],
            description: String::new(),
            path: "queries/v.sql".into(),
            sql: String::new(),
            reads_streams: true,
            order: Vec::new(),
        }
    }

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn ids_are_readable_deterministic_and_injective() {
        let v = info(vec![0, 1], OutputMode::Update);
        let a = row(json!({"product_id": "P|1", "window_start": "2026-01-01T00:00:00.000Z"}));
        let b = row(json!({"product_id": "P", "window_start": "1|2026-01-01T00:00:00.000Z"}));
        assert_eq!(doc_id(&v, &a), "P%7C1|2026-01-01T00:00:00.000Z");
        assert_ne!(doc_id(&v, &a), doc_id(&v, &b));
        assert_eq!(doc_id(&v, &a), doc_id(&v, &a.clone()));
        let n = row(json!({"product_id": "P", "window_start": null}));
        assert_eq!(doc_id(&v, &n), "P|%00");
        let long = row(json!({"product_id": "x".repeat(600), "window_start": null}));
        assert_eq!(doc_id(&v, &long).len(), 33);
        assert_eq!(doc_id(&info(vec![], OutputMode::Update), &a), "_all");
        // Keyless append rows are identified by all their values.
        let ap = info(vec![], OutputMode::Append);
        let r = row(json!({"product_id": "P", "window_start": null, "units": 3, "review": "ok"}));
        assert_eq!(doc_id(&ap, &r), "P|%00|3|ok");
    }

    #[test]
    fn mapping_follows_arrow_types() {
        let v = info(vec![0, 1], OutputMode::Update);
        let m = mapping_for(&v.schema, &v.text_fields);
        let p = &m["properties"];
        assert_eq!(p["product_id"]["type"], "keyword");
        assert_eq!(p["window_start"]["type"], "date");
        assert_eq!(p["units"]["type"], "long");
        assert_eq!(p["review"]["type"], "text");
        assert_eq!(p["@timestamp"]["type"], "date");
        assert_eq!(timestamp_column(&v), Some("window_start"));
        let (c, n) = mapping_conflicts(
            p,
            &json!({"units": {"type": "text"}, "window_start": {"type": "date"}, "other": {"type": "long"}}),
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].contains("units"), "{c:?}");
        assert!(n.is_empty());
        let (c, n) = mapping_conflicts(p, &json!({"units": {"type": "integer"}}));
        assert!(c.is_empty());
        assert_eq!(n.len(), 1);
    }

    #[test]
    fn secrets_stay_out_of_names_and_debug() {
        assert_eq!(
            redact_url("https://elastic:s3cret@es:9200"),
            "https://***@es:9200"
        );
        let a = EsAuth::Basic {
            user: "elastic".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(!format!("{:?}", EsAuth::ApiKey("abc".into())).contains("abc"));
    }
}
