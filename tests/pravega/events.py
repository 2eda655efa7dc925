#!/usr/bin/env python3
"""Every event the generator wrote, read exactly once by the readers.

Usage: events.py GENERATOR_LOG READER_DIR

READER_DIR holds each reader's sequence log NAME.seq (`sequence created_ms
read_ms` per event) and its log NAME.log. Checks: every event written was
acknowledged, none lost, none read that was not written, and each reader's
own count at exit equals its sequence log. Prints the figures; exits
non-zero if a check fails. tests/pravega/check.py and tests/e2e/loop.sh use
it.
"""
import glob
import os
import re
import sys


def last_match(path, pattern):
    found = None
    with open(path, errors="replace") as f:
        for line in f:
            m = re.search(pattern, line)
            if m:
                found = m
    return found


def read_sequences(reader_dir):
    """reader name -> [(sequence, created_ms, read_ms)]"""
    reads = {}
    for path in sorted(glob.glob(os.path.join(reader_dir, "*.seq"))):
        with open(path) as f:
            reads[os.path.basename(path)[:-4]] = [tuple(map(int, line.split())) for line in f]
    return reads


def check_events(generator_log, reader_dir, check):
    """Runs the checks through check(ok, what); returns the readers' rows."""
    gen = last_match(generator_log, r"events=(\d+) acknowledged=(\d+) failed=(\d+)")
    check(gen is not None, f"{generator_log} has its final 'all acknowledgements in' line")
    if gen is None:
        return {}
    written, acknowledged, failed = map(int, gen.groups())
    reads = read_sequences(reader_dir)
    all_seqs = [r[0] for rows in reads.values() for r in rows]
    distinct = set(all_seqs)
    lost = sorted(set(range(written)) - distinct)
    unknown = sorted(distinct - set(range(written)))
    dups = len(all_seqs) - len(distinct)
    print(f"events: written {written}, acknowledged {acknowledged}, failed {failed}; "
          f"read {len(all_seqs)} ({', '.join(f'{k} {len(v)}' for k, v in reads.items())}); "
          f"distinct {len(distinct)}, lost {len(lost)}, duplicated {dups}")
    check(failed == 0 and acknowledged == written, "every event written was acknowledged")
    check(written > 0, "the generator wrote events")
    check(not lost, f"no event lost{'' if not lost else ': first lost ' + str(lost[:10])}")
    check(not unknown, "no event read that was not written")
    for name, rows in reads.items():
        log = os.path.join(reader_dir, f"{name}.log")
        m = last_match(log, r"leaving the reader group.*events=(\d+)") or last_match(log, r"events=(\d+).*leaving the reader group")
        counted = int(m.group(1)) if m else None
        check(counted == len(rows), f"{name}: its count at exit ({counted}) equals the events it logged ({len(rows)})")
    return reads


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    failures = []

    def check(ok, what):
        print(("  ok    " if ok else "  FAIL  ") + what)
        if not ok:
            failures.append(what)

    check_events(sys.argv[1], sys.argv[2], check)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
