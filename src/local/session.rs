//! One device connection, as IoT Core's gateway handles it: TLS with ALPN `mqtt`, CONNECT checked
//! by the authorizer and `iot:Connect`, then every publish, subscribe and delivery checked against
//! the policy the authorizer returned, until the client leaves or IoT would drop it. MQTT 3.1.1
//! and 5 share this one session; codec.rs turns either wire format into its packets.
//!
//! What IoT does on a refusal (aws-facts §2, §8, §13 and the issues cited there):
//! - an unauthorized PUBLISH: under 3.1.1 the connection is closed and the message goes nowhere
//!   (aws/aws-iot-device-sdk-python-v2#260: the client sees an unexpected hang-up). Under MQTT 5,
//!   IoT's reason-code table (developer guide, `mqtt.html`, "MQTT reason codes") lists 0x87 Not
//!   authorized for PUBACK, so a QoS 1 publish gets PUBACK 0x87 and the connection stays; a QoS 0
//!   publish has no PUBACK to carry it, so it gets DISCONNECT 0x87 (our choice where AWS is
//!   silent: the client learns why rather than losing messages unnoticed);
//! - an unauthorized SUBSCRIBE: under 3.1.1 IoT has closed the connection
//!   (aws/aws-iot-device-sdk-js#125) and so does this gateway, before granting any filter of that
//!   SUBSCRIBE; under MQTT 5 that filter gets SUBACK 0x87 (the table lists it for SUBACK) and the
//!   others are granted;
//! - a delivery the receiver may not `iot:Receive` is skipped silently.
//!
//! Back-pressure: the session never writes to the socket itself. It queues encoded packets for
//! its writer task through a bounded queue, so a client that stops reading stalls only its own
//! writer; the session's keep-alive, refresh and disconnect timers keep running. Deliveries wait
//! in the session's own queue, bounded by bytes (broker.rs), which publishers never wait on; the
//! session takes one from it only when the writer's queue has room, so the one place a message
//! is dropped for a slow client is that bound. A client holding its whole window of
//! unacknowledged QoS 1 messages, with more waiting, that acknowledges nothing for
//! `limits::STALL_LIMIT` has stopped reading and is disconnected; one whose socket takes no data
//! for a keep-alive period, too.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{QoS, has_wildcards, v4, valid_filter};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::server::TlsStream;

use super::broker::{Deliveries, Gateway, Subscription, shared};
use super::codec::{
    self, Connect, Decoder, Encoded, Encoder, Filter, Hello, Incoming, Message, Outgoing, Reason,
    Refusal, Version,
};
use super::iot_policy::{Decision, Policy};
use super::lambda::{self, Login, Outcome};
use super::limits;
use super::response::{self, Grant, Verdict};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Encoded packets waiting for the writer task. Deliveries stop being taken from the session's
/// queue while fewer than `CONTROL_ROOM` places are free; a control packet (an acknowledgement)
/// finding no place means the client does not read what it is sent.
const OUTBOX: usize = 1024;
const CONTROL_ROOM: usize = 64;
/// Packets handled in one turn of the session loop before its timers and other sources are
/// looked at again: what is already read or queued is handled without a wait in between.
const BATCH: usize = 256;
/// How long the writer may take to flush the last packets (a DISCONNECT) once a session ends.
const FLUSH_AT_END: Duration = Duration::from_secs(1);
/// The writer sends what is queued in writes of up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

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
    // `gateway.tls` has already refused a client without ALPN `mqtt` with the TLS alert.
    let (_, conn) = tls.get_ref();
    let server_name = conn.server_name().map(str::to_string);
    let (read, mut write) = tokio::io::split(tls);
    let mut reader = Reader {
        stream: read,
        buf: BytesMut::new(),
    };
    let first = timeout(CONNECT_TIMEOUT, reader.first_connect(&mut write))
        .await
        .map_err(|_| anyhow!("no CONNECT within {} s", CONNECT_TIMEOUT.as_secs()))??;
    // A client that only checks the TLS handshake (as `connect` does first) is no event.
    let Some((connect, decoder)) = first else {
        return Ok(());
    };
    let encoder = Encoder {
        version: connect.version,
        client_max: connect.max_packet_size,
    };
    let Some((session, grant)) = login(gateway, *connect, server_name, encoder, &mut write).await?
    else {
        let _ = write.shutdown().await;
        return Ok(());
    };
    session.run(grant, reader, decoder, write).await
}

struct Reader {
    stream: ReadHalf<Stream>,
    buf: BytesMut,
}

enum ReadError {
    /// The connection ended or failed.
    Closed(String),
    /// The client sent something the server refuses; MQTT 5 is told the reason.
    Refused(Refusal),
}

