#!/bin/sh
# make run: the simulated Pravega controller and the adapter on loopback,
# no cluster. Prints the kubectl and curl commands that work against them;
# with RUN_CHECK set, asks the two metrics queries it printed until both
# answer with a value (make run-check), otherwise runs until Ctrl-C.
#
# Set by the Makefile: BIN (directory of the built binaries), SIM_ADDR and
# ADAPTER_ADDR (where the simulator and the adapter listen), KUBECTL,
# EXTERNAL_QUERY and CUSTOM_QUERY (the API paths printed and checked);
# RUN_CHECK (non-empty: check, then exit).
set -e
: "${BIN:?}" "${SIM_ADDR:?}" "${ADAPTER_ADDR:?}" "${KUBECTL:?}" "${EXTERNAL_QUERY:?}" "${CUSTOM_QUERY:?}"

# The simulated stream is created a few seconds in, once the adapter
# watches: with no controller API, the adapter serves only changes it saw.
"$BIN/generator" --simulate --listen "$SIM_ADDR" --period 120s --scale-hold 5s --create-after 4s & sim=$!
"$BIN/pravega-metrics-adapter" --secure-port 0 --insecure-bind-address "$ADAPTER_ADDR" \
  --controller-url "http://$SIM_ADDR/prometheus" --scrape-interval 2s --scrape-timeout 1s & adapter=$!
trap 'kill $sim $adapter 2>/dev/null' EXIT
trap 'exit 0' INT TERM
sleep 2
echo
echo "Simulated Pravega controller: http://$SIM_ADDR/prometheus (stream test/stream, 2-minute sine)"
echo "Adapter (plain HTTP, loopback, no auth): http://$ADAPTER_ADDR"
echo
echo "  $KUBECTL --server http://$ADAPTER_ADDR get --raw '$EXTERNAL_QUERY'"
echo "  $KUBECTL --server http://$ADAPTER_ADDR get --raw '$CUSTOM_QUERY'"
echo "  $KUBECTL --server http://$ADAPTER_ADDR get --raw /apis/custom.metrics.k8s.io/v1beta1"
echo "  curl -s http://$ADAPTER_ADDR/metrics"
echo "  watch -n1 \"curl -s 'http://$ADAPTER_ADDR$EXTERNAL_QUERY'\""
echo
if [ -z "$RUN_CHECK" ]; then
  echo "Ctrl-C stops both."
  wait
  exit 0
fi
for query in "$EXTERNAL_QUERY" "$CUSTOM_QUERY"; do
  for attempt in $(seq 30); do
    if $KUBECTL --server "http://$ADAPTER_ADDR" get --raw "$query" | grep -q '"value":"[0-9]'; then break; fi
    [ "$attempt" -lt 30 ] || { echo "make run check: no value for $query" >&2; exit 1; }
    sleep 1
  done
done
echo "make run check: both printed queries answer with a value"
