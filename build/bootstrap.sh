#!/usr/bin/env bash
# Installs everything the project needs, idempotently: libnanomsg and MariaDB (system
# packages; MariaDB for the tests against Nova's own databases, no service is started),
# wrk for the benchmarks, promtool (Debian's prometheus package) for the monitoring
# tests, zsh for the completion test, chromium for the status page's browser test, a
# virtual environment at .venv with pinned packages, and the project itself in editable
# mode (.venv/bin/appliance).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP=$VENV/.bootstrap-stamp
PY=${PYTHON:-python3}

need_apt=()
[ -e /usr/include/nanomsg/nn.h ] || need_apt+=(libnanomsg-dev)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
{ command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; } || need_apt+=(mariadb-server)
# the Galera tests: the provider and the rsync state transfer (mariadb-server pulls both in)
{ [ -e /usr/lib/galera/libgalera_smm.so ] && command -v rsync >/dev/null 2>&1; } || need_apt+=(galera-4 rsync)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v zsh >/dev/null 2>&1 || need_apt+=(zsh)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)   # verifies the systemd units in the tests
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
    echo "bootstrap: installing system packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The side environment with Nova and Keystone for the tests against the real thing.
bash build/nova-env.sh

inputs_hash=$(cat requirements.txt requirements-dev.txt constraints.txt pyproject.toml build/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$inputs_hash" ] && [ -x $VENV/bin/appliance ]; then
    exit 0
fi

[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
$VENV/bin/pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
# nanomsg must be built against libnanomsg's headers: a cached ctypes-only wheel fails at bind().
$VENV/bin/pip install -q --no-cache-dir --no-binary nanomsg -c constraints.txt -r requirements-dev.txt 2>&1 \
    | grep -v '^WARNING: Location' || true
$VENV/bin/pip install -q --no-deps nova==34.0.0 2>&1 | grep -v '^WARNING: Location' || true
$VENV/bin/pip install -q --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true
$VENV/bin/python -c 'import nanomsg, sys; sys.exit(0 if nanomsg.wrapper.__name__ == "_nanomsg_cpy" else "nanomsg was built without libnanomsg headers: rm -rf .venv and run make again")'
echo "$inputs_hash" > "$STAMP"
echo "bootstrap: environment ready in $VENV"
