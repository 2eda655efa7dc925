#!/usr/bin/env bash
# A real KEDA scales flink-taskmanager from the adapter's external scaler, on
# the e2e control plane (tests/e2e/cluster.sh; `make test-keda`, root):
# KEDA's operator and metrics server (tests/keda/obtain-keda.sh: built from
# the Go module proxy once, cached) run as host processes with KEDA's CRDs
# from the same module, and KEDA owns v1beta1.external.metrics.k8s.io. The
# adapter runs with its scaler port on; `generator --simulate` is the one
# controller, its stream's segments following a sine 1 -> 3 -> 1.
#
# hpa/flink-taskmanager-keda.yaml is applied as shipped, then patched per
# phase; tests/keda/keda.py samples the true count and the replicas every
# 0.25 s and prints how long each change took to reach the replicas:
#   push             external-push, as shipped (minReplicaCount 1)
#   poll             type external, pollingInterval 15
#   push-activation  external-push, minReplicaCount 0, activationThreshold 1:
#                    1 segment scales to 0, a split activates at once
#   poll-activation  the same with type external, pollingInterval 15
#   fallback         the controller stopped (SIGSTOP): the adapter withholds,
#                    KEDA's fallback sets its replicas
# Without a kubelet no pod is ever ready, so the phases use a static
# fallback (5 replicas) where the shipped file keeps the running replicas.
#
# Environment: KEDA_HPA_SYNC (15s), KEDA_PERIOD (the sine's period, 97s: no
# multiple of the HPA's sync or KEDA's polling, so that changes fall at
# different points of their cycles), KEDA_PERIODS (per phase, 3), KEDA_OUT
# (target/keda).
set -euo pipefail

controller_ips=(10.200.0.11)
hpa_sync=${KEDA_HPA_SYNC:-15s}
downscale_stabilization=1s
cargo_build_args=(-p pravega-metrics-adapter -p generator --bins)
# KEDA's processes dial these names; the e2e has no cluster DNS.
netns_hosts="10.200.0.1 pravega-metrics-adapter.pravega-metrics.svc keda-operator.keda.svc keda-metrics-apiserver.keda.svc"
adapter_args=(--keda-scaler-port=9443)
if [ -z "${E2E_INSIDE_NETNS:-}" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "keda SKIPPED: needs root for network namespaces (run: sudo make test-keda)"; exit 0; }
  obtained=0
  keda_bin=$("$(dirname "$0")/obtain-keda.sh") || obtained=$?
  [ $obtained -ne 3 ] || { echo "keda SKIPPED: cannot build KEDA from the Go module proxy: $keda_bin"; exit 0; }
  [ $obtained -eq 0 ] || { echo "tests/keda/obtain-keda.sh failed (exit status $obtained)" >&2; exit 1; }
  export KEDA_BIN=$keda_bin
fi
# shellcheck source=tests/e2e/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/cluster.sh"

keda_here=$root/tests/keda
out=${KEDA_OUT:-$root/target/keda}
mkdir -p "$out"
period=${KEDA_PERIOD:-97s}
phase_s=$((${period%s} * ${KEDA_PERIODS:-3}))
fallback_replicas=5
bin_dir=$root/target/debug

