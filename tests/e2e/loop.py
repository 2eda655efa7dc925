#!/usr/bin/env python3
"""The parts of tests/e2e/loop.sh that run for minutes:

  supervise  stands in for the kubelet: polls the flink-taskmanager
             Deployment's spec.replicas and keeps that many flink-reader
             processes running (starts them on scale-up, SIGTERM on
             scale-down, newest first; one that is terminating still counts
             as running until it exits, as a terminating pod does).
  record     samples the loop once a second into a TSV file: the event
             rate the generator targets, the events the readers read per
             second (from their sequence logs), the true segment count (the
             simulator's gauge, or a command such as pravega-segments that
             asks Pravega's controller), the adapter's value, the HPA's
             desired replicas, the Deployment's replicas, running readers.
  window     prints the scale-down stabilization window of an HPA.
  analyze    reads the TSV and checks the loop; prints FIGURE lines.

Only the standard library: it runs where run.sh runs.
"""

import argparse
import json
import math
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

DEPLOYMENT = "/apis/apps/v1/namespaces/pravega/deployments/flink-taskmanager"
HPA = "/apis/autoscaling/v2/namespaces/pravega/horizontalpodautoscalers/flink-taskmanager"
EXTERNAL = (
    "/apis/external.metrics.k8s.io/v1beta1/namespaces/pravega/pravega_controller_segments_count"
    "?labelSelector=scope%3Dtest%2Cstream%3Dstream"
)
COLUMNS = ["t", "event_rate", "read_rate", "segments", "adapter_value", "hpa_desired", "replicas", "readers"]


class Api:
    """GETs against the kube-apiserver with the admin client certificate."""

    def __init__(self, server, pki):
        self.server = server
        self.context = ssl.create_default_context(cafile=os.path.join(pki, "cluster-ca.crt"))
        self.context.load_cert_chain(os.path.join(pki, "admin.crt"), os.path.join(pki, "admin.key"))

    def get(self, path):
        with urllib.request.urlopen(self.server + path, context=self.context, timeout=3) as response:
            return json.load(response)


def plain_get(url):
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode()


def sample(text, name):
    """The value of the first sample of family NAME in a text exposition."""
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            return float(line.rsplit(" ", 1)[1])
    return None


def log(*words):
    print(time.strftime("%H:%M:%S"), *words, flush=True)


def stop_on(*signals):
    """A flag that any of SIGNALS sets: the loops end at their next turn."""
    stop = threading.Event()
    for signum in signals:
        signal.signal(signum, lambda *_: stop.set())
    return stop


# --- supervise -----------------------------------------------------------------------


