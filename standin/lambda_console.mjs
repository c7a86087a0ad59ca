// The Lambda Node.js runtime's console, for the stand-in: each console call becomes one log
// event formatted for the function's LogFormat (AWS_LAMBDA_LOG_FORMAT), as the runtime writes
// it (aws-facts §13, "Lambda log lines"):
//   Text: `<ISO time>\t<request id>\t<LEVEL>\t<util.format(args)>`
//   JSON: {"timestamp","level","requestId","message"}, where one logged value is embedded as
//         itself (an object stays an object, a string stays a string) and several are formatted.
// Each event goes to stderr as one line `\x1eLOG {"t":<ms>,"event":<text>}` for the stand-in
// (standin/logs.py) to put into CloudWatch Logs.
import { format } from "node:util";

const MARKER = "\x1eLOG ";
const LEVELS = { TRACE: 0, DEBUG: 1, INFO: 2, WARN: 3, ERROR: 4, FATAL: 5 };
const METHODS = { log: "INFO", info: "INFO", debug: "DEBUG", warn: "WARN", error: "ERROR", trace: "TRACE" };

export function installConsole(requestId) {
  const json = process.env.AWS_LAMBDA_LOG_FORMAT === "JSON";
  // Log levels apply to the JSON format only; Text logs everything.
  const minimum = json ? LEVELS[process.env.AWS_LAMBDA_LOG_LEVEL ?? "INFO"] ?? LEVELS.INFO : 0;
  for (const [method, level] of Object.entries(METHODS)) {
    console[method] = (...args) => {
      if (LEVELS[level] < minimum) return;
      const t = Date.now();
      const timestamp = new Date(t).toISOString();
      let event;
      if (json) {
        const record = { timestamp, level, requestId };
        const error = args.find((a) => a instanceof Error);
        record.message = args.length === 1 && !error ? args[0] : format(...args);
        if (error) {
          record.errorType = error.constructor?.name ?? "UnknownError";
          record.errorMessage = error.message;
          record.stackTrace = typeof error.stack === "string" ? error.stack.split("\n") : [];
        }
        try {
          event = JSON.stringify(record);
        } catch {
          record.message = format(record.message);
          event = JSON.stringify(record);
        }
      } else {
        event = `${timestamp}\t${requestId}\t${level}\t${format(...args)}`;
      }
      process.stderr.write(MARKER + JSON.stringify({ t, event }) + "\n");
    };
  }
}
