#!/usr/bin/env bash
# Benchmark of `iot-custom-auth local` (not a test): logins/s including the authorizer call, and
# publish throughput through the policy check, over MQTT 3.1.1 and MQTT 5, plus QoS 1 publish
# throughput with a stalled subscriber attached; 1,000 devices configured by default.
#
#   bench/local/run.sh [--devices 1000] [--logins 2000] [--concurrency 8] [--messages 20000]
#                      [--mqtt5 0] [--stalled-messages N] [--authorizer-workers N]
#
# --mqtt5 0 and --stalled-messages (0 = leave out; default --messages) let the same harness
# measure an older build side by side (one without MQTT 5, or whose stalled subscriber holds each
# publish for a second). --authorizer-workers is passed to `local` (default: local's own).
#
# Uses `node` from PATH, or IOT_CUSTOM_AUTH_NODE. Measures target/release/iot-custom-auth (built
# here), or the binary IOT_CUSTOM_AUTH_BIN names.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${IOT_CUSTOM_AUTH_BIN:-}
if [[ -z "$bin" ]]; then
  cargo build --release --quiet
  bin="$PWD/target/release/iot-custom-auth"
fi
cargo run --release --quiet --manifest-path bench/local/Cargo.toml \
  --target-dir target/bench-local -- "$bin" "$@"
