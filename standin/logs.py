"""Lambda logging and CloudWatch Logs as real AWS does them (aws-facts §13, "Lambda log lines").

- Lambda `LoggingConfig` (LogFormat, LogGroup, log levels) is kept and returned with AWS's
  defaults; moto drops it.
- Each TestInvokeAuthorizer run writes the function's console output to CloudWatch Logs under
  the function's log group, creating the group as Lambda does when it is absent (no retention),
  formatted for the function's LogFormat: Text lines `<time>\\t<request id>\\tLEVEL\\t<text>`
  framed by START/END/REPORT, or JSON objects framed by platform.start/platform.report.
- FilterLogEvents evaluates JSON filter patterns (`{ $.message.result = "deny" }`): moto
  returns every event for them. A JSON pattern never matches a message that is not a JSON
  object. A pattern the stand-in cannot evaluate is refused, never treated as "match all".
- FilterLogEvents always interleaves streams by time: AWS ignores `interleaved` since 2019.
"""

import json
import re
import uuid
from datetime import datetime, timezone

import moto.logs.models as logs_models
from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import LambdaFunction
from moto.awslambda.responses import LambdaResponse
from moto.logs.exceptions import InvalidParameterException
from moto.logs.models import LogsBackend, logs_backends

# What each line of invoke.mjs's stderr that carries one console call starts with.
CONSOLE_MARKER = "\x1eLOG "

# (account, region, function name) -> the LoggingConfig as given; see _logging_config.
_LOGGING: dict[tuple[str, str, str], dict] = {}
_LOG_FORMATS = ("JSON", "Text")
_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
# One log stream per function, as one warm execution environment writes to one stream.
_STREAMS: dict[tuple[str, str, str], str] = {}


class InvalidParameterValueException(LambdaClientError):
    code = 400

    def __init__(self, message: str):
        super().__init__("InvalidParameterValueException", message)


def install() -> None:
    _keep_logging_config()
    logs_models.EventMessageFilter = _EventFilter
    original = LogsBackend.filter_log_events

    def filter_log_events(self, log_group_name, log_stream_names, start_time, end_time, limit,
                          next_token, filter_pattern, interleaved):
        # Refuse a bad pattern up front, as AWS does, even when no event would be tested.
        _EventFilter(filter_pattern)
        return original(self, log_group_name, log_stream_names, start_time, end_time, limit,
                        next_token, filter_pattern, True)

    LogsBackend.filter_log_events = filter_log_events


# --- Lambda LoggingConfig ------------------------------------------------------------
def _keep_logging_config() -> None:
    get_configuration = LambdaFunction.get_configuration

    def configuration(self, on_create: bool = False):
        config = get_configuration(self, on_create)
        config["LoggingConfig"] = logging_config(self)
        return config

    LambdaFunction.get_configuration = configuration

    create_function = LambdaResponse.create_function

    def create(self):
        spec = self.json_body
        given = _validated(spec.get("LoggingConfig") or {})
        name = spec["FunctionName"].rsplit(":", 1)[-1]
        key = (self.current_account, self.region, name)
        previous = _LOGGING.get(key)
        # Always overwritten on create, so a function of a reset or deleted one's name never
        # inherits its config.
        _LOGGING[key] = given
        try:
            return create_function(self)
        except Exception:
            if previous is None:
                _LOGGING.pop(key, None)
            else:
                _LOGGING[key] = previous
            raise

    LambdaResponse.create_function = create

    update_configuration = LambdaResponse.update_function_configuration

    def update(self):
        given = self.json_body.get("LoggingConfig")
        if given is None:
            return update_configuration(self)
        given = _validated(given)
        name = self.path.rsplit("/", 2)[-2].rsplit(":", 1)[-1]
        key = (self.current_account, self.region, name)
        previous = dict(_LOGGING.get(key) or {})
        # Fields given replace those set before; fields not given keep theirs.
        _LOGGING[key] = {**previous, **given}
        if given.get("LogFormat") == "Text":
            for level in ("ApplicationLogLevel", "SystemLogLevel"):
                _LOGGING[key].pop(level, None)
        try:
            return update_configuration(self)
        except Exception:
            _LOGGING[key] = previous
            raise

    LambdaResponse.update_function_configuration = update


