#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: installs what it needs,
# checks formatting and lints, then runs every test of the workspace,
# end-to-end tests with real Bazel, BuildStream and an OCI registry included.
set -euo pipefail
cd "$(dirname "$0")/.."

bash integration/install-deps.sh
export PATH="$PWD/.venv/bin:$PATH"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
