"""What a request is (service, operation) and how each AWS protocol writes an error."""

import io
import json
import re
import uuid
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

# The SigV4 credential scope names the service: Credential=AKID/DATE/REGION/SERVICE/aws4_request.
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")

QUERY_SERVICES = {"iam": "2010-05-08", "sts": "2011-06-15"}


_FULL_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")


def service_of(environ: dict) -> str | None:
    match = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return match.group(1) if match else None


def credential_of(environ: dict) -> tuple[str, str] | None:
    """The access key id and the region of a SigV4-signed request."""
    match = _FULL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return (match.group(1), match.group(2)) if match else None


def operation_of(service: str, environ: dict, body: bytes) -> str:
    """The AWS PascalCase operation name, or "Unknown" if the model has none."""
    if service in QUERY_SERVICES:
        params = parse_qs(body.decode("utf-8", "replace")) or parse_qs(environ.get("QUERY_STRING", ""))
        return params.get("Action", ["Unknown"])[0]
    return _rest_operation(service, environ, body)


def _rest_operation(service: str, environ: dict, body: bytes) -> str:
    matched = rest_match(service, environ, body)
    return matched[0] if matched else "Unknown"


def rest_match(service: str, environ: dict, body: bytes) -> tuple[str, dict] | None:
    """The operation name and its URI parameters (percent-decoded), or None if the model has none."""
    # moto's router matches method + path (+ required query args) against
    # botocore's `http.requestUri`; reuse it so naming agrees with dispatch.
    from moto.core.request import Request
    from moto.core.routing import get_service_router
    from werkzeug.exceptions import NotFound

    probe = dict(environ, **{"wsgi.input": io.BytesIO(body)})
    try:
        operation, params = get_service_router(service).match(Request(probe))
    except (NotFound, NotImplementedError, KeyError, ValueError):
        return None
    return operation.name, params


def error_response(service: str, code: str, status: int, message: str) -> tuple[int, list, bytes]:
    """Render an error the way the real service does, so SDKs read `code`.

    REST-JSON SDKs take the code from `x-amzn-ErrorType` first (aws-facts §1);
    the query protocol (IAM, STS) carries it in `<Error><Code>`.
    """
    request_id = str(uuid.uuid4())
    if service in QUERY_SERVICES:
        namespace = f"https://{service}.amazonaws.com/doc/{QUERY_SERVICES[service]}/"
        error_type = "Receiver" if status >= 500 else "Sender"
        body = (
            f'<ErrorResponse xmlns="{namespace}"><Error><Type>{error_type}</Type>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
        return status, headers, body
    # `__type` too: JSON-protocol clients (CloudWatch Logs) read the code from the body.
    payload = {"__type": code, "message": message}
    if service == "lambda":
        # Lambda's own error bodies: {"Type": "User", "Message": ...}.
        payload = {"Type": "User" if status < 500 else "Service", "Message": message}
    headers = [
        ("Content-Type", "application/json"),
        ("x-amzn-ErrorType", code),
        ("x-amzn-RequestId", request_id),
    ]
    return status, headers, json.dumps(payload).encode()
