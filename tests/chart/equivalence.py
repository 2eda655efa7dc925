#!/usr/bin/env python3
"""The chart renders what the kustomize manifests render, object by object.

Each case renders the chart (`helm template`, with a few --set values) and a
set of kustomize directories and plain files (`kubectl kustomize`, or the
files as they are), parses both, sorts the objects by kind, namespace and
name, and compares them as parsed YAML: any difference in any field, or an
object on one side only, fails the case and prints the difference.

    tests/chart/equivalence.py --helm HELM [--kubectl KUBECTL]
"""
import argparse
import difflib
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "pravega-metrics-adapter")

# (what, --set values, kustomize directories, plain files)
CASES = [
    ("defaults = manifests/adapter + apiservice", [], ["manifests/adapter", "apiservice"], []),
    (
        "workload = manifests/ + apiservice",
        ["workload.enabled=true", "workload.createNamespace=true"],
        ["manifests", "apiservice"],
        [],
    ),
    (
        "External HPA = + hpa/flink-taskmanager-external.yaml",
        ["hpa.enabled=true"],
        ["manifests/adapter", "apiservice"],
        ["hpa/flink-taskmanager-external.yaml"],
    ),
    (
        "Object HPA = + hpa/flink-taskmanager-object.yaml",
        ["hpa.enabled=true", "hpa.metricType=Object"],
        ["manifests/adapter", "apiservice"],
        ["hpa/flink-taskmanager-object.yaml"],
    ),
    (
        "KEDA scaler = manifests/keda + apiservice",
        ["kedaScaler.enabled=true"],
        ["manifests/keda", "apiservice"],
        [],
    ),
    (
        "ScaledObject = manifests/keda + apiservice + hpa/flink-taskmanager-keda.yaml",
        ["kedaScaler.enabled=true", "scaledObject.enabled=true"],
        ["manifests/keda", "apiservice"],
        ["hpa/flink-taskmanager-keda.yaml"],
    ),
    (
        "cert-manager = manifests/adapter + apiservice/cert-manager",
        ["servingCert.certManager.enabled=true"],
        ["manifests/adapter", "apiservice/cert-manager"],
        [],
    ),
]


def objects(text, origin):
    out = {}
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        meta = doc.get("metadata", {})
        key = (doc.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))
        if key in out:
            sys.exit(f"{origin}: {key} appears twice")
        out[key] = doc
    return out


def run(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    return result.stdout


def dump(doc):
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False).splitlines()


def compare(chart, kustomize):
    problems = []
    for key in sorted(set(chart) | set(kustomize)):
        name = "/".join(part for part in key if part)
        if key not in kustomize:
            problems.append(f"only the chart renders {name}")
        elif key not in chart:
            problems.append(f"only kustomize renders {name}")
        elif chart[key] != kustomize[key]:
            diff = difflib.unified_diff(dump(kustomize[key]), dump(chart[key]), "kustomize", "chart", lineterm="")
            problems.append(f"{name} differs:\n" + "\n".join(diff))
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--helm", required=True)
    parser.add_argument("--kubectl", default="kubectl")
    args = parser.parse_args()
    failed = 0
    for what, values, directories, files in CASES:
        command = [args.helm, "template", "pravega-metrics-adapter", CHART]
        for value in values:
            command += ["--set", value]
        chart = objects(run(command), "helm template")
        kustomize = {}
        for directory in directories:
            kustomize.update(objects(run([args.kubectl, "kustomize", directory]), directory))
        for path in files:
            with open(os.path.join(ROOT, path)) as f:
                kustomize.update(objects(f.read(), path))
        problems = compare(chart, kustomize)
        if problems:
            failed += 1
            print(f"FAIL {what}:")
            for problem in problems:
                print("  " + problem.replace("\n", "\n    "))
        else:
            print(f"PASS {what}: {len(chart)} objects equal")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
