#!/usr/bin/env node
// Benchmark for assets/authorizer/index.mjs (not a test).
//
//   node bench/authorizer/bench.mjs [--devices 10000] [--runs 15] [--iterations 20000]
//   node bench/authorizer/bench.mjs --store dynamodb [--devices 1000000] ...   (see dynamodb.mjs;
//     needs scripts/test's Python venv and Lambda SDK, like the authorizer's node tests)
//
// (a) cold start: a fresh node process imports index.mjs (with a devices.json
//     of N devices next to it); reports performance.now() around the import.
// (b) warm per-login: handler calls in one process after warm-up, with a good
//     and with a wrong password; per-call median / p99. Also the first login
//     of each of 1000 not-yet-seen devices (entries are validated lazily).
// Targets: cold import < 100 ms, warm login < 1 ms.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const N_DEVICES = Number(args.devices ?? 10000);
const RUNS = Number(args.runs ?? 15);
const ITER = Number(args.iterations ?? 20000);

// ---- stats
const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return { median: quantile(s, 0.5), p99: quantile(s, 0.99), min: s[0], max: s[s.length - 1] };
}
const ms = (x) => x.toFixed(2);
const us = (x) => (x * 1000).toFixed(1);

if (args.store === 'dynamodb') {
  const { run } = await import('./dynamodb.mjs');
  await run({ devices: N_DEVICES, runs: RUNS, iterations: ITER, stats, ms, us });
  process.exit(0);
}

// A 128 MB function gets 128/1769 of a vCPU ("at 1,769 MB, a function has the equivalent of one
// vCPU", Lambda developer guide, "Configuring Lambda function memory"); cold import is CPU-bound
// (JSON.parse of devices.json), so it takes about 1769/128 times as long there.
const LAMBDA_128MB_SLOWDOWN = 1769 / 128;

const INDEX = fileURLToPath(new URL('../../assets/authorizer/index.mjs', import.meta.url));
const ARN = 'arn:aws:iot:us-east-1:123456789012';

