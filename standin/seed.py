"""`POST /_standin/dynamodb/seed`: bulk items for benchmarks, written into moto's backend directly.

Writing a million items through the API takes moto tens of minutes; a benchmark of a large table
only needs the items to exist. Body: {"table", "region"?, "count", "prefix"?, "item"}, where
`item` holds every attribute but the key in DynamoDB JSON; item i gets `username` = prefix + i
and, unless `item` has them, `clientIds` = [username] (the CLI's default).
"""

from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends


class SeedError(ValueError):
    """A seed request that cannot be served."""


def seed(spec) -> dict:
    if not isinstance(spec, dict):
        raise SeedError('a seed request is {"table", "count", "item", "prefix"?, "region"?}')
    table, count, item = spec.get("table"), spec.get("count"), spec.get("item")
    prefix, region = spec.get("prefix", "device"), spec.get("region", "us-east-1")
    if not isinstance(table, str) or not isinstance(count, int) or count < 0 or not isinstance(item, dict):
        raise SeedError("table (string), count (integer >= 0) and item (DynamoDB JSON) are required")
    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][region]
    if table not in backend.tables:
        raise SeedError(f"no table {table} in {region}")
    target = backend.tables[table]
    for i in range(count):
        username = f"{prefix}{i}"
        target.put_item({"clientIds": {"L": [{"S": username}]}, **item, "username": {"S": username}})
    return {"table": table, "items": len(target.items)}
