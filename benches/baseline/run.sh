#!/usr/bin/env bash
# The baseline, in one run on one machine: the original demo's chain
# (Prometheus -> prometheus-adapter -> aggregator -> HPA) against this
# adapter, on a real control plane (etcd + kube-apiserver with the
# aggregation layer + kube-controller-manager) in a network namespace, with
# two fake Pravega controller replicas (one stale) in front of all of them.
#
#   benches/baseline/run.sh      (as root; `make bench-baseline` runs it)
#
# Backends, each registered in turn as the v1beta1.external.metrics.k8s.io
# APIService behind the same HPA (hpa/flink-taskmanager-external.yaml):
#   demo       prometheus-adapter with the demo's rule (pravega-samples,
#              scenarios/pravega-flink-autoscaling: metricsQuery
#              `pravega_controller_segments_count`, no label matchers, so
#              the HPA sums every series of every replica and stream);
#   corrected  prometheus-adapter with a rule that selects by scope and
#              stream and takes the replica with the most scale events;
#   adapter    this project's adapter, default flags.
# Prometheus (Debian's package) scrapes at the demo's interval (30 s: its
# ServiceMonitor sets none and its Prometheus object sets none, so the
# Prometheus Operator's default applies) and at 1 s as a best case.
#
# Phases (BASELINE_PHASES, default all, in this order):
#   correctness  values served through the aggregator per stream, and the
#                replicas the HPA settles on, against the truth; then the
#                same while the current replica has restarted and lost its
#                series (what Pravega does until the stream's next scale);
#   reaction     a change at a controller -> the Deployment's replicas;
#   restart      a replica down for 10 s, then back with its values: time
#                from its return to a correct value through the aggregator;
#   resources    RSS and CPU of the chain (Prometheus + prometheus-adapter)
#                and of the adapter at BASELINE_STREAMS streams, then query
#                latency, sequential, through the aggregator and direct.
#
# Other knobs: BASELINE_HPA_SYNC (15s, the kube-controller-manager default),
# BASELINE_CHANGES (3 per backend), BASELINE_STREAMS ("1 100 10000"),
# BASELINE_WARMUP / BASELINE_WINDOW (30 / 60 s), BASELINE_REQUESTS (300),
# BASELINE_OUT (the Markdown report; default target/baseline/report.md).
#
# The control-plane start-up follows tests/e2e/run.sh (which another test
# owns and changes); it is repeated here rather than shared so that either
# can change without breaking the other.
#
# Without root or network namespaces, or when the Go module proxy refuses
# a download, it prints SKIPPED and exits 0.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
ns_ip=10.201.0.1 # kube-apiserver, the backends
replica_ips=(10.201.0.11 10.201.0.12)
apiserver=https://$ns_ip:6444
hpa_sync=${BASELINE_HPA_SYNC:-15s}
phases=${BASELINE_PHASES:-correctness reaction restart resources}
changes=${BASELINE_CHANGES:-3}
sizes=${BASELINE_STREAMS:-1 100 10000}
warmup=${BASELINE_WARMUP:-30}
window=${BASELINE_WINDOW:-60}
requests=${BASELINE_REQUESTS:-300}
report=${BASELINE_OUT:-$root/target/baseline/report.md}

