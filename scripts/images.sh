#!/usr/bin/env bash
# make images: the three images as OCI archives, built FROM scratch with
# buildah, with no registry and no daemon (run as root):
#
#   target/images/pravega-metrics-adapter.tar  ghcr.io/pravega-flink-autoscaler/pravega-metrics-adapter:0.1.0
#   target/images/generator.tar                ghcr.io/pravega-flink-autoscaler/generator:0.1.0
#   target/images/flink-reader.tar             ghcr.io/pravega-flink-autoscaler/flink-reader:0.1.0
#
# Each archive holds one image for this machine's platform (linux/amd64
# here), named in its index (org.opencontainers.image.ref.name) with the
# reference on its right, the one the manifests and the chart use; they set
# no imagePullPolicy, which for a tag other than :latest is IfNotPresent, so
# a node that has imported them runs the manifests as shipped:
#   ctr -n k8s.io images import target/images/generator.tar
#   podman load -i target/images/generator.tar
#
# How: the build of the three binaries (IMAGE_PROFILE), then the last stages of
# manifests/docker/Dockerfile run by `buildah bud`, with the host's binaries
# in place of its builder stage and manifests/docker/rootfs.sh's output in
# place of its rootfs stage. An archive is rebuilt only when its inputs
# changed (its binary, the root filesystem, the Dockerfile, this script, the
# reference); target/images/NAME.inputs records them.
#
# Environment: IMAGE_REPO (ghcr.io/pravega-flink-autoscaler), VERSION
# (0.1.0), CARGO (cargo), IMAGE_PROFILE (release): the Cargo profile the
# binaries are built with, release as users run them; `make test` uses dev,
# the build `cargo test` and the loop already made (target/debug), since a
# cold release build costs ~28 CPU-minutes. The dev binaries need the same
# libraries (check.py verifies), and are larger: they keep debug info.
set -euo pipefail
cd "$(dirname "$0")/.."

repo=${IMAGE_REPO:-ghcr.io/pravega-flink-autoscaler}
version=${VERSION:-0.1.0}
cargo=${CARGO:-cargo}
profile=${IMAGE_PROFILE:-release}
case $profile in
  dev) bin_dir=target/debug ;;
  *) bin_dir=target/$profile ;;
esac
out=target/images
ctx=$out/context

[ "$(id -u)" -eq 0 ] || { echo "images: buildah's storage needs root" >&2; exit 1; }
command -v buildah >/dev/null || { echo "images: buildah is missing (tests/prerequisites.sh installs it)" >&2; exit 1; }

# The same build as the Dockerfile's builder stage (release there).
$cargo build --profile "$profile" --locked -p pravega-metrics-adapter -p generator -p flink-reader

# The root filesystem, written again when rootfs.sh changes.
mkdir -p "$ctx/builder/out" "$ctx/rootfs"
recipe=$(sha256sum manifests/docker/rootfs.sh | cut -d' ' -f1)
if [ "$(cat "$ctx/rootfs.recipe" 2>/dev/null)" != "$recipe" ] || [ ! -d "$ctx/rootfs/rootfs" ]; then
  rm -rf "$ctx/rootfs/rootfs" "$ctx/rootfs/rootfs.new"
  manifests/docker/rootfs.sh "$ctx/rootfs/rootfs.new"
  mv "$ctx/rootfs/rootfs.new" "$ctx/rootfs/rootfs"
  echo "$recipe" >"$ctx/rootfs.recipe"
fi
# Its content: names, types, modes, link targets and file digests.
rootfs_digest=$(cd "$ctx/rootfs/rootfs" && find . -printf '%p %y %m %l\n' | LC_ALL=C sort \
  && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) 
rootfs_digest=$(echo "$rootfs_digest" | sha256sum | cut -d' ' -f1)

# Image timestamps (creation, files in the layers): SOURCE_DATE_EPOCH, or
# 1970 as distroless images have it, so that the same inputs give the same
# layers whatever the commit.
epoch=${SOURCE_DATE_EPOCH:-0}

storage=
cleanup() {
  if [ -n "$storage" ]; then
    buildah "${store[@]}" rm --all >/dev/null 2>&1 || true
    buildah "${store[@]}" rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$storage"
  fi
}
trap cleanup EXIT

for target in adapter generator flink-reader; do
  name=$target
  [ "$target" = adapter ] && name=pravega-metrics-adapter
  ref=$repo/$name:$version
  ln -f "$bin_dir/$name" "$ctx/builder/out/$name" 2>/dev/null \
    || cp -p "$bin_dir/$name" "$ctx/builder/out/$name"
  inputs=$(printf '%s\n' "ref $ref" "epoch $epoch" "rootfs $rootfs_digest" \
    "$(sha256sum "$bin_dir/$name" manifests/docker/Dockerfile scripts/images.sh)")
  if [ -f "$out/$name.tar" ] && [ "$(cat "$out/$name.inputs" 2>/dev/null)" = "$inputs" ]; then
    echo "images: $out/$name.tar ($ref) is up to date"
    continue
  fi
  if [ -z "$storage" ]; then
    # A storage of this run's own, removed on exit. vfs: the layers are a few
    # MiB, and unlike overlay it leaves no mount under target/ when a run
    # is killed.
    storage=$(mktemp -d "$PWD/target/buildah.XXXXXX")
    store=(--root "$storage/root" --runroot "$storage/run" --storage-driver vfs)
  fi
  buildah "${store[@]}" bud --quiet --pull=never --identity-label=false --timestamp "$epoch" \
    --build-context "builder=$ctx/builder" --build-context "rootfs=$ctx/rootfs" \
    -f manifests/docker/Dockerfile --target "$target" -t "$ref" . >/dev/null
  rm -f "$out/$name.tar" "$out/$name.tar.new"
  buildah "${store[@]}" push --quiet "$ref" "oci-archive:$out/$name.tar.new:$ref"
  mv "$out/$name.tar.new" "$out/$name.tar"
  echo "$inputs" >"$out/$name.inputs"
  echo "images: $out/$name.tar ($ref), $(du -k "$out/$name.tar" | cut -f1) KiB"
done
