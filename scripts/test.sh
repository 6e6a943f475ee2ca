#!/usr/bin/env bash
# Every test wsfleet has, on a fresh machine: formatting, lints, unit and integration tests
# (which start the real binary), the Autobahn conformance run, and the chat page in a real
# headless browser. Installs what it needs (kosoku from PyPI, Debian chromium,
# playwright-core from npm, Debian redis-server for tests/redis.rs, which starts its own
# instances on free ports without persistence and stops them; a system Redis is not used). Benchmarks are not run here: see scripts/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "redis-server (for tests/redis.rs)"
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y redis-server || { apt-get update && apt-get install -y redis-server; }
    else
        sudo apt-get install -y redis-server || { sudo apt-get update && sudo apt-get install -y redis-server; }
    fi
fi
redis-server --version

step "unit and integration tests"
cargo test --workspace --locked

step "release build"
cargo build --release --locked --bin wsfleet
export WSFLEET_BIN="$PWD/target/release/wsfleet"

step "Autobahn conformance (/echo)"
scripts/conformance.sh

step "chat page in headless chromium"
scripts/e2e.sh