# --- KEDA: CRDs, certificates, the operator and the metrics server --------------------
# KEDA's operator stops when a CRD it watches is missing: all of the module's.
kc apply --server-side -f "$KEDA_BIN/crd/" >"$work/logs/apply-keda-crds.log"
[ "$(find "$KEDA_BIN/crd" -name '*.yaml' | wc -l)" -ge 6 ] || fail "$KEDA_BIN/crd lacks KEDA's eventing CRDs: delete $KEDA_BIN and run again"
kc create namespace keda >/dev/null
wait_for 60 "KEDA's CRDs" kc get scaledobjects -A
# The operator's metrics gRPC service and the metrics server share one
# certificate (KEDA's cert dir: ca.crt, tls.crt, tls.key; mutual TLS).
ca keda-ca keda-ca
leaf keda keda-ca /CN=keda serverAuth,clientAuth "IP:$ns_ip,DNS:keda-operator.keda.svc,DNS:keda-metrics-apiserver.keda.svc"
mkdir -p "$work/keda-certs"
cp "$pki/keda-ca.crt" "$work/keda-certs/ca.crt"
cp "$pki/keda.crt" "$work/keda-certs/tls.crt"
cp "$pki/keda.key" "$work/keda-certs/tls.key"
keda_env=(env KUBECONFIG="$work/admin.kubeconfig" WATCH_NAMESPACE= KEDA_CLUSTER_OBJECT_NAMESPACE=keda POD_NAMESPACE=keda)
background keda-operator "${keda_env[@]}" "$KEDA_BIN/keda" --cert-dir="$work/keda-certs" \
  --metrics-service-bind-address="$ns_ip:9666" --metrics-bind-address=127.0.0.1:18180 \
  --health-probe-bind-address=127.0.0.1:18181 --ca-dir="$work/keda-certs" --zap-log-level=info
background keda-metrics-apiserver "${keda_env[@]}" "$KEDA_BIN/keda-adapter" --secure-port=6445 --bind-address="$ns_ip" \
  --cert-dir="$work/keda-certs" --tls-cert-file="$work/keda-certs/tls.crt" --tls-private-key-file="$work/keda-certs/tls.key" \
  --metrics-service-address="keda-operator.keda.svc:9666" --port=18182 \
  --authentication-kubeconfig="$work/admin.kubeconfig" --authorization-kubeconfig="$work/admin.kubeconfig" \
  --lister-kubeconfig="$work/admin.kubeconfig" --zap-log-level=info
