"""Least-privilege identities, and IAM's verdict on every call signed with their keys (aws-facts §13).

`POST /_standin/identities` creates an IAM user in moto with an inline policy and an access key.
Each call signed with that key is evaluated against the user's policies as IAM does (see
policy_eval.py for the rules, iam_actions.py for what each call needs) before moto serves it; a
refused call gets the service's own AccessDenied answer. Calls signed with any other key are the
test's administrator and are not evaluated.

A function's calls are evaluated too: the temporary credentials the stand-in hands a function
(its execution role's, from moto's STS AssumeRole, authorizer_invoke.py) are registered here as
that role's session, and each call signed with them is evaluated against the role's inline and
attached policies as they are at the time of the call, as IAM evaluates a Lambda function's
calls against its execution role. So an authorizer reading a table its role may not read gets
DynamoDB's AccessDeniedException, as on AWS.

Why not moto's own access control (`INITIAL_NO_AUTH_ACTION_COUNT`): it evaluates every caller (the
administrator too), only services whose responses call its check (not our IoT authorizer API), with
resource `*` for most operations and few condition keys.

The user exists with the same key in each of moto's partitions (aws, aws-cn, aws-us-gov), so one
identity works in any region; its ARN carries the partition of the request's region.
"""

import json
import re
import threading
from dataclasses import dataclass

from moto.awslambda.responses import LambdaResponse
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import ServiceException
from moto.iam.models import iam_backends
from moto.iam.policy_validation import IAMPolicyDocumentValidator

import iam_actions
import wire
from behaviour import STATE
from partitions import partition_of, partitions
from policy_eval import Decision, Need, evaluate

POLICY_NAME = "standin-identity"
_USER_NAME = re.compile(r"[\w+=,.@-]{1,64}")
_REGION_OF_PARTITION = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}
# The service's error code and HTTP status for a refused call.
_DENIED = {
    "iam": ("AccessDenied", 403),
    "sts": ("AccessDenied", 403),
    "lambda": ("AccessDeniedException", 403),
    "iot": ("AccessDeniedException", 403),
    "logs": ("AccessDeniedException", 400),
    "dynamodb": ("AccessDeniedException", 400),
}


class IdentityError(ValueError):
    """A control-API request that does not describe a valid identity."""


@dataclass(frozen=True)
class Identity:
    name: str
    access_key_id: str
    account: str

    def arn(self, partition: str) -> str:
        return f"arn:{partition}:iam::{self.account}:user/{self.name}"


@dataclass(frozen=True)
class RoleSession:
    """A function's execution role, assumed by Lambda with the function's name as the session."""

    role: str
    session: str
    account: str

    def arn(self, partition: str) -> str:
        return f"arn:{partition}:sts::{self.account}:assumed-role/{self.role}/{self.session}"


_lock = threading.Lock()
_identities: dict[str, Identity] = {}
_sessions: dict[str, RoleSession] = {}
# Werkzeug serves each request on its own thread: who is calling, for GetFunction's tag rule.
_caller = threading.local()


def install() -> None:
    _wrap_get_function()


def reset() -> None:
    with _lock:
        _identities.clear()
        _sessions.clear()


def register_role_session(access_key_id: str, role_arn: str, session: str, account: str) -> None:
    """Calls signed with `access_key_id` are `role_arn`'s, evaluated against its policies."""
    with _lock:
        _sessions[access_key_id] = RoleSession(role_arn.rsplit("/", 1)[-1], session, account)


# --- identities -------------------------------------------------------------------------
def create_identity(spec) -> dict:
    if not isinstance(spec, dict):
        raise IdentityError('an identity is {"name": "...", "policy": {...}}')
    name, policy = spec.get("name"), spec.get("policy")
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        raise IdentityError(r"name must be an IAM user name: 1-64 characters of [\w+=,.@-]")
    if not isinstance(policy, dict):
        raise IdentityError("policy must be an IAM policy document (a JSON object)")
    document = json.dumps(policy)
    try:
        IAMPolicyDocumentValidator(document).validate()
    except ServiceException as err:
        raise IdentityError(f"the policy is not valid: {err.message}")
    account = DEFAULT_ACCOUNT_ID
    key_id = secret = None
    with _lock:
        for partition in partitions():
            backend = iam_backends[account][partition]
            if name in backend.users:
                raise IdentityError(f"an IAM user named {name} already exists")
        for partition in partitions():
            backend = iam_backends[account][partition]
            backend.create_user(_REGION_OF_PARTITION[partition], name)
            backend.put_user_policy(name, POLICY_NAME, document)
            key = backend.create_access_key(name)
            if key_id is None:
                key_id, secret = key.access_key_id, key.secret_access_key
            else:
                # The same key in every partition, so moto's STS names the user everywhere.
                del backend.access_keys[key.access_key_id]
                key.access_key_id, key.secret_access_key = key_id, secret
                backend.access_keys[key_id] = key
        identity = Identity(name, key_id, account)
        _identities[key_id] = identity
    partition = spec.get("partition") or partition_of(spec.get("region") or "us-east-1")
    return {"access_key_id": key_id, "secret_access_key": secret, "arn": identity.arn(partition)}


