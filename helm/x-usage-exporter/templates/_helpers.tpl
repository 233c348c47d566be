{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "x-usage-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name: the release name, followed by the chart name unless the release name
already contains it. Truncated to 63 characters (DNS label limit).
*/}}
{{- define "x-usage-exporter.fullname" -}}
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
Chart name and version, as the helm.sh/chart label wants them.
*/}}
{{- define "x-usage-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "x-usage-exporter.labels" -}}
helm.sh/chart: {{ include "x-usage-exporter.chart" . }}
{{ include "x-usage-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "x-usage-exporter.name" . }}
{{- end }}

{{/*
Labels that select the exporter's pods; they must never change between upgrades.
*/}}
{{- define "x-usage-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "x-usage-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the service account the pod runs as.
*/}}
{{- define "x-usage-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "x-usage-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference: a digest wins over a tag; the tag defaults to the chart's appVersion.
*/}}
{{- define "x-usage-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the bearer tokens: the user's existing one, or the chart's.
*/}}
{{- define "x-usage-exporter.tokenSecretName" -}}
{{- default (printf "%s-tokens" (include "x-usage-exporter.fullname" .)) .Values.existingSecret }}
{{- end }}

{{/*
Whether the chart creates the token Secret itself.
*/}}
{{- define "x-usage-exporter.createTokenSecret" -}}
{{- if and (not .Values.demo) (not .Values.existingSecret) .Values.tokens .Values.projects }}true{{ end }}
{{- end }}

{{/*
Name of the Secret holding the exporter-toolkit web config.
*/}}
{{- define "x-usage-exporter.webConfigSecretName" -}}
{{- default (printf "%s-web-config" (include "x-usage-exporter.fullname" .)) .Values.webConfig.existingSecret }}
{{- end }}

{{/*
Scheme the exporter serves: https only when the web config turns TLS on.
*/}}
{{- define "x-usage-exporter.scheme" -}}
{{- if and .Values.webConfig.enabled .Values.webConfig.tls }}https{{ else }}http{{ end }}
{{- end }}

{{/*
Secret key (and file name) of one project's token: its secretKey, or its name.
Call with (dict "project" $project).
*/}}
{{- define "x-usage-exporter.projectKey" -}}
{{- default .project.name .project.secretKey }}
{{- end }}

{{/*
Checks what the schema cannot express; fails the render with a message naming the value.
*/}}
{{- define "x-usage-exporter.validate" -}}
{{- $keys := list }}
{{- $names := list }}
{{- range $index, $project := .Values.projects }}
{{- $key := include "x-usage-exporter.projectKey" (dict "project" $project) }}
{{- if has $project.name $names }}
{{- fail (printf "projects[%d].name: duplicate project name %q" $index $project.name) }}
{{- end }}
{{- $names = append $names $project.name }}
{{- if not (regexMatch "^[-._a-zA-Z0-9]+$" $key) }}
{{- fail (printf "projects[%d]: %q is not a valid Secret key (letters, digits, '-', '_', '.'); set secretKey" $index $key) }}
{{- end }}
{{- if or (eq $key ".") (eq $key "..") (hasPrefix ".." $key) }}
{{- fail (printf "projects[%d]: %q cannot be a file name; set secretKey" $index $key) }}
{{- end }}
{{- if has $key $keys }}
{{- fail (printf "projects[%d]: Secret key %q is used by two projects; set secretKey" $index $key) }}
{{- end }}
{{- $keys = append $keys $key }}
{{- end }}
{{- if and (not .Values.demo) (not .Values.existingSecret) .Values.projects }}
{{- if not .Values.tokens }}
{{- fail "projects are configured but no token: set existingSecret (recommended) or tokens" }}
{{- end }}
{{- range $key := $keys }}
{{- if not (hasKey $.Values.tokens $key) }}
{{- fail (printf "tokens.%s: missing; every project needs a token under its secretKey or name" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.existingSecret .Values.tokens }}
{{- fail "existingSecret and tokens are both set: keep one (the tokens would be ignored)" }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- range $key, $token := .Values.tokens }}
{{- if not (has $key $keys) }}
{{- fail (printf "tokens.%s: no project uses this key (projects[].name or projects[].secretKey)" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.webConfig.enabled (not .Values.webConfig.existingSecret) (not .Values.webConfig.config) }}
{{- fail "webConfig.enabled: set webConfig.config or webConfig.existingSecret" }}
{{- end }}
{{- end }}

{{/*
The exporter's config file (SPEC section 4). Tokens are never inline: each project points at
its file in the mounted token Secret, which the exporter re-reads at every poll.
*/}}
{{- define "x-usage-exporter.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if kindIs "bool" $config.credits }}
{{- /* YAML 1.1 reads a bare on/off as a boolean; the exporter wants the words. */}}
{{- $_ := set $config "credits" (ternary "on" "off" $config.credits) }}
{{- end }}
{{- /* `--set` makes decimals strings ("0.004"); the schema admits only decimal strings there. */}}
{{- range $key, $value := ($config.pricing | default dict) }}
{{- $_ := set $config.pricing $key (float64 $value) }}
{{- end }}
{{- $projects := list }}
{{- range $project := .Values.projects }}
{{- $entry := omit $project "secretKey" }}
{{- range $key := list "budget_usd" "spending_limit_usd" }}
{{- if hasKey $entry $key }}
{{- $_ := set $entry $key (float64 (get $entry $key)) }}
{{- end }}
{{- end }}
{{- $key := include "x-usage-exporter.projectKey" (dict "project" $project) }}
{{- $_ := set $entry "bearer_token_file" (printf "%s/%s" (trimSuffix "/" $.Values.tokenMountPath) $key) }}
{{- $projects = append $projects $entry }}
{{- end }}
{{- $_ := set $config "projects" $projects }}
{{- toYaml $config }}
{{- end }}

{{/*
A probe: the user's own handler (httpGet, tcpSocket, exec, grpc) when the values give one,
otherwise an HTTP GET of the given path. Never /metrics: a probe must not depend on a scrape.
Call with (dict "probe" .Values.livenessProbe "path" "/-/healthy" "scheme" "HTTP").
*/}}
{{- define "x-usage-exporter.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if not (or $probe.httpGet $probe.tcpSocket $probe.exec $probe.grpc) }}
{{- $_ := set $probe "httpGet" (dict "path" .path "port" "http" "scheme" .scheme) }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
A number as PromQL text: whole numbers without an exponent (1000000, not 1e+06).
*/}}
{{- define "x-usage-exporter.promNumber" -}}
{{- $value := float64 . }}
{{- if eq $value (floor $value) }}{{ printf "%d" (int64 $value) }}{{ else }}{{ printf "%v" $value }}{{ end }}
{{- end }}

{{/*
The thresholds group(s) of files/alerts/thresholds.yml, each `xapi:alert_threshold_<key>:<unit>`
rule's value taken from prometheusRule.thresholds.<key> and the exporter target rule's job regex
from prometheusRule.exporterJobRegex. A value equal to the file's default keeps the file's text,
so default values render the file unchanged. Returns YAML {"groups": [...]}.
*/}}
{{- define "x-usage-exporter.thresholdGroups" -}}
{{- $file := .Files.Get "files/alerts/thresholds.yml" | fromYaml }}
{{- if or (not $file) (hasKey $file "Error") (not $file.groups) }}
{{- fail "files/alerts/thresholds.yml is missing or not a rule file: copy alerts/thresholds.yml into the chart" }}
{{- end }}
{{- $values := .Values.prometheusRule.thresholds }}
{{- $known := list }}
{{- $groups := list }}
{{- range $group := $file.groups }}
{{- $rules := list }}
{{- range $rule := $group.rules }}
{{- $rule = deepCopy $rule }}
{{- $match := regexFindAll "^xapi:alert_threshold_(.+):[a-z_]+$" (toString $rule.record) 1 }}
{{- if $match }}
{{- $key := regexReplaceAll "^xapi:alert_threshold_(.+):[a-z_]+$" $rule.record "${1}" }}
{{- $known = append $known $key }}
{{- if hasKey $values $key }}
{{- $value := get $values $key }}
{{- $default := regexReplaceAll "^\\s*vector\\((.*)\\)\\s*$" (toString $rule.expr) "${1}" }}
{{- if ne (float64 $value) (float64 $default) }}
{{- $_ := set $rule "expr" (printf "vector(%s)" (include "x-usage-exporter.promNumber" $value)) }}
{{- end }}
{{- end }}
{{- else if eq (toString $rule.record) "xapi:alert_exporter_target:up" }}
{{- $_ := set $rule "expr" (printf "up{job=~%q}" $.Values.prometheusRule.exporterJobRegex) }}
{{- end }}
{{- $rules = append $rules $rule }}
{{- end }}
{{- $copy := deepCopy $group }}
{{- $_ := set $copy "rules" $rules }}
{{- $groups = append $groups $copy }}
{{- end }}
{{- range $key, $value := $values }}
{{- if not (has $key $known) }}
{{- fail (printf "prometheusRule.thresholds.%s: no such threshold in files/alerts/thresholds.yml (known: %s)" $key (join ", " $known)) }}
{{- end }}
{{- end }}
{{- toYaml (dict "groups" $groups) }}
{{- end }}
