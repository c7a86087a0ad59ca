"""Which AWS partition a region belongs to, for every ARN the stand-in makes (aws-facts §13).

Every ARN is `arn:<partition>:…`: `aws-cn` in the China regions, `aws-us-gov` in GovCloud,
`aws` elsewhere (moto also knows the ISO partitions; its table is used so the stand-in and moto
never disagree).
"""

from moto.utilities.utils import get_partition


def partition_of(region: str) -> str:
    return get_partition(region)


def partitions() -> tuple[str, ...]:
    """The partitions an identity is usable in (see access.py)."""
    return ("aws", "aws-cn", "aws-us-gov")


def dns_suffix(partition: str) -> str:
    # The China partition's endpoints end in amazonaws.com.cn (the others used here: amazonaws.com).
    return "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"


def install() -> None:
    """Fix what moto gets wrong about partitions (its own ARNs are already partitioned)."""
    from moto.iot.models import IoTBackend

    original = IoTBackend.describe_endpoint

    def describe_endpoint(self, endpoint_type: str):
        # moto invents a new host on every call under amazonaws.com; IoT answers one stable host
        # per account, region and type, under the partition's DNS suffix.
        endpoints = self.__dict__.setdefault("standin_endpoints", {})
        if endpoint_type not in endpoints:
            endpoint = original(self, endpoint_type)
            suffix = dns_suffix(partition_of(self.region_name))
            endpoint.endpoint = endpoint.endpoint.replace(".amazonaws.com", f".{suffix}")
            endpoints[endpoint_type] = endpoint
        self.endpoint = endpoints[endpoint_type]
        return self.endpoint

    IoTBackend.describe_endpoint = describe_endpoint
