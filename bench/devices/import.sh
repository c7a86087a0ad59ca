#!/usr/bin/env bash
# Issue 13's import acceptance, as a script (too slow for a test under the debug build): N devices
# from CSV into the DynamoDB table on a fresh stand-in (moto's DynamoDB, no AWS delays).
#
#   bench/devices/import.sh [N] [--passwords]     default N: 100000 (KEEP=1 keeps the files)
#
# 1. `device import fleet.csv --skip-invalid` on a pseudo-terminal (`script -qc`): a progress bar
#    is drawn (carriage-return redraws), the bad rows are reported by line, the good rows written;
# 2. the same import again, stderr a file (no terminal): plain progress lines only (no control
#    characters), and nothing written (every device already stored as the file says);
# 3. the table holds exactly the good rows (Scan, Select=COUNT).
# Every 1,000th row is bad (a username with a space, a weak password or verifier, a client ID
# claimed twice), so 1 in 1,000 is refused. Rows carry a verifier made from a random password
# (as `device export --with-verifiers` writes them); with --passwords they carry the random
# 24-letter passwords instead, which every import checks with zxcvbn (costly in a debug build).
#
# Prints the rates; exits non-zero when an acceptance check fails. Measures
# target/release/iot-custom-auth, or the binary IOT_CUSTOM_AUTH_BIN names. Needs the stand-in's
# venv (target/test-env, made by scripts/test) and `script` (util-linux).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bin=${IOT_CUSTOM_AUTH_BIN:-$root/target/release/iot-custom-auth}
python=${IOT_CUSTOM_AUTH_TEST_PYTHON:-$root/target/test-env/venv/bin/python}
n=100000
mode=verifier
for arg in "$@"; do
  case $arg in
    --passwords) mode=password ;;
    *[!0-9]* | '') echo "usage: $0 [N] [--passwords]" >&2; exit 2 ;;
    *) n=$arg ;;
  esac
done
work=$(mktemp -d)
standin_pid=
cleanup() {
  [[ -n "$standin_pid" ]] && kill "$standin_pid" 2>/dev/null || true
  if [[ -n ${KEEP:-} ]]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }
ms() { date +%s%N | cut -c1-13; }

mkfifo "$work/in"
"$python" standin/server.py --port 0 --no-aws-delays <"$work/in" >"$work/standin.out" 2>/dev/null &
standin_pid=$!
exec 9>"$work/in"
until grep -q STANDIN_URL= "$work/standin.out" 2>/dev/null; do sleep 0.1; done
url=$(sed -n 's/STANDIN_URL=//p' "$work/standin.out")
export AWS_ENDPOINT_URL=$url AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=test \
  AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
"$python" -c "
import boto3
boto3.client('dynamodb').create_table(TableName='bench-devices',
  KeySchema=[{'AttributeName':'username','KeyType':'HASH'}],
  AttributeDefinitions=[{'AttributeName':'username','AttributeType':'S'}],
  BillingMode='PAY_PER_REQUEST')"
cd "$work"
printf '[deployment]\nname = "bench"\ncredential_store = "dynamodb"\n' >iot-custom-auth.toml

# The CSV: N rows, every 1,000th bad in one of three ways.
bad=$("$python" - "$n" "$mode" <<'PY'
import base64, hashlib, secrets, string, sys
n, mode = int(sys.argv[1]), sys.argv[2]
alphabet = string.ascii_letters + string.digits
def verifier(password):
    salt = secrets.token_bytes(16)
    digest = hashlib.sha256(salt + password.encode()).digest()
    return f"sha256:{base64.b64encode(salt).decode()}:{base64.b64encode(digest).decode()}"
bad = 0
with open("fleet.csv", "w") as f:
    f.write(f"username,{mode},client_ids\n")
    for i in range(n):
        secret = "".join(secrets.choice(alphabet) for _ in range(24))
        if mode == "verifier":
            secret = verifier(secret)
        client = f"dev{i}"
        if i % 1000 == 999:
            bad += 1
            kind = (i // 1000) % 3
            if kind == 0:
                f.write(f"bad dev{i},{secret},\n")
                continue
            if kind == 1:
                secret = "password123" if mode == "password" else "sha256:short:x"
            else:
                client = "dev0"  # claimed by row 1 already
        f.write(f"dev{i},{secret},{client}\n")
print(bad)
PY
)
echo "fleet.csv: $n rows ($mode column), $bad made bad"

# 1. On a terminal: the bar. `script` gives the command a pty; its output is what a user sees.
t0=$(ms)
script -qefc "'$bin' device import fleet.csv --skip-invalid" tty.log >/dev/null </dev/null
t1=$(ms)
# indicatif redraws the bar in place: a carriage return or an erase-line sequence per frame.
frames=$(grep -o $'\r\|\x1b\\[2K' tty.log | wc -l)
[[ $frames -gt 0 ]] || fail "no progress bar drawn on the terminal"
summary=$(grep -o "$n rows, [0-9]* written, 0 already up to date, [0-9]* refused" tty.log) ||
  fail "no import summary: $(grep imported tty.log)"
read -r written refused < <(sed 's/.* rows, \([0-9]*\) written, .*, \([0-9]*\) refused/\1 \2/' <<<"$summary")
# Random passwords fall under zxcvbn's bar now and then (about 1 in 100): refused too, rightly.
if [[ $mode == verifier ]]; then [[ $refused -eq $bad ]]; else [[ $refused -ge $bad ]]; fi ||
  fail "$refused rows refused, $bad bad"
[[ $((written + refused)) -eq $n ]] || fail "$written written + $refused refused != $n rows"
[[ $(grep -c "refused line [0-9]*:" tty.log) -eq $refused ]] || fail "not every refused row is listed"
for ((i = 999; i < n; i += 1000)); do
  grep -q "refused line $((i + 2)):" tty.log || fail "bad row on line $((i + 2)) not reported"
done
good=$written
echo "1. terminal: $((t1 - t0)) ms, $((good * 1000 / (t1 - t0 + 1))) devices/s written ($good); bar drawn in $frames frames; $refused refused rows reported, e.g.:"
grep -m3 "refused line" tty.log | sed 's/^/     /'

# 2. Not a terminal: plain lines, and a re-run writes nothing.
t0=$(ms)
"$bin" --output json device import fleet.csv --skip-invalid >rerun.json 2>plain.log
t1=$(ms)
if grep -q $'\r\|\x1b' plain.log; then fail "control characters in the plain progress"; fi
written=$("$python" -c "import json; r = json.load(open('rerun.json')); print(r['written'], r['unchanged'], len(r['refused']))")
[[ $written == "0 $good $refused" ]] || fail "re-run: written, unchanged, refused = $written; want 0 $good $refused"
echo "2. re-run, no terminal: $((t1 - t0)) ms, $((good * 1000 / (t1 - t0 + 1))) devices/s compared; written 0, unchanged $good, refused $refused; $(grep -c . plain.log) plain stderr lines:"
sed 's/^/     /' plain.log | head -5

# 3. The table holds the good rows.
count=$("$python" -c "
import boto3
c, n, start = boto3.client('dynamodb'), 0, None
while True:
    kw = {'ExclusiveStartKey': start} if start else {}
    r = c.scan(TableName='bench-devices', Select='COUNT', **kw)
    n += r['Count']; start = r.get('LastEvaluatedKey')
    if not start: break
print(n)")
[[ $count -eq $good ]] || fail "the table holds $count devices, $good expected"
echo "3. the table holds $count devices"
