#!/usr/bin/env bash
# Writes base/prometheusrule.yaml from deploy/prometheus/rpod-alerts.yml: the same rule groups, comments included,
# wrapped in a PrometheusRule for the Prometheus Operator. Run it after every change to the alert rules; the
# deployment tests fail while the two differ.
set -euo pipefail
cd "$(dirname "$0")"
rules=../prometheus/rpod-alerts.yml
out=base/prometheusrule.yaml

{
    cat <<'HEADER'
# Generated from deploy/prometheus/rpod-alerts.yml by deploy/kubernetes/update-prometheusrule.sh. Do not edit: change
# the rules there and run the script. The rules expect the scrape job "rpod", which is what the ServiceMonitor gives
# (Prometheus names the job after the Service).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: rpod
  labels:
    app.kubernetes.io/name: rpod
spec:
HEADER
    # The rules file without its opening comment (it speaks of rule_files), indented under spec:. Document markers
    # are dropped, blank lines stay blank, so block scalars keep their content.
    awk 'body || !/^(#.*)?$/ { body = 1 } body && !/^---[[:space:]]*$/' "$rules" | sed -e 's/^\(.\)/  \1/'
} >"$out.tmp"
mv "$out.tmp" "$out"
