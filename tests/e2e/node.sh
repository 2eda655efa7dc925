# A real node for the end-to-end control plane, sourced by cluster.sh inside
# its network namespace when the caller sets want_node=1: containerd 2 with
# runc and the CNI plugins, a kubelet, kube-proxy (iptables mode), and the
# pause image built here (obtain-node.sh). The node's address is $ns_ip, the
# kube-apiserver's own: the node runs where the control plane runs, as on a
# one-machine cluster, and host processes on the namespace's addresses (the
# Pravega of the loop, the fake controllers) are one route away from pods.
#
# cluster.sh calls node_pki before it starts the kube-apiserver (the
# certificates below), start_node once the control plane is up (returns when
# the node is Ready), and node_cleanup runs first on exit.
#
# What is not as on a machine of its own, and why:
# - cgroups: this machine's kernel runs cgroup v1, so the kubelet runs with
#   failCgroupV1: false (Kubernetes 1.35+ refuses v1 by default). `ip netns
#   exec` remounts /sys, which hides /sys/fs/cgroup: node_mounts mounts the
#   host's hierarchies again, in the namespace's private mount namespace. Pods
#   live under cgroupRoot /$node_cgroup (named after the network namespace),
#   not /kubepods, so two e2e runs on one machine never share a cgroup; the
#   cleanup removes it.
# - kernel settings: the kubelet wants vm.overcommit_memory=1, kernel.panic=10,
#   kernel.panic_on_oops=1 and more, and sets them unless protectKernelDefaults.
#   Those are machine-wide, not per network namespace; this node shares the
#   machine, so it runs with protectKernelDefaults: true and files holding the
#   expected values are bind-mounted over them in the private mount namespace:
#   the kubelet reads what it expects and never writes the machine's.
# - paths: containerd's state, runc's root, the CNI plugins' IP allocations,
#   the kubelet's root and pod logs are under $work/node; /run/containerd
#   (the shims' sockets) and /var/lib/kubelet (the device plugin socket),
#   which the binaries use whatever their configuration, are tmpfs mounts of
#   the private mount namespace.
# - kube-proxy leaves the machine-wide nf_conntrack_max alone (maxPerCore 0).
# - oom_score_adj: this machine runs its processes without CAP_SYS_RESOURCE,
#   so none may lower its OOM score below its parent's; containerd keeps the
#   pods' at or above its own (restrict_oom_score_adj).
# - routes: the namespace has no default route; the Service CIDR gets one
#   (through lo) so that host processes of the namespace reach ClusterIPs.
# shellcheck shell=bash
# Variables and functions of cluster.sh (work, pki, ns_ip, leaf, kubeconfig,
# background, kc, fail, log, wait_for...) are used here.
# shellcheck disable=SC2154
node_name=pfa-e2e-node
node_dir=$work/node
pod_subnet=10.244.0.0/24     # the one node's pods (host-local IPAM, bridge cni0)
cluster_cidr=10.244.0.0/16   # kube-proxy: what is pod traffic
service_cidr=10.96.0.0/24    # the kube-apiserver's --service-cluster-ip-range
cluster_dns=10.96.0.10       # the kube-dns Service, as kubeadm numbers it
node_cgroup=${E2E_NETNS:-pfa-e2e-$$}
node_bin=$E2E_NODE_BIN
containerd_sock=$node_dir/containerd/containerd.sock

# node_pki: the node's certificates, from the cluster CA: the kubelet's client
# (the Node authorizer's system:node:<name>) and serving certificates, the
# kube-proxy's client (bound to system:node-proxier by the bootstrap RBAC),
# the kube-apiserver's client for the kubelet API (logs, exec), and the
# kube-scheduler's client (system:kube-scheduler, bound by the bootstrap RBAC).
node_pki() {
  leaf kubelet cluster-ca "/O=system:nodes/CN=system:node:$node_name" clientAuth
  leaf kubelet-serving cluster-ca "/CN=$node_name" serverAuth "IP:$ns_ip,DNS:$node_name"
  leaf kube-proxy cluster-ca /CN=system:kube-proxy clientAuth
  leaf apiserver-kubelet-client cluster-ca "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  leaf scheduler cluster-ca /CN=system:kube-scheduler clientAuth
  kubeconfig "$work/kubelet.kubeconfig" kubelet
  kubeconfig "$work/kube-proxy.kubeconfig" kube-proxy
  kubeconfig "$work/scheduler.kubeconfig" scheduler
}

