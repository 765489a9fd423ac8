{{/*
Chart name, truncated to 63 characters.
*/}}
{{- define "mimeo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name when it contains the chart name.
*/}}
{{- define "mimeo.fullname" -}}
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

{{/*
Name of the operator's objects (Deployment, ServiceAccount, Roles).
*/}}
{{- define "mimeo.operatorName" -}}
{{- printf "%s-operator" (include "mimeo.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mimeo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "mimeo.labels" -}}
helm.sh/chart: {{ include "mimeo.chart" . }}
app.kubernetes.io/name: {{ include "mimeo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mimeo
{{- end }}

{{/*
Selector labels of the operator pod.
*/}}
{{- define "mimeo.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "mimeo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mimeo.operatorLabels" -}}
{{ include "mimeo.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mimeo.workerLabels" -}}
{{ include "mimeo.labels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
ServiceAccount of the operator.
*/}}
{{- define "mimeo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mimeo.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of the worker pods.
*/}}
{{- define "mimeo.workerServiceAccountName" -}}
{{- required "worker.serviceAccount.name is required" .Values.worker.serviceAccount.name }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}; the tag defaults to the appVersion.
Usage: include "mimeo.imageRef" (list $image $) 
*/}}
{{- define "mimeo.imageRef" -}}
{{- $img := index . 0 }}
{{- $root := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag | toString) }}
{{- end }}
{{- end }}

{{- define "mimeo.image" -}}
{{- include "mimeo.imageRef" (list .Values.image .) }}
{{- end }}

{{/*
Worker image: worker.image when its repository is set, else the operator image.
*/}}
{{- define "mimeo.workerImage" -}}
{{- if .Values.worker.image.repository }}
{{- include "mimeo.imageRef" (list .Values.worker.image .) }}
{{- else }}
{{- include "mimeo.image" . }}
{{- end }}
{{- end }}

{{/*
Namespaces that get the worker ServiceAccount, Role and RoleBinding (a JSON list).
*/}}
{{- define "mimeo.workerNamespaces" -}}
{{- $ns := .Values.workerNamespaces }}
{{- if not $ns }}
{{- $ns = .Values.watchNamespaces }}
{{- end }}
{{- if not $ns }}
{{- $ns = list .Release.Namespace }}
{{- end }}
{{- $ns | uniq | toJson }}
{{- end }}

{{/*
Rules of the operator in a watched namespace (or cluster-wide). Least privilege: see README.md.
*/}}
{{- define "mimeo.operatorRules" -}}
# The six Mimeo kinds: read and watch.
- apiGroups: ["mimeo.dev"]
  resources:
    - mediaclasses
    - backuptrails
    - duplicationtrails
    - duplicationpolicies
    - restores
    - catalogentries
  verbs: ["get", "list", "watch"]
# Their status subresources.
- apiGroups: ["mimeo.dev"]
  resources:
    - mediaclasses/status
    - backuptrails/status
    - duplicationtrails/status
    - duplicationpolicies/status
    - restores/status
    - catalogentries/status
  verbs: ["patch"]
# The catalog (workers write entries, rescans included): expiry moves an entry's `expiresAt`
# when its trail's retention changes (patch) and removes Expired entries (delete).
- apiGroups: ["mimeo.dev"]
  resources: ["catalogentries"]
  verbs: ["patch", "delete"]
# Worker Jobs.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create"]
# Task ConfigMaps mounted by worker Jobs: created before the Job, then handed to it (patch of
# ownerReferences) so the garbage collector removes them with the Job.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "patch"]
# Events for milestones and errors.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# PVC-backed media, sources and targets: existence and phase.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch"]
# MediaClass credentials Secrets: read one by name to probe S3 reachability. No list, no watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
