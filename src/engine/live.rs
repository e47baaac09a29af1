//! `LiveTable`: a DataFusion table whose rows are swapped in by the engine between executions.
//!
//! Every table a view reads is one of these: the current micro-batch of a stream, the current
//! rows of a keyed table, or the current result of another view. Physical plans are built once;
//! `LiveScanExec` reads whatever the table holds at the moment the plan is executed.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use super::keyed::{self, SharedTable};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

/// What a live table holds right now.
#[derive(Clone, Default)]
pub struct LiveData {
    /// Rows set by the engine; `None` (keyed tables only): the table's current rows.
    batches: Arc<RwLock<Option<Vec<RecordBatch>>>>,
    /// The keyed table these rows are, for lookup joins that probe its key index.
    table: Option<SharedTable>,
}

impl LiveData {
    /// The keyed table behind these rows, if they are one.
    pub fn table(&self) -> Option<&SharedTable> {
        self.table.as_ref()
    }
    /// Holds `batches` until the next change (a keyed table: instead of its rows).
    pub fn set(&self, batches: Vec<RecordBatch>) {
        self.replace(Some(batches));
    }
    /// Sets what is held (`None`: a keyed table's current rows) and returns what was.
    pub fn replace(&self, batches: Option<Vec<RecordBatch>>) -> Option<Vec<RecordBatch>> {
        let mut g = self.batches.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *g, batches)
    }
    /// What a scan reads now; a keyed table's rows are gathered into one batch on demand.
    pub fn get(&self) -> Result<Vec<RecordBatch>> {
        let g = self.batches.read().unwrap_or_else(|e| e.into_inner());
        match (g.as_ref(), &self.table) {
            (Some(b), _) => Ok(b.clone()),
            (None, Some(t)) => Ok(vec![keyed::read(t)
                .rows()
                .map_err(|e| DataFusionError::External(Box::new(e)))?]),
            (None, None) => Ok(Vec::new()),
        }
    }
    /// Whether `other` is this same live table (not a copy of its rows).
    pub fn same(&self, other: &LiveData) -> bool {
        Arc::ptr_eq(&self.batches, &other.batches)
    }
    pub fn num_rows(&self) -> usize {
        let g = self.batches.read().unwrap_or_else(|e| e.into_inner());
        match (g.as_ref(), &self.table) {
            (Some(b), _) => b.iter().map(|b| b.num_rows()).sum(),
            (None, Some(t)) => keyed::read(t).len(),
            (None, None) => 0,
        }
    }
}

/// A table provider over [`LiveData`].
#[derive(Clone)]
pub struct LiveTable {
    schema: SchemaRef,
    data: LiveData,
}

impl fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveTable({} columns)", self.schema.fields().len())
    }
}

impl LiveTable {
    pub fn new(schema: SchemaRef) -> Self {
        LiveTable {
            schema,
            data: LiveData::default(),
        }
    }
    /// A live table holding a keyed table's rows; lookup joins against it probe the table's
    /// key index instead of scanning it.
    pub fn keyed(schema: SchemaRef, table: SharedTable) -> Self {
        LiveTable {
            schema,
            data: LiveData {
                batches: Arc::default(),
                table: Some(table),
            },
        }
    }
    pub fn data(&self) -> &LiveData {
        &self.data
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(LiveScanExec::new(
            self.schema.clone(),
            self.data.clone(),
            projection.cloned(),
        )?))
    }
}

/// Scans a [`LiveData`] at execution time.
#[derive(Debug)]
pub struct LiveScanExec {
    data: LiveData,
    projection: Option<Vec<usize>>,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for LiveData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveData")
    }
}

impl LiveScanExec {
    pub fn new(schema: SchemaRef, data: LiveData, projection: Option<Vec<usize>>) -> Result<Self> {
        let out = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema,
        };
        let props = PlanProperties::new(
            EquivalenceProperties::new(out),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(LiveScanExec {
            data,
            projection,
            props: Arc::new(props),
        })
    }
    pub fn data(&self) -> &LiveData {
        &self.data
    }
    /// Columns of the table this scan produces (`None`: all).
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }
}

impl DisplayAs for LiveScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LiveScanExec: projection={:?}", self.projection)
    }
}

impl ExecutionPlan for LiveScanExec {
    fn name(&self) -> &'static str {
        "LiveScanExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batches = self.data.get()?;
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            self.props.eq_properties.schema().clone(),
            self.projection.clone(),
        )?))
    }
}

/// Adds to `read` the columns of `data` that `plan`'s scans of it produce; sets it to `None`
/// (every column) where a scan reads all of them.
pub fn columns_read(
    plan: &Arc<dyn ExecutionPlan>,
    data: &LiveData,
    read: &mut Option<BTreeSet<usize>>,
) {
    if let Some(scan) = plan.downcast_ref::<LiveScanExec>() {
        if scan.data().same(data) {
            match (scan.projection(), read.as_mut()) {
                (Some(p), Some(set)) => set.extend(p.iter().copied()),
                _ => *read = None,
            }
        }
    }
    for child in plan.children() {
        columns_read(child, data, read);
    }
}

impl LiveTable {
    pub fn schema_ref(&self) -> SchemaRef {
        self.schema.clone()
    }
}
