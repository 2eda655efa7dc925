#!/usr/bin/env bash
# End-to-end test on a real control plane: etcd + kube-apiserver (with the
# aggregation layer) + kube-controller-manager (HPA, Deployment, ServiceAccount
# controllers), the adapter, and two fake Pravega controller replicas, all in
# a network namespace of their own. It applies the project's own manifests/,
# apiservice/ and hpa/ files as shipped (server-side dry run, then server-side
# apply), dry-runs the Helm chart's rendering against the same kube-apiserver,
# and watches the stock HPA scale flink-taskmanager with the segment count,
# past 10 replicas with the HPA's tolerance 0 (and holding without it).
#
#   tests/e2e/run.sh            (as root; `make test` runs it)
#
# Kubernetes and etcd are built from the Go module proxy by
# obtain-kubernetes.sh (once; cached outside the checkout).
# Done by hand, and only because there is no kubelet: the adapter runs as a
# process in the namespace with its ServiceAccount's token, not as its
# Deployment, and a hand-made EndpointSlice points its Service there;
# controller pods are Pod objects whose status the test sets (IPs served by
# the fakes).
#
# E2E_NODE=1: with the real node (tests/e2e/node.sh) instead, the adapter
# runs as the Deployment of manifests/adapter as shipped, from its image
# (E2E_IMAGES, default target/images: pravega-metrics-adapter.tar, as `make
# images` writes it), imported into the node's containerd; the aggregator
# reaches its pods through the Service's ClusterIP, and they reach the fake
# controllers through the pods' bridge.
#
# Without root or network namespaces, or when the module proxy refuses a
# download, it prints SKIPPED and exits 0; any failed assertion exits
# non-zero. Timings are printed as "TIMING ..." lines.
set -euo pipefail

controller_ips=(10.200.0.11 10.200.0.12)
hpa_sync=2s
downscale_stabilization=1s
cargo_build_args=(--bin pravega-metrics-adapter)
want_helm=1
if [ "${E2E_NODE:-}" = 1 ]; then
  want_node=1
  cargo_build_args=()
  node_images=("$(realpath "${E2E_IMAGES:-$(dirname "$0")/../../target/images}")/pravega-metrics-adapter.tar")
  [ -f "${node_images[0]}" ] || { echo "run.sh: E2E_NODE=1 runs the adapter from ${node_images[0]}; make images writes it" >&2; exit 1; }
fi
# shellcheck source=tests/e2e/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

