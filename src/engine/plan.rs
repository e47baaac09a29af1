//! Compiling a view's SQL into something the engine can run incrementally.
//!
//! DataFusion plans the SQL; this module reads the logical plan's shape and decides how each
//! part runs:
//! - **stateless**: filters, projections, UNNEST and lookup joins over one event stream run on
//!   each micro-batch alone, and their rows are appended;
//! - **aggregate**: a GROUP BY over such a stateless input runs DataFusion's partial aggregate per
//!   batch and merges into per-group accumulators ([`super::aggregate`]); row-local work above it
//!   (HAVING, projections, CASE) runs on the touched groups only;
//! - **recompute**: anything over bounded inputs (keyed tables, other views' results) — ORDER BY
//!   .. LIMIT, window functions, joins of views — re-runs over those inputs when they change;
//!   its cost is bounded by the number of keys/groups, never by history.
//!
//! A view that mixes them (say ORDER BY .. LIMIT over a GROUP BY of a stream) is split: the
//! streaming part becomes a hidden view and the rest recomputes over it; so does a GROUP BY
//! over a table under a recomputed view (a join's side, a scalar subquery), so that the
//! recompute reads its groups instead of scanning the table every round. Anything that would
//! need unbounded state is rejected with a reason and a way out.

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DataFusionError, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{
    lit, Aggregate, Expr, ExprSchemable, FetchType, JoinType, Limit, LogicalPlan,
    LogicalPlanBuilder, Operator, Projection, SkipType, Sort, SortExpr,
};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::{CastExpr, TryCastExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, PhysicalExpr};

use super::aggregate::{GroupState, WindowSpec};
use super::functions::interval_ms;
use super::join::{Bound, IntervalJoin, Side};
use super::live::{LiveData, LiveScanExec};
use super::rank::{InputOrder, Rank};
use super::result::ViewResult;
use super::view_file::{OutputMode, ViewDef};
use super::{
    AggregateView, Aligned, Buffered, CompiledView, Engine, Feed, Input, OrderCol, Step, ViewInfo,
    ViewKind,
};
use crate::error::{Error, Result};

/// Where a planning error points in the view file.
pub(crate) fn view_error(def: &ViewDef, e: &DataFusionError) -> Error {
    let (mut line, mut column) = (0, 0);
    if let Some(span) = e.diagnostic().and_then(|d| d.span) {
        line = span.start.line as usize;
        column = span.start.column as usize;
    }
    let msg = e.strip_backtrace();
    let msg = msg
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("SQL error: ")
        .to_string();
    if line == 0 {
        if let Some((l, c)) = parse_line_col(&msg) {
            line = l;
            column = c;
        }
    }
    // sqlparser's errors arrive as `ParserError("... at Line: 3, Column: 11")`.
    let msg = match msg
        .strip_prefix("ParserError(\"")
        .and_then(|m| m.strip_suffix("\")"))
    {
        Some(inner) => inner
            .split(" at Line: ")
            .next()
            .unwrap_or(inner)
            .to_string(),
        None => msg,
    };
    if line == 0 {
        if let Some((l, c)) = guess_position(&def.sql, &msg) {
            line = l;
            column = c;
        }
    }
    Error::View {
        path: def.path.clone(),
        line: line.max(1),
        column: column.max(1),
        message: msg,
    }
}

fn reject(def: &ViewDef, message: impl Into<String>) -> Error {
    let (line, column) = first_statement_position(&def.sql);
    Error::View {
        path: def.path.clone(),
        line,
        column,
        message: message.into(),
    }
}

/// sqlparser reports "at Line: 3, Column: 7".
fn parse_line_col(msg: &str) -> Option<(usize, usize)> {
    let i = msg.find("Line: ")?;
    let rest = &msg[i + 6..];
    let l: usize = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let j = rest.find("Column: ")?;
    let c: usize = rest[j + 8..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((l, c))
}

/// For errors without a span, point at the first occurrence of the quoted or named identifier.
fn guess_position(sql: &str, msg: &str) -> Option<(usize, usize)> {
    let ident = if let Some(i) = msg.find("named ") {
        msg[i + 6..].split_whitespace().next()?.to_string()
    } else if let Some(i) = msg.find("table '") {
        msg[i + 7..].split('\'').next()?.to_string()
    } else {
        return None;
    };
    let ident = ident.trim_matches(|c: char| c == '"' || c == '\'' || c == '.' || c == ',');
    let ident = ident.rsplit('.').next()?;
    if ident.is_empty() {
        return None;
    }
    for (n, line) in sql.lines().enumerate() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        if let Some(c) = line.find(ident) {
            return Some((n + 1, c + 1));
        }
    }
    None
}

fn first_statement_position(sql: &str) -> (usize, usize) {
    for (n, line) in sql.lines().enumerate() {
        let t = line.trim_start();
        if !t.is_empty() && !t.starts_with("--") {
            return (n + 1, line.len() - t.len() + 1);
        }
    }
    (1, 1)
}

