#!/usr/bin/env bash
# Installs promtool and Prometheus (Debian package `prometheus`) when either is missing. The alerting tests use
# promtool to check and unit-test deploy/prometheus/ and rpod's /metrics, and run their own Prometheus on a free
# loopback port. The package's own service is never started: a policy-rc.d refuses service starts during the
# install, so nothing listens on :9090 afterwards.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)

# Without package lists (a fresh machine) there is no candidate to install.
if ! apt-cache show prometheus >/dev/null 2>&1; then
    "${apt[@]}" update >/dev/null
fi

# Refuse service starts from maintainer scripts, unless the machine already has a policy of its own.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

if ! log=$("${apt[@]}" install -y --no-install-recommends prometheus 2>&1); then
    echo "$log" >&2
    echo "installing prometheus (promtool) failed" >&2
    exit 1
fi

for tool in promtool prometheus; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool is still missing after installing the prometheus package" >&2
        exit 1
    fi
done
