#!/usr/bin/env python3
"""The parts of tests/e2e/loop.sh that run for minutes:

  pods       watches the node's pods: the flink-taskmanager pods whose
             reader runs (a terminating one counts until it exits), when
             each stopped, their restarts, and every pod's memory peaks
             from its cgroup, into a state file.
  handoffs   each reader's SIGTERM (its log) to its container stopped.
  pod-logs   hard-links the kubelet's container logs into a directory, so
             they outlive their pods (scale-down deletes them).
  record     samples the loop once a second into a TSV file: the event
             rate the generator targets, the events the readers read per
             second (from their sequence logs), the true segment count (the
             simulator's gauge, or a command such as pravega-segments that
             asks Pravega's controller), the adapter's value, the HPA's
             desired replicas, the Deployment's replicas, running readers
             (from the pods' state file).
  window     prints the scale-down stabilization window of an HPA.
  analyze    reads the TSV and checks the loop; prints FIGURE lines.

Only the standard library: it runs where run.sh runs.
"""

import argparse
import calendar
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


# --- pods ------------------------------------------------------------------------------


def cgroup_of(root, uid, cache):
    """The pod's memory cgroup directory under ROOT (the kubelet's cgroupRoot
    in the memory hierarchy), or None while it does not exist."""
    if uid not in cache:
        for path, dirs, _ in os.walk(root):
            if f"pod{uid}" in dirs:
                cache[uid] = os.path.join(path, f"pod{uid}")
                break
        else:
            return None
    return cache[uid]


def memory_of(cgroup):
    """(cgroup peak, the sum of its processes' peak resident sets), MiB:
    memory.max_usage_in_bytes counts page cache too (cgroup v1), VmHWM counts
    the binary's mapped pages wherever they were charged."""
    try:
        with open(os.path.join(cgroup, "memory.max_usage_in_bytes")) as f:
            peak = int(f.read()) / 1048576
    except OSError:
        return None
    hwm = 0
    for path, _, files in os.walk(cgroup):
        if "cgroup.procs" not in files:
            continue
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = f.read().split()
        except OSError:  # the container's cgroup went with it
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as status:
                    hwm += next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
            except (OSError, StopIteration):
                pass
    return peak, hwm / 1024


def running(pod):
    return any("running" in c.get("state", {}) for c in pod.get("status", {}).get("containerStatuses") or [])


def pods(args):
    """Watches the pods of NAMESPACES until SIGTERM: the flink-taskmanager
    pods running a container (a terminating pod counts until its container
    exits, as it holds its segments until then), when each was first seen
    stopped (not running, or gone) after running, their restarts, and every
    pod's memory peaks from its cgroup. Writes them to --state."""
    api = Api(args.server, args.pki)
    stop = stop_on(signal.SIGTERM, signal.SIGINT)
    seen_running = set()  # taskmanager pods seen running
    stopped = {}  # taskmanager pod name -> when first seen stopped (Unix time)
    restarts = {}  # taskmanager pod name -> its highest restartCount
    memory = {}  # "namespace/pod" -> {"cgroup_peak_mib", "rss_peak_mib"}
    cgroups = {}
    readers = 0
    while True:
        final = stop.is_set()  # one more poll after SIGTERM: what happened meanwhile
        try:
            listed = [p for ns in args.namespaces for p in api.get(f"/api/v1/namespaces/{ns}/pods")["items"]]
        except Exception as error:  # the apiserver is briefly away: keep what was seen
            log("pods: listing failed:", error)
            listed = None
        if listed is not None:
            now = time.time()
            names = set()
            readers = 0
            for pod in listed:
                meta = pod["metadata"]
                name = meta["name"]
                if meta.get("labels", {}).get("app.kubernetes.io/name") == "flink-taskmanager":
                    names.add(name)
                    restarts[name] = max(
                        [restarts.get(name, 0)] + [c.get("restartCount", 0) for c in pod.get("status", {}).get("containerStatuses") or []]
                    )
                    if running(pod):
                        readers += 1
                        seen_running.add(name)
                    elif name in seen_running:
                        stopped.setdefault(name, now)
                cgroup = cgroup_of(args.cgroup_root, meta["uid"], cgroups)
                sample = memory_of(cgroup) if cgroup else None
                if sample:
                    key = f"{meta['namespace']}/{name}"
                    seen = memory.get(key, {"cgroup_peak_mib": 0, "rss_peak_mib": 0})
                    memory[key] = {"cgroup_peak_mib": round(max(seen["cgroup_peak_mib"], sample[0]), 1),
                                   "rss_peak_mib": round(max(seen["rss_peak_mib"], sample[1]), 1)}
            for name in seen_running - names:  # gone from the API
                stopped.setdefault(name, now)
        tmp = args.state + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"readers": readers, "stopped": stopped, "restarts": sum(restarts.values()), "memory": memory}, f)
        os.replace(tmp, args.state)
        if final:
            break
        stop.wait(args.poll)


