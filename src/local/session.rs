//! One device connection, as IoT Core's gateway handles it: TLS with ALPN `mqtt`, CONNECT checked
//! by the authorizer and `iot:Connect`, then every publish, subscribe and delivery checked against
//! the policy the authorizer returned, until the client leaves or IoT would drop it.
//!
//! What IoT does on a refusal (aws-facts §2, §8 and the issues cited there):
//! - an unauthorized PUBLISH closes the connection and the message goes nowhere
//!   (aws/aws-iot-device-sdk-python-v2#260: the client sees an unexpected hang-up);
//! - an unauthorized SUBSCRIBE gets the MQTT 3.1.1 failure code 0x80 in its SUBACK for that
//!   filter and the connection stays up, which is what IoT Core answers today; in 2017 it closed
//!   the connection instead (aws/aws-iot-device-sdk-js#125), so clients must cope with both;
//! - a delivery the receiver may not `iot:Receive` is skipped silently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PubAck, Publish, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, QoS, has_wildcards, valid_filter};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::server::TlsStream;

use super::ALPN;
use super::broker::{Delivery, Gateway};
use super::iot_policy::{Decision, Policy};
use super::lambda::{self, Login, Outcome};
use super::response::{self, Grant, Verdict};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// IoT's limit on a message is 128 KB; the rest is room for the topic and header.
const MAX_PACKET: usize = 128 * 1024 + 1024;
/// How long a publisher waits for a subscriber's full queue.
const SLOW_SUBSCRIBER: Duration = Duration::from_secs(1);
/// IoT's keep-alive range; a client asking for 0 (none) gets the maximum.
const KEEP_ALIVE_SECONDS: std::ops::RangeInclusive<u16> = 30..=1200;

type Stream = TlsStream<TcpStream>;

/// Serves one TCP connection; problems are reported, never returned.
pub async fn run(gateway: Arc<Gateway>, tcp: TcpStream, peer: SocketAddr) {
    if let Err(e) = serve(&gateway, tcp).await {
        gateway.console.line(format!("{peer}: {e:#}"));
    }
}

async fn serve(gateway: &Gateway, tcp: TcpStream) -> Result<()> {
    let tls = timeout(HANDSHAKE_TIMEOUT, gateway.tls.accept(tcp))
        .await
        .map_err(|_| anyhow!("TLS handshake timed out"))?
        .context("TLS handshake refused")?;
    let (_, conn) = tls.get_ref();
    if conn.alpn_protocol() != Some(ALPN) {
        bail!(
            "connection refused: the client did not negotiate ALPN `mqtt`, which IoT requires \
             for custom authentication on port 443"
        );
    }
    let server_name = conn.server_name().map(str::to_string);
    let (read, write) = tokio::io::split(tls);
    let mut reader = Reader {
        stream: read,
        buf: BytesMut::new(),
    };
    let mut writer = Writer {
        stream: write,
        buf: BytesMut::new(),
    };
    let connect = timeout(CONNECT_TIMEOUT, reader.first_connect(&mut writer))
        .await
        .map_err(|_| anyhow!("no CONNECT within {} s", CONNECT_TIMEOUT.as_secs()))??;
    // A client that only checks the TLS handshake (as `connect` does first) is no event.
    let Some(connect) = connect else {
        return Ok(());
    };
    let Some((session, grant)) = login(gateway, connect, server_name, &mut writer).await? else {
        return Ok(());
    };
    session.run(grant, reader, writer).await
}

struct Reader {
    stream: ReadHalf<Stream>,
    buf: BytesMut,
}

impl Reader {
    /// The next packet. Cancel-safe: bytes read so far stay in `buf`.
    async fn next(&mut self) -> Result<Packet> {
        loop {
            match Packet::read(&mut self.buf, MAX_PACKET) {
                Ok(packet) => return Ok(packet),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => bail!("malformed MQTT packet: {e}"),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("the client closed the connection");
            }
        }
    }

