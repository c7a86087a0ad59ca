"""TestInvokeAuthorizer: run the authorizer's Lambda zip under the local Node.js.

IoT checks, as for a real connection: the function's resource policy must let
iot.amazonaws.com invoke it for this authorizer (aws-facts §3); the event has the
shape IoT sends (§2); the reply must satisfy IoT's response contract (§2, §8).

The function runs as in Lambda's Node.js runtime: with Lambda's environment only (region,
function name, the execution role's temporary credentials, its configured variables), none of
the stand-in's; and with the AWS SDK for JavaScript v3 that the runtime includes importable by
bare name, also from an ES module (see _runtime_root). Its AWS calls go to this stand-in
(AWS_ENDPOINT_URL_DYNAMODB), so a DynamoDB-mode authorizer reads moto's table.
"""

import base64
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

from moto.awslambda.exceptions import UnknownFunctionException
from moto.awslambda.utils import get_backend

import lambda_lifecycle
import logs

RUNNER = Path(__file__).with_name("invoke.mjs")
STANDIN_DIR = Path(tempfile.gettempdir()) / "iot-custom-auth-standin"
# Names the directory whose node_modules holds the SDK the Lambda runtime includes
# (scripts/test installs it, pinned); unset, the function finds no SDK.
LAMBDA_SDK_VARIABLE = "IOT_CUSTOM_AUTH_LAMBDA_SDK"
# This stand-in's own URL, set by server.py once it listens: the function's AWS endpoint.
ENDPOINT_URL: str | None = None
# "The Lambda function timeout limit for custom authorizer is 5 seconds." (§2)
AUTHORIZER_TIMEOUT_SECONDS = 5.0
_PRINCIPAL_ID = re.compile(r"[a-zA-Z0-9]{1,128}")
_FUNCTION_ARN = re.compile(r"arn:aws[\w-]*:lambda:([^:]+):(\d{12}):function:.+")


class CannotInvoke(Exception):
    """IoT could not invoke the function at all (no permission, no function)."""


class BadReply(Exception):
    """The function ran but threw, timed out or answered outside the contract."""


def test_invoke(authorizer, request: dict, account_id: str, region: str) -> dict:
    fn = _find_function(authorizer.function_arn, account_id, region)
    if not _iot_may_invoke(fn, authorizer.arn, account_id):
        raise CannotInvoke(
            f"AWS IoT is not authorized to invoke {authorizer.function_arn} for authorizer "
            f"{authorizer.arn}: the function's resource policy has no statement allowing "
            "iot.amazonaws.com lambda:InvokeFunction with this authorizer as AWS:SourceArn"
        )
    # Pending raises lambda_lifecycle.FunctionPending; Inactive fails and starts reactivation.
    problem = lambda_lifecycle.invocation_problem(fn)
    if problem is not None:
        raise CannotInvoke(problem)
    event = build_event(authorizer, request)
    timeout = min(float(fn.timeout or 3), AUTHORIZER_TIMEOUT_SECONDS)
    return validate_reply(_run_node(fn, event, timeout))


def _find_function(function_arn: str, account_id: str, region: str):
    match = _FUNCTION_ARN.fullmatch(function_arn)
    # IoT invokes functions of its own account and region only (aws-facts §10, item 13).
    if match is None or match.groups() != (region, account_id):
        raise CannotInvoke(f"{function_arn} is not a Lambda function ARN in {region} of account {account_id}")
    try:
        return get_backend(account_id, region).get_function(function_arn)
    except UnknownFunctionException as err:
        raise CannotInvoke(f"The function {function_arn} does not exist") from err


# --- resource policy ---------------------------------------------------------------
def _iot_may_invoke(fn, authorizer_arn: str, account_id: str) -> bool:
    return any(_statement_allows(s, authorizer_arn, account_id) for s in fn.policy.statements)


