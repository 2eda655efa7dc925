#!/usr/bin/env bash
# The workload and the adapter against a real Pravega 0.13 (two controller
# replicas), bounded in time:
#   1. Pravega's jars (obtain.sh; a registry refusal prints SKIPPED, exit 0)
#   2. ZooKeeper, a segment store and two controllers (start.sh), in a
#      network namespace of their own whose only interface is lo
#   3. the generator (via controller B) writes a rising sinusoid into
#      test/stream, whose event-rate policy splits it
#   4. readers (via controller A) 1 -> 3 -> 1, stopped with SIGTERM
#   5. the controller that split the stream restarts; the generator stops;
#      the idle segments merge
#   6. every event is checked (sequence logs), the truth (getCurrentSegments
#      over gRPC) against each replica's gauges and the adapter's answer
#   7. the inventory (inventory.sh): streams created with fixed policies,
#      evicted, scaled by hand, sealed, deleted and recreated; the adapter
#      and both controllers restarted; every stream's value sampled against
#      the truth (inventory_check.py)
# Any failed check exits non-zero. A timeline is printed as it runs.
#
#   tests/pravega/run.sh                    the test
#   CAPTURE_FIXTURES=1 tests/pravega/run.sh also writes both replicas'
#                                           expositions to tests/fixtures/
# Root is needed (unshare --net). RUN_DIR keeps logs (default: a temp dir,
# kept on failure).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

banner() { # title, lines...
    local title=$1; shift
    printf '\n%s\n=== %s\n' "==========================================================" "$title"
    printf '    %s\n' "$@"
    printf '%s\n\n' "=========================================================="
}

if [ "${1:-}" != --inside ]; then
    started=$SECONDS
    if [ "$(id -u)" != 0 ]; then
        banner "tests/pravega SKIPPED" "needs root: the servers run in a network namespace of their own (unshare --net)"
        exit 0
    fi
    for tool in java mvn curl unshare python3; do
        command -v $tool >/dev/null || { banner "tests/pravega SKIPPED" "$tool is not installed (needs a JDK 11+, Maven, curl, util-linux, python3)"; exit 0; }
    done
    set +e
    lib=$("$here/obtain.sh")
    rc=$?
    set -e
    if [ $rc = 3 ]; then
        cache=${PRAVEGA_AUTOSCALER_CACHE:-$HOME/.cache/pravega-flink-autoscaler}
        mapfile -t error <"$cache/pravega-0.13.0.error"
        banner "tests/pravega SKIPPED: Maven could not get Pravega's jars" "${error[@]}"
        exit 0
    fi
    [ $rc = 0 ] || exit $rc
    echo "tests/pravega: jars ready after $((SECONDS - started)) s; building the workload and the adapter"
    # The workspace's binaries, as `make build` selects them (other package
    # selections unify dependency features differently and rebuild them).
    (cd "$repo" && cargo build --locked -q --workspace --bins)
    echo "tests/pravega: built after $((SECONDS - started)) s"
    export PRAVEGA_LIB=$lib/lib RUN_STARTED_EPOCH=$(($(date +%s) - (SECONDS - started)))
    exec unshare --net -- "$0" --inside
fi

# ---------------------------------------------------------------- inside
ip link set lo up
# Plain logs (no ANSI colours): check.py reads the binaries' log lines.
export NO_COLOR=1
bin=${CARGO_TARGET_DIR:-$repo/target}/debug
run=${RUN_DIR:-$(mktemp -d /tmp/pravega-test.XXXXXX)}
mkdir -p "$run"
echo "tests/pravega: logs in $run"

# What the test asks of Pravega: a policy of SCALING_RATE events/s per
# segment, split in up to SCALE_FACTOR. The segment store asks for a split
# when a segment's 2-minute rate exceeds 5x the target rate, at its first
# report, 2 minutes after the segment was created (hard-coded in 0.13), so
# the load is well above 5x the target by then.
SCOPE=test STREAM=stream
SCALING_RATE=${SCALING_RATE:-20}
SCALE_FACTOR=${SCALE_FACTOR:-3}
MIN_RATE=${MIN_RATE:-60} MAX_RATE=${MAX_RATE:-260} PERIOD=${PERIOD:-300s}
A_GRPC=9090 A_REST=10080 B_GRPC=9091 B_REST=10081
GEN=127.0.0.1:18090 ADAPTER=127.0.0.1:18080
SAMPLE_EVERY=5

pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    "$here/start.sh" "$run" stop >/dev/null 2>&1 || true
    if [ $rc != 0 ]; then echo "tests/pravega: FAILED (exit $rc); logs kept in $run" >&2; fi
    exit $rc
}
trap cleanup EXIT
fail() { echo "tests/pravega: FAIL: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }

"$here/start.sh" "$run"
echo "tests/pravega: Pravega up after $(elapsed) s (two controllers: gRPC $A_GRPC/$B_GRPC, REST $A_REST/$B_REST)"

# One value from an exposition: the first sample of FAMILY for test/stream.
# Timeline helpers print nothing when there is no value, and never fail.
stream_value() { # body-file family
    { grep -E "^$2\{" "$1" | grep -F "scope=\"$SCOPE\"" | grep -F "stream=\"$STREAM\"" \
        | head -1 | awk '{printf "%g", $NF}'; } 2>/dev/null || true
}
metric() { # url family: an unlabelled sample of our own binaries' /metrics
    { curl -fsS --max-time 2 "$1" | awk -v f="$2" '$1 == f {printf "%g", $2}'; } 2>/dev/null || true
}
truth() { # current segments per getCurrentSegments, via controller B, else A (one may be restarting)
    { "$bin/pravega-segments" --controller-uri tcp://127.0.0.1:$B_GRPC --scope $SCOPE --stream $STREAM --timeout 4s 2>>"$run/truth.err" \
        || "$bin/pravega-segments" --controller-uri tcp://127.0.0.1:$A_GRPC --scope $SCOPE --stream $STREAM --timeout 4s 2>>"$run/truth.err"; } \
        | awk '/^[0-9]+ / {print $1}' || true
}
adapter_value() { # the items' values joined by +, "none" for no item, httpNNN for an error status
    curl -sS --max-time 2 -w '\n%{http_code}' "http://$ADAPTER/apis/external.metrics.k8s.io/v1beta1/namespaces/default/pravega_controller_segments_count?labelSelector=scope%3D$SCOPE,stream%3D$STREAM" 2>/dev/null \
        | python3 -c '
import json, sys
*body, code = sys.stdin.read().split("\n")
if code != "200":
    print("http" + code)
else:
    items = json.loads("\n".join(body))["items"]
    print("+".join(x["value"] for x in items) if items else "none")' 2>/dev/null || echo "-"
}

cell() { echo "${1:--}"; }
gauges() { # exposition file: segments_count/segment_splits/segment_merges of the stream, - where absent
    echo "$(cell "$(stream_value "$1" pravega_controller_segments_count)")/$(cell "$(stream_value "$1" pravega_controller_segment_splits)")/$(cell "$(stream_value "$1" pravega_controller_segment_merges)")"
}
sample() { # one timeline row, to timeline.tsv (tail -f prints it)
    local a b row pa="$run/a.$BASHPID.prom" pb="$run/b.$BASHPID.prom"
    curl -fsS --max-time 2 "http://127.0.0.1:$A_REST/prometheus" -o "$pa" 2>/dev/null || : >"$pa"
    curl -fsS --max-time 2 "http://127.0.0.1:$B_REST/prometheus" -o "$pb" 2>/dev/null || : >"$pb"
    a="$(gauges "$pa")" b="$(gauges "$pb")"
    rm -f "$pa" "$pb"
    row=$(printf '%5s  %6s  %6s  %5s  %-9s  %-9s  %7s  %s' "$(elapsed)" "$(cell "$(metric "http://$GEN/metrics" generator_target_rate | cut -d. -f1)")" \
        "$(cell "$(metric "http://$GEN/metrics" generator_actual_rate | cut -d. -f1)")" "$(cell "$(truth)")" "$a" "$b" "$(adapter_value)" "$*")
    echo "$row" >>"$run/timeline.tsv"
}
sampler() {
    while true; do sample; sleep $SAMPLE_EVERY; done
}
last_truth() { tail -1 "$run/timeline.tsv" | awk '{print $4}'; }
wait_truth() { # op value seconds: until the true segment count satisfies op value
    local op=$1 want=$2 seconds=$3 deadline=$(($(date +%s) + $3)) n
    while [ "$(date +%s)" -lt $deadline ]; do
        n=$(truth)
        if [ -n "$n" ] && [ "$n" "$op" "$want" ]; then return 0; fi
        sleep 2
    done
    return 1
}

start_reader() { # name
    # The client logs every event at INFO.
    FLINK_READER_CONTROLLER_URI=tcp://127.0.0.1:$A_GRPC RUST_LOG=info,pravega_client=warn \
        "$bin/flink-reader" --scope $SCOPE --stream $STREAM --reader-group rg --reader-id "$1" \
        --iterations 100 --listen "127.0.0.1:$2" --sequence-log "$run/$1.seq" >>"$run/$1.log" 2>&1 &
    pids+=($!)
    eval "pid_$1=$!"
}
stop_reader() { # name: SIGTERM, then how long until the process exits
    local pid sent exited
    pid=$(eval echo "\$pid_$1")
    sent=$(now_ms)
    kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && fail "$1 still running 30 s after SIGTERM"
    wait "$pid" || fail "$1 exited with status $? after SIGTERM (log: $run/$1.log)"
    exited=$(now_ms)
    echo "$1 $sent $exited" >>"$run/stops"
    echo "tests/pravega: $1 left the group $((exited - sent)) ms after SIGTERM"
}

# The adapter, scraping both replicas, plain HTTP on loopback; it asks the
# replicas' gRPC API where their gauges cannot tell the count.
start_adapter() { # address log-name: sets adapter_pid
    "$bin/pravega-metrics-adapter" --secure-port 0 --insecure-bind-address "$1" \
        --controller-url http://127.0.0.1:$A_REST/prometheus --controller-url http://127.0.0.1:$B_REST/prometheus \
        --controller-api-url http://127.0.0.1:$A_GRPC --controller-api-url http://127.0.0.1:$B_GRPC \
        --scrape-interval 2s --scrape-timeout 1s >>"$run/$2.log" 2>&1 &
    adapter_pid=$!
    pids+=($adapter_pid)
}
start_adapter $ADAPTER adapter

# The generator and the truth go through controller B, which thus creates
# the stream and has its gauge first; the readers through controller A,
# which is restarted under them. Which replica scales the stream is
# Pravega's choice (the one whose scale reader holds the request's
# _system/_requeststream segment).
RUST_LOG=info "$bin/generator" --controller-uri tcp://127.0.0.1:$B_GRPC --scope $SCOPE --stream $STREAM \
    --scaling-rate $SCALING_RATE --scale-factor $SCALE_FACTOR --min-segments 1 \
    --min-rate $MIN_RATE --max-rate $MAX_RATE --period $PERIOD --listen $GEN >>"$run/generator.log" 2>&1 &
gen=$!
pids+=($gen)
start_reader r1 18091

printf '%5s  %6s  %6s  %5s  %-9s  %-9s  %7s  %s\n' t/s target actual truth A:n/s/m B:n/s/m adapter event | tee "$run/timeline.tsv"
sampler &
sampler_pid=$!
pids+=($sampler_pid)
event() { sample "<- $*"; }
tail_timeline() { tail -n +2 -f "$run/timeline.tsv" & pids+=($!); }
tail_timeline

wait_truth -ge 2 330 || fail "no split within 330 s of the generator's start (see $run/segmentstore.log: 'sending request for scale up')"
event "split"

start_reader r2 18092
start_reader r3 18093
event "readers r2, r3 started"
sleep 45
stop_reader r3
event "r3 stopped"
sleep 20
stop_reader r2
event "r2 stopped"

capture() { # name: both replicas' expositions and the truth, now
    curl -fsS "http://127.0.0.1:$A_REST/prometheus" -o "$run/$1-replica-a.prom"
    curl -fsS "http://127.0.0.1:$B_REST/prometheus" -o "$run/$1-replica-b.prom"
    "$bin/pravega-segments" --controller-uri tcp://127.0.0.1:$A_GRPC --scope $SCOPE --stream $STREAM >"$run/$1.truth" 2>>"$run/truth.err" \
        || fail "getCurrentSegments failed (see $run/truth.err)"
    event "expositions captured ($1, truth $(awk '{print $1}' "$run/$1.truth"))"
}
capture after-split

# Restart the replica that split the stream (Pravega picks it: the one
# whose scale reader holds the request's _system/_requeststream segment),
# so its fresh gauge goes; the other replica then does the merge.
if stream_value "$run/after-split-replica-a.prom" pravega_controller_segment_splits | grep -q .; then
    scaler=a
elif stream_value "$run/after-split-replica-b.prom" pravega_controller_segment_splits | grep -q .; then
    scaler=b
else
    fail "neither replica reports segment_splits for $SCOPE/$STREAM after the split"
fi
restart_started=$(date +%s)
"$here/start.sh" "$run" controller-$scaler
event "controller ${scaler^^} (it split the stream) restarted ($(($(date +%s) - restart_started)) s)"
sleep 15

kill -TERM $gen
wait $gen || fail "the generator exited with status $? (log: $run/generator.log)"
written=$(grep -oE 'flushing before exit.*events=[0-9]+' "$run/generator.log" | grep -oE '[0-9]+$' | tail -1)
event "generator stopped after writing ${written:-?} events"

wait_truth -le 1 480 || fail "the idle stream did not merge back to 1 segment within 480 s"
event "merged back"
sleep 12
capture after-merge
# The replica that merged serves the true count, so must the adapter.
served=$(adapter_value)
[ "$served" = "$(cat "$run/after-merge.truth" | awk '{print $1}')" ] || fail "after the merge the adapter serves $served, the stream has $(cat "$run/after-merge.truth")"

# A per-stream gauge lives in the controller's dynamic-metrics cache, which
# unregisters an entry not updated for dynamicCache.eviction.duration.minutes
# (1 here, 3 by default) the next time any gauge is reported. Creating a
# stream through the replica that merged reports one: its gauges for
# test/stream, untouched since the merge, disappear though nothing about the
# stream changed.
if stream_value "$run/after-merge-replica-a.prom" pravega_controller_segment_merges | grep -q .; then
    merger=a merger_grpc=$A_GRPC merger_rest=$A_REST
elif stream_value "$run/after-merge-replica-b.prom" pravega_controller_segment_merges | grep -q .; then
    merger=b merger_grpc=$B_GRPC merger_rest=$B_REST
else
    fail "neither replica reports segment_merges for $SCOPE/$STREAM after the merge"
fi
sleep 60
RUST_LOG=warn "$bin/generator" --controller-uri tcp://127.0.0.1:$merger_grpc --scope $SCOPE --stream probe \
    --scaling-rate 0 --min-segments 1 --min-rate 1 --max-rate 1 --listen 127.0.0.1:18099 >>"$run/probe.log" 2>&1 &
probe=$!
pids+=($probe)
for _ in $(seq 60); do curl -fs -o /dev/null http://127.0.0.1:18099/readyz && break; sleep 0.5; done
kill -TERM $probe; wait $probe || fail "the probe generator failed (log: $run/probe.log)"
sleep 3
event "stream $SCOPE/probe created through ${merger^^} (it merged), 60 s after the merge"
curl -fsS "http://127.0.0.1:$merger_rest/prometheus" -o "$run/after-eviction-replica-$merger.prom"
grep -q "stream=\"probe\"" "$run/after-eviction-replica-$merger.prom" || fail "${merger^^} reports no gauge for the probe stream it created"
if stream_value "$run/after-eviction-replica-$merger.prom" pravega_controller_segments_count | grep -q .; then
    fail "${merger^^} still has $SCOPE/$STREAM's segments_count over a minute after its last scale"
fi

# r1 has read everything once its sequence log stops growing.
for _ in $(seq 30); do
    before=$(wc -l <"$run/r1.seq"); sleep 2; after=$(wc -l <"$run/r1.seq")
    [ "$before" = "$after" ] && break
done
r1_metric=$(metric http://127.0.0.1:18091/metrics flink_reader_events_total)
stop_reader r1
event "r1 stopped"
kill $sampler_pid 2>/dev/null || true

echo
echo "tests/pravega: timeline (t/s since Pravega started; target/actual events/s; truth = getCurrentSegments;"
echo "  A, B = each replica's segments_count/segment_splits/segment_merges for $SCOPE/$STREAM, - = no series;"
echo "  adapter = what the adapter serves for it)"
cat "$run/timeline.tsv"

if [ "${CAPTURE_FIXTURES:-}" = 1 ]; then
    fixtures=$repo/tests/fixtures/pravega-controller
    for moment in after-split after-merge; do
        for replica in a b; do
            cp "$run/$moment-replica-$replica.prom" "$fixtures/real-0.13.0-$moment-replica-$replica.prom"
        done
        cp "$run/$moment.truth" "$fixtures/real-0.13.0-$moment.truth"
    done
    echo "tests/pravega: fixtures written to $fixtures"
fi

# A failed check of the workload's flow fails the run once the inventory's
# steps have run too, so one run gives both verdicts.
workload_checks=0
python3 "$here/check.py" "$run" || workload_checks=$?
[ "$r1_metric" = "$(wc -l <"$run/r1.seq")" ] || fail "r1 /metrics says $r1_metric events, its log has $(wc -l <"$run/r1.seq")"

# 7. the inventory: quiet, fixed, recreated and many streams, the adapter
#    and the controllers restarted (inventory.sh)
. "$here/inventory.sh"
inventory_checks=0
inventory_steps || inventory_checks=$?
[ $workload_checks = 0 ] || fail "check.py: the workload's checks failed (above)"
[ $inventory_checks = 0 ] || fail "inventory_check.py: the adapter served a value other than the truth (above)"
echo "tests/pravega: passed in $(($(date +%s) - RUN_STARTED_EPOCH)) s"
