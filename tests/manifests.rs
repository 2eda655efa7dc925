//! The YAML a user applies (apiservice/, manifests/, hpa/): every document
//! parsed; the names that tie the files together cross-checked; every
//! kustomization rendered with `kubectl kustomize`; and the serving-cert
//! script's output served by the adapter started with the Deployment's own
//! flags, queried exactly as the two HPA forms query it and authorized by the
//! shipped RBAC. Server-side dry runs against a real kube-apiserver are the
//! end-to-end test's part.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use test_support::adapter::Adapter;
use test_support::adapter_binary;
use test_support::controller_api::FakeControllerApi;
use test_support::exposition::stream_exposition;
use test_support::fake_controller::FakeController;
use test_support::kube_api::{tls_client, write_kubeconfig, StubApi};
use test_support::net::{free_port, install_crypto_provider};
use test_support::pki::Ca;
use test_support::queries::encode;
use test_support::repo::repo;

const ROOTS: &[&str] = &["apiservice", "manifests", "hpa"];
const ADAPTER_NAMESPACE: &str = "pravega-metrics";
const ADAPTER_NAME: &str = "pravega-metrics-adapter";
const SERVING_CERT_SECRET: &str = "pravega-metrics-adapter-serving-cert";
/// The identity of the HPA controller (kube-controller-manager with
/// --use-service-account-credentials).
const HPA_SERVICE_ACCOUNT: (&str, &str) = ("kube-system", "horizontal-pod-autoscaler");
const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

/// Objects every cluster has, which the files may refer to without defining.
const BUILT_IN_NAMESPACES: &[&str] = &["kube-system"];
const BUILT_IN_SERVICE_ACCOUNTS: &[(&str, &str)] = &[HPA_SERVICE_ACCOUNT];
const BUILT_IN_CLUSTER_ROLES: &[&str] = &["system:auth-delegator"];
const BUILT_IN_ROLES: &[(&str, &str)] = &[("kube-system", "extension-apiserver-authentication-reader")];

/// One YAML document and where it came from (`path#index`).
#[derive(Clone, Debug)]
struct Doc {
    source: String,
    value: Value,
}

impl Doc {
    fn str_at(&self, pointer: &str) -> Option<&str> {
        self.value.pointer(pointer).and_then(Value::as_str)
    }
    fn kind(&self) -> &str {
        self.str_at("/kind").unwrap_or("")
    }
    fn name(&self) -> &str {
        self.str_at("/metadata/name").unwrap_or("")
    }
    fn namespace(&self) -> Option<&str> {
        self.str_at("/metadata/namespace")
    }
    fn is(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        self.kind() == kind && self.namespace() == namespace && self.name() == name
    }
    /// Kustomize's own files and `*.patch.yaml` are not objects to apply.
    fn is_kustomize_config(&self) -> bool {
        matches!(self.kind(), "Kustomization" | "Component")
    }
    fn is_patch(&self) -> bool {
        self.source.contains(".patch.yaml#")
    }
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("manifests-{label}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|entry| entry.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml") {
            out.push(path);
        }
    }
}

fn all_yaml_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for root in ROOTS {
        yaml_files(&repo().join(root), &mut files);
    }
    files
}

fn parse_yaml(text: &str, origin: &str) -> Result<Vec<Doc>, String> {
    let values: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| format!("{origin}: not valid YAML: {e}"))?;
    Ok(values
        .into_iter()
        .enumerate()
        .filter(|(_, value)| !value.is_null())
        .map(|(i, value)| Doc { source: format!("{origin}#{i}"), value })
        .collect())
}

fn parse_file(path: &Path) -> Result<Vec<Doc>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let origin = path.strip_prefix(repo()).unwrap_or(path).display().to_string();
    parse_yaml(&text, &origin)
}

fn load_repo_docs() -> Vec<Doc> {
    let files = all_yaml_files();
    assert!(files.len() >= 20, "expected the manifests, found only {files:?}");
    let (docs, errors): (Vec<_>, Vec<_>) = files.iter().map(|f| parse_file(f)).partition(Result::is_ok);
    let errors: Vec<String> = errors.into_iter().map(Result::unwrap_err).collect();
    assert!(errors.is_empty(), "unparseable YAML:\n{}", errors.join("\n"));
    docs.into_iter().flat_map(Result::unwrap).collect()
}

// ---------------------------------------------------------------------------
// Checks. Each returns the problems it found, so that the tests below can
// also show that a broken document is caught.

fn basic_problems(doc: &Doc) -> Vec<String> {
    let mut problems = Vec::new();
    for field in ["/apiVersion", "/kind"] {
        if doc.str_at(field).is_none_or(str::is_empty) {
            problems.push(format!("{}: missing {field}", doc.source));
        }
    }
    if !doc.is_kustomize_config() && doc.name().is_empty() {
        problems.push(format!("{}: missing /metadata/name", doc.source));
    }
    problems
}

fn find<'a>(docs: &'a [Doc], kind: &str, namespace: Option<&str>, name: &str) -> Option<&'a Doc> {
    docs.iter().find(|d| !d.is_patch() && d.is(kind, namespace, name))
}

