//! A local Kafka-protocol broker for trials and tests: librdkafka's mock cluster, real brokers
//! speaking the Kafka protocol over TCP, in this process. Not for production: it keeps a
//! bounded log per partition in memory and nothing on disk.

use std::ffi::CString;

use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use rdkafka_sys as rdsys;

use crate::error::{Error, Result};

pub struct LocalBroker {
    cluster: *mut rdsys::RDKafkaMockCluster,
    // Owns the librdkafka handle the cluster lives on; dropped after the cluster.
    _handle: BaseProducer,
    bootstrap: String,
}

// The mock cluster is owned by this struct alone and librdkafka's mock API is thread-safe.
unsafe impl Send for LocalBroker {}
unsafe impl Sync for LocalBroker {}

impl LocalBroker {
    /// Starts `brokers` brokers on free loopback ports.
    pub fn start(brokers: i32) -> Result<Self> {
        let err = |m: String| Error::Source {
            source_name: "broker".into(),
            message: m,
        };
        let handle: BaseProducer = ClientConfig::new()
            .set("log_level", "3")
            .create()
            .map_err(|e| err(e.to_string()))?;
        // SAFETY: the handle outlives the cluster (destroyed first in Drop).
        let cluster =
            unsafe { rdsys::rd_kafka_mock_cluster_new(handle.client().native_ptr(), brokers) };
        if cluster.is_null() {
            return Err(err("librdkafka could not start the mock cluster".into()));
        }
        // Without this every new consumer group waits ~3 s before its first assignment.
        unsafe { rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0) };
        let bootstrap = unsafe {
            let p = rdsys::rd_kafka_mock_cluster_bootstraps(cluster);
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        };
        Ok(LocalBroker {
            cluster,
            _handle: handle,
            bootstrap,
        })
    }

    /// `host:port,...` for clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (the mock does not support the admin CreateTopics call).
    pub fn create_topic(&self, topic: &str, partitions: i32, replication: i32) -> Result<()> {
        let t = CString::new(topic).map_err(|e| Error::Config(e.to_string()))?;
        let rc = unsafe {
            rdsys::rd_kafka_mock_topic_create(self.cluster, t.as_ptr(), partitions, replication)
        };
        if rc != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(Error::Source {
                source_name: "broker".into(),
                message: format!("creating topic {topic}: {rc:?}"),
            });
        }
        Ok(())
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        unsafe { rdsys::rd_kafka_mock_cluster_destroy(self.cluster) };
        let _ = self._handle.flush(std::time::Duration::from_millis(10));
    }
}
