{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "crucible.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. Cluster-scoped objects (ClusterRole, ClusterRoleBinding)
carry it too, so two releases in different namespaces need different release names.
*/}}
{{- define "crucible.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "crucible.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "crucible.labels" -}}
helm.sh/chart: {{ include "crucible.chart" . | quote }}
{{ include "crucible.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: crucible
{{- end }}

{{/* Labels that select the release's objects (never change them: selectors are immutable). */}}
{{- define "crucible.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crucible.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/* Selector of the controller pods. */}}
{{- define "crucible.controllerSelectorLabels" -}}
{{ include "crucible.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "crucible.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crucible.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "crucible.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Whether leader election is on: `auto` means on when replicaCount > 1. Switching it off with
more than one replica is refused, because two replicas would both act on every Evaluation.
Prints "true" or "false".
*/}}
{{- define "crucible.leaderElection" -}}
{{- $le := .Values.controller.leaderElection.enabled }}
{{- $replicas := int .Values.replicaCount }}
{{- if eq (toString $le) "auto" }}
{{- if gt $replicas 1 }}true{{ else }}false{{ end }}
{{- else if $le }}true
{{- else if gt $replicas 1 }}
{{- fail "controller.leaderElection.enabled=false needs replicaCount 1: two replicas without leader election would both act" }}
{{- else }}false
{{- end }}
{{- end }}

{{- define "crucible.systemNamespace" -}}
{{- default .Release.Namespace .Values.controller.systemNamespace }}
{{- end }}

{{/*
PodDisruptionBudget API: policy/v1 from Kubernetes 1.21, policy/v1beta1 before. Against a cluster
the discovered kinds decide; `helm template` without a cluster lists API groups but no kinds, so
there the version (--kube-version, default: Helm's client version) decides.
*/}}
{{- define "crucible.pdbApiVersion" -}}
{{- if or (.Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end }}
{{- end }}

{{/*
Environment shared by the controller and the test pod: the downward-API pod identity, then
extraEnv (which may set KUBERNETES_SERVICE_HOST/PORT where the Service does not work).
*/}}
{{- define "crucible.podIdentityEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
