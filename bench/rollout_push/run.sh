#!/usr/bin/env bash
# Runs the rollout push benchmark with as many file descriptors as this shell may have
# (the Node client and otahubd each hold one socket per device). Arguments go to run.js.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ulimit -n "$(ulimit -Hn)"
: "${OTAHUB_BIN_DIR:=$here/../../build/bin}"
export OTAHUB_BIN_DIR
if [ -z "${OTAHUB_TEST_DATABASE_URL:-}" ]; then
    echo "OTAHUB_TEST_DATABASE_URL is not set (a superuser URI of a throwaway PostgreSQL)" >&2
    exit 2
fi
exec node "$here/run.js" "$@"
