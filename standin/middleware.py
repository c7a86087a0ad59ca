"""WSGI layer in front of moto: the `/_standin/` control API, the call record, injected errors."""

import io
import json
import re
import time
from urllib.parse import parse_qs, unquote

import access
import lambda_lifecycle
import seed
import wire
from behaviour import STATE, BehaviourError, monotonic_ms

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict"}


class StandInMiddleware:
    def __init__(self, moto_app):
        self._moto_app = moto_app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_standin/"):
            return self._control(environ, start_response, path[len("/_standin/"):])

        start_ms = monotonic_ms()
        # The body is needed to name query-protocol operations; put it back for moto.
        body = _read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))

        service = wire.service_of(environ)
        if service is None:  # unsigned: moto-api, health checks, ...
            return self._moto_app(environ, start_response)
        operation = wire.operation_of(service, environ, body)
        latency_ms = STATE.get("latency_ms")
        if latency_ms > 0:
            time.sleep(latency_ms / 1000.0)

        # IAM decides before the service does anything, injected failures included.
        denial = access.authorize(service, operation, environ, body)
        if denial is not None:
            status, headers, payload = wire.error_response(service, *denial)
            STATE.record_call(service, operation, status, start_ms)
            return _respond(start_response, status, headers, payload)

        injection = STATE.take_injection(service, operation)
        if injection is not None:
            status, headers, payload = wire.error_response(
                service, injection.code, injection.status, injection.message
            )
            STATE.record_call(service, operation, status, start_ms)
            return _respond(start_response, status, headers, payload)

        def recording_start_response(status_line, headers, exc_info=None):
            STATE.record_call(service, operation, int(status_line.split(" ", 1)[0]), start_ms)
            return start_response(status_line, headers, exc_info)

        return self._moto_app(environ, recording_start_response)

    def _control(self, environ, start_response, route: str):
        method = environ["REQUEST_METHOD"]
        try:
            if route == "calls" and method == "GET":
                return _json(start_response, 200, STATE.calls())
            if route == "calls" and method == "DELETE":
                STATE.clear_calls()
                return _json(start_response, 200, {})
            if route == "behaviour" and method == "GET":
                return _json(start_response, 200, STATE.snapshot())
            if route == "behaviour" and method == "POST":
                update = json.loads(_read_body(environ) or b"{}")
                return _json(start_response, 200, STATE.merge(update))
            if route == "identities" and method == "POST":
                spec = json.loads(_read_body(environ) or b"{}")
                return _json(start_response, 200, access.create_identity(spec))
            deactivate = re.fullmatch(r"functions/([^/]+)/deactivate", route)
            if deactivate and method == "POST":
                region = parse_qs(environ.get("QUERY_STRING", "")).get("region", [None])[0]
                return _json(start_response, 200, lambda_lifecycle.deactivate(unquote(deactivate.group(1)), region))
            if route == "dynamodb/seed" and method == "POST":
                return _json(start_response, 200, seed.seed(json.loads(_read_body(environ) or b"{}")))
            if route == "reset" and method == "POST":
                _reset_moto()
                access.reset()
                STATE.reset()
                return _json(start_response, 200, {})
        except (
            BehaviourError,
            json.JSONDecodeError,
            lambda_lifecycle.LifecycleError,
            access.IdentityError,
            seed.SeedError,
        ) as err:
            return _json(start_response, 400, {"error": str(err)})
        return _json(start_response, 404, {"error": f"no control route {method} /_standin/{route}"})


def _reset_moto() -> None:
    # The same call as `POST /moto-api/reset`: wipes every backend, including
    # the authorizer state kept on the IoT backends.
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()


def _read_body(environ) -> bytes:
    if environ.get("wsgi.input_terminated"):  # chunked upload: read to the end
        return environ["wsgi.input"].read()
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _json(start_response, status: int, value) -> list[bytes]:
    return _respond(start_response, status, [("Content-Type", "application/json")], json.dumps(value).encode())


def _respond(start_response, status: int, headers: list, payload: bytes) -> list[bytes]:
    reason = _REASONS.get(status, "Error")
    start_response(f"{status} {reason}", headers + [("Content-Length", str(len(payload)))])
    return [payload]