def supervise(args):
    api = Api(args.server, args.pki)
    running = []  # [(Popen, index)] oldest first, not asked to stop
    terminating = {}  # pid -> (Popen, time SIGTERM was sent)
    handoffs = []  # seconds from SIGTERM to exit
    next_index = 0
    stop = stop_on(signal.SIGTERM, signal.SIGINT)

    def write_state():
        tmp = args.state + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"readers": len(running) + len(terminating), "terminating": len(terminating), "handoffs": handoffs}, f)
        os.replace(tmp, args.state)

    deadline = time.monotonic() + args.seconds
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            want = api.get(DEPLOYMENT)["spec"].get("replicas", 1)
        except Exception as error:  # the apiserver is briefly away: keep what runs
            log("supervise: reading the Deployment failed:", error)
            want = len(running)
        # A reader that exits by itself is restarted, as a kubelet restarts a
        # container; the restart is logged, and counted by the assertions.
        for proc, index in list(running):
            if proc.poll() is not None:
                log(f"supervise: reader-{index} exited by itself with {proc.returncode}; restarting it")
                running.remove((proc, index))
        while len(running) < want:
            index = next_index
            next_index += 1
            out = open(os.path.join(args.log_dir, f"reader-{index}.log"), "w")
            proc = subprocess.Popen(
                [args.reader, f"--reader-id=reader-{index}", f"--listen=127.0.0.1:{args.first_port + index}"]
                + [arg.replace("{index}", str(index)) for arg in args.reader_arg],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            running.append((proc, index))
            log(f"supervise: started reader-{index} (pid {proc.pid}); {len(running)} wanted {want}")
        while len(running) > want:
            proc, index = running.pop()
            proc.send_signal(signal.SIGTERM)
            terminating[proc.pid] = (proc, time.monotonic())
            log(f"supervise: SIGTERM to reader-{index} (pid {proc.pid}); {len(running)} wanted {want}")
        for pid, (proc, since) in list(terminating.items()):
            if proc.poll() is not None:
                handoffs.append(round(time.monotonic() - since, 3))
                del terminating[pid]
            elif time.monotonic() - since > args.grace:
                proc.kill()  # terminationGracePeriodSeconds ran out
        write_state()
        time.sleep(args.poll)
    for proc, _ in running:
        proc.send_signal(signal.SIGTERM)
    for proc, _ in running + list(terminating.values()):
        try:
            proc.wait(timeout=args.grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    write_state()


# --- record ----------------------------------------------------------------------------


class ReadCounter:
    """Lines in the readers' sequence logs (one per event read), counted
    incrementally: each call reads only what the files gained."""

    def __init__(self, directory):
        self.directory = directory
        self.offsets = {}
        self.total = 0

    def count(self):
        for name in os.listdir(self.directory):
            if not name.endswith(".seq"):
                continue
            path = os.path.join(self.directory, name)
            offset = self.offsets.get(path, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk.rfind(b"\n") + 1
            self.offsets[path] = offset + complete
            self.total += chunk.count(b"\n", 0, complete)
        return self.total


def segments_now(args):
    if args.segments_command:
        out = subprocess.run(args.segments_command, shell=True, capture_output=True, text=True, timeout=5).stdout
        first = out.split()
        return float(first[0]) if first and first[0].isdigit() else None
    return sample(plain_get(args.controller), "pravega_controller_segments_count")


def record(args):
    stop = stop_on(signal.SIGTERM)
    api = Api(args.server, args.pki)
    reads = ReadCounter(args.sequence_logs) if args.sequence_logs else None
    read_before = 0
    started = time.monotonic()
    with open(args.out, "w") as out:
        out.write("\t".join(COLUMNS) + "\n")
        tick = 0
        while tick < args.seconds and not stop.is_set():
            row = {"t": round(time.monotonic() - started, 2)}
            try:
                row["event_rate"] = sample(plain_get(args.generator_metrics), "generator_target_rate")
            except Exception:  # the generator has stopped
                row["event_rate"] = None
            row["read_rate"] = None
            if reads:
                read_now = reads.count()
                row["read_rate"] = read_now - read_before if tick else None
                read_before = read_now
            try:
                row["segments"] = segments_now(args)
            except Exception:
                row["segments"] = None
            try:
                items = api.get(EXTERNAL)["items"]
                row["adapter_value"] = sum(quantity(i["value"]) for i in items) if items else None
            except Exception:
                row["adapter_value"] = None
            try:
                row["hpa_desired"] = api.get(HPA).get("status", {}).get("desiredReplicas")
            except Exception:
                row["hpa_desired"] = None
            try:
                row["replicas"] = api.get(DEPLOYMENT)["spec"].get("replicas")
            except Exception:
                row["replicas"] = None
            try:
                with open(args.state) as f:
                    row["readers"] = json.load(f)["readers"]
            except Exception:
                row["readers"] = None
            out.write("\t".join("" if row[c] is None else fmt(row[c]) for c in COLUMNS) + "\n")
            out.flush()
            tick += 1
            time.sleep(max(0.0, started + tick - time.monotonic()))


def quantity(text):
    """A Kubernetes Quantity as a float (the forms the adapter writes)."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    if text and text[-1] in suffixes:
        return float(text[:-1]) * suffixes[text[-1]]
    return float(text)


def fmt(value):
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


# --- analyze ---------------------------------------------------------------------------


def read_tsv(path):
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = []
        for line in f:
            cells = line.rstrip("\n").split("\t")
            rows.append({h: (float(c) if c else None) for h, c in zip(header, cells)})
    return rows


def stretches(rows, predicate):
    """Time-weighted total and longest run of consecutive samples where
    predicate(row) holds; a sample stands for the time until the next one."""
    total = longest = current = 0.0
    for row, following in zip(rows, rows[1:]):
        dt = following["t"] - row["t"]
        if predicate(row):
            current += dt
            total += dt
            longest = max(longest, current)
        else:
            current = 0.0
    return total, longest


def reactions(rows, scale_up):
    """For each change of the true segment count: seconds until the
    Deployment's replicas reached the new count (>= after a split, <= after a
    merge; with the HPA syncing slower than the stream scales, replicas often
    jump past several changes at once). None when it never did in the run."""
    out = []
    for i in range(1, len(rows)):
        before, now = rows[i - 1]["segments"], rows[i]["segments"]
        if before is None or now is None or now == before:
            continue
        up = now > before
        reacted = None
        for later in rows[i:]:
            if (later["replicas"] >= now) if up else (later["replicas"] <= now):
                reacted = later["t"] - rows[i]["t"]
                break
        out.append((rows[i]["t"], before, now, reacted, syncs_needed(rows[i]["replicas"], now, scale_up) if up else 1))
    return out


def scale_up_limit(rules):
    """The most replicas one sync may scale up to from R, as a function of R:
    without spec.behavior the legacy max(2 x R, 4); with it, the scale-up
    policies (Pods: R + value, Percent: R x (1 + value %), the largest
    unless selectPolicy is Min). Pods added earlier in a policy's period are
    not counted: an upper bound on what one sync allows."""
    if rules is None:
        return lambda r: max(2 * r, 4)
    policies = rules.get("policies") or []
    pick = min if rules.get("selectPolicy") == "Min" else max

    def limit(r):
        allowed = [r + p["value"] if p["type"] == "Pods" else math.ceil(r * (1 + p["value"] / 100)) for p in policies]
        return pick(allowed) if allowed else r

    return limit


def syncs_needed(replicas, target, scale_up):
    """HPA syncs to go from REPLICAS up to TARGET under the limit SCALE_UP."""
    syncs = 1
    while replicas is not None and target > scale_up(replicas) and scale_up(replicas) > replicas:
        replicas = scale_up(replicas)
        syncs += 1
    return syncs


def hpa_rules(path, downscale_flag):
    """From the HPA object as the API server holds it (kubectl get -o json):
    its scale-up rules (None without spec.behavior) and its scale-down
    stabilization window, which without one in spec.behavior is the
    controller's --horizontal-pod-autoscaler-downscale-stabilization."""
    with open(path) as f:
        behavior = json.load(f)["spec"].get("behavior")
    if behavior is None:
        return None, downscale_flag
    window = (behavior.get("scaleDown") or {}).get("stabilizationWindowSeconds")
    return behavior.get("scaleUp"), downscale_flag if window is None else float(window)


def surplus_ages(rows):
    """For each sample where more readers run than the stream has segments:
    how long ago the segment count last was at least that many readers, the
    age of the surplus (the time since the segments it stands for went)."""
    out = []
    for i, row in enumerate(rows):
        if row["readers"] is None or row["readers"] <= row["segments"]:
            continue
        j = i
        while j > 0 and rows[j]["segments"] < row["readers"]:
            j -= 1
        out.append((row["t"], row["t"] - rows[j]["t"]))
    return out


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def analyze(args):
    rows = [r for r in read_tsv(args.tsv) if r["segments"] is not None and r["replicas"] is not None]
    failures = []
    if len(rows) < 30:
        sys.exit(f"FAILED: only {len(rows)} complete samples in {args.tsv}")
    span = rows[-1]["t"] - rows[0]["t"]
    mismatch, mismatch_longest = stretches(rows, lambda r: r["replicas"] != r["segments"])
    over, over_longest = stretches(rows, lambda r: r["readers"] is not None and r["readers"] > r["segments"])
    scale_up_rules, window = hpa_rules(args.hpa, args.downscale_stabilization)
    changes = reactions(rows, scale_up_limit(scale_up_rules))
    timed = [c[3] for c in changes if c[3] is not None]
    limited = sum(1 for c in changes if c[4] > 1)
    unreached = sum(1 for c in changes if c[3] is None)
    ages = surplus_ages(rows)
    oldest = max(ages, key=lambda a: a[1], default=(None, 0.0))
    distinct = sorted({r["segments"] for r in rows})
    print(f"FIGURE samples {len(rows)} over {span:.0f} s, segment counts seen {[int(d) for d in distinct]}")
    print(f"FIGURE replicas != segments: {100 * mismatch / span:.1f} % of the run (time-weighted), longest {mismatch_longest:.1f} s")
    print(f"FIGURE readers > segments: {100 * over / span:.1f} % of the run, longest stretch {over_longest:.1f} s")
    # A reader outlives its segment by the scale-down window, one sync, its
    # hand-off and the slack at most; a merge reaches the replicas within
    # the window, one sync and the slack.
    bound = window + args.sync + args.handoff + args.slack
    print(f"FIGURE oldest reader surplus: {oldest[1]:.1f} s (at t={oldest[0]} s; bound {bound:.1f} s)")
    for what, group in (("split", [c for c in changes if c[2] > c[1]]), ("merge", [c for c in changes if c[2] < c[1]])):
        took = [c[3] for c in group if c[3] is not None]
        if took:
            print(
                f"FIGURE HPA reaction to a {what} (segment change -> Deployment replicas) over {len(took)} changes: "
                f"p50 {percentile(took, 50):.1f} s, max {max(took):.1f} s "
                f"({sum(1 for c in group if c[3] is None)} not reached by the end of the run)"
            )
    if timed:
        print(f"FIGURE HPA reaction, all changes: p50 {percentile(timed, 50):.1f} s, max {max(timed):.1f} s ({unreached} not reached)")
        print(f"FIGURE scale-down stabilization window {window:.0f} s; splits the scale-up limit needed more than one sync for: {limited}")
    # What the loop must do.
    if len(distinct) < args.min_segment_counts:
        failures.append(f"the true segment count took only {len(distinct)} values: the load did not move the stream")
    if not timed:
        failures.append("the Deployment never followed a segment change")
    if oldest[1] > bound:
        failures.append(f"readers exceeded the segment count of {oldest[1]:.1f} s earlier (t={oldest[0]} s), more than the bound {bound:.1f} s")
    if max((r["replicas"] for r in rows), default=0) < max(distinct):
        failures.append(f"replicas never reached the peak segment count {max(distinct):.0f}")
    # A split reaches the replicas within the syncs the HPA's scale-up
    # limit needs (one with hpa/'s behavior) plus the slack; a merge within
    # the scale-down window, one sync and the slack.
    for t, before, now, took, syncs in changes:
        allowed = (0 if now > before else window) + syncs * args.sync + args.slack
        if took is not None and took > allowed:
            failures.append(
                f"segments {before:.0f} -> {now:.0f} at t={t:.0f} s reached the replicas after {took:.1f} s, "
                f"more than {allowed:.0f} s ({'' if now > before else f'window {window:.0f} s + '}{syncs} sync(s) + {args.slack:.0f} s)"
            )
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("supervise")
    s.add_argument("--server", required=True)
    s.add_argument("--pki", required=True)
    s.add_argument("--reader", required=True)
    s.add_argument("--reader-arg", action="append", default=[], help="passed to every reader; {index} becomes its number")
    s.add_argument("--state", required=True)
    s.add_argument("--log-dir", required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--first-port", type=int, default=18100)
    s.add_argument("--poll", type=float, default=0.5)
    s.add_argument("--grace", type=float, default=30.0)
    r = commands.add_parser("record")
    r.add_argument("--server", required=True)
    r.add_argument("--pki", required=True)
    truth = r.add_mutually_exclusive_group(required=True)
    truth.add_argument("--controller", help="the simulator's /prometheus URL")
    truth.add_argument("--segments-command", help="a shell command whose output starts with the segment count")
    r.add_argument("--generator-metrics", required=True, help="the generator's (or simulator's) /metrics URL")
    r.add_argument("--sequence-logs", help="the directory of the readers' sequence logs (NAME.seq)")
    r.add_argument("--state", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--seconds", type=int, required=True, help="at most; SIGTERM ends the recording sooner")
    w = commands.add_parser("window", help="print the HPA's scale-down stabilization window, s")
    w.add_argument("hpa", help="the HPA as the API server holds it (kubectl get hpa -o json)")
    w.add_argument("--downscale-stabilization", type=float, required=True)
    a = commands.add_parser("analyze")
    a.add_argument("tsv")
    a.add_argument("--sync", type=float, required=True, help="the HPA sync period, s")
    a.add_argument("--handoff", type=float, required=True, help="the slowest reader's SIGTERM-to-exit, s")
    a.add_argument("--slack", type=float, default=5.0, help="staleness, ticks, polls and sampling, s")
    a.add_argument("--hpa", required=True, help="the HPA as the API server holds it (kubectl get hpa -o json)")
    a.add_argument(
        "--downscale-stabilization", type=float, required=True, help="kube-controller-manager's --horizontal-pod-autoscaler-downscale-stabilization, s"
    )
    a.add_argument("--min-segment-counts", type=int, default=3, help="distinct true segment counts the run must see")
    args = parser.parse_args()
    if args.command == "supervise":
        supervise(args)
    elif args.command == "record":
        record(args)
    elif args.command == "window":
        print(round(hpa_rules(args.hpa, args.downscale_stabilization)[1]))
    else:
        sys.exit(analyze(args))


if __name__ == "__main__":
    main()
