"""Real-AWS Lambda/IAM behaviour that moto skips (aws-facts §3, §5, §6, §7).

Applied from outside by wrapping methods of moto's classes at start-up; each
behaviour reads its switch from `STATE` per call, so tests can flip it at runtime.
"""

import json
import re
import time
from urllib.parse import unquote

from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import LambdaFunction
from moto.awslambda.responses import LambdaResponse
from moto.core.utils import utcnow
from moto.iam.models import iam_backends

from behaviour import STATE

ROLE_NOT_ASSUMABLE = "The role defined for the function cannot be assumed by Lambda."


class InvalidParameterValueException(LambdaClientError):
    code = 400

    def __init__(self, message: str):
        super().__init__("InvalidParameterValueException", message)


class ResourceConflictException(LambdaClientError):
    code = 409

    def __init__(self, message: str):
        super().__init__("ResourceConflictException", message)


def install() -> None:
    _wrap_configuration()
    _wrap_create_function()
    _wrap_updates()
    _wrap_add_permission()


# --- function state: Pending after create, InProgress after an update ------------
def _wrap_configuration() -> None:
    original = LambdaFunction.get_configuration

    def get_configuration(self, on_create: bool = False):
        config = original(self, on_create)
        now = time.monotonic()
        if now < getattr(self, "_standin_active_at", 0.0):
            config.update(
                State="Pending",
                StateReason="The function is being created.",
                StateReasonCode="Creating",
            )
            config.pop("LastUpdateStatus", None)
        elif now < getattr(self, "_standin_updated_at", 0.0):
            config.update(
                LastUpdateStatus="InProgress",
                LastUpdateStatusReason="The function is being updated.",
            )
        return config

    LambdaFunction.get_configuration = get_configuration


def _ensure_not_busy(fn: LambdaFunction) -> None:
    now = time.monotonic()
    if now < getattr(fn, "_standin_active_at", 0.0):
        raise ResourceConflictException(
            "The operation cannot be performed at this time. "
            "The function is currently in the following state: Pending"
        )
    if now < getattr(fn, "_standin_updated_at", 0.0):
        raise ResourceConflictException(
            "The operation cannot be performed at this time. "
            f"An update is in progress for resource: {fn.function_arn}"
        )


# --- CreateFunction: runtime blocking and role assumability ----------------------
def _wrap_create_function() -> None:
    original = LambdaResponse.create_function

    def create_function(self):
        spec = self.json_body
        _check_runtime_allowed(spec.get("Runtime"))
        _check_role_assumable(self.current_account, spec.get("Role"))
        response = original(self)
        fn = self.backend.get_function(spec["FunctionName"].rsplit(":", 1)[-1])
        fn._standin_active_at = time.monotonic() + STATE.get("function_pending_seconds")
        # moto rendered the body before the mark was set; render it again.
        status, headers, _ = response
        return status, headers, json.dumps(fn.get_configuration(on_create=True))

    LambdaResponse.create_function = create_function


def _check_runtime_allowed(runtime: str | None) -> None:
    # aws-facts §7: in late 2026 creating nodejs20.x (and every older Node.js
    # runtime) is blocked; nodejs22.x and nodejs24.x are still allowed.
    if not STATE.get("block_deprecated_runtimes") or not runtime:
        return
    match = re.fullmatch(r"nodejs(\d+)?(\.\w+|-edge)*", runtime)
    if match and (match.group(1) is None or int(match.group(1)) <= 20):
        raise InvalidParameterValueException(
            f"The runtime parameter of {runtime} is no longer supported for creating or updating "
            "AWS Lambda functions. We recommend you use a supported runtime while creating or "
            "updating functions."
        )


def _check_role_assumable(account_id: str, role_arn: str | None) -> None:
    """Fail as Lambda does when it cannot assume the execution role (aws-facts §5).

    Unknown or malformed roles are left to moto, which already rejects them.
    """
    role = _find_role(account_id, role_arn)
    if role is None:
        return
    age = (utcnow() - role.create_date).total_seconds()
    if age < STATE.get("role_propagation_seconds"):
        raise InvalidParameterValueException(ROLE_NOT_ASSUMABLE)
    if STATE.get("enforce_trust_policy") and not _trusts_lambda(role.assume_role_policy_document):
        raise InvalidParameterValueException(ROLE_NOT_ASSUMABLE)


def _find_role(account_id: str, role_arn: str | None):
    if not role_arn:
        return None
    # IAM is global per partition: the role lives in the partition its ARN names.
    partition = role_arn.split(":")[1] if role_arn.count(":") >= 5 else "aws"
    try:
        backend = iam_backends[account_id][partition]
    except KeyError:
        return None
    return next((role for role in backend.get_roles() if role.arn == role_arn), None)


def _trusts_lambda(document) -> bool:
    """Whether the trust policy lets lambda.amazonaws.com call sts:AssumeRole.

    Conditions are not evaluated: Lambda's own assume-role call carries no
    context keys the stand-in could check them against.
    """
    try:
        policy = json.loads(unquote(document)) if isinstance(document, str) else document
    except json.JSONDecodeError:
        return False
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    matching = [s for s in statements if _names_lambda(s.get("Principal")) and _allows_assume(s.get("Action"))]
    return any(s.get("Effect") == "Allow" for s in matching) and not any(
        s.get("Effect") == "Deny" for s in matching
    )


def _names_lambda(principal) -> bool:
    if principal == "*":
        return True
    services = principal.get("Service", []) if isinstance(principal, dict) else []
    services = [services] if isinstance(services, str) else services
    return "lambda.amazonaws.com" in services


def _allows_assume(action) -> bool:
    actions = [action] if isinstance(action, str) else (action or [])
    return any(a.lower() in ("sts:assumerole", "sts:*", "*") for a in actions)


# --- UpdateFunctionCode / UpdateFunctionConfiguration: one update at a time -------
def _wrap_updates() -> None:
    LambdaResponse.update_function_code = _guarded_update(
        LambdaResponse.update_function_code, may_change_role=False
    )
    LambdaResponse.update_function_configuration = _guarded_update(
        LambdaResponse.update_function_configuration, may_change_role=True
    )


def _guarded_update(original, may_change_role: bool):
    def update(self):
        function_name = unquote(self.path.rsplit("/", 2)[-2])
        fn = self.backend.get_function(function_name)
        _ensure_not_busy(fn)
        if may_change_role and "Role" in self.json_body:
            _check_role_assumable(self.current_account, self.json_body["Role"])
        previous = getattr(fn, "_standin_updated_at", 0.0)
        # Set before moto renders the response, which must already say InProgress.
        fn._standin_updated_at = time.monotonic() + STATE.get("function_update_seconds")
        try:
            return original(self)
        except Exception:
            fn._standin_updated_at = previous
            raise

    return update


# --- AddPermission: 201, and duplicate statement ids conflict --------------------
def _wrap_add_permission() -> None:
    original = LambdaResponse.add_permission

    def add_permission(self):
        function_name = unquote(self.path.split("/")[-2])
        qualifier = self.querystring.get("Qualifier", [None])[0]
        statement_id = json.loads(self.body).get("StatementId")
        if STATE.get("duplicate_statement_conflict"):
            fn = self.backend.get_function(function_name, qualifier)
            if any(s.get("Sid") == statement_id for s in fn.policy.statements):
                raise ResourceConflictException(
                    f"The statement id ({statement_id}) provided already exists. Please provide "
                    "a new statement id, or remove the existing statement."
                )
        return 201, {"status": 201}, original(self)

    LambdaResponse.add_permission = add_permission
