{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "ama-migrator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "ama-migrator.fullname" -}}
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

{{- define "ama-migrator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ama-migrator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ama-migrator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ama-migrator.labels" -}}
helm.sh/chart: {{ include "ama-migrator.chart" . }}
{{ include "ama-migrator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ama-migrator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ama-migrator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ama-migrator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The credential kind the operator uses: the simulator sidecar forces `none`. */}}
{{- define "ama-migrator.credential" -}}
{{- if .Values.simulator.enabled }}none{{ else }}{{ .Values.azure.credential }}{{ end }}
{{- end }}

{{/* Namespaces whose plans the operator reconciles when rbac.scope is namespaced. */}}
{{- define "ama-migrator.watchNamespaces" -}}
{{- $list := .Values.rbac.watchNamespaces | default (list .Release.Namespace) }}
{{- join "," (uniq $list) }}
{{- end }}

{{- define "ama-migrator.leaseName" -}}
{{- default (include "ama-migrator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}