def _validated(given: dict) -> dict:
    fmt = given.get("LogFormat")
    if fmt is not None and fmt not in _LOG_FORMATS:
        raise InvalidParameterValueException(
            f"1 validation error detected: Value '{fmt}' at 'loggingConfig.logFormat' failed to "
            "satisfy constraint: Member must satisfy enum value set: [JSON, Text]"
        )
    for level in ("ApplicationLogLevel", "SystemLogLevel"):
        if level in given and given[level] not in _LOG_LEVELS:
            raise InvalidParameterValueException(f"Invalid {level}: {given[level]}")
    if fmt == "Text" and ("ApplicationLogLevel" in given or "SystemLogLevel" in given):
        raise InvalidParameterValueException(
            "Log levels can only be configured for functions that use the JSON log format"
        )
    group = given.get("LogGroup")
    if group is not None and not re.fullmatch(r"[\.\-_/#A-Za-z0-9]{1,512}", group):
        raise InvalidParameterValueException(f"Invalid LogGroup: {group}")
    return dict(given)


def logging_config(fn) -> dict:
    """The function's LoggingConfig as Lambda returns it: with its defaults filled in."""
    given = _LOGGING.get((fn.account_id, fn.region, fn.function_name), {})
    config = {
        "LogFormat": given.get("LogFormat", "Text"),
        "LogGroup": given.get("LogGroup", f"/aws/lambda/{fn.function_name}"),
    }
    if config["LogFormat"] == "JSON":
        config["ApplicationLogLevel"] = given.get("ApplicationLogLevel", "INFO")
        config["SystemLogLevel"] = given.get("SystemLogLevel", "INFO")
    return config


# --- the function's output, where Lambda puts it ----------------------------------------
def invocation_env(fn, request_id: str) -> dict:
    """What the runtime learns about logging from Lambda's environment."""
    config = logging_config(fn)
    env = {
        "AWS_LAMBDA_LOG_FORMAT": config["LogFormat"],
        "AWS_LAMBDA_LOG_GROUP_NAME": config["LogGroup"],
        "STANDIN_REQUEST_ID": request_id,
    }
    if config["LogFormat"] == "JSON":
        env["AWS_LAMBDA_LOG_LEVEL"] = config["ApplicationLogLevel"]
    return env


def record_invocation(fn, request_id: str, started: float, duration_ms: float, stderr: bytes,
                      timed_out: bool = False) -> None:
    """Writes one invocation's log events as Lambda would."""
    config = logging_config(fn)
    as_json = config["LogFormat"] == "JSON"
    backend = logs_backends[fn.account_id][fn.region]
    # Lambda creates its log group on first use, with no retention, unless it exists.
    backend.ensure_log_group(config["LogGroup"])
    key = (fn.account_id, fn.region, fn.function_name)
    stream = _STREAMS.get(key)
    group = backend.groups[config["LogGroup"]]
    if stream is None or stream not in group.streams:
        day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
        stream = f"{day}/[$LATEST]{uuid.uuid4().hex}"
        _STREAMS[key] = stream
        backend.ensure_log_stream(config["LogGroup"], stream)

    start_ms = int(started * 1000)
    end_ms = start_ms + int(duration_ms)
    events = [(start_ms, _platform_start(request_id, start_ms, as_json))]
    # Not splitlines(): it also splits at the marker's \x1e.
    for line in stderr.decode(errors="replace").split("\n"):
        if line.startswith(CONSOLE_MARKER):
            record = json.loads(line[len(CONSOLE_MARKER):])
            events.append((record["t"], record["event"]))
        elif line.strip():
            # The runtime's own output (an uncaught error's stack) reaches the log too.
            events.append((end_ms, line))
    if timed_out:
        events.append((end_ms, _timeout_line(request_id, duration_ms, end_ms, as_json)))
    events.extend(_platform_end(request_id, end_ms, duration_ms, fn, as_json))
    backend.put_log_events(config["LogGroup"], stream,
                           [{"timestamp": t, "message": m} for t, m in events])


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _platform_start(request_id: str, ms: int, as_json: bool) -> str:
    if as_json:
        return json.dumps({"time": _iso(ms), "type": "platform.start",
                           "record": {"requestId": request_id, "version": "$LATEST"}})
    return f"START RequestId: {request_id} Version: $LATEST"


def _timeout_line(request_id: str, duration_ms: float, ms: int, as_json: bool) -> str:
    text = f"Task timed out after {duration_ms / 1000:.2f} seconds"
    if as_json:
        return json.dumps({"timestamp": _iso(ms), "level": "ERROR", "requestId": request_id,
                           "message": text})
    return f"{_iso(ms)} {request_id} {text}"


