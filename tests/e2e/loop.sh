#!/usr/bin/env bash
# The whole loop on a real control plane and its node (cluster.sh with
# want_node, tests/e2e/node.sh): a stream whose segments follow a sinusoidal
# load -> the adapter, its Deployment's pods as shipped, which discover the
# controllers as pods -> the stock External HPA from hpa/ (as shipped) ->
# the flink-taskmanager Deployment's replicas -> its pods, flink-reader
# containers the kubelet starts, probes (/readyz) and stops (SIGTERM, then
# terminationGracePeriodSeconds) on scale-down.
#
#   tests/e2e/loop.sh           (as root; `make test` runs it with Pravega)
#
# The images: scripts/images.sh builds target/images (IMAGE_PROFILE, dev by
# default: the binaries cargo test and this script build anyway; release as
# users run them) and the node imports them before manifests/ is applied.
# The workload's Deployments (manifests/workload) are applied as shipped,
# then patched with kubectl patch (JSON patch: values added to the shipped
# ones) before any of their pods runs against Pravega:
# - pravega-generator: the loop's load (60 to 260 events/s over 300 s, the
#   stream's policy: 20 events/s per segment, split in 3), shaped to
#   Pravega's 2-minute scaling reports so that the stream splits and merges
#   within the run; the shipped defaults are a demo's;
# - flink-taskmanager: 100 work iterations per event (the shipped 1000 would
#   take the loop's two cores), a sequence log per pod (the pod's name) on a
#   hostPath directory, so every event read is counted whatever happens to
#   the pod; pravega_client's per-event INFO lines off.
# Both get NO_COLOR=1 (events.py reads their log lines). The kubelet's
# container logs are hard-linked next to the sequence logs as the pods
# start (loop.py pod-logs), so they outlive the pods scale-down deletes.
#
# Environment:
#   LOOP_SOURCE     pravega (default): a real Pravega 0.13 with two controller
#                   replicas (tests/pravega/start.sh) at the two pods'
#                   addresses; the generator writes the sine into test/stream,
#                   the readers read it in one reader group, and every event
#                   written must be read once. Pravega runs as host processes
#                   of the namespace (its images cannot be fetched here) on
#                   its address, which pods reach; the Service the shipped
#                   --controller-uri names (pravega-pravega-controller.pravega.svc:9090)
#                   is selector-less, its EndpointSlices pointing at the two
#                   controllers, as the Pravega operator's Service would.
#                   The generator runs as its pod, stopped by scaling its
#                   Deployment to 0. Pravega splits the stream when
#                   the load rises and merges it once the generator stops.
#                   simulate: `generator --simulate` (a host process) is the
#                   one controller pod, a stream whose segments follow a
#                   compressed sine through many counts; the readers have
#                   nothing to read (the controller Service has no
#                   endpoints), so running readers are containers, not
#                   readers holding segments.
#   LOOP_HPA_SYNC   the HPA sync period (default 15s, Kubernetes' default)
#   LOOP_HPA        the HPA file applied (default hpa/flink-taskmanager-external.yaml)
#   LOOP_SCALE_DOWN_WINDOW  if set, the HPA's scale-down stabilization window
#                   (s) replaces the file's; simulate sets it to 1 by default,
#                   since its stream scales in seconds where Pravega takes
#                   minutes (see docs/loop.md)
#   LOOP_OUT        where loop-<source>-<sync>.tsv and the readers' logs go
#                   (default target/loop)
#   IMAGE_PROFILE   the Cargo profile of the images' binaries (dev)
#   simulate only: LOOP_PERIOD the sine's period (120s), LOOP_PERIODS how many (2)
#
# The kube-controller-manager's --horizontal-pod-autoscaler-downscale-stabilization
# is 1s (as in run.sh), not the default 5m: it applies only to an HPA whose
# behavior sets no scale-down window, which hpa/'s do (see docs/loop.md).
set -euo pipefail

source_kind=${LOOP_SOURCE:-pravega}
case $source_kind in
  pravega) controller_ips=(10.200.0.11 10.200.0.12) ;;
  simulate) controller_ips=(10.200.0.11); scale_down_window=${LOOP_SCALE_DOWN_WINDOW-1} ;;
  *) echo "loop.sh: LOOP_SOURCE is pravega or simulate, not $source_kind" >&2; exit 2 ;;
