#!/usr/bin/env bash
# The whole loop on a real control plane (the one cluster.sh starts): a
# stream whose segments follow a sinusoidal load -> the adapter, which
# discovers the controllers as pods -> the stock External HPA from hpa/ (as
# shipped) -> the flink-taskmanager Deployment's replicas -> tests/e2e/loop.py,
# standing in for the kubelet: it keeps that many flink-reader processes
# running (SIGTERM on scale-down).
#
#   tests/e2e/loop.sh           (as root; `make test` runs it with Pravega)
#
# Environment:
#   LOOP_SOURCE     pravega (default): a real Pravega 0.13 with two controller
#                   replicas (tests/pravega/start.sh) at the two pods'
#                   addresses; the generator writes the sine into test/stream,
#                   the readers read it in one reader group, and every event
#                   written must be read once. Pravega splits the stream when
#                   the load rises and merges it once the generator stops.
#                   simulate: `generator --simulate` is the one controller pod,
#                   a stream whose segments follow a compressed sine through
#                   many counts; the readers have nothing to read, so running
#                   readers are processes, not readers holding segments.
#   LOOP_HPA_SYNC   the HPA sync period (default 15s, Kubernetes' default)
#   LOOP_HPA        the HPA file applied (default hpa/flink-taskmanager-external.yaml)
#   LOOP_SCALE_DOWN_WINDOW  if set, the HPA's scale-down stabilization window
#                   (s) replaces the file's; simulate sets it to 1 by default,
#                   since its stream scales in seconds where Pravega takes
#                   minutes (see docs/loop.md)
#   LOOP_OUT        where loop-<source>-<sync>.tsv and the readers' logs go
#                   (default target/loop)
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
state=$work/readers.json
readers_dir=$work/logs/readers
mkdir -p "$readers_dir"
bin_dir=$root/target/debug

# --- the stream and its controllers, discovered as pods ----------------------------------
if [ "$source_kind" = pravega ]; then
  pravega_run=$work/logs/pravega
  cleanup_pravega() { "$root/tests/pravega/start.sh" "$pravega_run" stop >/dev/null 2>&1 || true; }
  cleanup_hooks+=(cleanup_pravega)
  started=$(now)
  PRAVEGA_REST_ADDRESSES="${controller_ips[0]}:10080 ${controller_ips[1]}:10080" \
    "$root/tests/pravega/start.sh" "$pravega_run" >"$work/logs/pravega-start.log" 2>&1 ||
    fail "Pravega did not start: $(tail -5 "$work/logs/pravega-start.log")"
  log "TIMING Pravega (ZooKeeper, segment store, controllers A and B) up in $(elapsed "$started") s"
  controller_pod pravega-pravega-controller-0 "${controller_ips[0]}"
  controller_pod pravega-pravega-controller-1 "${controller_ips[1]}"
  # The policy: 20 events/s per segment, split in 3. The segment store asks
  # for a split once a segment's 2-minute rate passes 5x that (first report
  # 2 minutes after the segment's creation), and for a merge once its rates
  # fall: a 300 s sine from 60 to 260 events/s splits the stream about 2
  # minutes in; the generator stops a minute after the split, and the idle
  # stream merges (3 -> 2 -> 1, a minute or two apart).
  record_s=600 # at most, plus the scale-down window: the recording ends once the HPA follows the merge
  background generator env RUST_LOG=info "$bin_dir/generator" --controller-uri tcp://127.0.0.1:9091 \
    --scope test --stream stream --scaling-rate 20 --scale-factor 3 --min-segments 1 \
    --min-rate 60 --max-rate 260 --period 300s --listen 127.0.0.1:18090
  generator=${pids[-1]}
  generator_metrics=http://127.0.0.1:18090/metrics
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
  reader_args=(--reader-arg=--controller-uri=tcp://127.0.0.1:9090 --reader-arg=--reader-group=rg
    --reader-arg=--iterations=100 "--reader-arg=--sequence-log=$readers_dir/reader-{index}.seq")
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
  reader_args=(--reader-arg=--controller-uri=tcp://127.0.0.1:9090)
  record_args=()
  min_segment_counts=3
fi
wait_for 60 "serviceaccount pravega/default" kc -n pravega get serviceaccount default
start_adapter
value_of() { kc get --raw "/apis/external.metrics.k8s.io/v1beta1/namespaces/pravega/pravega_controller_segments_count?labelSelector=scope%3Dtest%2Cstream%3Dstream" | grep -q '"value"'; }
wait_for 90 "the adapter to serve test/stream's segment count" value_of
log "PASS the adapter serves test/stream's segment count ($source_kind) through the aggregator"

# --- the HPA, the kubelet's stand-in, and the recording -------------------------------------
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
# The supervisor outlives the recording by two minutes at most; it is
# stopped (cleanup) before that.
# pravega-client logs every event read at INFO.
[ "$source_kind" != pravega ] || record_s=$((record_s + ${window%.*}))
background supervisor env RUST_LOG=info,pravega_client=warn python3 "$here/loop.py" supervise --server "$apiserver" --pki "$pki" \
  --reader "$bin_dir/flink-reader" "${reader_args[@]}" \
  --state "$state" --log-dir "$readers_dir" --seconds $((record_s + 120))
supervisor=${pids[-1]}
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
  kill -TERM "$generator"
  wait "$generator" || fail "the generator exited with status $? (log: $work/logs/generator.log)"
  log "generator stopped at $(elapsed "$started") s: $(grep -oE 'events=[0-9]+ acknowledged=[0-9]+ failed=[0-9]+' "$work/logs/generator.log" | tail -1)"
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
stop "$supervisor"
rm -rf "$out/readers-$name"
cp -r "$readers_dir" "$out/readers-$name"
cp "$work/logs/supervisor.log" "$out/supervisor-$name.log"
cp "$work/logs/generator.log" "$out/generator-$name.log"

# --- what the loop must have done --------------------------------------------------------------
# After a merge, a reader may outlive its segment by the HPA's scale-down
# window and one sync, plus the slowest hand-off (SIGTERM to exit), plus 5 s
# of slack: the adapter's staleness bound (1 s) and its refresh scrape, the
# supervisor's 0.5 s poll, and the recorder's 1 s sampling at both ends of
# the interval. A split reaches the replicas within the syncs the HPA's
# scale-up policies need (one with hpa/'s behavior; loop.py's syncs_needed)
# plus the same slack.
handoff=$(python3 -c "import json; h = json.load(open('$state'))['handoffs']; print(max(h) if h else 0)")
log "slowest reader hand-off $handoff s"
python3 "$here/loop.py" analyze "$tsv" --sync "$sync_s" --handoff "$handoff" --slack 5 \
  --hpa "$out/hpa-$name.json" --downscale-stabilization "$(seconds_of "$downscale_stabilization")" \
  --min-segment-counts "$min_segment_counts" | tee "$out/loop-$name.figures" ||
  fail "the loop ($source_kind, HPA sync $hpa_sync; series in $tsv)"
restarts=$(grep -c 'exited by itself' "$out/supervisor-$name.log" || true)
[ "$restarts" -eq 0 ] || fail "$restarts flink-reader processes exited by themselves (see $out/readers-$name)"
if [ "$source_kind" = pravega ]; then
  python3 "$root/tests/pravega/events.py" "$work/logs/generator.log" "$readers_dir" | tee -a "$out/loop-$name.figures" ||
    fail "events lost or miscounted in the loop (logs in $out/readers-$name)"
fi
log "PASS the loop ($source_kind, HPA sync $hpa_sync): series in $tsv"
log "ALL PASSED"
