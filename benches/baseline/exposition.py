#!/usr/bin/env python3
"""Writes one fake Pravega controller replica's /prometheus exposition, or
serves a directory's files as a controller serves its metrics.

    exposition.py FILE [scope/stream=SEGMENTS,SPLITS,MERGES ...]
    exposition.py FILE --synthetic N --replica R
    exposition.py --serve ADDRESS PORT DIRECTORY

The text is what a 0.13 controller writes (Micrometer 1.3: trailing commas in
label sets, Java doubles, HELP and TYPE lines). A stream absent from the
arguments has no series, as on a replica that never scaled it.

--synthetic N: stream 0 is test/stream, streams 1..N-1 are bench/s<i>.
Replica 0 holds every stream; replica 1 holds the even ones and has seen
more scale events for them, so for those replica 0's value is stale.
The file is replaced atomically, so a scrape never sees half of it.
"""
import os
import sys


def synthetic(streams, replica):
    rows = []
    for i in range(streams):
        scope, stream = ("test", "stream") if i == 0 else ("bench", f"s{i}")
        if replica == 0:
            rows.append((scope, stream, 1 + i % 4, i % 4, 0))
        elif i % 2 == 0:
            rows.append((scope, stream, 2 + i % 5, i % 4 + 2, 1))
    return rows


def parse(arguments):
    rows = []
    for argument in arguments:
        name, numbers = argument.split("=")
        scope, stream = name.split("/")
        segments, splits, merges = (int(n) for n in numbers.split(","))
        rows.append((scope, stream, segments, splits, merges))
    return rows


def render(rows):
    out = [
        "# HELP jvm_threads_live_threads The current number of live threads\n",
        "# TYPE jvm_threads_live_threads gauge\n",
        "jvm_threads_live_threads 87.0\n",
    ]
    for column, family in ((2, "segments_count"), (3, "segment_splits"), (4, "segment_merges")):
        if not rows:
            break
        out.append(f"# HELP pravega_controller_{family}  \n# TYPE pravega_controller_{family} gauge\n")
        for row in rows:
            out.append(f'pravega_controller_{family}{{scope="{row[0]}",stream="{row[1]}",}} {float(row[column])}\n')
    return "".join(out)


def serve(address, port, directory):
    """Files under DIRECTORY over HTTP/1.1, with the content type of the
    Prometheus text format (what the controller sends; the adapter refuses
    other types)."""
    import functools
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def guess_type(self, path):
            return "text/plain; version=0.0.4; charset=utf-8"

        def log_message(self, *args):
            pass

    handler = functools.partial(Handler, directory=directory)
    http.server.ThreadingHTTPServer((address, int(port)), handler).serve_forever()


def main():
    if sys.argv[1] == "--serve":
        serve(*sys.argv[2:5])
        return
    path = sys.argv[1]
    if len(sys.argv) > 2 and sys.argv[2] == "--synthetic":
        rows = synthetic(int(sys.argv[3]), int(sys.argv[5]))
    else:
        rows = parse(sys.argv[2:])
    with open(path + ".tmp", "w") as f:
        f.write(render(rows))
    os.replace(path + ".tmp", path)


main()
