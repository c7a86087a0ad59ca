"""Drives `iot-custom-auth local` with paho-mqtt, the client the manual recipe uses, for
tests/local.rs, over MQTT 3.1.1 or 5 ("protocol": 4 or 5). One scenario per run; prints one JSON
object with what the clients saw. Reason codes are MQTT 5's numbers (paho maps 3.1.1's CONNACK
codes onto them: 5 "not authorized" becomes 135).

Usage: local_paho.py SCENARIO '{"host": ..., "port": ..., "ca": ..., "protocol": 5, ...}'
"""

import json
import socket
import ssl
import struct
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

# Longer than the authorizer's 5 s limit, so a timed-out login still gets its CONNACK.
WAIT = 8.0


class Device:
    """One paho client that records what happens to it."""

    def __init__(self, args, username, password, client_id, alpn=("mqtt",), clean=True):
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.subscribed = threading.Event()
        self.acked = threading.Event()
        self.connack = None
        self.session_present = None
        self.granted = None
        self.puback = None
        self.disconnect_reason = None
        self.messages = []
        self.v5 = args.get("protocol", 4) == 5
        options = {}
        if not self.v5:
            options["clean_session"] = clean
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
            **options,
        )
        self.clean = clean
        context = ssl.create_default_context(cafile=args["ca"])
        if alpn:
            context.set_alpn_protocols(list(alpn))
        self.client.tls_set_context(context)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.args = args

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = reason_code.value
        self.session_present = flags.session_present
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = reason_code.value if reason_code is not None else None
        self.closed.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.granted = [rc.value for rc in reason_codes]
        self.subscribed.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self.puback = reason_code.value
        self.acked.set()

    def _on_message(self, client, userdata, m):
        seen = {"topic": m.topic, "payload": m.payload.decode()}
        if m.retain:
            seen["retain"] = True
        p = m.properties
        if self.v5 and p is not None:
            for name in ("UserProperty", "ResponseTopic", "ContentType"):
                if hasattr(p, name):
                    seen[name] = getattr(p, name)
            if hasattr(p, "CorrelationData"):
                seen["CorrelationData"] = p.CorrelationData.decode()
        self.messages.append(seen)

    def connect(self, session_expiry=None):
        """The CONNACK code, or None when the connection closed without one."""
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            if session_expiry:
                properties.SessionExpiryInterval = session_expiry
        try:
            options = {"clean_start": self.clean} if self.v5 else {}
            self.client.connect(
                self.args["host"], self.args["port"], keepalive=60, properties=properties, **options
            )
        except (ssl.SSLError, OSError) as e:
            return {"error": str(e)}
        self.client.loop_start()
        wait_any(self.connected, self.closed)
        return self.connack

    def subscribe(self, topic_filter, qos=1):
        self.subscribed.clear()
        self.client.subscribe(topic_filter, qos=qos)
        # IoT answers a refused 3.1.1 subscription by disconnecting, so either may end the wait.
        wait_any(self.subscribed, self.closed)
        return self.granted

    def publish(self, topic, payload, qos=1, retain=False, properties=None):
        self.acked.clear()
        self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos:
            wait_any(self.acked, self.closed)

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_any(*events):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not any(e.is_set() for e in events):
        time.sleep(0.01)


def wait_for(condition):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not condition():
        time.sleep(0.01)


def device(args, role, alpn=("mqtt",), clean=True):
    d = args[role]
    return Device(
        args, d["username"], d["password"], d.get("client_id", d["username"]), alpn, clean
    )


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
    properties = None
    if pub.v5:
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = [("site", "lab")]
        properties.ResponseTopic = "telemetry/replies"
        properties.CorrelationData = b"req-1"
        properties.ContentType = "text/plain"
    pub.publish(args["topic"], args["payload"], properties=properties)
    time.sleep(0.3)  # time for a delivery that should not happen to show up
    result["puback"] = pub.acked.is_set()
    result["puback_reason"] = pub.puback
    result["publisher_disconnected"] = pub.closed.is_set()
    result["publisher_disconnect_reason"] = pub.disconnect_reason
    result["received"] = sub.messages
    result["subscriber_disconnected"] = sub.closed.is_set()
    result["subscriber_disconnect_reason"] = sub.disconnect_reason
    pub.stop()
    sub.stop()
    return result


def shared(args):
    """Two members of one shared subscription: each message reaches one of them."""
    subs = [device(args, "subscriber"), device(args, "subscriber2")]
    result = {"granted": []}
    for sub in subs:
        sub.connect()
        result["granted"].append(sub.subscribe(args["filter"]))
    pub = device(args, "publisher")
    pub.connect()
    count = args["count"]
    for i in range(count):
        pub.publish(args["topic"], str(i))
    wait_for(lambda: sum(len(s.messages) for s in subs) >= count)
    time.sleep(0.2)
    result["received"] = [len(s.messages) for s in subs]
    for d in [pub, *subs]:
        d.stop()
    return result


def retained(args):
    """A retained message reaches a later subscriber; an empty retained payload deletes it."""
    pub = device(args, "publisher")
    pub.connect()
    pub.publish(args["topic"], args["payload"], retain=True)
    later = device(args, "subscriber")
    later.connect()
    result = {"granted": later.subscribe(args["filter"])}
    wait_for(lambda: later.messages)
    result["received"] = later.messages
    later.stop()
    pub.publish(args["topic"], b"", retain=True)
    last = device(args, "subscriber")
    last.connect()
    last.subscribe(args["filter"])
    time.sleep(0.5)
    result["after_delete"] = last.messages
    last.stop()
    pub.stop()
    return result


