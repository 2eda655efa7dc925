#!/usr/bin/env bash
# Obtains kube-apiserver, kube-controller-manager, kubectl and etcd for the
# end-to-end test, built from the Go module proxy, and prints the directory
# that holds all four.
#
# Kubernetes comes from k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3.
# Neither can be built with `go install module@version`: k8s.io/kubernetes
# points its k8s.io/* staging modules at ./staging by `replace` lines, which do
# not apply to a dependency. So each is built through a small wrapper module,
# generated here into the cache, that requires it and, for Kubernetes, replaces
# every staging module with the published v0.Y.Z of release v1.Y.Z.
#
# Everything lives under $CACHE_DIR (outside the checkout): the Go module and
# build caches, and the binaries, keyed by version and reused when present.
#
#   E2E_KUBERNETES_VERSION  (default below) a k8s.io/kubernetes release
#   E2E_ETCD_VERSION        (default below) a go.etcd.io/etcd/server/v3 release
#
# stdout carries only the directory. Exit status 3 means a download from the
# module proxy failed, or Go is missing or too old: stdout then carries the
# error, for the caller's SKIPPED banner. Progress goes to stderr.
set -euo pipefail

# 1.35 or newer: per-HPA tolerance (HPAConfigurableTolerance) is on by default.
KUBERNETES_VERSION=${E2E_KUBERNETES_VERSION:-v1.37.2}
# The etcd minor version that this Kubernetes release's go.mod requires.
ETCD_VERSION=${E2E_ETCD_VERSION:-v3.7.3}
CACHE_DIR=${PRAVEGA_AUTOSCALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pravega-flink-autoscaler}
K8S_DIR=$CACHE_DIR/kubernetes/$KUBERNETES_VERSION
ETCD_DIR=$CACHE_DIR/etcd/$ETCD_VERSION
BIN_DIR=$CACHE_DIR/bin/kubernetes-$KUBERNETES_VERSION-etcd-$ETCD_VERSION

log() { printf 'obtain-kubernetes: %s\n' "$*" >&2; }
# Ends with status 3 and the reason on stdout: the caller skips the test.
cannot_download() { printf '%s\n' "$*"; exit 3; }

export GOMODCACHE=$CACHE_DIR/go/mod GOCACHE=$CACHE_DIR/go/build
# Never switch to another Go toolchain (the machine may not reach one) and
# ignore the caller's GOFLAGS: the flags below are the whole build, but for
# a module cache that `rm -rf` can delete.
export GOTOOLCHAIN=local GOFLAGS=-modcacherw CGO_ENABLED=0

# go_download DIR PACKAGE...: resolves and downloads every module the
# packages need (go.mod and go.sum of the wrapper are completed on the way),
# with go_build's tags (GO_BUILD_TAGS).
go_download() {
  local dir=$1 out
  shift
  if ! out=$(cd "$dir" && go list -mod=mod -deps -tags="notest${GO_BUILD_TAGS:+,$GO_BUILD_TAGS}" -f '' "$@" 2>&1); then
    cannot_download "go list -mod=mod -deps $* (in $dir) failed: $out"
  fi
}

# go_build DIR OUT_DIR LDFLAGS PACKAGE...: builds offline from what
# go_download fetched, lean (no symbol tables, no local paths). GO_BUILD_TAGS
# (comma-separated) adds build tags to notest.
go_build() {
  local dir=$1 out_dir=$2 ldflags=$3
  shift 3
  mkdir -p "$out_dir.tmp"
  (cd "$dir" && GOPROXY=off nice -n 10 go build -mod=readonly -buildvcs=false -trimpath -tags="notest${GO_BUILD_TAGS:+,$GO_BUILD_TAGS}" \
    -ldflags="-s -w $ldflags" -o "$out_dir.tmp/" "$@") >&2
  rm -rf "$out_dir"
  mv "$out_dir.tmp" "$out_dir"
}