log() { printf '[baseline %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { printf '[baseline] FAILED: %s\n' "$*" >&2; exit 1; }
skip() {
  printf '\n**********************************************************************\n'
  printf '* bench-baseline SKIPPED: %s\n' "$*"
  printf '**********************************************************************\n\n'
  exit 0
}

# --- outside the namespace: prerequisites, then re-enter inside it ----------
if [ -z "${BASELINE_INSIDE_NETNS:-}" ]; then
  [ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces (run: sudo make bench-baseline)"
  command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
  obtained=0
  bin=$("$root/tests/e2e/obtain-kubernetes.sh") || obtained=$?
  [ $obtained -ne 3 ] || skip "cannot build Kubernetes from the Go module proxy: $bin"
  [ $obtained -eq 0 ] || fail "tests/e2e/obtain-kubernetes.sh failed (exit status $obtained)"
  obtained=0
  padapter=$("$here/obtain-prometheus-adapter.sh") || obtained=$?
  [ $obtained -ne 3 ] || skip "cannot build prometheus-adapter from the Go module proxy: $padapter"
  [ $obtained -eq 0 ] || fail "benches/baseline/obtain-prometheus-adapter.sh failed (exit status $obtained)"
  for pkg in prometheus openssl python3 curl; do
    command -v "$pkg" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  done
  (cd "$root" && cargo build --quiet --release --locked --bin pravega-metrics-adapter)
  mkdir -p "$(dirname "$report")"
  netns=pfa-baseline-$$
  ip netns add "$netns" 2>/dev/null || skip "cannot create a network namespace (ip netns add failed)"
  trap 'ip netns del "$netns" 2>/dev/null || true' EXIT
  ip netns exec "$netns" ip link set lo up
  for ip in "$ns_ip" "${replica_ips[@]}"; do ip netns exec "$netns" ip addr add "$ip/32" dev lo; done
  ip netns exec "$netns" env BASELINE_INSIDE_NETNS=1 BASELINE_BIN="$bin" BASELINE_PADAPTER="$padapter" \
    bash ${BASELINE_TRACE:+-x} "$0"
  exit
fi

# --- inside the namespace -----------------------------------------------------
bin=$BASELINE_BIN
padapter=$BASELINE_PADAPTER
adapter_bin=$root/target/release/pravega-metrics-adapter
work=$(mktemp -d /tmp/pfa-baseline.XXXXXX)
pids=()
main_shell=$BASHPID
cleanup() {
  local status=$?
  [ "$BASHPID" = "$main_shell" ] || return 0
  local all=("${pids[@]}" ${backend_pids[@]+"${backend_pids[@]}"} ${replica_pids[@]+"${replica_pids[@]}"}) pid
  for pid in "${all[@]}"; do kill "$pid" 2>/dev/null || true; done
  # kube-apiserver drains for up to a minute on SIGTERM: not waited for.
  sleep 5
  for pid in "${all[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ $status -ne 0 ]; then
    for f in "$work"/logs/*.log; do
      printf '\n----- last lines of %s -----\n' "$(basename "$f")"
      tail -n 15 "$f"
    done
    log "work directory kept: $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
mkdir -p "$work/logs" "$work/pki"
background() { local name=$1; shift; "$@" >>"$work/logs/$name.log" 2>&1 & pids+=($!); }
kc() { "$bin/kubectl" --kubeconfig "$work/admin.kubeconfig" "$@"; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"
    sleep 0.5
  done
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
out() { printf '%s\n' "$*" | tee -a "$report"; }

# --- PKI ------------------------------------------------------------------------
pki=$work/pki
ca() { openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$2" -keyout "$pki/$1.key" -out "$pki/$1.crt" 2>/dev/null; }
leaf() { # leaf NAME CA SUBJECT EXTENDED_USAGE [SANS]
  local ext="extendedKeyUsage=$4"
  [ -n "${5:-}" ] && ext="$ext
subjectAltName=$5"
  openssl req -newkey rsa:2048 -nodes -subj "$3" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/$2.crt" -CAkey "$pki/$2.key" -CAcreateserial -days 2 \
    -extfile <(printf '%s\n' "$ext") -out "$pki/$1.crt" 2>/dev/null
}
ca cluster-ca kubernetes-ca
ca front-proxy-ca front-proxy-ca
ca serving-ca baseline-serving-ca
leaf apiserver cluster-ca /CN=kube-apiserver serverAuth "IP:$ns_ip,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes.default.svc"
leaf admin cluster-ca "/O=system:masters/CN=baseline-admin" clientAuth
leaf controller-manager cluster-ca /CN=system:kube-controller-manager clientAuth
leaf front-proxy-client front-proxy-ca /CN=front-proxy-client clientAuth
# One serving certificate for the three backends' Services.
leaf serving serving-ca /CN=baseline-backend serverAuth \
  "DNS:demo.baseline.svc,DNS:corrected.baseline.svc,DNS:adapter.baseline.svc,IP:$ns_ip"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
kubeconfig() { # kubeconfig FILE USER-CERT
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: b, cluster: {server: "$apiserver", certificate-authority: "$pki/cluster-ca.crt"}}]
users: [{name: u, user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}}]
contexts: [{name: b, context: {cluster: b, user: u}}]
current-context: b
EOF
}
kubeconfig "$work/admin.kubeconfig" admin
kubeconfig "$work/controller-manager.kubeconfig" controller-manager

# --- control plane --------------------------------------------------------------
started=$(now)
background etcd "$bin/etcd" --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380
background kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 --bind-address="$ns_ip" --advertise-address="$ns_ip" --secure-port=6444 \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/cluster-ca.crt" --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$pki/sa.pub" \
  --service-account-signing-key-file="$pki/sa.key" --service-cluster-ip-range=10.96.0.0/24 \
  --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
  --enable-aggregator-routing=true
wait_for 90 "kube-apiserver /readyz" kc get --raw /readyz
# The downscale stabilization is shortened (default 5 min) so that a change
# down is measured as promptly as a change up; it is the same for every backend.
background kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$work/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$work/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$work/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/cluster-ca.crt" \
  --controllers='*' --horizontal-pod-autoscaler-sync-period="$hpa_sync" \
  --horizontal-pod-autoscaler-downscale-stabilization=1s
wait_for 60 "extension-apiserver-authentication configmap" kc -n kube-system get configmap extension-apiserver-authentication
log "control plane ready in $(since "$started") s"

kc create namespace pravega >/dev/null
kc create namespace baseline >/dev/null
# The TaskManager Deployment the HPA scales (no kubelet: its pods stay Pending,
# which the HPA does not need for an External AverageValue target).
kc apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: flink-taskmanager, namespace: pravega}
spec:
  replicas: 1
  selector: {matchLabels: {app: flink-taskmanager}}
  template:
    metadata: {labels: {app: flink-taskmanager}}
    spec: {containers: [{name: taskmanager, image: flink:1.17}]}
EOF
# backend NAME PORT: a Service and a hand-made EndpointSlice at $ns_ip:PORT.
declare -A backend_port=([demo]=6451 [corrected]=6452 [adapter]=6453)
for name in demo corrected adapter; do
  kc apply --server-side -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: baseline}
spec: {ports: [{name: https, port: 443, targetPort: ${backend_port[$name]}}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $name-baseline
  namespace: baseline
  labels: {kubernetes.io/service-name: $name, endpointslice.kubernetes.io/managed-by: baseline}
addressType: IPv4
ports: [{name: https, port: ${backend_port[$name]}, protocol: TCP}]
endpoints: [{addresses: ["$ns_ip"], conditions: {ready: true}}]
EOF
done

# --- fake Pravega controller replicas -------------------------------------------------
replica_dir=("$work/controller-0" "$work/controller-1")
replica_pids=()
start_replica() { # start_replica I
  python3 "$here/exposition.py" --serve "${replica_ips[$1]}" 10080 "${replica_dir[$1]}" \
    >>"$work/logs/controller-$1.log" 2>&1 &
  replica_pids[$1]=$!
  wait_for 10 "fake controller $1" curl -sf "http://${replica_ips[$1]}:10080/prometheus"
}
stop_replica() { kill "${replica_pids[$1]}" 2>/dev/null || true; wait "${replica_pids[$1]}" 2>/dev/null || true; }
expose() { local i=$1; shift; python3 "$here/exposition.py" "${replica_dir[$i]}/prometheus" "$@"; }
for i in 0 1; do
  mkdir -p "${replica_dir[$i]}"
  expose "$i"
  start_replica "$i"
done

# --- backends -------------------------------------------------------------------------
backend_pids=()
stop_backend() {
  local pid
  for pid in ${backend_pids[@]+"${backend_pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${backend_pids[@]+"${backend_pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
  backend_pids=()
}
prometheus_pid=
start_prometheus() { # start_prometheus INTERVAL_SECONDS
  local interval=$1 timeout dir=$work/prometheus
  timeout=$([ "$interval" -le 1 ] && echo 900ms || echo 10s)
  rm -rf "$dir"
  mkdir -p "$dir"
  # The labels a ServiceMonitor's relabelling gives each controller pod.
  cat >"$dir/prometheus.yml" <<EOF
global: {scrape_interval: ${interval}s, scrape_timeout: $timeout}
scrape_configs:
  - job_name: pravega-controller
    metrics_path: /prometheus
    static_configs:
      - targets: ['${replica_ips[0]}:10080']
        labels: {namespace: pravega, pod: pravega-pravega-controller-0}
      - targets: ['${replica_ips[1]}:10080']
        labels: {namespace: pravega, pod: pravega-pravega-controller-1}
EOF
  prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address=127.0.0.1:9090 >>"$work/logs/prometheus.log" 2>&1 &
  prometheus_pid=$!
  backend_pids+=("$prometheus_pid")
  wait_for 60 "Prometheus ready" curl -sf http://127.0.0.1:9090/-/ready
  # prometheus-adapter lists the series once at start (then every minute):
  # start it after the first scrape, as in a cluster that runs for a while.
  wait_for $((interval + 60)) "Prometheus's first scrape of both replicas" prometheus_has "count(up == 1) == 2"
}
prometheus_has() {
  curl -sf http://127.0.0.1:9090/api/v1/query --data-urlencode "query=$1" |
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["data"]["result"] else 1)'
}
padapter_pid=
start_padapter() { # start_padapter RULE (demo|corrected)
  "$padapter" --secure-port="${backend_port[$1]}" --bind-address="$ns_ip" \
    --tls-cert-file="$pki/serving.crt" --tls-private-key-file="$pki/serving.key" \
    --lister-kubeconfig="$work/admin.kubeconfig" --authentication-kubeconfig="$work/admin.kubeconfig" \
    --authorization-kubeconfig="$work/admin.kubeconfig" \
    --prometheus-url=http://127.0.0.1:9090/ --metrics-relist-interval=1m --config="$here/rules-$1.yaml" \
    >>"$work/logs/prometheus-adapter-$1.log" 2>&1 &
  padapter_pid=$!
  backend_pids+=("$padapter_pid")
}
adapter_pid=
start_adapter() {
  "$adapter_bin" --secure-port="${backend_port[adapter]}" --bind-address="$ns_ip" \
    --tls-cert-file="$pki/serving.crt" --tls-private-key-file="$pki/serving.key" \
    --controller-url="http://${replica_ips[0]}:10080/prometheus" --controller-url="http://${replica_ips[1]}:10080/prometheus" \
    --kubeconfig="$work/admin.kubeconfig" >>"$work/logs/adapter.log" 2>&1 &
  adapter_pid=$!
  backend_pids+=("$adapter_pid")
}
# register NAME: the external-metrics APIService points at that backend.
register() {
  kc delete apiservice v1beta1.external.metrics.k8s.io --ignore-not-found >/dev/null
  kc apply -f - >/dev/null <<EOF
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.external.metrics.k8s.io}
spec:
  group: external.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: $(base64 -w0 "$pki/serving-ca.crt")
  service: {namespace: baseline, name: $1, port: 443}
EOF
  wait_for 120 "APIService for $1 Available" sh -c \
    "'$bin/kubectl' --kubeconfig '$work/admin.kubeconfig' get apiservice v1beta1.external.metrics.k8s.io -o jsonpath='{.status.conditions[?(@.type==\"Available\")].status}' | grep -qx True"
}
# use CONFIG: stops the running backend, starts CONFIG and registers it.
# CONFIG: demo-30 demo-1 corrected-30 corrected-1 (rule-interval) or adapter.
use() {
  stop_backend
  case $1 in
    adapter) start_adapter ;;
    *) start_prometheus "${1#*-}"; start_padapter "${1%-*}" ;;
  esac
  register "${1%-*}"
  wait_for 120 "a value from $1" served_number test stream
  log "$1 serves"
}
describe() {
  case $1 in
    demo-*) echo "demo rule, scrape ${1#*-} s" ;;
    corrected-*) echo "corrected rule, scrape ${1#*-} s" ;;
    adapter) echo "adapter" ;;
  esac
}

# --- reading what is served -------------------------------------------------------------
external_path() { echo "/apis/external.metrics.k8s.io/v1beta1/namespaces/pravega/pravega_controller_segments_count?labelSelector=scope%3D$1%2Cstream%3D$2"; }
# served SCOPE STREAM: what the HPA would read, the sum of the items'
# values ("none" for no items, "error" for no answer).
served() {
  local body
  body=$(kc get --raw "$(external_path "$1" "$2")" 2>/dev/null) || { echo error; return; }
  python3 -c '
import json, sys
items = json.loads(sys.argv[1]).get("items", [])
def quantity(q):
    for suffix, scale in (("m", 1e-3), ("k", 1e3), ("M", 1e6)):
        if q.endswith(suffix):
            return float(q[:-1]) * scale
    return float(q)
total = sum(quantity(i["value"]) for i in items)
print("none" if not items else ("%g" % total))' "$body"
}
served_number() { local v; v=$(served "$1" "$2"); [[ $v =~ ^[0-9.]+$ ]]; }
replicas() { kc -n pravega get deployment flink-taskmanager -o jsonpath='{.spec.replicas}'; }
# settle [SECONDS]: waits until the Deployment's replicas have not changed for
# that long (default two HPA syncs; at most 180 s in all) and prints them.
settle() {
  local last r stable_since=$SECONDS deadline=$((SECONDS + 180)) hold=${1:-$((2 * ${hpa_sync%s} + 2))}
  last=$(replicas)
  while [ $((SECONDS - stable_since)) -lt $hold ] && [ $SECONDS -lt $deadline ]; do
    sleep 1
    r=$(replicas)
    [ "$r" = "$last" ] || { last=$r; stable_since=$SECONDS; }
  done
  echo "$last"
}
pid_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
pid_rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
pid_hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }

kc apply -f "$root/hpa/flink-taskmanager-external.yaml" >/dev/null
# Its own scale-down window (120 s) overrides the controller's flag above:
# shortened the same way, for the same reason.
kc -n pravega patch hpa flink-taskmanager --type merge \
  -p '{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":1}}}}' >/dev/null
: >"$report"
out "## Baseline: Prometheus + prometheus-adapter against the adapter"
out ""
out "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"). Command: \`make bench-baseline\` (benches/baseline/run.sh; BASELINE_PHASES='$phases' BASELINE_STREAMS='$sizes' BASELINE_WARMUP=$warmup BASELINE_WINDOW=$window BASELINE_CHANGES=$changes BASELINE_REQUESTS=$requests)."
out ""
out "Versions: $("$bin/kube-apiserver" --version) (kube-apiserver, kube-controller-manager), etcd $("$bin/etcd" --version | awk '/etcd Version/ { print $3 }'), $(prometheus --version 2>&1 | head -n1), prometheus-adapter $(basename "$(dirname "$(dirname "$padapter")")") (go build from the Go module proxy), adapter $(awk -F'"' '/^version/ { print $2; exit }' "$root/Cargo.toml") (release build, commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)). HPA: hpa/flink-taskmanager-external.yaml (External, AverageValue 1, selector scope=test, stream=stream), sync period $hpa_sync, downscale stabilization 1 s."
out ""

# --- correctness ------------------------------------------------------------------------
# Two replicas, four streams. Truth: the value of the replica that has seen
# the most scale events (splits + merges) for the stream.
correctness_streams=(test/stream test/orders test/clicks other/events)
truth=(6 4 2 1)
correctness_expositions() {
  expose 0 test/stream=3,2,0 test/orders=4,3,0 test/clicks=2,5,4
  expose 1 test/stream=6,5,0 test/clicks=5,4,0 other/events=1,0,0
}
correctness() {
  local config row s i values restarted hpa
  out "### Correctness"
  out ""
  out "Replica 0: test/stream 3 segments (2 splits, stale), test/orders 4 (3 splits), test/clicks 2 (5 splits + 4 merges). Replica 1: test/stream 6 (5 splits), test/clicks 5 (4 splits, stale), other/events 1 (never scaled). Values are what \`kubectl get --raw\` of the external metric with labelSelector scope,stream returns through the aggregator (items summed, as the HPA does). \"After restart\": replica 1 restarted and, like a Pravega controller, reports no series for its streams until their next scale; the truth for test/stream is still 6."
  out ""
  out "| backend | test/stream | test/orders | test/clicks | other/events | HPA replicas (test/stream) | after restart: test/stream served at 4 s → once the HPA settled | after restart: HPA replicas |"
  out "|---|---|---|---|---|---|---|---|"
  out "| **truth** | 6 | 4 | 2 | 1 | 6 | 6 or none (the HPA holds) | 6 |"
  for config in demo-1 corrected-1 adapter; do
    correctness_expositions
    use "$config"
    # Both replicas' values in: Prometheus's next scrape, the adapter's refresh.
    sleep 3
    values=()
    i=0
    for s in "${correctness_streams[@]}"; do
      values+=("$(served "${s%/*}" "${s#*/}")")
      i=$((i + 1))
    done
    hpa=$(settle)
    expose 1
    sleep 4
    restarted=$(served test stream)
    local hpa_restarted
    hpa_restarted=$(settle)
    # Again once the HPA has settled, past the adapter's --metrics-max-age.
    restarted+=" → $(served test stream)"
    row="| $(describe "$config") |"
    i=0
    for s in "${correctness_streams[@]}"; do
      if [ "${values[$i]}" = "${truth[$i]}" ]; then row+=" ${values[$i]} |"; else row+=" **${values[$i]}** (wrong) |"; fi
      i=$((i + 1))
    done
    row+=" $hpa$([ "$hpa" = 6 ] || echo ' (wrong)') | $restarted$(grep -qvE '^(6|none) → (6|none)$' <<<"$restarted" && echo ' (wrong)') | $hpa_restarted$([ "$hpa_restarted" = 6 ] || echo ' (wrong)') |"
    out "$row"
  done
  out ""
}

