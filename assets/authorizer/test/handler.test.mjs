// The Lambda handler, loaded from a temp dir with a generated devices.json.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  ARN,
  DENIED,
  b64,
  captureLogs,
  devicesJson,
  importFresh,
  makeVerifier,
  mqttEvent,
  randomPassword,
} from './helpers.mjs';

const PW = randomPassword();
const PW2 = randomPassword();
const LONG_TOPICS = Array.from({ length: 60 }, (_, i) => `telemetry/${'t'.repeat(80)}/${i}`);
const HUGE_TOPICS = Array.from({ length: 400 }, (_, i) => `telemetry/${'t'.repeat(100)}/${i}`);

const specs = {
  sensor1: { password: PW, clientIds: ['sensor1'], publish: ['telemetry/sensor1'] },
  'gw-2_b': {
    password: PW2,
    clientIds: ['gw-2_b', 'gw-2_b-backup'],
    publish: ['telemetry/gw2', 'status/gw2'],
    subscribe: ['cmd/gw2', 'cmd/gw2/+/set', 'fleet/#'],
  },
  many: { password: PW, publish: LONG_TOPICS, subscribe: ['a/+/b', 'c/#'] },
  huge: { password: PW, publish: HUGE_TOPICS },
  nosub: { password: PW },
  badscheme: { password: PW, verifier: `scrypt:${randomBytes(16).toString('base64')}:xx` },
  malformed: { password: PW, verifier: 'sha256:not-base64:also not' },
  '---': { password: PW }, // principalId would be empty
};
const { mod, errors } = await importFresh(JSON.stringify(devicesJson(specs, { refreshAfterInSeconds: 600 })));
const { handler } = mod;

/** Call the handler with logs captured; assert exactly one log line. */
async function call(event) {
  const { result, logs } = await captureLogs(() => handler(event, {}));
  assert.equal(logs.length, 1, `one log line per login, got ${JSON.stringify(logs)}`);
  return { result, log: JSON.parse(logs[0]) };
}

async function denied(event, reasonRe) {
  const { result, log } = await call(event);
  assert.deepEqual(result, DENIED);
  assert.deepEqual(Object.keys(result), ['isAuthenticated']);
  assert.equal(log.result, 'deny');
  if (reasonRe) assert.match(log.reason, reasonRe);
  return log;
}

test('module init printed nothing to stderr', () => assert.deepEqual(errors, []));

test('handler is an async function with no callback parameter', () => {
  assert.equal(typeof handler, 'function');
  assert.equal(handler.constructor.name, 'AsyncFunction');
  assert.ok(handler.length <= 2);
});

test('handler returns a promise', async () => {
  const { result } = await captureLogs(() => {
    const p = handler(null);
    assert.ok(p instanceof Promise);
    return p;
  });
  assert.deepEqual(result, DENIED);
});