def cri_time(line):
    """The Unix time of a CRI log line (RFC 3339 with nanoseconds, UTC)."""
    stamp = line.split(" ", 1)[0].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (fraction or "0"))


def handoffs(args):
    """Each reader's hand-off: from the SIGTERM it logged (its container log's
    time stamp) to its container first seen stopped by `pods` (an upper
    bound, within that poll). Prints `POD SECONDS` lines, slowest last."""
    with open(args.state) as f:
        stopped = json.load(f)["stopped"]
    out = []
    for name, at in stopped.items():
        try:
            with open(os.path.join(args.logs, f"{name}.log"), errors="replace") as f:
                signalled = [cri_time(line) for line in f if "SIGTERM received" in line]
        except OSError:
            continue
        if signalled:
            out.append((round(at - signalled[0], 3), name))
    for seconds, name in sorted(out):
        print(name, seconds)


# --- pod-logs --------------------------------------------------------------------------


def pod_logs(args):
    """Until SIGTERM: hard-links each container log of the node's pod-logs
    directory (NAMESPACE_POD_UID/CONTAINER/RESTART.log) into --into as
    POD.log (POD.RESTART.log for a restarted container). The link keeps the
    file once the kubelet removes it with its pod, and the kubelet appends
    to the same file until the container exits."""
    stop = stop_on(signal.SIGTERM, signal.SIGINT)
    while True:
        final = stop.is_set()  # one more pass after SIGTERM
        for pod_dir in os.listdir(args.pod_logs):
            parts = pod_dir.split("_")
            if len(parts) != 3 or parts[0] not in args.namespaces:
                continue
            for path, _, files in os.walk(os.path.join(args.pod_logs, pod_dir)):
                for name in files:
                    restart = name.split(".")[0]
                    if not name.endswith(".log") or not restart.isdigit():
                        continue
                    link = os.path.join(args.into, f"{parts[1]}.log" if restart == "0" else f"{parts[1]}.{restart}.log")
                    if not os.path.exists(link):
                        try:
                            os.link(os.path.join(path, name), link)
                        except FileNotFoundError:  # removed in between
                            pass
        if final:
            break
        stop.wait(args.poll)


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
        generator = "not reached"
        while tick < args.seconds and not stop.is_set():
            row = {"t": round(time.monotonic() - started, 2)}
            row["event_rate"] = None
            if generator != "stopped":
                try:
                    row["event_rate"] = sample(plain_get(args.generator_metrics), "generator_target_rate")
                    generator = "reached"
                except Exception:
                    # Once reached, it has stopped: its pod's address is gone,
                    # and asking again would wait out the timeout every second.
                    if generator == "reached":
                        generator = "stopped"
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
    p = commands.add_parser("pods")
    p.add_argument("--server", required=True)
    p.add_argument("--pki", required=True)
    p.add_argument("--namespaces", nargs="+", required=True)
    p.add_argument("--cgroup-root", required=True, help="the kubelet's cgroupRoot in the memory hierarchy")
    p.add_argument("--state", required=True)
    p.add_argument("--poll", type=float, default=0.5)
    h = commands.add_parser("handoffs", help="each reader's SIGTERM (its log) to its container seen stopped")
    h.add_argument("state", help="the state file of `pods`")
    h.add_argument("logs", help="the directory of the pods' logs (POD.log)")
    g = commands.add_parser("pod-logs")
    g.add_argument("pod_logs", help="the kubelet's podLogsDir")
    g.add_argument("--into", required=True)
    g.add_argument("--namespaces", nargs="+", required=True)
    g.add_argument("--poll", type=float, default=0.5)
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
    if args.command == "pods":
        pods(args)
    elif args.command == "pod-logs":
        pod_logs(args)
    elif args.command == "handoffs":
        handoffs(args)
    elif args.command == "record":
        record(args)
    elif args.command == "window":
        print(round(hpa_rules(args.hpa, args.downscale_stabilization)[1]))
    else:
        sys.exit(analyze(args))


if __name__ == "__main__":
    main()
