{{/*
Named templates shared by the manifests. The selector labels are the stable subset (a Deployment's
selector cannot change after creation); the full labels add version and ownership.
*/}}

{{- define "tradesim.namespace" -}}
{{ .Values.global.namespace | default .Release.Namespace }}
{{- end }}

{{- define "tradesim.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tradesim.labels" -}}
{{ include "tradesim.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The database Secret: the chart's own, or the one named by postgres.existingSecret. */}}
{{- define "tradesim.dbSecret" -}}
{{ .Values.postgres.existingSecret | default (printf "%s-db" .Release.Name) }}
{{- end }}

{{/*
The tradesim configuration file (TOML): one [[instruments]] table per entry of `symbols`, then `config`.
JSON strings, numbers and arrays are valid TOML values, so toJson writes each instrument key.
*/}}
{{- define "tradesim.config" -}}
# tradesim configuration rendered by the Helm chart from `symbols` and `config` (values.yaml).
{{- range .Values.symbols }}

[[instruments]]
{{- range $key, $value := . }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}

{{ .Values.config }}
{{- end }}
