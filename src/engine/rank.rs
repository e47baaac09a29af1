//! Ranked views: the first n rows, in some order, of a plan aligned on its inputs' key
//! (`top_sellers`: products by units sold), kept without reading every key each round.
//!
//! The plan keeps more rows than the view shows (its *ranking*, [`super::plan::ranking_width`]).
//! A round recomputes it over the keys the inputs changed plus the keys of the last ranking.
//! Every other key is unchanged and ranked below each row of the last ranking; so as soon as
//! an unchanged row of the last ranking comes out at position p of the new run, or not at all,
//! the first p rows (all of them, if not at all) are the first p of every key, numbered
//! alike. When that covers the n rows shown, they are the view; the rows so confirmed are the
//! next ranking. Otherwise (every ranked row changed, or the unchanged ones all fell behind)
//! the plan runs over everything once more. Among rows the order ties, either may be shown,
//! as in any SQL engine.
//!
//! Most keys a round changes stay far below the ranking (a product that sold a few units more
//! is still no best seller). When the order is made of the inputs' own columns
//! ([`InputOrder`]: `s.units DESC, s.product_id` over `product_sales s`), where a changed
//! key's row sorts now is read from the inputs' rows for that key, without running the plan;
//! a key outside the ranking whose row sorts after the ranking's last row (the *threshold*)
//! is set aside. That is safe: it sorts after every unchanged row of the ranking, as the
//! unchanged keys outside it do, so the proof above holds with it left out. So the run goes
//! over the ranking and the few keys that may enter it, not over every key that changed.
//! The threshold also confirms rows when no row of the ranking is left unchanged (the best
//! sellers sell every round): every key outside the run sorts at or after it, so the run's
//! rows that sort before it are the first of every key.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{OwnedRow, Row, RowConverter};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use super::Input;
use crate::error::Result;

/// A ranked view's ORDER BY written over its inputs' own columns: where a key's row sorts can
/// be told from each input's row for that key (null where the input has none, as the join
/// on the key makes it), without running the view's plan.
pub(crate) struct InputOrder {
    /// Each input the order reads, with the columns it reads (positions in its schema).
    pub reads: Vec<(Input, Vec<usize>)>,
    /// Those columns, input after input: the batch the expressions run over.
    pub schema: SchemaRef,
    /// The ORDER BY expressions over that batch.
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The view's output columns holding the same values, and their types.
    pub out_cols: Vec<usize>,
    pub types: Vec<DataType>,
    /// Row format of the sort values in the view's order: rows compare as they sort.
    pub rows: RowConverter,
    /// Row format of the view's key.
    pub keys: RowConverter,
}

impl InputOrder {
    /// Sort values (in [`InputOrder::rows`] format) of columns evaluated by `exprs` or read
    /// from the output, cast to the output's types.
    fn to_rows(&self, values: &[ArrayRef]) -> Result<arrow::row::Rows> {
        let cast: Vec<ArrayRef> = values
            .iter()
            .zip(&self.types)
            .map(|(v, t)| {
                Ok(if v.data_type() == t {
                    v.clone()
                } else {
                    cast(v, t)?
                })
            })
            .collect::<Result<_>>()?;
        Ok(self.rows.convert_columns(&cast)?)
    }

    /// The sort values of the rows in `inputs` (the columns of [`InputOrder::reads`], one row
    /// per key).
    pub fn evaluate(&self, inputs: RecordBatch) -> Result<arrow::row::Rows> {
        let values: Vec<ArrayRef> = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&inputs)?.into_array(inputs.num_rows()))
            .collect::<datafusion::error::Result<_>>()?;
        self.to_rows(&values)
    }
}

/// See the module's documentation.
pub(crate) struct Rank {
    /// n: the rows the view shows.
    pub shown: usize,
    /// The output column holding the key.
    pub key_col: usize,
    /// Keys of the rows of the last run known to be first in the order, first first (`None`:
    /// not run yet).
    pub ranking: Option<ArrayRef>,
    /// Whether the ranking holds every row there is.
    pub complete: bool,
    /// Runs of the plan, and how many of them read every key.
    pub runs: u64,
    pub full_runs: u64,
    /// The view's plan as written, keeping only the n rows shown. A run over every key made
    /// because too many keys changed to go key by key uses it: keeping the whole ranking's
    /// width costs more (a top-k heap of 210 rows instead of 10), and when most keys change
    /// every round the next run goes over every key again anyway. Its n rows are still the
    /// first n of every key, so they are a valid (short) ranking.
    pub narrow: Arc<dyn ExecutionPlan>,
    /// Runs of [`Rank::narrow`].
    pub narrow_runs: u64,
    /// The order over the inputs' columns, when it is made of them and shown in the output.
    pub order: Option<InputOrder>,
    /// The sort values of the ranking's last row ([`InputOrder::rows`] format).
    pub threshold: Option<OwnedRow>,
    /// Changed keys set aside so far, their rows sorting after the threshold.
    pub set_aside: u64,
}

