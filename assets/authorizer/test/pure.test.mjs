// Pure functions: usernames, verifiers, policy building and packing, loadDevices.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { ARN, devicesJson, importFresh, makeVerifier } from './helpers.mjs';

const { mod: m, errors } = await importFresh(JSON.stringify(devicesJson({})));

test('module with an empty but valid devices.json loads silently', () => {
  assert.deepEqual(errors, []);
});

describe('baseUsername', () => {
  const cases = [
    ['sensor1', 'sensor1'],
    ['sensor1?x-amz-customauthorizer-name=x', 'sensor1'],
    ['sensor1?SDK=Python&Version=1.0', 'sensor1'],
    ['sensor1?x-amz-customauthorizer-name=a&SDK=NodeJSv2&Version=1.21.8', 'sensor1'],
    ['sensor1?a?b', 'sensor1'],
    ['?x-amz-customauthorizer-name=x', ''],
    ['', ''],
    ['a&SDK=x', 'a&SDK=x'], // no '?': nothing stripped
  ];
  for (const [input, want] of cases) {
    test(JSON.stringify(input), () => assert.equal(m.baseUsername(input), want));
  }
});

describe('principalIdFor', () => {
  test('removes every non-alphanumeric char', () => {
    assert.equal(m.principalIdFor('sensor-1_a.b:c/d é'), 'sensor1abcd');
  });
  test('truncates to 128', () => {
    const p = m.principalIdFor('a'.repeat(200));
    assert.equal(p.length, 128);
  });
  test('may be empty (caller denies)', () => {
    assert.equal(m.principalIdFor('-_-'), '');
  });
  test('matches the IoT pattern', () => {
    for (let i = 0; i < 200; i++) {
      const u = randomBytes(1 + (i % 150)).toString('latin1');
      const p = m.principalIdFor(u);
      assert.match(p, /^[A-Za-z0-9]{0,128}$/);
    }
  });
});

describe('verify / parseVerifier', () => {
  const pw = 'correct horse battery staple 0123456789';
  const v = makeVerifier(pw);
  test('good password', () => assert.equal(m.verify(v, Buffer.from(pw)), true));
  test('pre-parsed verifier', () => assert.equal(m.verify(m.parseVerifier(v), Buffer.from(pw)), true));
  test('wrong password', () => assert.equal(m.verify(v, Buffer.from(pw + 'x')), false));
  test('empty password', () => assert.equal(m.verify(v, Buffer.alloc(0)), false));
  test('binary password bytes', () => {
    const raw = randomBytes(32);
    assert.equal(m.verify(makeVerifier(raw), raw), true);
  });
  test('salt is prepended, not appended', () => {
    const salt = randomBytes(16);
    const h = (...parts) => parts.reduce((c, x) => c.update(x), createHash('sha256')).digest('base64');
    const s = salt.toString('base64');
    assert.equal(m.verify(`sha256:${s}:${h(salt, Buffer.from(pw))}`, Buffer.from(pw)), true);
    assert.equal(m.verify(`sha256:${s}:${h(Buffer.from(pw), salt)}`, Buffer.from(pw)), false);
  });
  test('non-buffer password is rejected', () => assert.equal(m.verify(v, pw), false));
  const [, salt, hash] = v.split(':');
  const bad = {
    'unknown scheme': `sha512:${salt}:${hash}`,
    'bcrypt-style': '$2b$12$abcdefghijklmnopqrstuv',
    'uppercase scheme': `SHA256:${salt}:${hash}`,
    'missing hash': `sha256:${salt}`,
    'extra part': `sha256:${salt}:${hash}:x`,
    'empty salt': `sha256::${hash}`,
    'short salt': `sha256:${randomBytes(8).toString('base64')}:${hash}`,
    'short hash': `sha256:${salt}:${randomBytes(16).toString('base64')}`,
    'unpadded salt': `sha256:${salt.replace(/=+$/, '')}:${hash}`,
    'url-safe chars': `sha256:${salt}:${hash.replace(/[A-Za-z]/, '_')}`,
    'junk chars': `sha256:${salt}:!${hash.slice(1)}`,
    empty: '',
    'not a string': 42,
    null: null,
  };
  for (const [name, bv] of Object.entries(bad)) {
    test(`malformed verifier: ${name}`, () => {
      assert.equal(m.parseVerifier(bv), null);
      assert.equal(m.verify(bv, Buffer.from(pw)), false);
    });
  }
});

