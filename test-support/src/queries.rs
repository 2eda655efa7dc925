//! The requests tests make of the adapter: metrics API paths, and
//! `kubectl get --raw`.

use std::process::Command;

/// An External metric query for `metric` in namespace `default`.
pub fn external_path(metric: &str, selector: &str) -> String {
    format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{metric}?labelSelector={}", encode(selector))
}

/// An Object metric query for `metric` of the flink-taskmanager Deployment.
pub fn object_path(version: &str, metric: &str, selector: &str) -> String {
    format!(
        "/apis/custom.metrics.k8s.io/{version}/namespaces/default/deployments.apps/flink-taskmanager/{metric}?metricLabelSelector={}",
        encode(selector)
    )
}

/// `text` encoded for a query string.
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `kubectl get --raw PATH` against a plain-HTTP server.
pub fn kubectl_raw(server: &str, path: &str) -> (bool, String) {
    let output = Command::new("kubectl")
        .args(["--server", server, "get", "--raw", path])
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("kubectl must be installed (see README)");
    let text = if output.status.success() { output.stdout } else { output.stderr };
    (output.status.success(), String::from_utf8_lossy(&text).into_owned())
}
