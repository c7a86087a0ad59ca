//! One MQTT connection driven step by step (CONNECT, PUBLISH at QoS 1, DISCONNECT), over MQTT
//! 3.1.1 (rumqttc's client) or MQTT 5 ([`v5`]), with every wait bounded and every way it can end
//! sorted into a [`Stop`] that reads the same whichever version was spoken.

mod v5;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS, StateError, TlsConfiguration, Transport,
};
use rustls::ClientConfig;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use crate::error::Failure;
use crate::tls::{self, Target};

/// AWS IoT's largest message payload.
pub const MAX_PAYLOAD: usize = 128 * 1024;

/// Room for the payload plus topic and headers.
const MAX_PACKET: usize = MAX_PAYLOAD + 64 * 1024;

/// AWS IoT's shortest keep-alive; the client pings on its own while we wait between messages.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// How long a clean DISCONNECT may take before we just drop the connection.
const DISCONNECT_WAIT: Duration = Duration::from_secs(2);

/// The MQTT protocol version spoken. AWS IoT Core speaks both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Version {
    #[value(name = "3.1.1")]
    #[serde(rename = "3.1.1")]
    V311,
    #[value(name = "5")]
    #[serde(rename = "5")]
    V5,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V311 => "MQTT 3.1.1",
            Self::V5 => "MQTT 5",
        })
    }
}

/// Who logs in, as the broker sees it. No `Debug`: it holds the password.
#[derive(Clone)]
pub struct Login {
    pub client_id: String,
    /// Exactly as sent, authorizer query included.
    pub username: String,
    pub password: String,
}

/// What a refusal means, whichever version carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    NotAuthorized,
    BadCredentials,
    BadClientId,
    /// The broker could not decide (on AWS IoT: the authorizer failed).
    Unavailable,
    /// The broker does not speak this MQTT version.
    Version,
    Other,
}

/// A refusal as the broker sent it: its reason code, the code's name, and under MQTT 5 the
/// reason string the broker may add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub version: Version,
    pub code: u8,
    /// The specification's name for the code, e.g. "Not authorized".
    pub name: &'static str,
    pub meaning: Meaning,
    pub reason_string: Option<String>,
}

impl Refusal {
    /// An MQTT 3.1.1 CONNACK return code.
    pub fn v311(code: ConnectReturnCode) -> Self {
        let (code, name, meaning) = match code {
            ConnectReturnCode::Success => (0, "Connection accepted", Meaning::Other),
            ConnectReturnCode::RefusedProtocolVersion => {
                (1, "Unacceptable protocol version", Meaning::Version)
            }
            ConnectReturnCode::BadClientId => (2, "Identifier rejected", Meaning::BadClientId),
            ConnectReturnCode::ServiceUnavailable => {
                (3, "Server unavailable", Meaning::Unavailable)
            }
            ConnectReturnCode::BadUserNamePassword => {
                (4, "Bad user name or password", Meaning::BadCredentials)
            }
            ConnectReturnCode::NotAuthorized => (5, "Not authorized", Meaning::NotAuthorized),
        };
        Self {
            version: Version::V311,
            code,
            name,
            meaning,
            reason_string: None,
        }
    }
}

impl fmt::Display for Refusal {
    /// `return code 5 (Not authorized)`, or `reason code 0x87 (Not authorized), reason string "…"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Version::V311 => write!(f, "return code {} ({})", self.code, self.name)?,
            Version::V5 => write!(f, "reason code 0x{:02X} ({})", self.code, self.name)?,
        }
        if let Some(reason) = &self.reason_string {
            // The broker's words: shown, but never able to drive the terminal.
            write!(f, ", reason string \"{}\"", reason.escape_debug())?;
        }
        Ok(())
    }
}

