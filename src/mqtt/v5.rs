//! MQTT 5 with rumqttc's v5 packet codec, driven here rather than by rumqttc's v5 client: that
//! client turns a refused CONNACK into a bare reason code and drops the CONNACK's properties, the
//! reason string among them (rumqttc 0.25, `v5::eventloop::connect`), and the reason string is
//! often the only explanation a broker gives. What `connect` needs is small: CONNECT, QoS 1
//! PUBLISH and its PUBACK, PINGREQ while idle, DISCONNECT.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::tokio_rustls::client::TlsStream;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode,
    Login as Credentials, Packet, PingReq, PubAck, PubAckReason, Publish, check,
};
use rumqttc::v5::mqttbytes::{self, QoS};
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use super::{
    DISCONNECT_WAIT, KEEP_ALIVE, Login, MAX_PACKET, Meaning, Refusal, Stop, Version, io_stop,
};
use crate::tls::{self, Target};

pub struct Connection {
    stream: TlsStream<TcpStream>,
    target: Target,
    incoming: BytesMut,
    outgoing: BytesMut,
    timeout: Duration,
    /// Ours, unless the broker set a shorter one in its CONNACK (server keep alive).
    keep_alive: Duration,
    last_sent: Instant,
    next_packet_id: u16,
}

impl Connection {
    /// Connects and waits for a successful CONNACK.
    pub async fn open(
        target: &Target,
        login: &Login,
        tls: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, Stop> {
        let deadline = Instant::now() + timeout;
        let stream = timeout_at(deadline, tls::connect(target, tls))
            .await
            .map_err(|_| Stop::TimedOut)?
            .map_err(Stop::Unreachable)?;
        let mut connection = Self {
            stream,
            target: target.clone(),
            incoming: BytesMut::new(),
            outgoing: BytesMut::new(),
            timeout,
            keep_alive: KEEP_ALIVE,
            last_sent: Instant::now(),
            next_packet_id: 0,
        };
        let mut properties = ConnectProperties::new();
        properties.max_packet_size = u32::try_from(MAX_PACKET).ok();
        let connect = Connect {
            keep_alive: u16::try_from(KEEP_ALIVE.as_secs()).unwrap_or(u16::MAX),
            client_id: login.client_id.clone(),
            clean_start: true,
            properties: Some(properties),
        };
        let credentials = Credentials::new(login.username.clone(), login.password.clone());
        connection
            .send(Packet::Connect(connect, None, Some(credentials)))
            .await?;
        let connack = connection
            .wait(deadline, |packet| match packet {
                Packet::ConnAck(connack) => Some(Ok(connack)),
                other => Some(Err(Stop::NotMqtt(format!(
                    "{} instead of CONNACK",
                    kind(&other)
                )))),
            })
            .await?
            .ok_or(Stop::TimedOut)?;
        if connack.code != ConnectReturnCode::Success {
            return Err(Stop::Refused(connack_refusal(&connack)));
        }
        if let Some(server) = connack.properties.and_then(|p| p.server_keep_alive) {
            connection.keep_alive = Duration::from_secs(u64::from(server.max(1)));
        }
        Ok(connection)
    }

    /// Publishes at QoS 1 and waits for its PUBACK, whose reason code says whether the broker
    /// took the message.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), Stop> {
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        let id = self.next_packet_id;
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload, None);
        publish.pkid = id;
        self.send(Packet::Publish(publish)).await?;
        let deadline = Instant::now() + self.timeout;
        self.wait(deadline, |packet| match packet {
            Packet::PubAck(ack) if ack.pkid == id => Some(match ack.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                _ => Err(Stop::PublishRefused(puback_refusal(&ack))),
            }),
            _ => None,
        })
        .await?
        .ok_or(Stop::TimedOut)
    }

    /// Keeps the connection serviced (pings) for `pause`; fails if the broker hangs up meanwhile.
    pub async fn idle(&mut self, pause: Duration) -> Result<(), Stop> {
        self.wait(Instant::now() + pause, |_| None::<Result<(), Stop>>)
            .await
            .map(drop)
    }

    /// Sends DISCONNECT (normal disconnection). Best effort: every message was acknowledged.
    pub async fn close(mut self) {
        let disconnect =
            Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection));
        if let Ok(Ok(())) = timeout(DISCONNECT_WAIT, self.send(disconnect)).await {
            let _ = timeout(DISCONNECT_WAIT, self.stream.shutdown()).await;
        }
    }

    async fn send(&mut self, packet: Packet) -> Result<(), Stop> {
        self.outgoing.clear();
        packet
            .write(&mut self.outgoing, None)
            .map_err(|e| Stop::NotMqtt(format!("cannot encode the packet: {e}")))?;
        self.stream
            .write_all(&self.outgoing)
            .await
            .map_err(|e| io_stop(&e, &self.target))?;
        self.stream
            .flush()
            .await
            .map_err(|e| io_stop(&e, &self.target))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Reads packets until `done` decides (`Some`) or `deadline` passes (`Ok(None)`), pinging
    /// when nothing was sent for a keep-alive period. A DISCONNECT from the broker ends the wait
    /// with its reason.
    async fn wait<T>(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(Packet) -> Option<Result<T, Stop>>,
    ) -> Result<Option<T>, Stop> {
        loop {
            let ping_at = self.last_sent + self.keep_alive;
            match self.next(deadline.min(ping_at)).await? {
                Some(Packet::PingResp(_)) => {}
                Some(Packet::Disconnect(disconnect)) => {
                    return Err(Stop::Closed(Some(disconnect_refusal(&disconnect))));
                }
                Some(packet) => {
                    if let Some(decided) = done(packet) {
                        return decided.map(Some);
                    }
                }
                None if Instant::now() >= deadline => return Ok(None),
                None => self.send(Packet::PingReq(PingReq)).await?,
            }
        }
    }

    /// The next packet, or `None` when `until` passes first. Cancel-safe: what was read stays
    /// in the buffer.
    async fn next(&mut self, until: Instant) -> Result<Option<Packet>, Stop> {
        let max = u32::try_from(MAX_PACKET).ok();
        loop {
            // An MQTT 3.1.1 broker answers an MQTT 5 CONNECT with its own CONNACK: no
            // properties, return code 1 (MQTT 3.1.1 §3.1.2.2), which MQTT 5 does not define.
            if self.incoming.starts_with(&[0x20, 0x02]) && self.incoming.get(3) == Some(&1) {
                return Err(Stop::Refused(Refusal::v311(
                    rumqttc::ConnectReturnCode::RefusedProtocolVersion,
                )));
            }
            match check(self.incoming.iter(), max) {
                // Read only a whole frame: the codec consumes it even when it cannot parse it.
                Ok(_) => {
                    return Packet::read(&mut self.incoming, max)
                        .map(Some)
                        .map_err(|e| Stop::NotMqtt(e.to_string()));
                }
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(Stop::NotMqtt(e.to_string())),
            }
            match timeout_at(until, self.stream.read_buf(&mut self.incoming)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(Stop::Closed(None)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(io_stop(&e, &self.target)),
            }
        }
    }
}

/// The packet's type, for messages (never its contents).
fn kind(packet: &Packet) -> &'static str {
    match packet {
        Packet::Auth(_) => "AUTH",
        Packet::Connect(..) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PingReq(_) => "PINGREQ",
        Packet::PingResp(_) => "PINGRESP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::Disconnect(_) => "DISCONNECT",
    }
}

