"""Lambda's lifecycle beyond Pending/InProgress, and IAM's DeleteRole window (aws-facts §6, §13).

- A creation that ends `Failed` (`fail_next_function_create`): it stays Failed, cannot be invoked
  or updated; only delete + create recovers.
- An idle function that went `Inactive` (`POST /_standin/functions/<name>/deactivate`): the next
  invocation fails and starts reactivation (Pending, `Restoring`, then Active).
- While a function is Pending, AddPermission is refused like the updates (lambda_realism.py
  refuses those) and TestInvokeAuthorizer (see `invocation_problem`).
- DeleteRole conflicts for `delete_role_conflict_seconds` after the role's last DetachRolePolicy.

Wraps methods that lambda_realism.py may already have wrapped, so `install()` runs after it.
"""

import json
import time
from urllib.parse import unquote

from moto.awslambda.exceptions import UnknownFunctionException
from moto.awslambda.models import LambdaFunction, lambda_backends
from moto.awslambda.responses import LambdaResponse
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iam.exceptions import DeleteConflictException
from moto.iam.models import IAMBackend

from behaviour import STATE
from lambda_realism import ResourceConflictException

STATE_CONFLICT = "The operation cannot be performed at this time. The function is currently in the following state: {}"
# [silent] Lambda's StateReason texts for Idle and Restoring are not documented; the codes are the
# model's (`StateReasonCode` Idle, Restoring).
IDLE_REASON = "The function is inactive because it has not been invoked for a long time."
RESTORING_REASON = "The function is being restored."


class FunctionPending(Exception):
    """The function is Pending: the operation conflicts with its state."""


class LifecycleError(ValueError):
    """A control-API request on a function that cannot be honoured."""


def install() -> None:
    _wrap_configuration()
    _wrap_create_function()
    _wrap_updates()
    _wrap_add_permission()
    _wrap_delete_role()


def _pending(fn: LambdaFunction) -> bool:
    return time.monotonic() < getattr(fn, "_standin_active_at", 0.0)


# --- what GetFunction / GetFunctionConfiguration report ------------------------------
def _wrap_configuration() -> None:
    original = LambdaFunction.get_configuration

    def get_configuration(self, on_create: bool = False):
        config = original(self, on_create)
        failure = getattr(self, "_standin_failure", None)
        if failure and not _pending(self):
            # [silent] LastUpdateStatus of a failed creation is not documented; Failed (with the
            # same reason) makes the FunctionUpdatedV2 waiter fail too instead of succeeding.
            config.update(
                State="Failed",
                StateReason=failure["reason"],
                StateReasonCode=failure["reason_code"],
                LastUpdateStatus="Failed",
                LastUpdateStatusReason=failure["reason"],
                LastUpdateStatusReasonCode=failure["reason_code"],
            )
        elif getattr(self, "_standin_inactive", False):
            config.update(State="Inactive", StateReason=IDLE_REASON, StateReasonCode="Idle")
        elif _pending(self) and getattr(self, "_standin_restoring", False):
            config.update(StateReason=RESTORING_REASON, StateReasonCode="Restoring")
        return config

    LambdaFunction.get_configuration = get_configuration


# --- CreateFunction: an injected creation failure --------------------------------------
def _wrap_create_function() -> None:
    original = LambdaResponse.create_function

    def create_function(self):
        status, headers, body = original(self)
        failure = STATE.take_function_create_failure()
        if failure is None:
            return status, headers, body
        fn = self.backend.get_function(self.json_body["FunctionName"].rsplit(":", 1)[-1])
        fn._standin_failure = failure
        # It answers Pending like any creation, or Failed at once when there is no pending time.
        return status, headers, json.dumps(fn.get_configuration(on_create=True))

    LambdaResponse.create_function = create_function


# --- updates and AddPermission ---------------------------------------------------------
def _wrap_updates() -> None:
    LambdaResponse.update_function_code = _refused_when_failed(LambdaResponse.update_function_code)
    LambdaResponse.update_function_configuration = _refused_when_failed(
        LambdaResponse.update_function_configuration
    )


