#!/usr/bin/env bash
# Install what `make test-infra` needs, only what is missing, so that a re-run costs nothing:
#   Debian packages: nginx (nginx -t), prometheus (promtool), systemd (systemd-analyze), openssl
#   PyPI, into the project's virtualenv: infra/requirements-tools.txt
# Runs as root (or with sudo) on Debian/Ubuntu. Installing a package never starts its service
# here: /usr/sbin/policy-rc.d answers "101, not now" for the duration of the install.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PY:-.venv/bin/python}"

missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v promtool >/dev/null || missing+=(prometheus)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v openssl >/dev/null || missing+=(openssl)

if ((${#missing[@]})); then
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "install-tools: need root to install ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    echo "install-tools: apt-get install ${missing[*]}"
    policy=/usr/sbin/policy-rc.d
    own_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
        own_policy=1
    fi
    cleanup() { if [[ -n "$own_policy" ]]; then $sudo rm -f "$policy"; fi; }
    trap cleanup EXIT
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! "$PY" -c "import kubernetes_validate, compose, dockerfile" 2>/dev/null \
        || [[ ! -x "$(dirname "$PY")/shellcheck" ]]; then
    echo "install-tools: pip install -r infra/requirements-tools.txt"
    "$PY" -m pip install --quiet -r infra/requirements-tools.txt
fi
