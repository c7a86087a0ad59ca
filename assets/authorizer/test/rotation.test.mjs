// Rotation and disabling in the package store (devices.json entries with
// `previous` and `disabled`), the store-mode devices.json, and the bound of
// the DynamoDB-mode cache.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  DENIED,
  b64,
  captureLogs,
  devicesJson,
  importFresh,
  makeVerifier,
  mqttEvent,
  randomPassword,
  storeJson,
} from './helpers.mjs';

const PW = randomPassword();
const OLD = randomPassword();
const OLDER = randomPassword();
const now = () => Math.floor(Date.now() / 1000);

const obj = devicesJson({ rotated: { password: PW }, off: { password: PW }, plain: { password: PW } });
const soon = now() + 3600;
obj.devices.rotated.previous = [
  { verifier: makeVerifier(OLD), expiresAt: soon },
  { verifier: makeVerifier(OLDER), expiresAt: now() - 1 },
];
obj.devices.off.disabled = true;
obj.devices.plain.disabled = false;
obj.devices.badprev = { ...obj.devices.plain, previous: [{ verifier: makeVerifier(OLD) }] };
obj.devices.baddisabled = { ...obj.devices.plain, disabled: 'yes' };
const { mod, errors } = await importFresh(JSON.stringify(obj));

async function login(user, password) {
  const { result, logs } = await captureLogs(() => mod.handler(mqttEvent(user, b64(password), user), {}));
  assert.equal(logs.length, 1);
  return { result, log: JSON.parse(logs[0]) };
}
async function denied(user, password, reason) {
  const { result, log } = await login(user, password);
  assert.deepEqual(result, DENIED);
  assert.equal(log.reason, reason);
}
async function allowed(user, password) {
  const { result, log } = await login(user, password);
  assert.equal(result.isAuthenticated, true, JSON.stringify(log));
}
async function at(unixSeconds, fn) {
  const real = Date.now;
  Date.now = () => unixSeconds * 1000;
  try {
    return await fn();
  } finally {
    Date.now = real;
  }
}

test('devices.json with previous and disabled loads silently', () => assert.deepEqual(errors, []));

describe('rotation overlap (package store)', () => {
  test('the new and the unexpired previous password both log in', async () => {
    await allowed('rotated', PW);
    await allowed('rotated', OLD);
  });
  test('an expired previous password is a wrong password', () => denied('rotated', OLDER, 'wrong password'));
  test('the previous password stops at expiresAt by the function clock', async () => {
    await at(soon - 1, () => allowed('rotated', OLD));
    await at(soon, () => denied('rotated', OLD, 'wrong password'));
    await at(soon + 86400, () => allowed('rotated', PW));
  });
});

describe('disabled (package store)', () => {
  test('a disabled device is denied with reason "disabled", even with its password', () =>
    denied('off', PW, 'disabled'));
  test('disabled: false logs in', () => allowed('plain', PW));
  test('malformed previous or disabled denies only that device', async () => {
    await denied('badprev', PW, 'invalid device entry: previous malformed');
    await denied('baddisabled', PW, 'invalid device entry: disabled malformed');
  });
});

describe('store-mode devices.json', () => {
  test('names the table and cache lifetime, holds no devices', () => {
    const s = mod.loadDevices(storeJson('fleet-devices', 45));
    assert.equal(s.kind, 'dynamodb');
    assert.equal(s.table, 'fleet-devices');
    assert.equal(s.cacheSeconds, 45);
    assert.equal(s.devices, undefined);
  });
  test('cacheSeconds is clamped into 0..300', () => {
    assert.equal(mod.loadDevices(storeJson('fleet-devices', 1e6)).cacheSeconds, mod.MAX_CACHE_SECONDS);
    assert.equal(mod.loadDevices(storeJson('fleet-devices', -5)).cacheSeconds, 0);
  });
  const invalid = {
    'unknown kind': { ...storeJson('t-devices'), store: { kind: 's3', table: 't-devices', cacheSeconds: 60 } },
    'bad table name': storeJson('no spaces allowed'),
    'table too short': storeJson('ab'),
    'cacheSeconds missing': { ...storeJson('t-devices'), store: { kind: 'dynamodb', table: 't-devices' } },
    'both store and devices': storeJson('t-devices', 60, { devices: {} }),
    'store null': storeJson('t-devices', 60, { store: null }),
  };
  for (const [name, o] of Object.entries(invalid)) {
    test(`rejects ${name}`, () => assert.throws(() => mod.loadDevices(o), /devices\.json: /));
  }
});

