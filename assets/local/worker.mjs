// The warm "Lambda" of `iot-custom-auth local`: one long-lived node process that imports the
// authorizer's handler module once (the cold start) and then serves invocations, one at a time,
// as a Lambda execution environment does.
//
// Usage: node worker.mjs <code dir> <handler, e.g. index.handler>
// Protocol: one JSON object per line.
//   stdout, once:  {"ready":true,"node":"v22.x","initMs":n,"logs":[...]}  or  {"ready":false,"error":{...},"logs":[...]}
//   stdin:         {"id":"<request id>","event":{...}}
//   stdout:        {"id":"…","result":…,"durationMs":n,"logs":[...]}  or  {"id":"…","error":{errorType,errorMessage},…}
// Console output of the handler is captured into "logs", formatted as CloudWatch shows it, so that
// it can never corrupt the protocol on stdout.

import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { format } from 'node:util';

const [codeDir, handlerName] = process.argv.slice(2);
const writeProtocol = process.stdout.write.bind(process.stdout);
const send = (message) => writeProtocol(`${JSON.stringify(message)}\n`);

let requestId = 'undefined';
let logs = [];
const capture = (level) => (...args) => {
  logs.push(`${new Date().toISOString()}\t${requestId}\t${level}\t${format(...args)}`);
};
console.log = capture('INFO');
console.info = capture('INFO');
console.debug = capture('DEBUG');
console.trace = capture('TRACE');
console.warn = capture('WARN');
console.error = capture('ERROR');
process.stdout.write = (chunk) => {
  logs.push(String(chunk).replace(/\n$/, ''));
  return true;
};

const takeLogs = () => {
  const taken = logs;
  logs = [];
  return taken;
};

const errorJson = (err) => ({
  errorType: err?.name ?? 'Error',
  errorMessage: err?.message ?? String(err),
});

// Lambda's lookup: `<module>.<export>`, the module tried as .js, .mjs, then .cjs.
async function loadHandler() {
  const dot = handlerName.lastIndexOf('.');
  const moduleName = handlerName.slice(0, dot);
  const exportName = handlerName.slice(dot + 1);
  const file = ['.js', '.mjs', '.cjs']
    .map((ext) => path.join(codeDir, moduleName + ext))
    .find((f) => existsSync(f));
  if (!file) {
    throw Object.assign(new Error(`Cannot find module '${moduleName}'`), { name: 'Runtime.ImportModuleError' });
  }
  const module = await import(pathToFileURL(file).href);
  const handler = module[exportName] ?? module.default?.[exportName];
  if (typeof handler !== 'function') {
    throw Object.assign(new Error(`${handlerName} is undefined or not exported`), { name: 'Runtime.HandlerNotFound' });
  }
  return handler;
}

// Async handlers return a promise; callback-style ones (Node 22 and older) call back.
function invoke(handler, event, context) {
  return new Promise((resolve, reject) => {
    const callback = (err, result) => (err ? reject(err) : resolve(result));
    const returned = handler(event, context, callback);
    if (returned && typeof returned.then === 'function') returned.then(resolve, reject);
    else if (handler.length < 3) resolve(returned);
  });
}

function context(id, deadline) {
  return {
    awsRequestId: id,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: '$LATEST',
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    callbackWaitsForEmptyEventLoop: true,
  };
}

async function serve(handler) {
  for await (const line of createInterface({ input: process.stdin })) {
    const { id, event, timeoutMs } = JSON.parse(line);
    requestId = id;
    const started = performance.now();
    let outcome;
    try {
      outcome = { result: await invoke(handler, event, context(id, Date.now() + timeoutMs)) };
    } catch (err) {
      outcome = { error: errorJson(err) };
      capture('ERROR')('Invoke Error \t' + JSON.stringify(outcome.error));
    }
    send({ id, ...outcome, durationMs: performance.now() - started, logs: takeLogs() });
  }
}

const initStarted = performance.now();
let handler;
try {
  handler = await loadHandler();
} catch (err) {
  send({ ready: false, error: errorJson(err), logs: takeLogs() });
  process.exit(1);
}
send({ ready: true, node: process.version, initMs: performance.now() - initStarted, logs: takeLogs() });
await serve(handler);
