#!/usr/bin/env bash
# Writes the images' root filesystem into DIR (which must not exist yet): what
# the three Rust binaries need at run time and nothing else, taken from
# Debian's packages, as a distroless "cc" image holds it.
#
#   manifests/docker/rootfs.sh DIR
#
# The one recipe for both builds: the Dockerfile's rootfs stage runs it in
# debian:bookworm-slim, and scripts/images.sh (make images) runs it on the
# host and hands DIR to buildah in place of that stage. tests/images/ checks
# that an image holds exactly DIR plus its binary.
#
# Needs apt-get and dpkg-deb with Debian 12 (bookworm) sources, and network
# access to them; runs as any user that `apt-get download` works for.
#
# What goes in, and why:
# - the dynamic loader, libc.so.6, libm.so.6 (libc6) and libgcc_s.so.1
#   (libgcc-s1): the binaries' whole NEEDED list. glibc 2.36 has its files and
#   dns NSS services built in, so name resolution needs no libnss_* module,
#   only /etc/nsswitch.conf (the kubelet mounts /etc/hosts and
#   /etc/resolv.conf).
# - /etc/ssl/certs/ca-certificates.crt, the Mozilla bundle of
#   ca-certificates, concatenated as update-ca-certificates does (rustls'
#   native roots read it).
# - /etc/passwd and /etc/group with root, nobody and nonroot (65532, the
#   images' user), none with a shell or a home directory (the binaries read
#   none; the manifests mount the root filesystem read-only).
# - /tmp (1777), /etc/os-release (Debian's, from base-files), each
#   package's copyright file, and its control fields in
#   /var/lib/dpkg/status.d/ (where scanners such as Trivy and Syft look in
#   distroless images).
# Modes are set here; in the image every file is owned by root, as COPY
# without --chown leaves it.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
out=$1
[ ! -e "$out" ] || { echo "rootfs.sh: $out exists" >&2; exit 1; }

case "$(dpkg --print-architecture)" in
  amd64) triplet=x86_64-linux-gnu; loader=lib64/ld-linux-x86-64.so.2 ;;
  arm64) triplet=aarch64-linux-gnu; loader=lib/ld-linux-aarch64.so.1 ;;
  *) echo "rootfs.sh: architecture $(dpkg --print-architecture) not handled" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Downloads packages into $work and unpacks each into $work/pkg/NAME.
fetch() {
  (cd "$work" && apt-get download -qq "$@" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
  local p deb
  for p in "$@"; do
    deb=$(ls "$work/${p}_"*.deb 2>/dev/null | head -n1)
    [ -n "$deb" ] || { echo "rootfs.sh: apt-get download $p failed (apt-get update first?)" >&2; exit 1; }
    mkdir -p "$work/pkg/$p"
    dpkg-deb -x "$deb" "$work/pkg/$p"
    mkdir -p "$out/var/lib/dpkg/status.d"
    dpkg-deb -f "$deb" >"$out/var/lib/dpkg/status.d/$p"
  done
}

# take PACKAGE PATH...: copies each path (relative to /) out of an unpacked
# package, a symbolic link as a link, creating its parent directories.
take() {
  local p=$1 f
  shift
  for f in "$@"; do
    [ -e "$work/pkg/$p/$f" ] || [ -L "$work/pkg/$p/$f" ] \
      || { echo "rootfs.sh: package $p has no /$f" >&2; exit 1; }
    mkdir -p "$out/$(dirname "$f")"
    cp -P --preserve=mode "$work/pkg/$p/$f" "$out/$f"
  done
}

mkdir -p "$out"
fetch libc6 libgcc-s1 ca-certificates base-files
# libgcc-s1's documentation is a link to its gcc-N-base package's.
gccbase=$(readlink "$work/pkg/libgcc-s1/usr/share/doc/libgcc-s1")
fetch "$gccbase"

take libc6 "$loader" "lib/$triplet/$(basename "$loader")" "lib/$triplet/libc.so.6" \
  "lib/$triplet/libm.so.6" usr/share/doc/libc6/copyright
take libgcc-s1 "lib/$triplet/libgcc_s.so.1" usr/share/doc/libgcc-s1
take "$gccbase" "usr/share/doc/$gccbase/copyright"
take ca-certificates usr/share/doc/ca-certificates/copyright
take base-files usr/lib/os-release etc/os-release usr/share/doc/base-files/copyright

mkdir -p "$out/etc/ssl/certs"
for crt in "$work"/pkg/ca-certificates/usr/share/ca-certificates/mozilla/*.crt; do
  # One certificate after another, each ending in a newline.
  sed -e '$a\' "$crt"
done >"$out/etc/ssl/certs/ca-certificates.crt"

cat >"$out/etc/passwd" <<'EOF'
root:x:0:0:root:/nonexistent:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
EOF
cat >"$out/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
EOF
cat >"$out/etc/nsswitch.conf" <<'EOF'
passwd:    files
group:     files
shadow:    files
hosts:     files dns
networks:  files
protocols: files
services:  files
EOF
mkdir -m 1777 "$out/tmp"

# Directories and written files get the usual modes whatever the umask.
find "$out" -type d ! -path "$out/tmp" -exec chmod 0755 {} +
chmod 0644 "$out"/etc/passwd "$out"/etc/group "$out"/etc/nsswitch.conf \
  "$out"/etc/ssl/certs/ca-certificates.crt "$out"/var/lib/dpkg/status.d/*
