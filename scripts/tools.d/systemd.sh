#!/usr/bin/env bash
# Installs systemd-analyze and systemd-sysusers (Debian package `systemd`) when either is missing. The systemd
# tests verify deploy/systemd/rpod.service with `systemd-analyze verify` and `systemd-analyze security`, and
# parse deploy/systemd/rpod.sysusers with `systemd-sysusers --dry-run` against an empty root. Nothing is started:
# the tools only read unit files.
set -euo pipefail

if command -v systemd-analyze >/dev/null 2>&1 && command -v systemd-sysusers >/dev/null 2>&1; then
    exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt_install systemd

for tool in systemd-analyze systemd-sysusers; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool is still missing after installing the systemd package" >&2
        exit 1
    fi
done
