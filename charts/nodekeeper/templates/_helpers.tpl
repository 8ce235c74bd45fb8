{{/* Names: nameOverride replaces the chart's name, fullnameOverride the whole prefix */}}
{{- define "nodekeeper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nodekeeper.fullname" -}}
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

{{- define "nodekeeper.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nodekeeper.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "nodekeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nodekeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "nodekeeper.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "nodekeeper.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The `helm test` pod's labels: the release's, without app.kubernetes.io/name, so that
the DaemonSet's selector (name and instance) does not match it. A pod that matched would be
adopted by the DaemonSet controller as one more daemon pod on a node that has one, and
deleted at once: killed mid-test (Failed) or gone with its logs before `helm test --logs`
reads them. */}}
{{- define "nodekeeper.testLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The reconcilers, checked; "true" helpers for each part. */}}
{{- define "nodekeeper.reconcilers" -}}
{{- $known := list "nodestatus" "pods" "services" -}}
{{- if not .Values.reconcilers -}}
{{- fail "reconcilers: at least one of nodestatus, pods, services must run" -}}
{{- end -}}
{{- range .Values.reconcilers -}}
{{- if not (has . $known) -}}
{{- fail (printf "reconcilers: unknown reconciler %q (want nodestatus, pods, services)" .) -}}
{{- end -}}
{{- end -}}
{{- join "," (uniq .Values.reconcilers) -}}
{{- end -}}

{{- define "nodekeeper.runs.node" -}}
{{- if or (has "nodestatus" .Values.reconcilers) (has "pods" .Values.reconcilers) -}}true{{- end -}}
{{- end -}}

{{/* map of string to string: quantities may be given as YAML numbers */}}
{{- define "nodekeeper.stringMap" -}}
{{- $out := dict -}}
{{- range $k, $v := . -}}
{{- $_ := set $out $k (toString $v) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The AgentConfiguration (api/v1alpha1) the ConfigMap holds. */}}
{{- define "nodekeeper.agentConfig" -}}
{{- if not (has .Values.proxyMode (list "iptables" "nftables" "ipvs")) -}}
{{- fail (printf "proxyMode: %q is not one of iptables, nftables, ipvs" .Values.proxyMode) -}}
{{- end -}}
{{- $cfg := dict "apiVersion" "nodekeeper.io/v1alpha1" "kind" "AgentConfiguration" -}}
{{- $_ := set $cfg "containerRuntimeEndpoint" .Values.containerRuntimeEndpoint -}}
{{- $_ = set $cfg "rootDir" .Values.rootDir -}}
{{- $_ = set $cfg "podLogsDir" .Values.podLogsDir -}}
{{- $_ = set $cfg "containerLogsDir" .Values.containerLogsDir -}}
{{- $_ = set $cfg "proxyMode" .Values.proxyMode -}}
{{- $_ = set $cfg "healthzBindAddress" (include "nodekeeper.healthzAddress" .) -}}
{{- $_ = set $cfg "metricsBindAddress" (include "nodekeeper.hostPort" (dict "address" (include "nodekeeper.metricsAddress" .) "port" .Values.metrics.port)) -}}
{{- if has "services" .Values.reconcilers -}}
{{- $_ = set $cfg "proxyHealthzBindAddress" (include "nodekeeper.hostPort" .Values.proxyHealthz) -}}
{{- end -}}
{{- with .Values.systemReserved }}{{ $_ = set $cfg "systemReserved" (include "nodekeeper.stringMap" . | fromYaml) }}{{ end -}}
{{- with .Values.kubeReserved }}{{ $_ = set $cfg "kubeReserved" (include "nodekeeper.stringMap" . | fromYaml) }}{{ end -}}
{{- with .Values.evictionHard }}{{ $_ = set $cfg "evictionHard" (include "nodekeeper.stringMap" . | fromYaml) }}{{ end -}}
{{- $cfg = mergeOverwrite $cfg (deepCopy (.Values.config | default dict)) -}}
{{- if hasKey $cfg "nodeName" -}}
{{- fail "config.nodeName: leave it out, every agent gets its node's name through --node-name" -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* host:port of an {address, port} value; port 0 means "0" (disabled) */}}
{{- define "nodekeeper.hostPort" -}}
{{- if eq (int .port) 0 -}}0{{- else -}}
{{- $a := .address | default "" | toString -}}
{{- if contains ":" $a -}}[{{ $a }}]:{{ .port }}{{- else -}}{{ $a }}:{{ .port }}{{- end -}}
{{- end -}}
{{- end -}}

{{/* healthz.address:healthz.port; an empty port is the kubelet's 10248 when the node part
runs (the agent is the node's kubelet), else 10264, clear of the kubelet beside it */}}
{{- define "nodekeeper.healthzAddress" -}}
{{- $port := .Values.healthz.port -}}
{{- if kindIs "invalid" $port -}}{{- $port = ternary 10248 10264 (eq (include "nodekeeper.runs.node" .) "true") -}}{{- end -}}
{{- include "nodekeeper.hostPort" (dict "address" .Values.healthz.address "port" $port) -}}
{{- end -}}

{{/* metrics.address, or its default: 127.0.0.1, 0.0.0.0 when a ServiceMonitor scrapes it */}}
{{- define "nodekeeper.metricsAddress" -}}
{{- if .Values.metrics.address -}}{{ .Values.metrics.address }}
{{- else if .Values.serviceMonitor.enabled -}}0.0.0.0
{{- else -}}127.0.0.1{{- end -}}
{{- end -}}

{{/* The healthzBindAddress in effect (config wins), split: "host port", or "" when disabled. */}}
{{- define "nodekeeper.healthzHostPort" -}}
{{- $addr := (.Values.config | default dict).healthzBindAddress | default (include "nodekeeper.healthzAddress" .) | toString -}}
{{- if ne $addr "0" -}}
{{- $port := last (splitList ":" $addr) -}}
{{- $host := trimSuffix (printf ":%s" $port) $addr | trimPrefix "[" | trimSuffix "]" -}}
{{- printf "%s %s" ($host | default "-") $port -}}
{{- end -}}
{{- end -}}

{{/* The port of healthzBindAddress, or "" when it is disabled ("0"). */}}
{{- define "nodekeeper.healthzPort" -}}
{{- with include "nodekeeper.healthzHostPort" . -}}{{ last (splitList " " .) }}{{- end -}}
{{- end -}}

{{/* The host the probes dial: the bind address when it is a specific one (127.0.0.1 by
default, as the kubelet's healthz), else the pod IP (empty). */}}
{{- define "nodekeeper.healthzProbeHost" -}}
{{- with include "nodekeeper.healthzHostPort" . -}}
{{- $h := first (splitList " " .) -}}
{{- if not (has $h (list "-" "0.0.0.0" "::")) -}}{{ $h }}{{- end -}}
{{- end -}}
{{- end -}}

{{/* The container's securityContext: .Values.securityContext when given; else privileged
when the node part runs (Bidirectional mount propagation, containerd, cgroups need it), and
for the proxy alone only the capabilities it uses, on a read-only root filesystem. */}}
{{- define "nodekeeper.securityContext" -}}
{{- if .Values.securityContext -}}
{{- toYaml .Values.securityContext -}}
{{- else if include "nodekeeper.runs.node" . -}}
privileged: true
{{- else -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  # NET_ADMIN: iptables / nftables / IPVS rules and conntrack entries in the host's
  # network namespace; NET_RAW: iptables' raw sockets
  add: [NET_ADMIN, NET_RAW]
  drop: [ALL]
{{- end -}}
{{- end -}}

{{/*
The ClusterRole's rules: the rules of files/role.yaml (a copy of config/rbac/role.yaml,
generated by `make manifests`), each keeping only the verbs the enabled reconcilers need
according to files/reconcilers.yaml. A rule that keeps every verb for every resource is
emitted unchanged, so with every reconciler on the rules are exactly the generated ones;
otherwise it is split per resource. Resources missing from the table are kept whole.
*/}}
{{- define "nodekeeper.rbacRules" -}}
{{- $role := .Files.Get "files/role.yaml" | fromYaml -}}
{{- $needs := .Files.Get "files/reconcilers.yaml" | fromYaml -}}
{{- if not $role.rules -}}
{{- fail "files/role.yaml has no rules: run `make manifests` (it copies config/rbac/role.yaml into the chart)" -}}
{{- end -}}
{{- $reconcilers := .Values.reconcilers -}}
{{- $out := list -}}
{{- range $rule := $role.rules -}}
  {{- $whole := true -}}
  {{- $split := list -}}
  {{- range $res := $rule.resources -}}
    {{- $verbs := list -}}
    {{- if hasKey $needs $res -}}
      {{- $entry := get $needs $res -}}
      {{- range $v := $rule.verbs -}}
        {{- $wanted := false -}}
        {{- range $r := $reconcilers -}}
          {{- $want := get $entry $r | default list -}}
          {{- if or (has "*" $want) (has $v $want) -}}{{- $wanted = true -}}{{- end -}}
        {{- end -}}
        {{- if $wanted -}}{{- $verbs = append $verbs $v -}}{{- end -}}
      {{- end -}}
    {{- else -}}
      {{- $verbs = $rule.verbs -}}
    {{- end -}}
    {{- if ne (len $verbs) (len $rule.verbs) -}}{{- $whole = false -}}{{- end -}}
    {{- if $verbs -}}
      {{- $split = append $split (dict "apiGroups" $rule.apiGroups "resources" (list $res) "verbs" $verbs) -}}
    {{- end -}}
  {{- end -}}
  {{- if $whole -}}
    {{- $out = append $out $rule -}}
  {{- else -}}
    {{- $out = concat $out $split -}}
  {{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
