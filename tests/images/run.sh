#!/usr/bin/env bash
# The images (make test-images, part of make test), as root:
# 1. make images builds the three OCI archives, or keeps them when their
#    inputs have not changed (scripts/images.sh).
# 2. check.py reads them: the references the manifests use, user 65532,
#    entrypoint, files exactly rootfs.sh's output plus the binary (the
#    Dockerfile's stages), every needed library present and nothing else,
#    no shell; and rootfs.sh run again here writes the same file set as
#    the one the images were built from.
# 3. Each image's root filesystem, unpacked, runs its binary as
#    65532:65532 in a chroot inside new mount, PID and network namespaces
#    (/proc mounted, /etc/hosts written, as the kubelet would): every binary
#    prints its --help, then the generator's simulated controller and the
#    adapter run from their images until the adapter answers the external
#    metrics query with a value, as make run-check does with the host's
#    binaries.
# Not root: prints SKIPPED and exits 0; any failed check exits non-zero.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
images=$root/target/images
query='/apis/external.metrics.k8s.io/v1beta1/namespaces/default/pravega_controller_segments_count?labelSelector=scope%3Dtest,stream%3Dstream'

log() { printf '[images] %s\n' "$*"; }
fail() { printf '[images] FAILED: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  printf '\n**********************************************************************\n'
  printf '* images SKIPPED: buildah and chroot need root\n'
  printf '**********************************************************************\n\n'
  exit 0
fi

start=$(date +%s)
"$root/scripts/images.sh"
log "make images: $(( $(date +%s) - start )) s"

run=$(mktemp -d "$root/target/images-run.XXXXXX")
trap 'rm -rf "$run"' EXIT
"$root/manifests/docker/rootfs.sh" "$run/fresh-rootfs"
python3 "$here/check.py" "$root" "$run/fresh-rootfs"
for name in pravega-metrics-adapter generator flink-reader; do
  python3 "$here/check.py" --unpack "$images/$name.tar" "$run/$name"
  mkdir -p "$run/$name/proc"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n' >"$run/$name/etc/hosts"
done

# Runs the rest of this script's arguments in new mount, PID and network
# namespaces, loopback up.
contained() {
  unshare --mount --pid --net --fork --kill-child bash -c 'ip link set lo up && exec "$@"' - "$@"
}
# in_image NAME ARGS...: the image's entrypoint with ARGS, as 65532:65532,
# chrooted into the unpacked image with /proc mounted (inside contained).
in_image() {
  local name=$1
  shift
  mount -t proc proc "$run/$name/proc"
  chroot --userspec=65532:65532 "$run/$name" "/usr/local/bin/$name" "$@"
}
export -f in_image
export run

for name in pravega-metrics-adapter generator flink-reader; do
  out=$(contained bash -c 'in_image "$@"' - "$name" --help 2>&1) \
    || fail "$name --help in its image: $out"
  grep -q '^Usage:' <<<"$out" || fail "$name --help in its image printed no usage: $out"
  log "PASS $name --help runs in its image as 65532:65532 ($(wc -l <<<"$out") lines)"
done

# make run from the images: the simulated controller on localhost:10080,
# the adapter scraping it by name (the files NSS built into libc, through
# /etc/nsswitch.conf and the written /etc/hosts) and serving on :8080.
contained bash -c '
  set -e
  in_image generator --simulate --listen 127.0.0.1:10080 --period 120s --scale-hold 5s --create-after 2s \
    >"$run/generator.log" 2>&1 &
  in_image pravega-metrics-adapter --secure-port 0 --insecure-bind-address 127.0.0.1:8080 \
    --controller-url http://localhost:10080/prometheus --scrape-interval 2s --scrape-timeout 1s \
    >"$run/adapter.log" 2>&1 &
  adapter=$!
  for attempt in $(seq 60); do
    kill -0 $adapter 2>/dev/null || exit 1
    if python3 - "$1" <<EOF 2>/dev/null
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:8080" + sys.argv[1], timeout=2).read().decode()
sys.exit(0 if "\"value\":\"" in body else 1)
EOF
    then
      exit 0
    fi
    sleep 1
  done
  exit 1
' - "$query" || {
  tail -n 20 "$run/generator.log" "$run/adapter.log" >&2
  fail "the adapter from its image never answered $query with a value"
}
log "PASS the generator (simulated controller) and the adapter from their images: the adapter answers the external metrics query"
log "done in $(( $(date +%s) - start )) s"
