"""What each API call needs from IAM: its action(s), resource ARN and condition keys.

From the Service Authorization Reference (SAR) pages "Actions, resources, and condition keys for"
AWS Identity and Access Management, AWS Lambda, AWS IoT and AWS STS, and the services' own guides
where creating with tags needs the tagging permission too. Every ARN carries the request's
partition (aws-facts §13).

[silent] An operation not listed here needs `<service>:<Operation>` on resource `*`: only a statement whose
Resource is `*` (or a pattern matching the literal `*`) grants it. That is never more permissive
than AWS, whose resource would be a specific ARN those statements match as well.
"""

from dataclasses import dataclass
from urllib.parse import parse_qs

from policy_eval import Need

# STS: "You don't need any permissions to perform this operation" (API_GetCallerIdentity).
_NO_AUTHORIZATION = {("sts", "GetCallerIdentity")}

# Operations whose IAM action is named differently.
_ACTION_NAMES = {
    ("lambda", "Invoke"): "InvokeFunction",
}

_IAM_ROLE_OPERATIONS = {
    "AttachRolePolicy",
    "CreateRole",
    "DeleteRole",
    "DeleteRolePermissionsBoundary",
    "DeleteRolePolicy",
    "DetachRolePolicy",
    "GetRole",
    "GetRolePolicy",
    "ListAttachedRolePolicies",
    "ListInstanceProfilesForRole",
    "ListRolePolicies",
    "ListRoleTags",
    "PutRolePermissionsBoundary",
    "PutRolePolicy",
    "TagRole",
    "UntagRole",
    "UpdateAssumeRolePolicy",
    "UpdateRole",
    "UpdateRoleDescription",
}


@dataclass
class Request:
    service: str
    operation: str
    region: str
    account: str
    partition: str
    uri: dict  # URI parameters of a REST operation
    query: dict  # query string, first value of each
    body: dict  # JSON body, or the form parameters of a query-protocol call

    def param(self, name: str):
        for source in (self.uri, self.body, self.query):
            if source.get(name) is not None:
                return source[name]
        return None


def parse_params(service: str, environ: dict, body: bytes, uri: dict) -> tuple[dict, dict]:
    """(query, body) as dicts: form fields for IAM/STS, JSON for the others."""
    import json

    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if service in ("iam", "sts"):
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        return query, {**query, **form}
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {}
    return query, parsed if isinstance(parsed, dict) else {}


def needs(request: Request, role_path) -> list[Need] | None:
    """The authorizations the request needs, in the order AWS checks them; None when it needs none.

    `role_path(name)` gives an existing role's path (`/` when unknown).
    """
    key = (request.service, request.operation)
    if key in _NO_AUTHORIZATION:
        return None
    service, operation = key
    action = f"{service}:{_ACTION_NAMES.get(key, operation)}"
    if service == "iam":
        return _iam(request, action, role_path)
    if service == "lambda":
        return _lambda(request, action)
    if service == "iot":
        return _iot(request, action)
    if service == "logs":
        return [Need(action, _logs_resource(request))]
    if service == "dynamodb":
        return _dynamodb(request, action)
    return [Need(action, "*")]


def _arn(request: Request, service: str, resource: str, region: bool = True) -> str:
    where = f"{request.region}:{request.account}" if region else f":{request.account}"
    return f"arn:{request.partition}:{service}:{where}:{resource}"


# --- IAM --------------------------------------------------------------------------------
def _iam(request: Request, action: str, role_path) -> list[Need]:
    role_name = request.param("RoleName")
    if request.operation not in _IAM_ROLE_OPERATIONS or not role_name:
        return [Need(action, "*")]
    if request.operation == "CreateRole":
        path = request.param("Path") or "/"
    else:
        path = role_path(role_name)
    role_arn = _arn(request, "iam", f"role{path}{role_name}", region=False)
    context = {}
    if request.operation in ("AttachRolePolicy", "DetachRolePolicy") and request.param("PolicyArn"):
        context["iam:policyarn"] = [request.param("PolicyArn")]
    result = [Need(action, role_arn, context)]
    # "To create a role with tags you must also have iam:TagRole" (IAM User Guide, id_tags).
    if request.operation == "CreateRole" and any(k.startswith("Tags.member.") for k in request.body):
        result.append(Need("iam:TagRole", role_arn))
    return result


def pass_role(request: Request, role_arn: str, service_principal: str) -> Need:
    """iam:PassRole, checked by the service the role is handed to (SAR: iam:PassedToService)."""
    return Need("iam:PassRole", role_arn, {"iam:passedtoservice": [service_principal]})


# --- Lambda -----------------------------------------------------------------------------
def function_arn(request: Request, name: str, qualifier: str | None = None) -> str:
    """The function's ARN from a name, a partial ARN (`ACCOUNT:function:NAME`) or a full ARN."""
    if name.startswith("arn:"):
        arn = name
    elif ":function:" in name:
        arn = f"arn:{request.partition}:lambda:{request.region}:{name}"
    else:
        arn = _arn(request, "lambda", f"function:{name}")
    return f"{arn}:{qualifier}" if qualifier and arn.count(":") == 6 else arn


def _lambda(request: Request, action: str) -> list[Need]:
    tagged_arn = request.param("Resource") or request.param("ARN")
    if request.operation in ("TagResource", "UntagResource", "ListTags") and tagged_arn:
        return [Need(action, tagged_arn)]
    name = request.param("FunctionName")
    if not name:
        return [Need(action, "*")]
    arn = function_arn(request, name, request.query.get("Qualifier"))
    result = [Need(action, arn)]
    role = request.body.get("Role")
    if request.operation in ("CreateFunction", "UpdateFunctionConfiguration") and role:
        result.append(pass_role(request, role, "lambda.amazonaws.com"))
    # Lambda guide, configuration-tags: lambda:TagResource is needed to tag on create.
    if request.operation == "CreateFunction" and request.body.get("Tags"):
        result.append(Need("lambda:TagResource", arn))
    return result