def _refused_when_failed(original):
    def update(self):
        fn = self.backend.get_function(unquote(self.path.rsplit("/", 2)[-2]))
        # [silent] What an update of a Failed function answers is undocumented ("you must delete
        # and recreate the function"); the stand-in refuses it like an update of a Pending one.
        # An Inactive function is updated (AWS: "Functions can only be updated if they are in the
        # Active or Inactive state") and stays Inactive: whether an update reactivates it is
        # [silent], and a caller that invokes it to wake it works either way.
        if getattr(fn, "_standin_failure", None) and not _pending(fn):
            raise ResourceConflictException(STATE_CONFLICT.format("Failed"))
        return original(self)

    return update


def _wrap_add_permission() -> None:
    original = LambdaResponse.add_permission

    def add_permission(self):
        qualifier = self.querystring.get("Qualifier", [None])[0]
        fn = self.backend.get_function(unquote(self.path.split("/")[-2]), qualifier)
        # "Any invocations or other API actions that operate on the function will fail" while
        # Pending (aws-facts §13; §6 notes the docs' list itself omits AddPermission).
        if _pending(fn):
            raise ResourceConflictException(STATE_CONFLICT.format("Pending"))
        return original(self)

    LambdaResponse.add_permission = add_permission


# --- invocation (TestInvokeAuthorizer) -------------------------------------------------
def invocation_problem(fn: LambdaFunction) -> str | None:
    """Why invoking `fn` fails now, or None when it can run.

    Raises `FunctionPending` while it is Pending. Invoking an Inactive function fails and starts
    its reactivation, as Lambda does (aws-facts §13).
    """
    config = fn.get_configuration()
    state = config["State"]
    if state == "Active":
        return None
    if state == "Pending":
        raise FunctionPending(STATE_CONFLICT.format("Pending"))
    if state == "Inactive":
        _reactivate(fn)
        return (
            f"The function {fn.function_arn} is Inactive ({config['StateReasonCode']}): this "
            "invocation failed and Lambda is reactivating it; it can be invoked once its State "
            "is Active again."
        )
    return (
        f"The function {fn.function_arn} is {state} ({config.get('StateReasonCode')}: "
        f"{config.get('StateReason')}) and cannot be invoked."
    )


def _reactivate(fn: LambdaFunction) -> None:
    fn._standin_inactive = False
    fn._standin_restoring = True
    fn._standin_active_at = time.monotonic() + STATE.get("function_pending_seconds")


def deactivate(name: str, region: str | None) -> dict:
    """Make an Active function Inactive (Idle), as weeks without invocations would."""
    fn = _find_function(name, region)
    state = fn.get_configuration()["State"]
    if state != "Active":
        raise LifecycleError(f"function {name} is {state}; only an Active function goes Inactive")
    fn._standin_inactive = True
    config = fn.get_configuration()
    return {key: config[key] for key in ("FunctionArn", "State", "StateReason", "StateReasonCode")}


def _find_function(name: str, region: str | None) -> LambdaFunction:
    found = []
    for backend_region, backend in list(lambda_backends[DEFAULT_ACCOUNT_ID].items()):
        if region not in (None, backend_region):
            continue
        try:
            found.append(backend.get_function(name))
        except UnknownFunctionException:
            continue
    if len(found) != 1:
        where = f"region {region}" if region else "any region"
        problem = "no function" if not found else "more than one function (pass ?region=)"
        raise LifecycleError(f"{problem} named {name} in {where}")
    return found[0]


# --- IAM: DeleteRole right after DetachRolePolicy ----------------------------------------
def _wrap_delete_role() -> None:
    original_detach = IAMBackend.detach_role_policy
    original_delete = IAMBackend.delete_role

    def detach_role_policy(self, policy_arn: str, role_name: str) -> None:
        original_detach(self, policy_arn, role_name)
        self.get_role(role_name)._standin_detached_at = time.monotonic()

    def delete_role(self, role_name: str) -> None:
        detached_at = getattr(self.get_role(role_name), "_standin_detached_at", None)
        window = STATE.get("delete_role_conflict_seconds")
        # IAM is eventually consistent: right after a detach, DeleteRole can still see the policy.
        if detached_at is not None and time.monotonic() - detached_at < window:
            raise DeleteConflictException("Cannot delete entity, must detach all policies first.")
        original_delete(self, role_name)

    IAMBackend.detach_role_policy = detach_role_policy
    IAMBackend.delete_role = delete_role