# --- evaluation -------------------------------------------------------------------------
def authorize(service: str, operation: str, environ: dict, body: bytes) -> tuple[str, int, str] | None:
    """None when the call may proceed, else (code, status, message) of the service's AccessDenied."""
    key_id, region = wire.credential_of(environ) or ("", "us-east-1")
    partition = partition_of(region)
    with _lock:
        identity = _identities.get(key_id) or _sessions.get(key_id)
    _caller.identity, _caller.partition = identity, partition
    hides_tags = STATE.get("get_function_hides_tags") and (service, operation) == ("lambda", "ListTags")
    if identity is None and not hides_tags:
        return None

    uri = {}
    if service not in wire.QUERY_SERVICES:
        uri = (wire.rest_match(service, environ, body) or ("", {}))[1]
    query, params = iam_actions.parse_params(service, environ, body, uri)
    account = identity.account if identity else DEFAULT_ACCOUNT_ID
    request = iam_actions.Request(service, operation, region, account, partition, uri, query, params)
    required = iam_actions.needs(request, lambda name: _role_path(account, partition, name))
    if required is None:
        return None
    if identity is None:
        # `get_function_hides_tags`: ListTags is refused to the administrator too.
        return _denied(service, _admin_arn(partition), required[0], Decision.IMPLICIT_DENY)

    policies = _policies(identity, partition)
    for need in required:
        decision = evaluate(policies, _with_principal(need, identity, partition, region))
        if decision is not Decision.ALLOW:
            return _denied(service, identity.arn(partition), need, decision)
    if hides_tags:
        return _denied(service, identity.arn(partition), required[0], Decision.IMPLICIT_DENY)
    return None


def _with_principal(need: Need, identity, partition: str, region: str) -> Need:
    if isinstance(identity, RoleSession):
        role = _role(identity, partition)
        context = {
            **need.context,
            "aws:principalarn": [f"arn:{partition}:iam::{identity.account}:role/{identity.role}"],
            "aws:principalaccount": [identity.account],
            "aws:principaltype": ["AssumedRole"],
            "aws:requestedregion": [region],
        }
        if role is not None:
            context["aws:userid"] = [f"{role.id}:{identity.session}"]
        return Need(need.action, need.resource, context)
    user = iam_backends[identity.account][partition].users.get(identity.name)
    context = {
        **need.context,
        "aws:principalarn": [identity.arn(partition)],
        "aws:principalaccount": [identity.account],
        "aws:principaltype": ["User"],
        "aws:username": [identity.name],
        "aws:requestedregion": [region],
    }
    if user is not None:
        context["aws:userid"] = [user.id]
    return Need(need.action, need.resource, context)


def _role(session: RoleSession, partition: str):
    roles = iam_backends[session.account][partition].roles.values()
    return next((r for r in roles if r.name == session.role), None)


def _policies(identity, partition: str) -> list:
    """The identity's inline and attached policies (a user's groups' too), as IAM stores them
    now. A role session whose role is gone has none: every call is refused."""
    if isinstance(identity, RoleSession):
        role = _role(identity, partition)
        if role is None:
            return []
        documents = list(role.policies.values())
        for managed in role.managed_policies.values():
            documents.extend(v.document for v in managed.versions if v.version_id == managed.default_version_id)
        return documents
    backend = iam_backends[identity.account][partition]
    user = backend.users.get(identity.name)
    if user is None:
        return []
    holders = [user] + backend.get_groups_for_user(identity.name)
    documents = []
    for holder in holders:
        documents.extend(getattr(holder, "policies", {}).values())
        for managed in getattr(holder, "managed_policies", {}).values():
            documents.extend(v.document for v in managed.versions if v.version_id == managed.default_version_id)
    return documents


def _role_path(account: str, partition: str, name: str) -> str:
    try:
        return iam_backends[account][partition].get_role(name).path or "/"
    except ServiceException:
        return "/"


def _admin_arn(partition: str) -> str:
    # What moto's GetCallerIdentity answers for a key it did not issue.
    return f"arn:{partition}:sts::{DEFAULT_ACCOUNT_ID}:user/moto"


def denial_message(caller_arn: str, need: Need, decision: Decision) -> str:
    action, resource = need.action, need.resource
    head = f"User: {caller_arn} is not authorized to perform: {action} on resource: {resource}"
    if decision is Decision.EXPLICIT_DENY:
        return f"{head} with an explicit deny in an identity-based policy"
    return f"{head} because no identity-based policy allows the {action} action"


def _denied(service: str, caller_arn: str, need: Need, decision: Decision) -> tuple[str, int, str]:
    code, status = _DENIED.get(service, ("AccessDeniedException", 403))
    return code, status, denial_message(caller_arn, need, decision)


# --- GetFunction: Tags only for callers allowed lambda:ListTags ---------------------------
def _wrap_get_function() -> None:
    original = LambdaResponse.get_function

    def get_function(self):
        body = original(self)
        identity = getattr(_caller, "identity", None)
        hides_tags = STATE.get("get_function_hides_tags")
        if identity is None and not hides_tags:
            return body
        partition = getattr(_caller, "partition", "aws")
        code = json.loads(body)
        # Tags belong to the function, not to a version: ListTags is checked on the unqualified ARN.
        arn = ":".join(code["Configuration"]["FunctionArn"].split(":")[:7])
        need = Need("lambda:ListTags", arn)
        if identity is None:
            caller, decision = _admin_arn(partition), Decision.IMPLICIT_DENY
        else:
            caller = identity.arn(partition)
            decision = evaluate(_policies(identity, partition), _with_principal(need, identity, partition, self.region))
            if hides_tags and decision is Decision.ALLOW:
                decision = Decision.IMPLICIT_DENY
        if decision is Decision.ALLOW:
            return body
        # botocore GetFunctionResponse.Tags: "Lambda returns tag data only if you have explicit
        # allow permissions for lambda:ListTags"; TagsError says why they are missing.
        # [silent] Whether TagsError is also set for an untagged function is undocumented; the
        # stand-in sets it, so a caller can never take "no Tags" for "no tags".
        code.pop("Tags", None)
        code["TagsError"] = {"ErrorCode": "AccessDeniedException", "Message": denial_message(caller, need, decision)}
        return json.dumps(code)

    LambdaResponse.get_function = get_function
