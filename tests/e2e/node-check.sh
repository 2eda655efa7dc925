#!/usr/bin/env bash
# The e2e control plane's real node (tests/e2e/node.sh), checked on its own:
#   - the node registers and turns Ready within 60 s of the kubelet's start;
#   - a pod from an OCI image built here with no registry (node-check/main.go
#     in an image by oci-image.py, imported into containerd) runs as the
#     project's Deployments ask (non-root, read-only root, no capabilities,
#     RuntimeDefault seccomp, memory limit) and its readiness probe passes;
#   - the pod reaches a host process of the namespace through the CNI bridge
#     (as pods reach Pravega), and the kube-apiserver through the kubernetes
#     Service's ClusterIP (kube-proxy, as in-cluster clients do), whose name
#     the cluster DNS resolves;
#   - a host process reaches the pod through its Service's ClusterIP
#     (kube-proxy, the aggregator's path to an APIService) and reads its
#     logs through the kubelet;
#   - on delete the pod gets SIGTERM and reports it well within
#     terminationGracePeriodSeconds.
#
#   tests/e2e/node-check.sh     (as root; `make test-node`)
#
# SKIPPED as run.sh when root, network namespaces or a download is missing.
# Timings as "TIMING ..." lines, and the pod's, the kubelet's and containerd's
# peak memory.
set -euo pipefail

controller_ips=()
hpa_sync=15s
downscale_stabilization=1s
cargo_build_args=()
want_node=1
# shellcheck source=tests/e2e/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

image=localhost/pravega-flink-autoscaler/node-check:e2e
report_port=18099
grace=10

# --- the test image -------------------------------------------------------------------
started=$(now)
mkdir -p "$work/node-check/rootfs"
(cd "$here/node-check" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-modcacherw GOPROXY=off \
  GOCACHE="${PRAVEGA_AUTOSCALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pravega-flink-autoscaler}/go/build" \
  nice -n 10 go build -trimpath -ldflags='-s -w' -o "$work/node-check/rootfs/node-check" main.go) ||
  fail "go build of tests/e2e/node-check"
python3 "$here/oci-image.py" --name "$image" --user 65532:65532 --rootfs "$work/node-check/rootfs" \
  --out "$work/node-check/image.tar" -- /node-check 2>"$work/logs/oci-image.log" ||
  fail "oci-image.py: $(cat "$work/logs/oci-image.log")"
"$node_bin/ctr" --address "$containerd_sock" -n k8s.io images import --local "$work/node-check/image.tar" \
  >"$work/logs/ctr-import.log" 2>&1 || fail "ctr images import: $(cat "$work/logs/ctr-import.log")"
log "TIMING test image built and imported in $(elapsed "$started") s"

# --- the host process the pod reports to --------------------------------------------------
# Each request: "<epoch seconds> <client address> <path?query>" on a line.
report_server='
import http.server, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[2], "a") as f:
            f.write("%.3f %s %s\n" % (time.time(), self.client_address[0], self.path))
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok\n")
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[3])), Handler).serve_forever()
'
reports=$work/reports.log
: >"$reports"
background report-server python3 -c "$report_server" "$ns_ip" "$reports" "$report_port"

# --- the pod and its Service ------------------------------------------------------------------
kc create namespace node-check >/dev/null
wait_for 60 "serviceaccount node-check/default" kc -n node-check get serviceaccount default
started=$(now)
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: node-check, namespace: node-check, labels: {app: node-check}}
spec:
  terminationGracePeriodSeconds: $grace
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: node-check
    image: $image
    imagePullPolicy: Never
    env:
    - {name: REPORT_URL, value: "http://$ns_ip:$report_port"}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /readyz, port: http}
      periodSeconds: 1
    resources:
      requests: {cpu: 10m, memory: 16Mi}
      limits: {memory: 32Mi}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata: {name: node-check, namespace: node-check}
spec:
  selector: {app: node-check}
  ports: [{name: http, port: 80, targetPort: http}]
