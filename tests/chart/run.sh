#!/usr/bin/env bash
# The Helm chart's tests (`make test-chart`, part of `make test`): its README
# is what scripts/chart-readme.py generates; `helm lint --strict` and
# `helm template` pass for the defaults and for values that take every
# branch of the templates; and each rendering that has a kustomize
# counterpart equals it object by object (equivalence.py). The server-side
# dry run of the rendering against a real kube-apiserver is the e2e test's.
#
# helm is built from the Go module proxy by obtain-helm.sh (once; cached
# outside the checkout). When the module proxy refuses a download, it prints
# SKIPPED and exits 0; any failed check exits non-zero.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
chart=$root/charts/pravega-metrics-adapter
kubectl=${KUBECTL:-kubectl}

log() { printf '[chart] %s\n' "$*"; }
fail() { printf '[chart] FAILED: %s\n' "$*" >&2; exit 1; }

python3 "$root/scripts/chart-readme.py" --check
log "PASS the chart's README is generated from values.yaml"

obtained=0
helm=$("$here/obtain-helm.sh") || obtained=$?
if [ $obtained -eq 3 ]; then
  printf '\n**********************************************************************\n'
  printf '* chart SKIPPED: cannot build helm from the Go module proxy: %s\n' "$helm"
  printf '**********************************************************************\n\n'
  exit 0
fi
[ $obtained -eq 0 ] || fail "tests/chart/obtain-helm.sh failed (exit status $obtained)"

# Value sets: the defaults, each optional part, and every flag and override.
variants=(
  ""
  "workload.enabled=true,workload.createNamespace=true"
  "hpa.enabled=true"
  "hpa.enabled=true,hpa.metricType=Object,apiServices.external=false"
  "hpa.enabled=true,hpa.tolerance=null,hpa.scaleUp.pods=8,hpa.scaleDown.stabilizationWindowSeconds=300"
  "servingCert.certManager.enabled=true"
  "kedaScaler.enabled=true,kedaScaler.port=9500,kedaScaler.clientCaSecret=ca,scaledObject.enabled=true,apiServices.external=false"
  "kedaScaler.enabled=true,scaledObject.enabled=true,scaledObject.triggerType=external,scaledObject.minReplicaCount=0,scaledObject.activationThreshold=1,scaledObject.streams.scope=null,scaledObject.streams.stream=null,scaledObject.streams.labelSelector=scope=test"
  "servingCert.certManager.enabled=true,servingCert.certManager.issuerRef.kind=ClusterIssuer,servingCert.certManager.issuerRef.name=corp-ca"
  "servingCert.caBundle=Y2E=,servingCert.secretName=my-cert,namespace.create=false,namespace.name=metrics,podDisruptionBudget.enabled=false,topologySpread.enabled=false,rbac.bindHpaController=false"
  "controllers.namespace=,controllers.urls={http://10.0.0.1:10080/prometheus},controllerApi.urls={tcp://10.0.0.1:9090},controllerApi.callsPerSecond=5,controllerApi.refresh=60s,controllerApi.timeout=2s"
  "controllers.selector=app=controller,controllers.port=9999,controllers.path=/metrics,controllers.scheme=https,controllerApi.port=9091"
  "namespaceScopes.mode=listed,namespaceScopes.scopes.flink={test,orders},extraArgs={--scrape-interval=5s},image.tag=dev,image.pullPolicy=Always,commonLabels.team=data,priorityClassName=high,nodeSelector.disk=ssd,podAnnotations.a=b"
)
for values in "${variants[@]}"; do
  set_args=()
  [ -z "$values" ] || set_args=(--set "$values")
  out=$("$helm" lint --strict "$chart" "${set_args[@]}" 2>&1) || fail "helm lint --strict ${values:-(defaults)}: $out"
  out=$("$helm" template pravega-metrics-adapter "$chart" "${set_args[@]}" 2>&1) || fail "helm template ${values:-(defaults)}: $out"
  python3 -c 'import sys, yaml; list(yaml.safe_load_all(sys.stdin))' <<<"$out" || fail "helm template ${values:-(defaults)} is not YAML"
done
log "PASS helm lint --strict and helm template, ${#variants[@]} value sets"

# A few renderings the equivalence cannot see.
render() { "$helm" template pravega-metrics-adapter "$chart" --set "$1"; }
out=$(render "hpa.enabled=true,hpa.tolerance=null")
! grep -q tolerance <<<"$out" || fail "hpa.tolerance=null still renders a tolerance"
out=$(render "hpa.enabled=true,hpa.maxReplicas=40")
grep -qx '          value: 40' <<<"$out" || fail "the scale-up Pods policy does not follow hpa.maxReplicas"
out=$(render "namespaceScopes.scopes.flink={test,orders}")
grep -qx -- '            - --namespace-scope=flink=test,orders' <<<"$out" || fail "namespaceScopes.scopes does not render --namespace-scope"
if out=$(render "hpa.enabled=true,hpa.metricType=Resource" 2>&1); then fail "hpa.metricType=Resource rendered"; fi
log "PASS tolerance, scale-up policy, namespace scopes and a wrong metric type render as documented"

python3 "$here/equivalence.py" --helm "$helm" --kubectl "$kubectl" || fail "the chart and the kustomize manifests differ (above)"
log "ALL PASSED"
