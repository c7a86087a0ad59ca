// Runs one Lambda handler invocation the way the Node.js runtime does, for the stand-in's
// TestInvokeAuthorizer. Usage: node invoke.mjs CODE_DIR HANDLER RUNTIME < event.json
// Prints one JSON line: {"ok":true,"result":...} or {"ok":false,"errorType":...,"errorMessage":...}.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { installConsole } from "./lambda_console.mjs";

const [codeDir, handlerSpec, runtime] = process.argv.slice(2);

// The handler's own logging must not mix with the result on stdout; it goes to stderr as
// Lambda's runtime would format it for CloudWatch Logs.
const result = process.stdout.write.bind(process.stdout);
const requestId = process.env.STANDIN_REQUEST_ID ?? crypto.randomUUID();
installConsole(requestId);

function fail(errorType, error) {
  result(JSON.stringify({ ok: false, errorType, errorMessage: String(error?.message ?? error) }) + "\n");
  process.exit(0);
}

// "index.handler" -> module "index" at the zip root, export "handler"; the runtime
// tries .js, then .mjs, then .cjs.
function resolveModule(spec) {
  const dot = spec.lastIndexOf(".");
  if (dot <= 0) fail("Runtime.MalformedHandlerName", `Bad handler ${spec}`);
  const base = path.join(codeDir, spec.slice(0, dot));
  const file = [".js", ".mjs", ".cjs"].map((ext) => base + ext).find(existsSync);
  if (!file) fail("Runtime.ImportModuleError", `Cannot find module '${spec.slice(0, dot)}'`);
  return { file, exportName: spec.slice(dot + 1) };
}

function invoke(handler, event, context) {
  // Callback-style handlers exist up to nodejs22.x only (aws-facts §7).
  if (handler.length >= 3) {
    if (runtime === "nodejs24.x") {
      fail("Runtime.CallbackHandlerDeprecated", "Callback-based handlers are not supported on nodejs24.x");
    }
    return new Promise((resolve, reject) => {
      const returned = handler(event, context, (err, value) => (err ? reject(err) : resolve(value)));
      if (returned && typeof returned.then === "function") returned.then(resolve, reject);
    });
  }
  return handler(event, context);
}

const { file, exportName } = resolveModule(handlerSpec);
let module;
try {
  module = await import(pathToFileURL(file).href);
} catch (error) {
  fail("Runtime.ImportModuleError", error);
}
const handler = module[exportName] ?? module.default?.[exportName];
if (typeof handler !== "function") fail("Runtime.HandlerNotFound", `${handlerSpec} is undefined or not exported`);

const event = JSON.parse(readFileSync(0, "utf8"));
const deadline = Date.now() + Number(process.env.AWS_LAMBDA_FUNCTION_TIMEOUT) * 1000;
const context = {
  functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
  awsRequestId: requestId,
  getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  callbackWaitsForEmptyEventLoop: true,
};
try {
  const value = await invoke(handler, event, context);
  result(JSON.stringify({ ok: true, result: value ?? null }) + "\n", () => process.exit(0));
} catch (error) {
  fail(error?.name ?? "Error", error);
}