# node_mounts: cgroups, masked kernel settings and private runtime directories
# (see the top of this file), all in the private mount namespace.
node_mounts() {
  local target fstype options s flag value
  mount -t tmpfs -o mode=755 cgroup-root /sys/fs/cgroup
  # The host's hierarchies, as its init process sees them.
  while read -r _ target fstype options _; do
    case $fstype in cgroup | cgroup2) ;; *) continue ;; esac
    case $target in /sys/fs/cgroup/*) ;; *) continue ;; esac
    mkdir -p "$target"
    mount -t "$fstype" -o "$options" "$fstype" "$target"
  done </proc/1/mounts
  mountpoint -q /sys/fs/cgroup/memory || fail "the node needs the cgroup v1 memory hierarchy (found: $(ls /sys/fs/cgroup))"
  # The kubelet checks that its cgroupRoot exists in every hierarchy; cpuset's
  # children start with no CPUs and no memory nodes.
  for s in /sys/fs/cgroup/*/; do
    mkdir -p "$s$node_cgroup"
    if [ -f "$s/cpuset.cpus" ]; then
      cat "$s/cpuset.cpus" >"$s$node_cgroup/cpuset.cpus"
      cat "$s/cpuset.mems" >"$s$node_cgroup/cpuset.mems"
    fi
  done
  # What the kubelet's setupKernelTunables expects (pkg/kubelet/cm).
  mkdir -p "$node_dir/sysctl"
  for flag in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    value=${flag#*=}
    flag=${flag%=*}
    [ "$(cat "/proc/sys/$flag")" = "$value" ] && continue
    echo "$value" >"$node_dir/sysctl/${flag//\//.}"
    mount --bind "$node_dir/sysctl/${flag//\//.}" "/proc/sys/$flag"
  done
  # Per network namespace: forwarding between the bridge and the namespace,
  # and bridged traffic through iptables (kube-proxy's Service rules for
  # pod-to-pod through a ClusterIP).
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  # A route for the Service CIDR, where a node has its default route: without
  # one, a connection from the namespace to a ClusterIP (the aggregator's path
  # to an APIService's Service) fails the route lookup before kube-proxy's
  # rules rewrite its destination. Through lo: what no rule rewrites goes
  # nowhere.
  ip route add "$service_cidr" dev lo src "$ns_ip"
  mkdir -p /run/containerd /var/lib/kubelet
  mount -t tmpfs -o mode=711 node-run-containerd /run/containerd
  mount -t tmpfs -o mode=700 node-var-lib-kubelet /var/lib/kubelet
}

containerd_config() {
  cat <<EOF
version = 3
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$containerd_sock.ttrpc"
[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = "$node_dir/containerd/opt"
  # NRI's socket is machine-wide (/var/run/nri); nothing here uses it.
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      # Built here (obtain-node.sh) and imported before the kubelet starts:
      # the node never pulls it.
      sandbox = "$pause_image"
  [plugins.'io.containerd.cri.v1.runtime']
    netns_mounts_under_state_dir = true
    # The kubelet asks for oom_score_adj -998 for the pause container and
    # lower than 0 for Guaranteed pods; lowering it takes CAP_SYS_RESOURCE,
    # which this machine's processes do not have: no lower than containerd's own.
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "$node_bin/runc"
          Root = "$node_dir/runc"
          # The kubelet's cgroupDriver is cgroupfs (no systemd here).
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "$node_dir/cni/net.d"
EOF
}

# The pods' network: a bridge (cni0) in the namespace as their gateway, IPs
# from host-local, hairpin so a pod reaches itself through a Service, portmap
# for hostPort. No masquerading: everything pods reach is in this namespace.
cni_config() {
  cat <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pfa-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_subnet"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$node_dir/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

kubelet_config() {
  cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine's kernel runs cgroup v1; Kubernetes 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$node_cgroup
containerRuntimeEndpoint: unix://$containerd_sock
address: $ns_ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/cluster-ca.crt}
authorization: {mode: Webhook}
registerNode: true
failSwapOn: false
# See the top of this file.
protectKernelDefaults: true
podLogsDir: $node_dir/pod-logs
# The node shares the machine's disk with everything else on it: the default
# thresholds (imagefs.available 15 %, nodefs.available 10 % of the disk)
# taint it with disk-pressure whenever the machine's disk is that full,
# whatever this node uses. Absolute amounts, a few times what its images
# and logs take; memory and inodes as the defaults.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1Gi
  imagefs.available: 1Gi
  nodefs.inodesFree: 5%
  imagefs.inodesFree: 5%
# CoreDNS (start_cluster_dns) at the kube-dns Service's address.
clusterDNS: [$cluster_dns]
clusterDomain: cluster.local
EOF
}

kube_proxy_config() {
  cat <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $work/kube-proxy.kubeconfig}
hostnameOverride: $node_name
clusterCIDR: $cluster_cidr
bindAddress: $ns_ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0}
nodePortAddresses: [primary]
EOF
}