describe('good login', () => {
  test('full response shape', async () => {
    const { result, log } = await call(mqttEvent('sensor1', b64(PW), 'sensor1'));
    assert.deepEqual(Object.keys(result), [
      'isAuthenticated',
      'principalId',
      'policyDocuments',
      'refreshAfterInSeconds',
      'disconnectAfterInSeconds',
    ]);
    assert.equal(result.isAuthenticated, true);
    assert.match(result.principalId, /^[A-Za-z0-9]{1,128}$/);
    assert.equal(result.principalId, 'sensor1');
    assert.equal(result.refreshAfterInSeconds, 600);
    assert.equal(result.disconnectAfterInSeconds, 86400);
    for (const k of ['refreshAfterInSeconds', 'disconnectAfterInSeconds']) {
      assert.ok(Number.isInteger(result[k]) && result[k] >= 300 && result[k] <= 86400);
    }
    assert.deepEqual(result.policyDocuments, [
      {
        Version: '2012-10-17',
        Statement: [
          { Effect: 'Allow', Action: 'iot:Connect', Resource: [`${ARN}:client/sensor1`] },
          { Effect: 'Allow', Action: 'iot:Publish', Resource: [`${ARN}:topic/telemetry/sensor1`] },
        ],
      },
    ]);
    assert.deepEqual(log, {
      msg: 'login',
      user: 'sensor1',
      clientId: 'sensor1',
      result: 'allow',
      connectionId: 'e56f08c3-c559-490f-aa9f-7e8427d0f57b',
    });
  });

  test('principalId is sanitized; Connect names only the client ID in use', async () => {
    for (const cid of ['gw-2_b', 'gw-2_b-backup']) {
      const { result } = await call(mqttEvent('gw-2_b', b64(PW2), cid));
      assert.equal(result.isAuthenticated, true);
      assert.equal(result.principalId, 'gw2b');
      const st = result.policyDocuments[0].Statement;
      assert.deepEqual(st[0], { Effect: 'Allow', Action: 'iot:Connect', Resource: [`${ARN}:client/${cid}`] });
    }
  });

  test('subscribe gives Subscribe + Receive with wildcard conversion', async () => {
    const { result } = await call(mqttEvent('gw-2_b', b64(PW2), 'gw-2_b'));
    const st = result.policyDocuments[0].Statement;
    assert.deepEqual(st.map((s) => s.Action), ['iot:Connect', 'iot:Publish', 'iot:Subscribe', 'iot:Receive']);
    assert.deepEqual(st[1].Resource, [`${ARN}:topic/telemetry/gw2`, `${ARN}:topic/status/gw2`]);
    assert.deepEqual(st[2].Resource, [
      `${ARN}:topicfilter/cmd/gw2`,
      `${ARN}:topicfilter/cmd/gw2/+/set`,
      `${ARN}:topicfilter/fleet/#`,
    ]);
    assert.deepEqual(st[3].Resource, [
      `${ARN}:topic/cmd/gw2`,
      `${ARN}:topic/cmd/gw2/*/set`,
      `${ARN}:topic/fleet/*`,
    ]);
  });

  test('no topics: only Connect', async () => {
    const { result } = await call(mqttEvent('nosub', b64(PW), 'nosub'));
    assert.deepEqual(result.policyDocuments.flatMap((d) => d.Statement.map((s) => s.Action)), ['iot:Connect']);
  });

  test('many long topics are packed into several documents <= 2048 chars', async () => {
    const { result } = await call(mqttEvent('many', b64(PW), 'many'));
    assert.equal(result.isAuthenticated, true);
    const docs = result.policyDocuments;
    assert.ok(docs.length > 1 && docs.length <= 10);
    for (const d of docs) assert.ok(JSON.stringify(d).length <= 2048);
    const pub = docs.flatMap((d) => d.Statement.filter((s) => s.Action === 'iot:Publish').flatMap((s) => s.Resource));
    assert.deepEqual(pub, LONG_TOPICS.map((t) => `${ARN}:topic/${t}`));
    assert.deepEqual(docs, mod.buildPolicyDocuments(ARN, 'many', { publish: LONG_TOPICS, subscribe: ['a/+/b', 'c/#'] }));
  });

  const suffixes = [
    '?x-amz-customauthorizer-name=x',
    '?SDK=Python&Version=1.0',
    '?x-amz-customauthorizer-name=a&SDK=NodeJSv2&Version=1.21.8',
  ];
  for (const sfx of suffixes) {
    test(`username with ${sfx}`, async () => {
      const { result, log } = await call(mqttEvent(`sensor1${sfx}`, b64(PW), 'sensor1'));
      assert.equal(result.isAuthenticated, true);
      assert.equal(result.principalId, 'sensor1');
      assert.equal(log.user, 'sensor1');
    });
  }

  test('unpadded / URL-safe base64 password still decodes to the same bytes', async () => {
    const pw = Buffer.from(PW).toString('base64url');
    const { result } = await call(mqttEvent('sensor1', pw, 'sensor1'));
    assert.equal(result.isAuthenticated, true);
  });

  test('other event fields (token, tls, http) are irrelevant', async () => {
    const { result } = await call({ protocolData: { mqtt: { username: 'sensor1', password: b64(PW), clientId: 'sensor1' } } });
    assert.equal(result.isAuthenticated, true);
  });
});