/// Why a step did not complete.
#[derive(Debug)]
pub enum Stop {
    /// The broker answered CONNECT with a refusal.
    Refused(Refusal),
    /// The broker answered a PUBLISH with a failure reason code (MQTT 5 only).
    PublishRefused(Refusal),
    /// The broker closed the connection; under MQTT 5 it may say why first (DISCONNECT).
    Closed(Option<Refusal>),
    /// No answer within the timeout.
    TimedOut,
    /// The peer answered with something that is not MQTT.
    NotMqtt(String),
    /// The broker could not be reached at all (network, TLS).
    Unreachable(Failure),
}

/// A connection in either version.
pub enum Connection {
    V311(V311),
    /// Boxed: its TLS stream is inline, rumqttc's is behind a channel.
    V5(Box<v5::Connection>),
}

impl Connection {
    /// Connects and waits for a successful CONNACK.
    pub async fn open(
        version: Version,
        target: &Target,
        login: &Login,
        tls: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, Stop> {
        Ok(match version {
            Version::V311 => Self::V311(V311::open(target, login, tls, timeout).await?),
            Version::V5 => Self::V5(Box::new(
                v5::Connection::open(target, login, tls, timeout).await?,
            )),
        })
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), Stop> {
        match self {
            Self::V311(c) => c.publish(topic, payload).await,
            Self::V5(c) => c.publish(topic, payload).await,
        }
    }

    /// Keeps the connection serviced (pings) for `pause`; fails if the broker hangs up meanwhile.
    pub async fn idle(&mut self, pause: Duration) -> Result<(), Stop> {
        match self {
            Self::V311(c) => c.idle(pause).await,
            Self::V5(c) => c.idle(pause).await,
        }
    }

    /// Sends DISCONNECT. Best effort: every message was acknowledged already.
    pub async fn close(self) {
        match self {
            Self::V311(c) => c.close().await,
            Self::V5(c) => (*c).close().await,
        }
    }
}

/// MQTT 3.1.1, on rumqttc's client.
pub struct V311 {
    client: AsyncClient,
    events: mpsc::Receiver<Result<Event, Stop>>,
    poller: JoinHandle<()>,
    timeout: Duration,
}

impl V311 {
    async fn open(
        target: &Target,
        login: &Login,
        tls: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, Stop> {
        let mut options = MqttOptions::new(&login.client_id, &target.host, target.port);
        options
            .set_credentials(&login.username, &login.password)
            .set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)))
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_connection_timeout(timeout.as_secs().max(1));
        // Without it, Nagle holds CONNECT until the server ACKs the TLS Finished sent just
        // before it: an extra round trip, or ~40 ms when the server delays its ACK.
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (tx, events) = mpsc::channel(16);
        let poller = tokio::spawn(poll(eventloop, tx, target.clone()));
        let mut connection = Self {
            client,
            events,
            poller,
            timeout,
        };
        let connected = connection
            .wait_until(Instant::now() + timeout, |e| {
                matches!(e, Event::Incoming(Packet::ConnAck(_)))
            })
            .await?;
        if !connected {
            return Err(Stop::TimedOut);
        }
        Ok(connection)
    }

    async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), Stop> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|_| Stop::Closed(None))?;
        // One message in flight at a time, so the next PUBACK is this message's.
        let acked = self
            .wait_until(Instant::now() + self.timeout, |e| {
                matches!(e, Event::Incoming(Packet::PubAck(_)))
            })
            .await?;
        if acked { Ok(()) } else { Err(Stop::TimedOut) }
    }

    async fn idle(&mut self, pause: Duration) -> Result<(), Stop> {
        self.wait_until(Instant::now() + pause, |_| false)
            .await
            .map(drop)
    }

    async fn close(mut self) {
        if self.client.disconnect().await.is_ok() {
            let _ = self
                .wait_until(Instant::now() + DISCONNECT_WAIT, |e| {
                    matches!(e, Event::Outgoing(Outgoing::Disconnect))
                })
                .await;
        }
    }

    /// Waits for an event that satisfies `done`: `Ok(false)` when the deadline passes first.
    async fn wait_until(
        &mut self,
        deadline: Instant,
        done: impl Fn(&Event) -> bool,
    ) -> Result<bool, Stop> {
        loop {
            match timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Ok(false),
                Ok(Some(Ok(event))) if done(&event) => return Ok(true),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(stop))) => return Err(stop),
                Ok(None) => return Err(Stop::Closed(None)),
            }
        }
    }
}

