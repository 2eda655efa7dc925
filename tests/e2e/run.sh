#!/usr/bin/env bash
# End-to-end test on a real control plane: etcd + kube-apiserver (with the
# aggregation layer) + kube-controller-manager (HPA, Deployment, ServiceAccount
# controllers), the adapter, and two fake Pravega controller replicas, all in
# a network namespace of their own. It applies the project's own manifests/,
# apiservice/ and hpa/ files as shipped (server-side dry run, then server-side
# apply) and watches the stock HPA scale flink-taskmanager with the segment
# count, past 10 replicas with hpa/tolerance-zero.patch.yaml.
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
# Without root or network namespaces, or when the module proxy refuses a
# download, it prints SKIPPED and exits 0; any failed assertion exits
# non-zero. Timings are printed as "TIMING ..." lines.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
ns_ip=10.200.0.1          # kube-apiserver, etcd clients, the adapter
controller_ips=(10.200.0.11 10.200.0.12)
apiserver=https://$ns_ip:6444
hpa_sync=2s

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { printf '[e2e] FAILED: %s\n' "$*" >&2; exit 1; }
skip() {
  printf '\n**********************************************************************\n'
  printf '* e2e SKIPPED: %s\n' "$*"
  printf '**********************************************************************\n\n'
  exit 0
}

