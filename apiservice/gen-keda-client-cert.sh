#!/usr/bin/env bash
# Creates a CA for KEDA's client certificates and one client certificate,
# for the adapter's KEDA external scaler port (docs/keda.md):
#   - Secret pravega-metrics/pravega-metrics-adapter-keda-client-ca (ca.crt):
#     what the adapter's --keda-client-ca-file verifies clients against;
#   - Secret pravega/flink-taskmanager-keda-tls (ca.crt: the CA of the
#     adapter's serving certificate; tls.crt, tls.key: the client's), which
#     hpa/flink-taskmanager-keda.yaml's TriggerAuthentication reads.
#
#   apiservice/gen-keda-client-cert.sh             # current kubectl context; reads the
#                                                  # serving CA from the serving-cert Secret
#   apiservice/gen-keda-client-cert.sh --out DIR --serving-ca FILE
#                                                  # writes files only, touches no cluster
#
# --out DIR writes client-ca.crt, tls.crt, tls.key, the two Secrets and a
# kustomization.yaml that renders them: `kubectl apply -k DIR`. Each run
# makes a new CA (its key never leaves a temporary directory); restart the
# adapter after a rerun, it reads --keda-client-ca-file at start.
set -euo pipefail

adapter_namespace=pravega-metrics
serving_secret=pravega-metrics-adapter-serving-cert
ca_secret=pravega-metrics-adapter-keda-client-ca
namespace=pravega
secret=flink-taskmanager-keda-tls
days=365
out=
serving_ca=

usage() {
  cat <<USAGE
Usage: $0 [--out DIR --serving-ca FILE] [--namespace NS] [--secret NAME] [--days N]

Defaults: --namespace $namespace (the ScaledObject's) --secret $secret --days $days
USAGE
}
die() { printf 'gen-keda-client-cert: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --serving-ca) serving_ca=${2:?--serving-ca needs a file}; shift 2 ;;
    --namespace) namespace=${2:?--namespace needs a value}; shift 2 ;;
    --secret) secret=${2:?--secret needs a value}; shift 2 ;;
    --days) days=${2:?--days needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ $days =~ ^[1-9][0-9]*$ ]] || die "--days must be a positive integer, got '$days'"
[ -z "$out" ] || [ -n "$serving_ca" ] || die "--out needs --serving-ca (the CA of the adapter's serving certificate)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "$serving_ca" ]; then
  cp "$serving_ca" "$tmp/serving-ca.crt"
else
  kubectl -n "$adapter_namespace" get secret "$serving_secret" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$tmp/serving-ca.crt"
  [ -s "$tmp/serving-ca.crt" ] || die "no ca.crt in Secret $adapter_namespace/$serving_secret (apiservice/gen-serving-cert.sh makes it)"
fi
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=pravega-metrics-adapter-keda-client-ca" \
  -keyout "$tmp/ca.key" -out "$tmp/client-ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=keda-operator" -keyout "$tmp/tls.key" -out "$tmp/tls.csr" 2>/dev/null
openssl x509 -req -in "$tmp/tls.csr" -CA "$tmp/client-ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial -days "$days" \
  -extfile <(printf 'extendedKeyUsage=clientAuth\n') -out "$tmp/tls.crt" 2>/dev/null

secrets() {
  kubectl create secret generic "$ca_secret" -n "$adapter_namespace" --from-file=ca.crt="$tmp/client-ca.crt" \
    --dry-run=client -o yaml
  echo ---
  kubectl create secret generic "$secret" -n "$namespace" --from-file=ca.crt="$tmp/serving-ca.crt" \
    --from-file=tls.crt="$tmp/tls.crt" --from-file=tls.key="$tmp/tls.key" --dry-run=client -o yaml
}
if [ -n "$out" ]; then
  mkdir -p "$out"
  cp "$tmp/client-ca.crt" "$tmp/tls.crt" "$tmp/tls.key" "$out/"
  secrets >"$out/keda-secrets.yaml"
  printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - keda-secrets.yaml\n' >"$out/kustomization.yaml"
  echo "wrote $out: kubectl apply -k $out"
else
  secrets | kubectl apply -f -
  echo "restart the adapter to read the new client CA: kubectl -n $adapter_namespace rollout restart deployment pravega-metrics-adapter"
fi
