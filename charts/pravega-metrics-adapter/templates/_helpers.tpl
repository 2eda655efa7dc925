{{/* The labels of the adapter's objects: the manifests' one, plus commonLabels. */}}
{{- define "pma.labels" -}}
app.kubernetes.io/name: {{ .Values.name }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod selector: the name label alone, as in the manifests. */}}
{{- define "pma.selector" -}}
app.kubernetes.io/name: {{ .Values.name }}
{{- end }}

{{/* The adapter's namespace. */}}
{{- define "pma.namespace" -}}
{{ required "namespace.name is required" .Values.namespace.name }}
{{- end }}

{{/* The Secret with the serving certificate. */}}
{{- define "pma.servingSecret" -}}
{{ .Values.servingCert.secretName | default (printf "%s-serving-cert" .Values.name) }}
{{- end }}

{{/* The APIServices: group, version, versionPriority. */}}
{{- define "pma.apiServices" -}}
{{- $list := list -}}
{{- if .Values.apiServices.custom -}}
{{- $list = append $list (list "custom.metrics.k8s.io" "v1beta1" 100) -}}
{{- $list = append $list (list "custom.metrics.k8s.io" "v1beta2" 200) -}}
{{- end -}}
{{- if .Values.apiServices.external -}}
{{- $list = append $list (list "external.metrics.k8s.io" "v1beta1" 100) -}}
{{- end -}}
{{- toJson $list -}}
{{- end }}

{{/* An HPA behavior: `behavior` if set, else built from `h`'s tolerance,
scaleUp and scaleDown with up to `max` pods added per period. */}}
{{- define "pma.behavior" -}}
{{- with .behavior -}}
{{ toYaml . }}
{{- else -}}
scaleUp:
  stabilizationWindowSeconds: {{ .h.scaleUp.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Pods
      value: {{ .h.scaleUp.pods | default .max }}
      periodSeconds: {{ .h.scaleUp.periodSeconds }}
  {{- if not (kindIs "invalid" .h.tolerance) }}
  tolerance: {{ .h.tolerance }}
  {{- end }}
scaleDown:
  stabilizationWindowSeconds: {{ .h.scaleDown.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Percent
      value: {{ .h.scaleDown.percent }}
      periodSeconds: {{ .h.scaleDown.periodSeconds }}
  {{- if not (kindIs "invalid" .h.tolerance) }}
  tolerance: {{ .h.tolerance }}
  {{- end }}
{{- end }}
{{- end }}
