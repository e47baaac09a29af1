//! Lookup joins: a join on a keyed table's key probes the table's key index.
//!
//! DataFusion plans `FROM product_views v JOIN customers c ON v.customer_id = c.customer_id`
//! as a hash join that hashes one side and probes it with the other, every time the plan runs.
//! For a view fed by micro-batches that means reading the whole customers table once per
//! batch: a cost that grows with the number of customers, not with the batch. The keyed table
//! already keeps an index from key to row, so this physical optimizer rule replaces such a
//! hash join with [`LookupJoinExec`], which looks each probe row's key up in that index and
//! gathers the matching table rows: a cost proportional to the batch.
//!
//! The rule applies to a hash join with one equality, no extra join filter and no fetch limit,
//! whose one side is a scan of a keyed table (maybe under a projection) joined on its key
//! column (maybe cast to another string type), and whose join
//! type keeps at most one table row per probe row (inner, outer on the probe side, semi and
//! anti). Every other join is left to DataFusion. Keys are unique in a keyed table, so each
//! probe row meets at most one row, exactly as the hash join would find it.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::{filter_record_batch, is_not_null, not};
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, NullEquality};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::unnest::{ListUnnest, UnnestExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use super::keyed::{self, SharedTable};
use super::live::LiveScanExec;

/// The physical optimizer rule; see the module documentation.
#[derive(Debug, Default)]
pub struct LookupJoins;

impl PhysicalOptimizerRule for LookupJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| {
                let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                    return Ok(Transformed::no(node));
                };
                if let Some(moved) = below_unnest(join)? {
                    return Ok(Transformed::yes(moved));
                }
                Ok(match LookupJoinExec::for_hash_join(join)? {
                    Some(lookup) => Transformed::yes(Arc::new(lookup) as Arc<dyn ExecutionPlan>),
                    None => Transformed::no(node),
                })
            })?
            .data)
    }

    fn name(&self) -> &str {
        "runnel_lookup_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A lookup join over the rows of an `unnest` (`unnest(hop(...))` makes one row per window)
/// looks each key up once per unnested row, although the rows an input row unnests into all
/// carry its key. When the join key is not an unnested column, this puts the join below the
/// unnest: each input row is looked up once, and the unnest repeats the joined row. The rows
/// and their order are the same: an inner join drops an input row with all its unnested rows,
/// an outer one keeps them all. The plan is then the lookup join over the unnest's input, the
/// unnest, and a projection giving the columns in the old join's order.
///
/// Applies to a join the lookup rule takes, on the probe side of which are only projections
/// of plain columns down to an unnest of lists, one level deep, that keeps its other columns
/// where they are.
fn below_unnest(join: &HashJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    // The join as the lookup rule would take it: which side is probed, with which key.
    let Some(lookup) = LookupJoinExec::for_hash_join(join)? else {
        return Ok(None);
    };
    if !matches!(lookup.keep, Keep::Matches | Keep::All) {
        return Ok(None);
    }
    let probe_left = lookup.probe_first;
    let (left_key, right_key) = join.on()[0].clone();
    let (probe, table_side, probe_key) = if probe_left {
        (join.left(), join.right(), &left_key)
    } else {
        (join.right(), join.left(), &right_key)
    };
    // Down the probe side to an unnest: where each probe column is in the unnest's output.
    let mut from: Vec<usize> = (0..probe.schema().fields().len()).collect();
    let mut node = probe.clone();
    let unnest = loop {
        if let Some(u) = node.downcast_ref::<UnnestExec>() {
            break Some(u);
        }
        let Some(p) = node.downcast_ref::<ProjectionExec>() else {
            break None;
        };
        let cols: Option<Vec<usize>> = p
            .expr()
            .iter()
            .map(|e| e.expr.downcast_ref::<Column>().map(|c| c.index()))
            .collect();
        let Some(cols) = cols else {
            break None;
        };
        from = from.iter().map(|&i| cols[i]).collect();
        node = p.input().clone();
    };
    let Some(unnest) = unnest else {
        return Ok(None);
    };
    let input = unnest.input();
    let n = input.schema().fields().len();
    if !unnest.struct_column_indices().is_empty()
        || unnest.schema().fields().len() != n
        || unnest.list_column_indices().iter().any(|l| l.depth != 1)
    {
        return Ok(None);
    }
    let unnested: Vec<usize> = unnest
        .list_column_indices()
        .iter()
        .map(|l| l.index_in_input_schema)
        .collect();
    // The key over the unnest's input; none of its columns unnested.
    let mut reads_unnested = false;
    let input_schema = input.schema();
    let input_key = probe_key
        .clone()
        .transform(|e| {
            let Some(c) = e.downcast_ref::<Column>() else {
                return Ok(Transformed::no(e));
            };
            let i = from[c.index()];
            reads_unnested |= unnested.contains(&i);
            let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(input_schema.field(i).name(), i));
            Ok(Transformed::yes(col))
        })?
        .data;
    if reads_unnested {
        return Ok(None);
    }
    let (left, right, on) = if probe_left {
        (
            input.clone(),
            table_side.clone(),
            vec![(input_key, right_key.clone())],
        )
    } else {
        (
            table_side.clone(),
            input.clone(),
            vec![(left_key.clone(), input_key)],
        )
    };
    let below = HashJoinExec::try_new(
        left,
        right,
        on,
        None,
        join.join_type(),
        None,
        *join.partition_mode(),
        join.null_equality(),
        join.null_aware,
    )?;
    let Some(lookup) = LookupJoinExec::for_hash_join(&below)? else {
        return Ok(None);
    };
    let lookup: Arc<dyn ExecutionPlan> = Arc::new(lookup);
    // The unnest's input columns start at `shift` in the joined row.
    let t = table_side.schema().fields().len();
    let shift = if probe_left { 0 } else { t };
    // The old join's row in terms of the joined row: its probe columns (found through
    // `from`) and the table's.
    let probe_cols = from.iter().map(|&i| i + shift);
    let old_row: Vec<usize> = if probe_left {
        probe_cols.chain(n..n + t).collect()
    } else {
        (0..t).chain(probe_cols).collect()
    };
    let out: Vec<usize> = match &join.projection {
        Some(p) => p.iter().map(|&i| old_row[i]).collect(),
        None => old_row,
    };
    // The unnest repeats only what comes out, and unnests the lists (kept in place).
    let lists: Vec<usize> = unnested.iter().map(|&j| j + shift).collect();
    let mut kept: Vec<usize> = out.iter().chain(&lists).copied().collect();
    kept.sort_unstable();
    kept.dedup();
    let joined = lookup.schema();
    let narrowed: Arc<dyn ExecutionPlan> = Arc::new(ProjectionExec::try_new(
        kept.iter().map(|&i| ProjectionExpr {
            expr: Arc::new(Column::new(joined.field(i).name(), i)),
            alias: joined.field(i).name().clone(),
        }),
        lookup,
    )?);
    let position = |i: usize| kept.iter().position(|&k| k == i).unwrap_or_default();
    let fields: Vec<FieldRef> = kept
        .iter()
        .map(|&i| match i.checked_sub(shift) {
            Some(j) if j < n && unnested.contains(&j) => unnest.schema().fields()[j].clone(),
            _ => joined.fields()[i].clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new_with_metadata(fields, joined.metadata().clone()));
    let unnested_rows: Arc<dyn ExecutionPlan> = Arc::new(UnnestExec::new(
        narrowed,
        lists
            .iter()
            .map(|&i| ListUnnest {
                index_in_input_schema: position(i),
                depth: 1,
            })
            .collect(),
        Vec::new(),
        schema.clone(),
        unnest.options().clone(),
    )?);
    let old_schema = join.schema();
    let exprs: Vec<ProjectionExpr> = out
        .iter()
        .zip(old_schema.fields())
        .map(|(&i, f)| ProjectionExpr {
            expr: Arc::new(Column::new(schema.field(position(i)).name(), position(i))),
            alias: f.name().clone(),
        })
        .collect();
    Ok(Some(Arc::new(ProjectionExec::try_new(
        exprs,
        unnested_rows,
    )?)))
}

/// What a probe row becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Only probe rows with a table row, joined with it.
    Matches,
    /// Every probe row, joined with its table row or with nulls.
    All,
    /// Probe rows with a table row, table columns left out.
    Semi,
    /// Probe rows without a table row.
    Anti,
}