fn labels(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

fn pod_labels(deployment: &Doc) -> BTreeMap<String, String> {
    labels(deployment.value.pointer("/spec/template/metadata/labels"))
}

fn containers(deployment: &Doc) -> &[Value] {
    deployment.value.pointer("/spec/template/spec/containers").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Deployments in `namespace` whose pods carry every label of `selector`.
fn selected_deployments<'a>(docs: &'a [Doc], namespace: Option<&str>, selector: &BTreeMap<String, String>) -> Vec<&'a Doc> {
    docs.iter()
        .filter(|d| d.kind() == "Deployment" && d.namespace() == namespace && !selector.is_empty())
        .filter(|d| {
            let pods = pod_labels(d);
            selector.iter().all(|(k, v)| pods.get(k) == Some(v))
        })
        .collect()
}

fn has_container_port(deployment: &Doc, port: &Value) -> bool {
    containers(deployment).iter().flat_map(|c| c["ports"].as_array().into_iter().flatten()).any(|p| match port {
        Value::String(name) => p["name"].as_str() == Some(name),
        number => &p["containerPort"] == number,
    })
}

fn cross_reference_problems(docs: &[Doc]) -> Vec<String> {
    let mut problems = Vec::new();
    for doc in docs.iter().filter(|d| !d.is_kustomize_config()) {
        let at = &doc.source;
        if let Some(ns) = doc.namespace() {
            if find(docs, "Namespace", None, ns).is_none() && !BUILT_IN_NAMESPACES.contains(&ns) {
                problems.push(format!("{at}: namespace {ns} is not defined"));
            }
        }
        if doc.is_patch() {
            if find(docs, doc.kind(), doc.namespace(), doc.name()).is_none() {
                problems.push(format!("{at}: patches {} {}, which no file defines", doc.kind(), doc.name()));
            }
            continue;
        }
        match doc.kind() {
            "APIService" => apiservice_problems(docs, doc, &mut problems),
            "RoleBinding" | "ClusterRoleBinding" => binding_problems(docs, doc, &mut problems),
            "Deployment" => deployment_problems(docs, doc, &mut problems),
            "Service" => service_problems(docs, doc, &mut problems),
            "PodDisruptionBudget" => {
                let selector = labels(doc.value.pointer("/spec/selector/matchLabels"));
                if selected_deployments(docs, doc.namespace(), &selector).is_empty() {
                    problems.push(format!("{at}: selector {selector:?} matches no Deployment's pods"));
                }
            }
            "HorizontalPodAutoscaler" => hpa_problems(docs, doc, &mut problems),
            _ => {}
        }
    }
    problems
}

fn apiservice_problems(docs: &[Doc], doc: &Doc, problems: &mut Vec<String>) {
    let at = &doc.source;
    let (group, version) = (doc.str_at("/spec/group").unwrap_or(""), doc.str_at("/spec/version").unwrap_or(""));
    if doc.name() != format!("{version}.{group}") {
        problems.push(format!("{at}: name {} is not <version>.<group> ({version}.{group})", doc.name()));
    }
    let (ns, name) = (doc.str_at("/spec/service/namespace"), doc.str_at("/spec/service/name").unwrap_or(""));
    match find(docs, "Service", ns, name) {
        None => problems.push(format!("{at}: points at Service {ns:?}/{name}, which no file defines")),
        Some(service) => {
            let port = doc.value.pointer("/spec/service/port").cloned().unwrap_or(Value::from(443));
            let ports = service.value.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
            if !ports.iter().any(|p| p["port"] == port) {
                problems.push(format!("{at}: Service {name} has no port {port}"));
            }
        }
    }
    if let Some(source) = doc.str_at("/metadata/annotations/cert-manager.io~1inject-ca-from") {
        let (ns, name) = source.split_once('/').unwrap_or(("", source));
        if find(docs, "Certificate", Some(ns), name).is_none() {
            problems.push(format!("{at}: injects the CA of Certificate {source}, which no file defines"));
        }
    }
}

fn binding_problems(docs: &[Doc], doc: &Doc, problems: &mut Vec<String>) {
    let at = &doc.source;
    let role = doc.str_at("/roleRef/name").unwrap_or("");
    let role_known = match doc.str_at("/roleRef/kind") {
        Some("ClusterRole") => find(docs, "ClusterRole", None, role).is_some() || BUILT_IN_CLUSTER_ROLES.contains(&role),
        Some("Role") => {
            let ns = doc.namespace().unwrap_or("");
            find(docs, "Role", Some(ns), role).is_some() || BUILT_IN_ROLES.contains(&(ns, role))
        }
        other => {
            problems.push(format!("{at}: roleRef kind {other:?}"));
            true
        }
    };
    if !role_known {
        problems.push(format!("{at}: roleRef {role} is neither defined nor built in"));
    }
    let subjects = doc.value["subjects"].as_array().cloned().unwrap_or_default();
    if subjects.is_empty() {
        problems.push(format!("{at}: no subjects"));
    }
    for subject in subjects.iter().filter(|s| s["kind"] == "ServiceAccount") {
        let (ns, name) = (subject["namespace"].as_str().unwrap_or(""), subject["name"].as_str().unwrap_or(""));
        if find(docs, "ServiceAccount", Some(ns), name).is_none() && !BUILT_IN_SERVICE_ACCOUNTS.contains(&(ns, name)) {
            problems.push(format!("{at}: subject ServiceAccount {ns}/{name} is not defined"));
        }
    }
}