    /// The CONNECT that must open a session, or `None` if the client left without sending
    /// anything. MQTT 5 clients are told, in the way MQTT 3.1.1 allows, that their protocol
    /// level is not served.
    async fn first_connect(&mut self, writer: &mut Writer) -> Result<Option<Connect>> {
        while mqttbytes::check(self.buf.iter(), MAX_PACKET).is_err() {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!("the client closed the connection inside its first packet");
            }
            if self.buf.len() > MAX_PACKET {
                bail!("malformed first packet");
            }
        }
        if connect_protocol_level(&self.buf) == Some(5) {
            let refused = ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false);
            writer.send(Packet::ConnAck(refused)).await?;
            bail!("connection refused: MQTT 5 is not served locally; connect with MQTT 3.1.1");
        }
        match self.next().await? {
            Packet::Connect(connect) => Ok(Some(connect)),
            other => bail!("the first packet was {other:?}, not CONNECT"),
        }
    }
}

/// The protocol level byte of a framed CONNECT: after the fixed header and the protocol name.
fn connect_protocol_level(frame: &[u8]) -> Option<u8> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    let length_bytes = frame[1..].iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    frame.get(1 + length_bytes + 6).copied()
}

struct Writer {
    stream: WriteHalf<Stream>,
    buf: BytesMut,
}

impl Writer {
    async fn send(&mut self, packet: Packet) -> Result<()> {
        packet.write(&mut self.buf, usize::MAX)?;
        self.stream.write_all(&self.buf).await?;
        self.buf.clear();
        Ok(self.stream.flush().await?)
    }
}

/// Runs the authorizer for a CONNECT and answers it; `None` when the connection was refused.
async fn login<'g>(
    gateway: &'g Gateway,
    connect: Connect,
    server_name: Option<String>,
    writer: &mut Writer,
) -> Result<Option<(Session<'g>, Grant)>> {
    let event = login_event(&connect, server_name.as_deref());
    let who = format!(
        "client {:?} (user {:?})",
        connect.client_id,
        event["protocolData"]["mqtt"]["username"]
            .as_str()
            .unwrap_or_default()
    );
    let (grant, policy) = match authorize(gateway, &event, &connect.client_id).await {
        Ok(authorized) => authorized,
        Err(reason) => {
            let refused = ConnAck::new(ConnectReturnCode::NotAuthorized, false);
            writer.send(Packet::ConnAck(refused)).await?;
            let console = gateway.console;
            console.line(format!("CONNECT {who} refused: {reason}"));
            return Ok(None);
        }
    };
    let session = Session::new(gateway, connect, policy, event);
    let accepted = ConnAck::new(ConnectReturnCode::Success, false);
    writer.send(Packet::ConnAck(accepted)).await?;
    let console = gateway.console;
    console.line(format!(
        "CONNECT {who} accepted: principal {}",
        grant.principal_id
    ));
    if session.policy.has_conditions {
        console.line(
            "  note: policy Conditions are not evaluated locally; a conditional Allow grants \
             nothing and a conditional Deny always applies",
        );
    }
    Ok(Some((session, grant)))
}

/// The authorizer event for a CONNECT; empty username and password count as not sent.
fn login_event(connect: &Connect, server_name: Option<&str>) -> Value {
    let credentials = connect.login.as_ref();
    let connection_id = uuid::Uuid::new_v4().to_string();
    lambda::mqtt_event(&Login {
        username: credentials
            .map(|l| l.username.as_str())
            .filter(|u| !u.is_empty()),
        password: credentials
            .map(|l| l.password.as_bytes())
            .filter(|p| !p.is_empty()),
        client_id: &connect.client_id,
        server_name,
        connection_id: &connection_id,
    })
}