/// Joins each row of its input (the probe side) with the row of a keyed table holding its key.
#[derive(Clone)]
pub struct LookupJoinExec {
    probe: Arc<dyn ExecutionPlan>,
    probe_key: Arc<dyn PhysicalExpr>,
    table: SharedTable,
    /// Table columns the join reads (the scan's projection).
    table_cols: Vec<usize>,
    /// Schema of those columns.
    scan_schema: SchemaRef,
    /// Expressions over them that make the table side's columns, when the plan computes some
    /// (such as a cast of the key to the probe key's string type); `None`: the columns as read.
    table_exprs: Option<Vec<Arc<dyn PhysicalExpr>>>,
    /// Whether the probe side's columns come first in the joined row.
    probe_first: bool,
    keep: Keep,
    /// Columns of the joined row that the join outputs (`None`: all).
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for LookupJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LookupJoinExec({:?})", self.keep)
    }
}

/// A table side the join can look up: a keyed table's scan, maybe under a projection.
struct TableSide {
    table: SharedTable,
    cols: Vec<usize>,
    scan_schema: SchemaRef,
    exprs: Option<Vec<Arc<dyn PhysicalExpr>>>,
}

impl TableSide {
    fn of(plan: &Arc<dyn ExecutionPlan>) -> Option<TableSide> {
        if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
            let (table, cols) = table_scan(p.input())?;
            return Some(TableSide {
                table,
                cols,
                scan_schema: p.input().schema(),
                exprs: Some(p.expr().iter().map(|e| e.expr.clone()).collect()),
            });
        }
        let (table, cols) = table_scan(plan)?;
        Some(TableSide {
            table,
            cols,
            scan_schema: plan.schema(),
            exprs: None,
        })
    }

    /// Whether `key` (over this side's output) is the table's key column, maybe cast from one
    /// string type to another (lossless, so equal keys stay equal and distinct ones distinct).
    fn is_key(&self, key: &Arc<dyn PhysicalExpr>) -> bool {
        fn column(e: &Arc<dyn PhysicalExpr>) -> Option<usize> {
            if let Some(c) = e.downcast_ref::<Column>() {
                return Some(c.index());
            }
            let cast = e.downcast_ref::<CastExpr>()?;
            let text = |t: &DataType| {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            };
            if !text(cast.cast_type()) {
                return None;
            }
            let inner = cast.expr().downcast_ref::<Column>()?;
            Some(inner.index())
        }
        let Some(mut i) = column(key) else {
            return false;
        };
        if let Some(exprs) = &self.exprs {
            match exprs.get(i).and_then(column) {
                Some(j) => i = j,
                None => return false,
            }
        }
        self.cols.get(i) == Some(&keyed::read(&self.table).key_col())
    }
}

