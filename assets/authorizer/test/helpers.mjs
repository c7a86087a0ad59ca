// Shared helpers for the authorizer tests (not a test file itself).
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
