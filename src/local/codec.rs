//! The MQTT wire at the edge of a connection: one session model, a codec per protocol version.
//!
//! The session (session.rs) reads `Incoming` and writes `Outgoing`, which carry MQTT 5's optional
//! properties and reason codes; it never asks which version it speaks. Here, rumqttc's maintained
//! packet codecs (`mqttbytes::v4` for 3.1.1, `v5::mqttbytes::v5` for 5) turn bytes into that model
//! and back. Where 3.1.1 cannot say what the session says (a PUBACK or DISCONNECT with a reason
//! code), `encode` answers `Unsayable` and the session closes the connection instead, which is
//! how IoT answers a 3.1.1 client in the same case.
//!
//! Nothing here implements `Debug`: a CONNECT holds a password, and no packet is ever printed.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self, QoS, v4};
use rumqttc::v5::mqttbytes as m5;
use rumqttc::v5::mqttbytes::v5;
use tokio::time::Instant;

use super::limits;

/// The protocol version a connection speaks, from its CONNECT.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Version::V311 => "MQTT 3.1.1",
            Version::V5 => "MQTT 5",
        }
    }
}

/// MQTT 5 reason codes the gateway uses (MQTT 5 §2.4), as IoT Core uses them (aws-facts §13).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Success,
    MalformedPacket,
    ProtocolError,
    ClientIdNotValid,
    BadUsernameOrPassword,
    NotAuthorized,
    KeepAliveTimeout,
    SessionTakenOver,
    TopicFilterInvalid,
    TopicNameInvalid,
    TopicAliasInvalid,
    PacketTooLarge,
    QuotaExceeded,
    QosNotSupported,
}

impl Reason {
    pub fn code(self) -> u8 {
        match self {
            Reason::Success => 0x00,
            Reason::MalformedPacket => 0x81,
            Reason::ProtocolError => 0x82,
            Reason::ClientIdNotValid => 0x85,
            Reason::BadUsernameOrPassword => 0x86,
            Reason::NotAuthorized => 0x87,
            Reason::KeepAliveTimeout => 0x8D,
            Reason::SessionTakenOver => 0x8E,
            Reason::TopicFilterInvalid => 0x8F,
            Reason::TopicNameInvalid => 0x90,
            Reason::TopicAliasInvalid => 0x94,
            Reason::PacketTooLarge => 0x95,
            Reason::QuotaExceeded => 0x97,
            Reason::QosNotSupported => 0x9B,
        }
    }
}

/// A PUBLISH as the session sees it, whichever version carried it. `properties` are MQTT 5's,
/// passed through to MQTT 5 receivers (user properties, response topic, correlation data,
/// content type, payload format, message expiry); a topic alias is already resolved.
#[derive(Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub pkid: u16,
    pub properties: Option<v5::PublishProperties>,
    /// When a message expiry interval runs out (set when the message is received).
    pub expires: Option<Instant>,
}

impl Message {
    fn new(topic: String, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload,
            qos,
            retain,
            pkid: 0,
            properties: None,
            expires: None,
        }
    }

    /// The memory a queued copy holds: the struct and what it owns on the heap. A session's
    /// waiting deliveries are bounded by this sum (broker.rs).
    pub fn queued_bytes(&self) -> usize {
        let properties = self.properties.as_ref().map_or(0, |p| {
            let strings = p
                .user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 48);
            p.response_topic.as_ref().map_or(0, String::len)
                + p.correlation_data.as_ref().map_or(0, Bytes::len)
                + p.content_type.as_ref().map_or(0, String::len)
                + strings.sum::<usize>()
                + std::mem::size_of::<v5::PublishProperties>()
        });
        std::mem::size_of::<Self>() + self.topic.len() + self.payload.len() + properties
    }

    /// Starts the message expiry clock (MQTT 5 §3.3.2.3.3) and drops what the receiver must
    /// not see: the sender's topic alias and subscription identifiers.
    fn received(mut self) -> Self {
        if let Some(p) = self.properties.as_mut() {
            p.topic_alias = None;
            p.subscription_identifiers.clear();
            self.expires = p
                .message_expiry_interval
                .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        }
        self
    }
}

