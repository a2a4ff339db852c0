{{/* Names, labels and the derived settings shared by the templates. */}}

{{- define "frame-buffer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name. StatefulSet pods are named <fullname>-<ordinal> and a
pod name must fit a DNS label together with the controller-revision-hash
label, so keep it to 52 characters.
*/}}
{{- define "frame-buffer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "frame-buffer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "frame-buffer.labels" -}}
helm.sh/chart: {{ include "frame-buffer.chart" . }}
{{ include "frame-buffer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: frame-buffer
{{- include "frame-buffer.commonLabels" . }}
{{- end }}

{{- define "frame-buffer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "frame-buffer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* Labels of another component (bundled server, test); call with (dict "root" $ "component" "redis"). */}}
{{- define "frame-buffer.componentLabels" -}}
helm.sh/chart: {{ include "frame-buffer.chart" .root }}
{{ include "frame-buffer.componentSelectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: frame-buffer
{{- include "frame-buffer.commonLabels" .root }}
{{- end }}

{{/* commonLabels, on every object the chart makes and on its pods. */}}
{{- define "frame-buffer.commonLabels" -}}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The annotations block of an object's metadata: commonAnnotations and the
object's own (which win); nothing when both are empty. Call with
(dict "root" $ "extra" .Values.service.annotations) and nindent 2.
*/}}
{{- define "frame-buffer.annotations" -}}
{{- $a := merge (deepCopy (.extra | default dict)) (deepCopy (.root.Values.commonAnnotations | default dict)) }}
{{- with $a }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "frame-buffer.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "frame-buffer.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "frame-buffer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "frame-buffer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "frame-buffer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding the API token, Redis password and NATS credentials. */}}
{{- define "frame-buffer.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- include "frame-buffer.fullname" . }}
{{- end }}
{{- end }}

{{/* "true" when a Secret is in play at all (made by the chart or existing). */}}
{{- define "frame-buffer.useSecret" -}}
{{- if or .Values.secret.existingSecret .Values.secret.create }}true{{ end }}
{{- end }}

{{- define "frame-buffer.redisHost" -}}
{{- printf "%s-redis" (include "frame-buffer.fullname" .) }}
{{- end }}

{{- define "frame-buffer.natsHost" -}}
{{- printf "%s-nats" (include "frame-buffer.fullname" .) }}
{{- end }}

{{/* REDIS_URL: the bundled Redis when it is on, else redis.url. */}}
{{- define "frame-buffer.redisUrl" -}}
{{- if .Values.redis.bundled.enabled }}
{{- printf "redis://%s:6379/0" (include "frame-buffer.redisHost" .) }}
{{- else if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else }}
{{- fail "\n\nredis.url is required: set it to your Redis (redis://host:6379/0), or set redis.bundled.enabled=true to run one inside the release." }}
{{- end }}
{{- end }}

{{/* NATS_URL: the bundled NATS when it is on, else nats.url. */}}
{{- define "frame-buffer.natsUrl" -}}
{{- if .Values.nats.bundled.enabled }}
{{- printf "nats://%s:4222" (include "frame-buffer.natsHost" .) }}
{{- else if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else }}
{{- fail "\n\nnats.url is required: set it to your NATS servers (nats://host:4222), to \"none\" for Redis-only mode, or set nats.bundled.enabled=true to run one inside the release." }}
{{- end }}
{{- end }}

{{/* REDIS_SENTINELS: the sentinels' host:port, joined with commas. */}}
{{- define "frame-buffer.redisSentinels" -}}
{{- join "," .Values.redis.sentinel.sentinels }}
{{- end }}

{{/* NATS_JETSTREAM as "1" or "0"; null follows the bundled NATS. */}}
{{- define "frame-buffer.natsJetstream" -}}
{{- $js := .Values.nats.jetstream }}
{{- if kindIs "invalid" $js }}
{{- $js = .Values.nats.bundled.enabled }}
{{- end }}
{{- if $js }}1{{ else }}0{{ end }}
{{- end }}

{{/* "true" when the NATS creds / CA files are to be mounted. */}}
{{- define "frame-buffer.mountNatsCreds" -}}
{{- if and (include "frame-buffer.useSecret" .) (or .Values.nats.mountCreds (and (not .Values.secret.existingSecret) .Values.secret.natsCreds)) }}true{{ end }}
{{- end }}

{{- define "frame-buffer.mountNatsTlsCA" -}}
{{- if and (include "frame-buffer.useSecret" .) (or .Values.nats.tls.mountCA (and (not .Values.secret.existingSecret) .Values.secret.natsTlsCA)) }}true{{ end }}
{{- end }}

{{/*
An env var from the Secret; call with (dict "root" $ "env" "API_TOKEN" "key" "apiToken").
With the chart's own Secret only the keys that have a value exist, so every
reference is optional: a missing key leaves the setting unset.
*/}}
{{- define "frame-buffer.secretEnv" -}}
{{- $v := .root.Values.secret }}
{{- $generated := and (eq .key "apiToken") $v.generateApiToken }}
{{- if or $v.existingSecret (and $v.create (or (index $v .key) $generated)) -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "frame-buffer.secretName" .root }}
      key: {{ index $v.keys .key | quote }}
      optional: true
{{- end }}
{{- end }}

{{/* Cross-value checks the JSON schema cannot express clearly. */}}
{{- define "frame-buffer.validate" -}}
{{- $v := .Values }}
{{- if and $v.secret.existingSecret $v.secret.create }}
{{- $own := list $v.secret.apiToken $v.secret.processorToken $v.secret.redisPassword $v.secret.redisSentinelPassword $v.secret.natsToken $v.secret.natsUser $v.secret.natsPassword $v.secret.natsCreds $v.secret.natsTlsCA | compact }}
{{- if $own }}
{{- fail "\n\nsecret.existingSecret is set, so the chart makes no Secret: put the API token, passwords and NATS credentials into that Secret (keys: secret.keys), not into secret.apiToken / secret.redisPassword / ..." }}
{{- end }}
{{- end }}
{{- if and (not $v.secret.existingSecret) (not $v.secret.create) (or $v.nats.mountCreds $v.nats.tls.mountCA) }}
{{- fail "\n\nnats.mountCreds / nats.tls.mountCA need a Secret: set secret.existingSecret, or secret.create=true with secret.natsCreds / secret.natsTlsCA." }}
{{- end }}
{{- if and $v.secret.create (not $v.secret.existingSecret) $v.nats.mountCreds (not $v.secret.natsCreds) }}
{{- fail "\n\nnats.mountCreds: the chart's Secret has no .creds file; set secret.natsCreds to its contents (or name an existing Secret that has it)." }}
{{- end }}
{{- if and $v.secret.create (not $v.secret.existingSecret) $v.nats.tls.mountCA (not $v.secret.natsTlsCA) }}
{{- fail "\n\nnats.tls.mountCA: the chart's Secret has no CA bundle; set secret.natsTlsCA to the PEM text (or name an existing Secret that has it)." }}
{{- end }}
{{- if and $v.podDisruptionBudget.enabled (not (kindIs "invalid" $v.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" $v.podDisruptionBudget.maxUnavailable)) }}
{{- fail "\n\npodDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)." }}
{{- end }}
{{- if and $v.podDisruptionBudget.enabled (kindIs "invalid" $v.podDisruptionBudget.minAvailable) (kindIs "invalid" $v.podDisruptionBudget.maxUnavailable) }}
{{- fail "\n\npodDisruptionBudget: set one of minAvailable and maxUnavailable." }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail (printf "\n\nautoscaling.minReplicas (%v) is greater than autoscaling.maxReplicas (%v)." $v.autoscaling.minReplicas $v.autoscaling.maxReplicas) }}
{{- end }}
{{- if and $v.autoscaling.enabled (not $v.autoscaling.targetCPUUtilizationPercentage) (not $v.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "\n\nautoscaling needs a target: set autoscaling.targetCPUUtilizationPercentage and/or targetMemoryUtilizationPercentage." }}
{{- end }}
{{- if and $v.nats.bundled.enabled (or $v.nats.mountCreds $v.secret.natsCreds) }}
{{- fail "\n\nthe bundled NATS takes a token (secret.natsToken) or a user and password (secret.natsUser, secret.natsPassword), not a .creds file: a .creds file needs an operator-mode NATS of your own (nats.url, with nats.bundled.enabled=false)." }}
{{- end }}
{{- if and $v.redis.sentinel.enabled $v.redis.bundled.enabled }}
{{- fail "\n\nredis.sentinel.enabled and redis.bundled.enabled exclude each other: the bundled Redis is a single server without sentinels. Turn one of them off (for Sentinel, list your sentinels in redis.sentinel.sentinels)." }}
{{- end }}
{{- if and $v.redis.bundled.enabled (gt (int $v.redis.waitReplicas) 0) }}
{{- fail (printf "\n\nredis.waitReplicas is %v, but the bundled Redis has no replicas to wait for: keep it 0 with redis.bundled.enabled." $v.redis.waitReplicas) }}
{{- end }}
{{- if and $v.nats.bundled.enabled (gt (int $v.nats.jetstreamReplicas) 1) }}
{{- fail (printf "\n\nnats.jetstreamReplicas is %v, but the bundled NATS is a single JetStream server: keep it 1 with nats.bundled.enabled, or use a NATS cluster of your own (nats.url)." $v.nats.jetstreamReplicas) }}
{{- end }}
{{- if and $v.ingress.enabled (not $v.ingress.hosts) }}
{{- fail "\n\ningress.enabled needs at least one entry in ingress.hosts." }}
{{- end }}
{{- if and (not $v.nats.url) (not $v.nats.bundled.enabled) }}
{{- include "frame-buffer.natsUrl" . }}
{{- end }}
{{- if and (not $v.redis.url) (not $v.redis.bundled.enabled) }}
{{- include "frame-buffer.redisUrl" . }}
{{- end }}
{{- end }}
