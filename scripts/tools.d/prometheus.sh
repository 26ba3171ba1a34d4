#!/usr/bin/env bash
# Installs promtool and Prometheus (Debian package `prometheus`) when either is missing. The alerting tests use
# promtool to check and unit-test deploy/prometheus/ and rpod's /metrics, and run their own Prometheus on a free
# loopback port. The package's own service is never started: a policy-rc.d refuses service starts during the
# install, so nothing listens on :9090 afterwards.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt_install prometheus

for tool in promtool prometheus; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool is still missing after installing the prometheus package" >&2
        exit 1
    fi
done