def persistent(args):
    """A persistent session's QoS 1 messages, published while it was away, after a reconnect."""
    sub = device(args, "subscriber", clean=False)
    result = {"first_connack": sub.connect(session_expiry=300)}
    result["granted"] = sub.subscribe(args["filter"])
    sub.stop()
    pub = device(args, "publisher")
    pub.connect()
    for i in range(3):
        pub.publish(args["topic"], f"queued {i}")
    pub.stop()
    back = device(args, "subscriber", clean=False)
    result["second_connack"] = back.connect(session_expiry=300)
    result["session_present"] = back.session_present
    wait_for(lambda: len(back.messages) >= 3)
    time.sleep(0.2)
    result["received"] = back.messages
    back.stop()
    return result


def stalled(args):
    """A subscriber that stops reading, and a publisher sending QoS 1 at full speed."""
    sub = device(args, "subscriber")
    sub.connect()
    result = {"granted": sub.subscribe(args["filter"])}
    # Stop paho's network loop: the subscriber neither reads nor acknowledges any more.
    sub.client.loop_stop()
    pub = device(args, "publisher")
    pub.connect()
    payload = b"x" * args["size"]
    acked = 0
    started = time.monotonic()
    # With "pause_after": N, the first N messages fill the subscriber's window and the rest
    # come only after a pause, when the gateway has nothing else waiting for it.
    first = args.get("pause_after", args["count"])
    infos = [pub.client.publish(args["topic"], payload, qos=1) for _ in range(first)]
    if first < args["count"]:
        time.sleep(0.5)
        infos += [
            pub.client.publish(args["topic"], payload, qos=1)
            for _ in range(args["count"] - first)
        ]
    deadline = started + args.get("budget", 20)
    for info in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            info.wait_for_publish(timeout=left)
        except (RuntimeError, ValueError):
            break
        acked += info.is_published()
    result["acked"] = acked
    result["seconds"] = time.monotonic() - started
    result["publisher_disconnected"] = pub.closed.is_set()
    pub.stop()
    # Whether the gateway closed the stalled connection: read what is left until the end.
    sock = sub.client.socket()
    closed = False
    if sock is not None:
        sock.setblocking(True)
        sock.settimeout(args.get("wait", 10))
        try:
            while True:
                if not sock.recv(1 << 16):
                    closed = True
                    break
        except ssl.SSLZeroReturnError:
            closed = True
        except (ssl.SSLError, OSError) as e:
            closed = "timed out" not in str(e)
    result["subscriber_closed"] = closed
    return result


def takeover(args):
    """Two connections with the same client ID: the first must be closed."""
    first = device(args, "device")
    second = device(args, "device")
    result = {"first_connack": first.connect(), "second_connack": second.connect()}
    first.closed.wait(WAIT)
    result["first_disconnected"] = first.closed.is_set()
    result["first_disconnect_reason"] = first.disconnect_reason
    result["second_disconnected"] = second.closed.is_set()
    first.stop()
    second.stop()
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


def mqtt_string(text):
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id, username, password):
    """A 3.1.1 CONNECT, written out so that it can be sent twice on one connection."""
    body = mqtt_string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60)
    body += mqtt_string(client_id) + mqtt_string(username) + mqtt_string(password)
    return bytes([0x10, len(body)]) + body


def second_connect(args):
    """A second CONNECT on a logged-in connection, carrying a password: a protocol error."""
    d = args["device"]
    context = ssl.create_default_context(cafile=args["ca"])
    context.set_alpn_protocols(["mqtt"])
    raw = socket.create_connection((args["host"], args["port"]), timeout=WAIT)
    sock = context.wrap_socket(raw, server_hostname=args["host"])
    sock.sendall(connect_packet(d["username"], d["username"], d["password"]))
    connack = sock.recv(4)
    sock.sendall(connect_packet(d["username"], d["username"], args["second_password"]))
    closed = False
    try:
        closed = sock.recv(1024) == b""
    except (ssl.SSLError, OSError):
        closed = True
    return {"connack": list(connack), "closed": closed}


def unknown_level(args):
    """A CONNECT at protocol level 6: the answer must be a CONNACK any client can read."""
    context = ssl.create_default_context(cafile=args["ca"])
    context.set_alpn_protocols(["mqtt"])
    raw = socket.create_connection((args["host"], args["port"]), timeout=WAIT)
    sock = context.wrap_socket(raw, server_hostname=args["host"])
    packet = bytearray(connect_packet("c", "u", "p"))
    packet[8] = 6
    sock.sendall(bytes(packet))
    return {"answer": list(sock.recv(16))}


if __name__ == "__main__":
    scenario, arguments = sys.argv[1], json.loads(sys.argv[2])
    scenarios = {
        "connect": connect,
        "pubsub": pubsub,
        "shared": shared,
        "retained": retained,
        "persistent": persistent,
        "stalled": stalled,
        "takeover": takeover,
        "will": will,
        "second_connect": second_connect,
        "unknown_level": unknown_level,
    }
    print(json.dumps(scenarios[scenario](arguments)))
