#!/usr/bin/env bash
# Obtains what a node of the end-to-end control plane runs, built from the Go
# module proxy and this machine's C compiler, and prints the directory that
# holds it all:
#   kubelet, kube-proxy,       k8s.io/kubernetes, from the wrapper module that
#   kube-scheduler             obtain-kubernetes.sh builds the control plane
#                              from (same version, same build cache: only
#                              what the control plane does not share is built;
#                              the scheduler binds pods to the node)
#   containerd, ctr,           github.com/containerd/containerd/v2 (Kubernetes
#   containerd-shim-runc-v2    after 1.35 needs containerd 2); no cgo, so no
#                              btrfs snapshotter (the node uses overlayfs)
#   runc                       github.com/opencontainers/runc, with cgo (its
#                              nsenter is C) and the seccomp tag, linked to
#                              Debian's libseccomp (libseccomp-dev to build,
#                              libseccomp2 to run): the project's Deployments
#                              ask for the RuntimeDefault seccomp profile,
#                              which a runc without seccomp refuses to run.
#                              Without the libpathrs tag (a Rust library
#                              Debian does not ship): runc's pure-Go path
#                              resolution instead
#   coredns.tar                the cluster DNS, as kubeadm runs it: CoreDNS
#                              (github.com/coredns/coredns, no cgo, static)
#                              in an image of its own from scratch (USER
#                              65532, ENTRYPOINT /coredns), named
#                              $COREDNS_IMAGE:<version> (in coredns.name): the
#                              project's workload reaches Pravega by Service
#                              names
#   pause.tar                  the pause image as an OCI archive: pause.c from
#                              Kubernetes' build/pause (in the k8s.io/kubernetes
#                              module), compiled static as its Makefile does,
#                              in an image from scratch as its Dockerfile
#                              makes it (USER 65535, ENTRYPOINT /pause), named
#                              $PAUSE_IMAGE:<its tag> (in pause.name)
#
# Neither containerd nor runc has `replace` lines in its go.mod, but each is
# built through a wrapper module all the same, as obtain-kubernetes.sh builds
# etcd: the wrapper carries the module's go and godebug lines.
# Everything lives under the same cache directory as obtain-kubernetes.sh's,
# keyed by version and reused when present.
#
#   E2E_KUBERNETES_VERSION  as for obtain-kubernetes.sh
#   E2E_CONTAINERD_VERSION  (default below) a github.com/containerd/containerd/v2 release
#   E2E_RUNC_VERSION        (default below) a github.com/opencontainers/runc release
#   E2E_COREDNS_VERSION     (default below) a github.com/coredns/coredns release
#
# The CNI plugins (bridge, host-local, portmap, loopback) come from Debian's
# containernetworking-plugins, installed by tests/prerequisites.sh.
#
# stdout carries only the directory. Exit status 3 means a download from the
# module proxy failed, or Go is missing or too old: stdout then carries the
# error, for the caller's SKIPPED banner. Progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/e2e/obtain-kubernetes.sh
source "$here/obtain-kubernetes.sh"
log() { printf 'obtain-node: %s\n' "$*" >&2; }

CONTAINERD_VERSION=${E2E_CONTAINERD_VERSION:-v2.4.2}
RUNC_VERSION=${E2E_RUNC_VERSION:-v1.5.3}
CONTAINERD_DIR=$CACHE_DIR/containerd/$CONTAINERD_VERSION
RUNC_DIR=$CACHE_DIR/runc/$RUNC_VERSION
COREDNS_VERSION=${E2E_COREDNS_VERSION:-v1.15.0}
COREDNS_DIR=$CACHE_DIR/coredns/$COREDNS_VERSION
COREDNS_IMAGE=localhost/pravega-flink-autoscaler/coredns
PAUSE_DIR=$K8S_DIR/pause
PAUSE_IMAGE=localhost/pravega-flink-autoscaler/pause
NODE_BIN_DIR=$CACHE_DIR/bin/node-kubernetes-$KUBERNETES_VERSION-containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION

build_kubelet() { build_from_kubernetes "$K8S_DIR/node-bin" kubelet kube-proxy kube-scheduler; }

build_containerd() {
  local module=$CONTAINERD_DIR/module ldflags pkg=github.com/containerd/containerd/v2
  wrapper_module "$module" e2e-containerd "$pkg" "$CONTAINERD_VERSION"
  log "downloading the modules of $pkg $CONTAINERD_VERSION"
  GO_BUILD_TAGS=urfave_cli_no_docs,no_grpc go_download "$module" "$pkg/cmd/containerd" "$pkg/cmd/ctr" "$pkg/cmd/containerd-shim-runc-v2"
  # What containerd's Makefile stamps and tags; the shim without its gRPC
  # server (ttrpc only), as the Makefile builds it.
  ldflags="-X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Package=$pkg"
  log "building containerd, ctr and containerd-shim-runc-v2 $CONTAINERD_VERSION (once per version; cached in $CACHE_DIR)"
  local started=$SECONDS
  GO_BUILD_TAGS=urfave_cli_no_docs go_build "$module" "$CONTAINERD_DIR/bin" "$ldflags" "$pkg/cmd/containerd" "$pkg/cmd/ctr"
  GO_BUILD_TAGS=urfave_cli_no_docs,no_grpc go_build "$module" "$CONTAINERD_DIR/shim" "$ldflags" "$pkg/cmd/containerd-shim-runc-v2"
  mv "$CONTAINERD_DIR/shim/containerd-shim-runc-v2" "$CONTAINERD_DIR/bin/"
  rmdir "$CONTAINERD_DIR/shim"
  "$CONTAINERD_DIR/bin/containerd" --version >&2
  log "built containerd in $((SECONDS - started)) s"
}

