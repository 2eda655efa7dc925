#!/usr/bin/env bash
# A step of the wall clock changes nothing the adapter serves: it measures
# ages on the monotonic clock. The simulated controller and the adapter run
# as in `make run`, the adapter under libfaketime with only its wall clock
# faked (FAKETIME_DONT_FAKE_MONOTONIC=1), stepped by rewriting the file
# libfaketime reads on every call. Checked:
#  - the wall clock steps 2 h forward: the value scraped seconds ago is still
#    served, stamped with the new wall time less its age;
#  - the controller stops and the wall clock steps 2 h back: the value is
#    served while it is recent and no longer once --metrics-max-age has
#    passed.
#
#   BIN  directory of the built pravega-metrics-adapter and generator
#        (make run-check builds them into target/debug)
set -euo pipefail
: "${BIN:?directory of the built binaries}"
SIM_ADDR=127.0.0.1:18083
ADAPTER_ADDR=127.0.0.1:18082
QUERY="http://$ADAPTER_ADDR/apis/external.metrics.k8s.io/v1beta1/namespaces/default/pravega_controller_segments_count?labelSelector=scope%3Dtest,stream%3Dstream"
MAX_AGE=15

fail() { echo "clock step: FAILED: $*" >&2; exit 1; }
faketime_lib=$(compgen -G '/usr/lib/*/faketime/libfaketime.so.1' | head -n1) || fail "libfaketime is not installed (tests/prerequisites.sh installs it)"

work=$(mktemp -d)
sim='' adapter=''
trap 'kill $sim $adapter 2>/dev/null; rm -rf "$work"' EXIT
echo "+0" > "$work/offset"

"$BIN/generator" --simulate --listen "$SIM_ADDR" --period 120s --scale-hold 5s --create-after 2s & sim=$!
LD_PRELOAD=$faketime_lib FAKETIME_TIMESTAMP_FILE=$work/offset FAKETIME_NO_CACHE=1 FAKETIME_DONT_FAKE_MONOTONIC=1 \
  "$BIN/pravega-metrics-adapter" --secure-port 0 --insecure-bind-address "$ADAPTER_ADDR" \
  --controller-url "http://$SIM_ADDR/prometheus" --scrape-interval 5s --scrape-timeout 1s --metrics-max-age "${MAX_AGE}s" \
  > "$work/adapter.log" 2>&1 & adapter=$!

# items: the number of items of the external answer, and the first one's
# timestamp in seconds since the epoch (0 without items; a Status answer,
# such as a 404 once no data is fresh, has none, nor has no answer).
items() {
  curl -s "$QUERY" | python3 -c '
import json, sys, datetime
try:
    items = json.loads(sys.stdin.read()).get("items", [])
except ValueError:
    items = []
stamp = datetime.datetime.fromisoformat(items[0]["timestamp"].replace("Z", "+00:00")).timestamp() if items else 0
print(len(items), int(stamp))'
}

for attempt in $(seq 30); do
  read -r count _ < <(items)
  [ "$count" -eq 1 ] && break
  [ "$attempt" -lt 30 ] || { cat "$work/adapter.log" >&2; fail "no value served before the clock steps"; }
  sleep 1
done

echo "+2h" > "$work/offset"
read -r count stamp < <(items)
[ "$count" -eq 1 ] || fail "the wall clock stepped 2 h forward and the value scraped seconds ago is no longer served"
expected=$(( $(date +%s) + 7200 ))
age=$(( expected - stamp ))
if [ "$age" -lt 0 ] || [ "$age" -gt $(( MAX_AGE + 5 )) ]; then
  fail "after a 2 h step forward the value is stamped $stamp, not within ${MAX_AGE} s before the new wall time $expected"
fi
echo "clock step: 2 h forward: still served, stamped with the new wall time"

kill "$sim"; wait "$sim" 2>/dev/null || true; sim=
echo "-2h" > "$work/offset"
read -r count _ < <(items)
[ "$count" -eq 1 ] || fail "the controller stopped and the wall clock stepped 2 h back: its value is not served while it is recent"
sleep $(( MAX_AGE + 2 ))
read -r count _ < <(items)
[ "$count" -eq 0 ] || fail "the controller stopped and the wall clock stepped 2 h back: its value is still served after --metrics-max-age"
echo "clock step: 2 h back with the controller gone: withheld after --metrics-max-age"
