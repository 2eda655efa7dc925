#!/usr/bin/env bash
# Starts a small Pravega 0.13 cluster for tests, each part its own JVM:
# ZooKeeper, one segment store (in-memory durable log, file-system tier 2)
# and two controllers over that ZooKeeper and segment store.
#
#   start.sh RUN_DIR              start everything, wait until it serves
#   start.sh RUN_DIR controller-a (re)start one controller (or controller-b)
#   start.sh RUN_DIR stop         stop everything started in RUN_DIR
#
# RUN_DIR holds the logs (NAME.log), pids (NAME.pid), ZooKeeper's data and
# tier 2. Jars come from obtain.sh (PRAVEGA_LIB overrides the directory).
# PRAVEGA_REST_ADDRESSES ("IP:PORT IP:PORT", controller A's then B's) moves
# the controllers' REST servers (and /prometheus) off 127.0.0.1:10080 and
# :10081, e.g. to the pod addresses of the e2e loop.
#
# PRAVEGA_HOST (127.0.0.1) is where the segment store listens and the
# address it publishes to clients (the controllers hand it out), and the
# controllers' published gRPC address: the e2e loop sets its namespace's
# address, which its node's pods reach, so readers and the generator in pods
# talk to the segment store directly, as clients do.
#
# Loopback only: every address is 127.0.0.1 (or one the caller added to
# lo), but the controller's gRPC server (io.grpc NettyServerBuilder.forPort)
# binds every interface and has no address setting, so the callers start
# this in a network namespace of their own whose only interface is lo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run=${1:?usage: start.sh RUN_DIR [controller-a|controller-b|stop]}
what=${2:-all}
mkdir -p "$run"
run=$(cd "$run" && pwd)
lib=${PRAVEGA_LIB:-$("$here/obtain.sh")/lib}
classpath="$lib/*"

ZK_PORT=${ZK_PORT:-2181}
SEGMENTSTORE_PORT=${SEGMENTSTORE_PORT:-12345}
HOST=${PRAVEGA_HOST:-127.0.0.1}
# The test stream's segments live on these containers; the controllers and
# the segment store must agree on the count (Pravega checks it).
CONTAINERS=2
# name grpc-port rest-address
read -r rest_a rest_b <<<"${PRAVEGA_REST_ADDRESSES:-127.0.0.1:10080 127.0.0.1:10081}"
CONTROLLERS=("controller-a 9090 $rest_a" "controller-b 9091 $rest_b")

# Small heaps and C1 only: four JVMs share two cores with the workload, and
# the servers' hot paths here are light; C2 compilations would compete
# with the test for CPU during the first minutes.
JAVA_OPTS=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.net.preferIPv4Stack=true
           -Dlogback.configurationFile="$here/logback.xml")

launch() { # name, then java arguments
    local name=$1; shift
    echo "=== $(date -u +%FT%TZ) starting $name" >>"$run/$name.log"
    java -cp "$classpath" "${JAVA_OPTS[@]}" "$@" >>"$run/$name.log" 2>&1 &
    echo $! >"$run/$name.pid"
}

