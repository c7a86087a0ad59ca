// Module init from devices.json: missing or invalid file -> module still
// loads, every login denied, reason logged once on stderr.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'node:test';
import { DENIED, INDEX, b64, captureLogs, devicesJson, importFresh, mqttEvent, randomPassword } from './helpers.mjs';

const PW = randomPassword();
const good = devicesJson({ sensor1: { password: PW } });
const login = mqttEvent('sensor1', b64(PW), 'sensor1');

async function assertAllDenied(mod) {
  for (const e of [login, mqttEvent('sensor1?SDK=x', b64(PW), 'sensor1'), null]) {
    const { result, logs } = await captureLogs(() => mod.handler(e, {}));
    assert.deepEqual(result, DENIED);
    assert.equal(logs.length, 1);
  }
}

test('valid devices.json: login works, nothing on stderr', async () => {
  const { mod, errors } = await importFresh(JSON.stringify(good));
  assert.deepEqual(errors, []);
  const { result } = await captureLogs(() => mod.handler(login, {}));
  assert.equal(result.isAuthenticated, true);
});

test('pretty-printed devices.json with a non-ASCII username loads', async () => {
  const { mod, errors } = await importFresh(JSON.stringify(devicesJson({ 'zähler-1': { password: PW } }), null, 2));
  assert.deepEqual(errors, []);
  const { result } = await captureLogs(() => mod.handler(mqttEvent('zähler-1', b64(PW), 'zähler-1'), {}));
  assert.equal(result.isAuthenticated, true);
  assert.equal(result.principalId, 'zhler1');
});

const broken = {
  'absent file': [null, /not found/],
  'empty file': ['', /JSON|Unexpected/i],
  'not JSON': ['{devices: ', /JSON|Unexpected|Expected/i],
  'JSON null': ['null', /not an object/],
  'JSON array': ['[]', /not an object/],
  'wrong version': [JSON.stringify({ ...good, version: 2 }), /version/],
  'bad arnPrefix': [JSON.stringify({ ...good, arnPrefix: 'arn:aws:iot:::' }), /arnPrefix/],
  'no devices': [JSON.stringify({ ...good, devices: undefined }), /devices/],
  'refresh as string': [JSON.stringify({ ...good, refreshAfterInSeconds: '300' }), /refreshAfterInSeconds/],
};
for (const [name, [text, re]] of Object.entries(broken)) {
  test(`${name}: module loads, every login denied, one stderr line`, async () => {
    const { mod, errors } = await importFresh(text);
    assert.equal(typeof mod.handler, 'function');
    assert.equal(errors.length, 1, JSON.stringify(errors));
    assert.match(errors[0], re);
    assert.match(errors[0], /denied/);
    await assertAllDenied(mod);
  });
}

test('devices.json is a directory: still loads and denies', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'authorizer-test-'));
  copyFileSync(INDEX, join(dir, 'index.mjs'));
  mkdirSync(join(dir, 'devices.json'));
  const orig = console.error;
  const errors = [];
  console.error = (...a) => errors.push(a.join(' '));
  let mod;
  try {
    mod = await import(pathToFileURL(join(dir, 'index.mjs')).href);
  } finally {
    console.error = orig;
    rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(errors.length, 1);
  await assertAllDenied(mod);
});

test('index.mjs statically imports only node: built-ins, the SDK only dynamically', () => {
  const src = readFileSync(INDEX, 'utf8');
  const imports = [...src.matchAll(/^\s*import\s[^'"]*['"]([^'"]+)['"]/gm)].map((x) => x[1]);
  assert.ok(imports.length > 0);
  for (const i of imports) assert.match(i, /^node:/);
  const dynamic = [...src.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)].map((x) => x[1]);
  assert.deepEqual(dynamic, ['@aws-sdk/client-dynamodb']);
  assert.ok(!/\bnew Buffer\(/.test(src));
  assert.ok(!/\brequire\(/.test(src));
  assert.match(src, /export const handler = async \(event, context\) =>/);
});