# --- IoT --------------------------------------------------------------------------------
_IOT_ACCOUNT_WIDE = {
    "ClearDefaultAuthorizer",
    "DescribeDefaultAuthorizer",
    "DescribeEndpoint",
    "ListAuthorizers",
}


def authorizer_arn(request: Request, name: str) -> str:
    return _arn(request, "iot", f"authorizer/{name}")


def _iot(request: Request, action: str) -> list[Need]:
    if request.operation in ("TagResource", "UntagResource", "ListTagsForResource"):
        return [Need(action, request.param("resourceArn") or "*")]
    name = request.param("authorizerName")
    if request.operation in _IOT_ACCOUNT_WIDE or not name:
        return [Need(action, "*")]
    arn = authorizer_arn(request, name)
    result = [Need(action, arn)]
    # IoT developer guide, tagging-iot-iam: creating a resource with tags needs iot:TagResource.
    if request.operation == "CreateAuthorizer" and request.body.get("tags"):
        result.append(Need("iot:TagResource", arn))
    return result


# --- CloudWatch Logs --------------------------------------------------------------------
def _logs_resource(request: Request) -> str:
    # [3rd] AWS's AccessDenied messages for log operations name
    # `…:log-group:<name>:log-stream:<stream>` (empty parts when absent), which a policy's
    # `log-group:<name>:*` matches.
    if request.param("resourceArn"):
        return request.param("resourceArn")
    group = request.param("logGroupName") or ""
    stream = request.param("logStreamName") or ""
    return _arn(request, "logs", f"log-group:{group}:log-stream:{stream}")


# --- DynamoDB ---------------------------------------------------------------------------
# SAR "Actions, resources, and condition keys for Amazon DynamoDB": table operations act on
# `arn:${Partition}:dynamodb:${Region}:${Account}:table/${TableName}`; the batch operations on
# each table their RequestItems name. Reads carry two condition keys (SAR; DynamoDB Developer
# Guide, "Using IAM policy conditions for fine-grained access control"):
# - `dynamodb:Select`: Query's and Scan's Select; when absent, SPECIFIC_ATTRIBUTES with a
#   projection and ALL_ATTRIBUTES without one (API reference, Query/Scan "Select"). GetItem and
#   BatchGetItem have no Select parameter: [3rd] the same rule, a projection is
#   SPECIFIC_ATTRIBUTES, none ALL_ATTRIBUTES (what the IAM User Guide's example "Allows access to
#   specific attributes" relies on when it pairs dynamodb:Attributes with dynamodb:Select).
# - `dynamodb:Attributes`: the top-level attribute names the request projects
#   (ProjectionExpression, with ExpressionAttributeNames resolved, or AttributesToGet); no value
#   without a projection, where ForAllValues would hold: hence dynamodb:Select in such policies.
# Strict: any other operation supplies neither key, so a policy conditioned on them grants it nothing.
_DYNAMODB_READS = {"GetItem", "Query", "Scan"}


def table_arn(request: Request, name: str) -> str:
    return name if name.startswith("arn:") else _arn(request, "dynamodb", f"table/{name}")


def _projected(spec: dict) -> list[str] | None:
    """The top-level attribute names a read projects; None when it projects none (all of them)."""
    expression = spec.get("ProjectionExpression")
    if expression:
        names = spec.get("ExpressionAttributeNames") or {}
        tops = (part.strip().split(".")[0].split("[")[0] for part in expression.split(","))
        return sorted({names.get(t, t) for t in tops if t})
    listed = spec.get("AttributesToGet")
    return sorted(set(listed)) if listed else None


def _read_context(spec: dict) -> dict:
    projected = _projected(spec)
    select = spec.get("Select") or ("SPECIFIC_ATTRIBUTES" if projected else "ALL_ATTRIBUTES")
    return {"dynamodb:select": [select], "dynamodb:attributes": projected or []}


def _dynamodb(request: Request, action: str) -> list[Need]:
    if request.operation in ("TagResource", "UntagResource", "ListTagsOfResource"):
        return [Need(action, request.param("ResourceArn") or "*")]
    # SAR, DynamoDB: BatchGetItem and BatchWriteItem act on the `table` resource type, each
    # table named in RequestItems (they have no TableName).
    if request.operation in ("BatchGetItem", "BatchWriteItem"):
        items = request.body.get("RequestItems")
        if not isinstance(items, dict) or not items:
            return [Need(action, "*")]
        reads = request.operation == "BatchGetItem"
        return [
            Need(action, table_arn(request, name), _read_context(spec) if reads and isinstance(spec, dict) else {})
            for name, spec in items.items()
        ]
    name = request.param("TableName")
    if not name:
        return [Need(action, "*")]
    arn = table_arn(request, name)
    context = _read_context(request.body) if request.operation in _DYNAMODB_READS else {}
    result = [Need(action, arn, context)]
    # [3rd] DynamoDB Developer Guide, "Tagging resources" / ABAC: creating a table with tags
    # needs dynamodb:TagResource as well as dynamodb:CreateTable.
    if request.operation == "CreateTable" and request.body.get("Tags"):
        result.append(Need("dynamodb:TagResource", arn))
    return result
