// Drives `iot-custom-auth local` with MQTT.js (the `mqtt` npm package) for tests/local.rs, over
// MQTT 3.1.1 or 5 (`protocol`: 4 or 5). MQTT.js is installed by scripts/test under
// target/test-env/mqttjs, named by IOT_CUSTOM_AUTH_TEST_MQTTJS.
//
// Usage: node local_mqttjs.cjs '{"port": ..., "ca": ..., "protocol": 5, "username": ...,
//          "password": ..., "client_id": ..., "topic": ..., "subscribe": filter or null}'
// Prints {"connack": code, "puback": reason or error code, "granted": [...] , "closed": bool}.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const mqtt = require(path.join(process.env.IOT_CUSTOM_AUTH_TEST_MQTTJS, "node_modules", "mqtt"));

const args = JSON.parse(process.argv[2]);
const result = { connack: null, puback: null, granted: null, closed: false };
const done = () => {
  client.end(true);
  console.log(JSON.stringify(result));
  process.exit(0);
};
setTimeout(done, 10000);

const client = mqtt.connect(`mqtts://localhost:${args.port}`, {
  ca: fs.readFileSync(args.ca),
  ALPNProtocols: ["mqtt"],
  protocolVersion: args.protocol,
  username: args.username,
  password: args.password,
  clientId: args.client_id || args.username,
  reconnectPeriod: 0,
});

client.on("error", (err) => {
  // A refused CONNECT: MQTT.js puts the CONNACK's code on the error.
  if (result.connack === null) {
    result.connack = err.code ?? String(err);
    done();
  }
});
client.on("close", () => {
  result.closed = true;
});
client.on("connect", (connack) => {
  result.connack = connack.reasonCode ?? connack.returnCode ?? 0;
  const publish = () =>
    client.publish(args.topic, "from MQTT.js", { qos: 1 }, (err, packet) => {
      result.puback = err ? (err.code ?? String(err)) : (packet?.reasonCode ?? 0);
      setTimeout(done, 200);
    });
  if (!args.subscribe) {
    publish();
    return;
  }
  client.subscribe(args.subscribe, { qos: 1 }, (err, granted) => {
    // MQTT.js reports a refused MQTT 5 filter as an error holding the SUBACK.
    result.granted = err ? (err.packet?.granted ?? String(err)) : granted.map((g) => g.qos);
    publish();
  });
});
