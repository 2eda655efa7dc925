#!/usr/bin/env bash
# Obtains KEDA's operator (keda) and metrics server (keda-adapter), built from
# the Go module proxy, and prints the directory that holds both, with KEDA's
# CRDs from the same module under crd/.
#
# github.com/kedacore/keda/v2 pins k8s.io/* and controller-runtime by
# `replace` lines, which do not apply to a dependency; so it is built through
# a small wrapper module, generated here into the cache, that requires KEDA
# and copies its replace block.
#
# Everything lives under $CACHE_DIR (outside the checkout), keyed by version
# and reused when present; the Go module and build caches are those of
# tests/e2e/obtain-kubernetes.sh.
#
#   KEDA_VERSION  (default below) a github.com/kedacore/keda/v2 release
#
# stdout carries only the directory. Exit status 3 means a download from the
# module proxy failed, or Go is missing or too old: stdout then carries the
# error, for the caller's SKIPPED banner. Progress goes to stderr.
set -euo pipefail

# v2.21 needs Go 1.27.4.
KEDA_VERSION=${KEDA_VERSION:-v2.20.2}
CACHE_DIR=${PRAVEGA_AUTOSCALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pravega-flink-autoscaler}
KEDA_DIR=$CACHE_DIR/keda/$KEDA_VERSION
MODULE=github.com/kedacore/keda/v2

log() { printf 'obtain-keda: %s\n' "$*" >&2; }
cannot_download() { printf '%s\n' "$*"; exit 3; }

export GOMODCACHE=$CACHE_DIR/go/mod GOCACHE=$CACHE_DIR/go/build
export GOTOOLCHAIN=local GOFLAGS=-modcacherw CGO_ENABLED=0

json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\?\$/\1/p"; }

build_keda() {
  local wrapper=$KEDA_DIR/module info gomod dir need have out
  command -v go >/dev/null || cannot_download "Go is needed to build KEDA; no go on PATH"
  mkdir -p "$CACHE_DIR"
  if ! info=$(cd "$CACHE_DIR" && go mod download -json "$MODULE@$KEDA_VERSION" 2>&1); then
    local error
    error=$(json_field Error <<<"$info")
    cannot_download "go mod download $MODULE@$KEDA_VERSION failed: $(printf '%b' "${error:-$info}")"
  fi
  gomod=$(json_field GoMod <<<"$info")
  dir=$(json_field Dir <<<"$info")
  need=$(awk '$1 == "go" { print $2; exit }' "$gomod")
  have=$(go env GOVERSION)
  have=${have#go}
  [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" = "$need" ] ||
    cannot_download "Go $need or newer is needed to build KEDA $KEDA_VERSION; go on PATH is $have"
  mkdir -p "$wrapper"
  {
    printf 'module pravega-flink-autoscaler/keda\n\n'
    awk '$1 == "go" || $1 == "godebug" { print }' "$gomod"
    printf '\nrequire %s %s\n\n' "$MODULE" "$KEDA_VERSION"
    # KEDA's own replace block, verbatim.
    awk '/^replace \($/, /^\)$/' "$gomod"
  } >"$wrapper/go.mod"
  local pkgs=("$MODULE/cmd/operator" "$MODULE/cmd/adapter")
  log "downloading the modules of $MODULE $KEDA_VERSION"
  if ! out=$(cd "$wrapper" && go list -mod=mod -deps -f '' "${pkgs[@]}" 2>&1); then
    cannot_download "go list -mod=mod -deps ${pkgs[*]} failed: $out"
  fi
  log "building keda and keda-adapter $KEDA_VERSION (once per version; cached in $CACHE_DIR)"
  local started=$SECONDS v=$MODULE/version
  rm -rf "$KEDA_DIR/bin.tmp"
  mkdir -p "$KEDA_DIR/bin.tmp"
  (cd "$wrapper" && GOPROXY=off nice -n 10 go build -mod=readonly -buildvcs=false -trimpath \
    -ldflags="-s -w -X=$v.Version=${KEDA_VERSION#v} -X=$v.GitCommit=$KEDA_VERSION" \
    -o "$KEDA_DIR/bin.tmp/keda" "$MODULE/cmd/operator") >&2
  (cd "$wrapper" && GOPROXY=off nice -n 10 go build -mod=readonly -buildvcs=false -trimpath \
    -ldflags="-s -w -X=$v.Version=${KEDA_VERSION#v} -X=$v.GitCommit=$KEDA_VERSION" \
    -o "$KEDA_DIR/bin.tmp/keda-adapter" "$MODULE/cmd/adapter") >&2
  mkdir -p "$KEDA_DIR/bin.tmp/crd"
  cp "$dir"/config/crd/bases/*.yaml "$KEDA_DIR/bin.tmp/crd/"
  chmod -R u+w "$KEDA_DIR/bin.tmp/crd"
  rm -rf "${KEDA_DIR:?}/bin"
  mv "$KEDA_DIR/bin.tmp" "$KEDA_DIR/bin"
  log "built KEDA in $((SECONDS - started)) s"
}

if [ ! -x "$KEDA_DIR/bin/keda" ] || [ ! -x "$KEDA_DIR/bin/keda-adapter" ]; then
  build_keda
fi
echo "$KEDA_DIR/bin"
