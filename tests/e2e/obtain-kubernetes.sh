#!/usr/bin/env bash
# Obtains kube-apiserver, kube-controller-manager, etcd and kubectl for the
# end-to-end test and prints the directory that holds all four.
#
# Order of preference:
#   1. $KUBEBUILDER_ASSETS, when it holds kube-apiserver and etcd
#      (kube-controller-manager may sit next to them or be built as below);
#   2. a previous build cached under $CACHE_DIR (outside the checkout);
#   3. a build from Debian's `kubernetes` source package (1.20.2, vendored)
#      with Debian's golang-go: ~5-10 min on 2 cores, done once per machine.
# etcd comes from Debian's etcd-server, kubectl from PATH or Debian.
#
# Progress goes to stderr; stdout carries only the directory.
set -euo pipefail

CACHE_DIR=${PRAVEGA_AUTOSCALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pravega-flink-autoscaler}
BIN_DIR=$CACHE_DIR/kubernetes/bin
log() { printf 'obtain-kubernetes: %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

ensure_deb_src() {
  if ! apt-cache showsrc kubernetes >/dev/null 2>&1 || [ -z "$(apt-cache showsrc kubernetes 2>/dev/null)" ]; then
    log "adding a deb-src entry for bookworm"
    cat > /etc/apt/sources.list.d/pravega-autoscaler-deb-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq >&2
  fi
}

build_from_debian_source() {
  local want=("$@")
  apt_install golang-go rsync jq dpkg-dev make
  ensure_deb_src
  local src_root=$CACHE_DIR/kubernetes/src
  mkdir -p "$src_root"
  local tree
  tree=$(find "$src_root" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  if [ -z "$tree" ]; then
    log "fetching Debian's kubernetes source package"
    (cd "$src_root" && apt-get source -qq kubernetes >&2)
    tree=$(find "$src_root" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  fi
  # The Kubernetes 1.20 build wants the tree at $GOPATH/src/k8s.io/kubernetes.
  local gopath=$CACHE_DIR/kubernetes/gopath
  mkdir -p "$gopath/src/k8s.io"
  ln -sfn "$tree" "$gopath/src/k8s.io/kubernetes"
  local what=""
  for w in "${want[@]}"; do what+="cmd/$w "; done
  log "building ${want[*]} (once per machine; cached in $CACHE_DIR)"
  local started=$SECONDS
  (
    cd "$gopath/src/k8s.io/kubernetes"
    export GOPATH=$gopath GO111MODULE=off GOFLAGS=-mod=vendor GOCACHE=$CACHE_DIR/kubernetes/gocache
    export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean
    make WHAT="${what% }" >&2
  )
  mkdir -p "$BIN_DIR"
  for w in "${want[@]}"; do
    install -m 0755 "$gopath/src/k8s.io/kubernetes/_output/local/bin/linux/$(go env GOARCH)/$w" "$BIN_DIR/$w"
  done
  log "built in $((SECONDS - started)) s"
}

main() {
  mkdir -p "$BIN_DIR"
  local assets=${KUBEBUILDER_ASSETS:-}
  for b in kube-apiserver kube-controller-manager etcd kubectl; do
    if [ -n "$assets" ] && [ -x "$assets/$b" ] && [ ! -x "$BIN_DIR/$b" ]; then
      ln -sfn "$assets/$b" "$BIN_DIR/$b"
    fi
  done
  local to_build=()
  for b in kube-apiserver kube-controller-manager; do
    [ -x "$BIN_DIR/$b" ] || to_build+=("$b")
  done
  [ ${#to_build[@]} -eq 0 ] || build_from_debian_source "${to_build[@]}"
  if [ ! -x "$BIN_DIR/etcd" ]; then
    apt_install etcd-server
    ln -sfn "$(command -v etcd || echo /usr/bin/etcd)" "$BIN_DIR/etcd"
  fi
  if [ ! -x "$BIN_DIR/kubectl" ]; then
    command -v kubectl >/dev/null || apt_install kubernetes-client
    ln -sfn "$(command -v kubectl)" "$BIN_DIR/kubectl"
  fi
  echo "$BIN_DIR"
}

main