build_runc() {
  local module=$RUNC_DIR/module pkg=github.com/opencontainers/runc
  [ -f /usr/include/seccomp.h ] ||
    { log "runc's seccomp support needs libseccomp's headers (Debian: libseccomp-dev; tests/prerequisites.sh installs it)"; exit 1; }
  wrapper_module "$module" e2e-runc "$pkg" "$RUNC_VERSION"
  local CGO_ENABLED=1 GO_BUILD_TAGS=seccomp,urfave_cli_no_docs
  export CGO_ENABLED GO_BUILD_TAGS
  log "downloading the modules of $pkg $RUNC_VERSION"
  go_download "$module" "$pkg"
  log "building runc $RUNC_VERSION (once per version; cached in $CACHE_DIR)"
  local started=$SECONDS
  go_build "$module" "$RUNC_DIR/bin" "-X main.gitCommit=$RUNC_VERSION" "$pkg"
  "$RUNC_DIR/bin/runc" --version >&2
  "$RUNC_DIR/bin/runc" --version | grep -q '^libseccomp: ' || { log "runc was built without seccomp"; exit 1; }
  log "built runc in $((SECONDS - started)) s"
}

build_coredns() {
  local module=$COREDNS_DIR/module pkg=github.com/coredns/coredns rootfs
  wrapper_module "$module" e2e-coredns "$pkg" "$COREDNS_VERSION"
  log "downloading the modules of $pkg $COREDNS_VERSION"
  go_download "$module" "$pkg"
  log "building CoreDNS $COREDNS_VERSION (once per version; cached in $CACHE_DIR)"
  local started=$SECONDS
  go_build "$module" "$COREDNS_DIR/bin" "-X $pkg/coremain.GitCommit=$COREDNS_VERSION" "$pkg"
  "$COREDNS_DIR/bin/coredns" -version >&2
  rootfs=$COREDNS_DIR/rootfs
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  cp "$COREDNS_DIR/bin/coredns" "$rootfs/coredns"
  python3 "$here/oci-image.py" --name "$COREDNS_IMAGE:${COREDNS_VERSION#v}" --user 65532:65532 --rootfs "$rootfs" \
    --out "$COREDNS_DIR/coredns.tar" -- /coredns >&2
  rm -rf "$rootfs"
  echo "$COREDNS_IMAGE:${COREDNS_VERSION#v}" >"$COREDNS_DIR/coredns.name"
  log "built CoreDNS and its image in $((SECONDS - started)) s"
}

# pause_tag: the TAG of build/pause/Makefile in this Kubernetes release.
pause_tag() { awk '$1 == "TAG" && $2 == "?=" { print $3; exit }' "$1/Makefile"; }

build_pause() {
  local src tag rootfs
  module_info k8s.io/kubernetes "$KUBERNETES_VERSION"
  src=$(json_field Dir <<<"$MODULE_INFO")/build/pause
  tag=$(pause_tag "$src")
  rootfs=$PAUSE_DIR/rootfs
  rm -rf "$PAUSE_DIR"
  mkdir -p "$rootfs"
  command -v gcc >/dev/null || { log "the pause image needs gcc (and libc6-dev's static libc)"; exit 1; }
  gcc -Os -Wall -Werror -static "-DVERSION=v$tag-$KUBERNETES_VERSION" -o "$rootfs/pause" "$src/linux/pause.c"
  strip "$rootfs/pause"
  python3 "$here/oci-image.py" --name "$PAUSE_IMAGE:$tag" --user 65535:65535 --rootfs "$rootfs" \
    --out "$PAUSE_DIR/pause.tar" -- /pause >&2
  rm -rf "$rootfs"
  echo "$PAUSE_IMAGE:$tag" >"$PAUSE_DIR/pause.name"
  log "built the pause image $PAUSE_IMAGE:$tag"
}

node_main() {
  [ -x "$K8S_DIR/node-bin/kube-scheduler" ] || build_kubelet
  [ -x "$CONTAINERD_DIR/bin/containerd-shim-runc-v2" ] || build_containerd
  [ -x "$RUNC_DIR/bin/runc" ] || build_runc
  [ -f "$PAUSE_DIR/pause.name" ] || build_pause
  [ -f "$COREDNS_DIR/coredns.name" ] || build_coredns
  mkdir -p "$NODE_BIN_DIR"
  local b
  for b in kubelet kube-proxy kube-scheduler; do ln -sfn "$K8S_DIR/node-bin/$b" "$NODE_BIN_DIR/$b"; done
  for b in containerd ctr containerd-shim-runc-v2; do ln -sfn "$CONTAINERD_DIR/bin/$b" "$NODE_BIN_DIR/$b"; done
  ln -sfn "$RUNC_DIR/bin/runc" "$NODE_BIN_DIR/runc"
  for b in pause.tar pause.name; do ln -sfn "$PAUSE_DIR/$b" "$NODE_BIN_DIR/$b"; done
  for b in coredns.tar coredns.name; do ln -sfn "$COREDNS_DIR/$b" "$NODE_BIN_DIR/$b"; done
  echo "$NODE_BIN_DIR"
}

node_main
