// The login line under Lambda's two log formats (AWS_LAMBDA_LOG_FORMAT): with JSON, Lambda embeds
// a logged object in its record's `message`, where CloudWatch filter patterns reach its fields; a
// logged string would stay opaque there. With Text the line is the object's JSON text.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { b64, devicesJson, importFresh, mqttEvent, randomPassword } from './helpers.mjs';

const PW = randomPassword();
const { mod } = await importFresh(JSON.stringify(devicesJson({ sensor1: { password: PW } })));

async function logged(format) {
  const previous = process.env.AWS_LAMBDA_LOG_FORMAT;
  if (format === undefined) delete process.env.AWS_LAMBDA_LOG_FORMAT;
  else process.env.AWS_LAMBDA_LOG_FORMAT = format;
  const args = [];
  const orig = console.log;
  console.log = (...a) => args.push(a);
  try {
    await mod.handler(mqttEvent('sensor1', b64('wrong'), 'sensor1'), {});
  } finally {
    console.log = orig;
    if (previous === undefined) delete process.env.AWS_LAMBDA_LOG_FORMAT;
    else process.env.AWS_LAMBDA_LOG_FORMAT = previous;
  }
  assert.equal(args.length, 1);
  assert.equal(args[0].length, 1);
  return args[0][0];
}

test('JSON log format: the record is logged as an object', async () => {
  const value = await logged('JSON');
  assert.equal(typeof value, 'object');
  assert.equal(value.msg, 'login');
  assert.equal(value.result, 'deny');
  assert.equal(value.reason, 'wrong password');
});

test('Text log format (and no format): the record is logged as one line of JSON text', async () => {
  for (const format of ['Text', undefined]) {
    const value = await logged(format);
    assert.equal(typeof value, 'string');
    assert.deepEqual(JSON.parse(value).reason, 'wrong password');
    assert.ok(!value.includes('\n'));
  }
});
