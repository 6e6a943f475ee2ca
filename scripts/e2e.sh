#!/usr/bin/env bash
# End-to-end test of the chat page (GET /) in headless Debian chromium against the real binary.
#   scripts/e2e.sh                       # builds target/release/wsfleet, then runs the test
#   WSFLEET_BIN=path/to/wsfleet scripts/e2e.sh   # uses that binary as is
#   E2E_OUT=dir scripts/e2e.sh           # screenshots go there (default target/e2e/)
# Browsers come from Debian's package only; playwright never downloads one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [[ ! -x /usr/bin/chromium ]]; then
  echo "e2e: installing Debian chromium" >&2
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y chromium
fi

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [[ ! -d scripts/e2e/node_modules/playwright-core ]]; then
  if [[ -f scripts/e2e/package-lock.json ]]; then
    (cd scripts/e2e && npm ci --no-audit --no-fund)
  else
    (cd scripts/e2e && npm install --no-audit --no-fund)
  fi
fi

if [[ -z "${WSFLEET_BIN:-}" ]]; then
  cargo build --release --bin wsfleet
  export WSFLEET_BIN="$root/target/release/wsfleet"
fi
[[ -x "$WSFLEET_BIN" ]] || { echo "e2e: WSFLEET_BIN=$WSFLEET_BIN is not an executable" >&2; exit 1; }
export E2E_OUT="${E2E_OUT:-$root/target/e2e}"

# Explicit file list rather than a directory: node 20 and 22 treat directory arguments differently.
exec node --test --test-concurrency=1 scripts/e2e/*.test.mjs
