# The inventory's steps of tests/pravega/run.sh, sourced by it once its own
# flow has passed; they reuse the running Pravega and the adapter. Each step
# changes streams through the controllers' API (pravega-segments) or restarts
# something, while inventory_check.py samples every stream's value against
# the truth every 2 s:
#   a  a fixed 3-segment stream, never scaled, whose gauge the controller
#      evicts; a second adapter started afterwards serves 3
#   b  the adapter restarted while every stream is quiet
#   c  a stream scaled, sealed, deleted, recreated under the same name and
#      scaled again
#   d  20 fixed streams in one scope: the Object sum over the scope
#   e  both controllers restarted together
# Every change opens a window (until 10 s after it completes) in which the
# adapter may withhold; outside windows it serves the truth, and while both
# controllers are down the truth or nothing. inventory_check.py report
# prints the samples and fails the run otherwise.
#
# Uses from run.sh: here, bin, run, fail, now_ms, pids, start_adapter,
# adapter_pid, ADAPTER, A_GRPC, B_GRPC, A_REST.

inv=$run/inventory
ADAPTER2=127.0.0.1:18082
SETTLE=16 # > the 10 s window: at least two rounds of settled samples

inventory_steps() {
    mkdir -p "$inv"
    local main_adapter=$adapter_pid
    echo "main $ADAPTER" >"$inv/adapters"
    : >"$inv/scopes"
    : >"$inv/events"
    echo setup >"$inv/step"
    python3 "$here/inventory_check.py" sample "$inv" "$bin/pravega-segments" $B_GRPC $A_GRPC 2>>"$inv/sampler.err" &
    local sampler=$!
    pids+=($sampler)
    sleep 6

    step a-fixed-evicted
    # Created through A only: A alone reports its gauge, and evicts it a
    # minute later, when it next reports another stream's.
    op '*' fixed/three $A_GRPC create --scope fixed --stream three --segments 3
    sleep 65
    op '*' fixed/evictor $A_GRPC create --scope fixed --stream evictor --segments 1
    sleep 3
    curl -fsS "http://127.0.0.1:$A_REST/prometheus" -o "$inv/a-after-eviction.prom" || fail "controller A's /prometheus"
    grep -q 'stream="evictor"' "$inv/a-after-eviction.prom" || fail "A reports no gauge for fixed/evictor, which it created"
    if grep -E '^pravega_controller_segments_count\{' "$inv/a-after-eviction.prom" | grep -F 'scope="fixed"' | grep -qF 'stream="three"'; then
        fail "A still reports fixed/three's segments_count over a minute after creating it"
    fi
    echo "tests/pravega: fixed/three's gauge is evicted; a second adapter starts ($ADAPTER2)"
    local start
    start=$(now_ms)
    start_adapter $ADAPTER2 adapter2
    local second=$adapter_pid
    wait_ready $ADAPTER2
    echo "second $ADAPTER2" >>"$inv/adapters"
    echo "$start $(now_ms) window second *" >>"$inv/events"
    sleep 24
    # The second adapter leaves the samples before it stops.
    echo "main $ADAPTER" >"$inv/adapters"
    sleep 3
    kill -TERM $second
    wait $second || fail "the second adapter exited with status $? (log: $run/adapter2.log)"

    step b-adapter-restart
    sleep 6
    start=$(now_ms)
    kill -TERM $main_adapter
    wait $main_adapter || fail "the adapter exited with status $? on SIGTERM (log: $run/adapter.log)"
    start_adapter $ADAPTER adapter
    wait_ready $ADAPTER
    echo "$start $(now_ms) window main *" >>"$inv/events"
    echo "tests/pravega: the adapter restarted ($(($(now_ms) - start)) ms)"
    sleep 24

    step c-recreate
    op '*' cycle/s $B_GRPC create --scope cycle --stream s --segments 2
    sleep $SETTLE
    op '*' cycle/s $A_GRPC split --scope cycle --stream s
    sleep $SETTLE
    op '*' cycle/s $A_GRPC seal --scope cycle --stream s
    sleep $SETTLE
    op '*' cycle/s $A_GRPC delete --scope cycle --stream s
    sleep $SETTLE
    op '*' cycle/s $B_GRPC create --scope cycle --stream s --segments 1
    sleep $SETTLE
    op '*' cycle/s $A_GRPC split --scope cycle --stream s
    sleep $SETTLE
    op '*' cycle/s $B_GRPC split --scope cycle --stream s
    sleep $SETTLE

    step d-scope-sum
    # 1 to 5 segments each, through A and B in turn: 60 in all.
    start=$(now_ms)
    local i grpc
    for i in $(seq 1 20); do
        grpc=$A_GRPC
        [ $((i % 2)) = 0 ] && grpc=$B_GRPC
        op '*' "many/s$(printf %02d $i)" $grpc create --scope many --stream "s$(printf %02d $i)" --segments $((i % 5 + 1))
    done
    echo many >>"$inv/scopes"
    echo "$start $(now_ms) window * many/*" >>"$inv/events"
    sleep 24

    step e-controllers-restart
    start=$(now_ms)
    "$here/start.sh" "$run" controller-a &
    local restart_a=$!
    "$here/start.sh" "$run" controller-b &
    local restart_b=$!
    wait $restart_a || fail "controller A did not restart"
    wait $restart_b || fail "controller B did not restart"
    local back
    back=$(now_ms)
    echo "$start $back outage * *" >>"$inv/events"
    echo "$back $back window * *" >>"$inv/events"
    echo "tests/pravega: both controllers restarted ($((back - start)) ms)"
    sleep 30

    step done
    sleep 1
    kill $sampler 2>/dev/null || true
    wait $sampler 2>/dev/null || true
    # The verdict is the function's status.
    python3 "$here/inventory_check.py" report "$inv"
}

step() { # name: the samples from now on are filed under it
    echo "$1" >"$inv/step"
    echo "tests/pravega: inventory step $1 ($(date -u +%T))"
}

op() { # adapter key grpc-port pravega-segments-arguments...: a change, and its window
    local adapter=$1 key=$2 grpc=$3 start
    shift 3
    start=$(now_ms)
    "$bin/pravega-segments" --controller-uri tcp://127.0.0.1:$grpc --timeout 60s "$@" >>"$inv/ops.log" 2>>"$inv/ops.err" \
        || fail "pravega-segments $* failed (see $inv/ops.err)"
    echo "$start $(now_ms) window $adapter $key" >>"$inv/events"
    echo "tests/pravega:   $(tail -1 "$inv/ops.log") ($(($(now_ms) - start)) ms)"
}

wait_ready() { # address
    for _ in $(seq 120); do
        curl -fs -o /dev/null "http://$1/readyz" && return 0
        sleep 0.5
    done
    fail "the adapter at $1 is not ready after 60 s"
}
