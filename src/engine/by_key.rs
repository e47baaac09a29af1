//! Expressions over the rows a key-aligned view's inputs hold for a key.
//!
//! A view recomputed key by key ([`super::Aligned`]) makes each of its rows from the rows its
//! tables and views hold for that row's key, joined on the key. Some of what the view does
//! with them can be told without running its plan: where a ranked view's row sorts (its
//! ORDER BY, [`super::rank::InputOrder`]), or whether a key can have a row at all (its WHERE).
//! [`InputExprs`] holds such expressions, written over the inputs' own columns by the planner;
//! the engine gathers those columns for a batch of keys (null where an input holds no row for
//! a key, as the join on the key makes it) and evaluates them, a vectorised pass per key
//! instead of a run of the plan.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use super::Input;
use crate::error::Result;

/// Expressions over columns of the tables and views a view reads.
pub(crate) struct InputExprs {
    /// Each input read, with the columns read of it (positions in its schema).
    pub reads: Vec<(Input, Vec<usize>)>,
    /// Those columns, input after input, all nullable: the batch the expressions run over.
    pub schema: SchemaRef,
    pub exprs: Vec<Arc<dyn PhysicalExpr>>,
}

impl InputExprs {
    /// The expressions' values over `rows` (the columns of [`InputExprs::reads`], one row per
    /// key).
    pub fn evaluate(&self, rows: &RecordBatch) -> Result<Vec<ArrayRef>> {
        Ok(self
            .exprs
            .iter()
            .map(|e| e.evaluate(rows)?.into_array(rows.num_rows()))
            .collect::<datafusion::error::Result<_>>()?)
    }
}
