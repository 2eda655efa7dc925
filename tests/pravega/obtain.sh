#!/usr/bin/env bash
# Puts Pravega 0.13.0's server jars (and their dependencies) in a cache
# outside the checkout, with Maven from Maven Central, and prints the
# directory. Reuses the cache when it is complete.
#
# Exit codes: 0 with the directory on stdout; 3 when Maven could not get an
# artifact (the error is in "$dir.error" and on stderr, so run.sh can print
# it in a SKIPPED banner); anything else is a bug here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=0.13.0
cache=${PRAVEGA_AUTOSCALER_CACHE:-$HOME/.cache/pravega-flink-autoscaler}
dir=$cache/pravega-$version
# The marker is written last: an interrupted download is redone.
if [ -f "$dir/complete" ]; then
    echo "$dir"
    exit 0
fi
command -v mvn >/dev/null || { echo "obtain.sh: mvn (Maven) is not installed" | tee "$dir.error" >&2; exit 3; }
mkdir -p "$cache"
rm -rf "$dir.partial"
echo "obtain.sh: downloading Pravega $version server jars into $dir (about 200 MB, once)" >&2
# -B: no colours or progress in logs. includeScope=runtime: what the servers
# load at run time, not test or provided jars.
if ! mvn -B -q -f "$here/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$dir.partial/lib" -DincludeScope=runtime >"$cache/obtain-$version.log" 2>&1; then
    # Maven -q prints only errors: these lines are what the registry said
    # (without Maven's generic advice).
    grep -E '^\[ERROR\]' "$cache/obtain-$version.log" \
        | grep -vE '^\[ERROR\] *$|re-run Maven|Re-run Maven|For more information|\[Help [0-9]+\] http' \
        | head -20 >"$dir.error" || true
    [ -s "$dir.error" ] || tail -20 "$cache/obtain-$version.log" >"$dir.error"
    cat "$dir.error" >&2
    exit 3
fi
for main in pravega-controller pravega-segmentstore-server-host zookeeper; do
    ls "$dir.partial/lib/$main"-[0-9]*.jar >/dev/null 2>&1 || {
        echo "obtain.sh: $main is missing from the downloaded jars" | tee "$dir.error" >&2; exit 3; }
done
rm -f "$dir.error"
rm -rf "$dir"
mv "$dir.partial" "$dir"
date -u +%FT%TZ >"$dir/complete"
echo "$dir"
