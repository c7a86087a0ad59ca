// Shared helpers for the authorizer tests (not a test file itself).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const INDEX = fileURLToPath(new URL('../index.mjs', import.meta.url));
export const ARN = 'arn:aws:iot:us-east-1:123456789012';

/** Same algorithm as the Rust CLI: sha256:<salt b64>:<SHA-256(salt || pw) b64>. */
export function makeVerifier(password, salt = randomBytes(16)) {
  const pw = Buffer.isBuffer(password) ? password : Buffer.from(password, 'utf8');
  const hash = createHash('sha256').update(salt).update(pw).digest();
  return `sha256:${salt.toString('base64')}:${hash.toString('base64')}`;
}

/** A password like the CLI's: >= 128 random bits, printable. */
export const randomPassword = () => randomBytes(24).toString('base64url');

/** What IoT puts in protocolData.mqtt.password. */
export const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');

/**
 * Build a devices.json object. `specs` maps username -> { password, clientIds,
 * publish, subscribe, verifier? }.
 */
export function devicesJson(specs, extra = {}) {
  const devices = {};
  for (const [name, s] of Object.entries(specs)) {
    devices[name] = {
      verifier: s.verifier ?? makeVerifier(s.password),
      clientIds: s.clientIds ?? [name],
      publish: s.publish ?? [],
      subscribe: s.subscribe ?? [],
    };
  }
  return {
    version: 1,
    arnPrefix: ARN,
    refreshAfterInSeconds: 300,
    disconnectAfterInSeconds: 86400,
    devices,
    ...extra,
  };
}

/**
 * Copy index.mjs into a fresh temp dir, write `devicesText` as devices.json
 * (skip if null), import it and return { mod, errors } where errors are the
 * console.error lines printed during module init. The temp dir is removed
 * once the module has loaded.
 */
export async function importFresh(devicesText) {
  const dir = mkdtempSync(join(tmpdir(), 'authorizer-test-'));
  copyFileSync(INDEX, join(dir, 'index.mjs'));
  if (devicesText !== null) writeFileSync(join(dir, 'devices.json'), devicesText);
  const errors = [];
  const orig = console.error;
  console.error = (...a) => errors.push(a.join(' '));
  try {
    const mod = await import(pathToFileURL(join(dir, 'index.mjs')).href);
    return { mod, errors };
  } finally {
    console.error = orig;
    rmSync(dir, { recursive: true, force: true }); // the module is already loaded
  }
}

/** Run fn with console.log captured; returns { result, logs }. */
export async function captureLogs(fn) {
  const logs = [];
  const orig = console.log;
  console.log = (...a) => logs.push(a.join(' '));
  try {
    const result = await fn();
    return { result, logs };
  } finally {
    console.log = orig;
  }
}

export const mqttEvent = (username, password, clientId) => ({
  token: 'ignored',
  signatureVerified: false,
  protocols: ['tls', 'mqtt'],
  protocolData: {
    tls: { serverName: 'example-ats.iot.us-east-1.amazonaws.com' },
    mqtt: { username, password, clientId },
  },
  connectionMetadata: { id: 'e56f08c3-c559-490f-aa9f-7e8427d0f57b' },
});

export const DENIED = Object.freeze({ isAuthenticated: false });

// ---------------------------------------------------------------- DynamoDB mode

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** The SDK the Lambda runtime includes, as scripts/test installs it. */
export const LAMBDA_SDK = process.env.IOT_CUSTOM_AUTH_LAMBDA_SDK ?? join(ROOT, 'target/test-env/lambda-sdk');
const PYTHON = process.env.IOT_CUSTOM_AUTH_TEST_PYTHON ?? join(ROOT, 'target/test-env/venv/bin/python');

/** A devices.json for DynamoDB mode: no devices, the table instead. */
export function storeJson(table, cacheSeconds = 60, extra = {}) {
  return {
    version: 1,
    arnPrefix: ARN,
    refreshAfterInSeconds: 300,
    disconnectAfterInSeconds: 86400,
    store: { kind: 'dynamodb', table, cacheSeconds },
    ...extra,
  };
}

/**
 * Import a fresh copy of index.mjs laid out as Lambda's runtime has it: the
 * code in a directory whose parent holds the runtime's node_modules (the SDK),
 * unless `withSdk` is false. Returns { mod, errors } like importFresh.
 */
export async function importWithRuntime(devicesText, { withSdk = true } = {}) {
  const root = mkdtempSync(join(tmpdir(), 'authorizer-runtime-'));
  const task = join(root, 'task');
  mkdirSync(task);
  if (withSdk) symlinkSync(join(LAMBDA_SDK, 'node_modules'), join(root, 'node_modules'), 'dir');
  copyFileSync(INDEX, join(task, 'index.mjs'));
  writeFileSync(join(task, 'devices.json'), devicesText);
  const errors = [];
  const orig = console.error;
  console.error = (...a) => errors.push(a.join(' '));
  try {
    const mod = await import(pathToFileURL(join(task, 'index.mjs')).href);
    return { mod, errors };
  } finally {
    console.error = orig;
    rmSync(root, { recursive: true, force: true });
  }
}

/** The SDK's DynamoDB client module, for the test's own table operations. */
export function sdk() {
  if (!existsSync(join(LAMBDA_SDK, 'node_modules/@aws-sdk/client-dynamodb'))) {
    throw new Error(`the Lambda runtime's SDK is not installed in ${LAMBDA_SDK}: run scripts/test`);
  }
  return createRequire(join(LAMBDA_SDK, 'package.json'))('@aws-sdk/client-dynamodb');
}

/**
 * Start the stand-in (standin/server.py, moto's DynamoDB among the rest) and
 * point the SDK's standard configuration at it, as Lambda's environment plus
 * the stand-in's AWS_ENDPOINT_URL_DYNAMODB would. Returns { url, stop }.
 */
export async function startStandin() {
  if (!existsSync(PYTHON)) throw new Error(`no Python venv at ${PYTHON}: run scripts/test`);
  const child = spawn(PYTHON, [join(ROOT, 'standin/server.py'), '--no-aws-delays'], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    child.on('exit', (code) => reject(new Error(`the stand-in exited with ${code}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const m = /STANDIN_URL=(\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
  });
  Object.assign(process.env, {
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
    AWS_ENDPOINT_URL_DYNAMODB: url,
  });
  const stop = () =>
    new Promise((resolve) => {
      child.removeAllListeners('exit');
      child.on('exit', resolve);
      child.stdin.end(); // the stand-in exits at end of its stdin
    });
  return { url, stop };
}

/** A device item as the CLI writes it (see the issue-13 contract). */
export function deviceItem(username, { password, verifier, previous, disabled, clientIds, publish, subscribe } = {}) {
  const strings = (xs) => ({ L: xs.map((S) => ({ S })) });
  const item = {
    username: { S: username },
    verifier: { S: verifier ?? makeVerifier(password) },
    clientIds: strings(clientIds ?? [username]),
    publish: strings(publish ?? [`telemetry/${username}`]),
    subscribe: strings(subscribe ?? []),
    updatedAt: { S: new Date().toISOString() },
  };
  if (previous) {
    item.previous = {
      L: previous.map((p) => ({ M: { verifier: { S: p.verifier }, expiresAt: { N: String(p.expiresAt) } } })),
    };
  }
  if (disabled !== undefined) item.disabled = { BOOL: disabled };
  return item;
}