/// A CONNECT, whichever version carried it. No `Debug`: it holds the password.
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    /// 3.1.1's clean session, 5's clean start.
    pub clean_start: bool,
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub will: Option<Message>,
    /// How long the session outlives the connection: 3.1.1's clean session false asks for
    /// IoT's default lifetime, MQTT 5 says it in seconds.
    pub session_expiry: Duration,
    /// The most unacknowledged QoS 1 messages the client accepts (MQTT 5; IoT's limit otherwise).
    pub receive_maximum: u16,
    /// The largest packet the client accepts (MQTT 5).
    pub max_packet_size: Option<u32>,
}

pub enum Incoming {
    Connect(Box<Connect>),
    Publish(Message),
    PubAck(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<Filter>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// `with_will`: MQTT 5's "disconnect with will message"; `session_expiry`: a new expiry the
    /// client set on the way out.
    Disconnect {
        with_will: bool,
        session_expiry: Option<u32>,
    },
    /// A packet a client may not send here; only its kind is kept, for the log.
    Unexpected(&'static str),
}

pub struct Filter {
    pub path: String,
    pub qos: QoS,
    /// MQTT 5 retain handling: 0 send retained messages, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
    /// MQTT 5 no local: do not send the client its own messages.
    pub no_local: bool,
}

pub enum Outgoing {
    ConnAck {
        session_present: bool,
        reason: Reason,
        /// MQTT 5 only: what the server announces, or why it refused.
        properties: Option<Box<v5::ConnAckProperties>>,
    },
    Publish(Message),
    PubAck {
        pkid: u16,
        reason: Reason,
    },
    SubAck {
        pkid: u16,
        codes: Vec<Result<QoS, Reason>>,
    },
    UnsubAck {
        pkid: u16,
        count: usize,
    },
    PingResp,
    Disconnect {
        reason: Reason,
        why: String,
    },
}

/// Why a packet could not be read; `reason` is what an MQTT 5 client is told.
pub struct Refusal {
    pub reason: Reason,
    pub why: String,
}

impl Refusal {
    pub fn new(reason: Reason, why: impl Into<String>) -> Self {
        Self {
            reason,
            why: why.into(),
        }
    }
}

/// What the first bytes of a connection are.
pub enum Hello {
    /// Not a whole packet yet.
    Incomplete,
    Connect(Version),
    /// A CONNECT at a protocol level the gateway does not speak (MQTT 3.1's `MQIsdp` level 3, or
    /// anything else): answered with a 3.1.1 CONNACK 0x01, which every version can read.
    UnknownLevel(u8),
    /// Any other first packet, or a length over the limit: closed without an answer.
    NotConnect(String),
}

/// Looks at the first packet of a connection without consuming it.
pub fn hello(buf: &[u8]) -> Hello {
    match mqttbytes::check(buf.iter(), limits::MAX_PACKET_BYTES) {
        Ok(_) => {}
        Err(mqttbytes::Error::InsufficientBytes(_)) => return Hello::Incomplete,
        Err(mqttbytes::Error::PayloadSizeLimitExceeded(len)) => {
            return Hello::NotConnect(format!(
                "the first packet announces {len} bytes, over the {} byte limit",
                limits::MAX_PACKET_BYTES
            ));
        }
        Err(e) => return Hello::NotConnect(format!("malformed first packet: {e}")),
    }
    if buf[0] >> 4 != 1 {
        return Hello::NotConnect("the first packet was not CONNECT".into());
    }
    // The fixed header: the type byte and 1 to 4 length bytes (`check` has read them).
    let Some(length_bytes) = buf[1..].iter().take(4).position(|b| b & 0x80 == 0) else {
        return Hello::NotConnect("malformed first packet".into());
    };
    let length_bytes = length_bytes + 2;
    let level = buf.get(length_bytes + 6).copied();
    let name = buf.get(length_bytes..length_bytes + 6);
    match (name, level) {
        (Some(b"\x00\x04MQTT"), Some(4)) => Hello::Connect(Version::V311),
        (Some(b"\x00\x04MQTT"), Some(5)) => Hello::Connect(Version::V5),
        (_, Some(level)) => Hello::UnknownLevel(level),
        (_, None) => Hello::NotConnect("malformed CONNECT".into()),
    }
}

/// Reads one connection's packets: frames by length (refusing an oversized packet as soon as its
/// length is read) and keeps MQTT 5's inbound topic aliases.
pub struct Decoder {
    pub version: Version,
    aliases: HashMap<u16, String>,
}

impl Decoder {
    pub fn new(version: Version) -> Self {
        Self {
            version,
            aliases: HashMap::new(),
        }
    }

    /// The next packet from `buf`, `Ok(None)` if it is not all there yet.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, Refusal> {
        let header = match mqttbytes::check(buf.iter(), limits::MAX_PACKET_BYTES) {
            Ok(header) => header,
            Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(len)) => {
                return Err(Refusal::new(
                    Reason::PacketTooLarge,
                    format!(
                        "a packet of {len} bytes, over the {} byte limit",
                        limits::MAX_PACKET_BYTES
                    ),
                ));
            }
            Err(e) => return Err(Refusal::new(Reason::MalformedPacket, e.to_string())),
        };
        match self.version {
            Version::V311 => decode_v4(buf).map(Some),
            Version::V5 => {
                // An MQTT 5 DISCONNECT may be just the two header bytes, which rumqttc refuses.
                if buf[0] == 0xE0 && header.frame_length() == 2 {
                    let _ = buf.split_to(2);
                    return Ok(Some(Incoming::Disconnect {
                        with_will: false,
                        session_expiry: None,
                    }));
                }
                let packet = v5::Packet::read(buf, Some(limits::MAX_PACKET_BYTES as u32))
                    .map_err(|e| Refusal::new(Reason::MalformedPacket, e.to_string()))?;
                self.read_v5(packet).map(Some)
            }
        }
    }