esac
hpa_sync=${LOOP_HPA_SYNC:-15s}
hpa_file=$(realpath "${LOOP_HPA:-$(dirname "$0")/../../hpa/flink-taskmanager-external.yaml}")
scale_down_window=${scale_down_window-${LOOP_SCALE_DOWN_WINDOW:-}}
downscale_stabilization=1s
cargo_build_args=(--workspace --bins)
want_node=1
images=$(realpath "$(dirname "$0")/../../target")/images
node_images=("$images/pravega-metrics-adapter.tar" "$images/generator.tar" "$images/flink-reader.tar")
if [ -z "${E2E_INSIDE_NETNS:-}" ] && [ "$(id -u)" -eq 0 ]; then
  # The images of this checkout's binaries (kept while unchanged), before the
  # node imports them.
  IMAGE_PROFILE=${IMAGE_PROFILE:-dev} "$(dirname "$0")/../../scripts/images.sh" >&2 ||
    { echo "loop.sh: scripts/images.sh failed" >&2; exit 1; }
fi
if [ -z "${E2E_INSIDE_NETNS:-}" ] && [ "$source_kind" = pravega ]; then
  # Pravega's jars, before entering the namespace (Maven needs the network).
  pravega_tests=$(cd "$(dirname "$0")/../pravega" && pwd)
  for tool in java curl; do
    command -v $tool >/dev/null || { echo "loop.sh SKIPPED: $tool is not installed (Pravega needs a JDK 11+)"; exit 0; }
  done
  obtained=0
  lib=$("$pravega_tests/obtain.sh") || obtained=$?
  # obtain.sh has printed Maven's error (or that mvn is missing) on stderr.
  [ $obtained -ne 3 ] || { echo "loop.sh SKIPPED: Maven could not get Pravega's jars (see above)"; exit 0; }
  [ $obtained -eq 0 ] || { echo "loop.sh: tests/pravega/obtain.sh failed (exit status $obtained)" >&2; exit 1; }
  export PRAVEGA_LIB=$lib/lib
fi
# shellcheck source=tests/e2e/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

# Plain logs (no ANSI colours): events.py reads the binaries' log lines.
export NO_COLOR=1
out=${LOOP_OUT:-$root/target/loop}
mkdir -p "$out"
seconds_of() { case $1 in *ms) echo 0 ;; *s) echo "${1%s}" ;; *m) echo $((${1%m} * 60)) ;; *) echo "$1" ;; esac; }
sync_s=$(seconds_of "$hpa_sync")
name=$source_kind-$hpa_sync
tsv=$out/loop-$name.tsv
state=$work/pods.json
# The readers' sequence logs (hostPath) and the pods' container logs.
readers_dir=$work/logs/pods
mkdir -p "$readers_dir"
chmod 0777 "$readers_dir"
bin_dir=$root/target/debug

# --- the workload's Deployments: patched, no pod before Pravega -------------------------
# json_patch DEPLOYMENT JSON: a JSON patch of the Deployment in pravega.
json_patch() { kc -n pravega patch deployment "$1" --type json -p "$2" >/dev/null || fail "patching deployment $1"; }
container=/spec/template/spec/containers/0
json_patch pravega-generator '[{"op": "replace", "path": "/spec/replicas", "value": 0},
  {"op": "add", "path": "'$container'/env", "value": [{"name": "NO_COLOR", "value": "1"}]},
  {"op": "add", "path": "'$container'/args/-", "value": "--scaling-rate=20"},
  {"op": "add", "path": "'$container'/args/-", "value": "--scale-factor=3"},
  {"op": "add", "path": "'$container'/args/-", "value": "--min-segments=1"},
  {"op": "add", "path": "'$container'/args/-", "value": "--min-rate=60"},
  {"op": "add", "path": "'$container'/args/-", "value": "--max-rate=260"},
  {"op": "add", "path": "'$container'/args/-", "value": "--period=300s"}]'