describe('denials', () => {
  test('wrong password', () => denied(mqttEvent('sensor1', b64(PW2), 'sensor1'), /wrong password/));
  test('password of another device', () => denied(mqttEvent('gw-2_b', b64(PW), 'gw-2_b'), /wrong password/));
  test('password not base64-decoded by the device twice (raw text sent)', () =>
    denied(mqttEvent('sensor1', b64(b64(PW)), 'sensor1'), /wrong password/));
  test('unknown user', () => denied(mqttEvent('nobody', b64(PW), 'nobody'), /unknown user/));
  test('username differs only in case', () => denied(mqttEvent('Sensor1', b64(PW), 'sensor1'), /unknown user/));
  for (const u of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '__proto__?SDK=x']) {
    test(`username ${u}`, () => denied(mqttEvent(u, b64(PW), 'x'), /unknown user/));
  }
  test('client ID not allowed', () => denied(mqttEvent('sensor1', b64(PW), 'sensor2'), /clientId not allowed/));
  test('client ID wildcard-ish', () => denied(mqttEvent('sensor1', b64(PW), '+'), /clientId not allowed/));
  test('client ID with suffix', () => denied(mqttEvent('sensor1', b64(PW), 'sensor1 '), /clientId not allowed/));
  test('unknown verifier scheme', () => denied(mqttEvent('badscheme', b64(PW), 'badscheme'), /unknown verifier scheme/));
  test('malformed verifier', () => denied(mqttEvent('malformed', b64(PW), 'malformed'), /malformed verifier/));
  test('empty principalId', () => denied(mqttEvent('---', b64(PW), '---'), /principalId/));
  test('more than 10 policy documents', () => denied(mqttEvent('huge', b64(PW), 'huge'), /documents/));

  test('null event', () => denied(null, /mqtt/));
  test('undefined event', () => denied(undefined, /mqtt/));
  test('missing protocolData', () => denied({ protocols: ['mqtt'] }, /mqtt/));
  test('missing mqtt', () => denied({ protocolData: { tls: {} } }, /mqtt/));
  test('mqtt not an object', () => denied({ protocolData: { mqtt: 'x' } }, /mqtt/));

  const full = () => ({ username: 'sensor1', password: b64(PW), clientId: 'sensor1' });
  for (const field of ['username', 'password', 'clientId']) {
    test(`missing ${field}`, () => {
      const mqtt = full();
      delete mqtt[field];
      return denied({ protocolData: { mqtt } }, new RegExp(`${field} missing`));
    });
    test(`empty ${field}`, () => denied({ protocolData: { mqtt: { ...full(), [field]: '' } } }));
    for (const v of [null, 42, true, ['sensor1'], { toString: () => 'sensor1' }]) {
      test(`${field} = ${JSON.stringify(v)}`, () =>
        denied({ protocolData: { mqtt: { ...full(), [field]: v } } }, new RegExp(`${field} missing`)));
    }
  }

  test('username that is only a query suffix', () =>
    denied(mqttEvent('?x-amz-customauthorizer-name=x', b64(PW), 'sensor1'), /unknown user/));

  for (const pw of ['!!!!', '%%%%', 'ab cd', 'sensor1 password', 'YWJj\n', '====', 'a=b=', '€uro']) {
    test(`invalid base64 password ${JSON.stringify(pw)}`, () => denied(mqttEvent('sensor1', pw, 'sensor1'), /base64|empty/));
  }
  test('password over the MQTT size limit', () =>
    denied(mqttEvent('sensor1', 'A'.repeat(100000), 'sensor1'), /base64/));
  test('raw (undecoded) password is not accepted', () => denied(mqttEvent('sensor1', PW, 'sensor1')));
});

describe('logging', () => {
  test('never logs the password, its base64 or the verifier', async () => {
    const all = [];
    const events = [
      mqttEvent('sensor1', b64(PW), 'sensor1'),
      mqttEvent('sensor1', b64(PW2), 'sensor1'),
      mqttEvent('nobody', b64(PW), 'x'),
      mqttEvent('sensor1?SDK=x', b64(PW), 'bad'),
    ];
    for (const e of events) {
      const { logs } = await captureLogs(() => handler(e, {}));
      all.push(...logs);
    }
    const text = all.join('\n');
    assert.equal(all.length, events.length);
    for (const secret of [PW, PW2, b64(PW), b64(PW2), 'sha256:']) assert.ok(!text.includes(secret), secret);
    assert.ok(!text.includes('SDK=x'), 'username logged without query suffix');
  });
  test('attacker-chosen newlines stay on one line', async () => {
    const { logs } = await captureLogs(() => handler(mqttEvent('a\nfake log', b64(PW), 'b\nc'), {}));
    assert.equal(logs.length, 1);
    assert.ok(!logs[0].includes('\n'));
  });
});

