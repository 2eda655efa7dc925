#!/usr/bin/env python3
"""The inventory steps of tests/pravega/run.sh: every stream's value, sampled
against the truth, and the verdict.

Usage:
  inventory_check.py sample DIR SEGMENTS_BIN GRPC_PORT...   sample until killed
  inventory_check.py report DIR                             table, counts, verdict

DIR (RUN_DIR/inventory) holds what run.sh writes and this reads:
  step      the step under way (each sample is filed under it)
  adapters  "name host:port" lines: the adapters to sample
  scopes    scopes whose Object sum is sampled too (key "scope/*")
  events    "start_ms end_ms kind adapter key" lines: kind `window` (a change
            run.sh triggered: a create, seal, delete, scale or restart; it
            lasts until 10 s after end_ms) or `outage` (both controllers
            down); adapter is a name or *, key is scope/stream, scope/* or *
and samples.jsonl, written by `sample`.

Every 2 s a round takes the truth for every stream (`pravega-segments all`,
via each GRPC_PORT in turn until one answers) and then asks each adapter for
each stream known so far (External query) and for each scope's sum (Object
query). A stream listed before and no longer listed is "gone": the adapter
must serve nothing for it.

Verdict, per sample:
  - outside windows and outages: the adapter's value equals the truth;
  - in an outage: the truth (the last known one: the API cannot answer) or
    nothing;
  - in a window: nothing, or for a stream a count the stream had around the
    window (never another stream's, e.g. a deleted one's of the same name).
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

WINDOW_MS = 10_000
EVERY_S = 2.0


def now_ms():
    return int(time.time() * 1000)


def read_lines(path):
    try:
        with open(path) as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []


# ------------------------------------------------------------------ sample
def truth(segments_bin, ports):
    """{ "scope/stream": count } from the first controller that answers, or None."""
    for port in ports:
        try:
            out = subprocess.run(
                [segments_bin, "all", "--controller-uri", f"tcp://127.0.0.1:{port}", "--timeout", "2s"],
                capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            continue
        if out.returncode == 0:
            return {line.split()[0]: int(line.split()[1]) for line in out.stdout.splitlines() if line.strip()}
    return None


def get(url):
    """(status, parsed body or None); status 0 when the adapter does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return 0, None


def quantity(text):
    """A Kubernetes quantity as the adapter writes counts: "3", "1500m"."""
    if text.endswith("m"):
        v = int(text[:-1]) / 1000
        return str(int(v)) if v == int(v) else str(v)
    return text


def external(address, key):
    scope, stream = key.split("/", 1)
    status, body = get(f"http://{address}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/"
                       f"pravega_controller_segments_count?labelSelector=scope%3D{scope},stream%3D{stream}")
    if status == 0:
        return "down"
    if status != 200:
        return f"http{status}"
    items = body.get("items") or []
    return "+".join(quantity(x["value"]) for x in items) if items else "none"


def object_sum(address, scope):
    status, body = get(f"http://{address}/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/deployments.apps/x/"
                       f"pravega_controller_segments_count?metricLabelSelector=scope%3D{scope}")
    if status == 0:
        return "down"
    if status == 404:
        return "none"
    if status != 200:
        return f"http{status}"
    items = body.get("items") or []
    return "+".join(quantity(x["value"]) for x in items) if items else "none"


def sample(d, segments_bin, ports):
    known = {}  # key -> last truth (int or "gone")
    with open(os.path.join(d, "samples.jsonl"), "a") as out:
        while True:
            start = now_ms()
            counts = truth(segments_bin, ports)
            if counts is not None:
                for key in known:
                    if key not in counts:
                        known[key] = "gone"
                known.update(counts)
            step = (read_lines(os.path.join(d, "step")) or [["-"]])[0][0]
            scopes = [x[0] for x in read_lines(os.path.join(d, "scopes"))]
            for name, address in read_lines(os.path.join(d, "adapters")):
                for key in sorted(known):
                    value = external(address, key)
                    t = None if counts is None else counts.get(key, "gone")
                    out.write(json.dumps({"start": start, "end": now_ms(), "step": step, "adapter": name,
                                          "key": key, "truth": t, "value": value}) + "\n")
                for scope in scopes:
                    value = object_sum(address, scope)
                    t = None if counts is None else sum(v for k, v in counts.items() if k.startswith(scope + "/"))
                    out.write(json.dumps({"start": start, "end": now_ms(), "step": step, "adapter": name,
                                          "key": scope + "/*", "truth": t, "value": value}) + "\n")
            out.flush()
            time.sleep(max(0.2, EVERY_S - (now_ms() - start) / 1000))


# ------------------------------------------------------------------ report
def matches(selector, key):
    if selector == "*" or selector == key:
        return True
    scope = key.split("/", 1)[0]
    # A scope's window covers its streams; a stream's covers its scope's sum.
    return selector == scope + "/*" or key == scope + "/*" and selector.startswith(scope + "/")


