#!/usr/bin/env bash
# Installs PostgreSQL's server programs (Debian package `postgresql`) when they are missing. The catalog tests that
# need PostgreSQL start a throw-away cluster of their own (initdb into a temporary directory, a free loopback
# port, run as the unprivileged user `postgres` the package creates, since PostgreSQL refuses to run as root) and
# stop it at the end; the package's own cluster is never used.
set -euo pipefail

installed() {
    { command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; } &&
        id postgres >/dev/null 2>&1
}

if installed; then
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)

# Without package lists (a fresh machine) there is no candidate to install.
if ! apt-cache show postgresql >/dev/null 2>&1; then
    "${apt[@]}" update >/dev/null
fi

if ! log=$("${apt[@]}" install -y --no-install-recommends postgresql 2>&1); then
    echo "$log" >&2
    echo "installing PostgreSQL (initdb, postgres) failed" >&2
    exit 1
fi

if ! installed; then
    echo "initdb or the postgres user is still missing after installing the postgresql package" >&2
    exit 1
fi
