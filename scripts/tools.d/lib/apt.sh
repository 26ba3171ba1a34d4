# Installing a Debian package for a script in scripts/tools.d: sourced by them, never run on its own (the test
# command runs only scripts/tools.d/*.sh).

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)

# apt_install PACKAGE: installs PACKAGE without its recommends. Its services are never started: a policy-rc.d
# refuses service starts from the maintainer scripts during the install, unless the machine has a policy of its
# own. On failure, prints apt's output and returns 1.
apt_install() {
    local package=$1 policy=/usr/sbin/policy-rc.d placed="" log status=0
    # Without package lists (a fresh machine) there is no candidate to install.
    if ! apt-cache show "$package" >/dev/null 2>&1; then
        "${apt[@]}" update >/dev/null
    fi
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        placed=1
    fi
    log=$("${apt[@]}" install -y --no-install-recommends "$package" 2>&1) || status=$?
    if [ -n "$placed" ]; then
        "${sudo[@]}" rm -f "$policy"
    fi
    if [ "$status" -ne 0 ]; then
        echo "$log" >&2
        echo "installing the Debian package $package failed" >&2
        return 1
    fi
}