# shellcheck disable=SC2016 # $(POD_NAME) is for the kubelet to expand
json_patch flink-taskmanager '[{"op": "add", "path": "/spec/replicas", "value": 0},
  {"op": "add", "path": "'$container'/env", "value": [{"name": "NO_COLOR", "value": "1"},
    {"name": "RUST_LOG", "value": "info,pravega_client=warn"},
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
  {"op": "add", "path": "'$container'/args/-", "value": "--iterations=100"},
  {"op": "add", "path": "'$container'/args/-", "value": "--sequence-log=/var/run/sequence/$(POD_NAME).seq"},
  {"op": "add", "path": "'$container'/volumeMounts", "value": [{"name": "sequence", "mountPath": "/var/run/sequence"}]},
  {"op": "add", "path": "/spec/template/spec/volumes", "value": [{"name": "sequence", "hostPath": {"path": "'"$readers_dir"'", "type": "Directory"}}]}]'
# The pods of the files as applied (no Pravega yet, nothing read) go first.
no_workload_pods() { [ -z "$(kc -n pravega get pods -o name)" ]; }
wait_for 60 "the workload's first pods to go" no_workload_pods
background pod-logs python3 "$here/loop.py" pod-logs "$node_dir/pod-logs" --into "$readers_dir" --namespaces pravega
background pods python3 "$here/loop.py" pods --server "$apiserver" --pki "$pki" --namespaces pravega pravega-metrics \
  --cgroup-root "/sys/fs/cgroup/memory/$node_cgroup" --state "$state"
pods_watch=${pids[-1]}
# pod_ip NAMESPACE SELECTOR: the IP of the one pod SELECTOR matches.
pod_ip() { kc -n "$1" get pods -l "$2" -o jsonpath='{.items[0].status.podIP}'; }

# --- the stream and its controllers, discovered as pods ----------------------------------
# The Service the workload's --controller-uri names, selector-less: with
# Pravega, an EndpointSlice per controller (their gRPC ports differ).
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: pravega-pravega-controller, namespace: pravega}
spec:
  ports: [{name: grpc, port: 9090, protocol: TCP}, {name: rest, port: 10080, protocol: TCP}]
EOF
if [ "$source_kind" = pravega ]; then
  pravega_run=$work/logs/pravega
  cleanup_pravega() { "$root/tests/pravega/start.sh" "$pravega_run" stop >/dev/null 2>&1 || true; }
  cleanup_hooks+=(cleanup_pravega)
  started=$(now)
  PRAVEGA_HOST=$ns_ip PRAVEGA_REST_ADDRESSES="${controller_ips[0]}:10080 ${controller_ips[1]}:10080" \
    "$root/tests/pravega/start.sh" "$pravega_run" >"$work/logs/pravega-start.log" 2>&1 ||
    fail "Pravega did not start: $(tail -5 "$work/logs/pravega-start.log")"
  log "TIMING Pravega (ZooKeeper, segment store on $ns_ip, controllers A and B) up in $(elapsed "$started") s"
  controller_pod pravega-pravega-controller-0 "${controller_ips[0]}"
  controller_pod pravega-pravega-controller-1 "${controller_ips[1]}"
  for i in 0 1; do
    kc apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: pravega-pravega-controller-$i
  namespace: pravega
  labels: {kubernetes.io/service-name: pravega-pravega-controller, endpointslice.kubernetes.io/managed-by: e2e}
addressType: IPv4
ports: [{name: grpc, port: $((9090 + i)), protocol: TCP}, {name: rest, port: 10080, protocol: TCP}]
endpoints: [{addresses: ["${controller_ips[i]}"], conditions: {ready: true}}]
EOF
  done
  # The policy: 20 events/s per segment, split in 3. The segment store asks
  # for a split once a segment's 2-minute rate passes 5x that (first report
  # 2 minutes after the segment's creation), and for a merge once its rates
  # fall: a 300 s sine from 60 to 260 events/s splits the stream about 2
  # minutes in; the generator stops a minute after the split, and the idle
  # stream merges (3 -> 2 -> 1, a minute or two apart).
  record_s=600 # at most, plus the scale-down window: the recording ends once the HPA follows the merge
  started=$(now)
  kc -n pravega scale deployment pravega-generator --replicas=1 >/dev/null
  if ! kc -n pravega rollout status deployment/pravega-generator --timeout=120s >"$work/logs/rollout-generator.log" 2>&1; then
    kc -n pravega describe pods -l app.kubernetes.io/name=pravega-generator >&2 || true
    fail "the generator's pod did not turn Ready (stream created, writing) within 120 s"
  fi
  generator_pod=$(kc -n pravega get pods -l app.kubernetes.io/name=pravega-generator -o jsonpath='{.items[0].metadata.name}')
  generator_log=$readers_dir/$generator_pod.log
  log "PASS the generator's pod $generator_pod Ready (test/stream created, writing) in $(elapsed "$started") s"
  generator_metrics=http://$(pod_ip pravega app.kubernetes.io/name=pravega-generator):8080/metrics
  segments_command="'$bin_dir/pravega-segments' --controller-uri tcp://127.0.0.1:9090 --scope test --stream stream --timeout 2s"
  truth=(--segments-command "$segments_command")
  segments() { sh -c "$segments_command" 2>/dev/null | awk 'NR == 1 {print $1}'; }
  wait_segments() { # OP COUNT SECONDS: until the true segment count satisfies OP COUNT
    local deadline=$((SECONDS + $3)) n
    until n=$(segments) && [ -n "$n" ] && test "$n" "$1" "$2"; do
      [ $SECONDS -lt $deadline ] || return 1
      sleep 2
    done
  }
  record_args=(--sequence-logs "$readers_dir")
  min_segment_counts=2
