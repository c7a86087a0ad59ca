// AWS IoT Core custom authorizer for MQTT username/password logins.
//
// Packaged by `iot-custom-auth` as a Lambda zip holding this file (verbatim)
// and `devices.json` at the zip root; handler `index.handler`; runtime
// nodejs22.x or nodejs24.x. Node built-ins only, except in DynamoDB mode, where
// it imports `@aws-sdk/client-dynamodb` from the runtime (never bundled).
//
// Contract: see README.md next to this file. In short, the handler never
// throws; every failure returns exactly `{ isAuthenticated: false }`.

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';

export const MAX_POLICY_DOCUMENTS = 10;
export const MAX_POLICY_DOCUMENT_CHARS = 2048;
export const MIN_SECONDS = 300;
export const MAX_SECONDS = 86400;

const POLICY_VERSION = '2012-10-17';
const SALT_BYTES = 16;
const HASH_BYTES = 32;
// MQTT caps the password at 65535 bytes; its base64 form is at most this long.
const MAX_PASSWORD_B64_CHARS = 4 * Math.ceil(65535 / 3);
// Standard or URL-safe alphabet, padding optional. IoT sends standard base64;
// accepting the other forms costs nothing, since the bytes must still match.
const PASSWORD_B64_RE = /^[A-Za-z0-9+/_-]+={0,2}$/;
const STRICT_B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const ARN_PREFIX_RE = /^arn:aws(?:-[a-z]+)*:iot:[a-z0-9-]+:[0-9]{12}$/;
const LOG_FIELD_MAX = 128;
// DynamoDB table names: 3-255 characters of [a-zA-Z0-9_.-].
const TABLE_NAME_RE = /^[A-Za-z0-9_.-]{3,255}$/;
export const MAX_CACHE_SECONDS = 300;
// Bound of the DynamoDB-mode cache (known and unknown usernames alike), so a
// scan of random usernames cannot grow memory without limit. A cached device
// is a few hundred bytes plus its topics: about 10 MB at this bound for
// typical devices, well inside a 128 MB function.
export const MAX_CACHE_ENTRIES = 10000;

const DENY = () => ({ isAuthenticated: false });

// ---------------------------------------------------------------- usernames

/** The username without any query suffix (`?x-amz-customauthorizer-name=…`, `?SDK=…`). */
export function baseUsername(u) {
  const i = u.indexOf('?');
  return i === -1 ? u : u.slice(0, i);
}

/** IoT requires principalId to match [a-zA-Z0-9]{1,128}. May return ''. */
export function principalIdFor(u) {
  return u.replace(/[^A-Za-z0-9]/g, '').slice(0, 128);
}

// ---------------------------------------------------------------- verifiers

/**
 * Parse `sha256:<salt b64>:<hash b64>` (standard base64 with padding,
 * 16-byte salt, 32-byte hash). Returns `{ salt, hash }` or null.
 */
export function parseVerifier(verifier) {
  if (typeof verifier !== 'string') return null;
  const parts = verifier.split(':');
  if (parts.length !== 3 || parts[0] !== 'sha256') return null;
  const [, saltB64, hashB64] = parts;
  if (!STRICT_B64_RE.test(saltB64) || !STRICT_B64_RE.test(hashB64)) return null;
  const salt = Buffer.from(saltB64, 'base64');
  const hash = Buffer.from(hashB64, 'base64');
  if (salt.length !== SALT_BYTES || hash.length !== HASH_BYTES) return null;
  return { salt, hash };
}

/**
 * True iff SHA-256(salt || passwordBytes) equals the verifier's hash.
 * `verifier` is the string form or the result of parseVerifier. Never throws.
 */
export function verify(verifier, passwordBytes) {
  try {
    const v = typeof verifier === 'string' ? parseVerifier(verifier) : verifier;
    if (!v || !(v.salt instanceof Uint8Array) || !(v.hash instanceof Uint8Array)) return false;
    if (!(passwordBytes instanceof Uint8Array)) return false;
    const digest = createHash('sha256').update(v.salt).update(passwordBytes).digest();
    return digest.length === v.hash.length && timingSafeEqual(digest, v.hash);
  } catch {
    return false;
  }
}

// Used for unknown users so that they cost the same hash as known ones.
const DUMMY_VERIFIER = { salt: Buffer.alloc(SALT_BYTES), hash: Buffer.alloc(HASH_BYTES) };

