//! A physical optimizer rule: `ORDER BY … LIMIT n` over a ranking window keeps n rows, not all.
//!
//! Views such as `top_sellers` number their rows with `row_number() OVER (ORDER BY …)` and keep
//! the first n. DataFusion plans that as a full sort, the window, then the limit. Its own rule
//! for pushing a limit past a window (`LimitPushPastWindows`) gives up on the default frame
//! (`RANGE … CURRENT ROW`), although `row_number`, `rank` and `dense_rank` never read their
//! frame: a row's number depends only on the rows sorted before it. This rule turns the sort
//! under such windows into a top-k sort (`SortExec` with a fetch), so a recomputed top-n view
//! keeps a heap of n rows instead of sorting every group each time it refreshes.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, StandardWindowExpr, WindowUDFExpr};
use datafusion::physical_plan::ExecutionPlan;

/// Window functions whose value for a row depends only on the rows before it in the window's
/// order (and never on the frame).
const RANKING: [&str; 3] = ["row_number", "rank", "dense_rank"];

#[derive(Debug, Default)]
pub struct RankingTopK;

impl PhysicalOptimizerRule for RankingTopK {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_down(|node| {
                let fetch = if let Some(l) = node.downcast_ref::<GlobalLimitExec>() {
                    l.fetch().map(|f| f + l.skip())
                } else {
                    node.downcast_ref::<LocalLimitExec>().map(|l| l.fetch())
                };
                match fetch {
                    Some(n) => Ok(match limit_sort(&node, n)? {
                        Some(new) => Transformed::yes(new),
                        None => Transformed::no(node),
                    }),
                    None => Ok(Transformed::no(node)),
                }
            })?
            .data)
    }

    fn name(&self) -> &str {
        "runnel_ranking_topk"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Below a limit of `n` rows: through projections and ranking windows (at least one) down to
/// a sort, which then keeps only `n` rows. `None` when the chain has any other shape.
fn limit_sort(limit: &Arc<dyn ExecutionPlan>, n: usize) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    fn walk(
        node: &Arc<dyn ExecutionPlan>,
        n: usize,
        windows: usize,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if let Some(sort) = node.downcast_ref::<SortExec>() {
            if windows == 0 || sort.fetch().is_some_and(|f| f <= n) {
                return Ok(None);
            }
            return Ok(ExecutionPlan::with_fetch(sort, Some(n)));
        }
        let passes = node.is::<ProjectionExec>() || node.is::<CooperativeExec>();
        let ranking = node
            .downcast_ref::<BoundedWindowAggExec>()
            .is_some_and(|w| {
                w.window_expr().iter().all(|e| {
                    e.as_any()
                        .downcast_ref::<StandardWindowExpr>()
                        .and_then(|s| {
                            s.get_standard_func_expr()
                                .as_any()
                                .downcast_ref::<WindowUDFExpr>()
                                .map(|u| RANKING.contains(&u.fun().name()))
                        })
                        .unwrap_or(false)
                })
            });
        if !passes && !ranking {
            return Ok(None);
        }
        let [child] = node.children()[..] else {
            return Ok(None);
        };
        let Some(new_child) = walk(child, n, windows + usize::from(ranking))? else {
            return Ok(None);
        };
        Ok(Some(replace_children_if_necessary(
            node.clone(),
            vec![new_child],
        )?))
    }
    let [child] = limit.children()[..] else {
        return Ok(None);
    };
    Ok(match walk(child, n, 0)? {
        Some(c) => Some(replace_children_if_necessary(limit.clone(), vec![c])?),
        None => None,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn ctx(with_rule: bool) -> SessionContext {
        let mut b = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(1))
            .with_default_features();
        if with_rule {
            b = b.with_physical_optimizer_rule(Arc::new(RankingTopK));
        }
        let ctx = SessionContext::new_with_state(b.build());
        // 500 rows, many ties in `units` and within (cat, units).
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("cat", DataType::Utf8, false),
            Field::new("units", DataType::Int64, true),
        ]));
        let ids: Vec<i64> = (0..500).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| ["a", "b", "c"][(i * 7 % 3) as usize]),
                )),
                Arc::new(Int64Array::from_iter(
                    ids.iter().map(|i| (i % 13 != 0).then_some(i * 31 % 17)),
                )),
            ],
        )
        .unwrap();
        let t = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("t", Arc::new(t)).unwrap();
        ctx
    }

    /// A query's physical plan (as text) and its rows (as a table), in `ctx`.
    pub(in crate::engine) async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(false).to_string();
        let rows = pretty_format_batches(&df.collect().await.unwrap())
            .unwrap()
            .to_string();
        (text, rows)
    }

    /// Ranking windows under a limit become a top-k sort, with the same rows as a full sort;
    /// other windows (a running sum reads its frame, ties included) keep the full sort.
    #[tokio::test]
    async fn ranking_windows_under_a_limit_sort_top_k_only() {
        let (with, without) = (ctx(true), ctx(false));
        let rewritten = [
            "SELECT row_number() OVER (ORDER BY units DESC, id) AS r, id, units FROM t \
             ORDER BY units DESC, id LIMIT 10",
            "SELECT rank() OVER (ORDER BY units) AS r, dense_rank() OVER (ORDER BY units) AS d, \
             units FROM t ORDER BY units LIMIT 7 OFFSET 5",
            "SELECT cat, id, row_number() OVER (PARTITION BY cat ORDER BY units, id) AS r \
             FROM t ORDER BY cat, units, id LIMIT 12",
        ];
        for sql in rewritten {
            let (plan, rows) = run(&with, sql).await;
            let (plain, expected) = run(&without, sql).await;
            assert!(plan.contains("TopK(fetch="), "not rewritten: {sql}\n{plan}");
            assert!(!plain.contains("TopK(fetch="), "{plain}");
            assert_eq!(rows, expected, "{sql}");
        }
        let kept = [
            "SELECT sum(units) OVER (ORDER BY units) AS s, id FROM t ORDER BY units, id LIMIT 10",
            "SELECT row_number() OVER (ORDER BY units) AS r, \
             sum(units) OVER (ORDER BY units) AS s FROM t ORDER BY units LIMIT 10",
        ];
        for sql in kept {
            let (plan, rows) = run(&with, sql).await;
            let (plain, expected) = run(&without, sql).await;
            assert_eq!(plan, plain, "{sql}");
            assert_eq!(rows, expected, "{sql}");
        }
    }
}
