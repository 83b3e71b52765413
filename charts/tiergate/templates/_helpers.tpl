{{/* Chart name, overridable. */}}
{{- define "tiergate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: "<release>-tiergate" unless the release name already says tiergate. */}}
{{- define "tiergate.fullname" -}}
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

{{- define "tiergate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object of the release carries (the operator's also carry its component). */}}
{{- define "tiergate.labels" -}}
helm.sh/chart: {{ include "tiergate.chart" . }}
app.kubernetes.io/name: {{ include "tiergate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tiergate
{{- end }}

{{/* The operator's selector: stable across upgrades (never add labels here). */}}
{{- define "tiergate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tiergate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels added to the generated CRDs (name and part-of come from crds/). */}}
{{- define "tiergate.crdLabels" -}}
helm.sh/chart: {{ include "tiergate.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tiergate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tiergate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tiergate.peeringName" -}}
{{- default (include "tiergate.fullname" .) .Values.peering.name }}
{{- end }}

{{/* repository:tag or repository@digest; the tag defaults to the appVersion. */}}
{{- define "tiergate.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (default .appVersion .tag) }}
{{- end }}
{{- end }}

{{/* Labels of the gateway pods and Services the operator renders (see operator render.py). */}}
{{- define "tiergate.gatewaySelector" -}}
app.kubernetes.io/name: tiergate-gateway
app.kubernetes.io/part-of: tiergate
app.kubernetes.io/component: gateway
{{- end }}

{{/* Fails unless ledger.staleSeconds > 2 x spendHeartbeatSeconds + spendReportSeconds (the
gateway's tuning, else its defaults 60 and 5: DEFAULT_SPEND_*_SECONDS of tiergate_contract.ledger),
the rule of quiet_report_max_age there: a lower stale time folds the reports of live, quiet
gateways. Sprig's float functions compute in decimal, as the operator's check does. */}}
{{- define "tiergate.checkLedgerTiming" -}}
{{- $tuning := .Values.gateway.tuning | default dict }}
{{- $heartbeat := float64 (ternary (index $tuning "spendHeartbeatSeconds") 60 (hasKey $tuning "spendHeartbeatSeconds")) }}
{{- $report := float64 (ternary (index $tuning "spendReportSeconds") 5 (hasKey $tuning "spendReportSeconds")) }}
{{- $floor := addf (mulf 2 $heartbeat) $report }}
{{- $stale := .Values.ledger.staleSeconds }}
{{- if not (gt (float64 $stale) $floor) }}
{{- fail (printf "ledger.staleSeconds=%v must be greater than 2 x gateway.tuning.spendHeartbeatSeconds (%v%s) + gateway.tuning.spendReportSeconds (%v%s) = %v: a quiet gateway writes its SpendReport only every heartbeat, so the operator would fold the reports of live gateways (docs/ledger.md)" $stale $heartbeat (ternary "" ", the gateway default" (hasKey $tuning "spendHeartbeatSeconds")) $report (ternary "" ", the gateway default" (hasKey $tuning "spendReportSeconds")) $floor) }}
{{- end }}
{{- end }}