fn deployment_problems(docs: &[Doc], doc: &Doc, problems: &mut Vec<String>) {
    let at = &doc.source;
    let ns = doc.namespace();
    let selector = labels(doc.value.pointer("/spec/selector/matchLabels"));
    let pods = pod_labels(doc);
    if selector.is_empty() || !selector.iter().all(|(k, v)| pods.get(k) == Some(v)) {
        problems.push(format!("{at}: selector {selector:?} does not match its pod labels {pods:?}"));
    }
    if let Some(account) = doc.str_at("/spec/template/spec/serviceAccountName") {
        if find(docs, "ServiceAccount", ns, account).is_none() {
            problems.push(format!("{at}: serviceAccountName {account} is not defined in {ns:?}"));
        }
    }
    let volumes = doc.value.pointer("/spec/template/spec/volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    for secret in volumes.iter().filter_map(|v| v.pointer("/secret/secretName").and_then(Value::as_str)) {
        let issued = docs.iter().any(|d| d.kind() == "Certificate" && d.namespace() == ns && d.str_at("/spec/secretName") == Some(secret));
        if find(docs, "Secret", ns, secret).is_none() && !issued {
            problems.push(format!("{at}: mounts Secret {secret}, which neither a Secret nor a Certificate provides"));
        }
    }
    for container in containers(doc) {
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            if let Some(port) = container.pointer(&format!("/{probe}/httpGet/port")) {
                if !has_container_port(doc, port) {
                    problems.push(format!("{at}: {probe} port {port} is not a container port"));
                }
            }
        }
    }
}

fn service_problems(docs: &[Doc], doc: &Doc, problems: &mut Vec<String>) {
    let at = &doc.source;
    let selector = labels(doc.value.pointer("/spec/selector"));
    let backends = selected_deployments(docs, doc.namespace(), &selector);
    if backends.is_empty() {
        problems.push(format!("{at}: selector {selector:?} matches no Deployment's pods"));
    }
    for port in doc.value.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        let target = port.get("targetPort").unwrap_or(&port["port"]);
        if !backends.iter().all(|d| has_container_port(d, target)) {
            problems.push(format!("{at}: targetPort {target} is not a container port of the selected pods"));
        }
    }
}

fn hpa_problems(docs: &[Doc], doc: &Doc, problems: &mut Vec<String>) {
    let at = &doc.source;
    let mut referenced = vec![("scaleTargetRef", doc.value.pointer("/spec/scaleTargetRef").cloned().unwrap_or_default())];
    for metric in doc.value.pointer("/spec/metrics").and_then(Value::as_array).into_iter().flatten() {
        if let Some(object) = metric.pointer("/object/describedObject") {
            referenced.push(("describedObject", object.clone()));
        }
    }
    for (field, target) in referenced {
        let (kind, name) = (target["kind"].as_str().unwrap_or(""), target["name"].as_str().unwrap_or(""));
        if find(docs, kind, doc.namespace(), name).is_none() {
            problems.push(format!("{at}: {field} {kind} {name} is not defined in {:?}", doc.namespace()));
        }
    }
    let replicas = |field: &str| doc.value.pointer(field).and_then(Value::as_u64);
    if replicas("/spec/minReplicas").unwrap_or(1) > replicas("/spec/maxReplicas").unwrap_or(0) {
        problems.push(format!("{at}: minReplicas exceeds maxReplicas"));
    }
}

/// The adapter's `--help`, parsed once.
struct Help {
    flags: BTreeSet<String>,
    always_allowed_paths: Vec<String>,
}

fn adapter_help() -> &'static Help {
    static HELP: OnceLock<Help> = OnceLock::new();
    HELP.get_or_init(|| {
        let output = Command::new(adapter_binary!()).arg("--help").output().expect("run the adapter's --help");
        assert!(output.status.success(), "--help failed: {output:?}");
        parse_help(&String::from_utf8(output.stdout).unwrap())
    })
}