impl Reader {
    /// The next packet if it is already read, without waiting.
    fn buffered(&mut self, decoder: &mut Decoder) -> Option<Result<Incoming, ReadError>> {
        decoder
            .decode(&mut self.buf)
            .map_err(ReadError::Refused)
            .transpose()
    }

    /// The next packet. Cancel-safe: bytes read so far stay in `buf`.
    async fn next(&mut self, decoder: &mut Decoder) -> Result<Incoming, ReadError> {
        loop {
            if let Some(packet) = decoder.decode(&mut self.buf).map_err(ReadError::Refused)? {
                return Ok(packet);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(ReadError::Closed("the client closed the connection".into())),
                Ok(_) => {}
                Err(e) => return Err(ReadError::Closed(format!("reading failed: {e}"))),
            }
        }
    }

    /// The CONNECT that must open a session, or `None` if the client left without sending
    /// anything. A protocol level the gateway does not speak gets a 3.1.1 CONNACK 0x01
    /// (unacceptable protocol version), which clients of every version can read.
    async fn first_connect(
        &mut self,
        write: &mut WriteHalf<Stream>,
    ) -> Result<Option<(Box<Connect>, Decoder)>> {
        let version = loop {
            match codec::hello(&self.buf) {
                Hello::Connect(version) => break version,
                Hello::UnknownLevel(level) => {
                    let refused =
                        v4::ConnAck::new(v4::ConnectReturnCode::RefusedProtocolVersion, false);
                    let mut buf = BytesMut::new();
                    v4::Packet::ConnAck(refused).write(&mut buf, usize::MAX)?;
                    write.write_all(&buf).await?;
                    write.flush().await?;
                    bail!(
                        "connection refused: MQTT protocol level {level} is not served; \
                         connect with MQTT 3.1.1 (level 4) or 5"
                    );
                }
                Hello::NotConnect(why) => bail!("connection refused: {why}"),
                Hello::Incomplete => {}
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!("the client closed the connection inside its first packet");
            }
        };
        let mut decoder = Decoder::new(version);
        match self.next(&mut decoder).await {
            Ok(Incoming::Connect(connect)) => Ok(Some((connect, decoder))),
            Ok(_) => bail!("the first packet was not CONNECT"),
            Err(ReadError::Closed(why)) => bail!("{why}"),
            Err(ReadError::Refused(refusal)) => bail!("malformed CONNECT: {}", refusal.why),
        }
    }
}

/// Writes `packet` straight to the socket: only for the CONNACK, before the writer task runs.
async fn send_now(write: &mut WriteHalf<Stream>, encoder: Encoder, packet: Outgoing) -> Result<()> {
    let mut buf = BytesMut::new();
    if encoder.encode(packet, &mut buf) == Encoded::Written {
        write.write_all(&buf).await?;
        write.flush().await?;
    }
    Ok(())
}

/// Why a login is refused: what the client is told (3.1.1 maps it, codec.rs) and the log.
struct Refused {
    reason: Reason,
    why: String,
}

/// Runs the authorizer for a CONNECT and answers it; `None` when the connection was refused.
async fn login<'g>(
    gateway: &'g Gateway,
    connect: Connect,
    server_name: Option<String>,
    encoder: Encoder,
    write: &mut WriteHalf<Stream>,
) -> Result<Option<(Session<'g>, Grant)>> {
    let event = login_event(&connect, server_name.as_deref());
    let who = format!(
        "{} client {:?} (user {:?})",
        connect.version.name(),
        connect.client_id,
        connect.username.as_deref().unwrap_or_default()
    );
    let checked = match check_connect(gateway, &connect) {
        Ok(()) => authorize(gateway, &event, &connect.client_id).await,
        Err(refused) => Err(refused),
    };
    let (grant, policy) = match checked {
        Ok(authorized) => authorized,
        Err(refused) => {
            let properties =
                (connect.version == Version::V5).then(|| codec::refused_because(&refused.why));
            let connack = Outgoing::ConnAck {
                session_present: false,
                reason: refused.reason,
                properties,
            };
            send_now(write, encoder, connack).await?;
            gateway.console.line(format!(
                "CONNECT {who} refused (reason 0x{:02X}): {}",
                refused.reason.code(),
                refused.why
            ));
            return Ok(None);
        }
    };
    let requested = connect.keep_alive;
    let requested_expiry = connect.session_expiry;
    let (session, session_present) = Session::new(gateway, connect, policy, event, encoder);
    // MQTT 5 is told when its keep-alive or session expiry was cut to fit IoT's limits.
    let keep_alive = session.keep_alive.as_secs() as u16;
    let properties = (encoder.version == Version::V5).then(|| {
        let mut properties = codec::announced((keep_alive != requested).then_some(keep_alive));
        if session.session_expiry != requested_expiry {
            properties.session_expiry_interval = Some(session.session_expiry.as_secs() as u32);
        }
        properties
    });
    let accepted = Outgoing::ConnAck {
        session_present,
        reason: Reason::Success,
        properties,
    };
    send_now(write, encoder, accepted).await?;
    let console = gateway.console;
    console.line(format!(
        "CONNECT {who} accepted: principal {}{}",
        grant.principal_id,
        if session_present {
            ", persistent session resumed"
        } else {
            ""
        }
    ));
    if session.policy.has_conditions {
        console.line(
            "  note: policy Conditions are not evaluated locally; a conditional Allow grants \
             nothing and a conditional Deny always applies",
        );
    }
    Ok(Some((session, grant)))
}

