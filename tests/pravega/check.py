#!/usr/bin/env python3
"""Checks of tests/pravega/run.sh over what its run left in RUN_DIR.

Usage: check.py RUN_DIR

Reads the readers' sequence logs and logs (events.py checks them), the
stop times of readers (`stops`) and the timeline; prints the figures and
exits non-zero if a check fails: every acknowledged event read (none
lost), nothing written failed, each reader's own count equal to its log,
the stream split, and the adapter
never serving a count other than the truth (getCurrentSegments) but while
the truth itself changes.
"""
import os
import re
import sys

from events import check_events

run = sys.argv[1]
failures = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        failures.append(what)


reads = check_events(os.path.join(run, "generator.log"), run, check)

# --- hand-off: end-to-end latency of events created right after a SIGTERM
def latency_ms(rows, lo, hi):
    lat = sorted(r[2] - r[1] for r in rows if lo <= r[1] < hi)
    return lat


every = [r for rows in reads.values() for r in rows]
if os.path.exists(os.path.join(run, "stops")):
    with open(os.path.join(run, "stops")) as f:
        for line in f:
            name, sent, exited = line.split()
            sent, exited = int(sent), int(exited)
            before = latency_ms(every, sent - 20000, sent)
            after = latency_ms(every, sent, sent + 10000)
            if not after:
                print(f"hand-off {name}: exited {exited - sent} ms after SIGTERM (no events written after)")
                continue
            p = lambda l, q: l[min(len(l) - 1, int(q * len(l)))] if l else None
            print(f"hand-off {name}: exited {exited - sent} ms after SIGTERM; end-to-end latency of events "
                  f"created in the 10 s after SIGTERM: max {after[-1] if after else None} ms, p50 {p(after, .5)} ms "
                  f"(20 s before: max {before[-1] if before else None} ms, p50 {p(before, .5)} ms)")

# --- timeline: truth vs gauges vs adapter
rows = []
with open(os.path.join(run, "timeline.tsv")) as f:
    next(f)
    for line in f:
        parts = line.split()
        if len(parts) >= 7:
            rows.append(parts)
def count(cell):
    return cell.split("/")[0]
n = len(rows)
stale_a = sum(1 for r in rows if r[3].isdigit() and count(r[4]) != r[3])
stale_b = sum(1 for r in rows if r[3].isdigit() and count(r[5]) != r[3])
wrong_adapter = [r for r in rows if r[3].isdigit() and r[6] != r[3]]
print(f"timeline: {n} samples; replica A's gauge differs from the truth (or is absent) in {stale_a}, "
      f"B's in {stale_b}, the adapter's answer in {len(wrong_adapter)}")
for r in wrong_adapter:
    print("    adapter != truth at t=%s s: truth %s, A %s, B %s, adapter %s" % (r[0], r[3], r[4], r[5], r[6]))
# The truth and the adapter are read one after the other: a sample taken as
# the stream scales may see the count before and after. Any other sample
# must agree, whatever the replicas' gauges say (stale, absent, evicted,
# the replica that scaled restarting): the adapter asks the controllers'
# API where the gauges cannot tell.
def truth_moves(i):
    near = [rows[j][3] for j in (i - 1, i, i + 1) if 0 <= j < n and rows[j][3].isdigit()]
    return len(set(near)) > 1
# The adapter starts with the stream being created: until its first answer
# it may withhold (a stream in CREATING state has no segments to ask for),
# never serve another number.
first_answer = next((i for i, r in enumerate(rows) if r[6].isdigit()), n)
starting = [r for r in rows[:first_answer] if r[6] not in ("none", "-")]
check(not starting, f"before its first answer the adapter withholds, never serves another number ({len(starting)} samples)")
unexplained = [r for i, r in enumerate(rows) if i >= first_answer and r[3].isdigit() and r[6] != r[3] and not truth_moves(i)]
check(not unexplained, f"the adapter serves the true count in every sample taken while the stream does not scale "
      f"({len(unexplained)} samples differ)")
# The generator's /metrics: the acknowledged rate follows the sinusoid.
paced = [(float(r[1]), float(r[2])) for r in rows if r[1].isdigit() and r[2].isdigit() and float(r[1]) > 0]
off = [abs(actual - target) / target for target, actual in paced]
check(len(paced) >= 10 and sum(off) / len(off) < 0.1,
      f"the generator's acknowledged rate follows its target (mean deviation {100 * sum(off) / max(1, len(off)):.1f} % over {len(paced)} samples)")
splits = [r for r in rows if r[3].isdigit() and int(r[3]) >= 2]
check(bool(splits), "the stream split")

# --- which streams the controllers report
for moment, replica in [(m, r) for m in ("after-split", "after-merge") for r in ("a", "b")]:
    path = os.path.join(run, f"{moment}-replica-{replica}.prom")
    if not os.path.exists(path):
        continue
    streams = []
    with open(path) as f:
        for line in f:
            if line.startswith("pravega_controller_segments_count{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                streams.append(f'{labels.get("scope")}/{labels.get("stream")}={line.split()[-1]}')
    print(f"{moment}, replica {replica.upper()}: segments_count series {' '.join(streams) or 'none'}")

if failures:
    print(f"tests/pravega: {len(failures)} check(s) failed")
    sys.exit(1)