# --- reaction -------------------------------------------------------------------------
reaction() {
  local config k before start r t v seg served_at served_list list deadline
  out "### HPA reaction: a change at the controller -> the Deployment's replicas"
  out ""
  out "$changes changes of test/stream at replica 1 (8 segments, then 6, ...; each with one more split), each after the HPA settled and a random 0-9 s more; from writing the exposition to the new value served through the aggregator (polled), and to .spec.replicas changing. Same HPA, sync period $hpa_sync: that part is uniform in 0-${hpa_sync%s} s for every backend."
  out ""
  out "| backend | change -> served, each, s | mean | change -> replicas, each, s | mean |"
  out "|---|---|---|---|---|"
  mean() { printf '%s\n' "$@" | awk '/^[0-9.]+$/ { s += $1; n++ } END { if (n) printf "%.1f", s / n; else print "-" }'; }
  for config in corrected-30 corrected-1 adapter; do
    correctness_expositions
    use "$config"
    settle >/dev/null
    list=()
    served_list=()
    for k in $(seq 1 "$changes"); do
      before=$(replicas)
      seg=$([ $((k % 2)) -eq 1 ] && echo 8 || echo 6)
      start=$(now)
      expose 1 "test/stream=$seg,$((5 + k)),0" test/clicks=5,4,0 other/events=1,0,0
      t=
      served_at=
      deadline=$((SECONDS + 150))
      while [ $SECONDS -lt $deadline ]; do
        if [ -z "$served_at" ]; then
          v=$(served test stream)
          [ "$v" != "$seg" ] || served_at=$(since "$start")
        fi
        r=$(replicas)
        if [ "$r" != "$before" ]; then
          t=$(since "$start")
          [ -n "$served_at" ] || served_at=$t
          break
        fi
        sleep 0.2
      done
      list+=("${t:-timeout}")
      served_list+=("${served_at:-timeout}")
      log "$config change $k: served in ${served_at:-timeout} s; replicas $before -> $r in ${t:-timeout} s"
      settle $((${hpa_sync%s} + 2)) >/dev/null
      # A random phase against the next scrape and HPA sync.
      sleep $((RANDOM % 10))
    done
    out "| $(describe "$config") | ${served_list[*]} | $(mean "${served_list[@]}") | ${list[*]} | $(mean "${list[@]}") |"
  done
  out ""
}