/// What IoT refuses before any authorizer runs: its protocol limits, and a username asking for
/// an authorizer this deployment does not have.
fn check_connect(gateway: &Gateway, connect: &Connect) -> Result<(), Refused> {
    if connect.client_id.len() > limits::CLIENT_ID_BYTES {
        return Err(Refused {
            reason: Reason::ClientIdNotValid,
            why: format!(
                "the client ID has {} bytes; IoT allows at most {}",
                connect.client_id.len(),
                limits::CLIENT_ID_BYTES
            ),
        });
    }
    if let Some(will) = &connect.will
        && will.qos == QoS::ExactlyOnce
    {
        return Err(Refused {
            reason: Reason::QosNotSupported,
            why: "a last will with QoS 2; IoT supports QoS 0 and 1".into(),
        });
    }
    match authorizer_named(connect.username.as_deref()) {
        Some(name) if name == gateway.authorizer => Ok(()),
        Some(name) => Err(Refused {
            reason: Reason::NotAuthorized,
            why: format!(
                "the username asks for authorizer {name:?}, which does not exist here (this \
                 gateway serves {:?}); IoT refuses an unknown authorizer without invoking any",
                gateway.authorizer
            ),
        }),
        None if gateway.default_authorizer => Ok(()),
        None => Err(Refused {
            reason: Reason::NotAuthorized,
            why: format!(
                "the username names no authorizer and there is no default authorizer \
                 (default_authorizer = false or --no-default), so IoT would try certificate \
                 authentication, which this connection has not; append \
                 ?x-amz-customauthorizer-name={} to the username",
                urlencoding::encode(&gateway.authorizer)
            ),
        }),
    }
}

/// The authorizer a username asks for, as IoT reads it: the `x-amz-customauthorizer-name`
/// parameter of the query after the first `?`, URL-decoded. Other parameters (the SDKs'
/// `SDK=…&Platform=…&Metadata=(…)`) are ignored.
fn authorizer_named(username: Option<&str>) -> Option<String> {
    let (_, query) = username?.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "x-amz-customauthorizer-name").then(|| match urlencoding::decode(value) {
            Ok(name) => name.into_owned(),
            Err(_) => value.to_string(),
        })
    })
}