def _statement_allows(statement: dict, authorizer_arn: str, account_id: str) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    principal = statement.get("Principal", {})
    services = principal.get("Service") if isinstance(principal, dict) else None
    services = [services] if isinstance(services, str) else (services or [])
    if "iot.amazonaws.com" not in services:
        return False
    actions = statement.get("Action")
    actions = [actions] if isinstance(actions, str) else (actions or [])
    if not any(a in ("lambda:InvokeFunction", "lambda:*") for a in actions):
        return False
    condition = statement.get("Condition", {})
    source_arns = [
        value
        for operator in ("ArnLike", "StringLike", "ArnEquals", "StringEquals")
        for value in _as_list(condition.get(operator, {}).get("AWS:SourceArn"))
    ]
    # IoT always passes its authorizer ARN; a grant without SourceArn also admits it,
    # but the project requires the scoped grant (aws-facts §3), so insist on a match.
    if not any(fnmatch.fnmatchcase(authorizer_arn, pattern) for pattern in source_arns):
        return False
    accounts = [
        value
        for operator in ("StringEquals", "StringLike")
        for value in _as_list(condition.get(operator, {}).get("AWS:SourceAccount"))
    ]
    return not accounts or account_id in accounts


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# --- the event IoT sends -----------------------------------------------------------
def build_event(authorizer, request: dict) -> dict:
    """The Lambda event for a TestInvokeAuthorizer request (aws-facts §2).

    Fields not given are left out, as IoT leaves out what a connection lacks.
    """
    event: dict = {}
    if "token" in request:
        event["token"] = request["token"]
    event["signatureVerified"] = _signature_verified(authorizer, request)
    protocols, protocol_data = [], {}
    if "tlsContext" in request or "mqttContext" in request:
        protocols.append("tls")
        if request.get("tlsContext", {}).get("serverName"):
            protocol_data["tls"] = {"serverName": request["tlsContext"]["serverName"]}
    if "httpContext" in request:
        protocols.append("http")
        protocol_data["http"] = {
            k: v for k, v in request["httpContext"].items() if k in ("headers", "queryString")
        }
    if "mqttContext" in request:
        protocols.append("mqtt")
        # The model's password is a blob, so it arrives base64 and is passed on
        # base64 as IoT does ("Data in the password field is base64-encoded").
        protocol_data["mqtt"] = {
            k: v for k, v in request["mqttContext"].items() if k in ("username", "password", "clientId")
        }
    if protocols:
        event["protocols"] = protocols
    if protocol_data:
        event["protocolData"] = protocol_data
    event["connectionMetadata"] = {"id": str(uuid.uuid4())}
    return event


def _signature_verified(authorizer, request: dict) -> bool:
    if authorizer.signing_disabled:
        return False
    token, signature = request.get("token"), request.get("tokenSignature")
    if not token or not signature:
        # [silent] With signing on, IoT stops unsigned callers before the
        # Lambda (aws-facts §2 scaling note); the stand-in refuses likewise.
        raise CannotInvoke(
            f"Authorizer {authorizer.name} has token signing enabled: token and tokenSignature are required"
        )
    if not _signature_matches(authorizer.token_signing_public_keys.values(), token, signature):
        raise CannotInvoke(f"The token signature does not verify with authorizer {authorizer.name}'s keys")
    return True


def _signature_matches(public_keys_pem, token: str, signature: str) -> bool:
    # IoT's token signature: RSA (PKCS#1 v1.5) over SHA-256 of the token.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        raw_signature = base64.b64decode(signature)
    except ValueError:
        return False
    for pem in public_keys_pem:
        try:
            key = serialization.load_pem_public_key(pem.encode())
            key.verify(raw_signature, token.encode(), padding.PKCS1v15(), hashes.SHA256())
            return True
        except (InvalidSignature, ValueError, TypeError):
            continue
    return False


# --- running the handler -------------------------------------------------------------
def _run_node(fn, event: dict, timeout: float) -> dict:
    root = _runtime_root()
    code_dir = _extracted_code(root, fn.code_bytes)
    command = [_node_binary(fn.run_time), str(RUNNER), str(code_dir), fn.handler or "", fn.run_time or ""]
    request_id = str(uuid.uuid4())
    env = function_env(fn, code_dir, timeout)
    env.update(logs.invocation_env(fn, request_id))
    started = time.time()
    try:
        completed = subprocess.run(
            command,
            input=json.dumps(event).encode(),
            capture_output=True,
            timeout=timeout,
            cwd=code_dir,
            env=env,
        )
    except subprocess.TimeoutExpired as err:
        logs.record_invocation(fn, request_id, started, timeout * 1000, err.stderr or b"", timed_out=True)
        raise BadReply(f"The authorizer function timed out after {timeout:g} seconds")
    except OSError as err:
        raise BadReply(f"Could not start Node.js ({command[0]}): {err}")
    logs.record_invocation(fn, request_id, started, (time.time() - started) * 1000, completed.stderr)
    try:
        outcome = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        stderr = completed.stderr.decode(errors="replace")[-2000:]
        raise BadReply(f"The authorizer function crashed: {stderr}")
    if not outcome.get("ok"):
        raise BadReply(f"The authorizer function failed: {outcome.get('errorType')}: {outcome.get('errorMessage')}")
    return outcome.get("result")


def function_env(fn, code_dir: Path, timeout: float) -> dict:
    """The environment Lambda gives a function: its configured variables, then the reserved
    ones (which a function cannot override), nothing of the stand-in's own environment."""
    env = {k: str(v) for k, v in (fn.environment_vars or {}).items()}
    env.update(
        {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "LAMBDA_RUNTIME_DIR": str(code_dir.parent),
            "AWS_REGION": fn.region,
            "AWS_DEFAULT_REGION": fn.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.run_time}",
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size or 128),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout),
            **_role_credentials(fn),
        }
    )
    if ENDPOINT_URL:
        # The SDK's service-specific endpoint setting (SDK v3 and the Rust SDK honour it).
        env["AWS_ENDPOINT_URL_DYNAMODB"] = ENDPOINT_URL
    return env