/// Column names a view exposes: all nullable (results change), duplicates renamed for hidden
/// views and rejected for user views.
fn output_schema(df: &DFSchema, rename_duplicates: bool) -> std::result::Result<SchemaRef, String> {
    let mut fields: Vec<Field> = Vec::new();
    for f in df.fields() {
        let mut name = f.name().clone();
        if fields.iter().any(|x| x.name() == &name) {
            if !rename_duplicates {
                return Err(format!(
                    "two output columns are named `{name}`: give one an alias (AS other_name)"
                ));
            }
            let mut k = 2;
            while fields.iter().any(|x| x.name() == &format!("{name}_{k}")) {
                k += 1;
            }
            name = format!("{name}_{k}");
        }
        fields.push(Field::new(name, f.data_type().clone(), true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        Expr::Cast(c) => unalias(&c.expr),
        Expr::TryCast(c) => unalias(&c.expr),
        other => other,
    }
}

/// Columns of the group key, followed from the Aggregate up through row-local nodes.
fn key_through(plan: &LogicalPlan) -> Option<Vec<usize>> {
    match plan {
        LogicalPlan::Aggregate(a) => Some((0..a.group_expr.len()).collect()),
        LogicalPlan::Filter(f) => key_through(&f.input),
        LogicalPlan::Sort(s) => key_through(&s.input),
        LogicalPlan::Limit(l) => key_through(&l.input),
        LogicalPlan::SubqueryAlias(s) => key_through(&s.input),
        LogicalPlan::Projection(p) => {
            let inner = key_through(&p.input)?;
            let in_schema = p.input.schema();
            let mut out = Vec::with_capacity(inner.len());
            for k in inner {
                let pos = p.expr.iter().position(|e| match unalias(e) {
                    Expr::Column(c) => in_schema.index_of_column(c).ok() == Some(k),
                    _ => false,
                })?;
                out.push(pos);
            }
            Some(out)
        }
        _ => None,
    }
}

/// What a column is made of, resolved down to base-table columns, and whether an UNNEST lies
/// on the way.
fn definition(plan: &LogicalPlan, col: &Column) -> Option<(Expr, bool)> {
    let idx = plan.schema().index_of_column(col).ok()?;
    match plan {
        LogicalPlan::TableScan(_) => Some((Expr::Column(col.clone()), false)),
        LogicalPlan::Projection(p) => resolve_expr(&p.input, unalias(&p.expr[idx])),
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Repartition(_) => {
            let input = plan.inputs()[0];
            let (q, f) = input.schema().qualified_field(idx);
            definition(input, &Column::from((q, f)))
        }
        LogicalPlan::Unnest(u) => {
            let in_idx = *u.dependency_indices.get(idx)?;
            let (q, f) = u.input.schema().qualified_field(in_idx);
            let unnested = u.list_type_columns.iter().any(|(i, _)| *i == in_idx);
            let (e, inner) = definition(&u.input, &Column::from((q, f)))?;
            Some((e, inner || unnested))
        }
        LogicalPlan::Join(j) => {
            if j.left.schema().index_of_column(col).is_ok() {
                definition(&j.left, col)
            } else {
                definition(&j.right, col)
            }
        }
        _ => None,
    }
}

fn resolve_expr(input: &LogicalPlan, e: &Expr) -> Option<(Expr, bool)> {
    let mut unnested = false;
    let mut ok = true;
    let out = e
        .clone()
        .transform_up(|e| match &e {
            Expr::Column(c) => match definition(input, c) {
                Some((d, u)) => {
                    unnested |= u;
                    Ok(Transformed::yes(d))
                }
                None => {
                    ok = false;
                    Ok(Transformed::no(e))
                }
            },
            _ => Ok(Transformed::no(e)),
        })
        .ok()?
        .data;
    ok.then_some((out, unnested))
}

fn literal_ms(e: &Expr) -> Option<i64> {
    match unalias(e) {
        Expr::Literal(v, _) => interval_ms(v),
        _ => None,
    }
}

fn is_event_time(e: &Expr, stream: &str, event_time: &str) -> bool {
    match unalias(e) {
        Expr::Column(c) => {
            c.name == event_time && c.relation.as_ref().is_none_or(|r| r.table() == stream)
        }
        _ => false,
    }
}

/// A window on event time: `date_bin(size, t[, origin])`, or `unnest(hop(slide, size, t))`.
fn window_size(e: &Expr, unnested: bool, stream: &str, event_time: &str) -> Option<i64> {
    let Expr::ScalarFunction(f) = unalias(e) else {
        return None;
    };
    match (f.func.name(), unnested) {
        ("date_bin", false)
            if f.args.len() >= 2 && is_event_time(&f.args[1], stream, event_time) =>
        {
            literal_ms(&f.args[0])
        }
        ("hop", true) if f.args.len() == 3 && is_event_time(&f.args[2], stream, event_time) => {
            literal_ms(&f.args[1])
        }
        _ => None,
    }
}

/// Whether `e` calls a window function (date_bin or hop) anywhere.
fn windows_anything(e: &Expr) -> bool {
    let mut found = false;
    let _ = e.apply(|x| {
        if let Expr::ScalarFunction(f) = x {
            if matches!(f.func.name(), "date_bin" | "hop") {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Whether an expression's value for a row depends on that row alone.
fn row_local(e: &Expr) -> bool {
    !e.is_volatile()
        && !e
            .exists(|x| {
                Ok(matches!(
                    x,
                    Expr::ScalarSubquery(_)
                        | Expr::Exists(_)
                        | Expr::InSubquery(_)
                        | Expr::WindowFunction(_)
                        | Expr::AggregateFunction(_)
                ))
            })
            .unwrap_or(true)
}

/// Which input column a plain column reference (under aliases) is.
fn column_at(input: &LogicalPlan, e: &Expr) -> Option<usize> {
    match e.clone().unalias_nested().data {
        Expr::Column(c) => input.schema().index_of_column(&c).ok(),
        _ => None,
    }
}

/// The output columns of projection `p` that are plain references to input columns `keys`.
fn projected_keys(p: &Projection, keys: &[usize]) -> Option<Vec<usize>> {
    let out: Vec<usize> = (0..p.expr.len())
        .filter(|&i| column_at(&p.input, &p.expr[i]).is_some_and(|c| keys.contains(&c)))
        .collect();
    (!out.is_empty()).then_some(out)
}

/// `order`, written over projection `p`'s output, written over its input instead.
fn order_below(p: &Projection, order: &[SortExpr]) -> Option<Vec<SortExpr>> {
    order
        .iter()
        .map(|s| {
            let expr = s
                .expr
                .clone()
                .transform(|e| match e {
                    Expr::Column(c) => {
                        let i = p.schema.index_of_column(&c)?;
                        Ok(Transformed::yes(p.expr[i].clone().unalias_nested().data))
                    }
                    e => Ok(Transformed::no(e)),
                })
                .ok()?
                .data;
            Some(SortExpr { expr, ..s.clone() })
        })
        .collect()
}

/// Window functions whose value for a row depends only on the rows before it in the order.
const RANKING: [&str; 3] = ["row_number", "rank", "dense_rank"];

/// How many rows a ranked view's plan keeps for a view showing `n`: see [`super::Rank`].
pub(crate) fn ranking_width(n: usize) -> usize {
    n.saturating_add(n.saturating_mul(4).max(200))
}

fn first_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    if let Some(a) = plan.downcast_ref::<AggregateExec>() {
        return Some(a);
    }
    plan.children().into_iter().find_map(first_aggregate)
}

/// Whether these aggregates come out the same, to the bit, however their rows are split into
/// partial aggregates: counts, min and max, and sums and averages of integers (whose float
/// sums are exact below 2^53). A sum of fractions is not: (a + b) + c and a + (b + c) can
/// differ in the last bit.
fn split_free(aggs: &[Arc<AggregateFunctionExpr>], schema: &Schema) -> bool {
    let integral = |e: &Arc<dyn PhysicalExpr>| {
        let mut e = e.clone();
        loop {
            let inner = if let Some(c) = e.downcast_ref::<CastExpr>() {
                c.expr().clone()
            } else if let Some(c) = e.downcast_ref::<TryCastExpr>() {
                c.expr().clone()
            } else {
                break;
            };
            e = inner;
        }
        e.data_type(schema).is_ok_and(|t| t.is_integer())
    };
    aggs.iter().all(|a| match a.fun().name() {
        "count" | "min" | "max" | "bool_and" | "bool_or" => true,
        "sum" | "avg" => !a.is_distinct() && a.expressions().iter().all(integral),
        _ => false,
    })
}

fn find_partial(plan: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    if let Some(a) = plan.downcast_ref::<AggregateExec>() {
        if *a.mode() == AggregateMode::Partial {
            return Some(a);
        }
    }
    plan.children().into_iter().find_map(find_partial)
}

impl Engine {
    fn input_of(&self, plan_table: &TableReference) -> Option<Input> {
        self.names.get(plan_table.table()).copied()
    }

    /// The output columns holding the key that every row of `plan` shares with each row it
    /// is made of, when `plan` reads only keyed tables and keyed views and does row-local
    /// work and joins on those keys (so a row's result depends only on the input rows with
    /// its key). `inputs` gets each table or view read, with the column of its key.
    fn aligned_key(
        &self,
        plan: &LogicalPlan,
        inputs: &mut Vec<(Input, usize)>,
    ) -> Option<Vec<usize>> {
        match plan {
            LogicalPlan::TableScan(t) => {
                if t.fetch.is_some() || !t.filters.iter().all(row_local) {
                    return None;
                }
                let input = self.input_of(&t.table_name)?;
                let key = match input {
                    Input::Table(s) => self.keyed[s]
                        .as_ref()
                        .map(|k| super::keyed::read(k).key_col())?,
                    // A windowed view's rows leave when their window closes, unreported.
                    Input::View(v) if self.views[v].info.windowed => return None,
                    Input::View(v) => match self.views[v].result.as_ref()?.key_cols() {
                        [k] => *k,
                        _ => return None,
                    },
                    Input::Stream(_) => return None,
                };
                let pos = match &t.projection {
                    Some(p) => p.iter().position(|&c| c == key)?,
                    None => key,
                };
                inputs.push((input, key));
                Some(vec![pos])
            }
            LogicalPlan::SubqueryAlias(a) => self.aligned_key(&a.input, inputs),
            LogicalPlan::Filter(f) if row_local(&f.predicate) => self.aligned_key(&f.input, inputs),
            LogicalPlan::Projection(p) if p.expr.iter().all(row_local) => {
                let keys = self.aligned_key(&p.input, inputs)?;
                projected_keys(p, &keys)
            }
            // A null-aware anti join (NOT IN) depends on whether the other side holds a NULL.
            LogicalPlan::Join(j) if !j.null_aware && j.filter.as_ref().is_none_or(row_local) => {
                let left = self.aligned_key(&j.left, inputs)?;
                let right = self.aligned_key(&j.right, inputs)?;
                let on_keys = j.on.iter().any(|(l, r)| {
                    column_at(&j.left, l).is_some_and(|c| left.contains(&c))
                        && column_at(&j.right, r).is_some_and(|c| right.contains(&c))
                });
                if !on_keys {
                    return None;
                }
                let shift = j.left.schema().fields().len();
                let right_out = || right.iter().map(|c| c + shift);
                match j.join_type {
                    JoinType::Inner => Some(left.iter().copied().chain(right_out()).collect()),
                    JoinType::Left => Some(left),
                    JoinType::Right => Some(right_out().collect()),
                    JoinType::LeftSemi | JoinType::LeftAnti => Some(left),
                    JoinType::RightSemi | JoinType::RightAnti => Some(right),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// For `ORDER BY … LIMIT n` over a plan aligned on its inputs' key ([`Engine::aligned_key`]),
    /// maybe numbered by `row_number`, `rank` or `dense_rank` over that same order with no
    /// PARTITION BY (a row's number then depends only on the rows before it): the output
    /// columns holding the key, n, and the same plan keeping [`ranking_width`] rows.
    fn ranked_key(
        &self,
        plan: &LogicalPlan,
        inputs: &mut Vec<(Input, usize)>,
    ) -> Option<(Vec<usize>, usize, LogicalPlan)> {
        match plan {
            LogicalPlan::Projection(p) if p.expr.iter().all(row_local) => {
                let (keys, n, wide) = self.ranked_key(&p.input, inputs)?;
                let out = projected_keys(p, &keys)?;
                let wide = plan.with_new_exprs(plan.expressions(), vec![wide]).ok()?;
                Some((out, n, wide))
            }
            LogicalPlan::Limit(l) => {
                let (Ok(SkipType::Literal(0)), Ok(FetchType::Literal(Some(n)))) =
                    (l.get_skip_type(), l.get_fetch_type())
                else {
                    return None;
                };
                let LogicalPlan::Sort(s) = l.input.as_ref() else {
                    return None;
                };
                let n = n.min(s.fetch.unwrap_or(usize::MAX));
                let keys = self.ordered_key(&s.expr, &s.input, inputs)?;
                let width = ranking_width(n);
                let sort = LogicalPlan::Sort(Sort {
                    fetch: Some(width),
                    ..s.clone()
                });
                let limit = LogicalPlan::Limit(Limit {
                    skip: None,
                    fetch: Some(Box::new(lit(width as i64))),
                    input: Arc::new(sort),
                });
                Some((keys, n, limit))
            }
            LogicalPlan::Sort(s) => {
                let n = s.fetch?;
                let keys = self.ordered_key(&s.expr, &s.input, inputs)?;
                let sort = LogicalPlan::Sort(Sort {
                    fetch: Some(ranking_width(n)),
                    ..s.clone()
                });
                Some((keys, n, sort))
            }
            _ => None,
        }
    }

    /// The key columns of `plan` when it is aligned on its inputs' key, maybe under
    /// projections and one ranking window ordered by `order` (written over `plan`'s columns).
    fn ordered_key(
        &self,
        order: &[SortExpr],
        plan: &LogicalPlan,
        inputs: &mut Vec<(Input, usize)>,
    ) -> Option<Vec<usize>> {
        match plan {
            LogicalPlan::Projection(p) if p.expr.iter().all(row_local) => {
                let order = order_below(p, order)?;
                let keys = self.ordered_key(&order, &p.input, inputs)?;
                projected_keys(p, &keys)
            }
            LogicalPlan::Window(w) => {
                let ranks = w
                    .window_expr
                    .iter()
                    .all(|e| match e.clone().unalias_nested().data {
                        Expr::WindowFunction(f) => {
                            RANKING.contains(&f.fun.name())
                                && f.params.partition_by.is_empty()
                                && f.params.filter.is_none()
                                && f.params.order_by == order
                        }
                        _ => false,
                    });
                // The window's own columns come after its input's: the key is one of those.
                if !ranks {
                    return None;
                }
                self.aligned_key(&w.input, inputs)
            }
            _ if order.iter().all(|s| row_local(&s.expr)) => self.aligned_key(plan, inputs),
            _ => None,
        }
    }

    /// A ranked view's ORDER BY written over its inputs' own columns ([`InputOrder`]), when
    /// each sort expression is made of the columns of the tables and views it reads (through
    /// the joins on their key) and is shown as an output column (`order`, from
    /// [`output_order`]). `key` is the output column of the key.
    fn input_order(
        &self,
        plan: &LogicalPlan,
        order: &[OrderCol],
        out_schema: &SchemaRef,
        key: usize,
    ) -> Option<InputOrder> {
        let mut node = plan;
        let sort = loop {
            match node {
                LogicalPlan::Projection(p) => node = &p.input,
                LogicalPlan::Limit(l) => node = &l.input,
                LogicalPlan::Sort(s) => break s,
                _ => return None,
            }
        };
        if sort.expr.len() != order.len() {
            return None;
        }
        // Down to the rows ranked, the order rewritten over them as `ordered_key` reads it.
        let mut exprs = sort.expr.clone();
        let mut base = sort.input.as_ref();
        loop {
            match base {
                LogicalPlan::Projection(p) => {
                    exprs = order_below(p, &exprs)?;
                    base = &p.input;
                }
                LogicalPlan::Window(w) => base = &w.input,
                _ => break,
            }
        }
        let exprs: Vec<Expr> = exprs
            .iter()
            .map(|s| match resolve_expr(base, &s.expr) {
                Some((e, false)) if row_local(&e) => Some(e),
                _ => None,
            })
            .collect::<Option<_>>()?;
        // The columns read, each with its input and its field there (nullable: an input may
        // hold no row for a key).
        let mut columns: Vec<Column> = Vec::new();
        for e in &exprs {
            let _ = e.apply(|x| {
                if let Expr::Column(c) = x {
                    if !columns.contains(c) {
                        columns.push(c.clone());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        let mut placed = Vec::with_capacity(columns.len());
        for c in columns {
            let input = self.input_of(c.relation.as_ref()?)?;
            let schema = match input {
                Input::Table(t) => super::keyed::read(self.keyed[t].as_ref()?).schema().clone(),
                Input::View(v) => self.views[v].info.schema.clone(),
                Input::Stream(_) => return None,
            };
            let at = schema.index_of(&c.name).ok()?;
            let field = Arc::new(schema.field(at).clone().with_nullable(true));
            placed.push((input, at, c.relation, field));
        }
        // Grouped input by input, inputs in the order first met.
        let mut reads: Vec<(Input, Vec<usize>)> = Vec::new();
        let mut fields: Vec<(Option<TableReference>, Arc<Field>)> = Vec::new();
        for (input, ..) in &placed {
            if reads.iter().any(|(i, _)| i == input) {
                continue;
            }
            let mine: Vec<_> = placed.iter().filter(|p| p.0 == *input).collect();
            reads.push((*input, mine.iter().map(|p| p.1).collect()));
            fields.extend(mine.iter().map(|p| (p.2.clone(), p.3.clone())));
        }
        let df = DFSchema::new_with_metadata(fields, Default::default()).ok()?;
        let state = self.ctx.state();
        let physical = exprs
            .into_iter()
            .map(|e| state.create_physical_expr(e, &df).ok())
            .collect::<Option<Vec<_>>>()?;
        let types: Vec<DataType> = order
            .iter()
            .map(|o| out_schema.field(o.col).data_type().clone())
            .collect();
        let sort_fields = order
            .iter()
            .zip(&types)
            .map(|(o, t)| {
                SortField::new_with_options(
                    t.clone(),
                    SortOptions {
                        descending: o.descending,
                        nulls_first: o.nulls_first,
                    },
                )
            })
            .collect();
        let key_type = out_schema.field(key).data_type().clone();
        Some(InputOrder {
            reads,
            schema: Arc::new(df.as_arrow().clone()),
            exprs: physical,
            out_cols: order.iter().map(|o| o.col).collect(),
            types,
            rows: RowConverter::new(sort_fields).ok()?,
            keys: RowConverter::new(vec![SortField::new(key_type)]).ok()?,
        })
    }

    fn scans(&self, plan: &LogicalPlan) -> Vec<Input> {
        let mut out = Vec::new();
        let _ = plan.apply_with_subqueries(|p| {
            if let LogicalPlan::TableScan(t) = p {
                if let Some(i) = self.input_of(&t.table_name) {
                    if !out.contains(&i) {
                        out.push(i);
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        out
    }

    /// Whether `plan` reads an event stream (directly, or through an interval join).
    fn reads_stream(&self, plan: &LogicalPlan) -> bool {
        self.scans(plan).iter().any(|i| match i {
            Input::Stream(_) => true,
            Input::View(v) => matches!(self.views[*v].kind, ViewKind::IntervalJoin(_)),
            Input::Table(_) => false,
        })
    }

    /// `Some(feed)` when `plan` is row-local work (and lookup joins) over one event stream or
    /// over an interval join's rows.
    fn stateless_stream(&self, plan: &LogicalPlan) -> Option<Feed> {
        match plan {
            LogicalPlan::TableScan(t) => match self.input_of(&t.table_name) {
                Some(Input::Stream(i)) => Some(Feed::Stream(i)),
                Some(Input::View(v)) if matches!(self.views[v].kind, ViewKind::IntervalJoin(_)) => {
                    Some(Feed::Join(v))
                }
                _ => None,
            },
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Unnest(_)
            | LogicalPlan::Repartition(_) => self.stateless_stream(plan.inputs()[0]),
            LogicalPlan::Join(j) => {
                let (l, r) = (self.reads_stream(&j.left), self.reads_stream(&j.right));
                match (l, r) {
                    (true, false)
                        if matches!(
                            j.join_type,
                            JoinType::Inner
                                | JoinType::Left
                                | JoinType::LeftSemi
                                | JoinType::LeftAnti
                        ) =>
                    {
                        self.stateless_stream(&j.left)
                    }
                    (false, true)
                        if matches!(
                            j.join_type,
                            JoinType::Inner
                                | JoinType::Right
                                | JoinType::RightSemi
                                | JoinType::RightAnti
                        ) =>
                    {
                        self.stateless_stream(&j.right)
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The Aggregate node when `plan` is row-local nodes over a GROUP BY of a stateless input.
    fn streaming_aggregate<'a>(&self, plan: &'a LogicalPlan) -> Option<(&'a Aggregate, Feed)> {
        match plan {
            LogicalPlan::Aggregate(a) => self.stateless_stream(&a.input).map(|s| (a, s)),
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
                self.streaming_aggregate(plan.inputs()[0])
            }
            _ => None,
        }
    }

    /// The Aggregate node and the table or view it reads, when `plan` is row-local nodes over
    /// a GROUP BY of row-local nodes over one keyed table or one view whose changelog says
    /// what left it (a view keeping one row per key, not windowed).
    fn changelog_aggregate<'a>(&self, plan: &'a LogicalPlan) -> Option<(&'a Aggregate, Input)> {
        if has_subquery(plan) {
            return None;
        }
        match plan {
            LogicalPlan::Aggregate(a) => self.changelog_scan(&a.input).map(|i| (a, i)),
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
                self.changelog_aggregate(plan.inputs()[0])
            }
            _ => None,
        }
    }

    fn changelog_scan(&self, plan: &LogicalPlan) -> Option<Input> {
        if has_subquery(plan) {
            return None;
        }
        match plan {
            LogicalPlan::TableScan(t) if t.fetch.is_none() => {
                match self.input_of(&t.table_name)? {
                    Input::Table(i) => Some(Input::Table(i)),
                    Input::View(v) => {
                        let view = &self.views[v];
                        let keeps_rows = view.result.is_some()
                            && view.info.mode == OutputMode::Update
                            && !view.info.windowed
                            && !matches!(view.kind, ViewKind::IntervalJoin(_));
                        keeps_rows.then_some(Input::View(v))
                    }
                    Input::Stream(_) => None,
                }
            }
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
                self.changelog_scan(plan.inputs()[0])
            }
            _ => None,
        }
    }

    fn stream_name(&self, i: usize) -> &str {
        &self.streams.streams[i].name
    }

    /// Why a stateful operator cannot take raw events, and what to write instead.
    fn explain_unbounded(&self, parent: &LogicalPlan, feed: Feed) -> String {
        let what = match feed {
            Feed::Stream(stream) => format!("the raw events of `{}`", self.stream_name(stream)),
            Feed::Join(_) => "the rows of a stream–stream join".to_string(),
            Feed::Changes(_) => "the changes of a table or view".to_string(),
        };
        match parent {
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => format!(
                "ORDER BY / LIMIT over {what} would need all of history: aggregate first (GROUP BY) and rank the aggregate"
            ),
            LogicalPlan::Window(_) => format!(
                "window functions (OVER ...) over {what} would need all of history: aggregate first, then use OVER in a view over that view"
            ),
            LogicalPlan::Join(_) => format!(
                "joining {what} with another event stream this way needs unbounded state: {JOIN_HELP}; or aggregate one side in its own view and join the stream against that view (a lookup join)"
            ),
            LogicalPlan::Union(_) => format!(
                "UNION over {what} is not supported: write one view per stream, then combine the views"
            ),
            other => format!(
                "`{}` over {what} is not supported by the streaming engine: aggregate first (GROUP BY)",
                other.display()
            ),
        }
    }

    /// Compiles and registers one view (and any hidden views it is split into).
    pub(crate) async fn compile(&mut self, def: &ViewDef) -> Result<()> {
        let state = self.ctx.state();
        let plan = state
            .create_logical_plan(&def.sql)
            .await
            .map_err(|e| view_error(def, &e))?;
        if !matches!(
            plan,
            LogicalPlan::Projection(_)
                | LogicalPlan::Aggregate(_)
                | LogicalPlan::Sort(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::Distinct(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::SubqueryAlias(_)
                | LogicalPlan::Union(_)
                | LogicalPlan::Join(_)
                | LogicalPlan::TableScan(_)
        ) {
            return Err(reject(def, "a view file holds one SELECT query"));
        }
        let plan = state.optimize(&plan).map_err(|e| view_error(def, &e))?;
        let mut hidden = 0;
        let plan = self.extract_joins(def, plan, &mut hidden).await?;
        if self.streaming_aggregate(&plan).is_some() || self.stateless_stream(&plan).is_some() {
            let view = self.compile_streaming(def, &def.name, plan, false).await?;
            self.register(view)?;
            return Ok(());
        }
        let plan = self.split(def, plan, &mut hidden).await?;
        let plan = state.optimize(&plan).map_err(|e| view_error(def, &e))?;
        // A GROUP BY over a keyed table or a view (such as the hidden view a streaming GROUP BY
        // became) runs on their changelog when it can; otherwise it is recomputed.
        if def.mode == OutputMode::Update && self.changelog_aggregate(&plan).is_some() {
            if let Some(view) = self
                .compile_incremental(def, &def.name, plan.clone(), false)
                .await?
            {
                return self.register(view);
            }
        }
        // Recomputed: a GROUP BY of a table under it (a scalar subquery's, a joined
        // aggregate's) runs on the table's changelog as a hidden view, so that each recompute
        // reads the groups, not the whole table.
        let plan = self.split_tables(def, plan, &mut hidden).await?.data;
        let view = self.compile_recompute(def, &def.name, plan, false).await?;
        self.register(view)
    }

    /// Replaces every GROUP BY over the changelog of a keyed table or a view below the top of
    /// `plan` with a scan of a hidden view that keeps it incrementally.
    fn split_tables<'a>(
        &'a mut self,
        def: &'a ViewDef,
        plan: LogicalPlan,
        hidden: &'a mut usize,
    ) -> futures::future::BoxFuture<'a, Result<Transformed<LogicalPlan>>> {
        Box::pin(async move {
            let Transformed {
                data: plan,
                mut transformed,
                ..
            } = self.split_subqueries(def, plan, hidden).await?;
            let mut new_children = Vec::new();
            for child in plan.inputs() {
                let child = child.clone();
                let scan = match self.changelog_aggregate(&child) {
                    Some(_) => self.hide_changelog_aggregate(def, &child, hidden).await?,
                    None => None,
                };
                let t = match scan {
                    Some(scan) => Transformed::yes(scan),
                    None => self.split_tables(def, child, hidden).await?,
                };
                transformed |= t.transformed;
                new_children.push(t.data);
            }
            if !transformed {
                return Ok(Transformed::no(plan));
            }
            let exprs = plan.expressions();
            plan.with_new_exprs(exprs, new_children)
                .map(Transformed::yes)
                .map_err(|e| view_error(def, &e))
        })
    }

    /// Registers a GROUP BY over a changelog as a hidden view and returns a scan of it that
    /// stands in for `plan`; `None` when it cannot run on the changelog.
    async fn hide_changelog_aggregate(
        &mut self,
        def: &ViewDef,
        plan: &LogicalPlan,
        hidden: &mut usize,
    ) -> Result<Option<LogicalPlan>> {
        let name = format!("__{}_{}", def.name, *hidden + 1);
        let Some(view) = self
            .compile_incremental(def, &name, plan.clone(), true)
            .await?
        else {
            return Ok(None);
        };
        *hidden += 1;
        self.register(view)?;
        self.scan_hidden(&name, plan.schema())
            .map(Some)
            .map_err(|e| view_error(def, &e))
    }

    /// Replaces every streaming GROUP BY under a stateful operator with a hidden view.
    fn split<'a>(
        &'a mut self,
        def: &'a ViewDef,
        plan: LogicalPlan,
        hidden: &'a mut usize,
    ) -> futures::future::BoxFuture<'a, Result<LogicalPlan>> {
        Box::pin(async move {
            if !self.reads_stream(&plan) {
                return Ok(plan);
            }
            if self.streaming_aggregate(&plan).is_some() {
                *hidden += 1;
                let name = format!("__{}_{}", def.name, hidden);
                let view = self
                    .compile_streaming(def, &name, plan.clone(), true)
                    .await?;
                let df_schema = plan.schema().clone();
                self.register(view)?;
                return self
                    .scan_hidden(&name, &df_schema)
                    .map_err(|e| view_error(def, &e));
            }
            let mut children = Vec::new();
            for child in plan.inputs() {
                if let Some(s) = self.stateless_stream(child) {
                    return Err(reject(def, self.explain_unbounded(&plan, s)));
                }
                children.push(child.clone());
            }
            if let LogicalPlan::Join(j) = &plan {
                if self.reads_stream(&j.left) && self.reads_stream(&j.right) {
                    let s = self.scans(&j.left).into_iter().find_map(|i| match i {
                        Input::Stream(s) => Some(s),
                        _ => None,
                    });
                    let s = Feed::Stream(s.unwrap_or(0));
                    return Err(reject(def, self.explain_unbounded(&plan, s)));
                }
            }
            let mut new_children = Vec::with_capacity(children.len());
            for c in children {
                new_children.push(self.split(def, c, hidden).await?);
            }
            let exprs = plan.expressions();
            plan.with_new_exprs(exprs, new_children)
                .map_err(|e| view_error(def, &e))
        })
    }

    /// Replaces each uncorrelated subquery in `plan`'s own expressions that is a GROUP BY
    /// over a changelog (`(SELECT avg(price) FROM products)`) with a scan of a hidden view
    /// that keeps it incrementally; equal subqueries share one.
    async fn split_subqueries(
        &mut self,
        def: &ViewDef,
        plan: LogicalPlan,
        hidden: &mut usize,
    ) -> Result<Transformed<LogicalPlan>> {
        let mut found: Vec<LogicalPlan> = Vec::new();
        plan.apply_subqueries(|sq| {
            if let LogicalPlan::Subquery(s) = sq {
                let inner = s.subquery.as_ref();
                if s.outer_ref_columns.is_empty()
                    && self.changelog_aggregate(inner).is_some()
                    && !found.contains(inner)
                {
                    found.push(inner.clone());
                }
            }
            Ok(TreeNodeRecursion::Jump)
        })
        .map_err(|e| view_error(def, &e))?;
        if found.is_empty() {
            return Ok(Transformed::no(plan));
        }
        let mut scans: Vec<(LogicalPlan, LogicalPlan)> = Vec::new();
        for inner in found {
            if let Some(scan) = self.hide_changelog_aggregate(def, &inner, hidden).await? {
                scans.push((inner, scan));
            }
        }
        plan.map_subqueries(|sq| match sq {
            LogicalPlan::Subquery(mut s) => {
                match scans.iter().find(|(inner, _)| inner == s.subquery.as_ref()) {
                    Some((_, scan)) => {
                        s.subquery = Arc::new(scan.clone());
                        Ok(Transformed::yes(LogicalPlan::Subquery(s)))
                    }
                    None => Ok(Transformed::no(LogicalPlan::Subquery(s))),
                }
            }
            other => Ok(Transformed::no(other)),
        })
        .map_err(|e| view_error(def, &e))
    }

    /// A scan of a hidden view that looks, column for column, like the subtree it replaced.
    fn scan_hidden(&self, name: &str, df: &DFSchema) -> datafusion::error::Result<LogicalPlan> {
        let Some(Input::View(v)) = self.names.get(name).copied() else {
            return Err(DataFusionError::Internal(format!(
                "hidden view {name} missing"
            )));
        };
        let live = self.views[v].live.clone();
        let live_schema = live.schema_ref();
        let exprs: Vec<Expr> = df
            .iter()
            .enumerate()
            .map(|(i, (q, f))| {
                Expr::Column(Column::new(
                    Some(TableReference::bare(name)),
                    live_schema.field(i).name(),
                ))
                .alias_qualified(q.cloned(), f.name())
            })
            .collect();
        LogicalPlanBuilder::scan(name, provider_as_source(Arc::new(live)), None)?
            .project(exprs)?
            .build()
    }

    /// Compiles a view fed by a stream (or an interval join).
    async fn compile_streaming(
        &mut self,
        def: &ViewDef,
        name: &str,
        plan: LogicalPlan,
        hidden: bool,
    ) -> Result<CompiledView> {
        self.compile_incremental(def, name, plan, hidden)
            .await?
            .ok_or_else(|| reject(def, "internal: not a streaming view"))
    }

    /// Compiles a view fed by a stream, an interval join, or the changelog of a keyed table or
    /// view. `None`: a GROUP BY over a changelog this engine cannot keep incrementally (its
    /// aggregates cannot take rows back, or its row identity is not its GROUP BY), which is
    /// then recomputed instead.
    async fn compile_incremental(
        &mut self,
        def: &ViewDef,
        name: &str,
        plan: LogicalPlan,
        hidden: bool,
    ) -> Result<Option<CompiledView>> {
        let state = self.ctx.state();
        let out_schema = output_schema(plan.schema(), hidden).map_err(|m| reject(def, m))?;
        let inputs = self.scans(&plan);
        if let Some(feed) = self.stateless_stream(&plan) {
            let physical = state
                .create_physical_plan(&plan)
                .await
                .map_err(|e| view_error(def, &e))?;
            let key_cols = match &def.key {
                Some(k) if !hidden => Some(resolve_key(def, &out_schema, k)?),
                _ => None,
            };
            let info = ViewInfo::new(
                def,
                name,
                hidden,
                out_schema.clone(),
                key_cols.clone().unwrap_or_default(),
                OutputMode::Append,
                false,
            );
            let result = match key_cols {
                Some(k) => Some(ViewResult::new(out_schema.clone(), k)?),
                None => None,
            };
            return Ok(Some(CompiledView::new(
                info,
                ViewKind::Stateless {
                    feed,
                    plan: physical,
                },
                inputs,
                result,
            )));
        }
        let Some((agg, feed)) = self.streaming_aggregate(&plan).or_else(|| {
            self.changelog_aggregate(&plan)
                .map(|(a, i)| (a, Feed::Changes(i)))
        }) else {
            return Ok(None);
        };
        let over_changes = matches!(feed, Feed::Changes(_));
        if agg
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            if over_changes {
                return Ok(None);
            }
            return Err(reject(def, "GROUPING SETS / ROLLUP / CUBE are not supported in continuous views: write one view per grouping"));
        }
        // The window column, if any.
        let mut window = None;
        for (i, g) in agg.group_expr.iter().enumerate() {
            let Some((resolved, unnested)) = resolve_expr(&agg.input, g) else {
                continue;
            };
            let stream_schema = match feed {
                Feed::Stream(s) => &self.streams.streams[s],
                // A table's rows move between groups as they change: no window closes.
                Feed::Changes(_) => continue,
                Feed::Join(_) => {
                    if windows_anything(&resolved) {
                        return Err(reject(def, "windows over the rows of a stream–stream join are not supported: group without a window (the join's time bound already limits which pairs meet), or window one stream in its own view"));
                    }
                    continue;
                }
            };
            if let Some(size) = window_size(
                &resolved,
                unnested,
                &stream_schema.name,
                &stream_schema.event_time,
            ) {
                if size <= 0 {
                    return Err(reject(def, "window size must be positive"));
                }
                if window.is_some() {
                    return Err(reject(
                        def,
                        "only one window column (date_bin or hop) per GROUP BY",
                    ));
                }
                window = Some(WindowSpec {
                    group_col: i,
                    size_ms: size,
                });
            }
        }
        if def.mode == OutputMode::Append && window.is_none() && !hidden {
            return Err(reject(def, "@mode: append needs a window on event time (GROUP BY date_bin(...) or unnest(hop(...))) so that rows become final; use @mode: update"));
        }
        // Key columns of the output. A hidden view whose SELECT drops GROUP BY columns (the
        // optimizer prunes what the outer query does not read) carries them as extra columns.
        let mut out_schema = out_schema;
        let mut carry_keys = false;
        let key_cols = match (&def.key, hidden) {
            (Some(k), false) => resolve_key(def, &out_schema, k)?,
            _ => match key_through(&plan) {
                Some(k) => k,
                None if hidden => {
                    let agg_schema =
                        output_schema(agg.schema.as_ref(), true).map_err(|m| reject(def, m))?;
                    let n = out_schema.fields().len();
                    let mut fields: Vec<Field> = out_schema
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone())
                        .collect();
                    for (i, f) in agg_schema.fields()[..agg.group_expr.len()]
                        .iter()
                        .enumerate()
                    {
                        fields.push(Field::new(
                            format!("__key_{i}"),
                            f.data_type().clone(),
                            true,
                        ));
                    }
                    out_schema = Arc::new(Schema::new(fields));
                    carry_keys = true;
                    (n..n + agg.group_expr.len()).collect()
                }
                None if over_changes => return Ok(None),
                None => {
                    return Err(reject(def, "every GROUP BY column must appear in the SELECT list (it identifies the row), or declare the row's identity with `-- @key: col, ...`"));
                }
            },
        };
        // DataFusion's physical aggregate, re-run in partial mode per batch.
        let agg_plan = LogicalPlan::Aggregate(agg.clone());
        let physical = state
            .create_physical_plan(&agg_plan)
            .await
            .map_err(|e| view_error(def, &e))?;
        let Some(top) = first_aggregate(&physical) else {
            return Err(reject(def, "internal: no aggregate in the physical plan"));
        };
        let base = match top.mode() {
            AggregateMode::Final | AggregateMode::FinalPartitioned => {
                find_partial(&physical).unwrap_or(top)
            }
            _ => top,
        };
        if over_changes
            && (base.group_expr().has_grouping_set()
                || base.filter_expr().iter().any(|f| f.is_some()))
        {
            return Ok(None);
        }
        if base.group_expr().has_grouping_set() {
            return Err(reject(
                def,
                "GROUPING SETS are not supported in continuous views",
            ));
        }
        // The view's partial aggregate over `input`.
        let partial_over = |input: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
            Ok(Arc::new(
                AggregateExec::try_new(
                    AggregateMode::Partial,
                    base.group_expr().clone(),
                    base.aggr_expr().to_vec(),
                    base.filter_expr().to_vec(),
                    input,
                    base.input_schema(),
                )
                .map_err(|e| view_error(def, &e))?,
            ))
        };
        let partial = partial_over(base.input().clone())?;
        // Absorbing rounds, a view without windows over events keeps its input rows (what
        // the partial aggregate reads: after lookups and filters) and aggregates them in one
        // run per emit ([`Buffered`]), if that cannot change its results: emits come with
        // the clock, and a replay must give the same bits every time.
        let buffered = if window.is_none()
            && !over_changes
            && split_free(base.aggr_expr(), &base.input_schema())
        {
            let input = base.input().clone();
            let data = LiveData::default();
            let scan: Arc<dyn ExecutionPlan> = Arc::new(
                LiveScanExec::new(input.schema(), data.clone(), None)
                    .map_err(|e| view_error(def, &e))?,
            );
            Some(Buffered::new(input, partial_over(scan)?, data))
        } else {
            None
        };
        let agg_out = output_schema(agg_plan.schema(), true).map_err(|m| reject(def, m))?;
        let group_schema = Arc::new(Schema::new(
            agg_out.fields()[..agg.group_expr.len()].to_vec(),
        ));
        let mut groups =
            GroupState::new(base.aggr_expr().to_vec(), &group_schema, agg_out, window)?;
        // Over a changelog, min and max keep each group's raw values (the group columns and the
        // aggregates' arguments, computed by `raw`) so that a row can be taken back out.
        let mut raw: Option<Arc<dyn ExecutionPlan>> = None;
        let min_max = groups.min_max();
        if over_changes && !min_max.is_empty() {
            let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = base.group_expr().expr().to_vec();
            for (n, &j) in min_max.iter().enumerate() {
                let Some(arg) = base.aggr_expr()[j].expressions().into_iter().next() else {
                    return Ok(None);
                };
                exprs.push((arg, format!("__value_{n}")));
            }
            raw = Some(Arc::new(
                ProjectionExec::try_new(exprs, base.input().clone())
                    .map_err(|e| view_error(def, &e))?,
            ));
            groups.keep_values();
        }
        let count_star = if over_changes {
            match groups.retractable(&base.input_schema()) {
                Some(Some(j)) => Some(j),
                // One group over a keyed table, whose rows are replaced but never removed:
                // once it has rows it never empties, so nothing needs to count them.
                Some(None)
                    if agg.group_expr.is_empty()
                        && matches!(feed, Feed::Changes(Input::Table(_))) =>
                {
                    None
                }
                _ => return Ok(None),
            }
        } else {
            None
        };
        let chain = self.chain(def, &plan)?;
        let info = ViewInfo::new(
            def,
            name,
            hidden,
            out_schema.clone(),
            key_cols.clone(),
            if hidden { OutputMode::Update } else { def.mode },
            window.is_some(),
        );
        // The view's key is its GROUP BY columns passed through: one row per group, so its
        // rows can be derived from its groups (see `engine::derived`).
        let one_row_per_group = !hidden && key_through(&plan).as_ref() == Some(&key_cols);
        let result = ViewResult::new(out_schema, key_cols)?;
        Ok(Some(CompiledView::new(
            info,
            ViewKind::Aggregate(Box::new(AggregateView {
                feed,
                partial,
                groups,
                chain,
                window,
                carry_keys,
                count_star,
                raw,
                stale: false,
                one_row_per_group,
                derived: None,
                pending: Default::default(),
                buffered,
            })),
            inputs,
            Some(result),
        )))
    }

    /// The row-local steps between the Aggregate and the view's output, bottom up.
    fn chain(&self, def: &ViewDef, plan: &LogicalPlan) -> Result<Vec<Step>> {
        let state = self.ctx.state();
        let mut nodes = Vec::new();
        let mut p = plan;
        loop {
            match p {
                LogicalPlan::Aggregate(_) => break,
                LogicalPlan::Projection(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::SubqueryAlias(_) => {
                    nodes.push(p);
                    p = p.inputs()[0];
                }
                _ => return Err(reject(def, "internal: unexpected node above the aggregate")),
            }
        }
        let mut steps = Vec::new();
        for node in nodes.into_iter().rev() {
            match node {
                LogicalPlan::Filter(f) => {
                    let e = state
                        .create_physical_expr(f.predicate.clone(), f.input.schema())
                        .map_err(|e| view_error(def, &e))?;
                    steps.push(Step::Filter(e));
                }
                LogicalPlan::Projection(pr) => {
                    let exprs = pr
                        .expr
                        .iter()
                        .map(|e| state.create_physical_expr(e.clone(), pr.input.schema()))
                        .collect::<datafusion::error::Result<Vec<Arc<dyn PhysicalExpr>>>>()
                        .map_err(|e| view_error(def, &e))?;
                    let schema =
                        output_schema(pr.schema.as_ref(), true).map_err(|m| reject(def, m))?;
                    steps.push(Step::Project(exprs, schema));
                }
                _ => {}
            }
        }
        Ok(steps)
    }

    async fn compile_recompute(
        &mut self,
        def: &ViewDef,
        name: &str,
        plan: LogicalPlan,
        hidden: bool,
    ) -> Result<CompiledView> {
        let state = self.ctx.state();
        let out_schema = output_schema(plan.schema(), hidden).map_err(|m| reject(def, m))?;
        if def.mode == OutputMode::Append {
            return Err(reject(def, "@mode: append is for windowed GROUP BY views over a stream; this view is recomputed from tables and views, use @mode: update"));
        }
        let mut key_inputs = Vec::new();
        let aligned = self.aligned_key(&plan, &mut key_inputs);
        let key_cols = match (&def.key, &aligned) {
            (Some(k), _) => resolve_key(def, &out_schema, k)?,
            (None, Some(cols)) if key_through(&plan).is_none() => vec![cols[0]],
            _ => key_through(&plan).unwrap_or_else(|| (0..out_schema.fields().len()).collect()),
        };
        // Recomputed key by key when the view's key is the key its every row shares with its
        // inputs.
        let mut aligned = match (&aligned, &key_cols[..]) {
            (Some(cols), [k]) if cols.contains(k) => Some(Aligned {
                keys: key_inputs,
                built: false,
                rank: None,
            }),
            _ => None,
        };
        let mut physical = state
            .create_physical_plan(&plan)
            .await
            .map_err(|e| view_error(def, &e))?;
        let order = output_order(&plan);
        // The first n rows of an order over such a plan: recomputed over the keys changed and
        // the keys ranked first last time (see `Rank`).
        let mut rank_inputs = Vec::new();
        if let (None, Some((cols, shown, wide)), [k]) = (
            &aligned,
            self.ranked_key(&plan, &mut rank_inputs),
            &key_cols[..],
        ) {
            if cols.contains(k) {
                let wide_plan = state
                    .create_physical_plan(&wide)
                    .await
                    .map_err(|e| view_error(def, &e))?;
                // Rows must come out in the order, from one partition.
                if wide_plan.output_partitioning().partition_count() == 1
                    && wide_plan.output_ordering().is_some()
                {
                    let narrow = std::mem::replace(&mut physical, wide_plan);
                    let by_inputs = self.input_order(&plan, &order, &out_schema, *k);
                    aligned = Some(Aligned {
                        keys: rank_inputs,
                        built: false,
                        rank: Some(Box::new(Rank::new(shown, *k, narrow, by_inputs))),
                    });
                }
            }
        }
        let inputs = self.scans(&plan);
        let mut info = ViewInfo::new(
            def,
            name,
            hidden,
            out_schema.clone(),
            key_cols.clone(),
            OutputMode::Update,
            false,
        );
        info.order = order;
        let result = ViewResult::new(out_schema, key_cols)?;
        Ok(CompiledView::new(
            info,
            ViewKind::Recompute {
                plan: physical,
                aligned,
            },
            inputs,
            Some(result),
        ))
    }
}

/// A view's ORDER BY as output columns: the first sort under the plan's top (through limits
/// and at most one projection), where each sort expression is an output expression of that
/// projection (or, without one, an output column). Empty otherwise: the order is then not
/// one an output column shows.
pub(super) fn output_order(plan: &LogicalPlan) -> Vec<OrderCol> {
    let mut projection: Option<&Projection> = None;
    let mut node = plan;
    let sort = loop {
        match node {
            LogicalPlan::Limit(l) => node = &l.input,
            LogicalPlan::Projection(p) if projection.is_none() => {
                projection = Some(p);
                node = &p.input;
            }
            LogicalPlan::Sort(s) => break s,
            _ => return Vec::new(),
        }
    };
    let mut order = Vec::with_capacity(sort.expr.len());
    for e in &sort.expr {
        let col = match projection {
            Some(p) => {
                let wanted = e.expr.clone().unalias();
                p.expr.iter().position(|x| x.clone().unalias() == wanted)
            }
            None => match &e.expr {
                Expr::Column(c) => sort.input.schema().index_of_column(c).ok(),
                _ => None,
            },
        };
        let Some(col) = col else {
            return Vec::new();
        };
        order.push(OrderCol {
            col,
            descending: !e.asc,
            nulls_first: e.nulls_first,
        });
    }
    order
}

/// Whether a node's own expressions hold a subquery (the incremental steps cannot run one).
fn has_subquery(node: &LogicalPlan) -> bool {
    node.expressions().iter().any(|e| {
        e.exists(|x| {
            Ok(matches!(
                x,
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
            ))
        })
        .unwrap_or(true)
    })
}

fn resolve_key(def: &ViewDef, schema: &SchemaRef, names: &[String]) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|n| {
            schema.index_of(n).map_err(|_| {
                let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                reject(
                    def,
                    format!(
                        "@key column `{n}` is not an output column (columns: {})",
                        cols.join(", ")
                    ),
                )
            })
        })
        .collect()
}

/// How to write a join of two event streams that runs with bounded state.
const JOIN_HELP: &str = "join two event streams on an equality key and a bound on both sides between their event times, e.g. `FROM a JOIN b ON a.customer_id = b.customer_id AND b.t BETWEEN a.t - INTERVAL '1 hour' AND a.t + INTERVAL '1 hour'`, each side reading one stream through filters, projections and lookup joins only";

/// `(column, offset in ms)` when `e` is a column plus or minus constant intervals.
fn time_term(e: &Expr) -> Option<(Column, i64)> {
    match unalias(e) {
        Expr::Column(c) => Some((c.clone(), 0)),
        Expr::BinaryExpr(b) => {
            let (c, o) = time_term(&b.left)?;
            let d = literal_ms(&b.right)?;
            match b.op {
                Operator::Plus => Some((c, o.checked_add(d)?)),
                Operator::Minus => Some((c, o.checked_sub(d)?)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Bounds on `right.t - left.t` that a predicate sets: `(lower, upper, whole)`, each bound
/// optional; `whole` when the predicate says nothing else (the join can then check it on
/// event times alone). `side` tells whether a column is the left (true) or right (false)
/// event time.
fn time_bounds(
    e: &Expr,
    side: &dyn Fn(&Column) -> Option<bool>,
) -> (Option<Bound>, Option<Bound>, bool) {
    let cmp = |x: &Expr, op: Operator, y: &Expr| -> (Option<Bound>, Option<Bound>) {
        let (Some((cx, ox)), Some((cy, oy))) = (time_term(x), time_term(y)) else {
            return (None, None);
        };
        // x op y  <=>  cx - cy op oy - ox
        let (op, d) = match (side(&cx), side(&cy)) {
            (Some(false), Some(true)) => (op, oy - ox),
            (Some(true), Some(false)) => match op.swap() {
                Some(op) => (op, ox - oy),
                None => return (None, None),
            },
            _ => return (None, None),
        };
        let b = |strict| Some(Bound { ms: d, strict });
        match op {
            Operator::Gt => (b(true), None),
            Operator::GtEq => (b(false), None),
            Operator::Lt => (None, b(true)),
            Operator::LtEq => (None, b(false)),
            Operator::Eq => (b(false), b(false)),
            _ => (None, None),
        }
    };
    match e {
        Expr::Between(b) if !b.negated => {
            let (lo, _) = cmp(&b.expr, Operator::GtEq, &b.low);
            let (_, hi) = cmp(&b.expr, Operator::LtEq, &b.high);
            (lo, hi, lo.is_some() && hi.is_some())
        }
        Expr::BinaryExpr(b) => {
            let (lo, hi) = cmp(&b.left, b.op, &b.right);
            (lo, hi, lo.is_some() || hi.is_some())
        }
        _ => (None, None, false),
    }
}

impl Engine {
    /// Replaces every join of two event streams with a scan of a hidden interval-join view,
    /// whose rows feed the rest of the plan like a stream's.
    fn extract_joins<'a>(
        &'a mut self,
        def: &'a ViewDef,
        plan: LogicalPlan,
        hidden: &'a mut usize,
    ) -> futures::future::BoxFuture<'a, Result<LogicalPlan>> {
        Box::pin(async move {
            let children: Vec<LogicalPlan> = plan.inputs().into_iter().cloned().collect();
            let mut new_children = Vec::with_capacity(children.len());
            let mut changed = false;
            for c in children {
                let n = self.extract_joins(def, c.clone(), hidden).await?;
                changed |= n != c;
                new_children.push(n);
            }
            let plan = if changed {
                let exprs = plan.expressions();
                plan.with_new_exprs(exprs, new_children)
                    .map_err(|e| view_error(def, &e))?
            } else {
                plan
            };
            let LogicalPlan::Join(j) = &plan else {
                return Ok(plan);
            };
            let (ls, rs) = match (
                self.stateless_stream(&j.left),
                self.stateless_stream(&j.right),
            ) {
                (Some(Feed::Stream(l)), Some(Feed::Stream(r))) => (l, r),
                (Some(_), Some(_)) => {
                    return Err(reject(
                        def,
                        format!("a view joins at most two event streams (an interval join's rows cannot be joined with a third stream): {JOIN_HELP}"),
                    ))
                }
                _ => return Ok(plan),
            };
            *hidden += 1;
            let name = format!("__{}_{}", def.name, hidden);
            let view = self.compile_interval_join(def, &name, j, ls, rs).await?;
            self.register(view)?;
            self.scan_hidden(&name, plan.schema())
                .map_err(|e| view_error(def, &e))
        })
    }

    async fn compile_interval_join(
        &mut self,
        def: &ViewDef,
        name: &str,
        j: &datafusion::logical_expr::Join,
        ls: usize,
        rs: usize,
    ) -> Result<CompiledView> {
        let (lname, rname) = (self.stream_name(ls), self.stream_name(rs));
        if j.join_type != JoinType::Inner {
            return Err(reject(
                def,
                format!("only inner joins of two event streams run incrementally (this is a {} join of `{lname}` and `{rname}`: its unmatched rows could only be emitted once no match can come); {JOIN_HELP}", j.join_type),
            ));
        }
        if j.on.is_empty() {
            return Err(reject(
                def,
                format!("a join of the event streams `{lname}` and `{rname}` needs an equality key (ON a.key = b.key), so that a new row meets only the other side's rows with its key; {JOIN_HELP}"),
            ));
        }
        let time_cols = |plan: &LogicalPlan, stream: usize| -> Vec<usize> {
            let s = &self.streams.streams[stream];
            plan.schema()
                .columns()
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    definition(plan, c)
                        .is_some_and(|(e, _)| is_event_time(&e, &s.name, &s.event_time))
                })
                .map(|(i, _)| i)
                .collect()
        };
        let (lt, rt) = (time_cols(&j.left, ls), time_cols(&j.right, rs));
        let side = |c: &Column| -> Option<bool> {
            match (
                j.left.schema().index_of_column(c),
                j.right.schema().index_of_column(c),
            ) {
                (Ok(i), _) if lt.contains(&i) => Some(true),
                (_, Ok(i)) if rt.contains(&i) => Some(false),
                _ => None,
            }
        };
        let (mut lo, mut hi): (Option<Bound>, Option<Bound>) = (None, None);
        let mut add = |(l, h, whole): (Option<Bound>, Option<Bound>, bool)| {
            if let Some(l) = l {
                lo = Some(lo.map_or(l, |x| x.tighter_lower(l)));
            }
            if let Some(h) = h {
                hi = Some(hi.map_or(h, |x| x.tighter_upper(h)));
            }
            whole
        };
        // Conjuncts that only bound the time difference are checked on event times before
        // any row is gathered; the rest stays a filter over the joined rows.
        let mut rest = Vec::new();
        if let Some(f) = &j.filter {
            for c in datafusion::logical_expr::utils::split_conjunction(f) {
                if !add(time_bounds(c, &side)) {
                    rest.push(c.clone());
                }
            }
        }
        for (l, r) in &j.on {
            add(time_bounds(
                &Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                    Box::new(r.clone()),
                    Operator::Eq,
                    Box::new(l.clone()),
                )),
                &side,
            ));
        }
        let (lo, hi) = match (lo, hi) {
            (Some(lo), Some(hi)) => (lo, hi),
            (None, _) => {
                return Err(reject(
                    def,
                    format!("this join of the event streams `{lname}` and `{rname}` needs unbounded state: nothing bounds how much earlier a `{rname}` row may be than the `{lname}` row it joins, so every `{rname}` row would wait forever for a later `{lname}` row. Bound both sides of the time difference; {JOIN_HELP}"),
                ))
            }
            (_, None) => {
                return Err(reject(
                    def,
                    format!("this join of the event streams `{lname}` and `{rname}` needs unbounded state: nothing bounds how much later a `{rname}` row may be than the `{lname}` row it joins, so every `{lname}` row would wait forever for a later `{rname}` row. Bound both sides of the time difference; {JOIN_HELP}"),
                ))
            }
        };
        if lo.ms > hi.ms || (lo.ms == hi.ms && (lo.strict || hi.strict)) {
            return Err(reject(
                def,
                "the join's time bound is empty (its lower end is above its upper end): no rows would ever join",
            ));
        }
        let state = self.ctx.state();
        let mut sides = Vec::with_capacity(2);
        for (plan, stream, times, pick) in [(&j.left, ls, &lt, 0usize), (&j.right, rs, &rt, 1usize)]
        {
            let physical = state
                .create_physical_plan(plan)
                .await
                .map_err(|e| view_error(def, &e))?;
            let keys =
                j.on.iter()
                    .map(|on| {
                        let e = if pick == 0 { &on.0 } else { &on.1 };
                        state.create_physical_expr(e.clone(), plan.schema())
                    })
                    .collect::<datafusion::error::Result<Vec<_>>>()
                    .map_err(|e| view_error(def, &e))?;
            let Some(&time_col) = times.iter().find(|&&i| {
                matches!(
                    plan.schema().field(i).data_type(),
                    arrow::datatypes::DataType::Timestamp(
                        arrow::datatypes::TimeUnit::Millisecond,
                        _
                    )
                )
            }) else {
                return Err(reject(
                    def,
                    "each side of a stream–stream join must keep its stream's event-time column as it is (not cast)",
                ));
            };
            sides.push(Side::new(stream, physical, keys, time_col));
        }
        let key_types =
            j.on.iter()
                .map(|(l, _)| l.get_type(j.left.schema()))
                .collect::<datafusion::error::Result<Vec<_>>>()
                .map_err(|e| view_error(def, &e))?;
        let filter = match datafusion::logical_expr::utils::conjunction(rest) {
            Some(f) => Some(
                state
                    .create_physical_expr(f, &j.schema)
                    .map_err(|e| view_error(def, &e))?,
            ),
            None => None,
        };
        let out_schema = output_schema(&j.schema, true).map_err(|m| reject(def, m))?;
        let right = sides.pop();
        let left = sides.pop();
        let (Some(left), Some(right)) = (left, right) else {
            return Err(reject(def, "internal: join sides"));
        };
        let join = IntervalJoin::new(left, right, lo, hi, filter, out_schema.clone(), key_types)?;
        let plan = LogicalPlan::Join(j.clone());
        let info = ViewInfo::new(
            def,
            name,
            true,
            out_schema,
            Vec::new(),
            OutputMode::Append,
            false,
        );
        Ok(CompiledView::new(
            info,
            ViewKind::IntervalJoin(Box::new(join)),
            self.scans(&plan),
            None,
        ))
    }
}