# --- outside the namespace: prerequisites, then re-enter inside it ----------
if [ -z "${E2E_INSIDE_NETNS:-}" ]; then
  [ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces (run: sudo make test)"
  command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
  started=$SECONDS
  obtained=0
  bin=$("$here/obtain-kubernetes.sh") || obtained=$?
  [ $obtained -ne 3 ] || skip "cannot build Kubernetes from the Go module proxy: $bin"
  [ $obtained -eq 0 ] || fail "tests/e2e/obtain-kubernetes.sh failed (exit status $obtained)"
  log "kubernetes binaries ready in $bin ($((SECONDS - started)) s)"
  for pkg in openssl python3; do
    command -v "$pkg" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  done
  (cd "$root" && cargo build --quiet --locked --bin pravega-metrics-adapter)
  netns=pfa-e2e-$$
  ip netns add "$netns" 2>/dev/null || skip "cannot create a network namespace (ip netns add failed)"
  trap 'ip netns del "$netns" 2>/dev/null || true' EXIT
  ip netns exec "$netns" ip link set lo up
  for ip in "$ns_ip" "${controller_ips[@]}"; do ip netns exec "$netns" ip addr add "$ip/32" dev lo; done
  status=0
  ip netns exec "$netns" env E2E_INSIDE_NETNS=1 E2E_BIN="$bin" bash ${E2E_TRACE:+-x} "$0" || status=$?
  log "total $((SECONDS - started)) s"
  exit $status
fi

# --- inside the namespace -----------------------------------------------------
bin=$E2E_BIN
work=$(mktemp -d /tmp/pfa-e2e.XXXXXX)
pids=()
main_shell=$BASHPID
cleanup() {
  local status=$?
  # Command substitutions run this trap too when they exit: only the main
  # shell may tear the cluster down.
  [ "$BASHPID" = "$main_shell" ] || return 0
  # Newest first: the kube-apiserver shuts down in seconds while etcd is up,
  # and stalls for minutes once it is gone.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done
  if [ $status -ne 0 ]; then
    for f in "$work"/logs/*.log; do
      printf '\n----- last lines of %s -----\n' "$(basename "$f")"
      tail -n 25 "$f"
    done
    log "work directory kept: $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
stop() { # stop PID: SIGTERM, SIGKILL if it still runs 20 s later
  local timer
  kill "$1" 2>/dev/null || return 0
  (sleep 20 && kill -9 "$1" 2>/dev/null) &
  timer=$!
  wait "$1" 2>/dev/null || true
  kill "$timer" 2>/dev/null || true
}
mkdir -p "$work/logs" "$work/pki"
background() { local name=$1; shift; "$@" >"$work/logs/$name.log" 2>&1 & pids+=($!); }
kc() { "$bin/kubectl" --kubeconfig "$work/admin.kubeconfig" "$@"; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"
    sleep 0.5
  done
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- PKI ------------------------------------------------------------------------
pki=$work/pki
ca() { openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$2" -keyout "$pki/$1.key" -out "$pki/$1.crt" 2>/dev/null; }
# leaf NAME CA SUBJECT EXTENDED_USAGE [SANS]
leaf() {
  local ext="extendedKeyUsage=$4"
  [ -n "${5:-}" ] && ext="$ext
subjectAltName=$5"
  openssl req -newkey rsa:2048 -nodes -subj "$3" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/$2.crt" -CAkey "$pki/$2.key" -CAcreateserial -days 2 \
    -extfile <(printf '%s\n' "$ext") -out "$pki/$1.crt" 2>/dev/null
}
ca cluster-ca kubernetes-ca
ca front-proxy-ca front-proxy-ca
leaf apiserver cluster-ca /CN=kube-apiserver serverAuth "IP:$ns_ip,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes.default.svc"
leaf admin cluster-ca "/O=system:masters/CN=e2e-admin" clientAuth
leaf controller-manager cluster-ca /CN=system:kube-controller-manager clientAuth
leaf front-proxy-client front-proxy-ca /CN=front-proxy-client clientAuth
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
kubeconfig() { # kubeconfig FILE USER-CERT
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "$apiserver", certificate-authority: "$pki/cluster-ca.crt"}}]
users: [{name: u, user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: u}}]
current-context: e2e
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
background kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$work/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$work/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$work/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/cluster-ca.crt" \
  --controllers='*' --horizontal-pod-autoscaler-sync-period=$hpa_sync \
  --horizontal-pod-autoscaler-downscale-stabilization=1s
wait_for 60 "extension-apiserver-authentication configmap" kc -n kube-system get configmap extension-apiserver-authentication
log "TIMING control plane ready in $(elapsed "$started") s"

# --- the project's files, as shipped ------------------------------------------------
# apply_files NAME KUBECTL-ARGS...: a server-side dry run, then the server-side apply.
apply_files() {
  local name=$1
  shift
  kc apply --server-side --dry-run=server "$@" >"$work/logs/dry-run-$name.log" 2>&1 ||
    fail "server-side dry run of $name: $(cat "$work/logs/dry-run-$name.log")"
  kc apply --server-side "$@" >"$work/logs/apply-$name.log" 2>&1 ||
    fail "server-side apply of $name: $(cat "$work/logs/apply-$name.log")"
}
"$root/apiservice/gen-serving-cert.sh" --out "$work/serving" >"$work/logs/gen-serving-cert.log" 2>&1
# Namespaces first, so the dry run of namespaced objects can resolve them.
kc create namespace pravega-metrics >/dev/null
kc create namespace pravega >/dev/null
apply_files manifests -k "$root/manifests"
apply_files apiservice -k "$root/apiservice"
for form in external object; do
  kc apply --server-side --dry-run=server -f "$root/hpa/flink-taskmanager-$form.yaml" >"$work/logs/dry-run-hpa-$form.log" 2>&1 ||
    fail "server-side dry run of hpa/flink-taskmanager-$form.yaml: $(cat "$work/logs/dry-run-hpa-$form.log")"
done
log "PASS server-side dry run and apply of manifests/ and apiservice/, dry run of both HPAs"
# No kubelet: the adapter runs as a process on $ns_ip; a slice that is not the
# EndpointSlice controller's (managed-by) points the Service there.
kc apply --server-side -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: pravega-metrics-adapter-e2e
  namespace: pravega-metrics
  labels: {kubernetes.io/service-name: pravega-metrics-adapter, endpointslice.kubernetes.io/managed-by: e2e}
addressType: IPv4
ports: [{name: https, port: 6443, protocol: TCP}]
endpoints: [{addresses: ["$ns_ip"], conditions: {ready: true}}]
EOF
# token_of NAMESPACE SERVICEACCOUNT: a bound token from the TokenRequest API.
token_of() {
  wait_for 60 "serviceaccount $1/$2" kc -n "$1" get serviceaccount "$2"
  kc -n "$1" create token "$2"
}

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
for i in 0 1; do
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: pravega-pravega-controller-$i, namespace: pravega, labels: {component: pravega-controller}}
spec: {containers: [{name: controller, image: pravega/pravega:0.13.0}]}
EOF
  kc -n pravega patch pod "pravega-pravega-controller-$i" --subresource=status --type merge -p \
    "{\"status\":{\"phase\":\"Running\",\"podIP\":\"${controller_ips[$i]}\",\"podIPs\":[{\"ip\":\"${controller_ips[$i]}\"}],\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}" >/dev/null
done

# --- the adapter, as its ServiceAccount ---------------------------------------------------
token_kubeconfig() { # token_kubeconfig FILE TOKEN
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "$apiserver", certificate-authority: "$pki/cluster-ca.crt"}}]
users: [{name: u, user: {token: "$2"}}]
contexts: [{name: e2e, context: {cluster: e2e, user: u}}]
current-context: e2e
EOF
}
token_kubeconfig "$work/adapter.kubeconfig" "$(token_of pravega-metrics pravega-metrics-adapter)"
# The Deployment's own arguments, with the paths and addresses of this host.
background adapter env RUST_LOG=info "$root/target/debug/pravega-metrics-adapter" \
  --secure-port=6443 --bind-address="$ns_ip" \
  --tls-cert-file="$work/serving/tls.crt" --tls-private-key-file="$work/serving/tls.key" \
  --controller-namespace=pravega --log-format=json --kubeconfig="$work/adapter.kubeconfig"
started=$(now)
# gen-serving-cert.sh --out: the serving Secret and apiservice/ with caBundle set.
apply_files serving -k "$work/serving"
for apiservice in v1beta1.custom.metrics.k8s.io v1beta2.custom.metrics.k8s.io v1beta1.external.metrics.k8s.io; do
  wait_for 90 "APIService $apiservice Available" sh -c \
    "'$bin/kubectl' --kubeconfig '$work/admin.kubeconfig' get apiservice $apiservice -o jsonpath='{.status.conditions[?(@.type==\"Available\")].status}' | grep -qx True"
done
log "PASS the three APIServices are Available ($(elapsed "$started") s after registration)"
# Where the kube-apiserver log stands once they are, and the aggregator's own
# proxies know it (its informers follow the status within milliseconds): see
# the OpenAPI check at the end.
sleep 2
available_at=$SECONDS
apiserver_log_mark=$(wc -l <"$work/logs/kube-apiserver.log")

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
phase "External HPA, 3 segments" 3 none
sleep 16 # let the 15 s scale-up rate window pass
# Replica 1 scales the stream to 6; replica 0 still holds its stale 3.
exposition "${replica_dir[1]}" 6 5 0
phase "External HPA, 6 segments from the second replica while the first is stale" 6 9
sleep 16
# Replica 0 merges down to 2 (9 scale events, more than replica 1's 5).
exposition "${replica_dir[0]}" 2 5 4
phase "External HPA, merged down to 2 segments" 2 8
kc delete -f "$root/hpa/flink-taskmanager-external.yaml" >/dev/null
apply_files hpa-object -f "$root/hpa/flink-taskmanager-object.yaml"
exposition "${replica_dir[0]}" 4 7 4
phase "Object HPA, 4 segments" 4 none

# --- past 10 replicas: the 10 % tolerance, then hpa/tolerance-zero.patch.yaml ---------------------
# From here on replica 1 holds a stale 6: summing would give segments + 6.
sleep 16
exposition "${replica_dir[0]}" 11 14 4
phase "Object HPA, 11 segments" 11 17
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
patch=$root/hpa/tolerance-zero.patch.yaml
kc -n pravega patch hpa flink-taskmanager --type merge --patch-file "$patch" --dry-run=server >/dev/null ||
  fail "server-side dry run of the patch $patch"
kc -n pravega patch hpa flink-taskmanager --type merge --patch-file "$patch" >/dev/null
tolerances=$(kc -n pravega get hpa flink-taskmanager -o jsonpath='{.spec.behavior.scaleUp.tolerance} {.spec.behavior.scaleDown.tolerance}')
[ "$tolerances" = "0 0" ] ||
  fail "the kube-apiserver did not keep behavior.scaleUp/scaleDown.tolerance (HPAConfigurableTolerance): got '$tolerances'"
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

log "ALL PASSED"
