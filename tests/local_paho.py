"""Drives `iot-custom-auth local` with paho-mqtt, the client the manual recipe uses, for
tests/local.rs. One scenario per run; prints one JSON object with what the clients saw.

Usage: local_paho.py SCENARIO '{"host": ..., "port": ..., "ca": ..., ...}'
"""

import json
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt

# Longer than the authorizer's 5 s limit, so a timed-out login still gets its CONNACK.
WAIT = 8.0


class Device:
    """One paho client that records what happens to it."""

    def __init__(self, args, username, password, client_id, alpn=("mqtt",)):
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.subscribed = threading.Event()
        self.acked = threading.Event()
        self.connack = None
        self.granted = None
        self.messages = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        context = ssl.create_default_context(cafile=args["ca"])
        if alpn:
            context.set_alpn_protocols(list(alpn))
        self.client.tls_set_context(context)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.closed.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = lambda *a: self.acked.set()
        self.client.on_message = lambda c, u, m: self.messages.append(
            {"topic": m.topic, "payload": m.payload.decode()}
        )
        self.args = args

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = reason_code.value
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.granted = [rc.value for rc in reason_codes]
        self.subscribed.set()

    def connect(self):
        """The CONNACK code, or None when the connection closed without one."""
        try:
            self.client.connect(self.args["host"], self.args["port"], keepalive=60)
        except (ssl.SSLError, OSError) as e:
            return {"error": str(e)}
        self.client.loop_start()
        wait_any(self.connected, self.closed)
        return self.connack

    def subscribe(self, topic_filter):
        self.client.subscribe(topic_filter, qos=1)
        # IoT answers a refused subscription by disconnecting, so either may end the wait.
        wait_any(self.subscribed, self.closed)
        return self.granted

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_any(*events):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not any(e.is_set() for e in events):
        time.sleep(0.01)


def device(args, role, alpn=("mqtt",)):
    d = args[role]
    return Device(args, d["username"], d["password"], d.get("client_id", d["username"]), alpn)


def connect(args):
    """One login: the CONNACK code paho reports."""
    d = device(args, "device", alpn=tuple(args.get("alpn", ["mqtt"])))
    result = {"connack": d.connect()}
    d.stop()
    return result


def pubsub(args):
    """A subscriber, then a publisher: what was acknowledged, delivered and disconnected."""
    sub = device(args, "subscriber")
    result = {"subscriber_connack": sub.connect(), "granted": sub.subscribe(args["filter"])}
    pub = device(args, "publisher")
    result["publisher_connack"] = pub.connect()
    pub.client.publish(args["topic"], args["payload"], qos=1)
    wait_any(pub.acked, pub.closed)
    time.sleep(0.3)  # time for a delivery that should not happen to show up
    result["puback"] = pub.acked.is_set()
    result["publisher_disconnected"] = pub.closed.is_set()
    result["received"] = sub.messages
    result["subscriber_disconnected"] = sub.closed.is_set()
    pub.stop()
    sub.stop()
    return result


def will(args):
    """A publisher with a last will whose connection breaks: the subscriber gets the will."""
    sub = device(args, "subscriber")
    result = {"subscriber_connack": sub.connect(), "granted": sub.subscribe(args["filter"])}
    pub = device(args, "publisher")
    pub.client.will_set(args["topic"], args["payload"], qos=1)
    result["publisher_connack"] = pub.connect()
    pub.client.loop_stop()
    pub.client.socket().close()  # no DISCONNECT: the broker must publish the will
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not sub.messages:
        time.sleep(0.01)
    result["received"] = sub.messages
    sub.stop()
    return result


def takeover(args):
    """Two connections with the same client ID: the first must be closed."""
    first = device(args, "device")
    second = device(args, "device")
    result = {"first_connack": first.connect(), "second_connack": second.connect()}
    first.closed.wait(WAIT)
    result["first_disconnected"] = first.closed.is_set()
    result["second_disconnected"] = second.closed.is_set()
    first.stop()
    second.stop()
    return result


if __name__ == "__main__":
    scenario, arguments = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"connect": connect, "pubsub": pubsub, "will": will, "takeover": takeover}[scenario](arguments)))