    fn read_v5(&mut self, packet: v5::Packet) -> Result<Incoming, Refusal> {
        Ok(match packet {
            v5::Packet::Connect(connect, will, login) => {
                let properties = connect.properties.as_ref();
                let will = match will {
                    Some(w) => Some(
                        Message {
                            properties: w.properties.map(will_properties),
                            ..Message::new(utf8(w.topic)?, w.message, qos4(w.qos), w.retain)
                        }
                        .received(),
                    ),
                    None => None,
                };
                Incoming::Connect(Box::new(Connect {
                    version: Version::V5,
                    client_id: connect.client_id,
                    clean_start: connect.clean_start,
                    keep_alive: connect.keep_alive,
                    username: login.as_ref().map(|l| l.username.clone()),
                    password: login.map(|l| Bytes::from(l.password)),
                    will,
                    session_expiry: Duration::from_secs(u64::from(
                        properties
                            .and_then(|p| p.session_expiry_interval)
                            .unwrap_or(0),
                    )),
                    receive_maximum: properties
                        .and_then(|p| p.receive_maximum)
                        .unwrap_or(u16::MAX),
                    max_packet_size: properties.and_then(|p| p.max_packet_size),
                }))
            }
            v5::Packet::Publish(publish) => {
                let mut topic = utf8(publish.topic)?;
                let alias = publish.properties.as_ref().and_then(|p| p.topic_alias);
                if let Some(alias) = alias {
                    if alias == 0 || alias > limits::TOPIC_ALIASES {
                        return Err(Refusal::new(
                            Reason::TopicAliasInvalid,
                            format!(
                                "topic alias {alias}; this server accepts 1 to {}",
                                limits::TOPIC_ALIASES
                            ),
                        ));
                    }
                    if topic.is_empty() {
                        topic = self.aliases.get(&alias).cloned().ok_or_else(|| {
                            Refusal::new(
                                Reason::ProtocolError,
                                format!("topic alias {alias} was never set"),
                            )
                        })?;
                    } else {
                        self.aliases.insert(alias, topic.clone());
                    }
                }
                let message = Message {
                    pkid: publish.pkid,
                    properties: publish.properties,
                    ..Message::new(topic, publish.payload, qos4(publish.qos), publish.retain)
                };
                Incoming::Publish(message.received())
            }
            v5::Packet::PubAck(ack) => Incoming::PubAck(ack.pkid),
            v5::Packet::Subscribe(subscribe) => Incoming::Subscribe {
                pkid: subscribe.pkid,
                filters: subscribe
                    .filters
                    .into_iter()
                    .map(|f| Filter {
                        path: f.path,
                        qos: qos4(f.qos),
                        retain_handling: f.retain_forward_rule as u8,
                        no_local: f.nolocal,
                    })
                    .collect(),
            },
            v5::Packet::Unsubscribe(unsubscribe) => Incoming::Unsubscribe {
                pkid: unsubscribe.pkid,
                filters: unsubscribe.filters,
            },
            v5::Packet::PingReq(_) => Incoming::PingReq,
            v5::Packet::Disconnect(disconnect) => Incoming::Disconnect {
                with_will: disconnect.reason_code
                    == v5::DisconnectReasonCode::DisconnectWithWillMessage,
                session_expiry: disconnect
                    .properties
                    .and_then(|p| p.session_expiry_interval),
            },
            v5::Packet::PubRec(_) | v5::Packet::PubRel(_) | v5::Packet::PubComp(_) => {
                Incoming::Unexpected("a QoS 2 acknowledgement")
            }
            v5::Packet::Auth(_) => Incoming::Unexpected("AUTH"),
            v5::Packet::ConnAck(_)
            | v5::Packet::SubAck(_)
            | v5::Packet::UnsubAck(_)
            | v5::Packet::PingResp(_) => Incoming::Unexpected("a server-to-client packet"),
        })
    }
}