kc apply --server-side -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: keda-metrics-apiserver, namespace: keda}
spec: {ports: [{name: https, port: 443, targetPort: 6445}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: keda-metrics-apiserver-e2e
  namespace: keda
  labels: {kubernetes.io/service-name: keda-metrics-apiserver, endpointslice.kubernetes.io/managed-by: e2e}
addressType: IPv4
ports: [{name: https, port: 6445, protocol: TCP}]
endpoints: [{addresses: ["$ns_ip"], conditions: {ready: true}}]
EOF

# --- the adapter with its scaler port, KEDA's client certificate ---------------------------
sim=${controller_ips[0]}
background generator env RUST_LOG=info "$bin_dir/generator" --simulate --listen "$sim:10080" --create-after 15s \
  --period "$period" --scale-hold 5s --min-rate 100 --max-rate 2000 --scaling-rate 800 --scale-factor 3
generator=${pids[-1]}
wait_for 30 "the simulated controller's /prometheus" python3 -c \
  "import urllib.request; urllib.request.urlopen('http://$sim:10080/prometheus', timeout=1)"
# A pod is refused until its namespace's default ServiceAccount exists.
wait_for 60 "serviceaccount pravega/default" kc -n pravega get serviceaccount default
controller_pod pravega-pravega-controller-0 "$sim"
"$root/apiservice/gen-keda-client-cert.sh" --out "$work/keda-client" --serving-ca "$work/serving/ca.crt" >/dev/null
adapter_args+=(--keda-client-ca-file="$work/keda-client/client-ca.crt")
start_adapter
apply_files keda-secrets -k "$work/keda-client"
apply_files manifests-keda -k "$root/manifests/keda" --force-conflicts
log "PASS manifests/keda applied (server-side dry run, then apply)"

# KEDA takes v1beta1.external.metrics.k8s.io; the adapter keeps custom.metrics.
kc apply --server-side --force-conflicts -f - >/dev/null <<EOF
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.external.metrics.k8s.io}
spec:
  service: {name: keda-metrics-apiserver, namespace: keda}
  group: external.metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
EOF
# KEDA's discovery lists one resource, externalmetrics; the adapter's lists its metrics.
keda_serves() { kc get --raw /apis/external.metrics.k8s.io/v1beta1 | grep -q '"externalmetrics"'; }
wait_for 90 "KEDA's metrics server behind v1beta1.external.metrics.k8s.io" keda_serves
log "PASS KEDA's metrics server owns v1beta1.external.metrics.k8s.io"

# --- the ScaledObject, phase by phase ---------------------------------------------------
phase_file=$work/phase
echo setup >"$phase_file"
tsv=$out/keda-$hpa_sync.tsv
python3 "$keda_here/keda.py" record --server "$apiserver" --pki "$pki" --controller "http://$sim:10080/prometheus" \
  --phase-file "$phase_file" --out "$tsv" &
recorder=$!
stop_recorder() { kill "$recorder" 2>/dev/null || true; }
cleanup_hooks+=(stop_recorder)
apply_files scaledobject -f "$root/hpa/flink-taskmanager-keda.yaml"
so() { kc -n pravega patch scaledobject flink-taskmanager --type merge -p "$1" >/dev/null; }
# Fast scale-down as in loop.sh's simulated runs; a fallback that shows
# without ready pods.
so "{\"spec\":{\"fallback\":{\"behavior\":\"static\",\"replicas\":$fallback_replicas},\"advanced\":{\"horizontalPodAutoscalerConfig\":{\"behavior\":{\"scaleDown\":{\"stabilizationWindowSeconds\":1}}}}}}"
ready() { kc -n pravega get scaledobject flink-taskmanager -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }
wait_for 120 "the ScaledObject Ready" ready
wait_for 120 "KEDA's HPA" kc -n pravega get hpa keda-hpa-flink-taskmanager
log "PASS the ScaledObject is Ready; KEDA made its HPA"
trigger() { # trigger TYPE MIN_REPLICAS ACTIVATION POLLING
  so "{\"spec\":{\"minReplicaCount\":$2,\"pollingInterval\":$4,\"cooldownPeriod\":5,\"triggers\":[{\"type\":\"$1\",\"authenticationRef\":{\"name\":\"pravega-metrics-adapter\"},\"metadata\":{\"scalerAddress\":\"pravega-metrics-adapter.pravega-metrics.svc:9443\",\"scope\":\"test\",\"stream\":\"stream\",\"segmentsPerReplica\":\"1\",\"activationThreshold\":\"$3\"}}]}}"
}
run_phase() { # run_phase NAME TYPE MIN_REPLICAS ACTIVATION POLLING
  trigger "$2" "$3" "$4" "$5"
  sleep 5 # KEDA rebuilds the scaler
  echo "$1" >"$phase_file"
  log "phase $1 ($2, minReplicaCount $3, activationThreshold $4, pollingInterval $5 s) for $phase_s s"
  sleep "$phase_s"
}
run_phase push external-push 1 0 30
run_phase poll external 1 0 15
run_phase push-activation external-push 0 1 30
run_phase poll-activation external 0 1 15
trigger external-push 1 0 30
echo fallback >"$phase_file"
kill -STOP "$generator"
log "phase fallback: the simulated controller stopped"
# KEDA's HPA may read the fallback value before KEDA patches the condition.
fallen_back() {
  [ "$(kc -n pravega get deployment flink-taskmanager -o jsonpath='{.spec.replicas}')" = "$fallback_replicas" ] &&
    kc -n pravega get scaledobject flink-taskmanager -o jsonpath='{.status.conditions[?(@.type=="Fallback")].status}' | grep -qx True
}
wait_for 180 "KEDA's fallback to $fallback_replicas replicas while the adapter withholds" fallen_back
kill -CONT "$generator"
echo after >"$phase_file"
sleep 2
stop_recorder
wait "$recorder" 2>/dev/null || true
grep -q 'KEDA scaler: no value for a trigger' "$work/logs/adapter.log" || fail "the adapter logged no trigger without a value during the fallback phase"
python3 "$keda_here/keda.py" analyze "$tsv" --phase push --phase poll --phase push-activation:1 --phase poll-activation:1 \
  --fallback-replicas "$fallback_replicas" | tee "$out/keda-$hpa_sync.figures" || fail "KEDA did not follow the segment count (series in $tsv)"
cp "$work/logs/keda-operator.log" "$work/logs/adapter.log" "$out/" 2>/dev/null || true
log "PASS KEDA scaled flink-taskmanager from the adapter's external scaler: series in $tsv"
log "ALL PASSED"