describe('DynamoDB-mode cache', () => {
  // A client that answers GetItem from a Map and counts the reads, to measure the cache alone.
  function countingStore(cacheSeconds) {
    const store = mod.loadDevices(storeJson('fleet-devices', cacheSeconds));
    const items = new Map();
    let reads = 0;
    class GetItemCommand {
      constructor(input) {
        this.input = input;
      }
    }
    mod.connectTable(store, {
      DynamoDBClient: class {
        async send(cmd) {
          reads += 1;
          return { Item: items.get(cmd.input.Key.username.S) };
        }
      },
      GetItemCommand,
    });
    return { store, items, reads: () => reads };
  }
  const item = (u) => ({
    username: { S: u },
    verifier: { S: makeVerifier(PW) },
    clientIds: { L: [{ S: u }] },
  });

  test('one read per device per lifetime, known or unknown', async () => {
    const { store, items, reads } = countingStore(60);
    items.set('a', item('a'));
    for (let i = 0; i < 5; i++) {
      assert.ok(await mod.fetchDevice(store, 'a'));
      assert.equal(await mod.fetchDevice(store, 'nobody'), undefined);
    }
    assert.equal(reads(), 2);
  });

  test('cacheSeconds 0 reads every time', async () => {
    const { store, items, reads } = countingStore(0);
    items.set('a', item('a'));
    for (let i = 0; i < 3; i++) await mod.fetchDevice(store, 'a');
    assert.equal(reads(), 3);
    assert.equal(store.cache.size, 0);
  });

  test(`a scan of random usernames keeps at most ${mod.MAX_CACHE_ENTRIES} entries, least recently used out`, async () => {
    const { store, items, reads } = countingStore(60);
    items.set('keep', item('keep'));
    await mod.fetchDevice(store, 'keep');
    for (let i = 0; i < mod.MAX_CACHE_ENTRIES * 2; i++) {
      await mod.fetchDevice(store, `scan-${i}`);
      if (i % 1000 === 0) await mod.fetchDevice(store, 'keep'); // in use: stays cached
      assert.ok(store.cache.size <= mod.MAX_CACHE_ENTRIES);
    }
    assert.equal(store.cache.size, mod.MAX_CACHE_ENTRIES);
    const before = reads();
    await mod.fetchDevice(store, 'keep');
    assert.equal(reads(), before, 'a device in use stays cached');
    await mod.fetchDevice(store, 'scan-0');
    assert.equal(reads(), before + 1, 'the oldest entries were evicted');
  });
});

test('an item with the contract attribute types compiles like a devices.json entry', () => {
  const entry = mod.entryFromItem({
    username: { S: 'x' },
    verifier: { S: makeVerifier(PW) },
    previous: { L: [{ M: { verifier: { S: makeVerifier(OLD) }, expiresAt: { N: '1767225600' } } }] },
    clientIds: { L: [{ S: 'x' }, { S: 'x-2' }] },
    publish: { L: [{ S: 'a/b' }] },
    subscribe: { L: [] },
    disabled: { BOOL: true },
    updatedAt: { S: '2026-01-01T00:00:00Z' },
  });
  assert.deepEqual(entry.clientIds, ['x', 'x-2']);
  assert.deepEqual(entry.publish, ['a/b']);
  assert.deepEqual(entry.subscribe, []);
  assert.equal(entry.previous[0].expiresAt, 1767225600);
  assert.equal(entry.disabled, true);
});
