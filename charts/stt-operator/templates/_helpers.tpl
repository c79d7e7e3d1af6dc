{{/* Chart name, truncated to the 63-character DNS label limit. */}}
{{- define "stt-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, or the release name alone when it already holds the chart name. */}}
{{- define "stt-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "stt-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stt-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stt-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "stt-operator.labels" -}}
helm.sh/chart: {{ include "stt-operator.chart" . }}
{{ include "stt-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: stt-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "stt-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "stt-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image reference: repository@digest when a digest is pinned, else repository:tag. */}}
{{- define "stt-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "stt-operator.jobsImage" -}}
{{- if .Values.jobsImage.digest -}}
{{- printf "%s@%s" .Values.jobsImage.repository .Values.jobsImage.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.jobsImage.repository (default .Chart.AppVersion .Values.jobsImage.tag) -}}
{{- end -}}
{{- end -}}

{{/* Peering needs the objects the chart creates; with two or more replicas it is mandatory. */}}
{{- define "stt-operator.peeringName" -}}
{{- if .Values.peering.enabled -}}
{{- .Values.peering.name -}}
{{- else if gt (int .Values.replicaCount) 1 -}}
{{- fail "peering.enabled must be true when replicaCount > 1: Kopf replicas without peering would handle every resource twice" -}}
{{- end -}}
{{- end -}}

{{/*
Argo CD's actions block of one kind: discovery.lua and one definition per actions/<name>/action.lua.
*/}}
{{- define "stt-operator.argocdActions" -}}
discovery.lua: |
  {{- .Files.Get (printf "files/argocd/stt.dev/%s/actions/discovery.lua" .kind) | trim | nindent 2 }}
definitions:
{{- range $path, $_ := .Files.Glob (printf "files/argocd/stt.dev/%s/actions/*/action.lua" .kind) }}
- name: {{ base (dir $path) }}
  action.lua: |
    {{- $.Files.Get $path | trim | nindent 4 }}
{{- end }}
{{- end }}