/// Invokes the authorizer and checks its answer, for a CONNECT or a refresh: `Err` says why the
/// connection must be refused or closed.
async fn authorize(
    gateway: &Gateway,
    event: &Value,
    client_id: &str,
) -> Result<(Grant, Policy), String> {
    let response = match gateway.lambda.invoke(event.clone()).await {
        Outcome::Returned(response) => response,
        Outcome::Failed(why) => return Err(format!("the authorizer failed: {why}")),
    };
    let grant = match response::validate(&response) {
        Ok(Verdict::Granted(grant)) => grant,
        Ok(Verdict::Denied) => return Err("the authorizer returned isAuthenticated: false".into()),
        Err(why) => return Err(format!("invalid authorizer response: {why}")),
    };
    let policy = Policy::compile(&grant.documents, client_id)
        .map_err(|why| format!("invalid authorizer response: {why}"))?;
    let resource = format!("{}:client/{client_id}", gateway.arn_prefix);
    check(&policy, "iot:Connect", &resource)?;
    Ok((grant, policy))
}

/// `Err` names the action and resource that the policy refuses, and why.
fn check(policy: &Policy, action: &str, resource: &str) -> Result<(), String> {
    match policy.decide(action, resource) {
        Decision::Allow => Ok(()),
        Decision::ExplicitDeny => Err(format!("the policy denies {action} on {resource}")),
        Decision::ImplicitDeny => Err(format!("the policy does not allow {action} on {resource}")),
    }
}

struct Session<'g> {
    gateway: &'g Gateway,
    client_id: String,
    connection: u64,
    deliveries: tokio::sync::mpsc::Receiver<Delivery>,
    takeover: tokio::sync::oneshot::Receiver<()>,
    policy: Policy,
    /// Sent again on every refresh.
    event: Value,
    will: Option<LastWill>,
    idle_limit: Duration,
    next_packet_id: u16,
}

/// What a step of the session loop decided.
enum Step {
    Continue,
    /// The client sent DISCONNECT: no will.
    Clean,
    /// The connection ends for this reason and the will, if any, is published.
    Close(String),
}

impl<'g> Session<'g> {
    /// Joins the registry (closing an older connection with the same client ID).
    fn new(gateway: &'g Gateway, connect: Connect, policy: Policy, event: Value) -> Self {
        let membership = gateway.registry.join(&connect.client_id);
        let keep_alive = match connect.keep_alive {
            0 => *KEEP_ALIVE_SECONDS.end(),
            k => k.clamp(*KEEP_ALIVE_SECONDS.start(), *KEEP_ALIVE_SECONDS.end()),
        };
        Self {
            gateway,
            client_id: connect.client_id,
            connection: membership.connection,
            deliveries: membership.deliveries,
            takeover: membership.takeover,
            policy,
            event,
            will: connect.last_will,
            // MQTT: the server must hear from the client within 1.5 keep-alive periods.
            idle_limit: Duration::from_secs(u64::from(keep_alive)) * 3 / 2,
            next_packet_id: 0,
        }
    }

    /// Serves the session to its end, then leaves the registry and, unless the client said
    /// DISCONNECT, publishes its will.
    async fn run(mut self, grant: Grant, reader: Reader, writer: Writer) -> Result<()> {
        let end = self.serve(grant, reader, writer).await;
        let registry = &self.gateway.registry;
        registry.leave(&self.client_id, self.connection);
        let clean = matches!(end, Ok(None));
        let reason = match end {
            Ok(None) => "sent DISCONNECT".to_string(),
            Ok(Some(reason)) => reason,
            Err(e) => format!("{e:#}"),
        };
        if !clean {
            self.publish_will().await;
        }
        self.log(format!("disconnected: {reason}"));
        Ok(())
    }

