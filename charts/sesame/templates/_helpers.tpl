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

{{/*
Non-empty when Helm renders against a live cluster (install, upgrade, --dry-run=server): `lookup`
answers there, and returns nothing under `helm template` and `helm lint`, which have no cluster.
The checks that need the cluster (CRDs, cert-manager, namespaces, other releases) run only then.
*/}}
{{- define "sesame.live" -}}
{{- if lookup "v1" "Namespace" "" "kube-system" }}true{{ end -}}
{{- end -}}

{{/* "<namespace>/<release>" of a Helm-made object, from the annotations Helm puts on it. */}}
{{- define "sesame.owner" -}}
{{- $annotations := .metadata.annotations | default dict -}}
{{- printf "%s/%s" (get $annotations "meta.helm.sh/release-namespace") (get $annotations "meta.helm.sh/release-name") -}}
{{- end -}}

{{/* The operator Role or ClusterRole of a Sesame release (this chart names it <fullname>-operator). */}}
{{- define "sesame.isOperatorRole" -}}
{{- $labels := .metadata.labels | default dict -}}
{{- if and (eq (get $labels "app.kubernetes.io/part-of") "sesame") (hasSuffix "-operator" .metadata.name) }}true{{ end -}}
{{- end -}}

{{/*
Every value combination that cannot work stops the render with one line that names the value.
Nothing is created when a template fails: Helm renders everything before it creates anything.
*/}}
{{- define "sesame.validate" -}}
{{- if and (gt (int .Values.replicas) 1) .Values.webhook.enabled (not .Values.webhook.certManager.enabled) -}}
{{- fail (printf "replicas: %v replicas with webhook.enabled need webhook.certManager.enabled=true. Every replica serves admissions behind one Service, so they must share one certificate; without cert-manager each replica would generate its own CA and replace the others' in the webhook configuration. Set webhook.certManager.enabled=true, or replicas: 1, or webhook.enabled=false." .Values.replicas) -}}
{{- end -}}
{{- range .Values.watchNamespaces -}}
{{- if has . (list "kube-system" "kube-public" "kube-node-lease" $.Release.Namespace) -}}
{{- fail (printf "watchNamespaces: %s is never served: TaskRuns there would run beside the cluster's own components or, in the release's namespace %s, beside the operator's own ServiceAccount. List the namespaces of your workloads only." . $.Release.Namespace) -}}
{{- end -}}
{{- end -}}
{{- $health := .Values.health.bindAddress | default "0.0.0.0" -}}
{{- if or (hasPrefix "127." $health) (eq $health "::1") -}}
{{- fail (printf "health.bindAddress: %s is a loopback address, but the kubelet probes the pod's IP; use 0.0.0.0 or ::" $health) -}}
{{- end -}}
{{- if include "sesame.live" . -}}
{{- if not (.Capabilities.APIVersions.Has "sesame.dev/v1alpha1/TaskRun") -}}
{{- fail "the TaskRun CRD (taskruns.sesame.dev/v1alpha1) is not installed in this cluster: Helm installs the chart's crds/ on first install unless --skip-crds; apply them first: kubectl apply --server-side -f charts/sesame/crds/" -}}
{{- end -}}
{{- if and (include "sesame.peering" .) (not (.Capabilities.APIVersions.Has (printf "kopf.dev/v1/%s" (ternary "KopfPeering" "ClusterKopfPeering" (not (empty .Values.watchNamespaces)))))) -}}
{{- fail (printf "replicas: %v needs Kopf's peering CRDs (kopf.dev/v1), which are not installed: Helm installs the chart's crds/ on first install unless --skip-crds; apply them first: kubectl apply --server-side -f charts/sesame/crds/kopf-peering.yaml" .Values.replicas) -}}
{{- end -}}
{{- if and .Values.webhook.enabled .Values.webhook.certManager.enabled (not (.Capabilities.APIVersions.Has "cert-manager.io/v1/Certificate")) -}}
{{- fail "webhook.certManager.enabled=true needs cert-manager, but this cluster does not serve cert-manager.io/v1 Certificates: install cert-manager first, or set webhook.certManager.enabled=false (the operator then makes its own certificate)" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor")) -}}
{{- fail "metrics.serviceMonitor.enabled=true needs the prometheus-operator CRDs, but this cluster does not serve monitoring.coreos.com/v1 ServiceMonitors: install them first, or set metrics.serviceMonitor.enabled=false" -}}
{{- end -}}
{{- range .Values.watchNamespaces -}}
{{- if not (lookup "v1" "Namespace" "" .) -}}
{{- fail (printf "watchNamespaces: namespace %s does not exist: create it first (kubectl create namespace %s), or remove it from the list" . .) -}}
{{- end -}}
{{- end -}}
{{- include "sesame.refuseOverlap" . -}}
{{- end -}}
{{- end -}}

{{/*
One namespace, one Sesame: two operators would both create pods for the same TaskRuns and two
webhooks would both inject. Refuse a release that overlaps another (a cluster-wide release
overlaps every release; a listed namespace overlaps a release that lists it too).
*/}}
{{- define "sesame.refuseOverlap" -}}
{{- $self := printf "%s/%s" .Release.Namespace .Release.Name -}}
{{- range (lookup "rbac.authorization.k8s.io/v1" "ClusterRole" "" "").items -}}
{{- $owner := include "sesame.owner" . -}}
{{- if and (include "sesame.isOperatorRole" .) (ne $owner $self) -}}
{{- fail (printf "another Sesame release (%s, ClusterRole %s) already serves every namespace; two operators would both act on every TaskRun. Uninstall it first, or upgrade that release instead." $owner .metadata.name) -}}
{{- end -}}
{{- end -}}
{{- if .Values.watchNamespaces -}}
{{- range $namespace := .Values.watchNamespaces -}}
{{- range (lookup "rbac.authorization.k8s.io/v1" "Role" $namespace "").items -}}
{{- $owner := include "sesame.owner" . -}}
{{- if and (include "sesame.isOperatorRole" .) (ne $owner $self) -}}
{{- fail (printf "watchNamespaces: namespace %s is already served by the Sesame release %s (Role %s); two operators would both act on its TaskRuns. Remove %s from this release's list, or from that one's." $namespace $owner .metadata.name $namespace) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- range (lookup "rbac.authorization.k8s.io/v1" "Role" "" "").items -}}
{{- $owner := include "sesame.owner" . -}}
{{- if and (include "sesame.isOperatorRole" .) (ne $owner $self) -}}
{{- fail (printf "another Sesame release (%s) already serves namespace %s; a release for every namespace would act on its TaskRuns too. Uninstall it first, or set watchNamespaces to namespaces it does not serve." $owner .metadata.namespace) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* host:port for a URL; an IPv6 address in brackets. Argument: (list address port). */}}
{{- define "sesame.hostPort" -}}
{{- $address := index . 0 -}}
{{- if contains ":" $address }}[{{ $address }}]{{ else }}{{ $address }}{{ end }}:{{ index . 1 }}
{{- end -}}