fn refusal(code: u8, name: &'static str, reason_string: Option<String>) -> Refusal {
    let meaning = match code {
        0x87 => Meaning::NotAuthorized,
        0x86 => Meaning::BadCredentials,
        0x85 => Meaning::BadClientId,
        0x88 | 0x89 => Meaning::Unavailable,
        0x84 => Meaning::Version,
        _ => Meaning::Other,
    };
    Refusal {
        version: Version::V5,
        code,
        name,
        meaning,
        reason_string,
    }
}

/// CONNACK reason codes (MQTT 5 §3.2.2.2).
fn connack_refusal(connack: &ConnAck) -> Refusal {
    use ConnectReturnCode::*;
    let (code, name) = match connack.code {
        Success => (0x00, "Success"),
        RefusedProtocolVersion => (0x01, "Unacceptable protocol version"),
        BadClientId => (0x02, "Identifier rejected"),
        ServiceUnavailable => (0x03, "Server unavailable"),
        UnspecifiedError => (0x80, "Unspecified error"),
        MalformedPacket => (0x81, "Malformed Packet"),
        ProtocolError => (0x82, "Protocol Error"),
        ImplementationSpecificError => (0x83, "Implementation specific error"),
        UnsupportedProtocolVersion => (0x84, "Unsupported Protocol Version"),
        ClientIdentifierNotValid => (0x85, "Client Identifier not valid"),
        BadUserNamePassword => (0x86, "Bad User Name or Password"),
        NotAuthorized => (0x87, "Not authorized"),
        ServerUnavailable => (0x88, "Server unavailable"),
        ServerBusy => (0x89, "Server busy"),
        Banned => (0x8A, "Banned"),
        BadAuthenticationMethod => (0x8C, "Bad authentication method"),
        TopicNameInvalid => (0x90, "Topic Name invalid"),
        PacketTooLarge => (0x95, "Packet too large"),
        QuotaExceeded => (0x97, "Quota exceeded"),
        PayloadFormatInvalid => (0x99, "Payload format invalid"),
        RetainNotSupported => (0x9A, "Retain not supported"),
        QoSNotSupported => (0x9B, "QoS not supported"),
        UseAnotherServer => (0x9C, "Use another server"),
        ServerMoved => (0x9D, "Server moved"),
        ConnectionRateExceeded => (0x9F, "Connection rate exceeded"),
    };
    let reason = connack
        .properties
        .as_ref()
        .and_then(|p| p.reason_string.clone());
    let mut refusal = refusal(code, name, reason);
    // The three MQTT 3.1.1 codes keep their 3.1.1 meaning.
    refusal.meaning = match connack.code {
        RefusedProtocolVersion => Meaning::Version,
        BadClientId => Meaning::BadClientId,
        ServiceUnavailable => Meaning::Unavailable,
        _ => refusal.meaning,
    };
    refusal
}