node_ready() {
  [ "$(kc get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# node_logs_tail: what went wrong, for a failure message.
node_logs_tail() {
  local f
  for f in containerd kubelet kube-proxy kube-scheduler; do
    [ -f "$work/logs/$f.log" ] || continue
    printf '\n----- last lines of %s.log -----\n' "$f"
    grep -E '^[EW][0-9]|level=(error|warning)|error|fail' "$work/logs/$f.log" | tail -n 15
  done
}

# start_node: containerd, the pause image, kube-proxy and the kubelet;
# returns once the node is Ready.
start_node() {
  local started ready_at
  started=$(now)
  pause_image=$(cat "$node_bin/pause.name")
  mkdir -p "$node_dir/containerd" "$node_dir/cni/net.d" "$node_dir/kubelet" "$node_dir/pod-logs"
  node_mounts
  containerd_config >"$node_dir/containerd/config.toml"
  cni_config >"$node_dir/cni/net.d/10-pfa-e2e.conflist"
  kubelet_config >"$node_dir/kubelet/config.yaml"
  kube_proxy_config >"$node_dir/kube-proxy.yaml"
  # containerd finds containerd-shim-runc-v2 on its PATH.
  background containerd env PATH="$node_bin:$PATH" "$node_bin/containerd" --config "$node_dir/containerd/config.toml"
  wait_for 30 "containerd's socket" "$node_bin/ctr" --address "$containerd_sock" version
  "$node_bin/ctr" --address "$containerd_sock" -n k8s.io images import --local "$node_bin/pause.tar" \
    >"$work/logs/ctr-import-pause.log" 2>&1 || fail "ctr images import pause.tar: $(cat "$work/logs/ctr-import-pause.log")"
  local images
  images=$("$node_bin/ctr" --address "$containerd_sock" -n k8s.io images ls -q 2>/dev/null)
  grep -qxF "$pause_image" <<<"$images" || fail "the pause image $pause_image is not in containerd after the import: $images"
  log "TIMING containerd up, pause image imported in $(elapsed "$started") s"
  background kube-proxy "$node_bin/kube-proxy" --config "$node_dir/kube-proxy.yaml"
  background kubelet "$node_bin/kubelet" --config "$node_dir/kubelet/config.yaml" \
    --kubeconfig "$work/kubelet.kubeconfig" --root-dir "$node_dir/kubelet" \
    --hostname-override "$node_name" --node-ip "$ns_ip" --v=2
  local kubelet=${pids[-1]} deadline=$((SECONDS + 60))
  until node_ready; do
    kill -0 "$kubelet" 2>/dev/null || { node_logs_tail >&2; fail "the kubelet exited: $(grep -E '^E[0-9]' "$work/logs/kubelet.log" | tail -n 1)"; }
    [ $SECONDS -lt $deadline ] || { node_logs_tail >&2; fail "node $node_name is not Ready 60 s after the kubelet started"; }
    sleep 0.5
  done
  ready_at=$(elapsed "$started")
  log "PASS node $node_name Ready (kubelet $("$node_bin/kubelet" --version | cut -d' ' -f2), $("$node_bin/containerd" --version | cut -d' ' -f2,3), cgroup v1)"
  log "TIMING node Ready in $ready_at s (containerd start to the Ready condition)"
  start_cluster_dns
}

# pod_memory NAMESPACE POD: from the pod's memory cgroup, its peak (cgroup v1:
# memory.max_usage_in_bytes, which counts page cache too), its anonymous
# memory now (total_rss) and its limit; and the sum of its processes' peak
# resident sets (VmHWM, the pause process's among them), which counts the
# binary's mapped pages wherever they were charged.
pod_memory() {
  local uid cgroup hwm
  uid=$(kc -n "$1" get pod "$2" -o jsonpath='{.metadata.uid}')
  cgroup=$(find "/sys/fs/cgroup/memory/$node_cgroup" -type d -name "pod$uid" | head -n 1)
  [ -n "$cgroup" ] || fail "no memory cgroup for pod $1/$2 under /sys/fs/cgroup/memory/$node_cgroup"
  hwm=$(find "$cgroup" -name cgroup.procs -exec cat {} + | while read -r pid; do
    awk '/^VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null
  done | awk '{ kib += $1 } END { print int(kib / 1024) }')
  echo "cgroup peak $(($(cat "$cgroup/memory.max_usage_in_bytes") / 1048576)) MiB with page cache," \
    "anonymous now $(awk '$1 == "total_rss" { print int($2 / 1048576) }' "$cgroup/memory.stat") MiB," \
    "processes' peak RSS $hwm MiB, limit $(($(cat "$cgroup/memory.limit_in_bytes") / 1048576)) MiB"
}

# node_import ARCHIVE: an OCI archive into containerd's k8s.io namespace,
# where the kubelet finds its images (named by the archive's index).
node_import() {
  local log_file
  log_file=$work/logs/ctr-import-$(basename "$1" .tar).log
  "$node_bin/ctr" --address "$containerd_sock" -n k8s.io images import --local "$1" >"$log_file" 2>&1 ||
    fail "ctr images import $1: $(cat "$log_file")"
  log "imported $(grep -o '^unpacking [^ ]*' "$log_file" | cut -d' ' -f2) from $1"
}

# start_cluster_dns: CoreDNS as kubeadm deploys it (kube-system: its
# ServiceAccount and ClusterRole, the Corefile in a ConfigMap, a Deployment,
# the kube-dns Service at $cluster_dns), from the image obtain-node.sh built,
# with no forward plugin: nothing upstream is reachable from the namespace.
# Returns once it is Ready.
start_cluster_dns() {
  local started image
  started=$(now)
  image=$(cat "$node_bin/coredns.name")
  node_import "$node_bin/coredns.tar"
  kc apply -f - >"$work/logs/apply-coredns.log" 2>&1 <<EOF || fail "applying CoreDNS: $(cat "$work/logs/apply-coredns.log")"
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:coredns}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: system:coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:coredns}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 5s
        }
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        loop
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      priorityClassName: system-cluster-critical
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: coredns
        image: $image
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 1
        livenessProbe:
          httpGet: {path: /health, port: 8080}
        resources:
          requests: {cpu: 10m, memory: 32Mi}
          limits: {memory: 170Mi}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $cluster_dns
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
EOF
  if ! kc -n kube-system rollout status deployment/coredns --timeout=60s >"$work/logs/rollout-coredns.log" 2>&1; then
    kc -n kube-system describe pods -l k8s-app=kube-dns >&2 || true
    node_logs_tail >&2
    fail "CoreDNS did not turn Ready within 60 s: $(tail -n 2 "$work/logs/rollout-coredns.log")"
  fi
  log "PASS CoreDNS ($image) Ready behind the kube-dns Service $cluster_dns in $(elapsed "$started") s"
}

