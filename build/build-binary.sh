#!/usr/bin/env bash
# Builds dist/appliance, the one-file binary, with PyInstaller (pyinstaller.spec).
#
# Cached by the hash of its inputs (every *.py under appliance/ and replica/, the status
# page's files in appliance/static/, the spec,
# this script, the requirements and constraints, the interpreter and `git describe`):
# when dist/appliance was built from the same inputs, nothing is rebuilt. Work files go
# to build/work/ (gitignored). A lock serialises concurrent builds (parallel test runs).
#
#   bash build/build-binary.sh             build if the inputs changed
#   bash build/build-binary.sh --force     build even if they did not
#   bash build/build-binary.sh --hash      print the inputs' hash and exit
#   bash build/build-binary.sh --version   print the version it would bake in and exit
#
# Environment: APPLIANCE_ENTRY (entry script, default appliance/__main__.py),
# PYINSTALLER (default .venv/bin/pyinstaller), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=build/work
OUT=dist/appliance
STAMP=dist/.appliance.inputs
MAX_BYTES=$((60 * 1024 * 1024))
PYTHON=${PYTHON:-.venv/bin/python}
PYINSTALLER=${PYINSTALLER:-.venv/bin/pyinstaller}
export APPLIANCE_ENTRY=${APPLIANCE_ENTRY:-appliance/__main__.py}

force=0
case "${1:-}" in
    --force) force=1 ;;
    --hash|--version|"") ;;
    *) echo "usage: $0 [--force|--hash|--version]" >&2; exit 2 ;;
esac

if [ ! -f "$APPLIANCE_ENTRY" ]; then
    echo "build-binary: entry script $APPLIANCE_ENTRY does not exist" >&2
    exit 1
fi

# The version the binary reports (what `git describe --tags --always --dirty` says);
# part of the hash so that a new commit rebuilds. `describe --dirty` refreshes the
# index and may take .git/index.lock, which would make a commit made at that moment
# fail: the dirty check is done by a status that takes no lock instead.
describe_version() {
    local described
    described=$(git describe --tags --always 2>/dev/null) || return 0
    local changed
    changed=$(GIT_OPTIONAL_LOCKS=0 git status --porcelain --untracked-files=no 2>/dev/null)
    if [ -n "$changed" ]; then
        described="$described-dirty"
    fi
    echo "$described"
}
APPLIANCE_BUILD_VERSION=$(describe_version)
export APPLIANCE_BUILD_VERSION
if [ "${1:-}" = "--version" ]; then
    echo "$APPLIANCE_BUILD_VERSION"
    exit 0
fi

inputs_hash() {
    {
        find appliance replica \( -name '*.py' -o -path 'appliance/static/*' \) \
            -not -path '*/__pycache__/*' -type f -print | LC_ALL=C sort \
            | while read -r f; do printf '%s\n' "$f"; sha256sum < "$f"; done
        for f in pyinstaller.spec build/build-binary.sh requirements.txt requirements-dev.txt \
                 constraints.txt "$APPLIANCE_ENTRY"; do
            printf '%s\n' "$f"; sha256sum < "$f"
        done
        printf 'version %s\n' "$APPLIANCE_BUILD_VERSION"
        "$PYTHON" -c 'import sys; print(sys.version)'
    } | sha256sum | cut -c1-16
}

if [ "${1:-}" = "--hash" ]; then
    inputs_hash
    exit 0
fi

mkdir -p "$WORK" dist
exec 9>"$WORK/.lock"
flock 9
# Hashed under the lock: another build may have finished while this one waited.
hash=$(inputs_hash)
if [ $force = 0 ] && [ -x "$OUT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ]; then
    echo "build-binary: $OUT is up to date (inputs $hash)"
    exit 0
fi

echo "build-binary: building $OUT from $APPLIANCE_ENTRY (inputs $hash)"
started=$(date +%s)
rm -f "$STAMP"
# Expected warnings would bury real ones: gevent's hook names its own tests, and cffi's
# hook names setuptools and pycparser's generated tables, all excluded on purpose.
set +e
"$PYINSTALLER" --noconfirm --log-level WARN --distpath "$WORK/dist" --workpath "$WORK/pyinstaller" \
    pyinstaller.spec 2>&1 \
    | grep -v -E 'Hidden import "(gevent\.(tests|testing)[."]|setuptools\._distutils"|pycparser\.(lextab|yacctab)")'
status=${PIPESTATUS[0]}
set -e
if [ "$status" != 0 ]; then
    echo "build-binary: pyinstaller failed (exit $status)" >&2
    exit "$status"
fi

# Refuse a binary that would fail at the edge: wrong nanomsg wrapper, system libnanomsg
# instead of the bundled one, or over the size budget.
size=$(stat -c %s "$WORK/dist/appliance")
if [ "$size" -gt "$MAX_BYTES" ]; then
    echo "build-binary: $WORK/dist/appliance is $size bytes, over the budget of $MAX_BYTES" >&2
    exit 1
fi
"$WORK/dist/appliance" version --json | "$PYTHON" -c '
import json, sys
found = json.load(sys.stdin)
problems = []
if found.get("nanomsg-wrapper") != "_nanomsg_cpy":
    problems.append("nanomsg wrapper is %r, not the C extension" % found.get("nanomsg-wrapper"))
if "/_MEI" not in found.get("libnanomsg-path", ""):
    problems.append("libnanomsg was loaded from %r, not from the bundle" % found.get("libnanomsg-path"))
if problems:
    sys.exit("build-binary: self-check failed: " + "; ".join(problems))
'

install -m 0755 "$WORK/dist/appliance" "$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"
echo "$hash" > "$STAMP"
echo "build-binary: $OUT ready: $size bytes, built in $(( $(date +%s) - started ))s"