fn decode_v4(buf: &mut BytesMut) -> Result<Incoming, Refusal> {
    let packet = v4::Packet::read(buf, limits::MAX_PACKET_BYTES)
        .map_err(|e| Refusal::new(Reason::MalformedPacket, e.to_string()))?;
    Ok(match packet {
        v4::Packet::Connect(connect) => {
            let persistent = !connect.clean_session;
            Incoming::Connect(Box::new(Connect {
                version: Version::V311,
                client_id: connect.client_id,
                clean_start: connect.clean_session,
                keep_alive: connect.keep_alive,
                username: connect.login.as_ref().map(|l| l.username.clone()),
                password: connect.login.map(|l| Bytes::from(l.password)),
                will: connect
                    .last_will
                    .map(|w| Message::new(w.topic, w.message, w.qos, w.retain)),
                session_expiry: if persistent {
                    limits::SESSION_EXPIRY
                } else {
                    Duration::ZERO
                },
                receive_maximum: u16::MAX,
                max_packet_size: None,
            }))
        }
        v4::Packet::Publish(p) => Incoming::Publish(Message {
            pkid: p.pkid,
            ..Message::new(p.topic, p.payload, p.qos, p.retain)
        }),
        v4::Packet::PubAck(ack) => Incoming::PubAck(ack.pkid),
        v4::Packet::Subscribe(subscribe) => Incoming::Subscribe {
            pkid: subscribe.pkid,
            filters: subscribe
                .filters
                .into_iter()
                .map(|f| Filter {
                    path: f.path,
                    qos: f.qos,
                    retain_handling: 0,
                    no_local: false,
                })
                .collect(),
        },
        v4::Packet::Unsubscribe(unsubscribe) => Incoming::Unsubscribe {
            pkid: unsubscribe.pkid,
            filters: unsubscribe.topics,
        },
        v4::Packet::PingReq => Incoming::PingReq,
        v4::Packet::Disconnect => Incoming::Disconnect {
            with_will: false,
            session_expiry: None,
        },
        v4::Packet::PubRec(_) | v4::Packet::PubRel(_) | v4::Packet::PubComp(_) => {
            Incoming::Unexpected("a QoS 2 acknowledgement")
        }
        v4::Packet::ConnAck(_)
        | v4::Packet::SubAck(_)
        | v4::Packet::UnsubAck(_)
        | v4::Packet::PingResp => Incoming::Unexpected("a server-to-client packet"),
    })
}

/// What `encode` did.
#[derive(PartialEq, Eq, Debug)]
pub enum Encoded {
    Written,
    /// The version cannot carry this (a 3.1.1 PUBACK or DISCONNECT with a reason): close instead.
    Unsayable,
    /// Larger than the client's maximum packet size: MQTT 5 says drop it.
    TooLarge,
}

/// Writes one connection's packets.
#[derive(Clone, Copy)]
pub struct Encoder {
    pub version: Version,
    pub client_max: Option<u32>,
}

impl Encoder {
    pub fn encode(&self, packet: Outgoing, buf: &mut BytesMut) -> Encoded {
        let result = match self.version {
            Version::V311 => match to_v4(packet) {
                Some(packet) => packet.write(buf, usize::MAX).map_err(|e| e.to_string()),
                None => return Encoded::Unsayable,
            },
            Version::V5 => match to_v5(packet) {
                Some(packet) => packet.write(buf, self.client_max).map_err(|e| match e {
                    m5::Error::OutgoingPacketTooLarge { .. } => String::new(),
                    e => e.to_string(),
                }),
                None => return Encoded::Unsayable,
            },
        };
        match result {
            Ok(_) => Encoded::Written,
            // The codecs only fail on sizes: a packet no client can take.
            Err(_) => Encoded::TooLarge,
        }
    }
}

