//! `ndjson:DIR`: one `<view>.ndjson` per view, holding the view's result (one row per key,
//! sorted by key), rewritten atomically on every flush.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Materialized, Sink};
use crate::engine::ViewOutput;
use crate::error::{Error, Result};

pub struct NdjsonSink {
    dir: PathBuf,
    state: Materialized,
    dirty: std::collections::BTreeSet<String>,
}

impl NdjsonSink {
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(NdjsonSink {
            dir: dir.to_path_buf(),
            state: Materialized::default(),
            dirty: Default::default(),
        })
    }
}

#[async_trait]
impl Sink for NdjsonSink {
    fn name(&self) -> &str {
        "ndjson"
    }

    fn resume(&mut self, views: &[std::sync::Arc<crate::engine::ViewInfo>]) -> Result<()> {
        for info in views {
            let path = self.dir.join(format!("{}.ndjson", info.name));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let rows = text
                .lines()
                .filter(|l| !l.is_empty())
                .enumerate()
                .map(|(i, l)| {
                    serde_json::from_str(l).map_err(|e| Error::Sink {
                        sink: "ndjson".into(),
                        message: format!("{}:{}: {e}", path.display(), i + 1),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            self.state.load(info, rows);
        }
        Ok(())
    }

    async fn write(&mut self, outputs: &[ViewOutput]) -> Result<()> {
        for o in outputs {
            self.dirty.insert(o.view.name.clone());
        }
        self.state.apply(outputs)
    }

    async fn flush(&mut self) -> Result<()> {
        for view in std::mem::take(&mut self.dirty) {
            let path = self.dir.join(format!("{view}.ndjson"));
            let tmp = self.dir.join(format!(".{view}.ndjson.tmp"));
            let mut buf = Vec::new();
            for row in self.state.rows(&view) {
                serde_json::to_writer(&mut buf, row).map_err(|e| Error::Sink {
                    sink: "ndjson".into(),
                    message: e.to_string(),
                })?;
                buf.push(b'\n');
            }
            let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.write_all(&buf).map_err(|e| Error::io(&tmp, e))?;
            f.sync_data().map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}
