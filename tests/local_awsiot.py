"""Drives `iot-custom-auth local` with the AWS IoT Device SDK v2 for Python (`awsiotsdk`), through
its custom-authorizer builders, for tests/local.rs: the username it really sends
(`USER?x-amz-customauthorizer-name=NAME&SDK=...&Platform=...&Metadata=(...)`), its TLS and ALPN.

MQTT 5: `mqtt5_client_builder.direct_with_custom_authorizer`, which honours `port=`.
MQTT 3: `mqtt_connection_builder.direct_with_custom_authorizer` always dials 443 (aws-facts §13),
so the connection it builds gets the gateway's port set before `connect()`, which awscrt reads
then (`Connection.port` "may be changed at runtime").

Usage: local_awsiot.py '{"host": "localhost", "port": ..., "ca": ..., "protocol": 5,
        "username": ..., "password": ..., "authorizer": ... or null, "topic": ...}'
Prints {"connected": bool, "reason": CONNACK code or error, "puback": PUBACK reason or null}.
"""

import json
import sys
import threading

from awscrt import mqtt, mqtt5
from awsiot import mqtt5_client_builder, mqtt_connection_builder

WAIT = 10.0


def mqtt5_case(args):
    connected = threading.Event()
    result = {"connected": False, "reason": None, "puback": None}

    def on_success(data):
        result["connected"] = True
        result["reason"] = int(data.connack_packet.reason_code)
        connected.set()

    def on_failure(data):
        packet = data.connack_packet
        result["reason"] = int(packet.reason_code) if packet else str(data.exception)
        connected.set()

    client = mqtt5_client_builder.direct_with_custom_authorizer(
        endpoint=args["host"],
        port=args["port"],
        ca_filepath=args["ca"],
        client_id=args.get("client_id", args["username"]),
        auth_username=args["username"],
        auth_authorizer_name=args.get("authorizer"),
        auth_password=args["password"].encode(),
        on_lifecycle_connection_success=on_success,
        on_lifecycle_connection_failure=on_failure,
    )
    client.start()
    connected.wait(WAIT)
    if result["connected"]:
        packet = mqtt5.PublishPacket(
            topic=args["topic"], payload=b"from the AWS SDK", qos=mqtt5.QoS.AT_LEAST_ONCE
        )
        puback = client.publish(packet).result(WAIT).puback
        result["puback"] = int(puback.reason_code)
    client.stop()
    return result


def mqtt3_case(args):
    result = {"connected": False, "reason": None, "puback": None}
    connection = mqtt_connection_builder.direct_with_custom_authorizer(
        endpoint=args["host"],
        ca_filepath=args["ca"],
        client_id=args.get("client_id", args["username"]),
        auth_username=args["username"],
        auth_authorizer_name=args.get("authorizer"),
        auth_password=args["password"],
    )
    connection.port = args["port"]
    try:
        connection.connect().result(WAIT)
    except Exception as e:  # the SDK reports a refusal as an exception holding the code
        code = e.args[0] if e.args else e
        result["reason"] = int(code) if isinstance(code, mqtt.ConnectReturnCode) else str(e)
        return result
    result["connected"] = True
    result["reason"] = 0
    future, _ = connection.publish(
        topic=args["topic"], payload="from the AWS SDK", qos=mqtt.QoS.AT_LEAST_ONCE
    )
    future.result(WAIT)
    result["puback"] = 0
    connection.disconnect().result(WAIT)
    return result


if __name__ == "__main__":
    arguments = json.loads(sys.argv[1])
    case = mqtt5_case if arguments.get("protocol") == 5 else mqtt3_case
    print(json.dumps(case(arguments)))
