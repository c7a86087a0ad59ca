#!/usr/bin/env bash
# Benchmark of `device add` against the fleet size, in both stores (not a test).
#
#   bench/devices/run.sh [N ...]        default: 10 1000 100000 1000000
#
# DynamoDB store: a fresh stand-in per size (moto's DynamoDB, no AWS delays), the table seeded
# with N devices straight into moto's backend (`POST /_standin/dynamodb/seed`, as
# bench/authorizer/dynamodb.mjs does: a million PutItem calls would take moto hours), then
# RUNS × `device add` (one conditional PutItem each), median and range.
# Package store (N <= PACKAGE_MAX, default 100000): a config file holding N devices (verifiers
# of random passwords), then RUNS × `device add` (read, validate and rewrite the whole file).
# The import rate is bench/devices/import.sh's.
#
# Measures target/release/iot-custom-auth, or the binary IOT_CUSTOM_AUTH_BIN names (say which in
# BENCHMARKS.md). Needs the stand-in's venv (target/test-env, made by scripts/test).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bin=${IOT_CUSTOM_AUTH_BIN:-$root/target/release/iot-custom-auth}
python=${IOT_CUSTOM_AUTH_TEST_PYTHON:-$root/target/test-env/venv/bin/python}
runs=${RUNS:-5}
package_max=${PACKAGE_MAX:-100000}
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(10 1000 100000 1000000)
work=$(mktemp -d)
standin_pid=
cleanup() {
  [[ -n "$standin_pid" ]] && kill "$standin_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ms() { date +%s%N | cut -c1-13; }
# "median (min–max)" of the numbers on stdin.
summary() { sort -n | awk '{v[NR] = $1} END {printf "%d ms (%d–%d)", v[int((NR + 1) / 2)], v[1], v[NR]}'; }

# RUNS × `device add` in $1, one new device each, after one untimed; the times on stdout.
time_adds() {
  local dir=$1 i t0 t1
  # Not timed: the stand-in's first conditional PutItem loads moto's expression parser (about a
  # second), which AWS does not do.
  (cd "$dir" && "$bin" -q device add warm-up >/dev/null)
  for ((i = 0; i < runs; i++)); do
    t0=$(ms)
    (cd "$dir" && "$bin" -q device add "extra$i" >/dev/null)
    t1=$(ms)
    echo $((t1 - t0))
  done
}

echo "binary: $bin; $runs runs each; $(nproc) CPUs, load average $(cut -d' ' -f1 /proc/loadavg)"
for n in "${sizes[@]}"; do
  mkfifo "$work/in.$n"
  "$python" standin/server.py --port 0 --no-aws-delays <"$work/in.$n" >"$work/standin.$n" 2>/dev/null &
  standin_pid=$!
  exec 9>"$work/in.$n"
  until grep -q STANDIN_URL= "$work/standin.$n" 2>/dev/null; do sleep 0.1; done
  url=$(sed -n 's/STANDIN_URL=//p' "$work/standin.$n")
  export AWS_ENDPOINT_URL=$url AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=test \
    AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
  t0=$(ms)
  "$python" - "$url" "$n" <<'PY'
import base64, hashlib, json, secrets, sys, urllib.request
import boto3
url, n = sys.argv[1], int(sys.argv[2])
db = boto3.client("dynamodb")
db.create_table(TableName="bench-devices",
    KeySchema=[{"AttributeName": "username", "KeyType": "HASH"}],
    AttributeDefinitions=[{"AttributeName": "username", "AttributeType": "S"}],
    BillingMode="PAY_PER_REQUEST")
salt = secrets.token_bytes(16)
verifier = "sha256:%s:%s" % (base64.b64encode(salt).decode(),
    base64.b64encode(hashlib.sha256(salt + b"x" * 24).digest()).decode())
item = {"verifier": {"S": verifier}, "publish": {"L": []}, "subscribe": {"L": []},
        "updatedAt": {"S": "2026-12-01T00:00:00Z"}}
for start in range(0, n, 50000):
    body = json.dumps({"table": "bench-devices", "start": start, "count": min(50000, n - start),
                       "prefix": "sensor", "item": item}).encode()
    urllib.request.urlopen(urllib.request.Request(url + "/_standin/dynamodb/seed", body, method="POST"),
                           timeout=600).read()
PY
  t1=$(ms)
  dir="$work/table.$n"
  mkdir "$dir"
  printf '[deployment]\nname = "bench"\ncredential_store = "dynamodb"\n' >"$dir/iot-custom-auth.toml"
  echo "dynamodb  n=$n  device add: $(time_adds "$dir" | summary)   (seeded in $((t1 - t0)) ms)"
  exec 9>&-
  kill "$standin_pid" 2>/dev/null || true
  wait "$standin_pid" 2>/dev/null || true
  standin_pid=

  [[ $n -le $package_max ]] || continue
  dir="$work/package.$n"
  mkdir "$dir"
  "$python" - "$n" "$dir/iot-custom-auth.toml" <<'PY'
import base64, hashlib, secrets, sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write('[deployment]\nname = "bench"\n')
    for i in range(n):
        salt = secrets.token_bytes(16)
        digest = hashlib.sha256(salt + secrets.token_bytes(18)).digest()
        f.write(f'\n[[devices]]\nusername = "sensor{i}"\n'
                f'password_verifier = "sha256:{base64.b64encode(salt).decode()}:{base64.b64encode(digest).decode()}"\n'
                f'client_ids = ["sensor{i}"]\npublish = ["telemetry/sensor{i}"]\nsubscribe = []\n')
PY
  echo "package   n=$n  device add: $(time_adds "$dir" 2>/dev/null | summary)   (config file $(($(stat -c %s "$dir/iot-custom-auth.toml") / 1024)) KiB)"
done
