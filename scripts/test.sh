#!/usr/bin/env bash
# Every test wsfleet has, on a fresh machine: formatting, lints, unit and integration tests
# (which start the real binary), the Autobahn conformance run, and the chat page in a real
# headless browser. Installs what it needs (kosoku from PyPI, Debian chromium,
# playwright-core from npm). Benchmarks are not run here: see scripts/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests"
cargo test --workspace --locked

step "release build"
cargo build --release --locked --bin wsfleet
export WSFLEET_BIN="$PWD/target/release/wsfleet"

step "Autobahn conformance (/echo)"
scripts/conformance.sh

step "chat page in headless chromium"
scripts/e2e.sh