/// A keyed table behind a plain scan (through cooperative-scheduling wrappers only).
fn table_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<(SharedTable, Vec<usize>)> {
    if let Some(c) = plan.downcast_ref::<CooperativeExec>() {
        return table_scan(c.input());
    }
    let scan = plan.downcast_ref::<LiveScanExec>()?;
    let table = scan.data().table()?.clone();
    let cols = match scan.projection() {
        Some(p) => p.to_vec(),
        None => (0..keyed::read(&table).schema().fields().len()).collect(),
    };
    Some((table, cols))
}

impl LookupJoinExec {
    /// The lookup join equivalent to `join`, if it has the shape the module describes.
    pub fn for_hash_join(join: &HashJoinExec) -> Result<Option<Self>> {
        if join.filter().is_some()
            || join.on().len() != 1
            || join.null_equality() != NullEquality::NullEqualsNothing
            || join.null_aware
            || join.fetch().is_some()
        {
            return Ok(None);
        }
        let (left_key, right_key) = join.on()[0].clone();
        // The table on the right (probed by the left side), else on the left.
        let sides = [
            (join.right(), &right_key, join.left(), &left_key, true),
            (join.left(), &left_key, join.right(), &right_key, false),
        ];
        for (table_side, table_key, probe, probe_key, probe_first) in sides {
            let keep = match (join.join_type(), probe_first) {
                (JoinType::Inner, _) => Keep::Matches,
                (JoinType::Left, true) | (JoinType::Right, false) => Keep::All,
                (JoinType::LeftSemi, true) | (JoinType::RightSemi, false) => Keep::Semi,
                (JoinType::LeftAnti, true) | (JoinType::RightAnti, false) => Keep::Anti,
                _ => continue,
            };
            let Some(side) = TableSide::of(table_side) else {
                continue;
            };
            if !side.is_key(table_key) {
                continue;
            }
            let schema = join.schema();
            let props = PlanProperties::new(
                EquivalenceProperties::new(schema.clone()),
                probe.output_partitioning().clone(),
                EmissionType::Incremental,
                Boundedness::Bounded,
            );
            return Ok(Some(LookupJoinExec {
                probe: probe.clone(),
                probe_key: probe_key.clone(),
                table: side.table,
                table_cols: side.cols,
                scan_schema: side.scan_schema,
                table_exprs: side.exprs,
                probe_first,
                keep,
                projection: join.projection.as_ref().map(|p| p.to_vec()),
                schema,
                props: Arc::new(props),
            }));
        }
        Ok(None)
    }

