//! Discovery of the controller replicas to scrape: static URLs and/or the
//! Ready pods matching a label selector, each scraped at its own pod IP
//! (never through the Service, which would reach one replica at random).

use crate::scrape::{Pool, Target};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use std::net::IpAddr;
use std::sync::Arc;

/// Where controller pods are found and how their endpoint is formed.
#[derive(Debug, Clone)]
pub struct PodDiscovery {
    pub namespace: String,
    pub selector: String,
    pub scheme: String,
    pub port: u16,
    pub path: String,
}

impl PodDiscovery {
    /// The pod's metrics endpoint, if the pod should be scraped now.
    pub fn target(&self, pod: &Pod) -> Option<Target> {
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let status = pod.status.as_ref()?;
        let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
        let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
        if !ready {
            return None;
        }
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let name = pod.metadata.name.as_deref()?;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or(&self.namespace);
        Some(Target { id: Arc::from(format!("{namespace}/{name}")), url: format!("{}://{host}:{}{}", self.scheme, self.port, self.path) })
    }
}

/// Keeps the pool's targets equal to `fixed` plus the Ready controller pods.
/// Returns only when the watch stream ends (it retries errors with backoff).
pub async fn watch_pods(client: kube::Client, discovery: PodDiscovery, fixed: Vec<Target>, pool: Arc<Pool>) {
    let api: kube::Api<Pod> = kube::Api::namespaced(client, &discovery.namespace);
    let config = watcher::Config::default().labels(&discovery.selector);
    let (reader, writer) = reflector::store();
    let events = reflector(writer, watcher(api, config)).default_backoff();
    futures::pin_mut!(events);
    let mut synced = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(watcher::Event::InitDone) => {
                synced = true;
                apply(&discovery, &fixed, &reader.state(), &pool);
            }
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) if synced => {
                apply(&discovery, &fixed, &reader.state(), &pool);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, namespace = %discovery.namespace, "watching controller pods failed; retrying"),
        }
    }
}

fn apply(discovery: &PodDiscovery, fixed: &[Target], pods: &[Arc<Pod>], pool: &Pool) {
    let mut targets = fixed.to_vec();
    targets.extend(pods.iter().filter_map(|pod| discovery.target(pod)));
    tracing::debug!(count = targets.len(), "controller targets");
    pool.set_targets(targets);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn discovery() -> PodDiscovery {
        PodDiscovery {
            namespace: "pravega".into(),
            selector: "component=pravega-controller".into(),
            scheme: "http".into(),
            port: 10080,
            path: "/prometheus".into(),
        }
    }

    fn pod(name: &str, ip: Option<&str>, ready: &str) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("pravega".into()), ..Default::default() },
            status: Some(PodStatus {
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition { type_: "Ready".into(), status: ready.into(), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_pods_are_scraped_at_their_ip() {
        let target = discovery().target(&pod("c-0", Some("10.1.2.3"), "True")).unwrap();
        assert_eq!(&*target.id, "pravega/c-0");
        assert_eq!(target.url, "http://10.1.2.3:10080/prometheus");
        let v6 = discovery().target(&pod("c-1", Some("fd00::5"), "True")).unwrap();
        assert_eq!(v6.url, "http://[fd00::5]:10080/prometheus");
    }

    #[test]
    fn unready_ipless_and_terminating_pods_are_not() {
        assert!(discovery().target(&pod("c", Some("10.1.2.3"), "False")).is_none());
        assert!(discovery().target(&pod("c", None, "True")).is_none());
        assert!(discovery().target(&pod("c", Some("not-an-ip"), "True")).is_none());
        let mut terminating = pod("c", Some("10.1.2.3"), "True");
        terminating.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(discovery().target(&terminating).is_none());
    }
}