/// The authorizer event for a CONNECT; empty username and password count as not sent.
fn login_event(connect: &Connect, server_name: Option<&str>) -> Value {
    let connection_id = uuid::Uuid::new_v4().to_string();
    lambda::mqtt_event(&Login {
        username: connect.username.as_deref().filter(|u| !u.is_empty()),
        password: connect.password.as_deref().filter(|p| !p.is_empty()),
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
) -> Result<(Grant, Policy), Refused> {
    let not_authorized = |why: String| Refused {
        reason: Reason::NotAuthorized,
        why,
    };
    let response = match gateway.lambda.invoke(event.clone()).await {
        Outcome::Returned(response) => response,
        Outcome::Failed(why) => {
            return Err(not_authorized(format!("the authorizer failed: {why}")));
        }
    };
    let grant = match response::validate(&response) {
        Ok(Verdict::Granted(grant)) => grant,
        // The authorizer's "no" is about the credentials: MQTT 5's 0x86.
        Ok(Verdict::Denied) => {
            return Err(Refused {
                reason: Reason::BadUsernameOrPassword,
                why: "the authorizer returned isAuthenticated: false".into(),
            });
        }
        Err(why) => {
            return Err(not_authorized(format!(
                "invalid authorizer response: {why}"
            )));
        }
    };
    let policy = Policy::compile(&grant.documents, client_id)
        .map_err(|why| not_authorized(format!("invalid authorizer response: {why}")))?;
    let resource = format!("{}:client/{client_id}", gateway.arn_prefix);
    check(&policy, "iot:Connect", &resource).map_err(not_authorized)?;
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
    version: Version,
    encoder: Encoder,
    connection: u64,
    deliveries: Deliveries,
    takeover: oneshot::Receiver<()>,
    /// Encoded packets for the writer task; `None` once the session has ended.
    outbox: Option<mpsc::Sender<Bytes>>,
    policy: Policy,
    /// Sent again on every refresh.
    event: Value,
    will: Option<Message>,
    keep_alive: Duration,
    /// How long the session outlives the connection (0: not at all).
    session_expiry: Duration,
    /// QoS 1 deliveries not yet acknowledged, by packet ID.
    inflight: HashMap<u16, Message>,
    inflight_max: usize,
    /// Deliveries waiting for room in flight: a resumed session's queue, retained messages.
    backlog: VecDeque<Message>,
    next_packet_id: u16,
    /// When the client last acknowledged a delivery, or last had its window of unacknowledged
    /// messages filled: a full window is a stall once this is `STALL_LIMIT` old.
    last_progress: Instant,
    buf: BytesMut,
}

/// What a step of the session loop decided.
enum Step {
    Continue,
    /// The client sent DISCONNECT; with MQTT 5's "disconnect with will message" the will still
    /// goes out.
    Clean {
        with_will: bool,
    },
    /// The connection ends for this reason (told to an MQTT 5 client when `reason` is set) and
    /// the will, if any, is published.
    Close {
        reason: Option<Reason>,
        why: String,
    },
}

fn close(reason: Reason, why: impl Into<String>) -> Step {
    Step::Close {
        reason: Some(reason),
        why: why.into(),
    }
}

impl<'g> Session<'g> {
    /// Joins the registry (closing an older connection with the same client ID, resuming its
    /// session unless the client asked for a clean one).
    fn new(
        gateway: &'g Gateway,
        connect: Connect,
        policy: Policy,
        event: Value,
        encoder: Encoder,
    ) -> (Self, bool) {
        let membership = gateway
            .registry
            .join(&connect.client_id, connect.clean_start);
        let range = limits::KEEP_ALIVE_SECONDS;
        let keep_alive = match connect.keep_alive {
            0 => *range.end(),
            k => k.clamp(*range.start(), *range.end()),
        };
        let session = Self {
            gateway,
            client_id: connect.client_id,
            version: connect.version,
            encoder,
            connection: membership.connection,
            deliveries: membership.deliveries,
            takeover: membership.takeover,
            outbox: None,
            policy,
            event,
            will: connect.will,
            keep_alive: Duration::from_secs(u64::from(keep_alive)),
            session_expiry: connect.session_expiry.min(limits::SESSION_EXPIRY),
            inflight: HashMap::new(),
            inflight_max: usize::from(connect.receive_maximum.min(limits::INFLIGHT)),
            backlog: membership.queued.into(),
            next_packet_id: 0,
            last_progress: Instant::now(),
            buf: BytesMut::new(),
        };
        (session, membership.session_present)
    }

    /// Serves the session to its end, then leaves the registry (keeping a persistent session)
    /// and, unless the client said DISCONNECT, publishes its will.
    async fn run(
        mut self,
        grant: Grant,
        reader: Reader,
        decoder: Decoder,
        write: WriteHalf<Stream>,
    ) -> Result<()> {
        let (outbox, queue) = mpsc::channel(OUTBOX);
        self.outbox = Some(outbox);
        // The writer may take at most a keep-alive period over one write: a client that reads
        // nothing for that long is gone.
        let mut writer = tokio::spawn(write_loop(write, queue, self.keep_alive));
        let end = self.serve(grant, reader, decoder, &mut writer).await;
        if let Step::Close {
            reason: Some(reason),
            why,
        } = &end
        {
            self.send_control(Outgoing::Disconnect {
                reason: *reason,
                why: why.clone(),
            });
        }
        // Let the writer flush what is queued (a SUBACK, the DISCONNECT), then end it.
        self.outbox = None;
        // A finished writer's result may already have been taken by the session loop.
        if !writer.is_finished() && timeout(FLUSH_AT_END, &mut writer).await.is_err() {
            writer.abort();
        }
        let unacked = self.inflight.drain().map(|(_, m)| m);
        let mut unacked: Vec<Message> = unacked.chain(self.backlog.drain(..)).collect();
        unacked.retain(|m| m.qos == QoS::AtLeastOnce);
        let registry = &self.gateway.registry;
        registry.leave(
            &self.client_id,
            self.connection,
            self.session_expiry,
            unacked,
        );
        let (publish_will, reason) = match end {
            Step::Clean { with_will } => (with_will, "sent DISCONNECT".to_string()),
            Step::Close { why, .. } => (true, why),
            Step::Continue => (true, String::new()),
        };
        if publish_will {
            self.publish_will();
        }
        self.log(format!("disconnected: {reason}"));
        Ok(())
    }

    /// The session loop, until a step ends it.
    async fn serve(
        &mut self,
        grant: Grant,
        mut reader: Reader,
        mut decoder: Decoder,
        writer: &mut JoinHandle<Result<(), String>>,
    ) -> Step {
        let started = Instant::now();
        let disconnect_at = started + grant.disconnect_after;
        let mut refresh_at = started + grant.refresh_after;
        let mut last_heard = started;
        let idle_limit = self.keep_alive * 3 / 2;
        // Wakes the loop when the writer has made room for deliveries again.
        let Some(outbox) = self.outbox.clone() else {
            return Step::Continue;
        };
        loop {
            if let Step::Close { reason, why } = self.take_backlog() {
                return Step::Close { reason, why };
            }
            let window_open = self.inflight.len() < self.inflight_max;
            let room = window_open && self.backlog.is_empty();
            let writable = outbox.capacity() > CONTROL_ROOM;
            // A full window with deliveries waiting: the client must acknowledge something
            // within the stall limit.
            let waiting = !(self.deliveries.is_empty() && self.backlog.is_empty());
            let stalled_at =
                (!window_open && waiting).then(|| self.last_progress + limits::STALL_LIMIT);
            let step = tokio::select! {
                packet = reader.next(&mut decoder) => {
                    last_heard = Instant::now();
                    self.read(packet, &mut reader, &mut decoder)
                }
                // With a full window, the first message that arrives is held, so that it counts
                // as waiting and the stall limit starts (nothing else would wake this loop).
                Some(message) = self.deliveries.recv(),
                    if (room && writable) || (!window_open && self.backlog.is_empty()) =>
                {
                    if room && writable {
                        self.deliver_waiting(message, &outbox)
                    } else {
                        self.backlog.push_back(message);
                        Step::Continue
                    }
                }
                // Only while the writer's queue is nearly full: returns once it has room.
                _ = outbox.reserve_many(CONTROL_ROOM + 1), if !writable => Step::Continue,
                _ = &mut self.takeover => close(
                    Reason::SessionTakenOver,
                    "a new connection with the same client ID took over",
                ),
                _ = sleep_until(stalled_at.unwrap_or(disconnect_at)), if stalled_at.is_some() => {
                    close(
                        Reason::QuotaExceeded,
                        format!(
                            "the client did not keep up: {} QoS 1 messages were unacknowledged, \
                             more were waiting, and it acknowledged nothing for {} s",
                            self.inflight.len(),
                            limits::STALL_LIMIT.as_secs()
                        ),
                    )
                }
                written = &mut *writer => Step::Close {
                    reason: None,
                    why: match written {
                        Ok(Err(why)) => why,
                        _ => "the connection's writer stopped".into(),
                    },
                },
                _ = sleep_until(refresh_at) => self.refresh(&mut refresh_at).await,
                _ = sleep_until(disconnect_at) => close(
                    Reason::NotAuthorized,
                    "disconnectAfterInSeconds has passed",
                ),
                _ = sleep_until(last_heard + idle_limit) => close(
                    Reason::KeepAliveTimeout,
                    "nothing heard within 1.5 keep-alive periods",
                ),
            };
            if !matches!(step, Step::Continue) {
                return step;
            }
        }
    }

    /// Moves waiting messages (a resumed session's queue, retained ones) into the window while
    /// the writer's queue has room.
    fn take_backlog(&mut self) -> Step {
        let writable = |o: &Option<mpsc::Sender<Bytes>>| {
            o.as_ref().is_some_and(|o| o.capacity() > CONTROL_ROOM)
        };
        while self.inflight.len() < self.inflight_max && writable(&self.outbox) {
            let Some(message) = self.backlog.pop_front() else {
                break;
            };
            let step = self.deliver(message);
            if !matches!(step, Step::Continue) {
                return step;
            }
        }
        Step::Continue
    }

    /// Handles a packet read and then those already read behind it, up to `BATCH`.
    fn read(
        &mut self,
        first: Result<Incoming, ReadError>,
        reader: &mut Reader,
        decoder: &mut Decoder,
    ) -> Step {
        let mut packet = first;
        for turn in 1..=BATCH {
            let step = match packet {
                Ok(packet) => self.handle(packet),
                Err(ReadError::Closed(why)) => Step::Close { reason: None, why },
                Err(ReadError::Refused(r)) => close(r.reason, r.why),
            };
            if !matches!(step, Step::Continue) || turn == BATCH {
                return step;
            }
            // Decoded only when it is handled in this turn; the rest stays in the buffer.
            match reader.buffered(decoder) {
                Some(next) => packet = next,
                None => return Step::Continue,
            }
        }
        Step::Continue
    }

    /// Delivers a message taken from the queue and then those waiting behind it, up to `BATCH`,
    /// while the window and the writer's queue have room.
    fn deliver_waiting(&mut self, first: Message, outbox: &mpsc::Sender<Bytes>) -> Step {
        let mut message = first;
        for _ in 1..BATCH {
            let step = self.deliver(message);
            if !matches!(step, Step::Continue) {
                return step;
            }
            if self.inflight.len() >= self.inflight_max || outbox.capacity() <= CONTROL_ROOM {
                return Step::Continue;
            }
            // Taken only when it is delivered in this turn: a message taken is never dropped.
            match self.deliveries.try_recv() {
                Some(next) => message = next,
                None => return Step::Continue,
            }
        }
        self.deliver(message)
    }

    fn handle(&mut self, packet: Incoming) -> Step {
        match packet {
            Incoming::Publish(message) => self.publish(message),
            Incoming::Subscribe { pkid, filters } => self.subscribe(pkid, filters),
            Incoming::Unsubscribe { pkid, filters } => {
                let registry = &self.gateway.registry;
                for filter in &filters {
                    registry.unsubscribe(&self.client_id, self.connection, filter);
                }
                let count = filters.len();
                self.send_control(Outgoing::UnsubAck { pkid, count })
            }
            Incoming::PingReq => self.send_control(Outgoing::PingResp),
            Incoming::PubAck(pkid) => {
                self.inflight.remove(&pkid);
                self.last_progress = Instant::now();
                Step::Continue
            }
            Incoming::Disconnect {
                with_will,
                session_expiry,
            } => {
                if let Some(seconds) = session_expiry {
                    // MQTT 5 §3.14.2.2.2: a session that had no expiry cannot be given one now.
                    if self.session_expiry.is_zero() && seconds > 0 {
                        return close(
                            Reason::ProtocolError,
                            "DISCONNECT set a session expiry on a session that had none",
                        );
                    }
                    self.session_expiry =
                        Duration::from_secs(u64::from(seconds)).min(limits::SESSION_EXPIRY);
                }
                Step::Clean { with_will }
            }
            // Never the packet itself: a second CONNECT carries a password.
            Incoming::Connect(_) => close(
                Reason::ProtocolError,
                "protocol error: a second CONNECT on a logged-in connection",
            ),
            Incoming::Unexpected(kind) => close(
                Reason::ProtocolError,
                format!("protocol error: the client sent {kind}"),
            ),
        }
    }

    fn publish(&mut self, mut message: Message) -> Step {
        if message.qos == QoS::ExactlyOnce {
            return close(
                Reason::QosNotSupported,
                format!(
                    "QoS 2 PUBLISH to {} (IoT supports QoS 0 and 1)",
                    message.topic
                ),
            );
        }
        if message.payload.len() > limits::PAYLOAD_BYTES {
            return close(
                Reason::PacketTooLarge,
                format!(
                    "a PUBLISH payload of {} bytes; IoT allows at most {}",
                    message.payload.len(),
                    limits::PAYLOAD_BYTES
                ),
            );
        }
        let topic_ok = if message.topic.is_empty() || has_wildcards(&message.topic) {
            Err("not a valid topic name".to_string())
        } else {
            limits::check_topic(&message.topic)
        };
        if let Err(why) = topic_ok {
            return self.refuse_publish(&message, Reason::TopicNameInvalid, &why);
        }
        if let Err(why) = self.may_publish(&message.topic, message.retain) {
            return self.refuse_publish(&message, Reason::NotAuthorized, &why);
        }
        let registry = &self.gateway.registry;
        if message.retain {
            registry.retain(&message);
        }
        let pkid = message.pkid;
        let qos = message.qos;
        // Current subscribers get a plain message (MQTT: retain is set only for stored ones).
        message.retain = false;
        let routed = registry.route(&message, &self.client_id);
        if routed.dropped > 0 {
            self.log(format!(
                "a message on {} was dropped for {} subscriber(s) not keeping up",
                message.topic, routed.dropped
            ));
        }
        if qos == QoS::AtLeastOnce {
            return self.send_control(Outgoing::PubAck {
                pkid,
                reason: Reason::Success,
            });
        }
        Step::Continue
    }

    /// MQTT 5 answers a refused QoS 1 PUBLISH in its PUBACK; otherwise the connection closes.
    fn refuse_publish(&mut self, message: &Message, reason: Reason, why: &str) -> Step {
        let what = format!(
            "PUBLISH to {} refused (0x{:02X}): {why}; the message was dropped",
            message.topic,
            reason.code()
        );
        if self.version == Version::V5 && message.qos == QoS::AtLeastOnce {
            self.log(what);
            return self.send_control(Outgoing::PubAck {
                pkid: message.pkid,
                reason,
            });
        }
        close(reason, what)
    }

    fn may_publish(&self, topic: &str, retain: bool) -> Result<(), String> {
        let resource = self.arn("topic", topic);
        check(&self.policy, "iot:Publish", &resource)?;
        if retain {
            check(&self.policy, "iot:RetainPublish", &resource)?;
        }
        Ok(())
    }

    fn subscribe(&mut self, pkid: u16, filters: Vec<Filter>) -> Step {
        if filters.len() > limits::FILTERS_PER_SUBSCRIBE {
            self.log(format!(
                "SUBSCRIBE with {} filters refused: IoT allows at most {} per SUBSCRIBE",
                filters.len(),
                limits::FILTERS_PER_SUBSCRIBE
            ));
            let codes = vec![Err(Reason::QuotaExceeded); filters.len()];
            return self.send_control(Outgoing::SubAck { pkid, codes });
        }
        // Under 3.1.1, IoT closes the connection on a refused filter before granting any.
        if self.version == Version::V311 {
            for filter in &filters {
                if let Err((_, why)) = self.may_subscribe(&filter.path) {
                    return Step::Close {
                        reason: None,
                        why: format!("SUBSCRIBE to {} refused: {why}", filter.path),
                    };
                }
            }
        }
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        for filter in filters {
            let code = self.subscribe_one(&filter);
            if let Ok((qos, new)) = code {
                // MQTT 5 retain handling: 0 always, 1 only for a new subscription, 2 never.
                // Shared subscriptions get no retained messages (MQTT 5 §4.8.2).
                let wanted = match filter.retain_handling {
                    0 => true,
                    1 => new,
                    _ => false,
                };
                if wanted && shared(&filter.path).is_none() {
                    retained.push((filter.path, qos));
                }
            }
            codes.push(code.map(|(qos, _)| qos));
        }
        let step = self.send_control(Outgoing::SubAck { pkid, codes });
        let registry = &self.gateway.registry;
        for (filter, granted) in retained {
            for mut message in registry.retained(&filter) {
                if granted == QoS::AtMostOnce {
                    message.qos = QoS::AtMostOnce;
                }
                message.retain = true;
                self.backlog.push_back(message);
            }
        }
        step
    }

    /// Grants one filter: `Ok((granted QoS, new subscription))` or the reason it is refused.
    fn subscribe_one(&mut self, filter: &Filter) -> Result<(QoS, bool), Reason> {
        if let Err((reason, why)) = self.may_subscribe(&filter.path) {
            self.log(format!(
                "SUBSCRIBE to {} refused (0x{:02X}): {why}",
                filter.path,
                reason.code()
            ));
            return Err(reason);
        }
        // IoT has no QoS 2; a QoS 2 subscription is granted QoS 1.
        let granted = if filter.qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let subscription = Subscription {
            qos: granted,
            no_local: filter.no_local,
        };
        let registry = &self.gateway.registry;
        match registry.subscribe(&self.client_id, self.connection, &filter.path, subscription) {
            Ok(new) => Ok((granted, new)),
            Err(()) => {
                self.log(format!(
                    "SUBSCRIBE to {} refused: the connection has IoT's maximum of {} \
                     subscriptions",
                    filter.path,
                    limits::SUBSCRIPTIONS_PER_CONNECTION
                ));
                Err(Reason::QuotaExceeded)
            }
        }
    }

    /// A shared subscription `$share/group/filter` is checked as IoT checks it: `iot:Subscribe`
    /// on `topicfilter/$share/group/filter`, the whole filter as subscribed.
    fn may_subscribe(&self, filter: &str) -> Result<(), (Reason, String)> {
        let path = match shared(filter) {
            Some((group, path)) if !group.is_empty() && !has_wildcards(group) => path,
            Some(_) => return Err((Reason::TopicFilterInvalid, "invalid share name".into())),
            None => filter,
        };
        if path.is_empty() || !valid_filter(path) {
            return Err((Reason::TopicFilterInvalid, "invalid topic filter".into()));
        }
        limits::check_topic(path).map_err(|why| (Reason::TopicFilterInvalid, why))?;
        check(
            &self.policy,
            "iot:Subscribe",
            &self.arn("topicfilter", filter),
        )
        .map_err(|why| (Reason::NotAuthorized, why))
    }

    /// Sends a message this session receives, if its policy allows `iot:Receive`.
    fn deliver(&mut self, mut message: Message) -> Step {
        let resource = self.arn("topic", &message.topic);
        if let Err(why) = check(&self.policy, "iot:Receive", &resource) {
            self.log(format!("message on {} not delivered: {why}", message.topic));
            return Step::Continue;
        }
        if message.expires.is_some_and(|e| e <= Instant::now()) {
            return Step::Continue;
        }
        if message.qos == QoS::AtLeastOnce {
            message.pkid = self.packet_id();
            self.inflight.insert(message.pkid, message.clone());
            if self.inflight.len() >= self.inflight_max {
                self.last_progress = Instant::now();
            }
        } else {
            message.pkid = 0;
        }
        let qos = message.qos;
        let pkid = message.pkid;
        let topic = message.topic.clone();
        self.buf.clear();
        match self
            .encoder
            .encode(Outgoing::Publish(message), &mut self.buf)
        {
            Encoded::Written => {}
            Encoded::TooLarge | Encoded::Unsayable => {
                self.inflight.remove(&pkid);
                self.log(format!(
                    "message on {topic} not delivered: larger than the client's maximum packet \
                     size"
                ));
                return Step::Continue;
            }
        }
        let packet = self.buf.split().freeze();
        match self.outbox.as_ref().map(|o| o.try_send(packet)) {
            Some(Ok(())) | None => Step::Continue,
            Some(Err(TrySendError::Full(_))) if qos == QoS::AtMostOnce => Step::Continue,
            Some(Err(TrySendError::Full(_))) => self.not_reading(),
            Some(Err(TrySendError::Closed(_))) => Step::Continue,
        }
    }

    /// Queues an acknowledgement or other control packet for the writer. A packet 3.1.1 cannot
    /// carry (a PUBACK or DISCONNECT with a reason) is not sent; the caller closes instead.
    fn send_control(&mut self, packet: Outgoing) -> Step {
        self.buf.clear();
        if self.encoder.encode(packet, &mut self.buf) != Encoded::Written {
            return Step::Continue;
        }
        let packet = self.buf.split().freeze();
        match self.outbox.as_ref().map(|o| o.try_send(packet)) {
            Some(Err(TrySendError::Full(_))) => self.not_reading(),
            _ => Step::Continue,
        }
    }

    fn not_reading(&self) -> Step {
        Step::Close {
            reason: None,
            why: format!(
                "the client does not read what it is sent ({OUTBOX} packets waiting for it)"
            ),
        }
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
            Err(refused) => close(
                Reason::NotAuthorized,
                format!("refresh refused: {}", refused.why),
            ),
        }
    }

    /// The last will goes out, subject to the same publish check as any message.
    fn publish_will(&mut self) {
        let Some(will) = self.will.take() else { return };
        match self.may_publish(&will.topic, will.retain) {
            Ok(()) => {
                let registry = &self.gateway.registry;
                if will.retain {
                    registry.retain(&will);
                }
                let mut message = will;
                message.retain = false;
                registry.route(&message, &self.client_id);
            }
            Err(why) => self.log(format!("last will on {} not published: {why}", will.topic)),
        }
    }

    fn packet_id(&mut self) -> u16 {
        // Packet IDs are 1..=65535 (0 is not allowed), and one still in flight is not reused.
        loop {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.next_packet_id) {
                return self.next_packet_id;
            }
        }
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

/// Writes what the session queues, coalescing what is waiting into one write. Ends when the
/// session drops its sender (after flushing), when writing fails, or when one write takes longer
/// than `stall_limit` because the client stopped reading.
async fn write_loop(
    mut stream: WriteHalf<Stream>,
    mut queue: mpsc::Receiver<Bytes>,
    stall_limit: Duration,
) -> Result<(), String> {
    let mut batch = BytesMut::new();
    while let Some(first) = queue.recv().await {
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let written = timeout(stall_limit, async {
            stream.write_all(&batch).await?;
            stream.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => batch.clear(),
            Ok(Err(e)) => return Err(format!("writing to the client failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "the client read nothing for {} s (its keep-alive)",
                    stall_limit.as_secs()
                ));
            }
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorizer_a_username_asks_for() {
        let cases = [
            (None, None),
            (Some("sensor1"), None),
            (
                Some("sensor1?x-amz-customauthorizer-name=auth"),
                Some("auth"),
            ),
            (
                Some(
                    "sensor1?x-amz-customauthorizer-name=my%20auth&SDK=IoTDeviceSDK/Python\
                     &Platform=Unix&Metadata=(CRTVersion=0.1;IoTSDKVersion=1.2)",
                ),
                Some("my auth"),
            ),
            (
                Some("sensor1?SDK=IoTDeviceSDK/Python&Platform=Unix&Metadata=(a=b)"),
                None,
            ),
            (
                Some("s?SDK=x&x-amz-customauthorizer-name=other"),
                Some("other"),
            ),
        ];
        for (username, expected) in cases {
            assert_eq!(
                authorizer_named(username).as_deref(),
                expected,
                "{username:?}"
            );
        }
    }
}
