#!/usr/bin/env bash
# Install the system packages the test suite needs (a real Docker engine, busybox-static for
# the test image, Dovecot IMAP, headless Chromium + chromedriver, Prometheus + Alertmanager) and the `vmail` user that
# Dovecot stores mail as. Idempotent: when everything is present it only queries dpkg and
# exits at once. For Debian 12; runs as root (or through passwordless sudo), non-interactive.
set -euo pipefail

# python3-venv: `python3 -m venv` (used by the Makefile) fails on a bare Debian without it
# cmake + g++: build llama.cpp's llama-server for the real-model tests (scripts/install-llm.sh)
PACKAGES=(docker.io busybox-static dovecot-imapd chromium chromium-driver python3-venv cmake g++)
# installed without recommends (no node exporter); the tests start their own on loopback
QUIET_PACKAGES=(prometheus prometheus-alertmanager)
# system services these packages may start (where an init runs); they would hold 9090/9093
QUIET_SERVICES=(prometheus prometheus-alertmanager)

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "install-deps: need root for '$*'; run this script as root" >&2
        return 1
    fi
}

missing_of() {
    local pkg status
    for pkg in "$@"; do
        # dpkg -s also succeeds for removed-but-not-purged packages; check the real state
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        if [[ $status != "install ok installed" ]]; then
            echo "$pkg"
        fi
    done
}

apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

# stop and disable a system service the package started, so it frees its port for good
quiet_service() {
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        as_root systemctl disable --now "$1" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$1 ]]; then
        as_root /etc/init.d/"$1" stop >/dev/null 2>&1 || true
        as_root update-rc.d "$1" disable >/dev/null 2>&1 || true
    fi
}

mapfile -t missing < <(missing_of "${PACKAGES[@]}")
mapfile -t missing_quiet < <(missing_of "${QUIET_PACKAGES[@]}")

if ((${#missing[@]} + ${#missing_quiet[@]})); then
    echo "install-deps: installing ${missing[*]} ${missing_quiet[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
fi
if ((${#missing[@]})); then
    apt_install "${missing[@]}"
fi
if ((${#missing_quiet[@]})); then
    apt_install --no-install-recommends "${missing_quiet[@]}"
    for svc in "${QUIET_SERVICES[@]}"; do
        quiet_service "$svc"
    done
fi

if ! id -u vmail >/dev/null 2>&1; then
    echo "install-deps: creating user vmail"
    as_root useradd -M -r -s /usr/sbin/nologin vmail
fi