# --- restart -----------------------------------------------------------------------------
restart() {
  local config start v t noticed seen deadline
  out "### A controller replica restarts"
  out ""
  out "Replica 1 (the one with the current value of test/stream, 6) stops until the backend no longer serves 6 (at least 10 s, at most 45 s), then serves its exposition again. Polled through the aggregator every 0.5 s: when the backend noticed, the time from the replica's return to the correct value, and what was served while it was down."
  out ""
  out "| backend | down -> served value changes, s | back -> correct again, s | served while it was down (distinct) |"
  out "|---|---|---|---|"
  for config in corrected-30 corrected-1 adapter; do
    correctness_expositions
    use "$config"
    deadline=$((SECONDS + 60))
    until [ "$(served test stream)" = 6 ] || [ $SECONDS -ge $deadline ]; do sleep 0.5; done
    stop_replica 1
    start=$(now)
    seen=()
    noticed=-
    deadline=$((SECONDS + 45))
    while [ $SECONDS -lt $deadline ]; do
      v=$(served test stream)
      seen+=("$v")
      if [ "$v" != 6 ] && [ "$noticed" = - ]; then noticed=$(since "$start"); fi
      if [ "$noticed" != - ] && [ "$(since "$start" | cut -d. -f1)" -ge 10 ]; then break; fi
      sleep 0.5
    done
    start_replica 1
    start=$(now)
    t=timeout
    deadline=$((SECONDS + 120))
    while [ $SECONDS -lt $deadline ]; do
      v=$(served test stream)
      [ "$v" = 6 ] && { t=$(since "$start"); break; }
      seen+=("$v")
      sleep 0.5
    done
    out "| $(describe "$config") | $noticed | $t | $(printf '%s\n' "${seen[@]}" | sort -u | tr '\n' ' ') |"
  done
  out ""
}

