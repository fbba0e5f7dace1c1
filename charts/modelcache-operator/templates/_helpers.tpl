{{- define "mc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mc.fullname" -}}
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

{{- define "mc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mc.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "mc.webhookService" -}}
{{- printf "%s-webhook" (include "mc.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mc.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "mc.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mc.webhookCertificate" -}}
{{- printf "%s-webhook" (include "mc.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* "true" when cert-manager issues the webhook certificate: forced on/off, or "auto" = the API is served. */}}
{{- define "mc.certManager" -}}
{{- $enabled := .Values.webhook.certManager.enabled }}
{{- if eq (toString $enabled) "auto" }}
{{- .Capabilities.APIVersions.Has "cert-manager.io/v1" }}
{{- else }}
{{- $enabled }}
{{- end }}
{{- end }}

{{- /* Webhooks skip kube-system and the operator's own namespace, and namespaces the operator does not watch. */}}
{{- define "mc.webhookNamespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- toYaml (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces | uniq) | nindent 8 }}
    {{- with .Values.operator.watchNamespaces }}
    - key: kubernetes.io/metadata.name
      operator: In
      values:
        {{- toYaml . | nindent 8 }}
    {{- end }}
{{- end }}

{{/* The names in imagePullSecrets, comma-separated, for MODELCACHE_IMAGE_PULL_SECRETS. */}}
{{- define "mc.pullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets }}{{- $names = append $names .name -}}{{- end -}}
{{- join "," $names -}}
{{- end -}}