describe('never throws', () => {
  const throwing = new Proxy({}, { get() { throw new Error('boom'); } });
  const getterEvent = { protocolData: { get mqtt() { throw new Error('boom'); } } };
  const weird = [
    null, undefined, 0, 1, -1, NaN, '', 'x', true, [], [1, 2], {}, () => {}, Symbol('s'), 10n,
    throwing, getterEvent,
    { protocolData: throwing },
    { protocolData: { mqtt: throwing } },
    { protocolData: { mqtt: { username: 'sensor1', password: b64(PW), get clientId() { throw new Error('x'); } } } },
    { protocolData: null }, { protocolData: [] }, { protocolData: { mqtt: null } }, { protocolData: { mqtt: [] } },
    { protocolData: { mqtt: { username: Symbol('u'), password: b64(PW), clientId: 'c' } } },
    Object.create(null),
    { __proto__: { protocolData: { mqtt: { username: 'sensor1', password: b64(PW), clientId: 'nope' } } } },
    mqttEvent('x'.repeat(100000), b64(PW), 'y'.repeat(100000)),
    mqttEvent('\u0000', '\u0000', '\u0000'),
    mqttEvent('\ud800', b64('\ud800'), '\udfff'),
  ];
  test('odd events all give exactly { isAuthenticated: false }', async () => {
    for (const e of weird) {
      const { result } = await captureLogs(() => handler(e, {}));
      assert.deepEqual(result, DENIED);
    }
  });
  test('random mutations of a good event', async () => {
    const pick = (a) => a[Math.floor(Math.random() * a.length)];
    const values = [undefined, null, '', 0, 'sensor1', b64(PW), b64(PW2), '+', '#', '?', 'sensor1?', {}, [], '__proto__'];
    let allowed = 0;
    for (let i = 0; i < 2000; i++) {
      const mqtt = { username: 'sensor1', password: b64(PW), clientId: 'sensor1' };
      for (const k of Object.keys(mqtt)) if (Math.random() < 0.5) mqtt[k] = pick(values);
      if (Math.random() < 0.2) mqtt.username += pick(['?SDK=a', '&x', '\u0000', '']);
      const { result } = await captureLogs(() => handler({ protocolData: { mqtt } }, {}));
      const ok =
        typeof mqtt.username === 'string' &&
        mqtt.username.split('?')[0] === 'sensor1' &&
        mqtt.password === b64(PW) &&
        mqtt.clientId === 'sensor1';
      if (ok) {
        allowed++;
        assert.equal(result.isAuthenticated, true);
      } else {
        assert.deepEqual(result, DENIED, JSON.stringify(mqtt));
      }
    }
    assert.ok(allowed > 0);
  });
  test('random bytes as every field', async () => {
    for (let i = 0; i < 500; i++) {
      const r = () => randomBytes(Math.floor(Math.random() * 40)).toString(Math.random() < 0.5 ? 'latin1' : 'base64');
      const { result } = await captureLogs(() => handler(mqttEvent(r(), r(), r()), {}));
      assert.deepEqual(result, DENIED);
    }
  });
});

test('loadDevices + authorize work without files', async () => {
  const store = mod.loadDevices(devicesJson({ d: { password: 'pw'.repeat(20) } }));
  const { result } = await captureLogs(() => mod.authorize(store, mqttEvent('d', b64('pw'.repeat(20)), 'd')));
  assert.equal(result.isAuthenticated, true);
  const { result: r2 } = await captureLogs(() => mod.authorize(null, mqttEvent('d', b64('pw'.repeat(20)), 'd')));
  assert.deepEqual(r2, DENIED);
  assert.equal(makeVerifier('x').split(':').length, 3);
});
