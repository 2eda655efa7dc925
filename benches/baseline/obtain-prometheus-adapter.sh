#!/usr/bin/env bash
# Obtains prometheus-adapter (sigs.k8s.io/prometheus-adapter, cmd/adapter),
# built with `go build` from the Go module proxy, and prints its path.
#
# `go install sigs.k8s.io/prometheus-adapter/cmd/adapter@VERSION` does not
# work through a proxy that refuses the module's version list (@v/list): go
# install reads it for deprecation notices. So the binary is built through a
# small wrapper module, generated into the cache, that requires the release;
# the release's go.mod has no replace lines, so its dependency versions apply.
#
# Everything lives under $CACHE_DIR (outside the checkout), keyed by version
# and reused when present.
#
#   BASELINE_PROMETHEUS_ADAPTER_VERSION  (default below)
#
# stdout carries only the path. Exit status 3 means a download from the
# module proxy failed or Go is missing: stdout then carries the error, for the
# caller's SKIPPED banner. Progress goes to stderr.
set -euo pipefail

VERSION=${BASELINE_PROMETHEUS_ADAPTER_VERSION:-v0.12.0}
CACHE_DIR=${PRAVEGA_AUTOSCALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pravega-flink-autoscaler}
DIR=$CACHE_DIR/prometheus-adapter/$VERSION
BIN=$DIR/bin/prometheus-adapter

log() { printf 'obtain-prometheus-adapter: %s\n' "$*" >&2; }
cannot_download() { printf '%s\n' "$*"; exit 3; }

export GOMODCACHE=$CACHE_DIR/go/mod GOCACHE=$CACHE_DIR/go/build
export GOTOOLCHAIN=local GOFLAGS='' CGO_ENABLED=0

build() {
  command -v go >/dev/null || cannot_download "Go is needed to build prometheus-adapter; no go on PATH"
  local info gomod out
  mkdir -p "$DIR/module"
  if ! info=$(cd "$DIR" && go mod download -json "sigs.k8s.io/prometheus-adapter@$VERSION" 2>&1); then
    cannot_download "go mod download sigs.k8s.io/prometheus-adapter@$VERSION failed: $info"
  fi
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\?$/\1/p' <<<"$info")
  {
    printf 'module pravega-flink-autoscaler/baseline-prometheus-adapter\n\n'
    awk '$1 == "go" { print; exit }' "$gomod"
    printf '\nrequire sigs.k8s.io/prometheus-adapter %s\n' "$VERSION"
  } >"$DIR/module/go.mod"
  log "downloading the modules of sigs.k8s.io/prometheus-adapter $VERSION"
  if ! out=$(cd "$DIR/module" && go list -mod=mod -deps -f '' sigs.k8s.io/prometheus-adapter/cmd/adapter 2>&1); then
    cannot_download "go list -mod=mod -deps sigs.k8s.io/prometheus-adapter/cmd/adapter failed: $out"
  fi
  log "building prometheus-adapter $VERSION (once per version; cached in $CACHE_DIR)"
  local started=$SECONDS
  mkdir -p "$DIR/bin"
  # The Makefile of the release stamps the version into component-base.
  (cd "$DIR/module" && GOPROXY=off nice -n 10 go build -mod=readonly -buildvcs=false -trimpath \
    -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$VERSION" \
    -o "$BIN.tmp" sigs.k8s.io/prometheus-adapter/cmd/adapter) >&2
  mv "$BIN.tmp" "$BIN"
  log "built in $((SECONDS - started)) s"
}

[ -x "$BIN" ] || build
echo "$BIN"
