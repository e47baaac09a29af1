//! The batch oracle: every view's SQL run once over a whole data set with plain DataFusion.
//!
//! It defines what a replay must produce: streams hold all their events; keyed tables hold
//! the latest row per key (by event time, later line on ties); views see each other's final
//! results. Windowed views contain every window. Used by the tests and `runnel run --oracle`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;

use crate::engine::{session, ViewDef};
use crate::error::{Error, Result};
use crate::schema::Streams;

/// Runs every view over `data` (decoded rows per stream index) as one batch query each.
pub async fn run(
    streams: &Streams,
    data: &[Vec<RecordBatch>],
    defs: &[ViewDef],
) -> Result<HashMap<String, RecordBatch>> {
    let ctx = session();
    for (i, s) in streams.streams.iter().enumerate() {
        let batches = data.get(i).cloned().unwrap_or_default();
        match s.key() {
            None => {
                let t = MemTable::try_new(s.arrow.clone(), vec![batches])?;
                ctx.register_table(s.name.as_str(), Arc::new(t))?;
            }
            Some(key) => {
                // Latest row per key: number rows in arrival order, keep the last by event time.
                let all = concat_batches(&s.arrow, &batches)?;
                let mut fields: Vec<Field> = s
                    .arrow
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                fields.push(Field::new("__seq", DataType::UInt64, false));
                let schema = Arc::new(Schema::new(fields));
                let mut cols = all.columns().to_vec();
                cols.push(Arc::new(UInt64Array::from_iter_values(
                    0..all.num_rows() as u64,
                )));
                let raw = RecordBatch::try_new(schema.clone(), cols)?;
                let raw_name = format!("__raw_{}", s.name);
                ctx.register_table(
                    raw_name.as_str(),
                    Arc::new(MemTable::try_new(schema, vec![vec![raw]])?),
                )?;
                let cols: Vec<String> = s
                    .arrow
                    .fields()
                    .iter()
                    .map(|f| format!("\"{}\"", f.name()))
                    .collect();
                let sql = format!(
                    "SELECT {cols} FROM (SELECT *, row_number() OVER (PARTITION BY \"{key}\" ORDER BY \"{t}\" DESC, __seq DESC) AS __rn FROM {raw_name}) WHERE __rn = 1",
                    cols = cols.join(", "),
                    t = s.event_time,
                );
                let rows = ctx.sql(&sql).await?.collect().await?;
                let t = MemTable::try_new(s.arrow.clone(), vec![rows])?;
                ctx.register_table(s.name.as_str(), Arc::new(t))?;
            }
        }
    }
    let mut out = HashMap::new();
    let mut pending: Vec<&ViewDef> = defs.iter().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut next = Vec::new();
        for def in pending {
            match ctx.sql(&def.sql).await {
                Ok(df) => {
                    let schema = Arc::new(df.schema().as_arrow().clone());
                    let rows = df.collect().await?;
                    let rows = concat_batches(&schema, &rows)?;
                    ctx.register_table(
                        def.name.as_str(),
                        Arc::new(MemTable::try_new(rows.schema(), vec![vec![rows.clone()]])?),
                    )?;
                    out.insert(def.name.clone(), rows);
                }
                Err(_) => next.push(def),
            }
        }
        if next.len() == before {
            let def = next[0];
            let e = ctx.sql(&def.sql).await.err();
            return Err(Error::Config(format!(
                "oracle: view {} does not plan: {}",
                def.name,
                e.map(|e| e.to_string()).unwrap_or_default()
            )));
        }
        pending = next;
    }
    Ok(out)
}