else
  sim=${controller_ips[0]}
  period=${LOOP_PERIOD:-120s}
  record_s=$(($(seconds_of "$period") * ${LOOP_PERIODS:-2}))
  # A peak of 6000 events/s at 800 per segment gives at most 8 segments: below
  # the ~10 replicas where the HPA's default 10 % tolerance stops 1:1 tracking.
  # The stream is created once the adapter scrapes the pod: with no
  # controller API it serves only changes it watched.
  background generator env RUST_LOG=info "$bin_dir/generator" --simulate --listen "$sim:10080" --create-after 15s \
    --period "$period" --scale-hold 5s --min-rate 100 --max-rate 6000 --scaling-rate 800
  wait_for 30 "the simulated controller's /prometheus" python3 -c \
    "import urllib.request; urllib.request.urlopen('http://$sim:10080/prometheus', timeout=1)"
  controller_pod pravega-pravega-controller-0 "$sim"
  generator_metrics=http://$sim:10080/metrics
  truth=(--controller "http://$sim:10080/prometheus")
  # No Pravega: the readers keep retrying to join their reader group.
  record_args=()
  min_segment_counts=3
fi
wait_for 60 "serviceaccount pravega/default" kc -n pravega get serviceaccount default
start_adapter
value_of() { kc get --raw "/apis/external.metrics.k8s.io/v1beta1/namespaces/pravega/pravega_controller_segments_count?labelSelector=scope%3Dtest%2Cstream%3Dstream" | grep -q '"value"'; }
wait_for 90 "the adapter to serve test/stream's segment count" value_of
log "PASS the adapter serves test/stream's segment count ($source_kind) through the aggregator"

# --- the TaskManagers, the HPA and the recording --------------------------------------------
# One pod, as a new Deployment has; from then on the HPA owns the count.
kc -n pravega scale deployment flink-taskmanager --replicas=1 >/dev/null
apply_files hpa-external -f "$hpa_file"
if [ -n "$scale_down_window" ]; then
  kc -n pravega patch hpa flink-taskmanager --type merge \
    -p "{\"spec\":{\"behavior\":{\"scaleDown\":{\"stabilizationWindowSeconds\":$scale_down_window}}}}" >/dev/null
fi
# The HPA as the API server holds it (behavior filled in): what analyze
# computes the reaction bounds from.
kc -n pravega get hpa flink-taskmanager -o json >"$out/hpa-$name.json"
window=$(python3 "$here/loop.py" window "$out/hpa-$name.json" --downscale-stabilization "$(seconds_of "$downscale_stabilization")")
log "HPA $hpa_file, scale-down stabilization window $window s"
[ "$source_kind" != pravega ] || record_s=$((record_s + ${window%.*}))
log "recording the loop for $record_s s (source $source_kind, HPA sync $hpa_sync) into $tsv"
started=$(now)
python3 "$here/loop.py" record --server "$apiserver" --pki "$pki" "${truth[@]}" \
  --generator-metrics "$generator_metrics" "${record_args[@]}" \
  --state "$state" --out "$tsv" --seconds "$record_s" &
recorder=$!
if [ "$source_kind" = pravega ]; then
  wait_segments -ge 2 300 || fail "test/stream did not split within 300 s (see $pravega_run/segmentstore.log)"
  log "test/stream split to $(segments) segments at $(elapsed "$started") s"
  sleep 60
  kc -n pravega scale deployment pravega-generator --replicas=0 >/dev/null
  kc -n pravega wait --for=delete "pod/$generator_pod" --timeout=60s >/dev/null ||
    fail "the generator's pod did not exit within 60 s of its Deployment's scale-down"
  log "generator stopped at $(elapsed "$started") s: $(grep -oE 'events=[0-9]+ acknowledged=[0-9]+ failed=[0-9]+' "$generator_log" | tail -1)"
  wait_segments -le 1 300 || fail "the idle test/stream did not merge back to 1 segment within 300 s"
  log "test/stream merged back to 1 segment at $(elapsed "$started") s"
  sleep $((${window%.*} + sync_s + 15)) # the HPA's scale-down, and a few samples after it
  kill -TERM "$recorder"