# --- fake Pravega controllers: two replicas, discovered as pods -------------------------
exposition() { # exposition DIR [SEGMENTS SPLITS MERGES]  (no numbers: the replica never touched the stream)
  {
    printf '# HELP jvm_threads_live_threads The current number of live threads\n# TYPE jvm_threads_live_threads gauge\njvm_threads_live_threads 87.0\n'
    printf '# HELP pravega_controller_hosts_count  \n# TYPE pravega_controller_hosts_count gauge\npravega_controller_hosts_count 3.0\n'
    if [ $# -gt 1 ]; then
      printf '# HELP pravega_controller_segments_count  \n# TYPE pravega_controller_segments_count gauge\n'
      printf 'pravega_controller_segments_count{scope="test",stream="stream",} %s.0\n' "$2"
      printf '# HELP pravega_controller_segment_splits  \n# TYPE pravega_controller_segment_splits gauge\n'
      printf 'pravega_controller_segment_splits{scope="test",stream="stream",} %s.0\n' "$3"
      printf '# HELP pravega_controller_segment_merges  \n# TYPE pravega_controller_segment_merges gauge\n'
      printf 'pravega_controller_segment_merges{scope="test",stream="stream",} %s.0\n' "$4"
    fi
  } >"$1/prometheus.tmp"
  mv "$1/prometheus.tmp" "$1/prometheus"
}
# Serves DIR/prometheus at ADDRESS:10080/prometheus with the content type of
# the text format, as the controller does.
fake_controller='
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {"": "text/plain; version=0.0.4; charset=utf-8"}
handler = functools.partial(Handler, directory=sys.argv[2])
http.server.ThreadingHTTPServer((sys.argv[1], 10080), handler).serve_forever()
'
replica_dir=("$work/controller-0" "$work/controller-1")
for i in 0 1; do
  mkdir -p "${replica_dir[$i]}"
  exposition "${replica_dir[$i]}"
  background "controller-$i" python3 -c "$fake_controller" "${controller_ips[$i]}" "${replica_dir[$i]}"
done
# Pods are admitted once their ServiceAccount exists.
wait_for 60 "serviceaccount pravega/default" kc -n pravega get serviceaccount default
for i in 0 1; do controller_pod "pravega-pravega-controller-$i" "${controller_ips[$i]}"; done

# --- the Helm chart: its renderings, dry-run on the server -------------------------------------
# The cluster was installed from kustomize; the chart's defaults, each HPA form
# and the workload must be objects this kube-apiserver accepts as they are.
# (The cert-manager rendering needs cert-manager's CRDs, absent here.)
if [ -n "$helm" ]; then
  for values in "" "hpa.enabled=true" "hpa.enabled=true,hpa.metricType=Object" "workload.enabled=true,workload.createNamespace=true"; do
    set_args=()
    [ -z "$values" ] || set_args=(--set "$values")
    "$helm" template pravega-metrics-adapter "$root/charts/pravega-metrics-adapter" "${set_args[@]}" >"$work/chart.yaml" ||
      fail "helm template ${values:-(defaults)}"
    kc apply --dry-run=server -f "$work/chart.yaml" >"$work/logs/dry-run-chart.log" 2>&1 ||
      fail "server-side dry run of the chart (${values:-defaults}): $(cat "$work/logs/dry-run-chart.log")"
  done
  log "PASS server-side dry run of the chart's rendering: defaults, both HPA forms, the workload"
else
  log "SKIPPED the chart's server-side dry run: helm could not be built (see above)"
fi
start_adapter

# --- reading the metrics through the aggregator ----------------------------------------------
exposition "${replica_dir[0]}" 3 2 0
selector='labelSelector=scope%3Dtest%2Cstream%3Dstream'
external="/apis/external.metrics.k8s.io/v1beta1/namespaces/pravega/pravega_controller_segments_count?$selector"
object() { echo "/apis/custom.metrics.k8s.io/$1/namespaces/pravega/deployments.apps/flink-taskmanager/pravega_controller_segments_count?metricLabelSelector=scope%3Dtest%2Cstream%3Dstream"; }
value_of() { "$bin/kubectl" --kubeconfig "${2:-$work/admin.kubeconfig}" get --raw "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["value"])'; }
expect_value() { # expect_value PATH VALUE: the aggregator may answer 503 for a
  # few seconds after an APIService turns Available, so allow 20 s.
  local got deadline=$((SECONDS + 20))
  until got=$(value_of "$1" 2>/dev/null); do
    [ $SECONDS -lt $deadline ] ||
      fail "kubectl get --raw $1: no value; it answered: $("$bin/kubectl" --kubeconfig "$work/admin.kubeconfig" get --raw "$1" 2>&1)"
    sleep 0.5
  done
  [ "$got" = "$2" ] || fail "kubectl get --raw $1 gave $got, expected $2"
}
wait_for 30 "the adapter to discover and scrape the controller pods" value_of "$external"
expect_value "$external" 3
expect_value "$(object v1beta1)" 3
expect_value "$(object v1beta2)" 3
log "PASS kubectl get --raw through the aggregator: external v1beta1 and custom v1beta1/v1beta2 serve 3"

kc -n pravega create serviceaccount nobody >/dev/null
token_kubeconfig "$work/nobody.kubeconfig" "$(token_of pravega nobody)"
if denied=$("$bin/kubectl" --kubeconfig "$work/nobody.kubeconfig" get --raw "$external" 2>&1); then
  fail "an unauthorized ServiceAccount read the metric: $denied"
fi
grep -qi forbidden <<<"$denied" || fail "expected 403 Forbidden for an unauthorized ServiceAccount, got: $denied"
grep -q 'items' <<<"$denied" && fail "the refusal leaked metric data: $denied"
log "PASS an unauthorized ServiceAccount gets 403 through the aggregator"

# --- the stock HPA follows the segment count -----------------------------------------------------
# shorten_scale_down: the HPA as shipped waits 120 s before a scale-down; the
# test shortens that to 1 s after checking the kube-apiserver kept the
# shipped behavior (it drops tolerance where the feature is off).
shorten_scale_down() {
  local kept
  kept=$(kc -n pravega get hpa flink-taskmanager -o jsonpath='{.spec.behavior.scaleUp.tolerance} {.spec.behavior.scaleDown.tolerance} {.spec.behavior.scaleUp.policies[0].value} {.spec.behavior.scaleDown.stabilizationWindowSeconds}')
  [ "$kept" = "0 0 24 120" ] ||
    fail "the kube-apiserver did not keep the HPA's behavior (tolerance, scale-up policy, scale-down window): got '$kept'"
  kc -n pravega patch hpa flink-taskmanager --type merge -p '{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":1}}}}' >/dev/null
}
replicas() { kc -n pravega get deployment flink-taskmanager -o jsonpath='{.spec.replicas}'; }
# phase NAME EXPECTED FORBIDDEN: waits for .spec.replicas == EXPECTED, failing if
# it ever equals FORBIDDEN (what summing the replicas would give).
phase() {
  local name=$1 expected=$2 forbidden=$3 start deadline r
  start=$(now)
  deadline=$((SECONDS + 60))
  while true; do
    r=$(replicas)
    [ "$r" != "$forbidden" ] || fail "$name: replicas reached $forbidden, the sum over replicas"
    [ "$r" = "$expected" ] && break
    [ $SECONDS -lt $deadline ] || fail "$name: replicas stayed $r, expected $expected"
    sleep 0.2
  done
  log "PASS $name: flink-taskmanager at $expected replicas"
  log "TIMING $name: HPA reacted in $(elapsed "$start") s (sync period $hpa_sync)"
}
apply_files hpa-external -f "$root/hpa/flink-taskmanager-external.yaml"
shorten_scale_down
phase "External HPA, 3 segments" 3 none
# Replica 1 scales the stream to 6; replica 0 still holds its stale 3.
exposition "${replica_dir[1]}" 6 5 0
phase "External HPA, 6 segments from the second replica while the first is stale" 6 9
# Replica 0 merges down to 2 (9 scale events, more than replica 1's 5).
exposition "${replica_dir[0]}" 2 5 4
phase "External HPA, merged down to 2 segments" 2 8
kc delete -f "$root/hpa/flink-taskmanager-external.yaml" >/dev/null
apply_files hpa-object -f "$root/hpa/flink-taskmanager-object.yaml"
shorten_scale_down
exposition "${replica_dir[0]}" 4 7 4
phase "Object HPA, 4 segments" 4 none

# --- past 10 replicas: without per-HPA tolerance, then with hpa/'s tolerance 0 -------------------
# From here on replica 1 holds a stale 6: summing would give segments + 6.
# 4 to 11 in one step: the scale-up policy allows maxReplicas pods per sync.
exposition "${replica_dir[0]}" 11 14 4
phase "Object HPA, 11 segments" 11 17
# As on a cluster without per-HPA tolerance: the cluster-wide 10 % applies.
kc -n pravega patch hpa flink-taskmanager --type merge \
  -p '{"spec":{"behavior":{"scaleUp":{"tolerance":null},"scaleDown":{"tolerance":null}}}}' >/dev/null
# The HPA's view of the metric: the Object value over the current replicas
# (11 segments at 11 replicas read 1).
reads_more_than_one() { local a; a=$(kc -n pravega get hpa flink-taskmanager -o jsonpath='{.status.currentMetrics[0].object.current.averageValue}'); [ -n "$a" ] && [ "$a" != 1 ]; }
exposition "${replica_dir[0]}" 12 15 4
wait_for 30 "the HPA to read 12 segments at 11 replicas" reads_more_than_one
# hold SECONDS NAME EXPECTED: .spec.replicas stays EXPECTED for that long.
hold() {
  local deadline=$((SECONDS + $1)) name=$2 r
  while [ $SECONDS -lt $deadline ]; do
    r=$(replicas)
    [ "$r" = "$3" ] || fail "$name: replicas went to $r, expected them to stay $3"
    sleep 0.2
  done
  log "PASS $name: flink-taskmanager stayed at $3 replicas for $1 s"
}
# 12/11 = 1.09 is inside the default 10 % band: five HPA syncs change nothing.
hold 10 "Object HPA, 12 segments, default tolerance" 11
# hpa/'s tolerance 0 back: the HPA follows 12 segments, and the merge to 11.
kc -n pravega patch hpa flink-taskmanager --type merge \
  -p '{"spec":{"behavior":{"scaleUp":{"tolerance":0},"scaleDown":{"tolerance":0}}}}' >/dev/null
phase "Object HPA with tolerance 0, 12 segments" 12 18
exposition "${replica_dir[0]}" 11 15 5
phase "Object HPA with tolerance 0, merged down to 11 segments" 11 17

# --- OpenAPI aggregation of the three metrics APIServices ------------------------------------------
# The aggregator downloads /openapi/v2 (and /openapi/v3) from the adapter as
# user system:aggregator, with no groups, soon after an APIService turns
# Available and then every minute; kube-aggregator logs a failure as
#   loading OpenAPI spec for "<APIService>" failed with: ...
# and when merging as "failed to download <APIService>: ...". Failures while an
# APIService is not yet Available are expected (the aggregator answers 503
# itself); from the moment all three are Available, none may appear.
openapi_errors='(loading OpenAPI spec for|failed to download) [\"]*v1beta[12][.](custom|external)[.]metrics[.]k8s[.]io'
[ $((SECONDS - available_at)) -ge 65 ] || sleep $((65 - (SECONDS - available_at))) # one periodic download at least
if errors=$(tail -n "+$((apiserver_log_mark + 1))" "$work/logs/kube-apiserver.log" | grep -E "$openapi_errors"); then
  fail "the aggregator failed to download the adapter's OpenAPI spec after the APIServices were Available:
$(head -n 5 <<<"$errors")"
fi
log "PASS the aggregator downloads the OpenAPI spec of the three APIServices without error"
if [ -n "${E2E_NODE_BIN:-}" ]; then
  for pod in $(kc -n pravega-metrics get pods -l app.kubernetes.io/name=pravega-metrics-adapter -o name); do
    log "MEMORY adapter ${pod#pod/}: $(pod_memory pravega-metrics "${pod#pod/}"), after the whole test"
  done
fi

log "ALL PASSED"