// ---------------------------------------------------------------- policies

/** MQTT topic filter -> policy pattern for iot:Receive (`+`/`#` levels become `*`). */
export function receivePattern(filter) {
  return filter
    .split('/')
    .map((level) => (level === '+' || level === '#' ? '*' : level))
    .join('/');
}

const DOC_BASE_LEN = JSON.stringify({ Version: POLICY_VERSION, Statement: [] }).length;
const stmtBaseLen = (action) =>
  JSON.stringify({ Effect: 'Allow', Action: action, Resource: [] }).length;

/**
 * Build the policy documents for a login. Statements (in order, empty ones
 * skipped): Connect client/<clientId>; Publish topic/<t>; Subscribe
 * topicfilter/<f>; Receive topic/<receivePattern(f)>. Resources are packed
 * greedily: each goes into the current statement of the current document
 * unless JSON.stringify(doc).length would then exceed 2048, in which case the
 * document is closed and a new one starts with a new statement of the same
 * action holding that resource.
 *
 * Returns every document needed (the caller enforces the limit of 10).
 * Throws RangeError if one resource does not fit even in an empty document.
 *
 * Lengths are tracked incrementally; they equal JSON.stringify(doc).length
 * (UTF-16 code units) exactly, because a JSON array/object of these strings
 * serialises as the concatenation of its parts.
 */
export function buildPolicyDocuments(arnPrefix, clientId, device) {
  const subscribe = device.subscribe ?? [];
  const statements = [
    ['iot:Connect', [`${arnPrefix}:client/${clientId}`]],
    ['iot:Publish', (device.publish ?? []).map((t) => `${arnPrefix}:topic/${t}`)],
    ['iot:Subscribe', subscribe.map((f) => `${arnPrefix}:topicfilter/${f}`)],
    ['iot:Receive', subscribe.map((f) => `${arnPrefix}:topic/${receivePattern(f)}`)],
  ];
  const docs = [];
  let doc = null;
  let docLen = 0;
  for (const [action, resources] of statements) {
    const base = stmtBaseLen(action);
    let stmt = null; // current statement of this action in the current doc
    for (const r of resources) {
      const rLen = JSON.stringify(r).length;
      // Cost of adding r to the current doc.
      const add = stmt
        ? 1 + rLen // ",<r>"
        : (doc && doc.Statement.length > 0 ? 1 : 0) + base + rLen; // ",{...[<r>]}"
      if (doc && docLen + add <= MAX_POLICY_DOCUMENT_CHARS) {
        if (stmt) {
          stmt.Resource.push(r);
        } else {
          stmt = { Effect: 'Allow', Action: action, Resource: [r] };
          doc.Statement.push(stmt);
        }
        docLen += add;
        continue;
      }
      // Close the current doc (if any) and start a new one.
      const fresh = DOC_BASE_LEN + base + rLen;
      if (fresh > MAX_POLICY_DOCUMENT_CHARS) {
        throw new RangeError(`policy resource too long (${rLen} chars) for one document`);
      }
      stmt = { Effect: 'Allow', Action: action, Resource: [r] };
      doc = { Version: POLICY_VERSION, Statement: [stmt] };
      docLen = fresh;
      docs.push(doc);
    }
  }
  return docs;
}

// ---------------------------------------------------------------- devices

const isStringArray = (a, nonEmpty) =>
  Array.isArray(a) && a.every((s) => typeof s === 'string' && (!nonEmpty || s.length > 0));

function clampSeconds(n) {
  return Math.min(MAX_SECONDS, Math.max(MIN_SECONDS, Math.trunc(n)));
}

