#!/usr/bin/env bash
# Benchmark of the device stores (not a test). Against a fresh stand-in (moto's DynamoDB, no AWS
# delays): the import rate of N devices from CSV into the table, then the time of one
# `device add` with N devices in the table; and the time of one `device add` with N devices in
# the config file (package store).
#
#   bench/devices/run.sh [N ...]        default: 10 1000 10000
#
# Measures target/release/iot-custom-auth, or the binary IOT_CUSTOM_AUTH_BIN names (say which in
# BENCHMARKS.md). Needs the stand-in's venv (target/test-env, made by scripts/test).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bin=${IOT_CUSTOM_AUTH_BIN:-$root/target/release/iot-custom-auth}
python=${IOT_CUSTOM_AUTH_TEST_PYTHON:-$root/target/test-env/venv/bin/python}
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(10 1000 10000)
work=$(mktemp -d)
standin_pid=
cleanup() {
  [[ -n "$standin_pid" ]] && kill "$standin_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ms() { date +%s%N | cut -c1-13; }

# One random 24-letter password per device (what `device add` generates: 143 bits). About 1 in
# 100 of them fall under zxcvbn's 2^128 bar by chance; --skip-invalid leaves those out.
make_csv() {
  "$python" - "$1" "$2" <<'PY'
import secrets, string, sys
n, path = int(sys.argv[1]), sys.argv[2]
alphabet = string.ascii_letters + string.digits
with open(path, "w") as f:
    f.write("username,password\n")
    for i in range(n):
        f.write(f"dev{i},{''.join(secrets.choice(alphabet) for _ in range(24))}\n")
PY
}

for n in "${sizes[@]}"; do
  # A fresh stand-in per size, so each table starts empty.
  mkfifo "$work/in.$n"
  "$python" standin/server.py --port 0 --no-aws-delays <"$work/in.$n" >"$work/standin.$n" 2>/dev/null &
  standin_pid=$!
  exec 9>"$work/in.$n"
  until grep -q STANDIN_URL= "$work/standin.$n" 2>/dev/null; do sleep 0.1; done
  url=$(sed -n 's/STANDIN_URL=//p' "$work/standin.$n")
  export AWS_ENDPOINT_URL=$url AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=test \
    AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
  "$python" -c "
import boto3
boto3.client('dynamodb').create_table(TableName='bench-devices',
  KeySchema=[{'AttributeName':'username','KeyType':'HASH'}],
  AttributeDefinitions=[{'AttributeName':'username','AttributeType':'S'}],
  BillingMode='PAY_PER_REQUEST')"
  dir="$work/table.$n"; mkdir "$dir"
  printf '[deployment]\nname = "bench"\ncredential_store = "dynamodb"\n' >"$dir/iot-custom-auth.toml"
  make_csv "$n" "$dir/fleet.csv"
  t0=$(ms)
  (cd "$dir" && "$bin" -q device import fleet.csv --skip-invalid >/dev/null)
  t1=$(ms)
  (cd "$dir" && "$bin" -q device add extra >/dev/null)
  t2=$(ms)
  echo "dynamodb  n=$n  import ${n} devices: $((t1 - t0)) ms ($((n * 1000 / (t1 - t0 + 1))) devices/s)  device add: $((t2 - t1)) ms"
  exec 9>&-
  kill "$standin_pid" 2>/dev/null || true
  wait "$standin_pid" 2>/dev/null || true
  standin_pid=

  dir="$work/package.$n"; mkdir "$dir"
  cp "$work/table.$n/fleet.csv" "$dir/"
  (cd "$dir" && "$bin" -q device import fleet.csv --skip-invalid >/dev/null)
  t1=$(ms)
  (cd "$dir" && "$bin" -q device add extra >/dev/null)
  t2=$(ms)
  echo "package   n=$n  device add: $((t2 - t1)) ms"
done