describe('receivePattern', () => {
  const cases = [
    ['a/b', 'a/b'],
    ['a/+/c', 'a/*/c'],
    ['a/#', 'a/*'],
    ['+/+/#', '*/*/*'],
    ['#', '*'],
    ['+', '*'],
    ['a+/b#', 'a+/b#'], // not whole levels: literal
    ['a//+', 'a//*'],
  ];
  for (const [f, want] of cases) test(f, () => assert.equal(m.receivePattern(f), want));
});

// Literal reference implementation of the packing rule: try to add the
// resource, stringify, undo if it overflowed.
function naivePack(P, clientId, dev) {
  const rp = (f) => f.split('/').map((l) => (l === '+' || l === '#' ? '*' : l)).join('/');
  const statements = [
    ['iot:Connect', [`${P}:client/${clientId}`]],
    ['iot:Publish', dev.publish.map((t) => `${P}:topic/${t}`)],
    ['iot:Subscribe', dev.subscribe.map((f) => `${P}:topicfilter/${f}`)],
    ['iot:Receive', dev.subscribe.map((f) => `${P}:topic/${rp(f)}`)],
  ];
  const docs = [];
  let doc = null;
  for (const [Action, rs] of statements) {
    let stmt = null;
    for (const r of rs) {
      if (doc) {
        let created = false;
        if (stmt) stmt.Resource.push(r);
        else {
          stmt = { Effect: 'Allow', Action, Resource: [r] };
          doc.Statement.push(stmt);
          created = true;
        }
        if (JSON.stringify(doc).length <= 2048) continue;
        if (created) doc.Statement.pop();
        else stmt.Resource.pop();
      }
      stmt = { Effect: 'Allow', Action, Resource: [r] };
      doc = { Version: '2012-10-17', Statement: [stmt] };
      docs.push(doc);
    }
  }
  return docs;
}

const flatten = (docs, action) =>
  docs.flatMap((d) => d.Statement.filter((s) => s.Action === action).flatMap((s) => s.Resource));

