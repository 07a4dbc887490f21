#!/usr/bin/env bash
# Builds the side environment the tests against the real thing use (tests/realnova): Nova 34,
# Keystone 30, gunicorn and PyMySQL in their own virtual environment at .nova-venv, pinned by
# build/nova-constraints.txt. Nova's code never enters the project's .venv; the tests run
# nova-manage, nova-api and Nova's objects as subprocesses of this environment's python.
#
# Idempotent: a stamp holds the hash of the inputs, so a second run returns at once. When
# APPLIANCE_NOVA_VENV names an existing environment, that one is used and nothing is built.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${APPLIANCE_NOVA_VENV:-}" ] && [ -x "$APPLIANCE_NOVA_VENV/bin/python" ]; then
    exit 0
fi

VENV=.nova-venv
STAMP=$VENV/.nova-env-stamp
PY=${PYTHON:-python3}
PACKAGES=(nova==34.0.0 keystone==30.0.0 gunicorn==26.0.0 PyMySQL==1.2.4)

inputs_hash=$( { cat build/nova-constraints.txt build/nova-env.sh; "$PY" --version; } | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$inputs_hash" ] && [ -x $VENV/bin/nova-manage ]; then
    exit 0
fi

echo "nova-env: building $VENV (Nova 34, Keystone 30; a few minutes the first time)"
# A changed pin set or a half-built environment starts afresh (a venv cannot be moved, so
# it is built in place; the stamp is written last).
rm -rf $VENV
"$PY" -m venv $VENV
$VENV/bin/pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
$VENV/bin/pip install -q -c build/nova-constraints.txt "${PACKAGES[@]}" 2>&1 \
    | grep -v '^WARNING: Location' || true
$VENV/bin/python -c 'import nova.objects, keystone, gunicorn, pymysql' \
    || { echo "nova-env: $VENV is incomplete (see pip's output above)" >&2; exit 1; }
echo "$inputs_hash" > "$STAMP"
echo "nova-env: side environment ready in $VENV"
