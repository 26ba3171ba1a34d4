#!/usr/bin/env bash
# Makes sure the Kubernetes deployment tests have their tools: kubectl (its built-in kustomize renders
# deploy/kubernetes) and kubernetes-validate from PyPI (checks every rendered resource against the Kubernetes
# schemas it ships, offline). Quiet when both are there.
#
# kubectl comes with this machine kind. When it is missing, this installs the package `kubectl` if an apt source
# offers it; Debian's own kubernetes-client (kubectl 1.20) is too old for the kustomizations. Without kubectl the
# script only says so and lets the rest of the suite run: the deployment tests then fail with the same message.
set -euo pipefail

if ! command -v kubectl >/dev/null 2>&1; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
    if ! apt-cache show kubectl >/dev/null 2>&1; then
        "${apt[@]}" update >/dev/null || true
    fi
    if apt-cache show kubectl >/dev/null 2>&1; then
        if ! log=$("${apt[@]}" install -y --no-install-recommends kubectl 2>&1); then
            echo "$log" >&2
        fi
    fi
    if ! command -v kubectl >/dev/null 2>&1; then
        echo "kubectl is missing and no apt source offers it: the deployment tests (tests/it/deploy.rs) will fail." >&2
        echo "Install kubectl 1.21 or newer (it has kustomize built in)." >&2
    fi
fi

if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 is required for kubernetes-validate (the deployment tests)" >&2
    exit 1
fi
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
    # Pinned: the tests validate against a Kubernetes version whose schemas this release ships.
    if ! log=$(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        'kubernetes-validate==1.37.0' 2>&1); then
        echo "$log" >&2
        echo "installing kubernetes-validate from PyPI failed" >&2
        exit 1
    fi
fi