describe('buildPolicyDocuments', () => {
  test('simple device: exact output', () => {
    const docs = m.buildPolicyDocuments(ARN, 'sensor1', {
      publish: ['telemetry/sensor1'],
      subscribe: [],
    });
    assert.equal(
      JSON.stringify(docs),
      '[{"Version":"2012-10-17","Statement":[' +
        '{"Effect":"Allow","Action":"iot:Connect","Resource":["arn:aws:iot:us-east-1:123456789012:client/sensor1"]},' +
        '{"Effect":"Allow","Action":"iot:Publish","Resource":["arn:aws:iot:us-east-1:123456789012:topic/telemetry/sensor1"]}]}]',
    );
  });

  test('connect only when no topics; empty statements skipped', () => {
    const docs = m.buildPolicyDocuments(ARN, 'c', { publish: [], subscribe: [] });
    assert.deepEqual(docs, [
      {
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Action: 'iot:Connect', Resource: [`${ARN}:client/c`] }],
      },
    ]);
  });

  test('subscribe gives Subscribe (filters) and Receive (wildcards as *)', () => {
    const docs = m.buildPolicyDocuments(ARN, 'c', {
      publish: [],
      subscribe: ['cmd/c', 'cmd/+/x', 'fleet/#'],
    });
    assert.equal(docs.length, 1);
    const st = docs[0].Statement;
    assert.deepEqual(st.map((s) => s.Action), ['iot:Connect', 'iot:Subscribe', 'iot:Receive']);
    assert.deepEqual(st[1].Resource, [
      `${ARN}:topicfilter/cmd/c`,
      `${ARN}:topicfilter/cmd/+/x`,
      `${ARN}:topicfilter/fleet/#`,
    ]);
    assert.deepEqual(st[2].Resource, [`${ARN}:topic/cmd/c`, `${ARN}:topic/cmd/*/x`, `${ARN}:topic/fleet/*`]);
    for (const s of st) assert.deepEqual(Object.keys(s), ['Effect', 'Action', 'Resource']);
    assert.deepEqual(Object.keys(docs[0]), ['Version', 'Statement']);
  });

  test('packs many long topics across documents, order preserved, each <= 2048', () => {
    const publish = Array.from({ length: 40 }, (_, i) => `telemetry/${'p'.repeat(60)}/${i}`);
    const subscribe = Array.from({ length: 20 }, (_, i) => `commands/${'s'.repeat(50)}/+/${i}/#`);
    const dev = { publish, subscribe };
    const docs = m.buildPolicyDocuments(ARN, 'client-1', dev);
    assert.ok(docs.length > 1 && docs.length <= 10, `docs: ${docs.length}`);
    for (const d of docs) assert.ok(JSON.stringify(d).length <= 2048);
    assert.deepEqual(flatten(docs, 'iot:Connect'), [`${ARN}:client/client-1`]);
    assert.deepEqual(flatten(docs, 'iot:Publish'), publish.map((t) => `${ARN}:topic/${t}`));
    assert.deepEqual(flatten(docs, 'iot:Subscribe'), subscribe.map((f) => `${ARN}:topicfilter/${f}`));
    assert.deepEqual(
      flatten(docs, 'iot:Receive'),
      subscribe.map((f) => `${ARN}:topic/${m.receivePattern(f)}`),
    );
    // Action order across the concatenated statements is Connect, Publish, Subscribe, Receive.
    const actions = docs.flatMap((d) => d.Statement.map((s) => s.Action));
    const rank = { 'iot:Connect': 0, 'iot:Publish': 1, 'iot:Subscribe': 2, 'iot:Receive': 3 };
    for (let i = 1; i < actions.length; i++) assert.ok(rank[actions[i - 1]] <= rank[actions[i]]);
    // Greedy: no document except the last could have taken the next resource.
    assert.deepEqual(docs, naivePack(ARN, 'client-1', dev));
  });

  test('identical to the literal algorithm on random inputs (incl. non-ASCII)', () => {
    const alphabet = 'abcXYZ019/+#-_é€😀"\\';
    const rnd = (n) => Math.floor(Math.random() * n);
    const str = (max) => Array.from({ length: 1 + rnd(max) }, () => alphabet[rnd(alphabet.length)]).join('');
    for (let i = 0; i < 300; i++) {
      const dev = {
        publish: Array.from({ length: rnd(30) }, () => str(120)),
        subscribe: Array.from({ length: rnd(30) }, () => str(120)),
      };
      const cid = str(60);
      const docs = m.buildPolicyDocuments(ARN, cid, dev);
      assert.deepEqual(docs, naivePack(ARN, cid, dev));
      for (const d of docs) assert.ok(JSON.stringify(d).length <= 2048);
    }
  });

  test('a document filled to exactly 2048 chars is kept; one more char splits', () => {
    // Find a topic length that makes the single document exactly 2048 long.
    const one = (len) => m.buildPolicyDocuments(ARN, 'c', { publish: ['t'.repeat(len)], subscribe: [] });
    const base = JSON.stringify(one(1)[0]).length - 1;
    const exact = one(2048 - base);
    assert.equal(exact.length, 1);
    assert.equal(JSON.stringify(exact[0]).length, 2048);
    const over = one(2049 - base);
    assert.equal(over.length, 2);
    assert.deepEqual(over[0].Statement.map((s) => s.Action), ['iot:Connect']);
    assert.deepEqual(over[1].Statement.map((s) => s.Action), ['iot:Publish']);
  });

  test('more than 10 documents are returned (the handler denies them)', () => {
    const publish = Array.from({ length: 300 }, (_, i) => `t/${'x'.repeat(100)}/${i}`);
    const docs = m.buildPolicyDocuments(ARN, 'c', { publish, subscribe: [] });
    assert.ok(docs.length > 10);
  });

  test('a resource too long for any document throws RangeError', () => {
    assert.throws(
      () => m.buildPolicyDocuments(ARN, 'c', { publish: ['t'.repeat(3000)], subscribe: [] }),
      RangeError,
    );
  });
});