/// PUBACK reason codes (MQTT 5 §3.4.2.1).
fn puback_refusal(ack: &PubAck) -> Refusal {
    use PubAckReason::*;
    let (code, name) = match ack.reason {
        Success => (0x00, "Success"),
        NoMatchingSubscribers => (0x10, "No matching subscribers"),
        UnspecifiedError => (0x80, "Unspecified error"),
        ImplementationSpecificError => (0x83, "Implementation specific error"),
        NotAuthorized => (0x87, "Not authorized"),
        TopicNameInvalid => (0x90, "Topic Name invalid"),
        PacketIdentifierInUse => (0x91, "Packet Identifier in use"),
        QuotaExceeded => (0x97, "Quota exceeded"),
        PayloadFormatInvalid => (0x99, "Payload format invalid"),
    };
    let reason = ack
        .properties
        .as_ref()
        .and_then(|p| p.reason_string.clone());
    refusal(code, name, reason)
}

/// DISCONNECT reason codes (MQTT 5 §3.14.2.1).
fn disconnect_refusal(disconnect: &Disconnect) -> Refusal {
    use DisconnectReasonCode::*;
    let name = match disconnect.reason_code {
        NormalDisconnection => "Normal disconnection",
        DisconnectWithWillMessage => "Disconnect with Will Message",
        UnspecifiedError => "Unspecified error",
        MalformedPacket => "Malformed Packet",
        ProtocolError => "Protocol Error",
        ImplementationSpecificError => "Implementation specific error",
        NotAuthorized => "Not authorized",
        ServerBusy => "Server busy",
        ServerShuttingDown => "Server shutting down",
        KeepAliveTimeout => "Keep Alive timeout",
        SessionTakenOver => "Session taken over",
        TopicFilterInvalid => "Topic Filter invalid",
        TopicNameInvalid => "Topic Name invalid",
        ReceiveMaximumExceeded => "Receive Maximum exceeded",
        TopicAliasInvalid => "Topic Alias invalid",
        PacketTooLarge => "Packet too large",
        MessageRateTooHigh => "Message rate too high",
        QuotaExceeded => "Quota exceeded",
        AdministrativeAction => "Administrative action",
        PayloadFormatInvalid => "Payload format invalid",
        RetainNotSupported => "Retain not supported",
        QoSNotSupported => "QoS not supported",
        UseAnotherServer => "Use another server",
        ServerMoved => "Server moved",
        SharedSubscriptionNotSupported => "Shared Subscriptions not supported",
        ConnectionRateExceeded => "Connection rate exceeded",
        MaximumConnectTime => "Maximum connect time",
        SubscriptionIdentifiersNotSupported => "Subscription Identifiers not supported",
        WildcardSubscriptionsNotSupported => "Wildcard Subscriptions not supported",
    };
    let reason = disconnect
        .properties
        .as_ref()
        .and_then(|p| p.reason_string.clone());
    refusal(disconnect.reason_code as u8, name, reason)
}

#[cfg(test)]
mod tests {
    use rumqttc::v5::mqttbytes::v5::{ConnAckProperties, DisconnectProperties, PubAckProperties};

    use super::*;

    #[test]
    fn refusals_keep_the_code_and_the_reason_string() {
        let connack = ConnAck {
            session_present: false,
            code: ConnectReturnCode::NotAuthorized,
            properties: Some(ConnAckProperties {
                session_expiry_interval: None,
                receive_max: None,
                max_qos: None,
                retain_available: None,
                max_packet_size: None,
                assigned_client_identifier: None,
                topic_alias_max: None,
                reason_string: Some("authorizer said no".into()),
                user_properties: Vec::new(),
                wildcard_subscription_available: None,
                subscription_identifiers_available: None,
                shared_subscription_available: None,
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        };
        let refusal = connack_refusal(&connack);
        assert_eq!(refusal.meaning, Meaning::NotAuthorized);
        assert_eq!(
            refusal.to_string(),
            "reason code 0x87 (Not authorized), reason string \"authorizer said no\""
        );
        let ack = PubAck {
            pkid: 1,
            reason: PubAckReason::NotAuthorized,
            properties: Some(PubAckProperties {
                reason_string: Some("topic\u{1b}[2J".into()),
                user_properties: Vec::new(),
            }),
        };
        assert_eq!(
            puback_refusal(&ack).to_string(),
            "reason code 0x87 (Not authorized), reason string \"topic\\u{1b}[2J\"",
            "the broker's text cannot drive the terminal"
        );
        let disconnect = Disconnect {
            reason_code: DisconnectReasonCode::SessionTakenOver,
            properties: Some(DisconnectProperties {
                session_expiry_interval: None,
                reason_string: None,
                user_properties: Vec::new(),
                server_reference: None,
            }),
        };
        assert_eq!(
            disconnect_refusal(&disconnect).to_string(),
            "reason code 0x8E (Session taken over)"
        );
    }
}
