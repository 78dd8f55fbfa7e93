#!/usr/bin/env bash
# Install the system packages the test suite needs (a real Docker engine, busybox-static for
# the test image, Dovecot IMAP, headless Chromium + chromedriver) and the `vmail` user that
# Dovecot stores mail as. Idempotent: when everything is present it only queries dpkg and
# exits at once. For Debian 12; runs as root (or through passwordless sudo), non-interactive.
set -euo pipefail

# python3-venv: `python3 -m venv` (used by the Makefile) fails on a bare Debian without it
PACKAGES=(docker.io busybox-static dovecot-imapd chromium chromium-driver python3-venv)

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

missing=()
for pkg in "${PACKAGES[@]}"; do
    # dpkg -s also succeeds for removed-but-not-purged packages; check the real state
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
fi

if ! id -u vmail >/dev/null 2>&1; then
    echo "install-deps: creating user vmail"
    as_root useradd -M -r -s /usr/sbin/nologin vmail
fi