# node_cleanup: the kubelet first (it would restart containers), then
# containerd, then every process left in the node's cgroups (the pods) and the
# shims (by the containerd address they were started with), the mounts under
# $node_dir, and the cgroups.
node_cleanup() {
  local pid name i
  for name in kubelet kube-proxy containerd; do
    for ((i = 0; i < ${#pids[@]}; i++)); do
      [ "$(tr '\0' ' ' 2>/dev/null <"/proc/${pids[i]}/cmdline" | awk '{print $1}')" = "$node_bin/$name" ] && stop "${pids[i]}"
    done
  done
  # The shims outlive containerd: those started by this node's containerd.
  local shim
  shim=$(readlink -f "$node_bin/containerd-shim-runc-v2")
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$shim" ] &&
      tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -qxF -- "$containerd_sock"; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  if [ -d "/sys/fs/cgroup/memory/$node_cgroup" ]; then
    find "/sys/fs/cgroup/memory/$node_cgroup" -name cgroup.procs -exec cat {} + | while read -r pid; do
      kill -9 "$pid" 2>/dev/null || true
    done
  fi
  sleep 0.5
  # Deepest first.
  awk -v d="$node_dir" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    find /sys/fs/cgroup/*/"$node_cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
    compgen -G "/sys/fs/cgroup/*/$node_cgroup" >/dev/null || return 0
    sleep 0.5
  done
  log "could not remove the node's cgroups: $(compgen -G "/sys/fs/cgroup/*/$node_cgroup" | tr '\n' ' ')"
}
