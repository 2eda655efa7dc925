#!/usr/bin/env bash
# Obtains helm for the chart tests, built from the Go module proxy
# (`go install helm.sh/helm/v3/cmd/helm@VERSION`: helm's go.mod has no replace
# lines, so it builds as a plain module), and prints the binary's path.
#
# Everything lives under $CACHE_DIR (outside the checkout), shared with
# tests/e2e/obtain-kubernetes.sh: the Go module and build caches, and the
# binary, keyed by version and reused when present.
#
#   CHART_HELM_VERSION  (default below) a helm.sh/helm/v3 release
#
# stdout carries only the path. Exit status 3 means a download from the
# module proxy failed, or Go is missing or too old: stdout then carries the
# error, for the caller's SKIPPED banner. Progress goes to stderr.
set -euo pipefail

HELM_VERSION=${CHART_HELM_VERSION:-v3.22.1}
CACHE_DIR=${PRAVEGA_AUTOSCALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pravega-flink-autoscaler}
HELM_DIR=$CACHE_DIR/helm/$HELM_VERSION

log() { printf 'obtain-helm: %s\n' "$*" >&2; }
cannot_download() { printf '%s\n' "$*"; exit 3; }

export GOMODCACHE=$CACHE_DIR/go/mod GOCACHE=$CACHE_DIR/go/build
# The installed Go only, and none of the caller's GOFLAGS (see obtain-kubernetes.sh).
export GOTOOLCHAIN=local GOFLAGS=-modcacherw CGO_ENABLED=0

if [ ! -x "$HELM_DIR/bin/helm" ]; then
  command -v go >/dev/null || cannot_download "Go is needed to build helm; no go on PATH"
  mkdir -p "$HELM_DIR"
  log "downloading helm.sh/helm/v3 $HELM_VERSION and its modules"
  if ! out=$(cd "$HELM_DIR" && go mod download -json helm.sh/helm/v3@"$HELM_VERSION" 2>&1); then
    cannot_download "go mod download helm.sh/helm/v3@$HELM_VERSION failed: $out"
  fi
  # The Kubernetes version helm assumes without a cluster (helm template, lint):
  # that of its client-go, v0.Y.Z -> 1.Y, as helm's own Makefile stamps it.
  gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\?$/\1/p' <<<"$out")
  minor=$(awk '$1 == "k8s.io/client-go" { split($2, v, "."); print v[2]; exit }' "$gomod")
  [ -n "$minor" ] || { log "no k8s.io/client-go in $gomod"; exit 1; }
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  log "building helm $HELM_VERSION (once per version; cached in $CACHE_DIR)"
  started=$SECONDS
  rm -rf "${HELM_DIR:?}/bin.tmp"
  # go install resolves the remaining modules itself; a failure there that is
  # not a compile error is a download failure.
  if ! out=$(cd "$HELM_DIR" && GOBIN=$HELM_DIR/bin.tmp nice -n 10 go install -trimpath \
    -ldflags="$ldflags" \
    helm.sh/helm/v3/cmd/helm@"$HELM_VERSION" 2>&1); then
    grep -qE '\.go:[0-9]+:[0-9]+: ' <<<"$out" && { log "$out"; exit 1; }
    cannot_download "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed: $out"
  fi
  rm -rf "${HELM_DIR:?}/bin"
  mv "$HELM_DIR/bin.tmp" "$HELM_DIR/bin"
  log "built helm in $((SECONDS - started)) s"
fi
echo "$HELM_DIR/bin/helm"
