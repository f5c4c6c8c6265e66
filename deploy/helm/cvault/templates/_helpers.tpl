{{/* Names and labels. */}}
{{- define "cvault.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cvault.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cvault.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "cvault.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of the server pods (the CronJob's pods have component auto-rotate). */}}
{{- define "cvault.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cvault.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "cvault.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cvault.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cvault.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Where the mounted files are: the settings point at these paths. */}}
{{- define "cvault.paths" -}}
config: /etc/cvault
policy: /etc/cvault/policy/policy.yaml
approle: /run/secrets/cvault/approle
tls: /etc/cvault/tls
openbaoCa: /etc/cvault/openbao-ca/ca.crt
operatorToken: /run/secrets/cvault/operator/token
{{- end -}}

{{/*
The server's settings: .Values.settings with what the chart's mounts decide set over it.
Returns YAML (fromYaml it).
*/}}
{{- define "cvault.serverSettings" -}}
{{- $paths := include "cvault.paths" . | fromYaml -}}
{{- $s := deepCopy .Values.settings -}}
{{- $_ := set $s "listen" (printf "0.0.0.0:%d" (int .Values.grpcPort)) -}}
{{- if or .Values.policy.existingConfigMap .Values.policy.content -}}
{{- $_ := set $s "policy" $paths.policy -}}
{{- end -}}
{{- $bao := deepCopy (default (dict) (get $s "openbao")) -}}
{{- $bao = omit $bao "token_file" "role_id_file" "secret_id_file" "auth" "ca_cert" -}}
{{- $_ := set $bao "auth" "approle" -}}
{{- $_ := set $bao "role_id_file" (printf "%s/role_id" $paths.approle) -}}
{{- $_ := set $bao "secret_id_file" (printf "%s/secret_id" $paths.approle) -}}
{{- if .Values.openbao.caSecret -}}
{{- $_ := set $bao "ca_cert" $paths.openbaoCa -}}
{{- end -}}
{{- $_ := set $s "openbao" $bao -}}
{{- if .Values.tls.enabled -}}
{{- $auth := deepCopy (default (dict) (get $s "auth")) -}}
{{- $_ := set $auth "tls_cert_file" (printf "%s/tls.crt" $paths.tls) -}}
{{- $_ := set $auth "tls_key_file" (printf "%s/tls.key" $paths.tls) -}}
{{- $_ := set $auth "client_ca_file" (printf "%s/ca.crt" $paths.tls) -}}
{{- $_ := set $auth "require_client_auth" .Values.tls.requireClientAuth -}}
{{- $_ := set $s "auth" $auth -}}
{{- end -}}
{{- if .Values.metrics.enabled -}}
{{- $_ := set $s "metrics" (dict "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port))) -}}
{{- end -}}
{{- if and .Values.probes.port (ne (int .Values.probes.port) (int .Values.grpcPort)) -}}
{{- $server := deepCopy (default (dict) (get $s "server")) -}}
{{- $_ := set $server "health_listen" (printf "0.0.0.0:%d" (int .Values.probes.port)) -}}
{{- $_ := set $s "server" $server -}}
{{- end -}}
{{- toYaml $s -}}
{{- end -}}

{{/*
The operator commands' settings (the CronJob): the server's, less what only a server reads,
with token auth from the operator's token file. No role_id_file/secret_id_file: the settings
loader reads every secret file it is given, whatever `auth` says, and the CronJob does not
mount the service's AppRole.
*/}}
{{- define "cvault.operatorSettings" -}}
{{- $paths := include "cvault.paths" . | fromYaml -}}
{{- $s := omit (include "cvault.serverSettings" . | fromYaml) "listen" "auth" "metrics" "server" "max_workers" "health_interval_seconds" "shutdown_grace_seconds" -}}
{{- $bao := omit (get $s "openbao") "role_id_file" "secret_id_file" -}}
{{- $_ := set $bao "auth" "token" -}}
{{- $_ := set $bao "token_file" $paths.operatorToken -}}
{{- $_ := set $s "openbao" $bao -}}
{{- toYaml $s -}}
{{- end -}}

{{/* A TOML key: bare when it can be, else quoted. */}}
{{- define "cvault.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{/*
A map as TOML: (dict "prefix" "" "map" $m). Scalars and lists first (JSON strings, numbers,
booleans and arrays are TOML too), then each map as a [table]; null values are left out.
*/}}
{{- define "cvault.toml" -}}
{{- $prefix := .prefix -}}
{{- range $k, $v := .map -}}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v)) }}
{{ include "cvault.tomlKey" $k }} = {{ toJson $v }}
{{- end -}}
{{- end -}}
{{- range $k, $v := .map -}}
{{- if kindIs "map" $v -}}
{{- $name := include "cvault.tomlKey" $k -}}
{{- if $prefix -}}{{- $name = printf "%s.%s" $prefix $name -}}{{- end }}

[{{ $name }}]
{{- include "cvault.toml" (dict "prefix" $name "map" $v) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Seconds a pod may take to stop: drain + grace + the server's own margins + slack. */}}
{{- define "cvault.terminationGrace" -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- .Values.terminationGracePeriodSeconds | int -}}
{{- else -}}
{{- $server := default (dict) .Values.settings.server -}}
{{- $drain := default 5 (get $server "drain_seconds") | float64 -}}
{{- $grace := default 10 .Values.settings.shutdown_grace_seconds | float64 -}}
{{- addf $drain $grace 15 | ceil | int -}}
{{- end -}}
{{- end -}}