fi
wait "$recorder" || fail "the recorder failed"
log "TIMING recorded $(($(wc -l <"$tsv") - 1)) samples in $(elapsed "$started") s"
if [ "$source_kind" = pravega ]; then
  # Everything written is read once the sequence logs stop growing.
  lines() { cat "$readers_dir"/*.seq 2>/dev/null | wc -l; }
  for _ in $(seq 30); do
    before=$(lines); sleep 2; [ "$before" = "$(lines)" ] && break
  done
fi
# The TaskManagers stop as a Deployment's pods do (the HPA first, which
# would not let the count fall to 0): each reader's count at exit, in its
# log, is checked against its sequence log.
kc -n pravega delete hpa flink-taskmanager >/dev/null
kc -n pravega scale deployment flink-taskmanager --replicas=0 >/dev/null
kc -n pravega wait --for=delete pods -l app.kubernetes.io/name=flink-taskmanager --timeout=60s >/dev/null ||
  fail "flink-taskmanager's pods did not exit within 60 s of its scale to 0"
kill -0 "$pods_watch" 2>/dev/null || fail "the pods watch exited early: $(tail -n 5 "$work/logs/pods.log")"
stop "$pods_watch"
rm -rf "$out/readers-$name"
cp -r "$readers_dir" "$out/readers-$name"
cp "$state" "$out/pods-$name.json"

# --- memory: each Deployment's pods' peaks over the run ------------------------------------
python3 - "$state" <<'EOF' | tee "$out/memory-$name.txt"
import json, sys
memory = json.load(open(sys.argv[1]))["memory"]
for deployment in ("pravega-metrics/pravega-metrics-adapter", "pravega/pravega-generator", "pravega/flink-taskmanager"):
    namespace, prefix = deployment.split("/")
    pods = {k: v for k, v in memory.items() if k.startswith(f"{namespace}/{prefix}-")}
    if pods:
        print(f"MEMORY {prefix}: {len(pods)} pods, highest cgroup peak (page cache too) "
              f"{max(v['cgroup_peak_mib'] for v in pods.values()):.1f} MiB, highest processes' peak RSS "
              f"{max(v['rss_peak_mib'] for v in pods.values()):.1f} MiB")
EOF

# --- what the loop must have done --------------------------------------------------------------
# After a merge, a reader may outlive its segment by the HPA's scale-down
# window and one sync, plus the slowest hand-off (SIGTERM to exit), plus 5 s
# of slack: the adapter's staleness bound (1 s) and its refresh scrape, the
# pods watch's 0.5 s poll, and the recorder's 1 s sampling at both ends of
# the interval. A split reaches the replicas within the syncs the HPA's
# scale-up policies need (one with hpa/'s behavior; loop.py's syncs_needed)
# plus the same slack.
python3 "$here/loop.py" handoffs "$state" "$readers_dir" >"$out/handoffs-$name.txt"
handoff=$(awk 'END { print $2 + 0 }' "$out/handoffs-$name.txt")
log "reader hand-offs (SIGTERM in its log -> its container seen stopped, 0.5 s poll): $(awk '{ printf "%s%s s", sep, $2; sep = ", " }' "$out/handoffs-$name.txt"); slowest $handoff s"
python3 "$here/loop.py" analyze "$tsv" --sync "$sync_s" --handoff "$handoff" --slack 5 \
  --hpa "$out/hpa-$name.json" --downscale-stabilization "$(seconds_of "$downscale_stabilization")" \
  --min-segment-counts "$min_segment_counts" | tee "$out/loop-$name.figures" ||
  fail "the loop ($source_kind, HPA sync $hpa_sync; series in $tsv)"
restarts=$(python3 -c "import json; print(json.load(open('$state'))['restarts'])")
[ "$restarts" -eq 0 ] || fail "flink-reader containers restarted $restarts times (see $out/readers-$name)"
if [ "$source_kind" = pravega ]; then
  python3 "$root/tests/pravega/events.py" "$generator_log" "$readers_dir" | tee -a "$out/loop-$name.figures" ||
    fail "events lost or miscounted in the loop (logs in $out/readers-$name)"
fi
log "PASS the loop ($source_kind, HPA sync $hpa_sync): series in $tsv"
log "ALL PASSED"
