{{/* Names: <release>-sesame, or the release name when it already contains "sesame". */}}
{{- define "sesame.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sesame.webhookService" -}}
{{- printf "%s-webhook" (include "sesame.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sesame.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "sesame.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Non-empty when replicas > 1: Kopf peering between the replicas. */}}
{{- define "sesame.peering" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end -}}
{{- end -}}

{{- define "sesame.peeringName" -}}
{{- include "sesame.fullname" . -}}
{{- end -}}

{{/* Kopf peering (replicas > 1): watch the peering objects, keep-alives into our own one only. */}}
{{- define "sesame.peeringRules" -}}
- apiGroups: [kopf.dev]
  resources: [{{ .resource }}]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [{{ .resource }}]
  resourceNames: [{{ .name }}]
  verbs: [patch]
{{- end -}}

{{- define "sesame.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sesame.labels" -}}
{{ include "sesame.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: sesame
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sesame.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The operator's permissions: exactly the API calls Sesame and Kopf make for TaskRuns
(charts/sesame/rbac-reviewed.yaml explains each rule; tests/unit/test_chart_rbac.py keeps them equal).
Rendered into one ClusterRole (watchNamespaces: []) or into a Role in each watched namespace.
*/}}
{{- define "sesame.operatorRules" -}}
- apiGroups: [sesame.dev]
  resources: [taskruns]
  verbs: [list, watch]
- apiGroups: [sesame.dev]
  resources: [taskruns/status]
  verbs: [patch]
- apiGroups: [sesame.dev]
  resources: [taskruns/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [pods]
  verbs: [create, get, list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
