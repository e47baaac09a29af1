//! Kafka: the local trial broker, the producer behind `runnel generate --kafka`, and client
//! configuration shared by both and by the Kafka source (`source::kafka`).

pub mod broker;
pub mod producer;

use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::ClientConfig;

/// `key=value` librdkafka properties from the command line or environment.
#[derive(Debug, Clone, Default)]
pub struct KafkaOptions {
    pub props: Vec<(String, String)>,
}

impl KafkaOptions {
    pub fn parse(items: &[String]) -> Result<Self, String> {
        let mut props = Vec::new();
        for i in items {
            let (k, v) = i.split_once('=').ok_or_else(|| {
                format!("--kafka-option `{i}`: use key=value, e.g. security.protocol=SASL_SSL")
            })?;
            props.push((k.trim().to_string(), v.to_string()));
        }
        Ok(KafkaOptions { props })
    }

    pub fn apply(&self, c: &mut ClientConfig) {
        for (k, v) in &self.props {
            c.set(k, v);
        }
    }

    /// The properties as they may be logged: secrets replaced.
    pub fn redacted(&self) -> Vec<String> {
        self.props
            .iter()
            .map(|(k, v)| {
                if is_secret(k) {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect()
    }
}

/// Whether a librdkafka property holds a secret that must never be printed.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key.pem",
        "keystore",
        "jaas",
        "credentials",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// The topics the cluster behind `client` has. Fails within ten seconds, with a message naming
/// `bootstrap`, when no broker answers: start-up says so rather than retrying silently.
pub fn existing_topics<C: ClientContext>(
    client: &Client<C>,
    bootstrap: &str,
) -> Result<Vec<String>, String> {
    let md = client
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| format!("cannot reach Kafka at {bootstrap}: {e}"))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name().to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let o = KafkaOptions::parse(&[
            "sasl.password=hunter2".into(),
            "security.protocol=SASL_SSL".into(),
        ])
        .unwrap();
        let r = o.redacted().join(" ");
        assert!(!r.contains("hunter2") && r.contains("SASL_SSL"), "{r}");
        assert!(KafkaOptions::parse(&["nokey".into()]).is_err());
    }
}
