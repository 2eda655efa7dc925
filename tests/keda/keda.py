#!/usr/bin/env python3
"""The parts of tests/keda/run.sh that watch KEDA scale:

  record   samples every 0.25 s into a TSV file: the phase run.sh is in
           (a file it writes), the true segment count (the simulator's
           gauge), the flink-taskmanager Deployment's replicas, and whether
           the ScaledObject's Fallback condition is True.
  analyze  reads the TSV: for each change of the true count, the time until
           the replicas are what it asks for, per phase; prints FIGURE lines
           and fails when a phase did not follow its changes.

Only the standard library; it reuses tests/e2e/loop.py's API client.
"""

import argparse
import math
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import loop  # noqa: E402

SCALED_OBJECT = "/apis/keda.sh/v1alpha1/namespaces/pravega/scaledobjects/flink-taskmanager"
COLUMNS = ["t", "phase", "segments", "replicas", "fallback"]


def record(args):
    stop = loop.stop_on(signal.SIGTERM)
    api = loop.Api(args.server, args.pki)
    with open(args.out, "w") as out:
        out.write("\t".join(COLUMNS) + "\n")
        while not stop.is_set():
            row = {"t": f"{time.time():.2f}"}
            try:
                with open(args.phase_file) as f:
                    row["phase"] = f.read().strip()
            except OSError:
                row["phase"] = ""
            try:
                value = loop.sample(loop.plain_get(args.controller), "pravega_controller_segments_count")
                row["segments"] = "" if value is None else str(int(value))
            except Exception:  # stopped for the fallback phase
                row["segments"] = ""
            try:
                row["replicas"] = str(api.get(loop.DEPLOYMENT)["spec"].get("replicas", ""))
            except Exception:
                row["replicas"] = ""
            try:
                conditions = api.get(SCALED_OBJECT).get("status", {}).get("conditions", [])
                row["fallback"] = next((c["status"] for c in conditions if c["type"] == "Fallback"), "")
            except Exception:
                row["fallback"] = ""
            out.write("\t".join(row[c] for c in COLUMNS) + "\n")
            out.flush()
            time.sleep(0.25)


def read(path):
    rows = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))
    return rows


def expected(segments, activation):
    """Replicas for SEGMENTS with one segment per replica; 0 at or below
    ACTIVATION when the phase lets KEDA scale to zero."""
    if activation is not None and segments <= activation:
        return 0
    return max(1, math.ceil(segments))


def changes(rows, phase, activation):
    """(direction, latency s or None, before, now) for each change of the
    true count in PHASE: the time until the replicas first equal what it
    asks for, before the next change; and for a rise from 0 replicas, the
    time until there is one (direction "activation")."""
    rows = [r for r in rows if r["phase"] == phase and r["segments"] and r["replicas"]]
    out = []
    for i in range(1, len(rows)):
        before, now = int(rows[i - 1]["segments"]), int(rows[i]["segments"])
        if now == before:
            continue
        want = expected(now, activation)
        if want == expected(before, activation):
            continue
        t0, latency, active = float(rows[i]["t"]), None, None
        for r in rows[i:]:
            if int(r["segments"]) != now:
                break
            if active is None and int(r["replicas"]) >= 1:
                active = float(r["t"]) - t0
            if int(r["replicas"]) == want:
                latency = float(r["t"]) - t0
                break
        out.append(("up" if now > before else "down", latency, before, now))
        if activation is not None and expected(before, activation) == 0:
            out.append(("activation", active, before, now))
    return out


def analyze(args):
    rows = read(args.tsv)
    ok = True
    for spec in args.phase:
        phase, _, activation = spec.partition(":")
        activation = float(activation) if activation else None
        seen = changes(rows, phase, activation)
        for direction in ("up", "down", "activation"):
            latencies = [lat for d, lat, _, _ in seen if d == direction and lat is not None]
            missed = [(b, n) for d, lat, b, n in seen if d == direction and lat is None]
            if latencies:
                print(
                    f"FIGURE {phase} {direction}: {len(latencies)} changes, change -> replicas "
                    f"median {statistics.median(latencies):.1f} s, max {max(latencies):.1f} s "
                    f"({', '.join(f'{x:.1f}' for x in latencies)})"
                )
            if missed:
                print(f"  {phase} {direction}: {len(missed)} changes the replicas did not reach before the next: {missed}")
        if not any(d == "up" and lat is not None for d, lat, _, _ in seen):
            print(f"FAILED {phase}: the replicas followed no rise of the segment count")
            ok = False
    fallback = [r for r in rows if r["phase"] in ("fallback", "after")]
    engaged = [r for r in fallback if r["fallback"] == "True" and r["replicas"] == str(args.fallback_replicas)]
    if args.fallback_replicas is not None:
        if engaged:
            start = float(fallback[0]["t"])
            print(f"FIGURE fallback: {args.fallback_replicas} replicas {float(engaged[0]['t']) - start:.1f} s after the controller stopped")
        else:
            print(f"FAILED fallback: no sample with the Fallback condition True and {args.fallback_replicas} replicas")
            ok = False
    sys.exit(0 if ok else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record")
    r.add_argument("--server", required=True)
    r.add_argument("--pki", required=True)
    r.add_argument("--controller", required=True, help="the simulator's /prometheus URL")
    r.add_argument("--phase-file", required=True)
    r.add_argument("--out", required=True)
    a = sub.add_parser("analyze")
    a.add_argument("tsv")
    a.add_argument("--phase", action="append", default=[], help="PHASE or PHASE:ACTIVATION (replicas 0 at or below it)")
    a.add_argument("--fallback-replicas", type=int)
    args = p.parse_args()
    {"record": record, "analyze": analyze}[args.command](args)


if __name__ == "__main__":
    main()
