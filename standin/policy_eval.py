"""Identity-based IAM policy evaluation, strict where the stand-in cannot know the answer.

AWS's logic for one identity in one account: an explicit Deny in any policy wins; otherwise some
Allow must match; otherwise the request is implicitly denied. A statement matches when its
Action/NotAction, Resource/NotResource and every Condition match (IAM User Guide,
"Policy evaluation logic" and "IAM JSON policy elements").

Strictness: a condition operator or key the stand-in cannot evaluate makes an Allow statement not
apply and a Deny statement apply, so an unknown condition never grants anything.
"""

import fnmatch
import json
import re
from dataclasses import dataclass, field
from enum import Enum


class Decision(Enum):
    ALLOW = "allow"
    IMPLICIT_DENY = "implicit deny"
    EXPLICIT_DENY = "explicit deny"


@dataclass(frozen=True)
class Need:
    """One authorization the request needs: an action on a resource, with its context keys."""

    action: str
    resource: str
    # Condition keys known for this request, lower-case names -> list of string values.
    context: dict = field(default_factory=dict)


def evaluate(policies: list, need: Need) -> Decision:
    allowed = False
    for policy in policies:
        for statement in _statements(policy):
            effect = statement.get("Effect")
            if not _matches_action(statement, need.action) or not _matches_resource(statement, need.resource):
                continue
            condition = _condition_result(statement.get("Condition"), need.context)
            if effect == "Deny" and condition is not False:
                # An unevaluable condition on a Deny keeps the Deny (strict).
                return Decision.EXPLICIT_DENY
            if effect == "Allow" and condition is True:
                allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


def _statements(policy) -> list[dict]:
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except json.JSONDecodeError:
            return []
    statements = policy.get("Statement", []) if isinstance(policy, dict) else []
    statements = [statements] if isinstance(statements, dict) else statements
    return [s for s in statements if isinstance(s, dict)]


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    # IAM wildcards: `*` any run of characters, `?` one character; nothing else is special.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _matches_action(statement: dict, action: str) -> bool:
    # Action names are case-insensitive.
    if "Action" in statement:
        return any(_glob(p, action, ignore_case=True) for p in _as_list(statement["Action"]))
    if "NotAction" in statement:
        return not any(_glob(p, action, ignore_case=True) for p in _as_list(statement["NotAction"]))
    return False


def _matches_resource(statement: dict, resource: str) -> bool:
    # ARNs are compared case-sensitively. Policy variables (${aws:username}) are not substituted,
    # so a statement using one matches only literally: it cannot grant more than it says.
    if "Resource" in statement:
        return any(_glob(p, resource) for p in _as_list(statement["Resource"]))
    if "NotResource" in statement:
        return not any(_glob(p, resource) for p in _as_list(statement["NotResource"]))
    return False


# --- conditions ---------------------------------------------------------------------------
def _string_equals(expected: str, actual: str) -> bool:
    return expected == actual


def _string_equals_ignore_case(expected: str, actual: str) -> bool:
    return expected.lower() == actual.lower()


def _string_like(expected: str, actual: str) -> bool:
    return _glob(expected, actual)


def _arn_like(expected: str, actual: str) -> bool:
    # Each of the six colon-separated parts is matched on its own (IAM: ARN condition operators).
    expected_parts, actual_parts = expected.split(":", 5), actual.split(":", 5)
    if len(expected_parts) != 6 or len(actual_parts) != 6:
        return False
    return all(_glob(e, a) for e, a in zip(expected_parts, actual_parts))


def _bool(expected: str, actual: str) -> bool:
    return expected.lower() == actual.lower()


# operator -> (comparison, negated)
_OPERATORS = {
    "stringequals": (_string_equals, False),
    "stringnotequals": (_string_equals, True),
    "stringequalsignorecase": (_string_equals_ignore_case, False),
    "stringnotequalsignorecase": (_string_equals_ignore_case, True),
    "stringlike": (_string_like, False),
    "stringnotlike": (_string_like, True),
    "arnequals": (_arn_like, False),
    "arnlike": (_arn_like, False),
    "arnnotequals": (_arn_like, True),
    "arnnotlike": (_arn_like, True),
    "bool": (_bool, False),
}


def _condition_result(condition, context: dict) -> bool | None:
    """True when every condition holds, False when one does not, None when one cannot be evaluated."""
    if not condition:
        return True
    if not isinstance(condition, dict):
        return None
    results = []
    for operator, keys in condition.items():
        if not isinstance(keys, dict):
            return None
        for key, expected in keys.items():
            results.append(_one_condition(operator, key, _as_list(expected), context))
    if False in results:
        return False
    return None if None in results else True


def _one_condition(operator: str, key: str, expected: list, context: dict) -> bool | None:
    name = operator.lower()
    set_operator = None
    for prefix in ("forallvalues:", "foranyvalue:"):
        if name.startswith(prefix):
            set_operator, name = prefix[:-1], name[len(prefix) :]
    if_exists = name.endswith("ifexists")
    if if_exists:
        name = name[: -len("ifexists")]
    if set_operator is not None:
        return _set_condition(set_operator, name, key, expected, context)
    if name == "null":
        if key.lower() not in context and not _known_absent(key):
            return None
        present = key.lower() in context
        return all(str(e).lower() == ("false" if present else "true") for e in expected)
    if name not in _OPERATORS:
        return None  # numeric, date, IP, binary operators: unknown
    compare, negated = _OPERATORS[name]
    key_name = key.lower()
    if key_name not in context:
        if not _known_absent(key):
            return None  # a key the stand-in does not supply: cannot evaluate
        # An absent key: ...IfExists holds; a negated operator holds; a positive one fails.
        return True if if_exists or negated else False
    actual = context[key_name]
    if not actual:
        # Supplied as empty: the request has no value for it, which the stand-in knows.
        return True if if_exists or negated else False
    matched = any(compare(str(e), str(a)) for e in expected for a in actual)
    return not matched if negated else matched


def _set_condition(set_operator: str, name: str, key: str, expected: list, context: dict) -> bool | None:
    """ForAllValues:/ForAnyValue: on a multivalued key (IAM User Guide, "Single-valued vs.
    multivalued context keys"): ForAllValues holds when every value in the request matches some
    value of the condition, and also when the request has no value for the key; ForAnyValue holds
    when at least one does, and never when the request has none."""
    key_name = key.lower()
    # Strict: on a single-valued key AWS's verdict depends on details the stand-in does not model
    # (and the IAM User Guide advises against it), so only the multivalued keys are evaluated.
    if name not in _OPERATORS or key_name not in _MULTIVALUED_KEYS:
        return None
    compare, negated = _OPERATORS[name]
    if key_name not in context and not _known_absent(key):
        return None
    actual = context.get(key_name) or []

    def one(value) -> bool:
        matched = any(compare(str(e), str(value)) for e in expected)
        return not matched if negated else matched

    if set_operator == "forallvalues":
        return all(one(a) for a in actual)
    return any(one(a) for a in actual)


# Multivalued keys the stand-in supplies (for the requests iam_actions.py says carry them).
_MULTIVALUED_KEYS = {"dynamodb:attributes"}

# Keys the stand-in understands even when a request does not carry them, so their absence is a
# fact (AWS: a key that is not in the request context is absent) rather than "unknown".
_SUPPLIED_KEYS = {
    "iam:passedtoservice",
    "iam:policyarn",
    "aws:principalarn",
    "aws:principalaccount",
    "aws:principaltype",
    "aws:username",
    "aws:userid",
    "aws:requestedregion",
}


def _known_absent(key: str) -> bool:
    return key.lower() in _SUPPLIED_KEYS