    /// The session loop; `Ok(None)` for a clean DISCONNECT, else why it ended.
    async fn serve(
        &mut self,
        grant: Grant,
        mut reader: Reader,
        mut writer: Writer,
    ) -> Result<Option<String>> {
        let started = Instant::now();
        let disconnect_at = started + grant.disconnect_after;
        let mut refresh_at = started + grant.refresh_after;
        let mut last_heard = started;
        loop {
            let step = tokio::select! {
                packet = reader.next() => {
                    last_heard = Instant::now();
                    match packet {
                        Ok(packet) => self.handle(packet, &mut writer).await?,
                        Err(e) => Step::Close(format!("{e:#}")),
                    }
                }
                Some(delivery) = self.deliveries.recv() => {
                    self.deliver(delivery, &mut writer).await?;
                    Step::Continue
                }
                _ = &mut self.takeover => {
                    Step::Close("a new connection with the same client ID took over".into())
                }
                _ = sleep_until(refresh_at) => self.refresh(&mut refresh_at).await,
                _ = sleep_until(disconnect_at) => {
                    Step::Close("disconnectAfterInSeconds has passed".into())
                }
                _ = sleep_until(last_heard + self.idle_limit) => {
                    Step::Close("nothing heard within 1.5 keep-alive periods".into())
                }
            };
            match step {
                Step::Continue => {}
                Step::Clean => return Ok(None),
                Step::Close(reason) => return Ok(Some(reason)),
            }
        }
    }

    async fn handle(&mut self, packet: Packet, writer: &mut Writer) -> Result<Step> {
        match packet {
            Packet::Publish(publish) => self.publish(publish, writer).await,
            Packet::Subscribe(subscribe) => self.subscribe(subscribe, writer).await,
            Packet::Unsubscribe(unsubscribe) => {
                for filter in &unsubscribe.topics {
                    let registry = &self.gateway.registry;
                    registry.unsubscribe(&self.client_id, self.connection, filter);
                }
                writer
                    .send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
                    .await?;
                Ok(Step::Continue)
            }
            Packet::PingReq => {
                writer.send(Packet::PingResp).await?;
                Ok(Step::Continue)
            }
            // Acknowledgements of our QoS 1 deliveries: nothing is redelivered, so nothing to do.
            Packet::PubAck(_) => Ok(Step::Continue),
            Packet::Disconnect => Ok(Step::Clean),
            other => Ok(Step::Close(format!("protocol error: unexpected {other:?}"))),
        }
    }

    async fn publish(&mut self, publish: Publish, writer: &mut Writer) -> Result<Step> {
        if publish.qos == QoS::ExactlyOnce {
            return Ok(Step::Close(
                "QoS 2 publish (IoT supports QoS 0 and 1)".into(),
            ));
        }
        if publish.topic.is_empty() || has_wildcards(&publish.topic) {
            return Ok(Step::Close(format!(
                "invalid topic name {:?} in PUBLISH",
                publish.topic
            )));
        }
        if let Err(why) = self.may_publish(&publish.topic, publish.retain) {
            return Ok(Step::Close(format!(
                "PUBLISH to {} not authorized ({why}); the message was dropped",
                publish.topic
            )));
        }
        // Retained messages are not stored here: a retained publish reaches current subscribers
        // only, as a plain message.
        self.route(&publish.topic, &publish.payload, publish.qos)
            .await;
        if publish.qos == QoS::AtLeastOnce {
            writer
                .send(Packet::PubAck(PubAck::new(publish.pkid)))
                .await?;
        }
        Ok(Step::Continue)
    }

    fn may_publish(&self, topic: &str, retain: bool) -> Result<(), String> {
        let resource = self.arn("topic", topic);
        check(&self.policy, "iot:Publish", &resource)?;
        if retain {
            check(&self.policy, "iot:RetainPublish", &resource)?;
        }
        Ok(())
    }