/// The 3.1.1 form, or `None` where 3.1.1 has no way to say it.
fn to_v4(packet: Outgoing) -> Option<v4::Packet> {
    Some(match packet {
        Outgoing::ConnAck {
            session_present,
            reason,
            ..
        } => {
            use v4::ConnectReturnCode as C;
            // 3.1.1 has five refusals. IoT answers a failed custom authentication with 5 (not
            // authorized), whatever the cause, and this gateway keeps that (aws-facts §2).
            let code = match reason {
                Reason::Success => C::Success,
                Reason::ClientIdNotValid => C::BadClientId,
                _ => C::NotAuthorized,
            };
            v4::Packet::ConnAck(v4::ConnAck::new(code, session_present))
        }
        Outgoing::Publish(m) => {
            let mut publish = v4::Publish::from_bytes(m.topic, m.qos, m.payload);
            publish.pkid = m.pkid;
            publish.retain = m.retain;
            v4::Packet::Publish(publish)
        }
        Outgoing::PubAck {
            pkid,
            reason: Reason::Success,
        } => v4::Packet::PubAck(v4::PubAck::new(pkid)),
        Outgoing::PubAck { .. } | Outgoing::Disconnect { .. } => return None,
        Outgoing::SubAck { pkid, codes } => v4::Packet::SubAck(v4::SubAck::new(
            pkid,
            codes
                .into_iter()
                .map(|c| match c {
                    Ok(qos) => v4::SubscribeReasonCode::Success(qos),
                    Err(_) => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Outgoing::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(pkid)),
        Outgoing::PingResp => v4::Packet::PingResp,
    })
}

fn to_v5(packet: Outgoing) -> Option<v5::Packet> {
    Some(match packet {
        Outgoing::ConnAck {
            session_present,
            reason,
            properties,
        } => v5::Packet::ConnAck(v5::ConnAck {
            session_present,
            code: connack_code(reason),
            properties: properties.map(|p| *p),
        }),
        Outgoing::Publish(m) => {
            let mut properties = m.properties;
            // The message expiry interval a receiver sees is what is left of it.
            if let (Some(p), Some(expires)) = (properties.as_mut(), m.expires) {
                let left = expires.saturating_duration_since(Instant::now());
                p.message_expiry_interval = Some(left.as_secs().max(1) as u32);
            }
            v5::Packet::Publish(v5::Publish {
                dup: false,
                qos: qos5(m.qos),
                retain: m.retain,
                topic: Bytes::from(m.topic),
                pkid: m.pkid,
                payload: m.payload,
                properties,
            })
        }
        Outgoing::PubAck { pkid, reason } => v5::Packet::PubAck(v5::PubAck {
            pkid,
            reason: puback_reason(reason),
            properties: None,
        }),
        Outgoing::SubAck { pkid, codes } => v5::Packet::SubAck(v5::SubAck {
            pkid,
            return_codes: codes
                .into_iter()
                .map(|c| match c {
                    Ok(qos) => v5::SubscribeReasonCode::Success(qos5(qos)),
                    Err(reason) => suback_reason(reason),
                })
                .collect(),
            properties: None,
        }),
        Outgoing::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid,
            reasons: vec![v5::UnsubAckReason::Success; count],
            properties: None,
        }),
        Outgoing::PingResp => v5::Packet::PingResp(v5::PingResp),
        Outgoing::Disconnect { reason, why } => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: disconnect_reason(reason),
            // Always with properties: rumqttc miscounts the length of a DISCONNECT without them.
            properties: Some(v5::DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some(why),
                user_properties: Vec::new(),
                server_reference: None,
            }),
        }),
    })
}

/// What the gateway announces in an MQTT 5 CONNACK: IoT's limits (limits.rs).
pub fn announced(server_keep_alive: Option<u16>) -> Box<v5::ConnAckProperties> {
    Box::new(v5::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: Some(limits::INFLIGHT),
        max_qos: Some(1),
        retain_available: Some(1),
        max_packet_size: Some(limits::MAX_PACKET_BYTES as u32),
        assigned_client_identifier: None,
        topic_alias_max: Some(limits::TOPIC_ALIASES),
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: Some(1),
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(1),
        server_keep_alive,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    })
}