impl Rank {
    pub(crate) fn new(
        shown: usize,
        key_col: usize,
        narrow: Arc<dyn ExecutionPlan>,
        order: Option<InputOrder>,
    ) -> Self {
        Rank {
            shown,
            key_col,
            ranking: None,
            complete: false,
            runs: 0,
            full_runs: 0,
            narrow,
            narrow_runs: 0,
            order,
            threshold: None,
            set_aside: 0,
        }
    }

    /// Takes the first `len` rows of a run (in the order) as the ranking, and the last of
    /// them as the threshold.
    pub fn set_ranking(&mut self, rows: &RecordBatch, len: usize) -> Result<()> {
        self.ranking = Some(rows.column(self.key_col).slice(0, len));
        self.threshold = match &self.order {
            Some(order) if len > 0 => {
                let last: Vec<ArrayRef> = order
                    .out_cols
                    .iter()
                    .map(|&c| rows.column(c).slice(len - 1, 1))
                    .collect();
                Some(order.to_rows(&last)?.row(0).owned())
            }
            _ => None,
        };
        Ok(())
    }

    /// The order over the inputs' columns, when changed keys can be set aside this round:
    /// the view has a threshold, and its ranking does not hold every row (then every key is
    /// read anyway, and the run over them all is what says the ranking is complete).
    pub fn input_order(&self) -> Option<&InputOrder> {
        match (&self.order, &self.threshold, &self.ranking) {
            (Some(o), Some(_), Some(_)) if !self.complete => Some(o),
            _ => None,
        }
    }

    /// Which of the changed `keys` may enter the ranking: those of the ranking itself and
    /// those whose rows do not sort after the threshold (`sorts`: each key's sort values, from
    /// [`InputOrder::evaluate`]). The others are set aside. Keeps the keys' order.
    pub fn may_rank(&self, keys: &ArrayRef, sorts: &arrow::row::Rows) -> Result<Vec<u32>> {
        let (Some(order), Some(threshold), Some(ranking)) =
            (&self.order, &self.threshold, &self.ranking)
        else {
            return Ok((0..keys.len() as u32).collect());
        };
        let threshold: Row<'_> = threshold.row();
        let ranked_rows = order.keys.convert_columns(std::slice::from_ref(ranking))?;
        let ranked: HashSet<Row<'_>, ahash::RandomState> = ranked_rows.iter().collect();
        let key_rows = order.keys.convert_columns(std::slice::from_ref(keys))?;
        Ok((0..keys.len())
            .filter(|&j| sorts.row(j) <= threshold || ranked.contains(&key_rows.row(j)))
            .map(|j| j as u32)
            .collect())
    }

    /// How many of `rows` (a run over the keys `changed` and the keys of the `last` ranking,
    /// in order; keys of the view's key type) are known to be the first rows of every key;
    /// `None` when fewer than the rows shown.
    pub fn confirmed(
        &self,
        rows: &RecordBatch,
        last: &ArrayRef,
        changed: &ArrayRef,
    ) -> Result<Option<usize>> {
        let n = rows.num_rows();
        if self.complete {
            // Every key was in the ranking or changed: the run saw them all.
            return Ok(Some(n));
        }
        let keys = rows.column(self.key_col);
        let conv = RowConverter::new(vec![arrow::row::SortField::new(keys.data_type().clone())])?;
        let ran = conv.convert_columns(std::slice::from_ref(keys))?;
        let last = conv.convert_columns(std::slice::from_ref(last))?;
        let changed = conv.convert_columns(std::slice::from_ref(changed))?;
        let changed: HashSet<_> = changed.iter().collect();
        let at: std::collections::HashMap<_, usize> =
            ran.iter().enumerate().map(|(p, k)| (k, p)).collect();
        // Every key outside the run sorts at or after the threshold (it was outside the last
        // ranking, or was set aside), so the run's rows before the threshold are first.
        let mut confirmed = match (&self.order, &self.threshold) {
            (Some(order), Some(threshold)) => {
                let values: Vec<ArrayRef> = order
                    .out_cols
                    .iter()
                    .map(|&c| rows.column(c).clone())
                    .collect();
                let sorts = order.to_rows(&values)?;
                let threshold = threshold.row();
                (0..n).position(|j| sorts.row(j) >= threshold).unwrap_or(n)
            }
            _ => 0,
        };
        for key in last.iter().filter(|k| !changed.contains(k)) {
            match at.get(&key) {
                // Ranked below the whole run: every row of the run is confirmed.
                None => return Ok(Some(n)),
                Some(&p) => confirmed = confirmed.max(p + 1),
            }
        }
        Ok((confirmed >= self.shown).then_some(confirmed))
    }
}