stop_one() { # name: SIGTERM (the servers' shutdown hooks), then SIGKILL after 20 s
    local name=$1 pid
    [ -f "$run/$name.pid" ] || return 0
    pid=$(cat "$run/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$run/$name.pid"
}

wait_for() { # name (its pid file), what, seconds, command...
    local name=$1 what=$2 seconds=$3; shift 3
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$run/$name.pid")" 2>/dev/null; then
            echo "start.sh: $what exited; log tail:" >&2
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "start.sh: $what not ready after ${seconds}s; log tail:" >&2
            return 1
        fi
        sleep 0.5
    done
}

port_open() { # port [host]
    (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null
}

start_zookeeper() {
    mkdir -p "$run/zookeeper"
    # ZooKeeper's own server main class with a config file: loopback
    # address, no AdminServer (it would open a Jetty port 8080).
    cat >"$run/zookeeper.cfg" <<CFG
dataDir=$run/zookeeper
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
tickTime=2000
maxClientCnxns=0
admin.enableServer=false
CFG
    launch zookeeper -Xmx128m -Dzookeeper.admin.enableServer=false \
        org.apache.zookeeper.server.ZooKeeperServerMain "$run/zookeeper.cfg"
    wait_for zookeeper ZooKeeper 60 port_open "$ZK_PORT" || { tail -20 "$run/zookeeper.log" >&2; exit 1; }
}

start_segmentstore() {
    mkdir -p "$run/tier2"
    # ServiceStarter insists on a configuration file (config.properties in
    # the working directory by default); everything is set below instead.
    : >"$run/segmentstore.properties"
    local controllers=""
    for c in "${CONTROLLERS[@]}"; do
        set -- $c
        controllers="${controllers:+$controllers,}127.0.0.1:$2"
    done
    # Properties (ServiceConfig "pravegaservice.", AutoScalerConfig
    # "autoScale.", FileSystemStorageConfig "filesystem."); see
    # docs/pravega-test-setup.md for why each value.
    launch segmentstore -Xmx768m -XX:MaxDirectMemorySize=512m \
        -Dpravegaservice.zk.connect.uri=127.0.0.1:$ZK_PORT \
        -Dpravegaservice.container.count=$CONTAINERS \
        -Dpravegaservice.service.listener.host.nameOrIp="$HOST" \
        -Dpravegaservice.service.listener.port=$SEGMENTSTORE_PORT \
        -Dpravegaservice.service.published.host.nameOrIp="$HOST" \
        -Dpravegaservice.service.published.port=$SEGMENTSTORE_PORT \
        -Dpravegaservice.rest.listener.enable=false \
        -Dpravegaservice.dataLog.impl.name=INMEMORY \
        -Dpravegaservice.storage.impl.name=FILESYSTEM \
        -Dpravegaservice.storage.layout=CHUNKED_STORAGE \
        -Dfilesystem.root="$run/tier2" \
        -Dpravegaservice.cache.size.max=268435456 \
        -Dpravegaservice.threadPool.core.size=8 \
        -Dpravegaservice.threadPool.storage.size=8 \
        -Dpravegaservice.threadPool.lowPriorityTasks.size=2 \
        -DautoScale.controller.connect.uri="tcp://$controllers" \
        -DautoScale.cooldown.time.seconds=${AUTOSCALE_COOLDOWN_SECONDS:-10} \
        -DautoScale.mute.time.seconds=${AUTOSCALE_MUTE_SECONDS:-10} \
        -DautoScale.cache.expiry.seconds=${AUTOSCALE_CACHE_EXPIRY_SECONDS:-135} \
        -DautoScale.cache.cleanUp.interval.seconds=${AUTOSCALE_CACHE_CLEANUP_SECONDS:-5} \
        -Dpravega.configurationFile="$run/segmentstore.properties" \
        io.pravega.segmentstore.server.host.ServiceStarter
    wait_for segmentstore "segment store" 120 port_open "$SEGMENTSTORE_PORT" "$HOST" || { tail -40 "$run/segmentstore.log" >&2; exit 1; }
}

start_controller() { # name grpc-port rest-address
    local name=$1 grpc=$2 rest=$3
    # Properties: controller Config ("controller."), MetricsConfig under
    # "controller.metrics."; see docs/pravega-test-setup.md.
    # HOSTNAME: Micrometer's common tag `host` on every series
    # (MetricsTags.createHostTag reads this property, else the HOSTNAME
    # variable, else the machine's name). On Kubernetes it is the pod's
    # name, so each replica's series carry a host of their own: the same
    # here, rather than the machine's one name for both.
    launch "$name" -Xmx512m -DHOSTNAME="$name" \
        -Dcontroller.zk.connect.uri=127.0.0.1:$ZK_PORT \
        -Dcontroller.cluster.name=pravega-cluster \
        -Dcontroller.container.count=$CONTAINERS \
        -Dcontroller.hostMonitor.enable=true \
        -Dcontroller.rebalance.interval.seconds.min=2 \
        -Dcontroller.service.rpc.listener.port=$grpc \
        -Dcontroller.service.rpc.published.host.nameOrIp="$HOST" \
        -Dcontroller.service.rpc.published.port=$grpc \
        -Dcontroller.service.rest.listener.host.ip="${rest%:*}" \
        -Dcontroller.service.rest.listener.port="${rest##*:}" \
        -Dcontroller.service.asyncTaskPool.size=16 \
        -Dcontroller.metrics.statistics.enable=true \
        -Dcontroller.metrics.prometheus.enable=true \
        -Dcontroller.metrics.dynamicCache.eviction.duration.minutes=${METRICS_EVICTION_MINUTES:-1} \
        io.pravega.controller.server.Main
}

controller_ready() { # rest-address: /prometheus answers once the REST server and metrics are up
    curl -fsS --max-time 2 "http://$1/prometheus" >/dev/null
}

case $what in
all)
    start_zookeeper
    start_segmentstore
    for c in "${CONTROLLERS[@]}"; do start_controller $c; done
    for c in "${CONTROLLERS[@]}"; do
        set -- $c
        wait_for "$1" "$1" 180 controller_ready "$3" || { tail -40 "$run/$1.log" >&2; exit 1; }
    done
    ;;
controller-*)
    for c in "${CONTROLLERS[@]}"; do
        set -- $c
        if [ "$1" = "$what" ]; then
            stop_one "$1"
            start_controller "$@"
            wait_for "$1" "$1" 180 controller_ready "$3" || { tail -40 "$run/$1.log" >&2; exit 1; }
            exit 0
        fi
    done
    echo "start.sh: no controller named $what" >&2; exit 2
    ;;
stop)
    for c in "${CONTROLLERS[@]}"; do set -- $c; stop_one "$1"; done
    stop_one segmentstore
    stop_one zookeeper
    ;;
*) echo "start.sh: unknown action $what" >&2; exit 2 ;;
esac