def report(d):
    events = [(int(a), int(b), kind, adapter, key) for a, b, kind, adapter, key in read_lines(os.path.join(d, "events"))]
    samples = []
    with open(os.path.join(d, "samples.jsonl")) as f:
        for line in f:
            samples.append(json.loads(line))

    def overlapping(s, kind, extra):
        return [e for e in events if e[2] == kind and (e[3] in ("*", s["adapter"])) and matches(e[4], s["key"])
                and s["start"] <= e[1] + extra and s["end"] >= e[0]]

    last_truth, failures = {}, []
    steps = {}
    # The truths each key had, with their times, for the windows' allowed counts.
    history = {}
    for s in samples:
        if s["truth"] is not None:
            history.setdefault(s["key"], []).append((s["start"], s["truth"]))
    t0 = samples[0]["start"] if samples else 0
    for s in samples:
        windows = overlapping(s, "window", WINDOW_MS)
        outage = bool(overlapping(s, "outage", 0))
        truth = s["truth"]
        if truth is None and outage:
            truth = last_truth.get(s["key"])
        if s["truth"] is not None:
            last_truth[s["key"]] = s["truth"]
        value = s["value"]
        if truth is None:
            cls = "untruthed"
        elif value == str(truth) or truth == "gone" and value == "none":
            cls = "equal"
        elif value == "none":
            cls = "withheld"
        elif value == "down" or value.startswith("http"):
            cls = "down"
        else:
            cls = "wrong"
        ok = True
        if windows:
            if cls == "wrong" and not s["key"].endswith("/*"):
                # A count the stream had from just before the window to its end.
                lo, hi = min(e[0] for e in windows) - 1000 * EVERY_S * 2, max(e[1] for e in windows) + WINDOW_MS
                before = [t for at, t in history.get(s["key"], []) if at < lo]
                allowed = {str(t) for at, t in history.get(s["key"], []) if lo <= at <= hi + 1000 * EVERY_S * 2}
                allowed |= {str(before[-1])} if before else set()
                ok = value in allowed
        elif outage:
            ok = cls in ("equal", "withheld", "untruthed")
        else:
            ok = cls in ("equal", "untruthed")
        where = "window" if windows else "outage" if outage else "settled"
        st = steps.setdefault(s["step"], {"samples": 0, "equal": 0, "withheld": 0, "wrong": 0, "down": 0, "untruthed": 0,
                                          "failed": 0, "rounds": {}})
        st["samples"] += 1
        st[cls] += 1
        st["failed"] += 0 if ok else 1
        rnd = st["rounds"].setdefault((s["start"], s["adapter"]), {"n": 0, "equal": 0, "where": set(), "odd": []})
        rnd["n"] += 1
        rnd["equal"] += cls == "equal"
        rnd["where"].add(where)
        if cls != "equal":
            rnd["odd"].append(f'{s["key"]}={value}(truth {truth}){"" if ok else " FAIL"}')
        if not ok:
            failures.append(f'step {s["step"]}, t={(s["start"] - t0) / 1000:.0f} s, adapter {s["adapter"]}: {s["key"]} '
                            f'served {value}, truth {truth} ({where}, class {cls})')

    print("inventory steps: one row per sampling round (t = s since the first round; in = window / outage / settled;"
          " other = samples that were not equal: key=served(truth))")
    for name, st in steps.items():
        print(f"--- step {name}")
        for (start, adapter), r in sorted(st["rounds"].items()):
            where = "/".join(sorted(r["where"]))
            odd = " ".join(r["odd"][:6]) + (f" ... (+{len(r['odd']) - 6})" if len(r["odd"]) > 6 else "")
            print(f'  t={(start - t0) / 1000:6.1f}  {adapter:7}  {where:22}  equal {r["equal"]:3}/{r["n"]:<3} {odd}')
    print()
    print(f'{"step":26} {"samples":>7} {"equal":>6} {"withheld":>8} {"wrong":>6} {"down":>5} {"no truth":>8} {"failed":>6}')
    for name, st in steps.items():
        print(f'{name:26} {st["samples"]:7} {st["equal"]:6} {st["withheld"]:8} {st["wrong"]:6} {st["down"]:5} '
              f'{st["untruthed"]:8} {st["failed"]:6}')
    for f in failures[:40]:
        print("  FAIL  " + f)
    if len(failures) > 40:
        print(f"  ... {len(failures) - 40} more failures")
    if not samples:
        print("  FAIL  no samples")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif sys.argv[1] == "report":
        sys.exit(report(sys.argv[2]))
    else:
        sys.exit(f"usage: {sys.argv[0]} sample DIR SEGMENTS_BIN GRPC_PORT... | report DIR")
