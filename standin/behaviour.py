"""Runtime-switchable behaviour of the stand-in, and the record of calls it served.

One process-wide instance (`STATE`) is shared by the WSGI middleware (call record,
injected errors) and by the moto extensions (delays, conflicts, runtime blocking).
Werkzeug serves each request on its own thread, so every access goes through a lock.
"""

import copy
import threading
import time
from dataclasses import dataclass

# Real-AWS behaviour is on by default; `--no-aws-delays` zeroes the three delays.
DEFAULTS = {
    "role_propagation_seconds": 2.0,
    "function_pending_seconds": 1.0,
    "function_update_seconds": 1.0,
    # A new DynamoDB table stays CREATING this long before it is ACTIVE (dynamodb_lifecycle.py).
    "table_create_seconds": 1.0,
    "enforce_trust_policy": True,
    "duplicate_statement_conflict": True,
    "block_deprecated_runtimes": True,
    # Added before every AWS call is served, so that calls a client makes concurrently
    # visibly overlap in the call record (see `start_ms`/`end_ms`).
    "latency_ms": 0.0,
    # "service:Operation" -> number of upcoming calls to throttle.
    "throttle": {},
    # "service:Operation" -> {"code", "status", "message", "count"}.
    "fail": {},
    # {"reason", "reason_code"}: the next created function ends Failed (aws-facts §13).
    "fail_next_function_create": None,
    # DeleteRole answers DeleteConflict for this long after a role's last DetachRolePolicy (§13).
    "delete_role_conflict_seconds": 0.0,
    # GetFunction hides Tags from every caller and ListTags is denied to all (§13).
    "get_function_hides_tags": False,
}

_FLOATS = (
    "role_propagation_seconds",
    "function_pending_seconds",
    "function_update_seconds",
    "table_create_seconds",
    "latency_ms",
    "delete_role_conflict_seconds",
)
# The real-AWS delays that `--no-aws-delays` zeroes (`latency_ms` is not one of them).
_DELAYS = (
    "role_propagation_seconds",
    "function_pending_seconds",
    "function_update_seconds",
    "table_create_seconds",
)
_BOOLS = (
    "enforce_trust_policy",
    "duplicate_statement_conflict",
    "block_deprecated_runtimes",
    "get_function_hides_tags",
)


class BehaviourError(ValueError):
    """A control-API request that does not describe a valid behaviour."""


@dataclass(frozen=True)
class Injection:
    """An error to answer instead of letting the call through."""

    code: str
    status: int
    message: str


class StandInState:
    def __init__(self, start_values: dict):
        self._lock = threading.Lock()
        self._start_values = copy.deepcopy(start_values)
        self._behaviour = copy.deepcopy(start_values)
        self._calls: list[dict] = []

    # --- behaviour -------------------------------------------------------
    def get(self, key: str):
        with self._lock:
            return self._behaviour[key]

    def snapshot(self) -> dict:
        with self._lock:
            return copy.deepcopy(self._behaviour)

    def merge(self, update: dict) -> dict:
        """Merge a control-API update; throttle/fail merge per operation key."""
        if not isinstance(update, dict):
            raise BehaviourError("behaviour must be a JSON object")
        validated = {key: _validate(key, value) for key, value in update.items()}
        with self._lock:
            for key, value in validated.items():
                if key in ("throttle", "fail"):
                    merged = {**self._behaviour[key], **value}
                    self._behaviour[key] = {k: v for k, v in merged.items() if _remaining(v) > 0}
                else:
                    self._behaviour[key] = value
            return copy.deepcopy(self._behaviour)

    def set_start_values(self, values: dict) -> None:
        """Set what `reset` returns to (the command-line flags), and reset."""
        self._start_values = copy.deepcopy(values)
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._behaviour = copy.deepcopy(self._start_values)
            self._calls = []

    def take_injection(self, service: str, operation: str) -> Injection | None:
        """Consume one pending throttle or failure for this operation, if any.

        Throttles are checked first: a test that sets both wants the retries
        to be exercised before the hard failure.
        """
        key = f"{service}:{operation}"
        with self._lock:
            throttle = self._behaviour["throttle"]
            if throttle.get(key, 0) > 0:
                throttle[key] -= 1
                if throttle[key] == 0:
                    del throttle[key]
                return _throttling_error(service)
            fail = self._behaviour["fail"]
            spec = fail.get(key)
            if spec:
                spec["count"] -= 1
                if spec["count"] <= 0:
                    del fail[key]
                return Injection(spec["code"], spec["status"], spec["message"])
        return None

    def take_function_create_failure(self) -> dict | None:
        """Consume the pending `fail_next_function_create`, if any."""
        with self._lock:
            failure = self._behaviour["fail_next_function_create"]
            self._behaviour["fail_next_function_create"] = None
            return failure

    # --- call record -----------------------------------------------------
    def record_call(self, service: str, operation: str, status: int, start_ms: float) -> None:
        """Record a call once it is answered, with when it arrived and when it was answered
        (`time.monotonic()` in milliseconds: comparable within one stand-in run only)."""
        entry = {
            "service": service,
            "operation": operation,
            "mutating": is_mutating(operation),
            "status": status,
            "start_ms": start_ms,
            "end_ms": monotonic_ms(),
        }
        with self._lock:
            self._calls.append(entry)

    def calls(self) -> list[dict]:
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls = []


def monotonic_ms() -> float:
    return round(time.monotonic() * 1000.0, 3)


def is_mutating(operation: str) -> bool:
    read_only_prefixes = ("Get", "List", "Describe", "TestInvoke", "FilterLogEvents", "Scan", "Query", "BatchGet")
    return not (operation.startswith(read_only_prefixes) or operation == "GetCallerIdentity")


def start_values(no_aws_delays: bool, **delays: float | None) -> dict:
    values = copy.deepcopy(DEFAULTS)
    for key in _FLOATS:
        if no_aws_delays and key in _DELAYS:
            values[key] = 0.0
        elif delays.get(key) is not None:
            values[key] = float(delays[key])
    return values


def _remaining(value) -> int:
    return value["count"] if isinstance(value, dict) else value


def _throttling_error(service: str) -> Injection:
    # Each service's real throttling answer (aws-facts §1, §9): IoT uses 400,
    # Lambda 429, the query-protocol services the code `Throttling`.
    if service == "lambda":
        return Injection("TooManyRequestsException", 429, "Rate exceeded")
    if service in ("iam", "sts"):
        return Injection("Throttling", 400, "Rate exceeded")
    return Injection("ThrottlingException", 400, "Rate exceeded")


def _validate(key: str, value):
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise BehaviourError(f"{key} must be a non-negative number")
        return float(value)
    if key in _BOOLS:
        if not isinstance(value, bool):
            raise BehaviourError(f"{key} must be a boolean")
        return value
    if key == "fail_next_function_create":
        return _validate_create_failure(value)
    if key == "throttle":
        return {op: _validate_count(op, n) for op, n in _operation_map(key, value).items()}
    if key == "fail":
        return {op: _validate_failure(op, spec) for op, spec in _operation_map(key, value).items()}
    raise BehaviourError(f"unknown behaviour key {key!r}")


def _validate_create_failure(value):
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in ("reason", "reason_code")):
        raise BehaviourError('fail_next_function_create must be {"reason": "...", "reason_code": "..."} or null')
    return {"reason": value["reason"], "reason_code": value["reason_code"]}


def _operation_map(key: str, value) -> dict:
    if not isinstance(value, dict) or not all(":" in op for op in value):
        raise BehaviourError(f'{key} must map "service:Operation" keys')
    return value


def _validate_count(op: str, count) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise BehaviourError(f"throttle count for {op} must be a non-negative integer")
    return count


def _validate_failure(op: str, spec) -> dict:
    if not isinstance(spec, dict) or not isinstance(spec.get("code"), str):
        raise BehaviourError(f"fail for {op} needs at least a string `code`")
    status = spec.get("status", 400)
    count = spec.get("count", 1)
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise BehaviourError(f"fail status for {op} must be an HTTP error status")
    return {
        "code": spec["code"],
        "status": status,
        "message": str(spec.get("message", "Injected failure")),
        "count": _validate_count(op, count),
    }


# server.py calls STATE.set_start_values() with the command-line values before serving.
STATE = StandInState(start_values(no_aws_delays=False))