impl Drop for V311 {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// Drives rumqttc's event loop in its own task so our bounded waits never cancel it mid-packet.
/// Stops at the first error: polling again would silently reconnect.
async fn poll(mut eventloop: EventLoop, tx: mpsc::Sender<Result<Event, Stop>>, target: Target) {
    loop {
        let event = eventloop.poll().await.map_err(|e| classify(&e, &target));
        let failed = event.is_err();
        if tx.send(event).await.is_err() || failed {
            return;
        }
    }
}

/// Sorts rumqttc's errors by what they mean for the check.
fn classify(err: &ConnectionError, target: &Target) -> Stop {
    match err {
        ConnectionError::ConnectionRefused(code) => Stop::Refused(Refusal::v311(*code)),
        ConnectionError::NetworkTimeout
        | ConnectionError::FlushTimeout
        | ConnectionError::MqttState(StateError::AwaitPingResp) => Stop::TimedOut,
        ConnectionError::Tls(rumqttc::TlsError::Io(e)) => {
            Stop::Unreachable(tls::explain_handshake(e, target))
        }
        ConnectionError::Tls(e) => Stop::Unreachable(Failure::new(
            format!("TLS with {target} failed: {e}"),
            "check the host, port and --ca-file",
        )),
        ConnectionError::Io(e)
        | ConnectionError::MqttState(
            StateError::Io(e) | StateError::Deserialization(rumqttc::Error::Io(e)),
        ) => io_stop(e, target),
        ConnectionError::MqttState(StateError::ConnectionAborted) => Stop::Closed(None),
        ConnectionError::MqttState(StateError::Deserialization(e)) => Stop::NotMqtt(e.to_string()),
        ConnectionError::NotConnAck(packet) => {
            Stop::NotMqtt(format!("{packet:?} instead of CONNACK"))
        }
        other => Stop::NotMqtt(other.to_string()),
    }
}

pub(crate) fn io_stop(err: &io::Error, target: &Target) -> Stop {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Stop::Closed(None),
        _ => Stop::Unreachable(tls::explain_connect(err, target)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::aws("h")
    }

    #[test]
    fn classifies_refusals_and_hangups() {
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        let Stop::Refused(refusal) = classify(&refused, &target()) else {
            panic!("not a refusal");
        };
        assert_eq!(refusal.meaning, Meaning::NotAuthorized);
        assert_eq!(refusal.to_string(), "return code 5 (Not authorized)");
        let aborted = ConnectionError::MqttState(StateError::ConnectionAborted);
        assert!(matches!(classify(&aborted, &target()), Stop::Closed(None)));
        let reset = ConnectionError::MqttState(StateError::Deserialization(rumqttc::Error::Io(
            io::Error::from(io::ErrorKind::ConnectionReset),
        )));
        assert!(matches!(classify(&reset, &target()), Stop::Closed(None)));
        let pipe = ConnectionError::Io(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(classify(&pipe, &target()), Stop::Closed(None)));
    }

    #[test]
    fn classifies_unreachable_and_garbage() {
        let refused = ConnectionError::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            classify(&refused, &target()),
            Stop::Unreachable(_)
        ));
        let garbage = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::InvalidPacketType(7),
        ));
        assert!(matches!(classify(&garbage, &target()), Stop::NotMqtt(_)));
        assert!(matches!(
            classify(&ConnectionError::NetworkTimeout, &target()),
            Stop::TimedOut
        ));
    }
}