EOF
pod_ready() { [ "$(kc -n node-check get pod node-check -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
deadline=$((SECONDS + 60))
until pod_ready; do
  if [ $SECONDS -ge $deadline ]; then
    kc -n node-check describe pod node-check >&2 || true
    node_logs_tail >&2
    fail "pod node-check/node-check not Ready 60 s after it was created"
  fi
  sleep 0.5
done
pod_ip=$(kc -n node-check get pod node-check -o jsonpath='{.status.podIP}')
log "PASS pod node-check Ready at $pod_ip, from image $image imported with no registry (readiness probe on /readyz)"
log "TIMING pod created to Ready in $(elapsed "$started") s"

# What the pod reported: its start, through the bridge, from its own address.
started_line=$(grep ' /started?' "$reports" | head -n 1) || fail "the pod never reached the host process at $ns_ip:$report_port: $(kc -n node-check logs node-check 2>&1 | tail -n 5)"
[ "$(cut -d' ' -f2 <<<"$started_line")" = "$pod_ip" ] ||
  fail "the pod's report came from $(cut -d' ' -f2 <<<"$started_line"), not from the pod's address $pod_ip"
log "PASS the pod reached a host process of the namespace ($ns_ip:$report_port) through the CNI bridge, from $pod_ip"
grep -q 'apiserver=ok' <<<"$started_line" ||
  fail "the pod could not connect to the kubernetes Service's ClusterIP: $started_line"
log "PASS the pod reached the kube-apiserver through the kubernetes Service's ClusterIP (kube-proxy)"
grep -q 'dns=10.96.0.1\(&\|$\)' <<<"$started_line" ||
  fail "kubernetes.default.svc did not resolve to 10.96.0.1 in the pod: $started_line"
log "PASS the pod resolved kubernetes.default.svc to 10.96.0.1 (CoreDNS behind the kube-dns Service)"

cluster_ip=$(kc -n node-check get service node-check -o jsonpath='{.spec.clusterIP}')
via_service() { python3 -c "import urllib.request; print(urllib.request.urlopen('http://$cluster_ip/', timeout=2).read().decode().strip())"; }
wait_for 30 "kube-proxy to route the Service node-check at $cluster_ip" via_service
[ "$(via_service)" = node-check ] || fail "the Service at $cluster_ip answered '$(via_service)', expected node-check"
log "PASS a host process reached the pod through its Service's ClusterIP $cluster_ip:80 (kube-proxy, iptables)"

kc -n node-check logs node-check 2>&1 | grep -q 'started, reported to' ||
  fail "kubectl logs (kube-apiserver to the kubelet) did not show the pod's log: $(kc -n node-check logs node-check 2>&1 | tail -n 3)"
log "PASS kubectl logs reads the pod's log through the kubelet"

# --- memory --------------------------------------------------------------------------------
# The pod's cgroup peak, the kubelet's and containerd's peak RSS.
hwm() { awk '/^VmHWM/ { printf "%d MiB", $2 / 1024 }' "/proc/$1/status"; }
for i in "${!pids[@]}"; do
  case $(tr '\0' ' ' 2>/dev/null <"/proc/${pids[i]}/cmdline" | awk '{print $1}') in
    */kubelet) kubelet_pid=${pids[i]} ;;
    */containerd) containerd_pid=${pids[i]} ;;
  esac
done
log "MEMORY pod node-check: $(pod_memory node-check node-check); kubelet peak RSS $(hwm "$kubelet_pid"), containerd $(hwm "$containerd_pid")"
coredns_pod=$(kc -n kube-system get pods -l k8s-app=kube-dns -o jsonpath='{.items[0].metadata.name}')
log "MEMORY CoreDNS: $(pod_memory kube-system "$coredns_pod")"

# --- graceful termination --------------------------------------------------------------
started=$(now)
deleted_at=$(date +%s.%N)
kc -n node-check delete pod node-check --wait=false >/dev/null
sigterm() { grep ' /sigterm?' "$reports" | head -n 1; }
wait_for "$grace" "the pod to report SIGTERM within terminationGracePeriodSeconds ($grace s)" sigterm
took=$(awk -v a="$deleted_at" -v b="$(sigterm | cut -d' ' -f1)" 'BEGIN { printf "%.2f", b - a }')
log "PASS SIGTERM reached the pod $took s after the delete (grace period $grace s)"
wait_for $((grace + 20)) "the pod to be gone" sh -c "! '$bin/kubectl' --kubeconfig '$work/admin.kubeconfig' -n node-check get pod node-check"
log "TIMING pod deleted to gone in $(elapsed "$started") s"
log "ALL PASSED"
