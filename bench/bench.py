"""The measurements behind BENCHMARKS.md; run through `bench/run`, which prepares everything.

One stand-in serves every run, with real-AWS delays on. Before each measured sequence its state
is reset and each service's backend is built by an unmeasured call, so no run pays moto's one-off
start-up costs. Times are wall-clock times of whole processes, as a user waits for them.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT = "123456789012"
PASSWORD = "Pw-sensor1-Zq8x3Lr5Tb7Nc2Vm9Kd4"

# The manual recipe's names (another deployment's, so nothing is shared with the tool's runs).
M_ROLE = "manual-authorizer-role"
M_FUNCTION = "manual-authorizer"
M_AUTHORIZER = "manual"
BASIC_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
KEYS = ("manual", "setup_empty", "setup_noop", "setup_update", "status", "teardown", "teardown_absent")
BEGIN = "<!-- bench/run: begin generated figures -->"
END = "<!-- bench/run: end generated figures -->"


def main() -> None:
    args = parse_args()
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.close()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--aws", required=True, help="the AWS CLI executable")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--fast-repeats", type=int, default=5, help="runs of the fast commands per run")
    p.add_argument("--role-propagation-seconds", type=float, default=8.0)
    p.add_argument("--function-pending-seconds", type=float, default=2.0)
    p.add_argument("--function-update-seconds", type=float, default=2.0)
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--manual-retry-seconds", type=float, default=1.0)
    p.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    p.add_argument("--command", default="bench/run", help="how this run was started, for the report")
    args = p.parse_args()
    # The tool and the AWS CLI run in scratch directories.
    args.binary = str(Path(shutil.which(args.binary) or args.binary).resolve())
    args.aws = str(Path(shutil.which(args.aws) or args.aws).resolve())
    return args


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="iot-custom-auth-bench-"))
        self.standin = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "standin/server.py"),
                "--port", "0",
                "--role-propagation-seconds", str(args.role_propagation_seconds),
                "--function-pending-seconds", str(args.function_pending_seconds),
                "--function-update-seconds", str(args.function_update_seconds),
                "--latency-ms", str(args.latency_ms),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.standin.stdout.readline().strip()
        if not line.startswith("STANDIN_URL="):
            raise SystemExit(f"bench: the stand-in did not start (it printed {line!r})")
        self.url = line.split("=", 1)[1]
        nowhere = str(self.work / "no-aws-config")
        self.env = dict(
            os.environ,
            AWS_ENDPOINT_URL=self.url,
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=nowhere,
            AWS_SHARED_CREDENTIALS_FILE=nowhere,
            AWS_PAGER="",
        )
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "IOT_CUSTOM_AUTH_NAME", "IOT_CUSTOM_AUTH_CONFIG"):
            self.env.pop(var, None)
        self.tool_dir = self.work / "tool"
        self.tool_dir.mkdir()
        self.manual_dir = self.work / "manual"
        self.manual_dir.mkdir()

    def close(self) -> None:
        if self.standin.poll() is None:
            self.standin.stdin.close()
            try:
                self.standin.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.standin.kill()
        shutil.rmtree(self.work, ignore_errors=True)

    # --- the stand-in ---------------------------------------------------------------------
    def control(self, method: str, route: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/_standin/{route}", data=data, method=method)
        with urllib.request.urlopen(req) as resp:
            return json.load(resp)

    def calls(self) -> list[dict]:
        return self.control("GET", "calls")

    def fresh_account(self) -> None:
        """Empty state, and every service's backend already built (moto builds one on its first
        call; IAM's loads the AWS-managed policies, which takes seconds)."""
        self.control("POST", "reset")
        import boto3  # from the stand-in's venv

        session = boto3.session.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
        )
        session.client("iam", endpoint_url=self.url).list_roles()
        session.client("lambda", endpoint_url=self.url).list_functions()
        session.client("iot", endpoint_url=self.url).list_authorizers()
        session.client("sts", endpoint_url=self.url).get_caller_identity()
        self.control("DELETE", "calls")

    # --- the tool ---------------------------------------------------------------------------
    def tool(self, *args: str, stdin: str | None = None) -> tuple[float, list[dict]]:
        """Runs the tool once; returns its wall time and the calls it made."""
        self.control("DELETE", "calls")
        started = time.perf_counter()
        out = subprocess.run(
            [self.args.binary, *args],
            cwd=self.tool_dir,
            env=self.env,
            input=stdin or "",
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(f"bench: `iot-custom-auth {' '.join(args)}` exited {out.returncode}:\n{out.stderr}")
        return elapsed, self.calls()

    # --- the manual recipe ------------------------------------------------------------------
    def aws(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [self.args.aws, *args, "--output", "json"],
            cwd=self.manual_dir,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if check and out.returncode != 0:
            raise SystemExit(f"bench: `aws {' '.join(args)}` exited {out.returncode}:\n{out.stderr}")
        return out

    def manual_recipe(self) -> tuple[float, list[dict]]:
        """The steps `setup` replaces, as a careful user runs them with the AWS CLI: each command
        once, CreateFunction retried every `--manual-retry-seconds` while IAM propagates the role,
        then the CLI's own waiter (one GetFunction a second) until the function is Active."""
        role_arn = f"arn:aws:iam::{ACCOUNT}:role/{M_ROLE}"
        function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{M_FUNCTION}"
        authorizer_arn = f"arn:aws:iot:{REGION}:{ACCOUNT}:authorizer/{M_AUTHORIZER}"
        self.control("DELETE", "calls")
        started = time.perf_counter()
        self.aws("iam", "create-role", "--role-name", M_ROLE,
                 "--assume-role-policy-document", "file://trust.json")
        self.aws("iam", "attach-role-policy", "--role-name", M_ROLE, "--policy-arn", BASIC_POLICY)
        while True:
            out = self.aws(
                "lambda", "create-function", "--function-name", M_FUNCTION,
                "--runtime", "nodejs22.x", "--handler", "index.handler", "--role", role_arn,
                "--timeout", "5", "--zip-file", "fileb://authorizer.zip", check=False,
            )
            if out.returncode == 0:
                break
            if "cannot be assumed" not in out.stderr:
                raise SystemExit(f"bench: create-function failed:\n{out.stderr}")
            time.sleep(self.args.manual_retry_seconds)
        self.aws("lambda", "wait", "function-active-v2", "--function-name", M_FUNCTION)
        self.aws("iot", "create-authorizer", "--authorizer-name", M_AUTHORIZER,
                 "--authorizer-function-arn", function_arn, "--signing-disabled", "--status", "ACTIVE")
        self.aws("lambda", "add-permission", "--function-name", M_FUNCTION,
                 "--statement-id", "iot-invoke", "--action", "lambda:InvokeFunction",
                 "--principal", "iot.amazonaws.com", "--source-arn", authorizer_arn,
                 "--source-account", ACCOUNT)
        self.aws("iot", "set-default-authorizer", "--authorizer-name", M_AUTHORIZER)
        return time.perf_counter() - started, self.calls()

    def prepare_manual_files(self) -> None:
        (self.manual_dir / "trust.json").write_text(json.dumps(TRUST))
        # The same authorizer source the tool deploys, with a devices file of the same shape.
        with zipfile.ZipFile(self.manual_dir / "authorizer.zip", "w", zipfile.ZIP_DEFLATED) as z:
            z.write(ROOT / "assets/authorizer/index.mjs", "index.mjs")
            z.writestr("devices.json", json.dumps({"version": 1, "devices": {}}))

    # --- the whole run ----------------------------------------------------------------------
    def run(self) -> None:
        a = self.args
        load_before = os.getloadavg()[0]
        self.prepare_manual_files()
        self.tool("device", "add", "sensor1", "--password-stdin", stdin=PASSWORD)
        series: dict[str, list[float]] = {k: [] for k in KEYS}
        counts: dict[str, list[dict]] = {k: [] for k in series}
        total = a.runs
        for i in range(total):
            print(f"bench: run {i + 1}/{total}", file=sys.stderr, flush=True)
            # Alternate which goes first, so neither always meets a freshly reset stand-in.
            order = ("tool", "manual") if i % 2 == 0 else ("manual", "tool")
            for who in order:
                self.fresh_account()
                if who == "manual":
                    t, c = self.manual_recipe()
                    series["manual"].append(t)
                    counts["manual"].append(split(c))
                    continue
                t, c = self.tool("setup")
                series["setup_empty"].append(t)
                counts["setup_empty"].append(split(c))
                for _ in range(a.fast_repeats):
                    for name, args in (("setup_noop", ("setup",)), ("status", ("status",))):
                        t, c = self.tool(*args)
                        series[name].append(t)
                        counts[name].append(split(c))
                # A device added: new code to upload, then Lambda's update to wait for.
                self.tool("device", "add", "sensor2", "--password-stdin", stdin=PASSWORD.replace("1", "2"))
                t, c = self.tool("setup")
                series["setup_update"].append(t)
                counts["setup_update"].append(split(c))
                self.tool("device", "remove", "sensor2")
                t, c = self.tool("teardown", "--yes")
                series["teardown"].append(t)
                counts["teardown"].append(split(c))
                for _ in range(a.fast_repeats):
                    t, c = self.tool("teardown", "--yes")
                    series["teardown_absent"].append(t)
                    counts["teardown_absent"].append(split(c))
        f = facts(a)
        f["load"] = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
        write_report(a, series, counts, f)


def split(calls: list[dict]) -> dict:
    reads = [c for c in calls if not c["mutating"]]
    writes = [c for c in calls if c["mutating"]]
    return {
        "reads": len(reads),
        "writes": len(writes),
        "read_ops": sorted({c["operation"] for c in reads}),
        "write_ops": [c["operation"] for c in sorted(writes, key=lambda c: c["start_ms"])],
        "sequential_steps": sequential_steps(calls),
    }


def sequential_steps(calls: list[dict]) -> int:
    """The longest chain of calls each of which started after the previous one was answered:
    the round trips the command waited for one after another. Overlapping calls share one."""
    depth: list[tuple[float, int]] = []  # (end_ms, chain length ending with that call)
    longest = 0
    for c in sorted(calls, key=lambda c: c["start_ms"]):
        d = 1 + max((n for end, n in depth if end <= c["start_ms"]), default=0)
        depth.append((c["end_ms"], d))
        longest = max(longest, d)
    return longest


# --- the report -----------------------------------------------------------------------------
def facts(a: argparse.Namespace) -> dict:
    def out(*cmd: str) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import moto

    node = os.environ.get("STANDIN_NODE") or shutil.which("node") or ""
    binary = Path(a.binary)
    f = {
        "cpu": cpu,
        "nproc": out("nproc"),
        "os": f"{platform.system()} {platform.release()}",
        "rustc": out("rustc", "--version"),
        "tool": out(a.binary, "--version"),
        "moto": moto.__version__,
        "python": platform.python_version(),
        "node": out(node, "--version") if node else "not installed (not needed: no TestInvokeAuthorizer)",
        "awscli": out(a.aws, "--version"),
        "size": binary.stat().st_size,
    }
    f["help"] = hyperfine_help(a.binary)
    return f


def hyperfine_help(binary: str) -> str:
    if not shutil.which("hyperfine"):
        return "not measured (hyperfine is not installed: `apt-get install -y hyperfine`)"
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        subprocess.run(
            ["hyperfine", "--shell=none", "--warmup", "20", "--runs", "300", "--export-json", tmp.name,
             "--style", "none", f"{binary} --help"],
            check=True, capture_output=True,
        )
        r = json.load(open(tmp.name))["results"][0]
    return (f"median {r['median'] * 1000:.2f} ms, mean {r['mean'] * 1000:.2f} ± {r['stddev'] * 1000:.2f} ms, "
            f"min {r['min'] * 1000:.2f} ms (hyperfine, 300 runs after 20 warm-up)")


def fmt_s(values: list[float]) -> tuple[str, str]:
    med = statistics.median(values)
    unit, scale = ("s", 1) if med >= 1 else ("ms", 1000)
    prec = 2 if unit == "s" else 0
    return f"{med * scale:.{prec}f} {unit}", f"{min(values) * scale:.{prec}f}–{max(values) * scale:.{prec}f} {unit}"


def count_cell(samples: list[dict], key: str) -> str:
    values = [s[key] for s in samples]
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{statistics.median(values):g} ({lo}–{hi})"


def write_report(a, series, counts, f) -> None:
    labels = {
        "manual": "manual recipe, AWS CLI (empty account)",
        "setup_empty": "`setup` (empty account)",
        "setup_noop": "`setup` (nothing changed)",
        "setup_update": "`setup` after `device add` (code update)",
        "status": "`status`",
        "teardown": "`teardown --yes` (everything deployed)",
        "teardown_absent": "`teardown --yes` (nothing deployed)",
    }
    lines = [
        BEGIN,
        "",
        f"Generated by `{a.command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        "| | |",
        "|---|---|",
        f"| Machine | {f['cpu']}, {f['nproc']} CPUs (`nproc`), {f['os']}; 1-minute load average {f['load']} |",
        f"| Tool | {f['tool']}, release build, {f['rustc']} |",
        f"| Stand-in | moto {f['moto']} (Python {f['python']}); Node.js {f['node']} |",
        f"| AWS CLI | {f['awscli']} |",
        f"| Delays | role propagation {a.role_propagation_seconds:g} s, function Pending {a.function_pending_seconds:g} s, "
        f"update InProgress {a.function_update_seconds:g} s, {a.latency_ms:g} ms per call |",
        f"| Runs | {a.runs} of each sequence; the fast commands {a.runs * a.fast_repeats} times each |",
        "",
        "### Wall time",
        "",
        "| What | Median | Spread (min–max) | n |",
        "|---|---:|---:|---:|",
    ]
    for key in KEYS:
        med, spread = fmt_s(series[key])
        lines.append(f"| {labels[key]} | {med} | {spread} | {len(series[key])} |")
    ratios = [t / m for t, m in zip(series["setup_empty"], series["manual"])]
    modelled = a.role_propagation_seconds + a.function_pending_seconds
    overheads = [t - modelled for t in series["setup_empty"]]
    lines += [
        "",
        f"**`setup` from empty / manual recipe: median ratio {statistics.median(ratios):.2f} "
        f"(per run {min(ratios):.2f}–{max(ratios):.2f})**, each run's pair measured on the same stand-in "
        "back to back.",
        "",
        f"**`setup` from empty above the modelled AWS delays** (role propagation + function Pending = "
        f"{modelled:g} s; the calls' latency counts as ours): **median {statistics.median(overheads):.2f} s** "
        f"(per run {min(overheads):.2f}–{max(overheads):.2f} s); the manual recipe / `setup` speed-up: "
        f"{statistics.median([1 / r for r in ratios]):.2f}×.",
        "",
        "### API calls per command",
        "",
        "Counted from the stand-in's call record. Retries and waiter polls count: they are calls too. "
        "\"Round trips\": the longest chain of calls each sent after the previous one was answered "
        "(calls in flight together count once), i.e. how many times the command waited for the network.",
        "",
        "| What | Reads | Writes | Round trips | Writes made (in one run) |",
        "|---|---:|---:|---:|---|",
    ]
    for key in KEYS:
        s = counts[key]
        ops = ", ".join(_compress(s[len(s) // 2]["write_ops"])) or "none"
        lines.append(f"| {labels[key]} | {count_cell(s, 'reads')} | {count_cell(s, 'writes')} | "
                     f"{count_cell(s, 'sequential_steps')} | {ops} |")
    lines += [
        "",
        "### Release binary",
        "",
        f"- Size: {f['size']:,} bytes ({f['size'] / 2**20:.1f} MiB), `{_shown(a.binary)}`",
        f"- `iot-custom-auth --help`: {f['help']}",
        "",
        END,
    ]
    block = "\n".join(lines)
    out = Path(a.out)
    text = out.read_text() if out.exists() else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    out.write_text(text)
    print(block)


def _shown(path: str) -> str:
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _compress(ops: list[str]) -> list[str]:
    """CreateFunction ×5 rather than five entries."""
    result: list[str] = []
    for op in ops:
        if result and re.sub(r" ×\d+$", "", result[-1]) == op:
            n = int(result[-1].rsplit("×", 1)[1]) + 1 if "×" in result[-1] else 2
            result[-1] = f"{op} ×{n}"
        else:
            result.append(op)
    return result


if __name__ == "__main__":
    main()
