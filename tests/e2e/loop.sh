#!/usr/bin/env bash
# The whole loop on a real control plane (the one run.sh starts, from
# cluster.sh): `generator --simulate` is the Pravega controller pod the
# adapter discovers (a stream whose segments follow a compressed sine), the
# adapter serves the segment count through the aggregator, the stock External
# HPA from hpa/ (as shipped) sets the flink-taskmanager Deployment's
# replicas, and tests/e2e/loop.py stands in for the kubelet: it keeps that
# many flink-reader processes running (SIGTERM on scale-down).
#
#   tests/e2e/loop.sh           (as root; `make test-loop` runs it)
#
# Environment:
#   LOOP_HPA_SYNC   the HPA sync period (default 15s, Kubernetes' default)
#   LOOP_PERIOD     the sine's period (default 120s); LOOP_PERIODS how many (2)
#   LOOP_OUT        where loop-<sync>.tsv and the readers' logs go (target/loop)
#
# The readers have no Pravega to read from (the simulator only serves the
# controller's /prometheus): each keeps retrying to join its reader group, so
# "running readers" are the supervised flink-reader processes, not readers
# that hold segments; no event counts are recorded.
#
# One setting is not Kubernetes' default: the kube-controller-manager's
# --horizontal-pod-autoscaler-downscale-stabilization is 1s (as in run.sh).
# With the default 5m the HPA holds the highest recommendation of the last 5
# minutes, longer than the whole run: see docs/loop.md.
set -euo pipefail

controller_ips=(10.200.0.11)
hpa_sync=${LOOP_HPA_SYNC:-15s}
downscale_stabilization=1s
cargo_build_args=(-p pravega-metrics-adapter -p generator -p flink-reader --bins)
# shellcheck source=tests/e2e/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

period=${LOOP_PERIOD:-120s}
periods=${LOOP_PERIODS:-2}
out=${LOOP_OUT:-$root/target/loop}
mkdir -p "$out"
seconds_of() { case $1 in *ms) echo 0 ;; *s) echo "${1%s}" ;; *m) echo $((${1%m} * 60)) ;; *) echo "$1" ;; esac; }
sync_s=$(seconds_of "$hpa_sync")
record_s=$(($(seconds_of "$period") * periods))

# --- the simulated controller, discovered as a pod ----------------------------------------
sim=${controller_ips[0]}
# A peak of 6000 events/s at 800 per segment gives at most 8 segments: below
# the ~10 replicas where the HPA's default 10 % tolerance stops 1:1 tracking.
background generator env RUST_LOG=info "$root/target/debug/generator" --simulate --listen "$sim:10080" \
  --period "$period" --scale-hold 5s --min-rate 100 --max-rate 6000 --scaling-rate 800
wait_for 30 "the simulated controller's /prometheus" python3 -c \
  "import urllib.request; urllib.request.urlopen('http://$sim:10080/prometheus', timeout=1)"
wait_for 60 "serviceaccount pravega/default" kc -n pravega get serviceaccount default
controller_pod pravega-pravega-controller-0 "$sim"
start_adapter
value_of() { kc get --raw "/apis/external.metrics.k8s.io/v1beta1/namespaces/pravega/pravega_controller_segments_count?labelSelector=scope%3Dtest%2Cstream%3Dstream" | grep -q '"value"'; }
wait_for 60 "the adapter to serve the simulated stream's segment count" value_of
log "PASS the adapter serves the simulated controller's segment count through the aggregator"

# --- the HPA, the kubelet's stand-in, and the recording -------------------------------------
tsv=$out/loop-$hpa_sync.tsv
state=$work/readers.json
mkdir -p "$work/logs/readers"
apply_files hpa-external -f "$root/hpa/flink-taskmanager-external.yaml"
# The supervisor outlives the recording by a minute at most; the recording
# ends it (cleanup) before that.
background supervisor python3 "$here/loop.py" supervise --server "$apiserver" --pki "$pki" \
  --reader "$root/target/debug/flink-reader" --controller-uri tcp://127.0.0.1:9090 \
  --state "$state" --log-dir "$work/logs/readers" --seconds $((record_s + 60))
supervisor=${pids[-1]}
log "recording the loop for $record_s s (HPA sync $hpa_sync, sine period $period) into $tsv"
started=$(now)
python3 "$here/loop.py" record --server "$apiserver" --pki "$pki" \
  --controller "http://$sim:10080/prometheus" --generator-metrics "http://$sim:10080/metrics" \
  --state "$state" --out "$tsv" --seconds "$record_s"
log "TIMING recorded $record_s s in $(elapsed "$started") s"
stop "$supervisor"
cp -r "$work/logs/readers" "$out/readers-$hpa_sync"
cp "$work/logs/supervisor.log" "$out/supervisor-$hpa_sync.log"

# --- what the loop must have done --------------------------------------------------------------
# After a merge, a reader may outlive its segment by one HPA sync, plus the
# slowest hand-off (SIGTERM to exit), plus 5 s of slack: the adapter's
# staleness bound (1 s) and its refresh scrape, the simulator's 200 ms tick,
# the supervisor's 0.5 s poll, and the recorder's 1 s sampling at both ends
# of the interval. A segment change reaches the replicas within the syncs
# the HPA's scale-up limit needs (loop.py's syncs_needed) plus the same slack.
handoff=$(python3 -c "import json; h = json.load(open('$state'))['handoffs']; print(max(h) if h else 0)")
log "slowest reader hand-off $handoff s"
python3 "$here/loop.py" analyze "$tsv" --sync "$sync_s" --handoff "$handoff" --slack 5 | tee "$out/loop-$hpa_sync.figures" ||
  fail "the loop at HPA sync $hpa_sync (series in $tsv)"
restarts=$(grep -c 'exited by itself' "$out/supervisor-$hpa_sync.log" || true)
[ "$restarts" -eq 0 ] || fail "$restarts flink-reader processes exited by themselves (see $out/readers-$hpa_sync)"
log "PASS the loop at HPA sync $hpa_sync: series in $tsv"
log "ALL PASSED"
