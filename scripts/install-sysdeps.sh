#!/usr/bin/env bash
# Install the system packages the tests need: slurm-wlm, munge, shellcheck, iproute2 (network
# namespaces for the multi-node test cluster), chromium (headless, tests/drivers/test_report.py),
# debootstrap and squashfs-tools (make container-rootfs).
#
# Idempotent: installs only what is missing (one `apt-get update` when something is). Skips with a
# message (exit 0) when not root or when apt-get is absent, so `make test` on a laptop still runs;
# the Slurm tests then skip naming the reason. Package installs never start system daemons here:
# scripts/local-slurm.sh starts exactly the daemons a test needs, under its own directory.
#
# Usage: scripts/install-sysdeps.sh [PACKAGE...]
#   (default: slurm-wlm munge shellcheck iproute2 chromium debootstrap squashfs-tools)
set -euo pipefail

packages=("$@")
if [[ ${#packages[@]} -eq 0 ]]; then
    packages=(slurm-wlm munge shellcheck iproute2 chromium debootstrap squashfs-tools)
fi

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

missing=()
if command -v dpkg-query >/dev/null; then
    for pkg in "${packages[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
else
    missing=("${packages[@]}")
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-sysdeps: already installed: ${packages[*]}"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-sysdeps: skipped: apt-get not found; install ${missing[*]} with your system's package manager"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-sysdeps: skipped: not root; run 'sudo $0 ${missing[*]}' to install ${missing[*]}"
    exit 0
fi

# Keep package scripts from starting munged/slurmctld/slurmd as system services (Debian's
# policy-rc.d convention: exit 101 = "action forbidden"). Only add one if none exists.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
fi
cleanup() { if [[ $added_policy -eq 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
echo "install-sysdeps: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for pkg in "${missing[@]}"; do
    is_installed "$pkg" || { echo "install-sysdeps: error: $pkg did not install (see apt-get output above)" >&2; exit 1; }
done
echo "install-sysdeps: installed ${missing[*]}"
