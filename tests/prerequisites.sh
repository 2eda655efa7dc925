#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, from Debian's
# packages, when it is missing: openssl (test PKI and gen-serving-cert.sh),
# python3 (fake controllers in the e2e test) and its yaml module (the chart
# tests), iproute2 (network namespaces), libfaketime (tests/clock_step.sh),
# kubectl (the README's prerequisite; Debian's kubernetes-client as
# fallback), DejaVu Sans (the loop's chart, make loop-chart), and buildah
# (make images: the images built from scratch with no registry and no
# daemon). pravega-client's build brings its own protoc on x86_64/aarch64.
# The e2e node (tests/e2e/node.sh) needs the CNI plugins (bridge, host-local,
# portmap, loopback in /usr/lib/cni), iptables for kube-proxy, and
# libseccomp's headers for runc's seccomp support (obtain-node.sh builds runc
# with cgo; the pods' RuntimeDefault seccomp profile needs it).
set -euo pipefail

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need openssl openssl
need python3 python3
python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
need ip iproute2
need kubectl kubernetes-client
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || missing+=(libfaketime)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
need iptables iptables
[ -f /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
need buildah buildah
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "prerequisites: missing ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "prerequisites: installing ${missing[*]}" >&2
apt-get update -o DPkg::Lock::Timeout=300 -qq >&2
# The lock timeout waits out another apt-get (a concurrent install) instead of failing.
DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=300 -y -qq "${missing[@]}" >&2