function compileDevice(entry) {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    return { invalid: 'device entry is not an object' };
  }
  if (typeof entry.verifier !== 'string') return { invalid: 'verifier missing' };
  if (!entry.verifier.startsWith('sha256:')) return { invalid: 'unknown verifier scheme' };
  const verifier = parseVerifier(entry.verifier);
  if (!verifier) return { invalid: 'malformed verifier' };
  if (!isStringArray(entry.clientIds, true)) return { invalid: 'clientIds malformed' };
  const publish = entry.publish ?? [];
  const subscribe = entry.subscribe ?? [];
  if (!isStringArray(publish, true)) return { invalid: 'publish malformed' };
  if (!isStringArray(subscribe, true)) return { invalid: 'subscribe malformed' };
  const previous = [];
  if (entry.previous !== undefined) {
    if (!Array.isArray(entry.previous)) return { invalid: 'previous malformed' };
    for (const p of entry.previous) {
      const v = p !== null && typeof p === 'object' ? parseVerifier(p.verifier) : null;
      if (!v || typeof p.expiresAt !== 'number' || !Number.isFinite(p.expiresAt)) {
        return { invalid: 'previous malformed' };
      }
      previous.push({ verifier: v, expiresAt: p.expiresAt });
    }
  }
  if (entry.disabled !== undefined && typeof entry.disabled !== 'boolean') {
    return { invalid: 'disabled malformed' };
  }
  return {
    verifier,
    previous,
    disabled: entry.disabled === true,
    clientIds: new Set(entry.clientIds),
    publish: [...publish],
    subscribe: [...subscribe],
  };
}

/**
 * True iff the password matches the device's current verifier or one of its
 * previous verifiers (from `device rotate`) whose expiresAt (Unix seconds) is
 * still in the future by the function's clock.
 */
export function passwordMatches(device, passwordBytes, nowSeconds = Date.now() / 1000) {
  if (verify(device.verifier, passwordBytes)) return true;
  return device.previous.some((p) => p.expiresAt > nowSeconds && verify(p.verifier, passwordBytes));
}

// Compiled (validated, verifier decoded) device; raw entries are compiled on
// first lookup so that cold start only pays for JSON.parse and the Map.
class Device {
  constructor(fields) {
    Object.assign(this, fields);
  }
}

/**
 * Validate a parsed devices.json object and return the store used by
 * authorize(). Throws Error (with a reason) if the top level is invalid.
 * Device entries are validated lazily, on first lookup (see lookupDevice): a
 * malformed entry does not invalidate the file, its logins are denied with
 * the reason logged.
 *
 * With `"store": { "kind": "dynamodb", "table", "cacheSeconds" }` instead of
 * `devices`, the store reads devices from that table (see connectTable); it
 * has no `client` until connectTable gives it one.
 */
export function loadDevices(obj) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new Error('devices.json: top level is not an object');
  }
  if (obj.version !== 1) throw new Error(`devices.json: unsupported version ${JSON.stringify(obj.version)}`);
  if (typeof obj.arnPrefix !== 'string' || !ARN_PREFIX_RE.test(obj.arnPrefix)) {
    throw new Error('devices.json: arnPrefix missing or malformed');
  }
  for (const k of ['refreshAfterInSeconds', 'disconnectAfterInSeconds']) {
    if (typeof obj[k] !== 'number' || !Number.isFinite(obj[k])) {
      throw new Error(`devices.json: ${k} missing or not a number`);
    }
  }
  const common = {
    arnPrefix: obj.arnPrefix,
    refreshAfterInSeconds: clampSeconds(obj.refreshAfterInSeconds),
    disconnectAfterInSeconds: clampSeconds(obj.disconnectAfterInSeconds),
  };
  if (obj.store !== undefined) return { ...common, ...tableStore(obj) };
  const d = obj.devices;
  if (d === null || typeof d !== 'object' || Array.isArray(d)) {
    throw new Error('devices.json: devices is not an object');
  }
  // Object.keys only yields own properties; JSON.parse makes `__proto__` an
  // own property, so even that name is an ordinary key in the Map.
  const devices = new Map();
  for (const name of Object.keys(d)) devices.set(name, d[name]);
  return { ...common, kind: 'package', devices };
}

function tableStore(obj) {
  const st = obj.store;
  if (st === null || typeof st !== 'object' || Array.isArray(st) || st.kind !== 'dynamodb') {
    throw new Error('devices.json: store is not { "kind": "dynamodb", ... }');
  }
  if (obj.devices !== undefined) throw new Error('devices.json: both store and devices given');
  if (typeof st.table !== 'string' || !TABLE_NAME_RE.test(st.table)) {
    throw new Error('devices.json: store.table missing or not a DynamoDB table name');
  }
  if (typeof st.cacheSeconds !== 'number' || !Number.isFinite(st.cacheSeconds)) {
    throw new Error('devices.json: store.cacheSeconds missing or not a number');
  }
  const cacheSeconds = Math.min(MAX_CACHE_SECONDS, Math.max(0, Math.trunc(st.cacheSeconds)));
  return { kind: 'dynamodb', table: st.table, cacheSeconds, cache: new Map(), client: null };
}