check_go() {
  local need=$1 have
  have=$(go env GOVERSION)
  have=${have#go}
  [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" = "$need" ] ||
    cannot_download "Go $need or newer is needed to build Kubernetes and etcd; go on PATH is $have"
}

# module_info MODULE VERSION: downloads the module and sets MODULE_INFO to
# what `go mod download -json` says about it (GoMod: its go.mod, Info: the
# proxy's .info file).
module_info() {
  command -v go >/dev/null || cannot_download "Go is needed to build Kubernetes and etcd; no go on PATH"
  mkdir -p "$CACHE_DIR"
  if ! MODULE_INFO=$(cd "$CACHE_DIR" && go mod download -json "$1@$2" 2>&1); then
    # The error is a JSON string when go got as far as asking the proxy.
    local error
    error=$(json_field Error <<<"$MODULE_INFO")
    cannot_download "go mod download $1@$2 failed: $(printf '%b' "${error:-$MODULE_INFO}")"
  fi
}
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\?\$/\1/p"; }
# release_time: the release time of the module module_info downloaded, from
# its .info file (one line: {"Version":"...","Time":"..."}).
release_time() { sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(json_field Info <<<"$MODULE_INFO")"; }

# wrapper_head NAME GOMOD: the start of a wrapper's go.mod, with the go and
# godebug lines of the module it builds (they set the runtime defaults its
# binaries are released with).
wrapper_head() {
  printf 'module pravega-flink-autoscaler/%s\n\n' "$1"
  awk '$1 == "go" || $1 == "godebug" { print } /^godebug \($/, /^\)$/ { if ($1 != "godebug") print }' "$2"
  echo
}

# kubernetes_module: the wrapper module of k8s.io/kubernetes in
# $K8S_DIR/module (its go.mod regenerated, its go.sum kept), and in
# KUBERNETES_LDFLAGS what hack/lib/version.sh stamps into a release build.
# obtain-node.sh builds the kubelet, kube-proxy and kube-scheduler from it.
kubernetes_module() {
  local gomod minor pkg released
  module_info k8s.io/kubernetes "$KUBERNETES_VERSION"
  gomod=$(json_field GoMod <<<"$MODULE_INFO")
  check_go "$(awk '$1 == "go" { print $2; exit }' "$gomod")"
  minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  # A replace line per staging module, read from k8s.io/kubernetes's go.mod.
  mkdir -p "$K8S_DIR/module"
  {
    wrapper_head e2e-kubernetes "$gomod"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    awk -v v="v0.$minor.${KUBERNETES_VERSION##*.}" \
      '$2 == "=>" && $3 ~ /^\.\/staging\/src\// { printf "\t%s => %s %s\n", $1, $1, v }' "$gomod"
    echo ")"
  } >"$K8S_DIR/module/go.mod"
  released=$(release_time)
  KUBERNETES_LDFLAGS=
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    KUBERNETES_LDFLAGS+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    KUBERNETES_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$released"
  done
}

# build_from_kubernetes OUT_DIR COMMAND...: Kubernetes' cmd/COMMANDs built
# from the wrapper module into OUT_DIR, checked by the first one's --version.
build_from_kubernetes() {
  local out_dir=$1 out command pkgs=()
  shift
  local names="$*"
  for command in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$command"); done
  kubernetes_module
  log "downloading the modules of $names $KUBERNETES_VERSION"
  go_download "$K8S_DIR/module" "${pkgs[@]}"
  log "building $names $KUBERNETES_VERSION (once per version; cached in $CACHE_DIR)"
  local started=$SECONDS
  go_build "$K8S_DIR/module" "$out_dir" "$KUBERNETES_LDFLAGS" "${pkgs[@]}"
  log "built $names in $((SECONDS - started)) s"
  out=$("$out_dir/$1" --version)
  [ "$out" = "Kubernetes $KUBERNETES_VERSION" ] || { log "$1 --version says '$out'"; exit 1; }
}

build_kubernetes() { build_from_kubernetes "$K8S_DIR/bin" kube-apiserver kube-controller-manager kubectl; }

# wrapper_module DIR NAME MODULE VERSION: a wrapper module in DIR that
# requires MODULE at VERSION, once Go is known to be new enough for it.
wrapper_module() {
  local dir=$1 name=$2 pkg=$3 version=$4 gomod
  module_info "$pkg" "$version"
  gomod=$(json_field GoMod <<<"$MODULE_INFO")
  check_go "$(awk '$1 == "go" { print $2; exit }' "$gomod")"
  mkdir -p "$dir"
  { wrapper_head "$name" "$gomod"; echo "require $pkg $version"; } >"$dir/go.mod"
}

build_etcd() {
  local module=$ETCD_DIR/module
  wrapper_module "$module" e2e-etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  log "downloading the modules of go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  go_download "$module" go.etcd.io/etcd/server/v3
  log "building etcd $ETCD_VERSION (once per version; cached in $CACHE_DIR)"
  local started=$SECONDS
  go_build "$module" "$ETCD_DIR/bin" "" go.etcd.io/etcd/server/v3
  mv "$ETCD_DIR/bin/server" "$ETCD_DIR/bin/etcd" # go names it after the path
  "$ETCD_DIR/bin/etcd" --version >&2
  log "built etcd in $((SECONDS - started)) s"
}

main() {
  [ -x "$K8S_DIR/bin/kube-apiserver" ] || build_kubernetes
  [ -x "$ETCD_DIR/bin/etcd" ] || build_etcd
  mkdir -p "$BIN_DIR"
  local b
  for b in kube-apiserver kube-controller-manager kubectl; do ln -sfn "$K8S_DIR/bin/$b" "$BIN_DIR/$b"; done
  ln -sfn "$ETCD_DIR/bin/etcd" "$BIN_DIR/etcd"
  echo "$BIN_DIR"
}

# Sourced by obtain-node.sh for its functions; run, it obtains the control plane.
[ "${BASH_SOURCE[0]}" != "$0" ] || main