describe('loadDevices', () => {
  const good = () => devicesJson({ sensor1: { password: 'p'.repeat(30) } });
  test('valid object', () => {
    const s = m.loadDevices(good());
    assert.ok(s.devices instanceof Map);
    assert.equal(s.devices.size, 1);
    assert.equal(s.arnPrefix, ARN);
  });
  test('clamps seconds into 300..86400 and truncates to integers', () => {
    const s = m.loadDevices({ ...good(), refreshAfterInSeconds: 5, disconnectAfterInSeconds: 1e9 });
    assert.equal(s.refreshAfterInSeconds, 300);
    assert.equal(s.disconnectAfterInSeconds, 86400);
    const t = m.loadDevices({ ...good(), refreshAfterInSeconds: 600.7, disconnectAfterInSeconds: -1 });
    assert.equal(t.refreshAfterInSeconds, 600);
    assert.equal(t.disconnectAfterInSeconds, 300);
  });
  const invalid = {
    null: null,
    array: [],
    string: 'x',
    'version 2': { ...good(), version: 2 },
    'no version': { ...good(), version: undefined },
    'bad arnPrefix': { ...good(), arnPrefix: 'arn:aws:iot:us-east-1:123' },
    'arnPrefix with trailing colon': { ...good(), arnPrefix: `${ARN}:` },
    'refresh not a number': { ...good(), refreshAfterInSeconds: '300' },
    'disconnect NaN': { ...good(), disconnectAfterInSeconds: NaN },
    'devices missing': { ...good(), devices: undefined },
    'devices array': { ...good(), devices: [] },
  };
  for (const [name, obj] of Object.entries(invalid)) {
    test(`rejects ${name}`, () => assert.throws(() => m.loadDevices(obj)));
  }
  test('other partitions accepted', () => {
    m.loadDevices({ ...good(), arnPrefix: 'arn:aws-cn:iot:cn-north-1:123456789012' });
    m.loadDevices({ ...good(), arnPrefix: 'arn:aws-us-gov:iot:us-gov-west-1:123456789012' });
  });
  test('malformed device entries are kept, compiled lazily to invalid; others still work', () => {
    const obj = good();
    obj.devices.bad1 = { verifier: 'md5:x:y', clientIds: ['a'] };
    obj.devices.bad2 = { verifier: makeVerifier('x'), clientIds: 'a' };
    obj.devices.bad3 = null;
    obj.devices.bad4 = { verifier: makeVerifier('x'), clientIds: ['a'], publish: [1] };
    obj.devices.bad5 = { verifier: makeVerifier('x'), clientIds: [''] };
    obj.devices.bad6 = { clientIds: ['a'] };
    obj.devices.bad7 = ['sha256:x:y'];
    obj.devices.bad8 = { verifier: makeVerifier('x'), clientIds: ['a'], subscribe: 'a/#' };
    const s = m.loadDevices(obj);
    assert.equal(s.devices.size, 9);
    const reasons = ['bad1', 'bad2', 'bad3', 'bad4', 'bad5', 'bad6', 'bad7', 'bad8'].map(
      (n) => m.lookupDevice(s, n).invalid,
    );
    assert.deepEqual(reasons, [
      'unknown verifier scheme',
      'clientIds malformed',
      'device entry is not an object',
      'publish malformed',
      'clientIds malformed',
      'verifier missing',
      'device entry is not an object',
      'subscribe malformed',
    ]);
    const ok = m.lookupDevice(s, 'sensor1');
    assert.ok(!ok.invalid);
    assert.ok(ok.clientIds.has('sensor1'));
    assert.equal(m.lookupDevice(s, 'sensor1'), ok, 'compiled once, then cached');
    assert.equal(m.lookupDevice(s, 'nobody'), undefined);
  });
  test('missing publish/subscribe default to empty lists', () => {
    const obj = good();
    obj.devices.min = { verifier: makeVerifier('x'), clientIds: ['min'] };
    const dev = m.lookupDevice(m.loadDevices(obj), 'min');
    assert.deepEqual([dev.publish, dev.subscribe], [[], []]);
  });
  test('__proto__ key in JSON becomes an ordinary Map entry', () => {
    const text = JSON.stringify(good()).replace('"sensor1"', '"__proto__"');
    const s = m.loadDevices(JSON.parse(text));
    assert.ok(s.devices.has('__proto__'));
    assert.ok(!m.lookupDevice(s, '__proto__').invalid);
    assert.ok(!s.devices.has('constructor'));
    assert.equal(m.lookupDevice(s, 'constructor'), undefined);
    assert.equal(m.lookupDevice(s, 'toString'), undefined);
  });
});