fn parse_help(text: &str) -> Help {
    let flags: BTreeSet<String> = text
        .lines()
        .filter(|line| line.trim_start().starts_with('-'))
        .flat_map(|line| line.split([' ', ',']))
        .filter(|word| word.starts_with("--"))
        .map(str::to_owned)
        .collect();
    let always_allowed_paths = text
        .split("--authorization-always-allow-paths")
        .nth(1)
        .and_then(|rest| rest.split("[default: ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .map(|list| list.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    Help { flags, always_allowed_paths }
}

fn adapter_deployment(docs: &[Doc]) -> &Doc {
    find(docs, "Deployment", Some(ADAPTER_NAMESPACE), ADAPTER_NAME).expect("the adapter Deployment")
}

fn adapter_args(deployment: &Doc) -> Vec<String> {
    containers(deployment)[0]["args"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// Where the serving-cert Secret is mounted in the adapter's container.
fn serving_cert_mount(deployment: &Doc) -> Option<String> {
    let volumes = deployment.value.pointer("/spec/template/spec/volumes")?.as_array()?;
    let volume = volumes.iter().find(|v| v.pointer("/secret/secretName").and_then(Value::as_str) == Some(SERVING_CERT_SECRET))?;
    let mounts = containers(deployment).first()?["volumeMounts"].as_array()?;
    let mount = mounts.iter().find(|m| m["name"] == volume["name"])?;
    (mount["readOnly"] == true).then(|| mount["mountPath"].as_str().map(str::to_owned))?
}

/// The adapter Deployment against the adapter's `--help`: only flags it has,
/// TLS files from the read-only serving-cert mount with the Secret's key names,
/// and probes on paths that bypass authorization.
fn adapter_flag_problems(docs: &[Doc], help: &Help) -> Vec<String> {
    let deployment = adapter_deployment(docs);
    let at = &deployment.source;
    let mut problems = Vec::new();
    let args = adapter_args(deployment);
    for arg in &args {
        let flag = arg.split('=').next().unwrap_or(arg);
        if !flag.starts_with("--") || !help.flags.contains(flag) {
            problems.push(format!("{at}: argument {arg} is not a flag of the adapter's --help"));
        }
    }
    let mount = serving_cert_mount(deployment);
    if mount.is_none() {
        problems.push(format!("{at}: Secret {SERVING_CERT_SECRET} is not mounted read-only"));
    }
    for (flag, key) in [("--tls-cert-file", "tls.crt"), ("--tls-private-key-file", "tls.key")] {
        let value = args.iter().find_map(|a| a.strip_prefix(flag)?.strip_prefix('='));
        let expected = mount.as_ref().map(|m| format!("{m}/{key}"));
        if value.is_none() || value.map(str::to_owned) != expected {
            problems.push(format!("{at}: {flag} is {value:?}, expected {expected:?}"));
        }
    }
    for container in containers(deployment) {
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            if let Some(path) = container.pointer(&format!("/{probe}/httpGet/path")).and_then(Value::as_str) {
                if !help.always_allowed_paths.iter().any(|p| p == path) {
                    problems.push(format!("{at}: {probe} path {path} needs authorization (not in {:?})", help.always_allowed_paths));
                }
            }
        }
    }
    problems
}

/// The APIServices the adapter must register, v1beta2 preferred over v1beta1.
fn apiservice_set_problems(docs: &[Doc]) -> Vec<String> {
    let priority = |name: &str| find(docs, "APIService", None, name).and_then(|d| d.value.pointer("/spec/versionPriority")?.as_u64());
    let mut problems = Vec::new();
    for name in ["v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io", "v1beta1.external.metrics.k8s.io"] {
        if priority(name).is_none() {
            problems.push(format!("APIService {name} missing or without versionPriority"));
        }
    }
    if priority("v1beta2.custom.metrics.k8s.io") <= priority("v1beta1.custom.metrics.k8s.io") {
        problems.push("v1beta2.custom.metrics.k8s.io must have the higher versionPriority".to_owned());
    }
    problems
}

/// Files in a kustomization's directory that it neither lists as a resource
/// nor as a patch: forgotten when a user runs `kubectl apply -k`.
fn unlisted_files(kustomization: &Path) -> Vec<String> {
    let dir = kustomization.parent().unwrap();
    let docs = parse_file(kustomization).unwrap();
    let config = &docs[0].value;
    let mut listed: BTreeSet<String> = BTreeSet::new();
    for entry in config["resources"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        listed.insert(entry.to_owned());
    }
    for patch in config["patches"].as_array().into_iter().flatten() {
        listed.extend(patch["path"].as_str().map(str::to_owned));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if (name.ends_with(".yaml") || name.ends_with(".yml")) && name != "kustomization.yaml" && !listed.contains(&name) {
            files.push(format!("{}: {name} is not listed", kustomization.display()));
        }
    }
    files
}

/// Does a ClusterRole rule list allow this SubjectAccessReview's attributes?
/// (RBAC semantics: `*` matches any group, resource or verb, subresources included.)
fn rules_allow(rules: &Value, attributes: &Value) -> bool {
    let field = |name: &str| attributes[name].as_str().unwrap_or("");
    let resource = match field("subresource") {
        "" => field("resource").to_owned(),
        sub => format!("{}/{sub}", field("resource")),
    };
    let has = |list: &Value, wanted: &str| list.as_array().into_iter().flatten().any(|v| v == "*" || v == wanted);
    rules
        .as_array()
        .into_iter()
        .flatten()
        .any(|rule| has(&rule["apiGroups"], field("group")) && has(&rule["resources"], &resource) && has(&rule["verbs"], field("verb")))
}

/// The rules of every ClusterRole bound to the HPA controller's ServiceAccount.
fn hpa_controller_rules(docs: &[Doc]) -> Value {
    let (ns, name) = HPA_SERVICE_ACCOUNT;
    let rules: Vec<Value> = docs
        .iter()
        .filter(|d| d.kind() == "ClusterRoleBinding")
        .filter(|d| d.value["subjects"].as_array().into_iter().flatten().any(|s| s["namespace"] == ns && s["name"] == name))
        .filter_map(|binding| find(docs, "ClusterRole", None, binding.str_at("/roleRef/name")?))
        .flat_map(|role| role.value["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    Value::Array(rules)
}

// ---------------------------------------------------------------------------
// kubectl and the serving-cert script.

fn kubectl(args: &[&str]) -> std::process::Output {
    match Command::new("kubectl").args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("kubectl is not on PATH: it is a prerequisite (see README) and renders the kustomizations; install it and rerun")
        }
        Err(e) => panic!("running kubectl {args:?}: {e}"),
    }
}

fn kustomize(dir: &Path) -> Result<Vec<Doc>, String> {
    let output = kubectl(&["kustomize", dir.to_str().unwrap()]);
    if !output.status.success() {
        return Err(format!("kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&output.stderr)));
    }
    parse_yaml(&String::from_utf8_lossy(&output.stdout), &format!("kustomize {}", dir.display()))
}

/// Runs apiservice/gen-serving-cert.sh --out DIR (no cluster involved).
fn generate_serving_cert(out: &Path) {
    let output = Command::new(repo().join("apiservice/gen-serving-cert.sh"))
        .arg("--out")
        .arg(out)
        .output()
        .expect("run apiservice/gen-serving-cert.sh");
    assert!(output.status.success(), "gen-serving-cert.sh failed: {}", String::from_utf8_lossy(&output.stderr));
}

fn script_secret(out: &Path) -> Vec<Doc> {
    parse_file(&out.join("serving-cert-secret.yaml")).unwrap()
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn every_yaml_file_parses_and_names_what_it_is() {
    let docs = load_repo_docs();
    let problems: Vec<String> = docs.iter().flat_map(basic_problems).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn names_agree_across_files() {
    let out = TempDir::new("cert");
    generate_serving_cert(&out.0);
    // The script's Secret stands for the one a user creates, so the
    // Deployment's secret volume is checked against it too.
    let mut docs = load_repo_docs();
    docs.extend(script_secret(&out.0));
    let mut problems = cross_reference_problems(&docs);
    problems.extend(apiservice_set_problems(&docs));
    problems.extend(adapter_flag_problems(&docs, adapter_help()));
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let secret = docs.iter().find(|d| d.is("Secret", Some(ADAPTER_NAMESPACE), SERVING_CERT_SECRET)).expect("script's Secret");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(secret.value["data"][key].is_string(), "Secret lacks {key}");
    }
}

#[test]
fn the_checks_catch_broken_documents() {
    let out = TempDir::new("cert");
    generate_serving_cert(&out.0);
    let mut good = load_repo_docs();
    good.extend(script_secret(&out.0));
    let help = adapter_help();
    let check = |docs: &[Doc]| {
        let mut problems: Vec<String> = docs.iter().flat_map(basic_problems).collect();
        problems.extend(cross_reference_problems(docs));
        problems.extend(apiservice_set_problems(docs));
        problems.extend(adapter_flag_problems(docs, help));
        problems
    };
    assert_eq!(check(&good), Vec::<String>::new());

    // (object, JSON pointer, new value, expected fragment of a problem)
    let adapter = ("Deployment", Some(ADAPTER_NAMESPACE), ADAPTER_NAME);
    let service = ("Service", Some(ADAPTER_NAMESPACE), ADAPTER_NAME);
    let pdb = ("PodDisruptionBudget", Some(ADAPTER_NAMESPACE), ADAPTER_NAME);
    let custom_v1beta2 = ("APIService", None, "v1beta2.custom.metrics.k8s.io");
    let container = "/spec/template/spec/containers/0";
    let name_label = "app.kubernetes.io~1name";
    let cases = [
        (service, format!("/spec/selector/{name_label}"), json!("adapter"), "matches no Deployment"),
        (service, "/spec/ports/0/targetPort".into(), json!(8443), "targetPort 8443"),
        (custom_v1beta2, "/spec/service/port".into(), json!(444), "no port 444"),
        (custom_v1beta2, "/spec/versionPriority".into(), json!(50), "higher versionPriority"),
        (("APIService", None, "v1beta1.external.metrics.k8s.io"), "/spec/service/namespace".into(), json!("default"), "no file defines"),
        (
            ("ClusterRoleBinding", None, "pravega-metrics-adapter:system:auth-delegator"),
            "/subjects/0/name".into(),
            json!("adaptor"),
            "adaptor is not defined",
        ),
        (
            ("RoleBinding", Some("kube-system"), "pravega-metrics-adapter-auth-reader"),
            "/roleRef/name".into(),
            json!("reader"),
            "neither defined nor built in",
        ),
        (
            ("Role", Some("pravega"), "pravega-metrics-adapter-controller-discovery"),
            "/metadata/namespace".into(),
            json!("pravgea"),
            "namespace pravgea",
        ),
        (adapter, "/spec/template/spec/serviceAccountName".into(), json!("default-sa"), "serviceAccountName default-sa"),
        (adapter, "/spec/template/spec/volumes/0/secret/secretName".into(), json!("serving-cert"), "mounts Secret serving-cert"),
        (adapter, format!("{container}/args/0"), json!("--port=6443"), "--port=6443 is not a flag"),
        (adapter, format!("{container}/args/1"), json!("--tls-cert-file=/tmp/tls.crt"), "--tls-cert-file is"),
        (adapter, format!("{container}/readinessProbe/httpGet/path"), json!("/metrics"), "needs authorization"),
        (adapter, format!("{container}/livenessProbe/httpGet/port"), json!("http"), "port \"http\""),
        (pdb, format!("/spec/selector/matchLabels/{name_label}"), json!("x"), "matches no Deployment"),
        (
            ("Deployment", Some("pravega"), "flink-taskmanager"),
            format!("/spec/selector/matchLabels/{name_label}"),
            json!("tm"),
            "does not match its pod labels",
        ),
        (
            ("HorizontalPodAutoscaler", Some("pravega"), "flink-taskmanager"),
            "/spec/scaleTargetRef/name".into(),
            json!("tm"),
            "scaleTargetRef Deployment tm",
        ),
        (("Namespace", None, ADAPTER_NAMESPACE), "/metadata/name".into(), json!(""), "missing /metadata/name"),
    ];
    for ((kind, ns, name), pointer, value, expected) in cases {
        let mut docs = good.clone();
        // Only the first match: the HPA exists in two alternative files.
        let doc = docs.iter_mut().find(|d| !d.is_patch() && d.is(kind, ns, name)).unwrap_or_else(|| panic!("no {kind} {name}"));
        *doc.value.pointer_mut(&pointer).unwrap_or_else(|| panic!("{kind} {name} has no {pointer}")) = value;
        let problems = check(&docs);
        assert!(problems.iter().any(|p| p.contains(expected)), "{kind} {name} {pointer}: expected {expected:?}, got {problems:?}");
    }

    // A patch must patch something that exists.
    let mut docs = good.clone();
    let mut orphan = docs.iter().find(|d| d.kind() == "HorizontalPodAutoscaler").unwrap().clone();
    orphan.source = "hpa/orphan.patch.yaml#0".into();
    orphan.value["metadata"]["name"] = json!("missing");
    docs.push(orphan);
    assert!(check(&docs).iter().any(|p| p.contains("which no file defines")), "orphan patch not reported");

    // Without list on the external group the HPA's External query is denied.
    let external = json!({"group": "external.metrics.k8s.io", "resource": "pravega_controller_segments_count", "verb": "list"});
    assert!(rules_allow(&hpa_controller_rules(&good), &external));
    let mut docs = good.clone();
    let role = docs.iter_mut().find(|d| d.is("ClusterRole", None, "pravega-metrics-reader")).unwrap();
    role.value["rules"][0]["verbs"] = json!(["get"]);
    assert!(!rules_allow(&hpa_controller_rules(&docs), &external));
}

#[test]
fn every_kustomization_lists_its_files_and_renders() {
    let kustomizations: Vec<PathBuf> =
        all_yaml_files().into_iter().filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml")).collect();
    assert!(kustomizations.len() >= 7, "{kustomizations:?}");
    let mut problems: Vec<String> = kustomizations.iter().flat_map(|k| unlisted_files(k)).collect();
    let mut rendered: BTreeMap<String, Vec<Doc>> = BTreeMap::new();
    for kustomization in &kustomizations {
        let dir = kustomization.parent().unwrap();
        let key = dir.strip_prefix(repo()).unwrap().display().to_string();
        match kustomize(dir) {
            Ok(docs) if docs.is_empty() => problems.push(format!("{key}: renders nothing")),
            Ok(docs) => {
                problems.extend(docs.iter().flat_map(basic_problems));
                rendered.insert(key, docs);
            }
            Err(e) => problems.push(e),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // What `kubectl apply -k manifests/` and `-k apiservice/` create, plus the
    // script's Secret, is consistent on its own.
    let out = TempDir::new("cert");
    generate_serving_cert(&out.0);
    let mut applied: Vec<Doc> = ["manifests", "apiservice"].iter().flat_map(|k| rendered[*k].clone()).collect();
    applied.extend(script_secret(&out.0));
    let mut problems = cross_reference_problems(&applied);
    problems.extend(apiservice_set_problems(&applied));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let kinds: BTreeSet<&str> = rendered["manifests"].iter().map(Doc::kind).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(kind), "manifests/ renders no {kind}: {kinds:?}");
    }

    // The script's own kustomization: Secret plus the APIServices with caBundle.
    let generated = kustomize(&out.0).unwrap();
    let ca = std::fs::read(out.0.join("ca.crt")).unwrap();
    let bundles: Vec<&str> = generated.iter().filter(|d| d.kind() == "APIService").filter_map(|d| d.str_at("/spec/caBundle")).collect();
    assert_eq!(bundles.len(), 3, "{generated:?}");
    for bundle in bundles {
        assert_eq!(BASE64.decode(bundle).unwrap(), ca, "caBundle is not the generated CA");
    }

    // cert-manager variant: every APIService asks for the serving Certificate's CA.
    let certs = &rendered["apiservice/cert-manager"];
    let injected = certs
        .iter()
        .filter(|d| d.kind() == "APIService")
        .filter(|d| {
            d.str_at("/metadata/annotations/cert-manager.io~1inject-ca-from")
                == Some("pravega-metrics/pravega-metrics-adapter-serving-cert")
        })
        .count();
    assert_eq!(injected, 3);
    let issued = certs.iter().any(|d| d.kind() == "Certificate" && d.str_at("/spec/secretName") == Some(SERVING_CERT_SECRET));
    assert!(issued, "no Certificate issues {SERVING_CERT_SECRET}");
}

/// Both HPA forms state the same behavior in full (once `behavior` is set,
/// the API server fills in every unset field with its defaults): a split
/// reaches the replicas within one sync, whatever its size; a scale-down
/// waits the stated window; tolerance 0 both ways.
#[test]
fn both_hpa_forms_state_their_behavior() {
    let mut behaviors = Vec::new();
    for form in ["flink-taskmanager-external.yaml", "flink-taskmanager-object.yaml"] {
        let hpa = &parse_file(&repo().join("hpa").join(form)).unwrap()[0].value;
        let behavior = &hpa["spec"]["behavior"];
        let (min, max) = (hpa["spec"]["minReplicas"].as_u64().unwrap(), hpa["spec"]["maxReplicas"].as_u64().unwrap());
        for direction in ["scaleUp", "scaleDown"] {
            let rules = &behavior[direction];
            assert_eq!(rules["tolerance"], 0, "{form}: {direction}.tolerance");
            for field in ["stabilizationWindowSeconds", "selectPolicy", "policies"] {
                assert!(rules.get(field).is_some(), "{form}: {direction}.{field} left to the API server's default");
            }
        }
        let up = &behavior["scaleUp"];
        assert_eq!(up["stabilizationWindowSeconds"], 0, "{form}");
        assert_eq!(up["selectPolicy"], "Max", "{form}");
        // From minReplicas to maxReplicas in one period, by some policy.
        let one_step = up["policies"].as_array().unwrap().iter().any(|p| {
            let value = p["value"].as_u64().unwrap();
            match p["type"].as_str() {
                Some("Pods") => min + value >= max,
                Some("Percent") => min * (100 + value) >= max * 100,
                other => panic!("{form}: policy type {other:?}"),
            }
        });
        assert!(one_step, "{form}: no scale-up policy reaches maxReplicas {max} from {min} in one period");
        assert!(behavior["scaleDown"]["stabilizationWindowSeconds"].as_u64().is_some_and(|w| w > 0), "{form}: scale-down window");
        behaviors.push(behavior.clone());
    }
    assert_eq!(behaviors[0], behaviors[1], "the two forms' behaviors differ");
    let keda = parse_file(&repo().join("hpa").join("flink-taskmanager-keda.yaml")).unwrap();
    let scaled = keda.iter().find(|d| d.kind() == "ScaledObject").expect("a ScaledObject");
    let spec = &scaled.value["spec"];
    assert_eq!(spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"], behaviors[0], "the ScaledObject's HPA behaves as the HPAs");
    let external = &parse_file(&repo().join("hpa").join("flink-taskmanager-external.yaml")).unwrap()[0].value["spec"];
    assert_eq!((&spec["minReplicaCount"], &spec["maxReplicaCount"]), (&external["minReplicas"], &external["maxReplicas"]));
}

/// The path the HPA controller asks for (through the aggregator) for one HPA
/// file's single metric: External, or Object on a Deployment via v1beta2.
fn hpa_metric_path(hpa: &Doc) -> String {
    let metric = &hpa.value["spec"]["metrics"][0];
    let ns = hpa.namespace().unwrap();
    let spec = match metric["type"].as_str() {
        Some("External") => &metric["external"],
        Some("Object") => &metric["object"],
        other => panic!("{}: metric type {other:?}", hpa.source),
    };
    let selector: Vec<String> = labels(spec.pointer("/metric/selector/matchLabels")).iter().map(|(k, v)| format!("{k}={v}")).collect();
    let selector = encode(&selector.join(","));
    let name = spec["metric"]["name"].as_str().unwrap();
    if metric["type"] == "External" {
        return format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{name}?labelSelector={selector}");
    }
    let described = &spec["describedObject"];
    assert_eq!((described["apiVersion"].as_str(), described["kind"].as_str()), (Some("apps/v1"), Some("Deployment")));
    let object = described["name"].as_str().unwrap();
    format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/deployments.apps/{object}/{name}?metricLabelSelector={selector}")
}

#[tokio::test]
async fn the_adapter_serves_both_hpa_forms_with_the_shipped_cert_flags_and_rbac() {
    let out = TempDir::new("serve");
    generate_serving_cert(&out.0);
    let docs = load_repo_docs();
    let deployment = adapter_deployment(&docs);
    let mount = serving_cert_mount(deployment).expect("serving-cert mount");

    let (front_proxy_ca, client_ca) = (Ca::new("front-proxy-ca"), Ca::new("client-ca"));
    let api = Arc::new(StubApi { allowed: vec![HPA_USER], ..Default::default() });
    let api_address = api.serve(&front_proxy_ca, &client_ca).await;
    let kubeconfig = out.0.join("kubeconfig");
    write_kubeconfig(&kubeconfig, api_address);
    let controller = FakeController::start(stream_exposition("test", "stream", 3, 2, 0)).await;
    let controller_api = FakeControllerApi::default();
    controller_api.set("test", "stream", 3);
    let controller_api_address = controller_api.start().await;

    // The Deployment's arguments, with the mount read from the script's output
    // directory, a free loopback port, and a static controller instead of pod
    // discovery (which needs a real API server), whose gRPC API is a fake
    // at a fixed URL.
    let port = free_port();
    let mut args: Vec<String> = adapter_args(deployment)
        .into_iter()
        .filter(|a| !a.starts_with("--controller-namespace"))
        .map(|a| if a.starts_with("--secure-port=") { format!("--secure-port={port}") } else { a.replace(&mount, out.0.to_str().unwrap()) })
        .collect();
    args.extend([
        "--bind-address=127.0.0.1".to_owned(),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--controller-url={}", controller.url()),
        format!("--controller-api-url=http://{controller_api_address}"),
    ]);
    install_crypto_provider();
    let readiness = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().unwrap();
    let adapter = Adapter::start_secure(adapter_binary!(), &args, port, readiness).await;

    // The aggregator dials the Service's DNS name and checks it against the
    // APIService's caBundle: the script's CA and names must satisfy that.
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let service_names = ["pravega-metrics-adapter.pravega-metrics.svc", "pravega-metrics-adapter.pravega-metrics.svc.cluster.local"];
    let ca = std::fs::read(out.0.join("ca.crt")).unwrap();
    let proxy = front_proxy_ca.client("front-proxy-client", &[]);
    let resolve: Vec<(&str, SocketAddr)> = service_names.iter().map(|n| (*n, address)).collect();
    let aggregator = tls_client(&ca, Some(proxy), &resolve);
    for name in service_names {
        let response = aggregator.get(format!("https://{name}:{port}/livez")).send().await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(response.status(), 200, "{name}");
    }
    let stranger = tls_client(Ca::new("other-ca").pem.as_bytes(), None, &resolve);
    assert!(stranger.get(format!("https://{}:{port}/livez", service_names[0])).send().await.is_err(), "a foreign CA must not verify");

    let rules = hpa_controller_rules(&docs);
    for file in ["flink-taskmanager-external.yaml", "flink-taskmanager-object.yaml"] {
        let hpa = &parse_file(&repo().join("hpa").join(file)).unwrap()[0];
        let path = hpa_metric_path(hpa);
        let response = aggregator
            .get(format!("https://{}:{port}{path}", service_names[0]))
            .header("X-Remote-User", HPA_USER)
            .header("X-Remote-Group", "system:serviceaccounts")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        assert_eq!(status, 200, "{file}: {path}: {body}\nlog:\n{}", adapter.log());
        assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{file}: {body}");
        assert_eq!(body["items"][0]["value"], "3", "{file}: {body}");
        let review = api.last_access_review.lock().unwrap().clone();
        assert_eq!(review["user"], HPA_USER);
        assert!(rules_allow(&rules, &review["resourceAttributes"]), "{file}: the HPA ClusterRole does not allow {review}");
    }

    // --log-format=json took effect.
    let log = adapter.log();
    let first = log.lines().next().unwrap_or_else(|| panic!("no log lines"));
    assert!(serde_json::from_str::<Value>(first).is_ok_and(|v| v.is_object()), "not JSON: {first}");
}

/// The README's sizing rule names the adapter Deployment's resources; the
/// two must not drift apart.
#[test]
fn the_readme_sizing_rule_names_the_deployed_resources() {
    let docs = load_repo_docs();
    let resources = &containers(adapter_deployment(&docs))[0]["resources"];
    let quantity = |path: [&str; 2]| resources[path[0]][path[1]].as_str().unwrap_or_else(|| panic!("{path:?} not set")).to_owned();
    let sentence = format!(
        "requests `cpu: {}` and `memory: {}` and\nlimits `memory: {}`",
        quantity(["requests", "cpu"]),
        quantity(["requests", "memory"]),
        quantity(["limits", "memory"])
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains(&sentence), "README's sizing rule must say: {sentence:?}");
    let deployment = std::fs::read_to_string(repo().join("manifests/adapter/deployment.yaml")).unwrap();
    assert!(!deployment.contains("MiB"), "memory figures live in the README's sizing rule, not in the manifest's comments");
}