// ---------------------------------------------------------------- DynamoDB

/**
 * Give a DynamoDB-mode store its client: one per container, created at module
 * init. Region and endpoint come from the SDK's standard configuration
 * (AWS_REGION, which Lambda sets; AWS_ENDPOINT_URL_DYNAMODB if set); the
 * credentials are the execution role's, from Lambda's environment. An
 * authorizer has 5 s in all, so a read gets 2 attempts with short timeouts
 * rather than the SDK's default 3 attempts with none.
 */
export function connectTable(store, sdk) {
  store.client = new sdk.DynamoDBClient({
    maxAttempts: 2,
    requestHandler: { connectionTimeout: 1000, requestTimeout: 1500, throwOnRequestTimeout: true },
  });
  store.GetItem = sdk.GetItemCommand;
  return store;
}

// `false` (not null, which `?? []` would accept) marks an attribute of the wrong type.
const attrStrings = (a) =>
  a === undefined ? undefined : Array.isArray(a?.L) ? a.L.map((x) => x?.S) : false;

/** A table item (DynamoDB attribute values) as a devices.json entry, for compileDevice. */
export function entryFromItem(item) {
  const entry = {
    verifier: item.verifier?.S,
    clientIds: attrStrings(item.clientIds),
    publish: attrStrings(item.publish),
    subscribe: attrStrings(item.subscribe),
  };
  if (item.previous !== undefined) {
    entry.previous = Array.isArray(item.previous?.L)
      ? item.previous.L.map((p) => ({ verifier: p?.M?.verifier?.S, expiresAt: Number(p?.M?.expiresAt?.N) }))
      : null;
  }
  if (item.disabled !== undefined) entry.disabled = item.disabled?.BOOL ?? null;
  return entry;
}

/**
 * The compiled device for `name` from the table (undefined if there is no
 * item), through the cache. A read that fails throws; it is not cached.
 * Known and unknown names are cached for cacheSeconds, least recently used
 * first out beyond MAX_CACHE_ENTRIES.
 */
export async function fetchDevice(store, name) {
  const now = Date.now();
  const hit = store.cache.get(name);
  if (hit !== undefined) {
    store.cache.delete(name);
    if (hit.until > now) {
      store.cache.set(name, hit); // most recently used goes last
      return hit.device;
    }
  }
  const out = await store.client.send(
    new store.GetItem({ TableName: store.table, Key: { username: { S: name } }, ConsistentRead: false }),
  );
  const device = out.Item ? new Device(compileDevice(entryFromItem(out.Item))) : undefined;
  if (store.cacheSeconds > 0) {
    store.cache.set(name, { device, until: now + store.cacheSeconds * 1000 });
    if (store.cache.size > MAX_CACHE_ENTRIES) store.cache.delete(store.cache.keys().next().value);
  }
  return device;
}

/**
 * The compiled device for `name` (validated on first use and cached), or
 * undefined. A malformed entry compiles to `{ invalid: reason }`.
 */
export function lookupDevice(store, name) {
  const entry = store.devices.get(name);
  if (entry === undefined || entry instanceof Device) return entry;
  const dev = new Device(compileDevice(entry));
  store.devices.set(name, dev);
  return dev;
}

// ---------------------------------------------------------------- handler

const logField = (s) => (s.length > LOG_FIELD_MAX ? `${s.slice(0, LOG_FIELD_MAX)}…` : s);

function logLogin(conn, user, clientId, result, reason) {
  try {
    // JSON keeps attacker-chosen strings on one line. Never logs secrets.
    const rec = {
      msg: 'login',
      user: typeof user === 'string' ? logField(user) : null,
      clientId: typeof clientId === 'string' ? logField(clientId) : null,
      result,
    };
    if (reason) rec.reason = reason;
    if (typeof conn === 'string' && conn.length > 0) rec.connectionId = logField(conn);
    // With the function's LogFormat JSON, Lambda embeds a logged object in its record's
    // `message`, where CloudWatch filter patterns (`{ $.message.result = "deny" }`) reach it; a
    // logged string would stay an opaque string there. Text format gets the JSON text.
    console.log(process.env.AWS_LAMBDA_LOG_FORMAT === 'JSON' ? rec : JSON.stringify(rec));
  } catch {
    // logging must never break authorization
  }
}

