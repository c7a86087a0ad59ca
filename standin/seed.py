"""`POST /_standin/dynamodb/seed`: bulk items for benchmarks, written into moto's backend directly.

Writing a million items through the API takes moto tens of minutes; a benchmark of a large table
only needs the items to exist. Body: {"table", "region"?, "count", "start"?, "prefix"?, "item"},
where `item` holds every attribute but the key in DynamoDB JSON; item i (start <= i < start +
count) gets `username` = prefix + i
and, unless `item` has them, `clientIds` = [username] (the CLI's default).
"""

from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType, Item


class SeedError(ValueError):
    """A seed request that cannot be served."""


def seed(spec) -> dict:
    if not isinstance(spec, dict):
        raise SeedError('a seed request is {"table", "count", "item", "prefix"?, "region"?}')
    table, count, item = spec.get("table"), spec.get("count"), spec.get("item")
    prefix, region, start = spec.get("prefix", "device"), spec.get("region", "us-east-1"), spec.get("start", 0)
    if not isinstance(table, str) or not isinstance(count, int) or count < 0 or not isinstance(item, dict):
        raise SeedError("table (string), count (integer >= 0) and item (DynamoDB JSON) are required")
    if not isinstance(start, int) or start < 0:
        raise SeedError("start must be an integer >= 0")
    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][region]
    if table not in backend.tables:
        raise SeedError(f"no table {table} in {region}")
    target = backend.tables[table]
    if count == 0:
        return {"table": table, "items": len(target.items)}

    def attrs(i: int) -> dict:
        username = f"{prefix}{i}"
        return {"clientIds": {"L": [{"S": username}]}, **item, "username": {"S": username}}

    # The first item goes through moto's PutItem checks; the rest are built like it, sharing the
    # template's attribute values (nothing mutates a stored item in place), which makes a
    # million items a matter of seconds rather than many minutes.
    first = target.put_item(attrs(start))
    shared = {k: v for k, v in first.attrs.items() if k not in ("username", "clientIds")}
    for i in range(start + 1, start + count):
        raw = attrs(i)
        key = DynamoType(raw["username"])
        stored = Item.__new__(Item)
        stored.hash_key, stored.range_key = key, None
        stored.attrs = type(first.attrs)()
        stored.attrs.update(shared)
        stored.attrs["username"] = key
        stored.attrs["clientIds"] = DynamoType(raw["clientIds"])
        target.items[key] = stored
    return {"table": table, "items": len(target.items)}
