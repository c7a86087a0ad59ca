"""IoT custom-authorizer control plane and IoT tagging, which moto lacks (aws-facts §1).

Each operation is attached to `moto.iot.responses.IoTResponse` under its snake_case
name: moto routes requests by botocore's model and calls the method of that name.
State lives on moto's per-account, per-region IoT backend object, so moto's reset
wipes it together with everything else.
"""

import base64
import re
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime

from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow
from moto.iot.exceptions import (
    DeleteConflictException,
    InvalidRequestException,
    IoTClientError,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from moto.iot.responses import IoTResponse

import authorizer_invoke
import lambda_lifecycle
from partitions import partition_of

_NAME = re.compile(r"[\w=,@-]+", re.ASCII)
_TOKEN_KEY_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_KEY_NAME = re.compile(r"[a-zA-Z0-9:_-]+")
# The model's TagKey pattern is ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$; \w and \s cover L, N, Z.
_TAG_KEY = re.compile(r"[\w\s.:/=+\-@]*")
_STATUSES = ("ACTIVE", "INACTIVE")
# [silent] The model gives pageSize 1..250 but no default; 25 is IoT's usual page.
_DEFAULT_PAGE_SIZE = 25

# Werkzeug serves requests on threads; authorizer state changes are serialised.
_lock = threading.Lock()


class InvalidResponseException(IoTClientError):
    def __init__(self, msg: str):
        self.code = 400
        super().__init__("InvalidResponseException", msg)


class ResourceConflictException(IoTClientError):
    # TestInvokeAuthorizer of a Pending function: the operation conflicts with the function's
    # state, in Lambda's own words (see lambda_lifecycle.py).
    def __init__(self, msg: str):
        self.code = 409
        super().__init__("ResourceConflictException", msg)


@dataclass
class Authorizer:
    name: str
    arn: str
    function_arn: str
    status: str
    signing_disabled: bool
    token_key_name: str | None
    token_signing_public_keys: dict[str, str]
    enable_caching_for_http: bool
    tags: dict[str, str]
    creation_date: datetime = field(default_factory=utcnow)
    last_modified_date: datetime = field(default_factory=utcnow)

    def description(self) -> dict:
        described = {
            "authorizerName": self.name,
            "authorizerArn": self.arn,
            "authorizerFunctionArn": self.function_arn,
            "status": self.status,
            "creationDate": self.creation_date,
            "lastModifiedDate": self.last_modified_date,
            "signingDisabled": self.signing_disabled,
            "enableCachingForHttp": self.enable_caching_for_http,
        }
        if self.token_key_name:
            described["tokenKeyName"] = self.token_key_name
        if self.token_signing_public_keys:
            described["tokenSigningPublicKeys"] = self.token_signing_public_keys
        return described

    def check_signing_config(self) -> None:
        # Signing is on unless disabled at creation, and then needs its keys
        # (aws-facts §1; message as quoted in aws/aws-cdk#11963).
        if self.signing_disabled:
            return
        if not self.token_signing_public_keys:
            raise InvalidRequestException(
                "Invalid request provided: Token signing keys map for authorizer "
                f"{self.name} cannot be null"
            )
        if not self.token_key_name:
            raise InvalidRequestException(
                f"Invalid request provided: Token key name for authorizer {self.name} cannot be null"
            )


class AuthorizerStore:
    """Authorizers and the default authorizer of one account and region."""

    def __init__(self):
        self.authorizers: dict[str, Authorizer] = {}
        self.default_name: str | None = None

    def get(self, name: str) -> Authorizer:
        if name not in self.authorizers:
            raise ResourceNotFoundException(f"Authorizer {name} does not exist")
        return self.authorizers[name]

    def by_arn(self, arn: str) -> Authorizer:
        match = re.fullmatch(r"arn:aws[\w-]*:iot:[^:]+:\d{12}:authorizer/(.+)", arn or "")
        if match is None:
            # The stand-in tags authorizers only; other IoT resources have no tag store here.
            raise InvalidRequestException(f"Tagging is not supported for resource {arn}")
        return self.get(match.group(1))


def install() -> None:
    for operation in (
        create_authorizer,
        describe_authorizer,
        update_authorizer,
        delete_authorizer,
        list_authorizers,
        set_default_authorizer,
        describe_default_authorizer,
        clear_default_authorizer,
        test_invoke_authorizer,
        list_tags_for_resource,
        tag_resource,
        untag_resource,
    ):
        setattr(IoTResponse, operation.__name__, operation)


def _store(response: IoTResponse) -> AuthorizerStore:
    backend = response.iot_backend
    if not hasattr(backend, "standin_authorizers"):
        backend.standin_authorizers = AuthorizerStore()
    return backend.standin_authorizers


def _name_param(response: IoTResponse) -> str:
    return _validated_name(response._get_param("authorizerName"))


def _validated_name(name) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 128 or not _NAME.fullmatch(name):
        raise _validation_error(name, "authorizerName", r"regular expression pattern: [\w=,@-]+")
    return name


def _validation_error(value, member: str, constraint: str) -> InvalidRequestException:
    # The wording of AWS's model-validation failures.
    return InvalidRequestException(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: Member must satisfy {constraint}"
    )


def _status(value, required: bool) -> str | None:
    if value is None and not required:
        return None
    if value not in _STATUSES:
        raise _validation_error(value, "status", "enum value set: [ACTIVE, INACTIVE]")
    return value


def _token_key_name(value) -> str | None:
    if value is not None and not (1 <= len(value) <= 128 and _TOKEN_KEY_NAME.fullmatch(value)):
        raise _validation_error(value, "tokenKeyName", "regular expression pattern: [a-zA-Z0-9_-]+")
    return value


def _public_keys(value) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequestException("tokenSigningPublicKeys must be a map")
    for key, pem in value.items():
        if not (1 <= len(key) <= 128 and _KEY_NAME.fullmatch(key)):
            raise _validation_error(key, "tokenSigningPublicKeys", "regular expression pattern: [a-zA-Z0-9:_-]+")
        if not isinstance(pem, str) or len(pem) > 5120:
            raise _validation_error("...", "tokenSigningPublicKeys", "length less than or equal to 5120")
    return value


def _function_arn(value) -> str:
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise _validation_error(value, "authorizerFunctionArn", "length less than or equal to 2048")
    return value


def _tags(value) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise InvalidRequestException("tags must be a list of {Key, Value}")
    tags = {}
    for tag in value:
        key, tag_value = tag.get("Key"), tag.get("Value", "")
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or not _TAG_KEY.fullmatch(key):
            raise _validation_error(key, "tags.member.Key", r"regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$")
        if not isinstance(tag_value, str) or len(tag_value) > 256:
            raise _validation_error(tag_value, "tags.member.Value", "length less than or equal to 256")
        tags[key] = tag_value
    return tags


def _summary(authorizer: Authorizer) -> dict:
    return {"authorizerName": authorizer.name, "authorizerArn": authorizer.arn}


# --- operations ------------------------------------------------------------
def create_authorizer(self: IoTResponse) -> ActionResult:
    name = _name_param(self)
    arn = f"arn:{partition_of(self.region)}:iot:{self.region}:{self.current_account}:authorizer/{name}"
    authorizer = Authorizer(
        name=name,
        arn=arn,
        function_arn=_function_arn(self._get_param("authorizerFunctionArn")),
        # [silent] The model has no default status; Terraform and the console
        # default to ACTIVE, so the stand-in does too.
        status=_status(self._get_param("status"), required=False) or "ACTIVE",
        signing_disabled=self._get_param("signingDisabled") is True,
        token_key_name=_token_key_name(self._get_param("tokenKeyName")),
        token_signing_public_keys=_public_keys(self._get_param("tokenSigningPublicKeys")) or {},
        enable_caching_for_http=self._get_param("enableCachingForHttp") is True,
        tags=_tags(self._get_param("tags")),
    )
    authorizer.check_signing_config()
    with _lock:
        store = _store(self)
        if name in store.authorizers:
            raise ResourceAlreadyExistsException(f"Authorizer {name} already exists", name, arn)
        store.authorizers[name] = authorizer
    return ActionResult(_summary(authorizer))


def describe_authorizer(self: IoTResponse) -> ActionResult:
    authorizer = _store(self).get(_name_param(self))
    return ActionResult({"authorizerDescription": authorizer.description()})


def update_authorizer(self: IoTResponse) -> ActionResult:
    # The model's UpdateAuthorizerRequest has no signingDisabled and no tags:
    # a signingDisabled member sent anyway is ignored, as unmodelled members are.
    name = _name_param(self)
    function_arn = self._get_param("authorizerFunctionArn")
    status = _status(self._get_param("status"), required=False)
    token_key_name = _token_key_name(self._get_param("tokenKeyName"))
    public_keys = _public_keys(self._get_param("tokenSigningPublicKeys"))
    caching = self._get_param("enableCachingForHttp")
    with _lock:
        current = _store(self).get(name)
        updated = replace(current)
        if function_arn is not None:
            updated.function_arn = _function_arn(function_arn)
        if status is not None:
            updated.status = status
        if token_key_name is not None:
            updated.token_key_name = token_key_name
        if public_keys is not None:
            updated.token_signing_public_keys = public_keys
        if caching is not None:
            updated.enable_caching_for_http = caching is True
        updated.check_signing_config()
        updated.last_modified_date = utcnow()
        _store(self).authorizers[name] = updated
    return ActionResult(_summary(updated))


def delete_authorizer(self: IoTResponse) -> EmptyResult:
    name = _name_param(self)
    with _lock:
        store = _store(self)
        authorizer = store.get(name)
        # [silent] AWS documents that an ACTIVE authorizer cannot be deleted
        # (aws-facts §1) but not with which code; DeleteConflictException (409,
        # "attached to one or more resources") is the model's closest error.
        if authorizer.status == "ACTIVE":
            raise DeleteConflictException(
                f"Authorizer {name} is ACTIVE. Set its status to INACTIVE before deleting it."
            )
        # [silent] Deleting the default authorizer is undocumented; refusing it
        # with the same code forces callers to clear the default first.
        if store.default_name == name:
            raise DeleteConflictException(
                f"Authorizer {name} is the default authorizer. Clear the default authorizer before deleting it."
            )
        del store.authorizers[name]
    return EmptyResult()


def list_authorizers(self: IoTResponse) -> ActionResult:
    page_size = _page_size(self._get_param("pageSize"))
    marker = self._get_param("marker")
    # [silent] The model only says isAscendingOrder returns names "in ascending
    # alphabetical order"; without it the stand-in lists them descending.
    ascending = str(self._get_param("isAscendingOrder", "false")).lower() == "true"
    status = _status(self._get_param("status"), required=False)
    with _lock:
        names = sorted(_store(self).authorizers, reverse=not ascending)
        listed = [_store(self).authorizers[n] for n in names]
    if status:
        listed = [a for a in listed if a.status == status]
    if marker:
        after = _decode_marker(marker)
        listed = [a for a in listed if (a.name > after if ascending else a.name < after)]
    page = listed[:page_size]
    result = {"authorizers": [_summary(a) for a in page]}
    if len(listed) > page_size:
        result["nextMarker"] = base64.b64encode(page[-1].name.encode()).decode()
    return ActionResult(result)


def _page_size(value) -> int:
    if value is None:
        return _DEFAULT_PAGE_SIZE
    if not str(value).isdigit() or not 1 <= int(value) <= 250:
        raise _validation_error(value, "pageSize", "value between 1 and 250")
    return int(value)


def _decode_marker(marker: str) -> str:
    try:
        return base64.b64decode(marker, validate=True).decode()
    except ValueError:
        raise InvalidRequestException(f"Invalid marker: {marker}")


def set_default_authorizer(self: IoTResponse) -> ActionResult:
    name = _name_param(self)
    with _lock:
        store = _store(self)
        authorizer = store.get(name)
        # [silent] When SetDefaultAuthorizer raises its modelled
        # ResourceAlreadyExistsException is undocumented; the stand-in raises it
        # when another authorizer is already the default, so callers clear first
        # (the safe pattern of aws-facts §1). Setting the same one again succeeds.
        if store.default_name not in (None, name):
            current = store.authorizers[store.default_name]
            raise ResourceAlreadyExistsException(
                f"Default authorizer {current.name} already exists", current.name, current.arn
            )
        # [silent] Whether an INACTIVE authorizer can become the default is
        # undocumented; it could serve no connection, so the stand-in refuses.
        if authorizer.status != "ACTIVE":
            raise InvalidRequestException(f"Authorizer {name} is not ACTIVE")
        store.default_name = name
    return ActionResult(_summary(authorizer))


def describe_default_authorizer(self: IoTResponse) -> ActionResult:
    store = _store(self)
    # [silent] Inferred from the model: 404 when no default authorizer is set.
    if store.default_name is None:
        raise ResourceNotFoundException("No default authorizer is set")
    return ActionResult({"authorizerDescription": store.get(store.default_name).description()})


def clear_default_authorizer(self: IoTResponse) -> EmptyResult:
    # [silent] Clearing when none is set answers success (the model lists
    # ResourceNotFound, but a clear that is already done harms no caller).
    with _lock:
        _store(self).default_name = None
    return EmptyResult()


def test_invoke_authorizer(self: IoTResponse) -> ActionResult:
    authorizer = _store(self).get(_name_param(self))
    request = {
        key: self._get_param(key)
        for key in ("token", "tokenSignature", "mqttContext", "tlsContext", "httpContext")
        if self._get_param(key) is not None
    }
    try:
        return ActionResult(authorizer_invoke.test_invoke(authorizer, request, self.current_account, self.region))
    except authorizer_invoke.CannotInvoke as err:
        # [silent] AWS does not document TestInvokeAuthorizer's error when IoT
        # cannot invoke the function (no permission, no function); the stand-in
        # answers InvalidRequestException naming the cause.
        raise InvalidRequestException(str(err))
    except lambda_lifecycle.FunctionPending as err:
        raise ResourceConflictException(str(err))
    except authorizer_invoke.BadReply as err:
        raise InvalidResponseException(str(err))


def list_tags_for_resource(self: IoTResponse) -> ActionResult:
    authorizer = _store(self).by_arn(self._get_param("resourceArn"))
    return ActionResult({"tags": [{"Key": k, "Value": v} for k, v in authorizer.tags.items()]})


def tag_resource(self: IoTResponse) -> EmptyResult:
    tags = _tags(self._get_param("tags"))
    with _lock:
        _store(self).by_arn(self._get_param("resourceArn")).tags.update(tags)
    return EmptyResult()


def untag_resource(self: IoTResponse) -> EmptyResult:
    keys = self._get_param("tagKeys") or []
    with _lock:
        authorizer = _store(self).by_arn(self._get_param("resourceArn"))
        for key in keys:
            authorizer.tags.pop(key, None)
    return EmptyResult()