/// An MQTT 5 refusal's CONNACK properties: the reason in words.
pub fn refused_because(why: &str) -> Box<v5::ConnAckProperties> {
    let mut properties = announced(None);
    properties.reason_string = Some(why.to_string());
    properties
}

fn utf8(bytes: Bytes) -> Result<String, Refusal> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Refusal::new(Reason::MalformedPacket, "a topic that is not UTF-8"))
}

fn will_properties(w: v5::LastWillProperties) -> v5::PublishProperties {
    v5::PublishProperties {
        payload_format_indicator: w.payload_format_indicator,
        message_expiry_interval: w.message_expiry_interval,
        topic_alias: None,
        response_topic: w.response_topic,
        correlation_data: w.correlation_data,
        user_properties: w.user_properties,
        subscription_identifiers: Vec::new(),
        content_type: w.content_type,
    }
}

fn qos4(qos: m5::QoS) -> QoS {
    match qos {
        m5::QoS::AtMostOnce => QoS::AtMostOnce,
        m5::QoS::AtLeastOnce => QoS::AtLeastOnce,
        m5::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn qos5(qos: QoS) -> m5::QoS {
    match qos {
        QoS::AtMostOnce => m5::QoS::AtMostOnce,
        QoS::AtLeastOnce => m5::QoS::AtLeastOnce,
        QoS::ExactlyOnce => m5::QoS::ExactlyOnce,
    }
}

fn connack_code(reason: Reason) -> v5::ConnectReturnCode {
    use v5::ConnectReturnCode as C;
    match reason {
        Reason::Success => C::Success,
        Reason::MalformedPacket => C::MalformedPacket,
        Reason::ProtocolError => C::ProtocolError,
        Reason::ClientIdNotValid => C::ClientIdentifierNotValid,
        Reason::BadUsernameOrPassword => C::BadUserNamePassword,
        Reason::NotAuthorized => C::NotAuthorized,
        Reason::TopicNameInvalid => C::TopicNameInvalid,
        Reason::PacketTooLarge => C::PacketTooLarge,
        Reason::QuotaExceeded => C::QuotaExceeded,
        Reason::QosNotSupported => C::QoSNotSupported,
        _ => C::UnspecifiedError,
    }
}

fn puback_reason(reason: Reason) -> v5::PubAckReason {
    use v5::PubAckReason as P;
    match reason {
        Reason::Success => P::Success,
        Reason::NotAuthorized => P::NotAuthorized,
        Reason::TopicNameInvalid => P::TopicNameInvalid,
        Reason::QuotaExceeded => P::QuotaExceeded,
        _ => P::UnspecifiedError,
    }
}

fn suback_reason(reason: Reason) -> v5::SubscribeReasonCode {
    use v5::SubscribeReasonCode as S;
    match reason {
        Reason::NotAuthorized => S::NotAuthorized,
        Reason::TopicFilterInvalid => S::TopicFilterInvalid,
        Reason::QuotaExceeded => S::QuotaExceeded,
        _ => S::Unspecified,
    }
}

fn disconnect_reason(reason: Reason) -> v5::DisconnectReasonCode {
    use v5::DisconnectReasonCode as D;
    match reason {
        Reason::Success => D::NormalDisconnection,
        Reason::MalformedPacket => D::MalformedPacket,
        Reason::ProtocolError => D::ProtocolError,
        Reason::NotAuthorized => D::NotAuthorized,
        Reason::KeepAliveTimeout => D::KeepAliveTimeout,
        Reason::SessionTakenOver => D::SessionTakenOver,
        Reason::TopicFilterInvalid => D::TopicFilterInvalid,
        Reason::TopicNameInvalid => D::TopicNameInvalid,
        Reason::TopicAliasInvalid => D::TopicAliasInvalid,
        Reason::PacketTooLarge => D::PacketTooLarge,
        Reason::QuotaExceeded => D::QuotaExceeded,
        Reason::QosNotSupported => D::QoSNotSupported,
        _ => D::UnspecifiedError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v5_connect(level: u8) -> BytesMut {
        let mut frame = BytesMut::new();
        v5::Packet::Connect(
            v5::Connect {
                keep_alive: 30,
                client_id: "c".into(),
                clean_start: true,
                properties: None,
            },
            None,
            Some(v5::Login::new("user", "secret")),
        )
        .write(&mut frame, None)
        .unwrap();
        frame[8] = level;
        frame
    }

    #[test]
    fn the_first_packet_says_the_version() {
        assert!(matches!(hello(&v5_connect(5)), Hello::Connect(Version::V5)));
        assert!(matches!(
            hello(&v5_connect(4)),
            Hello::Connect(Version::V311)
        ));
        assert!(matches!(hello(&v5_connect(6)), Hello::UnknownLevel(6)));
        assert!(matches!(hello(&v5_connect(5)[..5]), Hello::Incomplete));
        assert!(matches!(hello(&[0xC0, 0]), Hello::NotConnect(_)));
        // A 268 MB length is refused from the header alone.
        assert!(matches!(
            hello(&[0x10, 0xFF, 0xFF, 0xFF, 0x7F]),
            Hello::NotConnect(_)
        ));
    }

    #[test]
    fn an_oversized_packet_is_refused_from_its_length() {
        let mut decoder = Decoder::new(Version::V5);
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        let Err(refusal) = decoder.decode(&mut buf) else {
            panic!("accepted");
        };
        assert!(refusal.reason == Reason::PacketTooLarge);
    }

    #[test]
    fn topic_aliases_resolve_and_bad_ones_are_refused() {
        let mut decoder = Decoder::new(Version::V5);
        let publish = |topic: &str, alias: u16| {
            let mut buf = BytesMut::new();
            let properties = v5::PublishProperties {
                topic_alias: Some(alias),
                ..Default::default()
            };
            v5::Packet::Publish(v5::Publish::new(
                topic,
                m5::QoS::AtMostOnce,
                "x",
                Some(properties),
            ))
            .write(&mut buf, None)
            .unwrap();
            buf
        };
        let Ok(Some(Incoming::Publish(m))) = decoder.decode(&mut publish("a/b", 1)) else {
            panic!("first");
        };
        assert_eq!(m.topic, "a/b");
        assert!(m.properties.unwrap().topic_alias.is_none());
        let Ok(Some(Incoming::Publish(m))) = decoder.decode(&mut publish("", 1)) else {
            panic!("by alias");
        };
        assert_eq!(m.topic, "a/b");
        assert!(matches!(
            decoder.decode(&mut publish("", 2)),
            Err(Refusal {
                reason: Reason::ProtocolError,
                ..
            })
        ));
        assert!(matches!(
            decoder.decode(&mut publish("x", limits::TOPIC_ALIASES + 1)),
            Err(Refusal {
                reason: Reason::TopicAliasInvalid,
                ..
            })
        ));
    }

    #[test]
    fn a_bare_mqtt5_disconnect_is_read() {
        let mut decoder = Decoder::new(Version::V5);
        let mut buf = BytesMut::from(&[0xE0, 0x00][..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(Incoming::Disconnect {
                with_will: false,
                ..
            }))
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn what_3_1_1_cannot_say_is_unsayable() {
        let v4 = Encoder {
            version: Version::V311,
            client_max: None,
        };
        let mut buf = BytesMut::new();
        let refused = Outgoing::PubAck {
            pkid: 1,
            reason: Reason::NotAuthorized,
        };
        assert_eq!(v4.encode(refused, &mut buf), Encoded::Unsayable);
        let v5 = Encoder {
            version: Version::V5,
            client_max: None,
        };
        let refused = Outgoing::PubAck {
            pkid: 1,
            reason: Reason::NotAuthorized,
        };
        assert_eq!(v5.encode(refused, &mut buf), Encoded::Written);
        assert_eq!(&buf[..], &[0x40, 4, 0, 1, 0x87, 0]);
        // The DISCONNECT's length counts its reason string.
        buf.clear();
        let bye = Outgoing::Disconnect {
            reason: Reason::SessionTakenOver,
            why: "x".into(),
        };
        assert_eq!(v5.encode(bye, &mut buf), Encoded::Written);
        let mut read = buf.clone();
        let v5::Packet::Disconnect(d) = v5::Packet::read(&mut read, None).unwrap() else {
            panic!("not a DISCONNECT");
        };
        assert_eq!(d.reason_code, v5::DisconnectReasonCode::SessionTakenOver);
        assert!(read.is_empty());
    }
}
