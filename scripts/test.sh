#!/usr/bin/env bash
# The test suite on a fresh machine: installs what the tests need, then runs them.
#
# Installs (Debian/Ubuntu, with apt-get; as root, or through sudo), only what is missing:
#   - chromium (+ fonts-dejavu-core): the HTML report and the dashboard are rendered and
#     walked in headless Chromium (tests/report.rs, tests/admin.rs, tests/dashboard.rs);
#   - nodejs + npm, and the reference `jsonata` npm package into target/npm: the JSONata
#     differential test (tests/jsonata_reference.rs) and the browser walk's driver
#     (tests/js/dashboard-walk.js, which talks to Chromium over its DevTools pipe);
#   - postgresql (the server binaries only: the store tests start a private server of their
#     own in a temp dir, as the `postgres` user; tests/support/pg.rs);
#   - python3 + pip, and the official Finch Python SDK (finch-api, from PyPI) into target/py:
#     tests/served.rs drives the proxy with it as a real client paginates.
# Then: cargo test --locked (extra arguments are passed on: scripts/test.sh --test dashboard).
#
# On a machine that already has them, plain `cargo test` runs the same tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || need+=(chromium fonts-dejavu-core)
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || need+=(nodejs npm)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
{ command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; } \
    || need+=(python3 python3-pip)

if [ ${#need[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: missing ${need[*]}; install them with your package manager," >&2
        echo "then run cargo test (see the comment at the top of this script)" >&2
        exit 2
    fi
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "scripts/test.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -f target/npm/node_modules/jsonata/package.json ]; then
    npm install --no-save --no-audit --no-fund --prefix target/npm jsonata@2 >/dev/null
fi

if [ ! -f target/py/finch/__init__.py ]; then
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-conflicts \
        --target target/py finch-api==2.9.1 >/dev/null
fi

# A one-off run (CI) keeps no incremental state: 1.3 GB less on a disk that may be small.
[ -z "${CI:-}" ] || export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
exec cargo test --locked "$@"