    fn join_batch(&self, probe: &RecordBatch) -> Result<RecordBatch> {
        let keys = self
            .probe_key
            .evaluate(probe)?
            .into_array(probe.num_rows())?;
        let table = keyed::read(&self.table);
        let found = table
            .find(&keys)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let gather = |at: &UInt32Array| -> Result<Vec<ArrayRef>> {
            let cols = table
                .gather(&self.table_cols, at)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let Some(exprs) = &self.table_exprs else {
                return Ok(cols);
            };
            let opts = RecordBatchOptions::new().with_row_count(Some(at.len()));
            let read = RecordBatch::try_new_with_options(self.scan_schema.clone(), cols, &opts)?;
            exprs
                .iter()
                .map(|e| e.evaluate(&read)?.into_array(read.num_rows()))
                .collect()
        };
        let (probe_cols, table_cols): (Vec<ArrayRef>, Vec<ArrayRef>) = match self.keep {
            Keep::Matches => {
                let hit = is_not_null(&found)?;
                let at: UInt32Array = found.iter().flatten().collect();
                let probe = filter_record_batch(probe, &hit)?;
                (probe.columns().to_vec(), gather(&at)?)
            }
            Keep::All => (probe.columns().to_vec(), gather(&found)?),
            Keep::Semi | Keep::Anti => {
                let mut hit = is_not_null(&found)?;
                if self.keep == Keep::Anti {
                    hit = not(&hit)?;
                }
                (
                    filter_record_batch(probe, &hit)?.columns().to_vec(),
                    Vec::new(),
                )
            }
        };
        drop(table);
        let rows = probe_cols.first().map_or(0, |c| c.len());
        let rows = table_cols.first().map_or(rows, |c| c.len());
        let joined: Vec<ArrayRef> = if self.probe_first {
            probe_cols.into_iter().chain(table_cols).collect()
        } else {
            table_cols.into_iter().chain(probe_cols).collect()
        };
        let columns = match &self.projection {
            Some(p) => p.iter().map(|&i| joined[i].clone()).collect(),
            None => joined,
        };
        let opts = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &opts,
        )?)
    }
}

