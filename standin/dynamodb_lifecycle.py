"""A new DynamoDB table is CREATING before it is ACTIVE, as in AWS; moto makes it ACTIVE at once.

DynamoDB API reference:
- CreateTable: "CreateTable is an asynchronous operation. Upon receiving a CreateTable request,
  DynamoDB immediately returns a response with a TableStatus of CREATING. After the table is
  created, DynamoDB sets the TableStatus to ACTIVE. You can perform read and write operations only
  on an ACTIVE table."
- DeleteTable / ResourceInUseException: "you tried to delete a table currently in the CREATING
  state".
- ResourceNotFoundException (GetItem, PutItem, Query, Scan, ...): the table "might not be
  specified correctly, or its status might not be ACTIVE".
- UpdateContinuousBackups / ContinuousBackupsUnavailableException: "Backups have not yet been
  enabled for this table" (point-in-time recovery can be turned on only once the table is ACTIVE).

For `table_create_seconds` (behaviour) after CreateTable, the table answers all of that; then it is
ACTIVE.
"""

import time

from moto.core.exceptions import JsonRESTError
from moto.dynamodb.exceptions import ERROR_TYPE_PREFIX, ResourceInUseException, ResourceNotFoundException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table

from behaviour import STATE

_ACTIVE_AT = "_standin_active_at"


class ContinuousBackupsUnavailableException(JsonRESTError):
    def __init__(self, name: str):
        super().__init__(
            ERROR_TYPE_PREFIX + "ContinuousBackupsUnavailableException",
            f"Backups have not yet been enabled for this table: {name}",
        )


def creating(table) -> bool:
    return time.monotonic() < getattr(table, _ACTIVE_AT, 0.0)


def install() -> None:
    original_create = DynamoDBBackend.create_table

    def create_table(self, name, **kwargs):
        table = original_create(self, name, **kwargs)
        setattr(table, _ACTIVE_AT, time.monotonic() + STATE.get("table_create_seconds"))
        return table

    DynamoDBBackend.create_table = create_table

    original_describe = Table.describe

    def describe(self, base_key: str = "TableDescription"):
        result = original_describe(self, base_key)
        if creating(self):
            result[base_key]["TableStatus"] = "CREATING"
        return result

    Table.describe = describe

    def refuse_while_creating(method: str, error) -> None:
        original = getattr(DynamoDBBackend, method)

        def wrapped(self, table_name, *args, **kwargs):
            try:
                table = self.get_table(table_name)
            except ResourceNotFoundException:
                table = None
            if table is not None and creating(table):
                raise error(table_name)
            return original(self, table_name, *args, **kwargs)

        setattr(DynamoDBBackend, method, wrapped)

    refuse_while_creating(
        "delete_table",
        lambda name: ResourceInUseException(f"Attempt to change a resource which is still in use: Table is being created: {name}"),
    )
    refuse_while_creating("update_continuous_backups", ContinuousBackupsUnavailableException)
    for method in ("get_item", "put_item", "delete_item", "update_item", "query", "scan"):
        refuse_while_creating(method, lambda name: ResourceNotFoundException(table_name=name))
