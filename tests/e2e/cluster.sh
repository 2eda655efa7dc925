# The control plane of the end-to-end tests, sourced by run.sh and loop.sh:
# prerequisites and the network namespace (the script re-enters itself
# inside it), the PKI, etcd + kube-apiserver + kube-controller-manager, the
# project's manifests/ and apiservice/ applied as shipped, and the adapter
# started as its ServiceAccount (start_adapter, once the caller's controller
# pods exist). The caller sets, before sourcing:
#   controller_ips           addresses added to the namespace's lo for the controllers
#   hpa_sync                 --horizontal-pod-autoscaler-sync-period
#   downscale_stabilization  --horizontal-pod-autoscaler-downscale-stabilization
#   cargo_build_args         what `cargo build --locked` builds before entering (empty: nothing)
#   want_helm                (optional) 1: obtain helm too (tests/chart/obtain-helm.sh);
#                            inside, $helm is its path, empty if it could not be built
#   want_node                (optional) 1: a real node too (tests/e2e/node.sh): kube-scheduler,
#                            containerd, the kubelet and kube-proxy, Ready before the
#                            project's files are applied; the aggregator then reaches
#                            APIServices through their Service's ClusterIP (kube-proxy),
#                            and start_adapter waits for the adapter's Deployment
#   node_images              (with want_node) OCI archives imported into the node's
#                            containerd before the project's files are applied
#   netns_hosts              (optional) /etc/hosts lines inside the namespace (Service
#                            names that host processes dial)
#   adapter_args             (optional) more arguments for start_adapter's adapter
# shellcheck shell=bash
# The caller's settings above are assigned before this file is sourced.
# shellcheck disable=SC2154
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
ns_ip=10.200.0.1          # kube-apiserver, etcd clients, the adapter
apiserver=https://$ns_ip:6444

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
  node_bin=
  if [ "${want_node:-}" = 1 ]; then
    "$root/tests/prerequisites.sh" >&2 || fail "tests/prerequisites.sh failed"
    command -v iptables >/dev/null || skip "the node's kube-proxy needs iptables (tests/prerequisites.sh installs it)"
    obtained=0
    node_bin=$("$here/obtain-node.sh") || obtained=$?
    [ $obtained -ne 3 ] || skip "cannot build the node (kubelet, containerd, runc) from the Go module proxy: $node_bin"
    [ $obtained -eq 0 ] || fail "tests/e2e/obtain-node.sh failed (exit status $obtained)"
    log "node binaries and pause image ready in $node_bin ($((SECONDS - started)) s)"
  fi
  helm=
  if [ "${want_helm:-}" = 1 ]; then
    obtained=0
    helm=$("$root/tests/chart/obtain-helm.sh") || obtained=$?
    [ $obtained -ne 3 ] || { log "cannot build helm from the Go module proxy: $helm"; helm=; }
    [ $obtained -eq 0 ] || [ $obtained -eq 3 ] || fail "tests/chart/obtain-helm.sh failed (exit status $obtained)"
  fi
  for pkg in openssl python3; do
    command -v "$pkg" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  done
  [ ${#cargo_build_args[@]} -eq 0 ] || (cd "$root" && cargo build --quiet --locked "${cargo_build_args[@]}")
  netns=pfa-e2e-$$
  ip netns add "$netns" 2>/dev/null || skip "cannot create a network namespace (ip netns add failed)"
  trap 'ip netns del "$netns" 2>/dev/null || true; rm -rf "/etc/netns/$netns"' EXIT
  if [ -n "${netns_hosts:-}" ]; then
    # ip netns exec bind-mounts /etc/netns/NAME/hosts over /etc/hosts.
    mkdir -p "/etc/netns/$netns"
    printf '127.0.0.1 localhost\n%s\n' "$netns_hosts" >"/etc/netns/$netns/hosts"
  fi
  ip netns exec "$netns" ip link set lo up
  for ip in "$ns_ip" "${controller_ips[@]}"; do ip netns exec "$netns" ip addr add "$ip/32" dev lo; done
  status=0
  ip netns exec "$netns" env E2E_INSIDE_NETNS=1 E2E_NETNS="$netns" E2E_BIN="$bin" E2E_HELM="$helm" E2E_NODE_BIN="$node_bin" \
    bash ${E2E_TRACE:+-x} "$0" || status=$?
  log "total $((SECONDS - started)) s"
  exit $status
fi

# --- inside the namespace -----------------------------------------------------
bin=$E2E_BIN
# shellcheck disable=SC2034 # read by run.sh
helm=${E2E_HELM:-}
work=$(mktemp -d /tmp/pfa-e2e.XXXXXX)
pids=()
cleanup_hooks=() # functions the caller adds; cleanup runs them first
main_shell=$BASHPID
cleanup() {
  local status=$? hook
  # Command substitutions run this trap too when they exit: only the main
  # shell may tear the cluster down.
  [ "$BASHPID" = "$main_shell" ] || return 0
  for hook in "${cleanup_hooks[@]}"; do "$hook"; done
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
node_apiserver_args=()
aggregator_routing=true # no kube-proxy: the aggregator dials the endpoints itself
if [ -n "${E2E_NODE_BIN:-}" ]; then
  # shellcheck source=tests/e2e/node.sh
  source "$here/node.sh"
  cleanup_hooks+=(node_cleanup)
  node_pki
  # The kubelet API (logs, exec) with the kube-apiserver's client certificate,
  # checking the kubelet's serving certificate, at the node's InternalIP (its
  # name resolves nowhere; kubeadm prefers InternalIP too). Without aggregator routing, as
  # most clusters run (kubeadm's default): the aggregator dials an
  # APIService's Service at its ClusterIP, which kube-proxy's rules in this
  # namespace carry to an endpoint, as they do on a control-plane node.
  node_apiserver_args=(--kubelet-client-certificate="$pki/apiserver-kubelet-client.crt"
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" --kubelet-certificate-authority="$pki/cluster-ca.crt"
    --kubelet-preferred-address-types=InternalIP)
  aggregator_routing=false
fi

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
  --enable-aggregator-routing=$aggregator_routing "${node_apiserver_args[@]}"
wait_for 90 "kube-apiserver /readyz" kc get --raw /readyz
background kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$work/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$work/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$work/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/cluster-ca.crt" \
  --controllers='*' --horizontal-pod-autoscaler-sync-period="$hpa_sync" \
  --horizontal-pod-autoscaler-downscale-stabilization="$downscale_stabilization"
wait_for 60 "extension-apiserver-authentication configmap" kc -n kube-system get configmap extension-apiserver-authentication
log "TIMING control plane ready in $(elapsed "$started") s"
if [ -n "${E2E_NODE_BIN:-}" ]; then
  background kube-scheduler "$E2E_NODE_BIN/kube-scheduler" --kubeconfig="$work/scheduler.kubeconfig" \
    --authentication-kubeconfig="$work/scheduler.kubeconfig" --authorization-kubeconfig="$work/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false
  start_node
  for archive in "${node_images[@]}"; do node_import "$archive"; done
fi

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
# EndpointSlice controller's (managed-by) points the Service there. With the
# node, the Deployment's pods are the Service's endpoints.
if [ -z "${E2E_NODE_BIN:-}" ]; then
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
fi
# token_of NAMESPACE SERVICEACCOUNT: a bound token from the TokenRequest API.
token_of() {
  wait_for 60 "serviceaccount $1/$2" kc -n "$1" get serviceaccount "$2"
  kc -n "$1" create token "$2"
}

# controller_pod NAME IP: a Pod object labelled as a Pravega controller, with
# the status a kubelet would set (Running, Ready, podIP), so the adapter
# discovers IP:10080 as a replica. A process of the namespace plays it: its
# schedulerName is no scheduler's, so with a node (want_node) no kubelet
# runs it or overwrites that status.
controller_pod() {
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: pravega, labels: {component: pravega-controller}}
spec: {schedulerName: e2e-host-process, containers: [{name: controller, image: pravega/pravega:0.13.0}]}
EOF
  kc -n pravega patch pod "$1" --subresource=status --type merge -p \
    "{\"status\":{\"phase\":\"Running\",\"podIP\":\"$2\",\"podIPs\":[{\"ip\":\"$2\"}],\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}" >/dev/null
}

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

# start_adapter: without the node, the adapter as a process on $ns_ip with
# its ServiceAccount's token; with it, the Deployment of manifests/adapter as
# shipped (applied with the project's files), whose pods wait for the
# serving cert. Then its serving cert; returns once the three APIServices
# are Available.
start_adapter() {
  if [ -z "${E2E_NODE_BIN:-}" ]; then
    token_kubeconfig "$work/adapter.kubeconfig" "$(token_of pravega-metrics pravega-metrics-adapter)"
    # The Deployment's own arguments, with the paths and addresses of this host.
    background adapter env RUST_LOG=info "$root/target/debug/pravega-metrics-adapter" \
      --secure-port=6443 --bind-address="$ns_ip" \
      --tls-cert-file="$work/serving/tls.crt" --tls-private-key-file="$work/serving/tls.key" \
      --controller-namespace=pravega --log-format=json --kubeconfig="$work/adapter.kubeconfig" ${adapter_args[@]+"${adapter_args[@]}"}
  fi
  started=$(now)
  # gen-serving-cert.sh --out: the serving Secret and apiservice/ with caBundle set.
  apply_files serving -k "$work/serving"
  if [ -n "${E2E_NODE_BIN:-}" ]; then
    if ! kc -n pravega-metrics rollout status deployment/pravega-metrics-adapter --timeout=120s >"$work/logs/rollout-adapter.log" 2>&1; then
      kc -n pravega-metrics describe pods >&2 || true
      node_logs_tail >&2
      fail "the adapter's Deployment did not roll out within 120 s of its serving cert: $(tail -n 2 "$work/logs/rollout-adapter.log")"
    fi
    log "PASS the adapter's Deployment as shipped: $(kc -n pravega-metrics get deployment pravega-metrics-adapter -o jsonpath='{.status.readyReplicas}') pods Ready (startup, liveness and readiness probes over HTTPS) $(elapsed "$started") s after its serving cert"
  fi
  for apiservice in v1beta1.custom.metrics.k8s.io v1beta2.custom.metrics.k8s.io v1beta1.external.metrics.k8s.io; do
    wait_for 90 "APIService $apiservice Available" sh -c \
      "'$bin/kubectl' --kubeconfig '$work/admin.kubeconfig' get apiservice $apiservice -o jsonpath='{.status.conditions[?(@.type==\"Available\")].status}' | grep -qx True"
  done
  log "PASS the three APIServices are Available ($(elapsed "$started") s after registration)"
  # Where the kube-apiserver log stands once they are, and the aggregator's own
  # proxies know it (its informers follow the status within milliseconds): see
  # the OpenAPI check at the end.
  sleep 2
  # shellcheck disable=SC2034 # read by run.sh
  available_at=$SECONDS
  # shellcheck disable=SC2034
  apiserver_log_mark=$(wc -l <"$work/logs/kube-apiserver.log")
}