def _role_credentials(fn) -> dict:
    """Temporary credentials of the function's execution role, as Lambda hands them over: moto's
    STS AssumeRole with the function name as the session name."""
    from moto.sts.models import sts_backends

    from partitions import partition_of

    import access

    assumed = sts_backends[fn.account_id][partition_of(fn.region)].assume_role(
        fn.region, fn.function_name, fn.role, None, 3600, None
    )
    # The function's calls are the role's: evaluated against its policies (access.py).
    access.register_role_session(assumed.access_key_id, fn.role, fn.function_name, fn.account_id)
    return {
        "AWS_ACCESS_KEY_ID": assumed.access_key_id,
        "AWS_SECRET_ACCESS_KEY": assumed.secret_access_key,
        "AWS_SESSION_TOKEN": assumed.session_token,
    }


def _runtime_root() -> Path:
    """Where functions are extracted: a directory whose `node_modules` is the SDK's.

    Lambda's runtime includes the SDK outside the function's code and a function imports it
    by bare name, also from an ES module, whose resolution ignores NODE_PATH and only walks
    the importing file's parent directories for `node_modules`. A `node_modules` next to the
    extracted code directories reproduces that: the function's own node_modules, if it
    bundles one, still wins, as in Lambda. One root per SDK directory, since stand-ins of
    several checkouts may share the temp directory.
    """
    sdk = os.environ.get(LAMBDA_SDK_VARIABLE, "")
    key = hashlib.sha256(sdk.encode()).hexdigest()[:16] if sdk else "no-sdk"
    root = STANDIN_DIR / f"runtime-{key}"
    root.mkdir(parents=True, exist_ok=True)
    link = root / "node_modules"
    if sdk and not link.exists():
        try:
            link.symlink_to(Path(sdk).resolve() / "node_modules", target_is_directory=True)
        except FileExistsError:  # a concurrent invocation made it
            pass
    return root


def _node_binary(runtime: str | None) -> str:
    version_variable = {"nodejs22.x": "STANDIN_NODE_22", "nodejs24.x": "STANDIN_NODE_24"}.get(runtime or "")
    for variable in (version_variable, "STANDIN_NODE"):
        if variable and os.environ.get(variable):
            return os.environ[variable]
    return shutil.which("node") or "node"


def _extracted_code(root: Path, code: bytes) -> Path:
    """The zip extracted once per content, shared by later invocations."""
    target = root / hashlib.sha256(code).hexdigest()
    if target.is_dir():
        return target
    staging = Path(tempfile.mkdtemp(dir=root, prefix="staging-"))
    try:
        zipfile.ZipFile(io.BytesIO(code)).extractall(staging)
    except zipfile.BadZipFile:
        shutil.rmtree(staging)
        raise BadReply("The function's code is not a valid zip file")
    try:
        staging.rename(target)  # atomic: a concurrent extraction of the same zip may win
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --- IoT's response contract -----------------------------------------------------------
def validate_reply(reply) -> dict:
    if not isinstance(reply, dict) or not isinstance(reply.get("isAuthenticated"), bool):
        raise BadReply("The authorizer response must be an object with a boolean isAuthenticated")
    if not reply["isAuthenticated"]:
        # "If this is false, the rest of the response fields should be ignored."
        return {"isAuthenticated": False}
    principal_id = reply.get("principalId")
    if not isinstance(principal_id, str) or not _PRINCIPAL_ID.fullmatch(principal_id):
        raise BadReply(f"principalId {principal_id!r} must match [a-zA-Z0-9]{{1,128}}")
    result = {"isAuthenticated": True, "principalId": principal_id}
    for key in ("refreshAfterInSeconds", "disconnectAfterInSeconds"):
        value = reply.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 300 <= value <= 86400:
            raise BadReply(f"{key} must be an integer between 300 and 86400, got {value!r}")
        result[key] = value
    result["policyDocuments"] = _policy_documents(reply.get("policyDocuments"))
    return result


def _policy_documents(documents) -> list[str]:
    if not isinstance(documents, list) or len(documents) > 10:
        raise BadReply("policyDocuments must be a list of at most 10 policy documents")
    rendered = []
    for document in documents:
        if isinstance(document, str):
            try:
                parsed = json.loads(document)
            except json.JSONDecodeError:
                raise BadReply("A policy document string is not valid JSON")
        else:
            parsed = document
        if not isinstance(parsed, dict):
            raise BadReply("Each policy document must be a JSON object")
        compact = json.dumps(parsed, separators=(",", ":"))
        if len(compact) > 2048:
            raise BadReply(f"A policy document has {len(compact)} characters; the limit is 2048")
        rendered.append(document if isinstance(document, str) else compact)
    return rendered