// ---- generate devices (same verifier algorithm as the Rust CLI)
const passwords = [];
const devices = {};
for (let i = 0; i < N_DEVICES; i++) {
  const name = `sensor${i}`;
  const pw = randomBytes(24).toString('base64url');
  const salt = randomBytes(16);
  const hash = createHash('sha256').update(salt).update(pw, 'utf8').digest();
  passwords.push(pw);
  devices[name] = {
    verifier: `sha256:${salt.toString('base64')}:${hash.toString('base64')}`,
    clientIds: [name],
    publish: [`telemetry/${name}`],
    subscribe: [`commands/${name}/#`],
  };
}
const dir = mkdtempSync(join(tmpdir(), 'authorizer-bench-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
copyFileSync(INDEX, join(dir, 'index.mjs'));
writeFileSync(
  join(dir, 'devices.json'),
  JSON.stringify({ version: 1, arnPrefix: ARN, refreshAfterInSeconds: 300, disconnectAfterInSeconds: 86400, devices }),
);
const devicesBytes = statSync(join(dir, 'devices.json')).size;
const modUrl = pathToFileURL(join(dir, 'index.mjs')).href;

// ---- (a) cold start
const child = `
const c0 = process.cpuUsage();
const t0 = performance.now();
const m = await import(${JSON.stringify(modUrl)});
const t1 = performance.now();
const c1 = process.cpuUsage(c0);
if (typeof m.handler !== 'function') process.exit(2);
process.stdout.write(JSON.stringify({ importMs: t1 - t0, importCpuMs: (c1.user + c1.system) / 1000, processToReadyMs: t1 }));
`;
const importMs = [];
const importCpuMs = [];
const readyMs = [];
for (let i = 0; i < RUNS; i++) {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8' });
  const r = JSON.parse(out);
  importMs.push(r.importMs);
  importCpuMs.push(r.importCpuMs);
  readyMs.push(r.processToReadyMs);
}

// ---- (b) warm per-login
const mod = await import(modUrl);
const realLog = console.log;
console.log = () => {}; // the handler's one log line per login is formatted, then discarded
const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');
const events = (good) =>
  Array.from({ length: 1000 }, (_, k) => {
    const i = (k * 7919) % N_DEVICES;
    const name = `sensor${i}`;
    const pw = good ? passwords[i] : passwords[(i + 1) % N_DEVICES];
    return { protocolData: { mqtt: { username: `${name}?SDK=Bench&Version=1`, password: b64(pw), clientId: name } } };
  });

async function measure(evs, expectAllow) {
  for (let i = 0; i < 2000; i++) await mod.handler(evs[i % evs.length], {}); // warm-up
  const t = new Array(ITER);
  for (let i = 0; i < ITER; i++) {
    const e = evs[i % evs.length];
    const t0 = process.hrtime.bigint();
    const r = await mod.handler(e, {});
    t[i] = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.isAuthenticated !== expectAllow) throw new Error(`unexpected result ${JSON.stringify(r)}`);
  }
  return stats(t);
}
const warmEvents = events(true);
const good = await measure(warmEvents, true);
const bad = await measure(events(false), false);

// First login of a device not seen before: includes validating its entry
// and decoding its verifier (done lazily, once per device).
const seen = new Set(warmEvents.map((e) => e.protocolData.mqtt.clientId));
const firstTimes = [];
for (let i = 0; i < N_DEVICES && firstTimes.length < 1000; i++) {
  const name = `sensor${i}`;
  if (seen.has(name)) continue;
  const e = { protocolData: { mqtt: { username: name, password: b64(passwords[i]), clientId: name } } };
  const t0 = process.hrtime.bigint();
  const r = await mod.handler(e, {});
  firstTimes.push(Number(process.hrtime.bigint() - t0) / 1e6);
  if (!r.isAuthenticated) throw new Error('first login denied');
}
const first = stats(firstTimes);
console.log = realLog;

const imp = stats(importMs);
const cpu = stats(importCpuMs);
const rdy = stats(readyMs);
const lines = [
  `### Authorizer benchmark: node ${process.version} (${process.platform}-${process.arch})`,
  '',
  `1-minute load average ${loadavg()[0].toFixed(1)} at the end. ${N_DEVICES} devices, devices.json ${(devicesBytes / 1024).toFixed(0)} KiB; cold: ${RUNS} fresh processes; warm: ${ITER} calls each after 2000 warm-up calls.`,
  '',
  '| measurement | median | p99 / max | min | target |',
  '|---|---|---|---|---|',
  `| cold: import index.mjs (ms) | ${ms(imp.median)} | ${ms(imp.max)} (max) | ${ms(imp.min)} | < 100 ms |`,
  `| cold: process start to module ready (ms) | ${ms(rdy.median)} | ${ms(rdy.max)} (max) | ${ms(rdy.min)} | (info) |`,
  `| cold: import, CPU time (user+system, ms) | ${ms(cpu.median)} | ${ms(cpu.max)} (max) | ${ms(cpu.min)} | (info) |`,
  `| cold: import CPU time projected to a 128 MB Lambda (×${LAMBDA_128MB_SLOWDOWN.toFixed(1)}, ms) | ${(cpu.median * LAMBDA_128MB_SLOWDOWN).toFixed(0)} | ${(cpu.max * LAMBDA_128MB_SLOWDOWN).toFixed(0)} (max) | ${(cpu.min * LAMBDA_128MB_SLOWDOWN).toFixed(0)} | (info) |`,
  `| warm: login, good password (µs) | ${us(good.median)} | ${us(good.p99)} (p99) | ${us(good.min)} | < 1000 µs |`,
  `| warm: login, wrong password (µs) | ${us(bad.median)} | ${us(bad.p99)} (p99) | ${us(bad.min)} | < 1000 µs |`,
];
// With 1000 devices or fewer, the warm loop has already logged every device in.
if (firstTimes.length > 0) {
  lines.push(`| first login of a device, good password (µs) | ${us(first.median)} | ${us(first.p99)} (p99) | ${us(first.min)} | < 1000 µs |`);
}
console.log(lines.join('\n'));