    /// IoT disconnects a client that subscribes outside its policy rather than answering
    /// SUBACK 0x80 (aws/aws-iot-device-sdk-js#125), so every filter is checked before any is
    /// granted and one refusal closes the connection.
    async fn subscribe(&mut self, subscribe: Subscribe, writer: &mut Writer) -> Result<Step> {
        for filter in &subscribe.filters {
            if let Err(why) = self.may_subscribe(&filter.path) {
                return Ok(Step::Close(format!(
                    "SUBSCRIBE to {:?} refused: {why}",
                    filter.path
                )));
            }
        }
        let codes = subscribe
            .filters
            .iter()
            .map(|f| self.subscribe_one(&f.path, f.qos))
            .collect();
        writer
            .send(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
            .await?;
        Ok(Step::Continue)
    }

    fn may_subscribe(&self, filter: &str) -> Result<(), String> {
        if !valid_filter(filter) {
            return Err("invalid topic filter".into());
        }
        check(
            &self.policy,
            "iot:Subscribe",
            &self.arn("topicfilter", filter),
        )
    }

    fn subscribe_one(&self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        // IoT has no QoS 2; a QoS 2 subscription is granted QoS 1.
        let granted = if qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let registry = &self.gateway.registry;
        registry.subscribe(&self.client_id, self.connection, filter, granted);
        SubscribeReasonCode::Success(granted)
    }

    async fn deliver(&mut self, delivery: Delivery, writer: &mut Writer) -> Result<()> {
        let resource = self.arn("topic", &delivery.topic);
        if let Err(why) = check(&self.policy, "iot:Receive", &resource) {
            self.log(format!(
                "message on {} not delivered: {why}",
                delivery.topic
            ));
            return Ok(());
        }
        let mut publish = Publish::from_bytes(delivery.topic, delivery.qos, delivery.payload);
        if delivery.qos == QoS::AtLeastOnce {
            publish.pkid = self.packet_id();
        }
        writer.send(Packet::Publish(publish)).await
    }

    /// IoT re-invokes the authorizer every `refreshAfterInSeconds` and drops a connection it now
    /// refuses. The connection keeps its original `disconnectAfterInSeconds` deadline.
    async fn refresh(&mut self, refresh_at: &mut Instant) -> Step {
        self.log("refreshAfterInSeconds has passed: invoking the authorizer again".to_string());
        match authorize(self.gateway, &self.event, &self.client_id).await {
            Ok((grant, policy)) => {
                self.policy = policy;
                *refresh_at = Instant::now() + grant.refresh_after;
                Step::Continue
            }
            Err(why) => Step::Close(format!("refresh refused: {why}")),
        }
    }

    /// Queues a message for every subscriber. A full queue makes the publisher wait (so a burst
    /// is slowed down, not lost) but only for so long: a client that stopped reading loses the
    /// message instead of holding up every publisher.
    async fn route(&self, topic: &str, payload: &Bytes, qos: QoS) {
        for (queue, qos) in self.gateway.registry.recipients(topic, qos) {
            let delivery = Delivery {
                topic: topic.to_string(),
                payload: payload.clone(),
                qos,
            };
            let Err(TrySendError::Full(delivery)) = queue.try_send(delivery) else {
                continue;
            };
            if timeout(SLOW_SUBSCRIBER, queue.send(delivery))
                .await
                .is_err()
            {
                self.log(format!(
                    "a subscriber has not read for {} s: a message on {topic} was dropped for it",
                    SLOW_SUBSCRIBER.as_secs()
                ));
            }
        }
    }

    /// The last will goes out, subject to the same publish check as any message.
    async fn publish_will(&mut self) {
        let Some(will) = self.will.take() else { return };
        match self.may_publish(&will.topic, will.retain) {
            Ok(()) => self.route(&will.topic, &will.message, will.qos).await,
            Err(why) => self.log(format!("last will on {} not published: {why}", will.topic)),
        }
    }

    fn packet_id(&mut self) -> u16 {
        // Packet IDs are 1..=65535; 0 is not allowed.
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        self.next_packet_id
    }

    fn arn(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}/{name}", self.gateway.arn_prefix)
    }

    fn log(&self, line: String) {
        self.gateway
            .console
            .line(format!("client {:?}: {line}", self.client_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_level_of_a_connect() {
        let mut frame = BytesMut::new();
        Packet::Connect(Connect::new("c"))
            .write(&mut frame, usize::MAX)
            .unwrap();
        assert_eq!(connect_protocol_level(&frame), Some(4));
        frame[8] = 5;
        assert_eq!(connect_protocol_level(&frame), Some(5));
        assert_eq!(connect_protocol_level(&[0xC0, 0]), None);
    }
}