const nonEmptyString = (s) => typeof s === 'string' && s.length > 0;

/**
 * Decide one login against `store` (from loadDevices, or null = deny all).
 * Resolves to the IoT authorizer response; never rejects. Logs one line.
 */
export async function authorize(store, event) {
  let user = null;
  let clientId = null;
  let conn = null;
  const deny = (reason) => {
    logLogin(conn, user, clientId, 'deny', reason);
    return DENY();
  };
  try {
    conn = event?.connectionMetadata?.id; // IoT: "use this for logging"
    const mqtt = event?.protocolData?.mqtt;
    if (mqtt === null || typeof mqtt !== 'object') return deny('no mqtt protocolData');
    const { username, password } = mqtt;
    clientId = typeof mqtt.clientId === 'string' ? mqtt.clientId : null;
    if (!nonEmptyString(username)) return deny('username missing');
    user = baseUsername(username);
    if (!nonEmptyString(password)) return deny('password missing');
    if (!nonEmptyString(clientId)) return deny('clientId missing');
    if (!store) return deny('devices.json not loaded');
    if (password.length > MAX_PASSWORD_B64_CHARS || !PASSWORD_B64_RE.test(password)) {
      return deny('password not base64');
    }
    const pw = Buffer.from(password, 'base64');
    if (pw.length === 0) return deny('password empty');

    let device;
    if (store.kind === 'dynamodb') {
      try {
        device = await fetchDevice(store, user);
      } catch (err) {
        const name = typeof err?.name === 'string' && err.name ? err.name : 'Error';
        return deny(`store read failed: ${logField(name)}`);
      }
    } else {
      device = lookupDevice(store, user);
    }
    if (!device) {
      verify(DUMMY_VERIFIER, pw); // same cost as a real check
      return deny('unknown user');
    }
    if (device.invalid) return deny(`invalid device entry: ${device.invalid}`);
    if (device.disabled) {
      verify(DUMMY_VERIFIER, pw);
      return deny('disabled');
    }
    if (!passwordMatches(device, pw)) return deny('wrong password');
    if (!device.clientIds.has(clientId)) return deny('clientId not allowed');

    const principalId = principalIdFor(user);
    if (principalId.length === 0) return deny('empty principalId');
    let policyDocuments;
    try {
      policyDocuments = buildPolicyDocuments(store.arnPrefix, clientId, device);
    } catch {
      return deny('policy resource too long');
    }
    if (policyDocuments.length > MAX_POLICY_DOCUMENTS) {
      return deny(`policy needs ${policyDocuments.length} documents (max ${MAX_POLICY_DOCUMENTS})`);
    }
    logLogin(conn, user, clientId, 'allow');
    return {
      isAuthenticated: true,
      principalId,
      policyDocuments,
      refreshAfterInSeconds: store.refreshAfterInSeconds,
      disconnectAfterInSeconds: store.disconnectAfterInSeconds,
    };
  } catch {
    try {
      return deny('internal error');
    } catch {
      return DENY();
    }
  }
}

// ---------------------------------------------------------------- module init

async function loadStoreFromFile() {
  const url = new URL('./devices.json', import.meta.url);
  let store;
  try {
    const text = await readFile(url, 'utf8');
    store = loadDevices(JSON.parse(text));
  } catch (err) {
    const why = err?.code === 'ENOENT' ? 'devices.json not found' : String(err?.message ?? err);
    console.error(`authorizer: devices.json unusable, every login will be denied: ${why}`);
    return null;
  }
  if (store.kind !== 'dynamodb') return store;
  // Only DynamoDB mode loads the SDK, so the package mode's cold start is
  // unchanged. The Lambda Node.js runtimes include AWS SDK v3.
  try {
    return connectTable(store, await import('@aws-sdk/client-dynamodb'));
  } catch (err) {
    console.error(
      `authorizer: cannot use DynamoDB table ${store.table}, every login will be denied: ${String(err?.message ?? err)}`,
    );
    return null;
  }
}

const STORE = await loadStoreFromFile();

// Async handler with no callback parameter: required on nodejs24.x.
export const handler = async (event, context) => authorize(STORE, event);