# --- resources and latency ------------------------------------------------------------------
# latency URL CURL-ARGS...: $requests sequential GETs on one connection;
# prints p50 and p99 in ms.
latency() {
  local url=$1
  shift
  local config=$work/curl.cfg
  : >"$config"
  for _ in $(seq 1 "$requests"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >>"$config"; done
  curl -s "$@" -w '%{time_total}\n' --config "$config" |
    sort -n | awk '{ v[NR] = $1 * 1000 } END { printf "%.2f / %.2f", v[int(NR * 0.5 + 0.5)], v[int(NR * 0.99 + 0.5)] }'
}
resources() {
  local streams config p ticks0 ticks1 rss hwm cpu through direct promql
  local hertz
  hertz=$(getconf CLK_TCK)
  out "### Resources and query latency"
  out ""
  out "Both replicas expose N streams (replica 0 all, replica 1 every other one, with more scale events). After a ${warmup} s warm-up with the HPA reading every $hpa_sync: RSS at the end of a ${window} s window and CPU over it, summed over Prometheus and prometheus-adapter for the chain. Latency: $requests sequential GETs of test/stream on one connection (curl), p50 / p99 ms, through the aggregator (admin client certificate) and direct to the backend (front-proxy client certificate and X-Remote-User/-Group headers, as the aggregator sends); for the chain also Prometheus's own /api/v1/query of the rule's PromQL (the hop inside the chain). The adapter runs with default flags (background scrape every 10 s, refreshed on query when older than 1 s)."
  out ""
  out "| streams | backend | RSS MiB | peak RSS MiB | CPU ms/s | p50 / p99 ms through the aggregator | p50 / p99 ms direct | p50 / p99 ms Prometheus query |"
  out "|---|---|---|---|---|---|---|---|"
  for streams in $sizes; do
    expose 0 --synthetic "$streams" --replica 0
    expose 1 --synthetic "$streams" --replica 1
    for config in corrected-30 corrected-1 adapter; do
      use "$config"
      sleep "$warmup"
      ticks0=0
      for p in "${backend_pids[@]}"; do ticks0=$((ticks0 + $(pid_ticks "$p"))); done
      sleep "$window"
      ticks1=0 rss=0 hwm=0
      for p in "${backend_pids[@]}"; do
        ticks1=$((ticks1 + $(pid_ticks "$p")))
        rss=$((rss + $(pid_rss_kib "$p")))
        hwm=$((hwm + $(pid_hwm_kib "$p")))
      done
      cpu=$(awk -v t=$((ticks1 - ticks0)) -v h="$hertz" -v w="$window" 'BEGIN { printf "%.2f", t * 1000 / h / w }')
      through=$(latency "$apiserver$(external_path test stream)" --cacert "$pki/cluster-ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key")
      direct=$(latency "https://$ns_ip:${backend_port[${config%-*}]}$(external_path test stream)" --cacert "$pki/serving-ca.crt" \
        --cert "$pki/front-proxy-client.crt" --key "$pki/front-proxy-client.key" \
        -H 'X-Remote-User: baseline-admin' -H 'X-Remote-Group: system:masters')
      promql=-
      if [ "$config" != adapter ]; then
        promql=$(latency "http://127.0.0.1:9090/api/v1/query?query=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$(corrected_promql)")")
      fi
      out "| $streams | $(describe "$config") | $(awk -v k=$rss 'BEGIN { printf "%.1f", k / 1024 }') | $(awk -v k=$hwm 'BEGIN { printf "%.1f", k / 1024 }') | $cpu | $through | $direct | $promql |"
    done
  done
  out ""
}
# The corrected rule's query for test/stream, as prometheus-adapter renders it.
corrected_promql() {
  sed -n '/metricsQuery: |/,$p' "$here/rules-corrected.yaml" | tail -n +2 | sed 's/^ *//' | tr '\n' ' ' |
    sed 's/<<.Series>>/pravega_controller_segments_count/g; s/<<.LabelMatchers>>/namespace="pravega",scope="test",stream="stream"/g'
}

for phase in $phases; do
  log "phase $phase"
  "$phase"
done
stop_backend
log "report: $report"
