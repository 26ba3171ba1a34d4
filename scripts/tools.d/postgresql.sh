#!/usr/bin/env bash
# Installs PostgreSQL's server programs (Debian package `postgresql`) when they are missing. The catalog tests that
# need PostgreSQL start a throw-away cluster of their own (initdb into a temporary directory, a free loopback
# port, run as the unprivileged user `postgres` the package creates, since PostgreSQL refuses to run as root) and
# stop it at the end; the package's own cluster is never started (see lib/apt.sh) nor used.
set -euo pipefail

installed() {
    { command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; } &&
        id postgres >/dev/null 2>&1
}

if installed; then
    exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
apt_install postgresql

if ! installed; then
    echo "initdb or the postgres user is still missing after installing the postgresql package" >&2
    exit 1
fi