def _platform_end(request_id: str, ms: int, duration_ms: float, fn, as_json: bool) -> list:
    billed = max(1, int(duration_ms + 0.999))
    memory = int(fn.memory_size or 128)
    if as_json:
        report = {"time": _iso(ms), "type": "platform.report",
                  "record": {"requestId": request_id,
                             "metrics": {"durationMs": round(duration_ms, 2), "billedDurationMs": billed,
                                         "memorySizeMB": memory, "maxMemoryUsedMB": min(memory, 64)},
                             "status": "success"}}
        return [(ms, json.dumps(report))]
    return [
        (ms, f"END RequestId: {request_id}"),
        (ms, f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: "
             f"{billed} ms\tMemory Size: {memory} MB\tMax Memory Used: {min(memory, 64)} MB"),
    ]


# --- JSON filter patterns --------------------------------------------------------------
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) | (?P<and>&&) | (?P<or>\|\|)
      | (?P<op>!=|=)
      | (?P<selector>\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?)
    )""",
    re.VERBOSE,
)


class _Unsupported(Exception):
    pass


def _tokens(body: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    body = body.rstrip()
    while pos < len(body):
        match = _TOKEN.match(body, pos)
        if match is None or match.end() == pos:
            raise _Unsupported(body[pos:].strip()[:40])
        kind = match.lastgroup
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Parser:
    """`expr := term (('&&'|'||') term)*`, `term := '(' expr ')' | selector op value`.

    CloudWatch gives && and || equal precedence, left to right; parentheses group. Values are
    strings (`*` is a wildcard) or numbers. Everything else (IS NULL, EXISTS, <, >, arrays) is
    refused rather than guessed.
    """

    def __init__(self, tokens):
        self.tokens, self.i = tokens, 0

    def peek(self):
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def take(self, kind):
        if self.peek() != kind:
            raise _Unsupported(f"expected {kind}")
        value = self.tokens[self.i][1]
        self.i += 1
        return value

    def expr(self):
        node = self.term()
        while self.peek() in ("and", "or"):
            op = self.take(self.peek())
            node = (op, node, self.term())
        return node

    def term(self):
        if self.peek() == "lparen":
            self.take("lparen")
            node = self.expr()
            self.take("rparen")
            return node
        selector = self.take("selector")[2:].split(".")
        op = self.take("op")
        if self.peek() == "string":
            raw = self.take("string")[1:-1]
            value = ("string", re.sub(r"\\(.)", r"\1", raw))
        else:
            value = ("number", float(self.take("number")))
        return ("cmp", selector, op, value)


def _evaluate(node, document) -> bool:
    kind = node[0]
    if kind == "&&":
        return _evaluate(node[1], document) and _evaluate(node[2], document)
    if kind == "||":
        return _evaluate(node[1], document) or _evaluate(node[2], document)
    _, path, op, (value_kind, value) = node
    current = document
    for part in path:
        if not isinstance(current, dict) or part not in current:
            return False  # a missing field matches neither = nor !=
        current = current[part]
    if value_kind == "string":
        if not isinstance(current, str):
            equal = False
        else:
            pattern = "".join(".*" if c == "*" else re.escape(c) for c in value)
            equal = re.fullmatch(pattern, current, re.DOTALL) is not None
    else:
        equal = isinstance(current, (int, float)) and not isinstance(current, bool) and current == value
    return equal if op == "=" else not equal


class _EventFilter:
    """moto's EventMessageFilter, plus JSON patterns evaluated as CloudWatch does."""

    def __init__(self, pattern: str):
        self.json = None
        self.plain = None
        stripped = (pattern or "").strip()
        if not stripped.startswith("{"):
            self.plain = _PlainFilter(pattern)
            return
        if not stripped.endswith("}"):
            raise InvalidParameterException(msg="Invalid filter pattern")
        try:
            parser = _Parser(_tokens(stripped[1:-1]))
            self.json = parser.expr()
            if parser.i != len(parser.tokens):
                raise _Unsupported("trailing tokens")
        except _Unsupported as err:
            raise InvalidParameterException(
                msg=f"Invalid filter pattern (the stand-in evaluates only =, != on $.fields "
                f"with &&, || and parentheses; refused rather than matching everything: {err})"
            )

    def matches(self, message: str) -> bool:
        if self.plain is not None:
            return self.plain.matches(message)
        try:
            document = json.loads(message)
        except (json.JSONDecodeError, TypeError):
            return False  # a JSON pattern never matches a message that is not JSON
        return isinstance(document, dict) and _evaluate(self.json, document)


_PlainFilter = logs_models.EventMessageFilter
