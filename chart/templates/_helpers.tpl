{{/*
The labels of every object, and the selector of the Services and the StatefulSet.
*/}}
{{- define "vkube.labels" -}}
app: vkube
release: {{ .Release.Name }}
{{- end }}

{{/*
vkube.validate: refuses values vkube cannot run with. Every template includes it first, so a bad
value fails the whole render (helm prints the first template's failure). Checks, in this order:
  1. replicas < 1
  2. more than one of the four backing stores enabled
  3. replicas > 1 on embedded SQLite (no etcd, embedded or external, and no external database);
     the message is vkube serve's own.
*/}}
{{- define "vkube.validate" -}}
{{- $bs := .Values.controlPlane.backingStore -}}
{{- $replicas := int .Values.controlPlane.statefulSet.highAvailability.replicas -}}
{{- if lt $replicas 1 -}}
{{- fail "controlPlane.statefulSet.highAvailability.replicas must be at least 1" -}}
{{- end -}}
{{- $stores := 0 -}}
{{- range $on := list $bs.database.embedded.enabled $bs.database.external.enabled $bs.etcd.embedded.enabled $bs.etcd.external.enabled -}}
{{- if $on -}}{{- $stores = add1 $stores -}}{{- end -}}
{{- end -}}
{{- if gt $stores 1 -}}
{{- fail "controlPlane.backingStore: enable one store, not several" -}}
{{- end -}}
{{- if and (gt $replicas 1) (not (or $bs.etcd.embedded.enabled $bs.etcd.external.enabled $bs.database.external.enabled)) -}}
{{- fail (printf "%d replicas on embedded SQLite: embedded SQLite keeps one database per replica, so replicas would disagree (for example on RBAC); use controlPlane.backingStore.etcd.embedded or an external etcd/PostgreSQL" $replicas) -}}
{{- end -}}
{{- end }}
