#!/usr/bin/env bash
# Benchmark of `iot-custom-auth local` (not a test): logins/s including the authorizer call, and
# publish throughput through the policy check, with 1,000 devices configured by default.
#
#   bench/local/run.sh [--devices 1000] [--logins 2000] [--concurrency 8] [--messages 20000]
#
# Uses `node` from PATH, or IOT_CUSTOM_AUTH_NODE.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
cargo run --release --quiet --manifest-path bench/local/Cargo.toml \
  --target-dir target/bench-local -- "$PWD/target/release/iot-custom-auth" "$@"
