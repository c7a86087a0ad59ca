// DynamoDB-mode part of bench.mjs (`--store dynamodb`), against the stand-in's moto DynamoDB.
//
// The table is seeded with N items through the stand-in's control endpoint
// (`POST /_standin/dynamodb/seed`, straight into moto's backend: a million
// PutItem calls through the API would take moto far too long).
// (a) cold start: fresh processes, each importing index.mjs laid out as in
//     Lambda (SDK on a parent node_modules), then its first login (one GetItem).
// (b) warm: logins served from the cache, and logins that miss it (one GetItem
//     against the stand-in each).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { LAMBDA_SDK, deviceItem, makeVerifier, sdk, startStandin, storeJson } from '../../assets/authorizer/test/helpers.mjs';

export async function run({ devices: N, runs: RUNS, iterations: ITER, stats, ms, us }) {
  const INDEX = fileURLToPath(new URL('../../assets/authorizer/index.mjs', import.meta.url));
  const TABLE = 'bench-devices';
  const PW = 'bench-password-0123456789abcdef';
  const standin = await startStandin();
  const { DynamoDBClient, CreateTableCommand, GetItemCommand } = sdk();
  const db = new DynamoDBClient({});
  await db.send(
    new CreateTableCommand({
      TableName: TABLE,
      AttributeDefinitions: [{ AttributeName: 'username', AttributeType: 'S' }],
      KeySchema: [{ AttributeName: 'username', KeyType: 'HASH' }],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
  // moto serves its first DynamoDB call slowly (seconds: it loads the service model); a
  // stand-in artefact, not part of any cold start measured here.
  await db.send(new GetItemCommand({ TableName: TABLE, Key: { username: { S: 'warm-up' } } }));
  db.destroy();
  const { username: _u, clientIds: _c, ...item } = deviceItem('x', { verifier: makeVerifier(PW) });
  const seedStart = performance.now();
  // In chunks, so that no request outlasts the HTTP client's timeout on a busy machine.
  const CHUNK = 50000;
  let seeded;
  for (let start = 0; start < N; start += CHUNK) {
    seeded = await fetch(`${standin.url}/_standin/dynamodb/seed`, {
      method: 'POST',
      body: JSON.stringify({ table: TABLE, start, count: Math.min(CHUNK, N - start), prefix: 'sensor', item }),
    }).then(async (r) => (r.ok ? r.json() : { error: `${r.status} ${await r.text()}` }));
  }
  if (seeded?.items !== N) throw new Error(`seeding failed: ${JSON.stringify(seeded)}`);
  const seedSeconds = (performance.now() - seedStart) / 1000;

  // Lambda's layout: the code in task/, the runtime's SDK on a parent node_modules.
  const root = mkdtempSync(join(tmpdir(), 'authorizer-bench-ddb-'));
  process.on('exit', () => rmSync(root, { recursive: true, force: true }));
  symlinkSync(join(LAMBDA_SDK, 'node_modules'), join(root, 'node_modules'), 'dir');
  const layout = (name, cacheSeconds) => {
    const task = join(root, name);
    mkdirSync(task);
    copyFileSync(INDEX, join(task, 'index.mjs'));
    writeFileSync(join(task, 'devices.json'), JSON.stringify(storeJson(TABLE, cacheSeconds)));
    return pathToFileURL(join(task, 'index.mjs')).href;
  };
  const cachedUrl = layout('cached', 60);
  const uncachedUrl = layout('uncached', 0);

  const event = (i) => ({
    protocolData: { mqtt: { username: `sensor${i}`, password: Buffer.from(PW).toString('base64'), clientId: `sensor${i}` } },
  });
  const child = (i) => `
const logs = []; console.log = (...a) => logs.push(a.join(" "));
const c0 = process.cpuUsage();
const t0 = performance.now();
const m = await import(${JSON.stringify(cachedUrl)});
const t1 = performance.now();
const c1 = process.cpuUsage(c0);
const r = await m.handler(${JSON.stringify(event(i))}, {});
const t2 = performance.now();
if (!r.isAuthenticated) { process.stderr.write(JSON.stringify(logs)); process.exit(3); }
process.stdout.write(JSON.stringify({ importMs: t1 - t0, importCpuMs: (c1.user + c1.system) / 1000, firstLoginMs: t2 - t1, readyMs: t2 }));
`;
  const importMs = [];
  const importCpuMs = [];
  const firstMs = [];
  const readyMs = [];
  for (let k = 0; k < RUNS; k++) {
    const i = Math.floor((k + 0.5) * (N / RUNS));
    const { stdout: out } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', child(i)]);
    const r = JSON.parse(out);
    importMs.push(r.importMs);
    importCpuMs.push(r.importCpuMs);
    firstMs.push(r.firstLoginMs);
    readyMs.push(r.readyMs);
  }

  const realLog = console.log;
  console.log = () => {};
  const cached = await import(cachedUrl);
  const uncached = await import(uncachedUrl);
  const hot = Array.from({ length: 1000 }, (_, k) => event((k * 7919) % N));
  for (const e of hot) await cached.handler(e, {}); // fill the cache
  const hit = new Array(ITER);
  for (let i = 0; i < ITER; i++) {
    const t0 = process.hrtime.bigint();
    const r = await cached.handler(hot[i % hot.length], {});
    hit[i] = Number(process.hrtime.bigint() - t0) / 1e6;
    if (!r.isAuthenticated) throw new Error('cached login denied');
  }
  const MISSES = Math.min(ITER, 2000);
  const miss = new Array(MISSES);
  const missCpu0 = process.cpuUsage();
  for (let i = 0; i < MISSES; i++) {
    const t0 = process.hrtime.bigint();
    const r = await uncached.handler(event((i * 104729) % N), {});
    miss[i] = Number(process.hrtime.bigint() - t0) / 1e6;
    if (!r.isAuthenticated) throw new Error('uncached login denied');
  }
  const missCpu = process.cpuUsage(missCpu0);
  // The authorizer's own CPU per miss (the SDK building, signing and parsing one GetItem); the
  // stand-in runs in another process, so its time is not in here.
  const missCpuMs = (missCpu.user + missCpu.system) / 1000 / MISSES;
  console.log = realLog;
  await standin.stop();

  const [imp, cpu, fst, rdy, h, m] = [importMs, importCpuMs, firstMs, readyMs, hit, miss].map(stats);
  console.log(
    [
      `### Authorizer benchmark, DynamoDB store: node ${process.version} (${process.platform}-${process.arch})`,
      '',
      `1-minute load average ${loadavg()[0].toFixed(1)} at the end. ${N} devices in the table (seeded in ${seedSeconds.toFixed(1)} s through the stand-in's control endpoint); cold: ${RUNS} fresh processes; warm: ${ITER} cached logins, ${MISSES} cache misses.`,
      '',
      '| measurement | median | p99 / max | min | target |',
      '|---|---|---|---|---|',
      `| cold: import index.mjs incl. the SDK (ms) | ${ms(imp.median)} | ${ms(imp.max)} (max) | ${ms(imp.min)} | < 100 ms |`,
      `| cold: import, CPU time (user+system, ms) | ${ms(cpu.median)} | ${ms(cpu.max)} (max) | ${ms(cpu.min)} | (info) |`,
      `| cold: first login, one GetItem (ms) | ${ms(fst.median)} | ${ms(fst.max)} (max) | ${ms(fst.min)} | (info) |`,
      `| cold: process start to first answer (ms) | ${ms(rdy.median)} | ${ms(rdy.max)} (max) | ${ms(rdy.min)} | (info) |`,
      `| warm: login from the cache (µs) | ${us(h.median)} | ${us(h.p99)} (p99) | ${us(h.min)} | < 1000 µs |`,
      `| warm: cache miss, one GetItem to the stand-in (ms) | ${ms(m.median)} | ${ms(m.p99)} (p99) | ${ms(m.min)} | (info) |`,
      `| warm: cache miss, the function's CPU time per login (ms, mean) | ${ms(missCpuMs)} | | | (info) |`,
    ].join('\n'),
  );
}
