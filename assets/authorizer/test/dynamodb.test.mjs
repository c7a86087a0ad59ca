// DynamoDB mode: the handler reads each device's item from the table (moto's
// DynamoDB in the stand-in) with the SDK the Lambda runtime includes.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  DENIED,
  b64,
  captureLogs,
  deviceItem,
  importWithRuntime,
  makeVerifier,
  mqttEvent,
  randomPassword,
  sdk,
  startStandin,
  storeJson,
} from './helpers.mjs';

const { DynamoDBClient, CreateTableCommand, PutItemCommand, DeleteItemCommand, DeleteTableCommand } = sdk();
const TABLE = 'fleet-devices';
const PW = randomPassword();
const OLD_PW = randomPassword();

let standin;
let db;
before(async () => {
  standin = await startStandin();
  db = new DynamoDBClient({});
  await createTable(TABLE);
});
after(async () => {
  db?.destroy();
  await standin?.stop();
});

const createTable = (name) =>
  db.send(
    new CreateTableCommand({
      TableName: name,
      AttributeDefinitions: [{ AttributeName: 'username', AttributeType: 'S' }],
      KeySchema: [{ AttributeName: 'username', KeyType: 'HASH' }],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
const put = (item, table = TABLE) => db.send(new PutItemCommand({ TableName: table, Item: item }));
const remove = (username) => db.send(new DeleteItemCommand({ TableName: TABLE, Key: { username: { S: username } } }));

async function login(mod, user, password, clientId = user) {
  const { result, logs } = await captureLogs(() => mod.handler(mqttEvent(user, b64(password), clientId), {}));
  assert.equal(logs.length, 1, `one log line per login, got ${JSON.stringify(logs)}`);
  return { result, log: JSON.parse(logs[0]) };
}
async function allowed(mod, user, password) {
  const { result, log } = await login(mod, user, password);
  assert.equal(result.isAuthenticated, true, `expected allow, log: ${JSON.stringify(log)}`);
  assert.equal(log.result, 'allow');
  return result;
}
async function denied(mod, user, password, reason) {
  const { result, log } = await login(mod, user, password);
  assert.deepEqual(result, DENIED);
  assert.equal(log.result, 'deny');
  assert.equal(log.reason, reason);
}

/** Run fn with Date.now moved `seconds` ahead (the function's clock). */
async function later(seconds, fn) {
  const real = Date.now;
  Date.now = () => real() + seconds * 1000;
  try {
    return await fn();
  } finally {
    Date.now = real;
  }
}

describe('no cache (cacheSeconds 0): every login reads the item', () => {
  let mod;
  before(async () => {
    const loaded = await importWithRuntime(JSON.stringify(storeJson(TABLE, 0)));
    assert.deepEqual(loaded.errors, []);
    mod = loaded.mod;
  });

  test('a device in the table logs in, with the policy from its item', async () => {
    await put(deviceItem('sensor1', { password: PW, publish: ['telemetry/sensor1'], subscribe: ['cmd/sensor1/#'] }));
    const r = await allowed(mod, 'sensor1', PW);
    assert.equal(r.principalId, 'sensor1');
    const resources = r.policyDocuments.flatMap((d) => d.Statement.flatMap((s) => s.Resource));
    assert.ok(resources.some((x) => x.endsWith(':topic/telemetry/sensor1')));
    assert.ok(resources.some((x) => x.endsWith(':topicfilter/cmd/sensor1/#')));
  });

  test('wrong password, wrong client ID and unknown user are denied', async () => {
    await put(deviceItem('sensor2', { password: PW }));
    await denied(mod, 'sensor2', randomPassword(), 'wrong password');
    const { result, log } = await login(mod, 'sensor2', PW, 'someone-else');
    assert.deepEqual(result, DENIED);
    assert.equal(log.reason, 'clientId not allowed');
    await denied(mod, 'nobody', PW, 'unknown user');
  });

  test('a disabled device is denied; enabled again, it logs in', async () => {
    await put(deviceItem('sensor3', { password: PW, disabled: true }));
    await denied(mod, 'sensor3', PW, 'disabled');
    await put(deviceItem('sensor3', { password: PW, disabled: false }));
    await allowed(mod, 'sensor3', PW);
  });

  test('rotation: the previous password works until expiresAt, then is refused', async () => {
    const expiresAt = Math.floor(Date.now() / 1000) + 3600;
    await put(deviceItem('sensor4', { password: PW, previous: [{ verifier: makeVerifier(OLD_PW), expiresAt }] }));
    await allowed(mod, 'sensor4', PW);
    await allowed(mod, 'sensor4', OLD_PW);
    await later(3601, async () => {
      await denied(mod, 'sensor4', OLD_PW, 'wrong password');
      await allowed(mod, 'sensor4', PW);
    });
  });

  test('a malformed item denies only that device, with the reason', async () => {
    await put({ ...deviceItem('sensor5', { password: PW }), clientIds: { S: 'sensor5' } });
    await denied(mod, 'sensor5', PW, 'invalid device entry: clientIds malformed');
    await allowed(mod, 'sensor1', PW);
  });
});

describe('cache (cacheSeconds 60)', () => {
  let mod;
  before(async () => {
    ({ mod } = await importWithRuntime(JSON.stringify(storeJson(TABLE, 60))));
  });

  test('a removed device still logs in from the cache, and is refused once it expires', async () => {
    await put(deviceItem('cached1', { password: PW }));
    await allowed(mod, 'cached1', PW);
    await remove('cached1');
    await later(59, () => allowed(mod, 'cached1', PW));
    await later(61, () => denied(mod, 'cached1', PW, 'unknown user'));
  });

  test('a disable takes effect within the cache lifetime', async () => {
    await put(deviceItem('cached2', { password: PW }));
    await allowed(mod, 'cached2', PW);
    await put(deviceItem('cached2', { password: PW, disabled: true }));
    await later(61, () => denied(mod, 'cached2', PW, 'disabled'));
  });

  test('an unknown user is cached too: a device added later logs in once that expires', async () => {
    await denied(mod, 'cached3', PW, 'unknown user');
    await put(deviceItem('cached3', { password: PW }));
    await denied(mod, 'cached3', PW, 'unknown user');
    await later(61, () => allowed(mod, 'cached3', PW));
  });
});

describe('a failed table read', () => {
  test('missing table: denied with the AWS error name, not cached, never throws', async () => {
    const { mod, errors } = await importWithRuntime(JSON.stringify(storeJson('not-yet-devices', 60)));
    assert.deepEqual(errors, []);
    await denied(mod, 'late1', PW, 'store read failed: ResourceNotFoundException');
    await createTable('not-yet-devices');
    await put(deviceItem('late1', { password: PW }), 'not-yet-devices');
    await allowed(mod, 'late1', PW); // the failure was not cached
    await db.send(new DeleteTableCommand({ TableName: 'not-yet-devices' }));
  });

  test('unreachable endpoint: denied with the error name', async () => {
    const { mod } = await importWithRuntime(JSON.stringify(storeJson(TABLE, 60)));
    const real = process.env.AWS_ENDPOINT_URL_DYNAMODB;
    // The SDK resolves the endpoint per client, so only a module loaded now sees the closed port.
    process.env.AWS_ENDPOINT_URL_DYNAMODB = 'http://127.0.0.1:9';
    try {
      const { mod: down } = await importWithRuntime(JSON.stringify(storeJson(TABLE, 60)));
      const { result, log } = await login(down, 'sensor1', PW);
      assert.deepEqual(result, DENIED);
      assert.match(log.reason, /^store read failed: \w+$/);
    } finally {
      process.env.AWS_ENDPOINT_URL_DYNAMODB = real;
    }
    await allowed(mod, 'sensor1', PW);
  });
});

describe('module init', () => {
  test('the package holds no devices: devices.json names only the table', async () => {
    const json = storeJson(TABLE, 60);
    assert.equal('devices' in json, false);
    const { mod, errors } = await importWithRuntime(JSON.stringify(json));
    assert.deepEqual(errors, []);
    await allowed(mod, 'sensor1', PW);
  });

  test('without the runtime SDK: module loads, one stderr line, every login denied', async () => {
    const { mod, errors } = await importWithRuntime(JSON.stringify(storeJson(TABLE, 60)), { withSdk: false });
    assert.equal(errors.length, 1, JSON.stringify(errors));
    assert.match(errors[0], /fleet-devices.*denied/);
    await denied(mod, 'sensor1', PW, 'devices.json not loaded');
  });
});