impl DisplayAs for LookupJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let kind = match self.keep {
            Keep::Matches => "inner",
            Keep::All => "outer",
            Keep::Semi => "semi",
            Keep::Anti => "anti",
        };
        let table = keyed::read(&self.table);
        let key = table.schema().field(table.key_col()).name().clone();
        write!(
            f,
            "LookupJoinExec: {kind}, probe key={}, table key={key}, table columns={:?}",
            self.probe_key, self.table_cols
        )?;
        if let Some(p) = &self.projection {
            write!(f, ", projection={p:?}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LookupJoinExec {
    fn name(&self) -> &'static str {
        "LookupJoinExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.probe]
    }
    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.probe_key)
    }
    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [probe] = <[_; 1]>::try_from(children).map_err(|c| {
            DataFusionError::Internal(format!("LookupJoinExec takes 1 child, got {}", c.len()))
        })?;
        Ok(Arc::new(LookupJoinExec {
            probe,
            ..(*self).clone()
        }))
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.probe.execute(partition, context)?;
        let this = self.clone();
        let out = input.map(move |b| b.and_then(|b| this.join_batch(&b)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            out,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::keyed::KeyedTable;
    use crate::engine::live::LiveTable;
    use crate::engine::topk::tests::run;
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use std::sync::RwLock;

    /// The same data twice: `t` a keyed table behind a live scan (which the rule rewrites) in
    /// one session, a plain in-memory table in the other; `s` the probe side in both.
    async fn sessions() -> (SessionContext, SessionContext) {
        let table_schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        ]));
        // Keys k0..k39 with updates: the later row per key wins; k7 is never present.
        let mut keys = Vec::new();
        let mut names = Vec::new();
        let mut ns = Vec::new();
        let mut ts = Vec::new();
        for i in 0..60i64 {
            let k = i % 40;
            if k == 7 {
                continue;
            }
            keys.push(Some(format!("k{k}")));
            names.push(format!("name{i}"));
            ns.push((i % 5 != 0).then_some(i * 3));
            ts.push(i);
        }
        let batch = RecordBatch::try_new(
            table_schema.clone(),
            vec![
                Arc::new(StringArray::from(keys)),
                Arc::new(StringArray::from(names)),
                Arc::new(Int64Array::from(ns)),
                Arc::new(TimestampMillisecondArray::from(ts)),
            ],
        )
        .unwrap();
        let mut table = KeyedTable::new(table_schema.clone(), 0, 3).unwrap();
        table.upsert(&batch).unwrap();
        let rows = table.rows().unwrap();
        let shared: SharedTable = Arc::new(RwLock::new(table));
        let live = LiveTable::keyed(table_schema.clone(), shared);

        let probe_schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("key", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let probe = RecordBatch::try_new(
            probe_schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..200)),
                Arc::new(StringArray::from_iter(
                    (0..200).map(|i| (i % 11 != 0).then(|| format!("k{}", (i * 7) % 45))),
                )),
                Arc::new(Int64Array::from_iter_values((0..200).map(|i| i % 13))),
            ],
        )
        .unwrap();
        let state = |rule: bool| {
            let mut b = SessionStateBuilder::new()
                .with_config(SessionConfig::new().with_target_partitions(1))
                .with_default_features();
            if rule {
                b = b.with_physical_optimizer_rule(Arc::new(LookupJoins));
            }
            SessionContext::new_with_state(b.build())
        };
        let (with, without) = (state(true), state(false));
        with.register_table("t", Arc::new(live)).unwrap();
        without
            .register_table(
                "t",
                Arc::new(MemTable::try_new(table_schema, vec![vec![rows]]).unwrap()),
            )
            .unwrap();
        for ctx in [&with, &without] {
            let s = MemTable::try_new(probe_schema.clone(), vec![vec![probe.clone()]]).unwrap();
            ctx.register_table("s", Arc::new(s)).unwrap();
        }
        (with, without)
    }

    /// Joins on the table's key become lookups with the rows the hash join finds, for every
    /// join type the rule takes, on either side, with nulls and missing keys; other joins stay.
    #[tokio::test]
    async fn lookups_find_what_the_hash_join_finds() {
        let (with, without) = sessions().await;
        let rewritten = [
            "SELECT s.id, s.v, t.name, t.n FROM s JOIN t ON s.key = t.k ORDER BY s.id",
            "SELECT t.name, s.id FROM t JOIN s ON t.k = s.key ORDER BY s.id",
            "SELECT s.id, t.name, t.n FROM s LEFT JOIN t ON s.key = t.k ORDER BY s.id",
            "SELECT t.name, s.id FROM t RIGHT JOIN s ON t.k = s.key ORDER BY s.id",
            "SELECT s.id FROM s WHERE s.key IN (SELECT k FROM t) ORDER BY s.id",
            "SELECT s.id FROM s WHERE EXISTS (SELECT 1 FROM t WHERE t.k = s.key) ORDER BY s.id",
            "SELECT s.id FROM s WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.k = s.key) ORDER BY s.id",
            "SELECT t.n, count(*) AS c FROM s JOIN t ON s.key = t.k GROUP BY t.n ORDER BY t.n",
            // A key computed on the probe side.
            "SELECT s.id, t.name FROM s JOIN t ON concat('k', CAST(s.v AS VARCHAR)) = t.k \
             ORDER BY s.id",
        ];
        for sql in rewritten {
            let (plan, rows) = run(&with, sql).await;
            let (_, expected) = run(&without, sql).await;
            assert!(
                plan.contains("LookupJoinExec"),
                "not rewritten: {sql}\n{plan}"
            );
            assert!(!plan.contains("HashJoinExec"), "{sql}\n{plan}");
            assert_eq!(rows, expected, "{sql}");
        }
        let kept = [
            // Not on the key, an extra condition, two equalities, the table side preserved.
            "SELECT s.id, t.k FROM s JOIN t ON s.v = t.n ORDER BY s.id, t.k",
            "SELECT s.id, t.k FROM s JOIN t ON s.key = t.k AND t.n > s.v ORDER BY s.id",
            "SELECT s.id, t.k FROM s JOIN t ON s.key = t.k AND s.v = t.n ORDER BY s.id",
            "SELECT s.id, t.k FROM s RIGHT JOIN t ON s.key = t.k ORDER BY t.k, s.id",
            "SELECT s.id, t.k FROM s FULL JOIN t ON s.key = t.k ORDER BY t.k, s.id",
        ];
        for sql in kept {
            let (plan, rows) = run(&with, sql).await;
            let (_, expected) = run(&without, sql).await;
            assert!(!plan.contains("LookupJoinExec"), "rewritten: {sql}\n{plan}");
            assert_eq!(rows, expected, "{sql}");
        }
    }
}
